/*
 * config_value - reading one value of the configuration (config_int.h):
 * the key checks of a mapping and the typed getters, each with the
 * message an operator sees for a bad value. Secrets are never quoted: no
 * getter puts a string value it read into a message except as the value
 * that was refused.
 */
#include "config_int.h"
#include "hostport.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool cfg__is_null(const cfg_node *n)
{
    return !n || (n->type == CN_SCALAR && n->plain &&
                  (!n->s[0] || !strcmp(n->s, "~") || !strcasecmp(n->s, "null")));
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return (size_t)-1;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest name within a third of its length (at least 2 edits). */
const char *cfg__did_you_mean(const char *word, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t bestd = (size_t)-1;
    size_t limit = strlen(word) / 3;
    if (limit < 2)
        limit = 2;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(word, names[i]);
        if (d <= limit && d < bestd) {
            best = names[i];
            bestd = d;
        }
    }
    return best;
}

/* Key paths are for messages: truncating a pathological one is fine. */
void cfg__pathf(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

void cfg__key_path(char *dst, size_t cap, const char *parent, const char *key)
{
    if (parent && parent[0])
        cfg__pathf(dst, cap, "%s.%s", parent, key);
    else
        cfg__pathf(dst, cap, "%s", key);
}


/* A mapping must hold only keys from `allowed` (NULL: any name), each once.
 * A null node stands for an empty mapping. */
int cfg__map_check(cfg_ctx *c, const cfg_node *m, const char *path, const char *const *allowed,
                     size_t n_allowed)
{
    if (cfg__is_null(m))
        return 0;
    if (m->type != CN_MAP)
        return cfg__fail(c, m->line, "key '%s': expected a mapping (key: value), got a %s", path,
                         m->type == CN_SEQ ? "list" : "scalar");
    for (size_t i = 0; i < m->n; i += 2) {
        const cfg_node *k = m->kids[i];
        char kp[PATH_MAX_LEN];
        if (k->type != CN_SCALAR)
            return cfg__fail(c, k->line, "key '%s': a key must be a plain name, not a %s",
                             path[0] ? path : "(top level)",
                             k->type == CN_SEQ ? "list" : "mapping");
        cfg__key_path(kp, sizeof(kp), path, k->s);
        if (allowed) {
            bool known = false;
            for (size_t j = 0; j < n_allowed && !known; j++)
                known = !strcmp(k->s, allowed[j]);
            if (!known) {
                const char *hint = cfg__did_you_mean(k->s, allowed, n_allowed);
                if (hint)
                    return cfg__fail(c, k->line, "unknown key '%s' (did you mean '%s'?)", kp, hint);
                return cfg__fail(c, k->line, "unknown key '%s'", kp);
            }
        }
        for (size_t j = 0; j < i; j += 2) {
            if (!strcmp(m->kids[j]->s, k->s))
                return cfg__fail(c, k->line, "key '%s': defined twice (first at line %d)", kp,
                                 m->kids[j]->line);
        }
    }
    return 0;
}

/* The value of key in mapping m; NULL when absent or null. */
const cfg_node *cfg__map_get(const cfg_node *m, const char *key)
{
    if (cfg__is_null(m) || m->type != CN_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        if (m->kids[i]->s && !strcmp(m->kids[i]->s, key))
            return cfg__is_null(m->kids[i + 1]) ? NULL : m->kids[i + 1];
    }
    return NULL;
}

/* Line of key in m (for a complaint about a missing or inconsistent value). */
int cfg__map_line(const cfg_node *m, const char *key)
{
    if (!m)
        return 0;
    if (m->type == CN_MAP)
        for (size_t i = 0; i + 1 < m->n; i += 2)
            if (m->kids[i]->s && !strcmp(m->kids[i]->s, key))
                return m->kids[i]->line;
    return m->line;
}

int cfg__need_scalar(cfg_ctx *c, const cfg_node *v, const char *path, const char *what)
{
    if (v->type != CN_SCALAR)
        return cfg__fail(c, v->line, "key '%s': expected %s, got a %s", path, what,
                         v->type == CN_SEQ ? "list" : "mapping");
    return 0;
}

/* The scalar under key in m, its full path in kp: 0 when absent, -1 (said)
 * when it is not a scalar, 1 with *vp set. */
static int opt_scalar(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                      const char *what, char kp[PATH_MAX_LEN], const cfg_node **vp)
{
    *vp = cfg__map_get(m, key);
    cfg__key_path(kp, PATH_MAX_LEN, path, key);
    if (!*vp)
        return 0;
    return cfg__need_scalar(c, *vp, kp, what) < 0 ? -1 : 1;
}

int cfg__parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    if (!*s)
        return -1;
    long long v = strtoll(s, &end, 10);
    if (*end || errno)
        return -1;
    *out = v;
    return 0;
}

