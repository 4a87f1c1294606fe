/*
 * config - see config.h.
 *
 * Loading happens in three steps:
 *
 *   1. libyaml's event parser builds a small tree of cfg_node (scalar,
 *      sequence, mapping) that remembers the line of every node, so that
 *      every later complaint can say "FILE:LINE".
 *   2. A schema walk visits the tree section by section and fills an
 *      sl_config that was pre-filled with the defaults. Each mapping is
 *      first checked against the list of keys it may hold: an unknown key is
 *      an error with a did-you-mean suggestion, because a typo must never
 *      silently become a default. Sections are walked in a fixed order
 *      (pools and sites before shaping and backoff) whatever the order in
 *      the file, so cross references can be checked.
 *   3. SLUICE_* environment overrides, then the checks that span sections.
 *
 * Only the first error is reported. The error path frees whatever was
 * built: every array in the partial sl_config is kept consistent with its
 * count at all times so sl_config_free() can release it.
 *
 * Secrets (kafka.sasl_password) are never put into a message.
 */
#include "config.h"
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
#include <unistd.h>
#include <yaml.h>

/* ------------------------------------------------------------------ */
/* The node tree                                                       */

typedef enum { CN_SCALAR, CN_SEQ, CN_MAP } cfg_node_type;

typedef struct cfg_node {
    cfg_node_type type;
    int line;               /* 1-based */
    char *s;                /* scalar text */
    bool plain;             /* unquoted scalar (null detection) */
    struct cfg_node **kids; /* seq: items; map: key, value, key, value... */
    size_t n, cap;
} cfg_node;

/* A YAML alias is expanded by copying the anchored node; the node budget
 * keeps a "billion laughs" document from eating the machine. An alias is
 * looked up among the anchors defined so far, so their counts are bounded
 * too: without that, tens of thousands of each cost minutes of CPU before
 * the first error. A real configuration uses a handful of each. */
#define CFG_MAX_NODES 200000
#define CFG_MAX_DEPTH 64
#define CFG_MAX_ANCHORS 1000
#define CFG_MAX_ALIASES 10000

typedef struct cfg_anchor {
    char *name;
    cfg_node *node;
} cfg_anchor;

typedef struct cfg_ctx {
    const char *file;
    char *err; /* first error, "FILE:LINE: ..." */
    sl_config *cfg;
    size_t n_nodes;
    cfg_anchor *anchors;
    size_t n_anchors;
    size_t n_aliases;
} cfg_ctx;

static int cfg_fail(cfg_ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cfg_fail(cfg_ctx *c, int line, const char *fmt, ...)
{
    if (c->err)
        return -1;
    sl_buf b = SL_BUF_INIT;
    if (line > 0)
        sl_buf_printf(&b, "%s:%d: ", c->file, line);
    else
        sl_buf_printf(&b, "%s: ", c->file);
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    c->err = sl_buf_steal(&b, NULL);
    return -1;
}

static void cfg_node_free(cfg_node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        cfg_node_free(n->kids[i]);
    free(n->kids);
    free(n->s);
    free(n);
}

/* A node of the given line; an error is reported at err_line (where the
 * alias being expanded is, for a copy). */
static cfg_node *cfg_node_new_at(cfg_ctx *c, cfg_node_type type, int line, int err_line)
{
    if (++c->n_nodes > CFG_MAX_NODES) {
        cfg_fail(c, err_line, "document too large (aliases expand to more than %d nodes)",
                 CFG_MAX_NODES);
        return NULL;
    }
    cfg_node *n = xcalloc(1, sizeof(*n));
    n->type = type;
    n->line = line;
    return n;
}

static cfg_node *cfg_node_new(cfg_ctx *c, cfg_node_type type, int line)
{
    return cfg_node_new_at(c, type, line, line);
}

static void cfg_node_add(cfg_node *parent, cfg_node *kid)
{
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 8;
        parent->kids = xrealloc(parent->kids, parent->cap * sizeof(*parent->kids));
    }
    parent->kids[parent->n++] = kid;
}

static cfg_node *cfg_node_clone(cfg_ctx *c, const cfg_node *src, int alias_line)
{
    cfg_node *n = cfg_node_new_at(c, src->type, src->line, alias_line);
    if (!n)
        return NULL;
    n->plain = src->plain;
    n->s = src->s ? xstrdup(src->s) : NULL;
    for (size_t i = 0; i < src->n; i++) {
        cfg_node *k = cfg_node_clone(c, src->kids[i], alias_line);
        if (!k) {
            cfg_node_free(n);
            return NULL;
        }
        cfg_node_add(n, k);
    }
    return n;
}

static int yaml_next(cfg_ctx *c, yaml_parser_t *p, yaml_event_t *ev)
{
    if (yaml_parser_parse(p, ev))
        return 0;
    int line = (int)p->problem_mark.line + 1;
    int ctx_line = (int)p->context_mark.line + 1;
    /* An unclosed quote or bracket is found at the end of the file; the line
     * where it was opened is what the operator needs. */
    if (p->context && ctx_line != line)
        return cfg_fail(c, line, "YAML syntax error: %s %s (started at line %d)",
                        p->problem ? p->problem : "invalid document", p->context, ctx_line);
    if (p->context)
        return cfg_fail(c, line, "YAML syntax error: %s %s",
                        p->problem ? p->problem : "invalid document", p->context);
    return cfg_fail(c, line, "YAML syntax error: %s", p->problem ? p->problem : "invalid document");
}

static int cfg_anchor_add(cfg_ctx *c, const yaml_char_t *name, cfg_node *n)
{
    if (!name)
        return 0;
    if (c->n_anchors >= CFG_MAX_ANCHORS)
        return cfg_fail(c, n->line, "more than %d anchors (&name)", CFG_MAX_ANCHORS);
    c->anchors = xrealloc(c->anchors, (c->n_anchors + 1) * sizeof(*c->anchors));
    c->anchors[c->n_anchors].name = xstrdup((const char *)name);
    c->anchors[c->n_anchors].node = n;
    c->n_anchors++;
    return 0;
}

/* Builds the node that starts with *ev (which it deletes). NULL on error. */
static cfg_node *yaml_build(cfg_ctx *c, yaml_parser_t *p, yaml_event_t *ev, int depth)
{
    int line = (int)ev->start_mark.line + 1;
    cfg_node *n = NULL;

    if (depth > CFG_MAX_DEPTH) {
        yaml_event_delete(ev);
        cfg_fail(c, line, "nesting deeper than %d levels", CFG_MAX_DEPTH);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n = cfg_node_new(c, CN_SCALAR, line);
        if (n) {
            n->s = xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
            n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            if (cfg_anchor_add(c, ev->data.scalar.anchor, n) < 0) {
                cfg_node_free(n);
                n = NULL;
            }
        }
        yaml_event_delete(ev);
        return n;
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        if (++c->n_aliases > CFG_MAX_ALIASES) {
            cfg_fail(c, line, "more than %d aliases (*name)", CFG_MAX_ALIASES);
            yaml_event_delete(ev);
            return NULL;
        }
        for (size_t i = c->n_anchors; i-- > 0;) {
            if (!strcmp(c->anchors[i].name, name)) {
                n = cfg_node_clone(c, c->anchors[i].node, line);
                yaml_event_delete(ev);
                return n;
            }
        }
        cfg_fail(c, line, "unknown alias '*%s'", name);
        yaml_event_delete(ev);
        return NULL;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool is_map = ev->type == YAML_MAPPING_START_EVENT;
        yaml_event_type_t end = is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
        n = cfg_node_new(c, is_map ? CN_MAP : CN_SEQ, line);
        const yaml_char_t *anchor =
            is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
        /* The anchor refers to a node still under construction; an alias to it
         * inside itself would copy a partial node, which is harmless. */
        if (n && cfg_anchor_add(c, anchor, n) < 0) {
            cfg_node_free(n);
            n = NULL;
        }
        yaml_event_delete(ev);
        if (!n)
            return NULL;
        for (;;) {
            yaml_event_t kev;
            if (yaml_next(c, p, &kev) < 0) {
                cfg_node_free(n);
                return NULL;
            }
            if (kev.type == end) {
                yaml_event_delete(&kev);
                return n;
            }
            cfg_node *kid = yaml_build(c, p, &kev, depth + 1);
            if (!kid) {
                cfg_node_free(n);
                return NULL;
            }
            cfg_node_add(n, kid);
        }
    }
    default:
        cfg_fail(c, line, "YAML syntax error: unexpected event");
        yaml_event_delete(ev);
        return NULL;
    }
}

/* Parses a whole document; *root is NULL for an empty one. */
static int yaml_load(cfg_ctx *c, const char *text, size_t len, cfg_node **root)
{
    yaml_parser_t p;
    yaml_event_t ev;
    int rc = -1;

    *root = NULL;
    if (!yaml_parser_initialize(&p))
        return cfg_fail(c, 0, "cannot initialise the YAML parser");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (;;) {
        if (yaml_next(c, &p, &ev) < 0)
            goto out;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            continue;
        }
        if (t == YAML_DOCUMENT_START_EVENT) {
            int line = (int)ev.start_mark.line + 1;
            yaml_event_delete(&ev);
            if (*root) {
                cfg_fail(c, line, "more than one YAML document; sluice reads one");
                goto out;
            }
            continue;
        }
        cfg_node *n = yaml_build(c, &p, &ev, 0);
        if (!n)
            goto out;
        if (*root) { /* cannot happen: one node per document */
            cfg_node_free(n);
            continue;
        }
        *root = n;
    }
    rc = 0;
