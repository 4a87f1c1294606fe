/*
 * submit_users - the users file and argon2id hashes (see submit_users.h).
 */
#include "submit_users.h"
#include "linefile.h"
#include "sluice.h"
#include "util.h"

#include <argon2.h>
#include <errno.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HASH_T 3
#define HASH_M (64 * 1024) /* KiB */
#define HASH_P 1
#define SALT_LEN 16
#define HASH_LEN 32
#define NAME_MAX_LEN 128

#define fail sl_linefile_fail

static void user_clear(sub_user *u)
{
    free(u->name);
    if (u->hash) {
        OPENSSL_cleanse(u->hash, strlen(u->hash));
        free(u->hash);
    }
    free(u->tenant);
    free(u->pool);
    for (size_t i = 0; i < u->n_domains; i++)
        free(u->domains[i]);
    free(u->domains);
}

void sub_users_free(sub_users *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++)
        user_clear(&u->v[i]);
    free(u->v);
    free(u);
}

static int parse_field(sub_user *u, const char *name, int line, char *kv, char **err)
{
    char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return fail(err, name, line, "user '%s': field '%s' is not key=value", u->name, kv);
    *eq = 0;
    const char *k = kv, *v = eq + 1;
    if (!strcmp(k, "tenant") || !strcmp(k, "pool")) {
        char **dst = !strcmp(k, "tenant") ? &u->tenant : &u->pool;
        if (!*v || strlen(v) > 255)
            return fail(err, name, line, "user '%s': %s must be 1-255 octets", u->name, k);
        free(*dst);
        *dst = xstrdup(v);
    } else if (!strcmp(k, "domains")) {
        char *copy = xstrdup(v), *save = NULL;
        for (char *d = strtok_r(copy, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
            char why[200], norm[SLUICE_ADDRESS_MAX + 1];
            if (sluice_domain_pattern_normalize(d, norm, why, sizeof why) != 0) {
                int rc = fail(err, name, line, "user '%s': domain '%s': %s", u->name, d, why);
                free(copy);
                return rc;
            }
            u->domains = xrealloc(u->domains, (u->n_domains + 1) * sizeof *u->domains);
            u->domains[u->n_domains++] = xstrdup(norm);
        }
        free(copy);
    } else if (!strcmp(k, "rate")) {
        char *end;
        errno = 0;
        unsigned long n = strtoul(v, &end, 10);
        if (*v >= '0' && *v <= '9' && !*end && !errno && n <= 100000000) {
            u->rate_per_min = (uint32_t)n;
        } else {
            double per_sec;
            if (sl_parse_rate(v, &per_sec) != 0 || per_sec < 0 || per_sec > 1e6)
                return fail(err, name, line,
                            "user '%s': rate '%s' is not N (per minute) or N/s, N/min, N/h",
                            u->name, v);
            double per_min = per_sec * 60.0;
            u->rate_per_min = per_min > 0 && per_min < 1 ? 1 : (uint32_t)llround(per_min);
        }
    } else if (!strcmp(k, "check_from")) {
        if (!strcmp(v, "yes") || !strcmp(v, "true"))
            u->check_from = true;
        else if (!strcmp(v, "no") || !strcmp(v, "false"))
            u->check_from = false;
        else
            return fail(err, name, line, "user '%s': check_from must be yes or no", u->name);
    } else {
        return fail(err, name, line,
                    "user '%s': unknown field '%s' (tenant, pool, domains, rate, check_from)",
                    u->name, k);
    }
    return 0;
}

typedef struct parse_ctx {
    sub_users *t;
    const char *name;
} parse_ctx;

/* One line of the file (sl_linefile_each()). */
static int parse_line(void *arg, int line, char *s, char **err)
{
    sub_users *t = ((parse_ctx *)arg)->t;
    const char *name = ((parse_ctx *)arg)->name;
    char *colon = strchr(s, ':');
    if (!colon || colon == s)
        return fail(err, name, line, "expected NAME:HASH [key=value ...]");
    size_t nl = (size_t)(colon - s);
    if (nl > NAME_MAX_LEN)
        return fail(err, name, line, "user name longer than %d octets", NAME_MAX_LEN);
    for (size_t i = 0; i < nl; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return fail(err, name, line, "user name contains white space or a control character");
    sub_user u = {0};
    u.name = xstrndup(s, nl);
    u.check_from = true;
    u.line = line;
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->v[i].name, u.name)) {
            int rc = fail(err, name, line, "user '%s' already defined on line %d", u.name,
                          t->v[i].line);
            user_clear(&u);
            return rc;
        }
    char *save = NULL;
    char *hash = strtok_r(colon + 1, " \t", &save);
    if (!hash || strncmp(hash, "$argon2id$", 10) != 0) {
        int rc = fail(err, name, line,
                      "user '%s': the hash is not argon2id (make one with "
                      "sluice-submit --hash-password)",
                      u.name);
        user_clear(&u);
        return rc;
    }
    u.hash = xstrdup(hash);
    for (char *kv = strtok_r(NULL, " \t", &save); kv; kv = strtok_r(NULL, " \t", &save)) {
        int rc = parse_field(&u, name, line, kv, err);
        if (rc) {
            user_clear(&u);
            return rc;
        }
    }
    t->v = xrealloc(t->v, (t->n + 1) * sizeof *t->v);
    t->v[t->n++] = u;
    return 0;
}

int sub_users_parse(const char *name, const char *text, size_t len, sub_users **out, char **err)
{
    sub_users *t = xcalloc(1, sizeof *t);
    parse_ctx ctx = {t, name};
    int rc = sl_linefile_each(name, text, len, parse_line, &ctx, err);
    if (rc) {
        sub_users_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int sub_users_load(const char *path, sub_users **out, char **err)
{
    sl_buf b = SL_BUF_INIT;
    int rc = sl_linefile_read(path, &b, err);
    if (rc == 0)
        rc = sub_users_parse(path, b.data ? b.data : "", b.len, out, err);
    sl_linefile_wipe(&b);
    return rc;
}

const sub_user *sub_users_find(const sub_users *u, const char *name)
{
    if (!u)
        return NULL;
    for (size_t i = 0; i < u->n; i++)
        if (!strcmp(u->v[i].name, name))
            return &u->v[i];
    return NULL;
}

bool sub_user_domain_allowed(const sub_user *u, const char *domain)
{
    for (size_t i = 0; i < u->n_domains; i++) {
        const char *d = u->domains[i];
        if (strchr(d, '*') || strchr(d, '?') ? sl_glob_match(d, domain) : !strcasecmp(d, domain))
            return true;
    }
    return false;
}

char *sub_password_hash(const char *pass, size_t n)
{
    uint8_t salt[SALT_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1)
        sl_panic("submit: RAND_bytes failed");
    size_t enclen = argon2_encodedlen(HASH_T, HASH_M, HASH_P, SALT_LEN, HASH_LEN, Argon2_id);
    char *enc = xmalloc(enclen);
    int rc = argon2id_hash_encoded(HASH_T, HASH_M, HASH_P, pass, n, salt, sizeof salt, HASH_LEN,
                                   enc, enclen);
    if (rc != ARGON2_OK)
        sl_panic("submit: argon2id_hash_encoded: %s", argon2_error_message(rc));
    return enc;
}

int sub_password_verify(const char *hash, const char *pass, size_t n)
{
    int rc = argon2id_verify(hash, pass, n);
    if (rc == ARGON2_OK)
        return 0;
    if (rc == ARGON2_VERIFY_MISMATCH)
        return SL_ENOTFOUND;
    return SL_EINVAL;
}