int cfg__parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < NELEM(yes); i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* A byte size: "25M", "10MB", "1MiB", "512k", "1G" (powers of 1024) or bytes. */
int cfg__parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {{"", 1},
                 {"b", 1},
                 {"k", 1024},
                 {"kb", 1024},
                 {"kib", 1024},
                 {"m", 1024 * 1024},
                 {"mb", 1024 * 1024},
                 {"mib", 1024 * 1024},
                 {"g", 1024ull * 1024 * 1024},
                 {"gb", 1024ull * 1024 * 1024},
                 {"gib", 1024ull * 1024 * 1024}};
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < NELEM(units); i++) {
        if (!strcasecmp(end, units[i].suffix)) {
            if (v > UINT64_MAX / units[i].mult)
                return -1;
            *out = v * units[i].mult;
            return 0;
        }
    }
    return -1;
}

/* *out is 0 when the value is refused: callers test the return value, but
 * the compiler cannot see that cfg__fail() always returns -1. */
int cfg__check_duration(cfg_ctx *c, const cfg_node *v, const char *kp, int64_t *out)
{
    *out = 0;
    if (cfg__need_scalar(c, v, kp, "a duration") < 0)
        return -1;
    int64_t ms;
    if (sl_parse_duration_ms(v->s, &ms) < 0 || ms < 0 || ms > (int64_t)366 * 86400000 * 100)
        return cfg__fail(c, v->line,
                         "key '%s': '%s' is not a duration (like 250ms, 30s, 5m, 2h, 3d)", kp,
                         v->s);
    *out = ms;
    return 0;
}

/* A rate "50/s", "3000/min"; "0" and "unlimited" mean no limit (0).
 * Rates and bursts are bounded: a rate so small that its next token lies
 * beyond any clock, or so large that it means nothing but overflow, is a
 * mistake (a tiny rate once wrapped around in the bucket and sent almost
 * freely). */
#define CFG_RATE_MIN (1.0 / 86400) /* one a day */
#define CFG_RATE_MAX 1e6           /* per second */
#define CFG_BURST_MAX 1e6

/* The kinds of scalar value, each checked and converted in one place,
 * value_of(). */
typedef enum { V_STR, V_INT, V_BOOL, V_DURATION, V_RATE, V_BURST, V_SIZE } val_kind;

typedef struct val_spec {
    val_kind kind;
    int64_t min, max; /* V_INT: the bounds */
    bool allow;       /* V_DURATION: zero allowed; V_RATE: "unlimited" allowed */
} val_spec;

static const char *const val_what[] = {
    [V_STR] = "a string", [V_INT] = "an integer",  [V_BOOL] = "true or false",
    [V_DURATION] = "a duration", [V_RATE] = "a rate", [V_BURST] = "a number",
    [V_SIZE] = "a size",
};

/* The scalar v (at key path kp) as sp says, into *out (the field of the
 * kind's C type): 0, or -1 after saying what is wrong. */