out:
    yaml_parser_delete(&p);
    if (rc < 0) {
        cfg_node_free(*root);
        *root = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Schema walk helpers                                                 */

static bool cn_is_null(const cfg_node *n)
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
static const char *did_you_mean(const char *word, const char *const *names, size_t n)
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
static void pathf(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void pathf(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

static void key_path(char *dst, size_t cap, const char *parent, const char *key)
{
    if (parent && parent[0])
        pathf(dst, cap, "%s.%s", parent, key);
    else
        pathf(dst, cap, "%s", key);
}

#define PATH_MAX_LEN 256
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A mapping must hold only keys from `allowed` (NULL: any name), each once.
 * A null node stands for an empty mapping. */
static int map_check(cfg_ctx *c, const cfg_node *m, const char *path, const char *const *allowed,
                     size_t n_allowed)
{
    if (cn_is_null(m))
        return 0;
    if (m->type != CN_MAP)
        return cfg_fail(c, m->line, "key '%s': expected a mapping (key: value), got a %s", path,
                        m->type == CN_SEQ ? "list" : "scalar");
    for (size_t i = 0; i < m->n; i += 2) {
        const cfg_node *k = m->kids[i];
        char kp[PATH_MAX_LEN];
        if (k->type != CN_SCALAR)
            return cfg_fail(c, k->line, "key '%s': a key must be a plain name, not a %s",
                            path[0] ? path : "(top level)", k->type == CN_SEQ ? "list" : "mapping");
        key_path(kp, sizeof(kp), path, k->s);
        if (allowed) {
            bool known = false;
            for (size_t j = 0; j < n_allowed && !known; j++)
                known = !strcmp(k->s, allowed[j]);
            if (!known) {
                const char *hint = did_you_mean(k->s, allowed, n_allowed);
                if (hint)
                    return cfg_fail(c, k->line, "unknown key '%s' (did you mean '%s'?)", kp, hint);
                return cfg_fail(c, k->line, "unknown key '%s'", kp);
            }
        }
        for (size_t j = 0; j < i; j += 2) {
            if (!strcmp(m->kids[j]->s, k->s))
                return cfg_fail(c, k->line, "key '%s': defined twice (first at line %d)", kp,
                                m->kids[j]->line);
        }
    }
    return 0;
}

/* The value of key in mapping m; NULL when absent or null. */
static const cfg_node *map_get(const cfg_node *m, const char *key)
{
    if (cn_is_null(m) || m->type != CN_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        if (m->kids[i]->s && !strcmp(m->kids[i]->s, key))
            return cn_is_null(m->kids[i + 1]) ? NULL : m->kids[i + 1];
    }
    return NULL;
}

/* Line of key in m (for a complaint about a missing or inconsistent value). */
static int map_line(const cfg_node *m, const char *key)
{
    if (!m)
        return 0;
    if (m->type == CN_MAP)
        for (size_t i = 0; i + 1 < m->n; i += 2)
            if (m->kids[i]->s && !strcmp(m->kids[i]->s, key))
                return m->kids[i]->line;
    return m->line;
}

static int need_scalar(cfg_ctx *c, const cfg_node *v, const char *path, const char *what)
{
    if (v->type != CN_SCALAR)
        return cfg_fail(c, v->line, "key '%s': expected %s, got a %s", path, what,
                        v->type == CN_SEQ ? "list" : "mapping");
    return 0;
}

/* The opt_* getters return -1 on error, 0 when the key is absent (the output
 * keeps its default), 1 when set. */

static int opt_str(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, char **out)
{
    const cfg_node *v = map_get(m, key);
    char kp[PATH_MAX_LEN];
    key_path(kp, sizeof(kp), path, key);
    if (!v)
        return 0;
    if (need_scalar(c, v, kp, "a string") < 0)
        return -1;
    free(*out);
    *out = xstrdup(v->s);
    return 1;
}

static int req_str(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, char **out)
{
    int r = opt_str(c, m, path, key, out);
    if (r == 0) {
        char kp[PATH_MAX_LEN];
        key_path(kp, sizeof(kp), path, key);
        return cfg_fail(c, map_line(m, key), "key '%s': required", kp);
    }
    return r;
}

static int parse_int(const char *s, int64_t *out)
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

static int opt_int(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, int64_t min,
                   int64_t max, int64_t *out)
{
    const cfg_node *v = map_get(m, key);
    char kp[PATH_MAX_LEN];
    key_path(kp, sizeof(kp), path, key);
    if (!v)
        return 0;
    if (need_scalar(c, v, kp, "an integer") < 0)
        return -1;
    int64_t x;
    if (parse_int(v->s, &x) < 0)
        return cfg_fail(c, v->line, "key '%s': '%s' is not an integer", kp, v->s);
    if (x < min || x > max)
        return cfg_fail(c, v->line, "key '%s': %lld is out of range [%lld, %lld]", kp, (long long)x,
                        (long long)min, (long long)max);
    *out = x;
    return 1;
}

static int opt_bool(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, bool *out)
{
    const cfg_node *v = map_get(m, key);
    char kp[PATH_MAX_LEN];
    key_path(kp, sizeof(kp), path, key);
    if (!v)
        return 0;
    if (need_scalar(c, v, kp, "true or false") < 0)
        return -1;
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < NELEM(yes); i++) {
        if (!strcasecmp(v->s, yes[i])) {
            *out = true;
            return 1;
        }
        if (!strcasecmp(v->s, no[i])) {
            *out = false;
            return 1;
        }
    }
    return cfg_fail(c, v->line, "key '%s': '%s' is not true or false", kp, v->s);
}

/* *out is 0 when the value is refused: callers test the return value, but
 * the compiler cannot see that cfg_fail() always returns -1. */
static int check_duration(cfg_ctx *c, const cfg_node *v, const char *kp, int64_t *out)
{
    *out = 0;
    if (need_scalar(c, v, kp, "a duration") < 0)
        return -1;
    int64_t ms;
    if (sl_parse_duration_ms(v->s, &ms) < 0 || ms < 0 || ms > (int64_t)366 * 86400000 * 100)
        return cfg_fail(c, v->line,
                        "key '%s': '%s' is not a duration (like 250ms, 30s, 5m, 2h, 3d)", kp, v->s);
    *out = ms;
    return 0;
}

/* Durations must be positive unless allow_zero. */
static int opt_duration(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                        bool allow_zero, int64_t *out)
{
    const cfg_node *v = map_get(m, key);
    char kp[PATH_MAX_LEN];
    key_path(kp, sizeof(kp), path, key);
    if (!v)
        return 0;
    int64_t ms;
    if (check_duration(c, v, kp, &ms) < 0)
        return -1;
    if (ms == 0 && !allow_zero)
        return cfg_fail(c, v->line, "key '%s': must be longer than zero", kp);
    *out = ms;
    return 1;
}

/* A rate "50/s", "3000/min"; "0" and "unlimited" mean no limit (0).
 * Rates and bursts are bounded: a rate so small that its next token lies
 * beyond any clock, or so large that it means nothing but overflow, is a
 * mistake (a tiny rate once wrapped around in the bucket and sent almost
 * freely). */
#define CFG_RATE_MIN (1.0 / 86400) /* one a day */
#define CFG_RATE_MAX 1e6           /* per second */
#define CFG_BURST_MAX 1e6

static int opt_rate(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                    bool allow_unlimited, double *out)
{
    const cfg_node *v = map_get(m, key);
    char kp[PATH_MAX_LEN];
    key_path(kp, sizeof(kp), path, key);
    if (!v)
        return 0;
    if (need_scalar(c, v, kp, "a rate") < 0)
        return -1;
    if (allow_unlimited && (!strcmp(v->s, "0") || !strcasecmp(v->s, "unlimited"))) {
        *out = 0;
        return 1;
    }
    double r;
    if (sl_parse_rate(v->s, &r) < 0 || !isfinite(r))
        return cfg_fail(c, v->line, "key '%s': '%s' is not a rate (like 50/s, 3000/min, 10000/h%s)",
                        kp, v->s, allow_unlimited ? ", or unlimited" : "");
    if (r <= 0)
        return cfg_fail(c, v->line, "key '%s': rate must be above zero%s", kp,
                        allow_unlimited ? " (write 'unlimited' for no limit)" : "");
    if (r < CFG_RATE_MIN || r > CFG_RATE_MAX)
        return cfg_fail(c, v->line, "key '%s': '%s' is out of range (1/d to 1000000/s)", kp, v->s);
    *out = r;
    return 1;
}

/* A burst: how many messages a full bucket sends at once, 1 to 1000000. */
static int opt_burst(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, double *out)
{
    const cfg_node *v = map_get(m, key);
    char kp[PATH_MAX_LEN];
    key_path(kp, sizeof(kp), path, key);
    if (!v)
        return 0;
    if (need_scalar(c, v, kp, "a number") < 0)
        return -1;
    char *end;
    errno = 0;
    double d = strtod(v->s, &end);
    if (end == v->s || *end || errno || !isfinite(d) || d <= 0)
        return cfg_fail(c, v->line, "key '%s': '%s' is not a number above zero", kp, v->s);
    if (d < 1 || d > CFG_BURST_MAX)
        return cfg_fail(c, v->line, "key '%s': '%s' is out of range (1 to 1000000)", kp, v->s);
    *out = d;
    return 1;
}

/* A byte size: "25M", "10MB", "1MiB", "512k", "1G" (powers of 1024) or bytes. */
static int parse_size(const char *s, uint64_t *out)
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

static int opt_size(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, uint64_t *out)
{
    const cfg_node *v = map_get(m, key);
    char kp[PATH_MAX_LEN];
    key_path(kp, sizeof(kp), path, key);
    if (!v)
        return 0;
    if (need_scalar(c, v, kp, "a size") < 0)
        return -1;
    uint64_t x;
    if (parse_size(v->s, &x) < 0 || x == 0)
        return cfg_fail(c, v->line, "key '%s': '%s' is not a size (like 25M, 10MB, 512k, or bytes)",
                        kp, v->s);
    *out = x;
    return 1;
}

/* Canonical text of an IPv4/IPv6 address, or NULL when s is not one. */
static char *ip_canon(const char *s)
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
static bool dns_server_ok(const char *s)
{
    char *host = NULL;
    uint16_t port;
    if (sl_hostport_parse(s, 0, 53, &host, &port) < 0)
        return false;
    char *ip = ip_canon(host);
    free(host);
    free(ip);
    return ip != NULL;
}

static int regex_check(cfg_ctx *c, const cfg_node *v, const char *kp)
{
    regex_t re;
    int rc = regcomp(&re, v->s, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char msg[256];
        regerror(rc, &re, msg, sizeof(msg));
        regfree(&re);
        return cfg_fail(c, v->line, "key '%s': invalid regular expression '%s': %s", kp, v->s, msg);
    }
    regfree(&re);
    return 0;
}

/* A list of strings; a single scalar counts as a one-item list. */
static int opt_str_list(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                        char ***out, size_t *n_out)
{
    const cfg_node *v = map_get(m, key);
    char kp[PATH_MAX_LEN];
    key_path(kp, sizeof(kp), path, key);
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
        return cfg_fail(c, v->line, "key '%s': expected a list of strings", kp);
    *out = xcalloc(v->n, sizeof(char *));
    for (size_t i = 0; i < v->n; i++) {
        if (v->kids[i]->type != CN_SCALAR)
            return cfg_fail(c, v->kids[i]->line, "key '%s[%zu]': expected a string", kp, i);
        (*out)[(*n_out)++] = xstrdup(v->kids[i]->s);
    }
    return 1;
}

static const cfg_node *need_seq(cfg_ctx *c, const cfg_node *v, const char *kp, bool *failed)
{
    *failed = false;
    if (!v)
        return NULL;
    if (v->type != CN_SEQ) {
        cfg_fail(c, v->line, "key '%s': expected a list", kp);
        *failed = true;
        return NULL;
    }
    return v;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((x) < 0)                                                                               \
            return -1;                                                                             \
    } while (0)

/* Set an integer field from an optional key. */
#define OPT_INT(m, path, key, min, max, lval)                                                      \
    do {                                                                                           \
        int64_t v_;                                                                                \
        int r_ = opt_int(c, m, path, key, min, max, &v_);                                          \
        if (r_ < 0)                                                                                \
            return -1;                                                                             \
        if (r_)                                                                                    \
            (lval) = v_;                                                                           \
    } while (0)

/* ------------------------------------------------------------------ */
/* Defaults                                                            */

static const sl_timeouts rfc5321_timeouts = {
    .connect = 30000,
    .greeting = 300000,
    .ehlo = 300000,
    .mail = 300000,
    .rcpt = 300000,
    .data = 120000,
    .data_block = 180000,
    .dot = 600000,
    .quit = 120000,
    .idle = 30000,
};

static const int64_t default_delays[] = {60000, 300000, 1800000, 7200000, 21600000};

/* The rules every config ends with. Order matters: the first match wins, so
 * the specific ones come before "^5[0-9][0-9] 5\.7\." and the catch-all.
 * hard: the address itself is bad (suppress it); soft: this message failed
 * for a reason that can pass later or for another message. */
static const struct {
    const char *match, *class_name;
    bool hard;
} default_bounce_rules[] = {
    {"5\\.1\\.10", "bad-domain", true},
    {"^5[0-9][0-9] 5\\.1\\.[0-3]", "invalid-recipient", true},
    {"^5[0-9][0-9] 5\\.1\\.[0-9]", "bad-domain", true},
    {"^[45][0-9][0-9] [45]\\.2\\.2", "mailbox-full", false},
    {"5\\.7\\.1.*(spam|blocked|blacklist|block list|blocklist)", "spam-block", false},
    {"^[45][0-9][0-9] [45]\\.7\\.[0-9]+ .*(reputation|rate)", "reputation", false},
    {"5\\.7\\.(10|11)|TLS", "tls", false},
    {"^5[0-9][0-9] 5\\.6\\.", "content", false},
    {"^5[0-9][0-9] 5\\.7\\.", "policy", false},
    {"^5", "unknown", false},
};

static const char *const bounce_classes[] = {
    "invalid-recipient", "bad-domain", "mailbox-full", "spam-block", "policy",
    "reputation",        "tls",        "content",      "unknown",
};

static char *hostname_or(const char *fallback)
{
    char h[256];
    if (gethostname(h, sizeof(h)) == 0) {
        h[sizeof(h) - 1] = 0;
        if (h[0])
            return xstrdup(h);
    }
    return xstrdup(fallback);
}

static void shaping_defaults(sl_shaping *s, const char *site)
{
    memset(s, 0, sizeof(*s));
    s->site = xstrdup(site);
    s->max_message_rate = 100;
    s->burst = 100;
    s->max_connections = 10;
    s->max_messages_per_connection = 100;
    s->tls = SL_TLS_OPPORTUNISTIC;
    s->timeouts = rfc5321_timeouts;
}

/* Every default a config file starts from. */
static sl_config *config_base(const char *path)
{
    sl_config *cfg = xcalloc(1, sizeof(*cfg));
    cfg->path = xstrdup(path);
    cfg->kafka.bootstrap = xstrdup("127.0.0.1:9092");
    cfg->kafka.topic_prefix = xstrdup("sluice.");
    cfg->kafka.security_protocol = xstrdup("plaintext");
    cfg->kafka.session_timeout_ms = 10000;
    cfg->kafka.heartbeat_interval_ms = 3000;
    cfg->kafka.commit_interval_ms = 1000;
    cfg->kafka.linger_ms = -1;
    cfg->kafka.partitions = 6;
    cfg->kafka.replication_factor = 3;
    cfg->kafka.client_id = xstrdup("sluice");
    cfg->dns.timeout_ms = 5000;
    cfg->dns.tries = 2;
    cfg->shaping = xcalloc(1, sizeof(sl_shaping));
    shaping_defaults(&cfg->shaping[0], "default");
    cfg->n_shaping = 1;
    cfg->retry.delays_ms = xmalloc(sizeof(default_delays));
    memcpy(cfg->retry.delays_ms, default_delays, sizeof(default_delays));
    cfg->retry.n_delays = NELEM(default_delays);
    cfg->retry.expiry_ms = 72 * 3600000LL;
    cfg->submit.max_message_size = 25 * 1024 * 1024;
    cfg->submit.max_recipients = 100;
    cfg->submit.max_connections = 20000;
    cfg->submit.max_connections_per_ip = 20;
    cfg->submit.idle_timeout_ms = 300000;
    cfg->submit.command_timeout_ms = 60000;
    cfg->submit.data_timeout_ms = 600000;
    cfg->submit.auth_workers = 2;
    cfg->submit.auth_queue = 32;
    cfg->api.max_body = 64 * 1024 * 1024;
    cfg->api.max_connections = 1000;
    cfg->api.ack_timeout_ms = 30000;
    cfg->metrics.health_timeout_ms = 60000; /* SL_HEALTH_TIMEOUT_MS */
    cfg->webhook.max_attempts = 5;
    cfg->sender.workers = 0;
    cfg->sender.max_inflight = 5000;
    cfg->sender.drain_timeout_ms = 30000;
    cfg->sender.destination_backoff_initial_ms = 1000;
    cfg->sender.destination_backoff_max_ms = 300000;
    cfg->sender.max_inflight_per_destination = 0;
    cfg->sender.idle_state_timeout_ms = 600000;
    cfg->sender.ledger = true;
    cfg->sender.ledger_lookback_ms = 1800000;
    cfg->sender.ledger_max_entries = 1000000;
    cfg->sender.instance_id = hostname_or("sluice");
    cfg->scheduler.max_buffered = 100000;
    cfg->scheduler.max_job_bytes = 1024 * 1024;
    cfg->scheduler.default_pool = xstrdup("default");
    cfg->scheduler.default_tenant = xstrdup("default");
    cfg->scheduler.idle_state_timeout_ms = 600000;
    return cfg;
}

static void append_default_bounce_rules(sl_config *cfg)
{
    size_t n = cfg->n_bounce_rules + NELEM(default_bounce_rules);
    cfg->bounce_rules = xrealloc(cfg->bounce_rules, n * sizeof(sl_bounce_rule));
    for (size_t i = 0; i < NELEM(default_bounce_rules); i++) {
        sl_bounce_rule *r = &cfg->bounce_rules[cfg->n_bounce_rules++];
        r->match = xstrdup(default_bounce_rules[i].match);
        r->class_name = xstrdup(default_bounce_rules[i].class_name);
        r->hard = default_bounce_rules[i].hard;
    }
}

/* ------------------------------------------------------------------ */
/* Sections                                                            */

static int walk_kafka(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {
        "bootstrap",          "topic_prefix",       "security_protocol",
        "sasl_mechanism",     "sasl_username",      "sasl_password",
        "ssl_ca_location",    "session_timeout_ms", "heartbeat_interval_ms",
        "commit_interval_ms", "partitions",         "replication_factor",
        "client_id",          "linger_ms",
    };
    sl_config *cfg = c->cfg;
    const char *p = "kafka";
    TRY(map_check(c, m, p, keys, NELEM(keys)));
    TRY(opt_str(c, m, p, "bootstrap", &cfg->kafka.bootstrap));
    TRY(opt_str(c, m, p, "topic_prefix", &cfg->kafka.topic_prefix));
    if (opt_str(c, m, p, "security_protocol", &cfg->kafka.security_protocol) < 0)
        return -1;
    sl_lower(cfg->kafka.security_protocol);
    static const char *const protos[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
    bool ok = false;
    for (size_t i = 0; i < NELEM(protos); i++)
        ok |= !strcmp(cfg->kafka.security_protocol, protos[i]);
    if (!ok)
        return cfg_fail(c, map_line(m, "security_protocol"),
                        "key 'kafka.security_protocol': '%s' is not one of plaintext, ssl, "
                        "sasl_plaintext, sasl_ssl",
                        cfg->kafka.security_protocol);
    TRY(opt_str(c, m, p, "sasl_mechanism", &cfg->kafka.sasl_mechanism));
    TRY(opt_str(c, m, p, "sasl_username", &cfg->kafka.sasl_username));
    /* The password is a secret: opt_str never quotes the value it reads. */
    TRY(opt_str(c, m, p, "sasl_password", &cfg->kafka.sasl_password));
    TRY(opt_str(c, m, p, "ssl_ca_location", &cfg->kafka.ssl_ca_location));
    OPT_INT(m, p, "session_timeout_ms", 1, 3600000, cfg->kafka.session_timeout_ms);
    OPT_INT(m, p, "heartbeat_interval_ms", 1, 3600000, cfg->kafka.heartbeat_interval_ms);
    OPT_INT(m, p, "commit_interval_ms", 1, 3600000, cfg->kafka.commit_interval_ms);
    OPT_INT(m, p, "linger_ms", 0, 60000, cfg->kafka.linger_ms);
    OPT_INT(m, p, "partitions", 1, 100000, cfg->kafka.partitions);
    OPT_INT(m, p, "replication_factor", 1, 1000, cfg->kafka.replication_factor);
    TRY(opt_str(c, m, p, "client_id", &cfg->kafka.client_id));
    if (!cfg->kafka.bootstrap[0])
        return cfg_fail(c, map_line(m, "bootstrap"), "key 'kafka.bootstrap': must not be empty");
    if (cfg->kafka.heartbeat_interval_ms >= cfg->kafka.session_timeout_ms)
        return cfg_fail(c, map_line(m, "heartbeat_interval_ms"),
                        "key 'kafka.heartbeat_interval_ms': must be below session_timeout_ms (%d)",
                        cfg->kafka.session_timeout_ms);
    return 0;
}

static int walk_dns(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"servers", "timeout", "tries"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "dns", keys, NELEM(keys)));
    int r = opt_str_list(c, m, "dns", "servers", &cfg->dns.servers, &cfg->dns.n_servers);
    TRY(r);
    if (r) {
        const cfg_node *v = map_get(m, "servers");
        for (size_t i = 0; i < cfg->dns.n_servers; i++) {
            if (!dns_server_ok(cfg->dns.servers[i]))
                return cfg_fail(c, v->type == CN_SEQ ? v->kids[i]->line : v->line,
                                "key 'dns.servers[%zu]': '%s' is not an IP address or ip:port", i,
                                cfg->dns.servers[i]);
        }
    }
    TRY(opt_duration(c, m, "dns", "timeout", false, &cfg->dns.timeout_ms));
    OPT_INT(m, "dns", "tries", 1, 20, cfg->dns.tries);
    return 0;
}

static int walk_routes(cfg_ctx *c, const cfg_node *m)
{
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "routes", NULL, 0));
    if (cn_is_null(m))
        return 0;
    cfg->routes = xcalloc(m->n / 2 + 1, sizeof(sl_route));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        char kp[PATH_MAX_LEN];
        key_path(kp, sizeof(kp), "routes", k->s);
        if (cn_is_null(v))
            return cfg_fail(c, k->line, "key '%s': needs a host:port", kp);
        TRY(need_scalar(c, v, kp, "host:port"));
        sl_route *r = &cfg->routes[cfg->n_routes];
        if (sl_hostport_parse(v->s, 0, 25, &r->host, &r->port) < 0)
            return cfg_fail(c, v->line, "key '%s': '%s' is not host:port", kp, v->s);
        r->pattern = xstrdup(k->s);
        sl_lower(r->pattern);
        cfg->n_routes++;
    }
    return 0;
}

