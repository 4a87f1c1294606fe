/*
 * api_keys - the API keys file, key lookup and rate limits (see api_keys.h).
 */
#include "api_keys.h"
#include "linefile.h"
#include "sluice.h"
#include "util.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define fail sl_linefile_fail

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL))
        sl_panic("EVP_Digest(sha256) failed");
}

void api_key_hash_hex(const char *key, size_t n, char out[65])
{
    unsigned char h[32];
    sha256(key, n, h);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static int unhex(const char *s, unsigned char out[32])
{
    if (strlen(s) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else
                return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static void key_clear(api_key *k)
{
    free(k->tenant);
    free(k->pool);
    for (size_t i = 0; i < k->n_domains; i++)
        free(k->domains[i]);
    free(k->domains);
}

void api_keys_free(api_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        key_clear(&k->v[i]);
    free(k->v);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

static int parse_field(api_key *k, char *f, char *why, size_t whylen)
{
    char *eq = strchr(f, '=');
    if (!eq) {
        snprintf(why, whylen, "field '%s' is not key=value", f);
        return -1;
    }
    *eq = 0;
    const char *v = eq + 1;
    if (!strcmp(f, "tenant") || !strcmp(f, "pool")) {
        char **dst = f[0] == 't' ? &k->tenant : &k->pool;
        if (!*v || *dst) {
            snprintf(why, whylen, "%s: %s", f, *dst ? "given twice" : "empty");
            return -1;
        }
        *dst = xstrdup(v);
    } else if (!strcmp(f, "domains")) {
        char *copy = xstrdup(v), *save = NULL;
        for (char *d = strtok_r(copy, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
            char norm[SLUICE_ADDRESS_MAX + 1];
            if (sluice_domain_pattern_normalize(d, norm, why, whylen) != 0) {
                free(copy);
                return -1;
            }
            k->domains = xrealloc(k->domains, (k->n_domains + 1) * sizeof *k->domains);
            k->domains[k->n_domains++] = xstrdup(norm);
        }
        free(copy);
    } else if (!strcmp(f, "rate")) {
        char *end;
        double n = strtod(v, &end);
        if (end == v || n < 0) {
            snprintf(why, whylen, "rate '%s' is not a number of recipients per minute", v);
            return -1;
        }
        double per_sec;
        if (*end == 0)
            k->rate_per_min = n;
        else if (sl_parse_rate(v, &per_sec) == 0)
            k->rate_per_min = per_sec * 60.0;
        else {
            snprintf(why, whylen, "rate '%s' is not N, N/s, N/min or N/h", v);
            return -1;
        }
    } else if (!strcmp(f, "admin")) {
        if (strcmp(v, "yes") && strcmp(v, "no")) {
            snprintf(why, whylen, "admin '%s' is not yes or no", v);
            return -1;
        }
        k->admin = v[0] == 'y';
    } else {
        snprintf(why, whylen, "unknown field '%s' (tenant, domains, pool, rate, admin)", f);
        return -1;
    }
    return 0;
}

typedef struct parse_ctx {
    api_keys *t;
    const char *name;
    size_t cap;
} parse_ctx;

/* One line of the file (sl_linefile_each()). */
static int parse_line(void *arg, int line, char *s, char **err)
{
    parse_ctx *c = arg;
    api_keys *t = c->t;
    api_key k = {0};
    k.line = line;
    char why[256] = "";
    char *save = NULL;
    char *tok = strtok_r(s, " \t", &save);
    if (unhex(tok, k.hash) != 0)
        return fail(err, c->name, line, "'%.16s...' is not a SHA-256 in 64 lower-case hex digits "
                                        "(sluice-api --hash-key)", tok);
    for (size_t i = 0; i < t->n; i++)
        if (!memcmp(t->v[i].hash, k.hash, 32))
            return fail(err, c->name, line, "the same key as line %d", t->v[i].line);
    while ((tok = strtok_r(NULL, " \t", &save)))
        if (parse_field(&k, tok, why, sizeof why) != 0)
            break;
    if (!*why && !k.tenant)
        snprintf(why, sizeof why, "tenant=NAME is required");
    if (*why) {
        key_clear(&k);
        return fail(err, c->name, line, "%s", why);
    }
    k.tokens = k.rate_per_min;
    if (t->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 8;
        t->v = xrealloc(t->v, c->cap * sizeof *t->v);
    }
    t->v[t->n++] = k;
    return 0;
}

int api_keys_parse(const char *name, const char *text, size_t len, api_keys **out, char **err)
{
    api_keys *t = xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    parse_ctx ctx = {t, name, 0};
    int rc = sl_linefile_each(name, text, len, parse_line, &ctx, err);
    if (rc) {
        api_keys_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int api_keys_load(const char *path, api_keys **out, char **err)
{
    sl_buf b = SL_BUF_INIT;
    int rc = sl_linefile_read(path, &b, err);
    if (rc == 0)
        rc = api_keys_parse(path, b.data ? b.data : "", b.len, out, err);
    sl_linefile_wipe(&b);
    return rc;
}

api_key *api_keys_find(api_keys *t, const char *key)
{
    unsigned char h[32];
    sha256(key, strlen(key), h);
    api_key *found = NULL;
    /* Look at every entry whatever matches, so timing tells nothing. */
    for (size_t i = 0; i < t->n; i++)
        if (CRYPTO_memcmp(t->v[i].hash, h, 32) == 0)
            found = &t->v[i];
    return found;
}

bool api_key_domain_allowed(const api_key *k, const char *domain)
{
    for (size_t i = 0; i < k->n_domains; i++)
        if (sl_glob_match(k->domains[i], domain))
            return true;
    return false;
}

int api_key_take(api_keys *t, api_key *k, size_t n, int64_t now_ms)
{
    if (k->rate_per_min <= 0)
        return 0;
    pthread_mutex_lock(&t->mu);
    double burst = k->rate_per_min > (double)n ? k->rate_per_min : (double)n;
    if (k->refilled_ms)
        k->tokens += (double)(now_ms - k->refilled_ms) * k->rate_per_min / 60000.0;
    k->refilled_ms = now_ms;
    if (k->tokens > burst)
        k->tokens = burst;
    int wait = 0;
    if (k->tokens >= (double)n) {
        k->tokens -= (double)n;
    } else {
        double secs = ((double)n - k->tokens) * 60.0 / k->rate_per_min;
        wait = (int)secs + 1;
    }
    pthread_mutex_unlock(&t->mu);
    return wait;
}