static int value_of(cfg_ctx *c, const cfg_node *v, const char *kp, const val_spec *sp, void *out)
{
    const char *s = v->s;
    switch (sp->kind) {
    case V_STR:
        free(*(char **)out);
        *(char **)out = xstrdup(s);
        return 0;
    case V_INT: {
        int64_t x;
        if (cfg__parse_int(s, &x) < 0)
            return cfg__fail(c, v->line, "key '%s': '%s' is not an integer", kp, s);
        if (x < sp->min || x > sp->max)
            return cfg__fail(c, v->line, "key '%s': %lld is out of range [%lld, %lld]", kp,
                             (long long)x, (long long)sp->min, (long long)sp->max);
        *(int64_t *)out = x;
        return 0;
    }
    case V_BOOL:
        if (cfg__parse_bool(s, out) < 0)
            return cfg__fail(c, v->line, "key '%s': '%s' is not true or false", kp, s);
        return 0;
    case V_DURATION: {
        int64_t ms;
        if (cfg__check_duration(c, v, kp, &ms) < 0)
            return -1;
        if (ms == 0 && !sp->allow)
            return cfg__fail(c, v->line, "key '%s': must be longer than zero", kp);
        *(int64_t *)out = ms;
        return 0;
    }
    case V_RATE: {
        double r;
        if (sp->allow && (!strcmp(s, "0") || !strcasecmp(s, "unlimited"))) {
            *(double *)out = 0;
            return 0;
        }
        if (sl_parse_rate(s, &r) < 0 || !isfinite(r))
            return cfg__fail(c, v->line,
                             "key '%s': '%s' is not a rate (like 50/s, 3000/min, 10000/h%s)", kp,
                             s, sp->allow ? ", or unlimited" : "");
        if (r <= 0)
            return cfg__fail(c, v->line, "key '%s': rate must be above zero%s", kp,
                             sp->allow ? " (write 'unlimited' for no limit)" : "");
        if (r < CFG_RATE_MIN || r > CFG_RATE_MAX)
            return cfg__fail(c, v->line, "key '%s': '%s' is out of range (1/d to 1000000/s)", kp,
                             s);
        *(double *)out = r;
        return 0;
    }
    case V_BURST: {
        char *end;
        errno = 0;
        double d = strtod(s, &end);
        if (end == s || *end || errno || !isfinite(d) || d <= 0)
            return cfg__fail(c, v->line, "key '%s': '%s' is not a number above zero", kp, s);
        if (d < 1 || d > CFG_BURST_MAX)
            return cfg__fail(c, v->line, "key '%s': '%s' is out of range (1 to 1000000)", kp, s);
        *(double *)out = d;
        return 0;
    }
    case V_SIZE: {
        uint64_t x;
        if (cfg__parse_size(s, &x) < 0 || x == 0)
            return cfg__fail(c, v->line,
                             "key '%s': '%s' is not a size (like 25M, 10MB, 512k, or bytes)", kp,
                             s);
        *(uint64_t *)out = x;
        return 0;
    }
    }
    return 0;
}

/* The one getter: -1 on error, 0 when the key is absent (*out keeps its
 * default), 1 when set. */
static int opt_value(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                     val_spec sp, void *out)
{
    const cfg_node *v;
    char kp[PATH_MAX_LEN];
    int got = opt_scalar(c, m, path, key, val_what[sp.kind], kp, &v);
    if (got <= 0)
        return got;
    return value_of(c, v, kp, &sp, out) < 0 ? -1 : 1;
}

int cfg__opt_str(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, char **out)
{
    return opt_value(c, m, path, key, (val_spec){.kind = V_STR}, out);
}

int cfg__req_str(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, char **out)
{
    int r = cfg__opt_str(c, m, path, key, out);
    if (r == 0) {
        char kp[PATH_MAX_LEN];
        cfg__key_path(kp, sizeof(kp), path, key);
        return cfg__fail(c, cfg__map_line(m, key), "key '%s': required", kp);
    }
    return r;
}