/* "YYYY-MM-DD" to days since 1970-01-01 (proleptic Gregorian, UTC). */
static int parse_date(const char *s, int64_t *days)
{
    int y, mo, d, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || s[n] || n != 10)
        return -1;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap))
        return -1;
    /* Howard Hinnant's days_from_civil. */
    y -= mo <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *days = era * 146097 + doe - 719468;
    return 0;
}

static int walk_warmup(cfg_ctx *c, const cfg_node *m, const char *path, sl_source *src)
{
    static const char *const keys[] = {"start", "per_day"};
    TRY(map_check(c, m, path, keys, NELEM(keys)));
    char kp[PATH_MAX_LEN];
    const cfg_node *start = map_get(m, "start");
    key_path(kp, sizeof(kp), path, "start");
    if (!start)
        return cfg_fail(c, map_line(m, "start"), "key '%s': required (YYYY-MM-DD)", kp);
    TRY(need_scalar(c, start, kp, "a date"));
    if (parse_date(start->s, &src->warmup.start_day) < 0)
        return cfg_fail(c, start->line, "key '%s': '%s' is not a date YYYY-MM-DD", kp, start->s);
    const cfg_node *pd = map_get(m, "per_day");
    key_path(kp, sizeof(kp), path, "per_day");
    if (!pd)
        return cfg_fail(c, map_line(m, "per_day"), "key '%s': required (a list of daily caps)", kp);
    if (pd->type != CN_SEQ || pd->n == 0)
        return cfg_fail(c, pd->line, "key '%s': expected a non-empty list of integers", kp);
    src->has_warmup = true;
    src->warmup.per_day = xcalloc(pd->n, sizeof(uint32_t));
    for (size_t i = 0; i < pd->n; i++) {
        const cfg_node *v = pd->kids[i];
        int64_t x;
        if (v->type != CN_SCALAR || parse_int(v->s, &x) < 0 || x < 0 || x > UINT32_MAX)
            return cfg_fail(c, v->line, "key '%s[%zu]': expected a message count", kp, i);
        src->warmup.per_day[src->warmup.n_per_day++] = (uint32_t)x;
    }
    return 0;
}

static int walk_pools(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"ip", "ehlo", "weight", "socks5", "warmup"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "pools", NULL, 0));
    if (cn_is_null(m))
        return 0;
    cfg->pools = xcalloc(m->n / 2 + 1, sizeof(sl_pool));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        char pp[PATH_MAX_LEN];
        key_path(pp, sizeof(pp), "pools", k->s);
        sl_pool *pool = &cfg->pools[cfg->n_pools++];
        pool->name = xstrdup(k->s);
        if (cn_is_null(v) || v->type != CN_SEQ || v->n == 0)
            return cfg_fail(c, cn_is_null(v) ? k->line : v->line,
                            "key '%s': expected a non-empty list of sources ({ ip, ehlo })", pp);
        pool->sources = xcalloc(v->n, sizeof(sl_source));
        for (size_t j = 0; j < v->n; j++) {
            const cfg_node *e = v->kids[j];
            char sp[PATH_MAX_LEN], kp[PATH_MAX_LEN];
            pathf(sp, sizeof(sp), "%s[%zu]", pp, j);
            if (e->type != CN_MAP)
                return cfg_fail(c, e->line, "key '%s': expected a mapping { ip, ehlo }", sp);
            TRY(map_check(c, e, sp, keys, NELEM(keys)));
            sl_source *src = &pool->sources[pool->n_sources++];
            src->weight = 1;
            char *ip = NULL;
            if (req_str(c, e, sp, "ip", &ip) < 0) {
                free(ip);
                return -1;
            }
            const cfg_node *ipn = map_get(e, "ip");
            key_path(kp, sizeof(kp), sp, "ip");
            src->ip = ip_canon(ip);
            if (!src->ip) {
                cfg_fail(c, ipn->line, "key '%s': '%s' is not an IPv4 or IPv6 address", kp, ip);
                free(ip);
                return -1;
            }
            free(ip);
            /* A source address belongs to one pool: its EHLO name and warm-up
             * state are per address, and sl_config_source() finds it by ip. */
            for (size_t pi = 0; pi < cfg->n_pools; pi++) {
                const sl_pool *op = &cfg->pools[pi];
                size_t ns = op == pool ? pool->n_sources - 1 : op->n_sources;
                for (size_t si = 0; si < ns; si++)
                    if (!strcmp(op->sources[si].ip, src->ip))
                        return cfg_fail(c, ipn->line,
                                        "key '%s': address %s is already in pool '%s'", kp, src->ip,
                                        op->name);
            }
            TRY(req_str(c, e, sp, "ehlo", &src->ehlo));
            OPT_INT(e, sp, "weight", 1, 1000000, src->weight);
            if (opt_str(c, e, sp, "socks5", &src->socks5) < 0)
                return -1;
            if (src->socks5) {
                uint16_t port;
                key_path(kp, sizeof(kp), sp, "socks5");
                if (sl_hostport_parse(src->socks5, SL_HP_NEED_PORT, 0, NULL, &port) < 0)
                    return cfg_fail(c, map_get(e, "socks5")->line,
                                    "key '%s': '%s' is not host:port", kp, src->socks5);
            }
            const cfg_node *w = map_get(e, "warmup");
            if (w) {
                key_path(kp, sizeof(kp), sp, "warmup");
                TRY(walk_warmup(c, w, kp, src));
            }
        }
    }
    return 0;
}

static int walk_sites(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"mx", "domains"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "sites", NULL, 0));
    if (cn_is_null(m))
        return 0;
    cfg->sites = xcalloc(m->n / 2 + 1, sizeof(sl_site));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        char sp[PATH_MAX_LEN];
        key_path(sp, sizeof(sp), "sites", k->s);
        if (!strcmp(k->s, "default"))
            return cfg_fail(c, k->line,
                            "key '%s': 'default' is reserved for destinations in no site", sp);
        sl_site *s = &cfg->sites[cfg->n_sites++];
        s->name = xstrdup(k->s);
        TRY(map_check(c, v, sp, keys, NELEM(keys)));
        TRY(opt_str_list(c, v, sp, "mx", &s->mx, &s->n_mx));
        TRY(opt_str_list(c, v, sp, "domains", &s->domains, &s->n_domains));
        for (size_t j = 0; j < s->n_mx; j++)
            sl_lower(s->mx[j]);
        for (size_t j = 0; j < s->n_domains; j++)
            sl_lower(s->domains[j]);
        if (s->n_mx == 0 && s->n_domains == 0)
            return cfg_fail(c, cn_is_null(v) ? k->line : v->line,
                            "key '%s': a site needs mx or domains patterns", sp);
    }
    return 0;
}