int cfg__opt_int(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, int64_t min,
                 int64_t max, int64_t *out)
{
    return opt_value(c, m, path, key, (val_spec){.kind = V_INT, .min = min, .max = max}, out);
}

int cfg__opt_bool(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, bool *out)
{
    return opt_value(c, m, path, key, (val_spec){.kind = V_BOOL}, out);
}

/* Durations must be positive unless allow_zero. */
int cfg__opt_duration(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                      bool allow_zero, int64_t *out)
{
    return opt_value(c, m, path, key, (val_spec){.kind = V_DURATION, .allow = allow_zero}, out);
}

int cfg__opt_rate(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                  bool allow_unlimited, double *out)
{
    return opt_value(c, m, path, key, (val_spec){.kind = V_RATE, .allow = allow_unlimited}, out);
}

/* A burst: how many messages a full bucket sends at once, 1 to 1000000. */
int cfg__opt_burst(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, double *out)
{
    return opt_value(c, m, path, key, (val_spec){.kind = V_BURST}, out);
}

int cfg__opt_size(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, uint64_t *out)
{
    return opt_value(c, m, path, key, (val_spec){.kind = V_SIZE}, out);
}

/* Canonical text of an IPv4/IPv6 address, or NULL when s is not one. */
char *cfg__ip_canon(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    char out[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, s, buf) == 1)
        return xstrdup(inet_ntop(AF_INET, buf, out, sizeof(out)));
    if (inet_pton(AF_INET6, s, buf) == 1)
        return xstrdup(inet_ntop(AF_INET6, buf, out, sizeof(out)));
    return NULL;
}

/* A DNS server: "ip" or "ip:port" / "[v6]:port". */
bool cfg__dns_server_ok(const char *s)
{
    char *host = NULL;
    uint16_t port;
    if (sl_hostport_parse(s, 0, 53, &host, &port) < 0)
        return false;
    char *ip = cfg__ip_canon(host);
    free(host);
    free(ip);
    return ip != NULL;
}

int cfg__regex_check(cfg_ctx *c, const cfg_node *v, const char *kp)
{
    regex_t re;
    int rc = regcomp(&re, v->s, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char msg[256];
        regerror(rc, &re, msg, sizeof(msg));
        regfree(&re);
        return cfg__fail(c, v->line, "key '%s': invalid regular expression '%s': %s", kp, v->s,
                         msg);
    }
    regfree(&re);
    return 0;
}

/* A list of strings; a single scalar counts as a one-item list. */
int cfg__opt_str_list(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                        char ***out, size_t *n_out)
{
    const cfg_node *v = cfg__map_get(m, key);
    char kp[PATH_MAX_LEN];
    cfg__key_path(kp, sizeof(kp), path, key);
    if (!v)
        return 0;
    for (size_t i = 0; i < *n_out; i++)
        free((*out)[i]);
    free(*out);
    *out = NULL;
    *n_out = 0;
    if (v->type == CN_SCALAR) {
        *out = xmalloc(sizeof(char *));
        (*out)[(*n_out)++] = xstrdup(v->s);
        return 1;
    }
    if (v->type != CN_SEQ)
        return cfg__fail(c, v->line, "key '%s': expected a list of strings", kp);
    *out = xcalloc(v->n, sizeof(char *));
    for (size_t i = 0; i < v->n; i++) {
        if (v->kids[i]->type != CN_SCALAR)
            return cfg__fail(c, v->kids[i]->line, "key '%s[%zu]': expected a string", kp, i);
        (*out)[(*n_out)++] = xstrdup(v->kids[i]->s);
    }
    return 1;
}

const cfg_node *cfg__need_seq(cfg_ctx *c, const cfg_node *v, const char *kp, bool *failed)
{
    *failed = false;
    if (!v)
        return NULL;
    if (v->type != CN_SEQ) {
        cfg__fail(c, v->line, "key '%s': expected a list", kp);
        *failed = true;
        return NULL;
    }
    return v;
}