static int check_site(cfg_ctx *c, const char *name, int line, const char *kp)
{
    if (!strcmp(name, "default"))
        return 0;
    const char **names = xcalloc(c->cfg->n_sites + 1, sizeof(char *));
    for (size_t i = 0; i < c->cfg->n_sites; i++) {
        if (!strcmp(c->cfg->sites[i].name, name)) {
            free(names);
            return 0;
        }
        names[i] = c->cfg->sites[i].name;
    }
    const char *hint = did_you_mean(name, names, c->cfg->n_sites);
    if (hint)
        cfg_fail(c, line, "key '%s': site '%s' is not defined in sites (did you mean '%s'?)", kp,
                 name, hint);
    else
        cfg_fail(c, line, "key '%s': site '%s' is not defined in sites", kp, name);
    free(names);
    return -1;
}

/* Fill s from mapping m over what s holds already (defaults or the
 * "default" entry). */
static int walk_shaping_entry(cfg_ctx *c, const cfg_node *m, const char *sp, sl_shaping *s,
                              bool inherit_burst)
{
    static const char *const keys[] = {
        "max_message_rate", "burst", "max_connections", "max_messages_per_connection", "tls",
        "timeouts"};
    static const char *const tkeys[] = {"connect", "greeting",   "ehlo", "mail", "rcpt",
                                        "data",    "data_block", "dot",  "quit", "idle"};
    TRY(map_check(c, m, sp, keys, NELEM(keys)));
    int rate_set = opt_rate(c, m, sp, "max_message_rate", true, &s->max_message_rate);
    TRY(rate_set);
    int burst_set = opt_burst(c, m, sp, "burst", &s->burst);
    TRY(burst_set);
    /* Without an explicit burst, the bucket holds one second of the rate this
     * entry sets; an entry that sets no rate keeps the default's burst. */
    if (!burst_set && (rate_set || !inherit_burst))
        s->burst = s->max_message_rate > 1 ? s->max_message_rate : 1;
    OPT_INT(m, sp, "max_connections", 1, 100000, s->max_connections);
    OPT_INT(m, sp, "max_messages_per_connection", 1, 100000000, s->max_messages_per_connection);
    char *tls = NULL;
    int r = opt_str(c, m, sp, "tls", &tls);
    if (r > 0) {
        if (!strcmp(tls, "opportunistic"))
            s->tls = SL_TLS_OPPORTUNISTIC;
        else if (!strcmp(tls, "required"))
            s->tls = SL_TLS_REQUIRED;
        else if (!strcmp(tls, "disabled"))
            s->tls = SL_TLS_DISABLED;
        else
            r = cfg_fail(c, map_get(m, "tls")->line,
                         "key '%s.tls': '%s' is not one of opportunistic, required, disabled", sp,
                         tls);
    }
    free(tls);
    TRY(r);
    const cfg_node *t = map_get(m, "timeouts");
    if (t) {
        char tp[PATH_MAX_LEN];
        key_path(tp, sizeof(tp), sp, "timeouts");
        TRY(map_check(c, t, tp, tkeys, NELEM(tkeys)));
        int64_t *fields[] = {&s->timeouts.connect,    &s->timeouts.greeting, &s->timeouts.ehlo,
                             &s->timeouts.mail,       &s->timeouts.rcpt,     &s->timeouts.data,
                             &s->timeouts.data_block, &s->timeouts.dot,      &s->timeouts.quit,
                             &s->timeouts.idle};
        for (size_t i = 0; i < NELEM(tkeys); i++)
            TRY(opt_duration(c, t, tp, tkeys[i], false, fields[i]));
    }
    return 0;
}

static void shaping_copy(sl_shaping *dst, const sl_shaping *src, const char *site)
{
    *dst = *src;
    dst->site = xstrdup(site);
}

static int walk_shaping(cfg_ctx *c, const cfg_node *m)
{
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "shaping", NULL, 0));
    if (cn_is_null(m))
        return 0;
    const cfg_node *d = NULL;
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (!strcmp(m->kids[i]->s, "default"))
            d = m->kids[i + 1];
    if (d)
        TRY(walk_shaping_entry(c, d, "shaping.default", &cfg->shaping[0], false));
    cfg->shaping = xrealloc(cfg->shaping, (m->n / 2 + 1) * sizeof(sl_shaping));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        if (!strcmp(k->s, "default"))
            continue;
        char sp[PATH_MAX_LEN];
        key_path(sp, sizeof(sp), "shaping", k->s);
        TRY(check_site(c, k->s, k->line, sp));
        sl_shaping *s = &cfg->shaping[cfg->n_shaping++];
        shaping_copy(s, &cfg->shaping[0], k->s);
        TRY(walk_shaping_entry(c, v, sp, s, true));
    }
    return 0;
}

static int walk_backoff(cfg_ctx *c, const cfg_node *v)
{
    static const char *const keys[] = {"match", "site",          "action",
                                       "floor", "recover_after", "duration"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = need_seq(c, v, "backoff", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->backoff = xcalloc(l->n + 1, sizeof(sl_backoff_rule));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char bp[PATH_MAX_LEN], kp[PATH_MAX_LEN];
        pathf(bp, sizeof(bp), "backoff[%zu]", i);
        if (e->type != CN_MAP)
            return cfg_fail(c, e->line, "key '%s': expected a mapping { match, action, ... }", bp);
        TRY(map_check(c, e, bp, keys, NELEM(keys)));
        sl_backoff_rule *r = &cfg->backoff[cfg->n_backoff++];
        r->line = e->line;
        r->action = SL_BACKOFF_HALVE;
        r->floor = 1;
        r->recover_after_ms = 600000;
        r->duration_ms = 1800000;
        TRY(req_str(c, e, bp, "match", &r->match));
        key_path(kp, sizeof(kp), bp, "match");
        TRY(regex_check(c, map_get(e, "match"), kp));
        int rs = opt_str(c, e, bp, "site", &r->site);
        TRY(rs);
        if (rs) {
            key_path(kp, sizeof(kp), bp, "site");
            TRY(check_site(c, r->site, map_get(e, "site")->line, kp));
        }
        char *action = NULL;
        int ra = opt_str(c, e, bp, "action", &action);
        if (ra > 0) {
            if (!strcmp(action, "halve"))
                r->action = SL_BACKOFF_HALVE;
            else if (!strcmp(action, "suspend"))
                r->action = SL_BACKOFF_SUSPEND;
            else if (!strcmp(action, "disable_ip"))
                r->action = SL_BACKOFF_DISABLE_IP;
            else
                ra = cfg_fail(c, map_get(e, "action")->line,
                              "key '%s.action': '%s' is not one of halve, suspend, disable_ip", bp,
                              action);
        }
        free(action);
        TRY(ra);
        TRY(opt_rate(c, e, bp, "floor", false, &r->floor));
        TRY(opt_duration(c, e, bp, "recover_after", false, &r->recover_after_ms));
        TRY(opt_duration(c, e, bp, "duration", false, &r->duration_ms));
    }
    return 0;
}

/* limits: [{ tenant, campaign, max_message_rate, burst }] - see sl_limit. */
static int walk_limits(cfg_ctx *c, const cfg_node *v)
{
    static const char *const keys[] = {"tenant", "campaign", "max_message_rate", "burst"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = need_seq(c, v, "limits", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->limits = xcalloc(l->n + 1, sizeof(sl_limit));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char bp[PATH_MAX_LEN];
        pathf(bp, sizeof(bp), "limits[%zu]", i);
        if (e->type != CN_MAP)
            return cfg_fail(c, e->line,
                            "key '%s': expected a mapping { tenant, campaign, max_message_rate }",
                            bp);
        TRY(map_check(c, e, bp, keys, NELEM(keys)));
        sl_limit *lim = &cfg->limits[cfg->n_limits++];
        lim->line = e->line;
        int rt = opt_str(c, e, bp, "tenant", &lim->tenant);
        TRY(rt);
        int rc = opt_str(c, e, bp, "campaign", &lim->campaign);
        TRY(rc);
        if (!rt && !rc)
            return cfg_fail(c, e->line, "key '%s': needs a tenant or a campaign (or both)", bp);
        int rr = opt_rate(c, e, bp, "max_message_rate", false, &lim->max_message_rate);
        TRY(rr);
        if (!rr)
            return cfg_fail(c, e->line, "key '%s.max_message_rate': required", bp);
        int rb = opt_burst(c, e, bp, "burst", &lim->burst);
        TRY(rb);
        if (!rb)
            lim->burst = lim->max_message_rate > 1 ? lim->max_message_rate : 1;
    }
    return 0;
}

static int walk_bounce_rules(cfg_ctx *c, const cfg_node *v)
{
    static const char *const keys[] = {"match", "class", "hard"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = need_seq(c, v, "bounce_rules", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->bounce_rules = xcalloc(l->n + 1, sizeof(sl_bounce_rule));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char bp[PATH_MAX_LEN], kp[PATH_MAX_LEN];
        pathf(bp, sizeof(bp), "bounce_rules[%zu]", i);
        if (e->type != CN_MAP)
            return cfg_fail(c, e->line, "key '%s': expected a mapping { match, class, hard }", bp);
        TRY(map_check(c, e, bp, keys, NELEM(keys)));
        sl_bounce_rule *r = &cfg->bounce_rules[cfg->n_bounce_rules++];
        r->hard = true;
        TRY(req_str(c, e, bp, "match", &r->match));
        key_path(kp, sizeof(kp), bp, "match");
        TRY(regex_check(c, map_get(e, "match"), kp));
        TRY(req_str(c, e, bp, "class", &r->class_name));
        bool ok = false;
        for (size_t j = 0; j < NELEM(bounce_classes); j++)
            ok |= !strcmp(r->class_name, bounce_classes[j]);
        if (!ok) {
            const char *hint = did_you_mean(r->class_name, bounce_classes, NELEM(bounce_classes));
            return cfg_fail(c, map_get(e, "class")->line,
                            "key '%s.class': '%s' is not a bounce class%s%s%s (one of "
                            "invalid-recipient, bad-domain, mailbox-full, spam-block, policy, "
                            "reputation, tls, content, unknown)",
                            bp, r->class_name, hint ? "; did you mean '" : "", hint ? hint : "",
                            hint ? "'?" : "");
        }
        TRY(opt_bool(c, e, bp, "hard", &r->hard));
    }
    return 0;
}

static int walk_retry(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"delays", "expiry"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "retry", keys, NELEM(keys)));
    const cfg_node *d = map_get(m, "delays");
    if (d) {
        if (d->type != CN_SEQ || d->n == 0)
            return cfg_fail(c, d->line,
                            "key 'retry.delays': expected a non-empty list of durations");
        free(cfg->retry.delays_ms);
        cfg->retry.delays_ms = xcalloc(d->n, sizeof(int64_t));
        cfg->retry.n_delays = 0;
        for (size_t i = 0; i < d->n; i++) {
            char kp[PATH_MAX_LEN];
            pathf(kp, sizeof(kp), "retry.delays[%zu]", i);
            int64_t ms;
            TRY(check_duration(c, d->kids[i], kp, &ms));
            if (ms <= 0)
                return cfg_fail(c, d->kids[i]->line, "key '%s': must be longer than zero", kp);
            /* Each delay is its own retry topic; the same delay twice would
             * be one topic consumed as two. */
            for (size_t j = 0; j < cfg->retry.n_delays; j++)
                if (cfg->retry.delays_ms[j] == ms)
                    return cfg_fail(c, d->kids[i]->line, "key '%s': %s is listed twice", kp,
                                    d->kids[i]->s);
            cfg->retry.delays_ms[cfg->retry.n_delays++] = ms;
        }
    }
    TRY(opt_duration(c, m, "retry", "expiry", false, &cfg->retry.expiry_ms));
    return 0;
}

static int walk_dkim(cfg_ctx *c, const cfg_node *v)
{
    static const char *const keys[] = {"domain", "selector", "key", "algorithm"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = need_seq(c, v, "dkim", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->dkim = xcalloc(l->n + 1, sizeof(sl_dkim_key));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char dp[PATH_MAX_LEN];
        pathf(dp, sizeof(dp), "dkim[%zu]", i);
        if (e->type != CN_MAP)
            return cfg_fail(c, e->line, "key '%s': expected a mapping { domain, selector, key }",
                            dp);
        TRY(map_check(c, e, dp, keys, NELEM(keys)));
        sl_dkim_key *k = &cfg->dkim[cfg->n_dkim++];
        TRY(req_str(c, e, dp, "domain", &k->domain));
        sl_lower(k->domain);
        TRY(req_str(c, e, dp, "selector", &k->selector));
        TRY(req_str(c, e, dp, "key", &k->key_file));
        k->algorithm = xstrdup("rsa-sha256");
        TRY(opt_str(c, e, dp, "algorithm", &k->algorithm));
        if (strcmp(k->algorithm, "rsa-sha256") && strcmp(k->algorithm, "ed25519-sha256"))
            return cfg_fail(c, map_get(e, "algorithm")->line,
                            "key '%s.algorithm': '%s' is not one of rsa-sha256, ed25519-sha256", dp,
                            k->algorithm);
        if (access(k->key_file, R_OK) < 0)
            return cfg_fail(c, map_get(e, "key")->line, "key '%s.key': cannot read '%s': %s", dp,
                            k->key_file, strerror(errno));
        for (size_t j = 0; j + 1 < cfg->n_dkim; j++)
            if (!strcmp(cfg->dkim[j].domain, k->domain) &&
                !strcmp(cfg->dkim[j].selector, k->selector))
                return cfg_fail(c, map_get(e, "selector")->line,
                                "key '%s.selector': %s._domainkey.%s is defined twice", dp,
                                k->selector, k->domain);
    }
    return 0;
}

static int walk_submit(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"listen",
                                       "cert",
                                       "key",
                                       "users",
                                       "max_message_size",
                                       "max_recipients",
                                       "max_connections",
                                       "max_connections_per_ip",
                                       "idle_timeout",
                                       "command_timeout",
                                       "data_timeout",
                                       "auth_workers",
                                       "auth_queue"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "submit", keys, NELEM(keys)));
    int r = opt_str_list(c, m, "submit", "listen", &cfg->submit.listen, &cfg->submit.n_listen);
    TRY(r);
    bool need_tls = false;
    if (r) {
        const cfg_node *v = map_get(m, "listen");
        for (size_t i = 0; i < cfg->submit.n_listen; i++) {
            char *s = cfg->submit.listen[i];
            int line = v->type == CN_SEQ ? v->kids[i]->line : v->line;
            char *sp = strchr(s, ' ');
            char *addr = sp ? xstrndup(s, (size_t)(sp - s)) : xstrdup(s);
            const char *mode = sp ? sp + 1 : "plain";
            while (*mode == ' ')
                mode++;
            uint16_t port;
            int bad = sl_hostport_parse(addr, SL_HP_LISTEN, 0, NULL, &port);
            free(addr);
            if (bad < 0)
                return cfg_fail(c, line, "key 'submit.listen[%zu]': '%s' is not host:port [mode]",
                                i, s);
            if (!strcmp(mode, "tls"))
                need_tls = true;
            else if (strcmp(mode, "starttls") && strcmp(mode, "plain"))
                return cfg_fail(c, line,
                                "key 'submit.listen[%zu]': mode '%s' is not one of plain, "
                                "starttls, tls",
                                i, mode);
        }
    }
    TRY(opt_str(c, m, "submit", "cert", &cfg->submit.cert));
    TRY(opt_str(c, m, "submit", "key", &cfg->submit.key));
    TRY(opt_str(c, m, "submit", "users", &cfg->submit.users));
    if (need_tls && (!cfg->submit.cert || !cfg->submit.key))
        return cfg_fail(c, map_line(m, "listen"),
                        "key 'submit.listen': a tls listener needs submit.cert and submit.key");
    if (!cfg->submit.cert != !cfg->submit.key)
        return cfg_fail(c, map_line(m, cfg->submit.cert ? "cert" : "key"),
                        "key 'submit.%s': cert and key go together",
                        cfg->submit.cert ? "key" : "cert");
    TRY(opt_size(c, m, "submit", "max_message_size", &cfg->submit.max_message_size));
    OPT_INT(m, "submit", "max_recipients", 1, 1000000, cfg->submit.max_recipients);
    OPT_INT(m, "submit", "max_connections", 1, 1000000, cfg->submit.max_connections);
    OPT_INT(m, "submit", "max_connections_per_ip", 1, 1000000, cfg->submit.max_connections_per_ip);
    TRY(opt_duration(c, m, "submit", "idle_timeout", false, &cfg->submit.idle_timeout_ms));
    TRY(opt_duration(c, m, "submit", "command_timeout", false, &cfg->submit.command_timeout_ms));
    TRY(opt_duration(c, m, "submit", "data_timeout", false, &cfg->submit.data_timeout_ms));
    OPT_INT(m, "submit", "auth_workers", 1, 64, cfg->submit.auth_workers);
    OPT_INT(m, "submit", "auth_queue", 0, 100000, cfg->submit.auth_queue);
    return 0;
}

static int walk_api(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"listen",   "cert",            "key",        "keys",
                                       "allow_plain", "max_body", "max_connections", "ack_timeout"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "api", keys, NELEM(keys)));
    TRY(opt_str(c, m, "api", "listen", &cfg->api.listen));
    TRY(opt_str(c, m, "api", "cert", &cfg->api.cert));
    TRY(opt_str(c, m, "api", "key", &cfg->api.key));
    TRY(opt_str(c, m, "api", "keys", &cfg->api.keys));
    TRY(opt_bool(c, m, "api", "allow_plain", &cfg->api.allow_plain));
    if (!cfg->api.cert != !cfg->api.key)
        return cfg_fail(c, map_line(m, cfg->api.cert ? "cert" : "key"),
                        "key 'api.%s': cert and key go together", cfg->api.cert ? "key" : "cert");
    TRY(opt_size(c, m, "api", "max_body", &cfg->api.max_body));
    OPT_INT(m, "api", "max_connections", 1, 100000, cfg->api.max_connections);
    TRY(opt_duration(c, m, "api", "ack_timeout", false, &cfg->api.ack_timeout_ms));
    return 0;
}

static int walk_metrics(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"listen", "health_timeout"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "metrics", keys, NELEM(keys)));
    TRY(opt_duration(c, m, "metrics", "health_timeout", false, &cfg->metrics.health_timeout_ms));
    int r = opt_str(c, m, "metrics", "listen", &cfg->metrics.listen);
    TRY(r);
    uint16_t port;
    if (r && sl_hostport_parse(cfg->metrics.listen, SL_HP_LISTEN, 0, NULL, &port) < 0)
        return cfg_fail(c, map_get(m, "listen")->line,
                        "key 'metrics.listen': '%s' is not host:port", cfg->metrics.listen);
    return 0;
}

static int walk_sender(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"workers",
                                       "max_inflight",
                                       "drain_timeout",
                                       "instance_id",
                                       "destination_backoff_initial",
                                       "destination_backoff_max",
                                       "max_inflight_per_destination",
                                       "idle_state_timeout",
                                       "ledger",
                                       "ledger_lookback",
                                       "ledger_max_entries"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "sender", keys, NELEM(keys)));
    OPT_INT(m, "sender", "workers", 0, 1024, cfg->sender.workers);
    OPT_INT(m, "sender", "max_inflight", 1, 10000000, cfg->sender.max_inflight);
    TRY(opt_duration(c, m, "sender", "drain_timeout", true, &cfg->sender.drain_timeout_ms));
    TRY(opt_duration(c, m, "sender", "destination_backoff_initial", false,
                     &cfg->sender.destination_backoff_initial_ms));
    TRY(opt_duration(c, m, "sender", "destination_backoff_max", false,
                     &cfg->sender.destination_backoff_max_ms));
    if (cfg->sender.destination_backoff_max_ms < cfg->sender.destination_backoff_initial_ms)
        return cfg_fail(c, map_line(m, map_get(m, "destination_backoff_max")
                                            ? "destination_backoff_max"
                                            : "destination_backoff_initial"),
                        "key 'sender.destination_backoff_max': must not be shorter than "
                        "sender.destination_backoff_initial");
    OPT_INT(m, "sender", "max_inflight_per_destination", 1, 10000000,
            cfg->sender.max_inflight_per_destination);
    if (cfg->sender.max_inflight_per_destination > cfg->sender.max_inflight)
        return cfg_fail(c, map_line(m, "max_inflight_per_destination"),
                        "key 'sender.max_inflight_per_destination': must not exceed "
                        "sender.max_inflight (%u)",
                        (unsigned)cfg->sender.max_inflight);
    TRY(opt_duration(c, m, "sender", "idle_state_timeout", false,
                     &cfg->sender.idle_state_timeout_ms));
    TRY(opt_bool(c, m, "sender", "ledger", &cfg->sender.ledger));
    TRY(opt_duration(c, m, "sender", "ledger_lookback", false, &cfg->sender.ledger_lookback_ms));
    OPT_INT(m, "sender", "ledger_max_entries", 1000, 100000000, cfg->sender.ledger_max_entries);
    TRY(opt_str(c, m, "sender", "instance_id", &cfg->sender.instance_id));
    if (!cfg->sender.instance_id[0])
        return cfg_fail(c, map_line(m, "instance_id"),
                        "key 'sender.instance_id': must not be empty");
    return 0;
}

static int walk_scheduler(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"max_buffered", "max_job_bytes", "default_pool",
                                       "default_tenant", "idle_state_timeout"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "scheduler", keys, NELEM(keys)));
    OPT_INT(m, "scheduler", "max_buffered", 1, 100000000, cfg->scheduler.max_buffered);
    TRY(opt_size(c, m, "scheduler", "max_job_bytes", &cfg->scheduler.max_job_bytes));
    TRY(opt_str(c, m, "scheduler", "default_pool", &cfg->scheduler.default_pool));
    TRY(opt_str(c, m, "scheduler", "default_tenant", &cfg->scheduler.default_tenant));
    TRY(opt_duration(c, m, "scheduler", "idle_state_timeout", false,
                     &cfg->scheduler.idle_state_timeout_ms));
    return 0;
}

/* webhook.endpoints: where sluice-webhook posts events. Exactly one of
 * secret / secret_file, because an unsigned webhook cannot be trusted by its
 * receiver; the secret itself never appears in a message. */
static int walk_webhook(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"endpoints", "max_attempts"};
    static const char *const ekeys[] = {"url", "secret", "secret_file", "batch_size", "timeout"};
    sl_config *cfg = c->cfg;
    TRY(map_check(c, m, "webhook", keys, NELEM(keys)));
    OPT_INT(m, "webhook", "max_attempts", 1, 1000, cfg->webhook.max_attempts);
    bool failed;
    const cfg_node *l = need_seq(c, map_get(m, "endpoints"), "webhook.endpoints", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->webhook.endpoints = xcalloc(l->n + 1, sizeof(sl_webhook_endpoint));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char ep[PATH_MAX_LEN];
        pathf(ep, sizeof(ep), "webhook.endpoints[%zu]", i);
        if (e->type != CN_MAP)
            return cfg_fail(c, e->line, "key '%s': expected a mapping { url, secret }", ep);
        TRY(map_check(c, e, ep, ekeys, NELEM(ekeys)));
        sl_webhook_endpoint *w = &cfg->webhook.endpoints[cfg->webhook.n_endpoints++];
        w->batch_size = 100;
        w->timeout_ms = 10000;
        TRY(req_str(c, e, ep, "url", &w->url));
        if (strncasecmp(w->url, "http://", 7) && strncasecmp(w->url, "https://", 8))
            return cfg_fail(c, map_line(e, "url"),
                            "key '%s.url': '%s' is not an http:// or https:// URL", ep, w->url);
        const cfg_node *sv = map_get(e, "secret");
        if (sv && sv->type != CN_SCALAR)
            return cfg_fail(c, sv->line, "key '%s.secret': expected a string", ep);
        if (sv)
            w->secret = xstrdup(sv->s);
        TRY(opt_str(c, e, ep, "secret_file", &w->secret_file));
        if (!w->secret == !w->secret_file)
            return cfg_fail(c, e->line, "key '%s': exactly one of secret, secret_file is required",
                            ep);
        if (w->secret && !w->secret[0])
            return cfg_fail(c, map_line(e, "secret"), "key '%s.secret': must not be empty", ep);
        if (w->secret_file && access(w->secret_file, R_OK) < 0)
            return cfg_fail(c, map_line(e, "secret_file"),
                            "key '%s.secret_file': cannot read '%s': %s", ep, w->secret_file,
                            strerror(errno));
        OPT_INT(e, ep, "batch_size", 1, 100000, w->batch_size);
        TRY(opt_duration(c, e, ep, "timeout", false, &w->timeout_ms));
    }
    return 0;
}

static const char *const top_keys[] = {"kafka",   "dns",     "routes",       "pools",    "sites",
                                       "shaping", "backoff", "bounce_rules", "retry",    "dkim",
                                       "submit",  "metrics", "sender",       "scheduler", "webhook",
                                       "limits",  "api"};

static int walk_root(cfg_ctx *c, const cfg_node *root)
{
    if (!root)
        return 0;
    if (root->type != CN_MAP)
        return cfg_fail(c, root->line,
                        "the top level must be a mapping of sections (kafka:, "
                        "pools:, ...)");
    TRY(map_check(c, root, "", top_keys, NELEM(top_keys)));
    /* Fixed order: shaping and backoff refer to sites. */
    TRY(walk_kafka(c, map_get(root, "kafka")));
    TRY(walk_dns(c, map_get(root, "dns")));
    TRY(walk_routes(c, map_get(root, "routes")));
    TRY(walk_pools(c, map_get(root, "pools")));
    TRY(walk_sites(c, map_get(root, "sites")));
    TRY(walk_shaping(c, map_get(root, "shaping")));
    TRY(walk_backoff(c, map_get(root, "backoff")));
    TRY(walk_bounce_rules(c, map_get(root, "bounce_rules")));
    TRY(walk_limits(c, map_get(root, "limits")));
    TRY(walk_retry(c, map_get(root, "retry")));
    TRY(walk_dkim(c, map_get(root, "dkim")));
    TRY(walk_submit(c, map_get(root, "submit")));
    TRY(walk_api(c, map_get(root, "api")));
    TRY(walk_metrics(c, map_get(root, "metrics")));
    TRY(walk_sender(c, map_get(root, "sender")));
    TRY(walk_scheduler(c, map_get(root, "scheduler")));
    TRY(walk_webhook(c, map_get(root, "webhook")));
    return 0;
}

/* ------------------------------------------------------------------ */
/* Environment                                                         */

static const char *env_get(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int env_apply_vars(cfg_ctx *c, bool strict)
{
    sl_config *cfg = c->cfg;
    const char *v;
    if ((v = env_get("SLUICE_KAFKA_BOOTSTRAP"))) {
        free(cfg->kafka.bootstrap);
        cfg->kafka.bootstrap = xstrdup(v);
    }
    if ((v = env_get("SLUICE_KAFKA_TOPIC_PREFIX"))) {
        free(cfg->kafka.topic_prefix);
        cfg->kafka.topic_prefix = xstrdup(v);
    }
    if ((v = env_get("SLUICE_KAFKA_SASL_USERNAME"))) {
        free(cfg->kafka.sasl_username);
        cfg->kafka.sasl_username = xstrdup(v);
    }
    if ((v = env_get("SLUICE_KAFKA_SASL_PASSWORD"))) {
        free(cfg->kafka.sasl_password);
        cfg->kafka.sasl_password = xstrdup(v);
    }
    if ((v = env_get("SLUICE_METRICS_LISTEN"))) {
        uint16_t port;
        if (sl_hostport_parse(v, SL_HP_LISTEN, 0, NULL, &port) == 0) {
            free(cfg->metrics.listen);
            cfg->metrics.listen = xstrdup(v);
        } else if (strict) {
            return cfg_fail(c, -1,
                            "key 'metrics.listen': SLUICE_METRICS_LISTEN='%s' is not host:port", v);
        }
    }
    if ((v = env_get("SLUICE_DNS_SERVERS"))) {
        char **list = NULL;
        size_t n = 0;
        bool ok = true;
        char *copy = xstrdup(v), *save = NULL;
        for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
            if (!dns_server_ok(tok)) {
                ok = false;
                if (strict)
                    cfg_fail(c, -1,
                             "key 'dns.servers': SLUICE_DNS_SERVERS item '%s' is not an IP "
                             "address or ip:port",
                             tok);
                break;
            }
            list = xrealloc(list, (n + 1) * sizeof(char *));
            list[n++] = xstrdup(tok);
        }
        free(copy);
        if (ok) {
            for (size_t i = 0; i < cfg->dns.n_servers; i++)
                free(cfg->dns.servers[i]);
            free(cfg->dns.servers);
            cfg->dns.servers = list;
            cfg->dns.n_servers = n;
        } else {
            for (size_t i = 0; i < n; i++)
                free(list[i]);
            free(list);
            if (strict)
                return -1;
        }
    }
    if ((v = env_get("SLUICE_SENDER_WORKERS"))) {
        int64_t x;
        if (parse_int(v, &x) == 0 && x >= 0 && x <= 1024)
            cfg->sender.workers = (int)x;
        else if (strict)
            return cfg_fail(c, -1,
                            "key 'sender.workers': SLUICE_SENDER_WORKERS='%s' is not an integer in "
                            "[0, 1024]",
                            v);
    }
    if ((v = env_get("SLUICE_INSTANCE_ID"))) {
        free(cfg->sender.instance_id);
        cfg->sender.instance_id = xstrdup(v);
    }
    return 0;
}

/* Apply SLUICE_* overrides. strict: report a bad value (a loaded config);
 * otherwise skip it (the built-in default cannot fail). Messages name
 * "environment" instead of the file. */
static int env_apply(cfg_ctx *c, bool strict)
{
    const char *file = c->file;
    c->file = "environment";
    int rc = env_apply_vars(c, strict);
    c->file = file;
    return rc;
}

/* Checks across sections, after the environment. */
static int check_final(cfg_ctx *c, const cfg_node *root)
{
    sl_config *cfg = c->cfg;
    if (cfg->n_pools > 0 && !sl_config_pool(cfg, cfg->scheduler.default_pool)) {
        const cfg_node *sch = map_get(root, "scheduler");
        int line = sch && map_get(sch, "default_pool") ? map_line(sch, "default_pool")
                                                       : map_line(root, "pools");
        return cfg_fail(c, line, "key 'scheduler.default_pool': pool '%s' is not defined in pools",
                        cfg->scheduler.default_pool);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */

int sl_config_parse(const char *name, const char *yaml, size_t len, sl_config **out, char **err)
{
    cfg_ctx c = {.file = name ? name : "(string)"};
    cfg_node *root = NULL;
    *out = NULL;
    if (err)
        *err = NULL;
    c.cfg = config_base(c.file);
    if (yaml_load(&c, yaml, len, &root) == 0 && walk_root(&c, root) == 0 &&
        env_apply(&c, true) == 0 && check_final(&c, root) == 0) {
        append_default_bounce_rules(c.cfg);
    }
    cfg_node_free(root);
    for (size_t i = 0; i < c.n_anchors; i++)
        free(c.anchors[i].name);
    free(c.anchors);
    if (c.err) {
        sl_config_free(c.cfg);
        if (err)
            *err = c.err;
        else
            free(c.err);
        return SL_ECONFIG;
    }
    *out = c.cfg;
    return 0;
}

int sl_config_load(const char *path, sl_config **out, char **err)
{
    *out = NULL;
    if (err)
        *err = NULL;
    if (!path) {
        sl_config *cfg = sl_config_default();
        cfg_ctx c = {.file = "environment", .cfg = cfg};
        if (env_apply(&c, true) < 0) {
            sl_config_free(cfg);
            if (err)
                *err = c.err;
            else
                free(c.err);
            return SL_ECONFIG;
        }
        *out = cfg;
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err)
            *err = xasprintf("%s: cannot open: %s", path, strerror(errno));
        return SL_ECONFIG;
    }
    sl_buf b = SL_BUF_INIT;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        sl_buf_append(&b, chunk, n);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        sl_buf_free(&b);
        if (err)
            *err = xasprintf("%s: cannot read", path);
        return SL_ECONFIG;
    }
    int rc = sl_config_parse(path, b.data ? b.data : "", b.len, out, err);
    sl_buf_free(&b);
    return rc;
}

sl_config *sl_config_load_or_exit(const char *path)
{
    sl_config *cfg;
    char *err = NULL;
    if (sl_config_load(path, &cfg, &err) < 0) {
        fprintf(stderr, "sluice: config error: %s\n", err ? err : "invalid configuration");
        free(err);
        exit(2);
    }
    return cfg;
}

sl_config *sl_config_default(void)
{
    sl_config *cfg = config_base("(built-in)");
    cfg_ctx c = {.file = "environment", .cfg = cfg};
    /* A development broker has one node. */
    cfg->kafka.replication_factor = 1;

    cfg->pools = xcalloc(1, sizeof(sl_pool));
    cfg->pools[0].name = xstrdup("default");
    cfg->pools[0].sources = xcalloc(1, sizeof(sl_source));
    cfg->pools[0].sources[0].ip = xstrdup("127.0.0.1");
    cfg->pools[0].sources[0].ehlo = xstrdup("localhost");
    cfg->pools[0].sources[0].weight = 1;
    cfg->pools[0].n_sources = 1;
    cfg->n_pools = 1;

    cfg->routes = xcalloc(1, sizeof(sl_route));
    cfg->routes[0].pattern = xstrdup("*");
    cfg->routes[0].host = xstrdup("127.0.0.1");
    cfg->routes[0].port = 2525;
    cfg->n_routes = 1;

    cfg->shaping[0].max_message_rate = 1000;
    cfg->shaping[0].burst = 1000;

    static const int64_t dev_delays[] = {1000, 5000, 30000};
    free(cfg->retry.delays_ms);
    cfg->retry.delays_ms = xmalloc(sizeof(dev_delays));
    memcpy(cfg->retry.delays_ms, dev_delays, sizeof(dev_delays));
    cfg->retry.n_delays = NELEM(dev_delays);
    cfg->retry.expiry_ms = 3600000;

    append_default_bounce_rules(cfg);
    env_apply(&c, false);
    return cfg;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void sl_config_free(sl_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->kafka.bootstrap);
    free(cfg->kafka.topic_prefix);
    free(cfg->kafka.security_protocol);
    free(cfg->kafka.sasl_mechanism);
    free(cfg->kafka.sasl_username);
    if (cfg->kafka.sasl_password) {
        /* Do not leave the secret in freed heap memory. */
        volatile char *p = cfg->kafka.sasl_password;
        while (*p)
            *p++ = 0;
        free(cfg->kafka.sasl_password);
    }
    free(cfg->kafka.ssl_ca_location);
    free(cfg->kafka.client_id);
    free_strv(cfg->dns.servers, cfg->dns.n_servers);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        free(cfg->routes[i].pattern);
        free(cfg->routes[i].host);
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->n_pools; i++) {
        sl_pool *p = &cfg->pools[i];
        for (size_t j = 0; j < p->n_sources; j++) {
            free(p->sources[j].ip);
            free(p->sources[j].ehlo);
            free(p->sources[j].socks5);
            free(p->sources[j].warmup.per_day);
        }
        free(p->sources);
        free(p->name);
    }
    free(cfg->pools);
    for (size_t i = 0; i < cfg->n_sites; i++) {
        free(cfg->sites[i].name);
        free_strv(cfg->sites[i].mx, cfg->sites[i].n_mx);
        free_strv(cfg->sites[i].domains, cfg->sites[i].n_domains);
    }
    free(cfg->sites);
    for (size_t i = 0; i < cfg->n_shaping; i++)
        free(cfg->shaping[i].site);
    free(cfg->shaping);
    for (size_t i = 0; i < cfg->n_backoff; i++) {
        free(cfg->backoff[i].match);
        free(cfg->backoff[i].site);
    }
    free(cfg->backoff);
    for (size_t i = 0; i < cfg->n_limits; i++) {
        free(cfg->limits[i].tenant);
        free(cfg->limits[i].campaign);
    }
    free(cfg->limits);
    for (size_t i = 0; i < cfg->n_bounce_rules; i++) {
        free(cfg->bounce_rules[i].match);
        free(cfg->bounce_rules[i].class_name);
    }
    free(cfg->bounce_rules);
    free(cfg->retry.delays_ms);
    for (size_t i = 0; i < cfg->n_dkim; i++) {
        free(cfg->dkim[i].domain);
        free(cfg->dkim[i].selector);
        free(cfg->dkim[i].key_file);
        free(cfg->dkim[i].algorithm);
    }
    free(cfg->dkim);
    free_strv(cfg->submit.listen, cfg->submit.n_listen);
    free(cfg->submit.cert);
    free(cfg->submit.key);
    free(cfg->submit.users);
    free(cfg->api.listen);
    free(cfg->api.cert);
    free(cfg->api.key);
    free(cfg->api.keys);
    free(cfg->metrics.listen);
    free(cfg->sender.instance_id);
    free(cfg->scheduler.default_pool);
    free(cfg->scheduler.default_tenant);
    for (size_t i = 0; i < cfg->webhook.n_endpoints; i++) {
        free(cfg->webhook.endpoints[i].url);
        free(cfg->webhook.endpoints[i].secret);
        free(cfg->webhook.endpoints[i].secret_file);
    }
    free(cfg->webhook.endpoints);
    free(cfg);
}

char *sl_config_topic(const sl_config *cfg, const char *suffix)
{
    return xasprintf("%s%s", cfg->kafka.topic_prefix, suffix);
}

char *sl_config_retry_suffix(int64_t delay_ms)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    if (delay_ms > 0)
        for (size_t i = 0; i < NELEM(units); i++)
            if (delay_ms % units[i].ms == 0)
                return xasprintf("retry.%lld%s", (long long)(delay_ms / units[i].ms),
                                 units[i].unit);
    return xasprintf("retry.%lldms", (long long)delay_ms);
}

const sl_pool *sl_config_pool(const sl_config *cfg, const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < cfg->n_pools; i++)
        if (!strcmp(cfg->pools[i].name, name))
            return &cfg->pools[i];
    return NULL;
}

const sl_shaping *sl_config_shaping(const sl_config *cfg, const char *site)
{
    if (site)
        for (size_t i = 1; i < cfg->n_shaping; i++)
            if (!strcmp(cfg->shaping[i].site, site))
                return &cfg->shaping[i];
    return cfg->n_shaping ? &cfg->shaping[0] : NULL;
}

const sl_route *sl_config_route(const sl_config *cfg, const char *domain)
{
    if (!domain)
        return NULL;
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (sl_glob_match(cfg->routes[i].pattern, domain))
            return &cfg->routes[i];
    return NULL;
}

const sl_source *sl_config_source(const sl_config *cfg, const char *ip)
{
    if (!ip)
        return NULL;
    char *canon = ip_canon(ip);
    const char *want = canon ? canon : ip;
    const sl_source *found = NULL;
    for (size_t i = 0; i < cfg->n_pools && !found; i++)
        for (size_t j = 0; j < cfg->pools[i].n_sources && !found; j++)
            if (!strcmp(cfg->pools[i].sources[j].ip, want))
                found = &cfg->pools[i].sources[j];
    free(canon);
    return found;
}
