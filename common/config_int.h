/*
 * config_int - what the modules of the configuration loader share; only
 * common/config*.c include it.
 *
 *   config.c           the public API (config.h): load, parse, default,
 *                      free, lookups; the defaults every file starts from
 *                      and the SLUICE_* environment overrides
 *   config_yaml.c      libyaml events to a tree of cfg_node that remembers
 *                      the line of every node (cfg__yaml_load)
 *   config_value.c     reading one value: the key checks (unknown keys,
 *                      did-you-mean, duplicates) and the typed getters
 *                      (cfg__opt_str, cfg__opt_int, cfg__opt_duration...)
 *   config_keys.c      the key table (cfg_key) and all that is done with
 *                      it: the walk (cfg__walk_root), defaults, freeing,
 *                      SLUICE_* overrides, the listing
 *   config_sections.c  the walks of the keys with structured values
 *
 * Every getter reports through cfg__fail(), which keeps the first error
 * only ("FILE:LINE: key 'a.b': ..."), and returns -1 on error, 0 when the
 * key is absent (the output keeps its value), 1 when it set the output.
 * Strings a getter stores are malloc'd and belong to the sl_config.
 *
 * Threads: loading runs on the caller's thread; nothing here is shared.
 */
#ifndef SLUICE_CONFIG_INT_H
#define SLUICE_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "util.h"

typedef enum { CN_SCALAR, CN_SEQ, CN_MAP } cfg_node_type;

typedef struct cfg_node {
    cfg_node_type type;
    int line;               /* 1-based */
    char *s;                /* scalar text */
    bool plain;             /* unquoted scalar (null detection) */
    struct cfg_node **kids; /* seq: items; map: key, value, key, value... */
    size_t n, cap;
} cfg_node;

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

#define PATH_MAX_LEN 256
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((x) < 0)                                                                               \
            return -1;                                                                             \
    } while (0)

/* Set an integer field from an optional key. */
#define OPT_INT(m, path, key, min, max, lval)                                                      \
    do {                                                                                           \
        int64_t v_;                                                                                \
        int r_ = cfg__opt_int(c, m, path, key, min, max, &v_);                                     \
        if (r_ < 0)                                                                                \
            return -1;                                                                             \
        if (r_)                                                                                    \
            (lval) = v_;                                                                           \
    } while (0)

/* config_yaml.c */
/* Record the first error, "FILE:LINE: " + the message; returns -1. */
int cfg__fail(cfg_ctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Parse a whole document; *root is NULL for an empty one. */
int cfg__yaml_load(cfg_ctx *c, const char *text, size_t len, cfg_node **root);
void cfg__node_free(cfg_node *n);

/* config_value.c */
bool cfg__is_null(const cfg_node *n);
/* The closest of names within a third of word's length, or NULL. */
const char *cfg__did_you_mean(const char *word, const char *const *names, size_t n);
/* Key paths are for messages: a pathological one is truncated. */
void cfg__pathf(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void cfg__key_path(char *dst, size_t cap, const char *parent, const char *key);
/* A mapping must hold only keys from allowed (NULL: any name), each once. */
int cfg__map_check(cfg_ctx *c, const cfg_node *m, const char *path, const char *const *allowed,
                   size_t n_allowed);
/* The value of key in mapping m; NULL when absent or null. */
const cfg_node *cfg__map_get(const cfg_node *m, const char *key);
/* The line of key in m (or of m), for a complaint about its value. */
int cfg__map_line(const cfg_node *m, const char *key);
int cfg__need_scalar(cfg_ctx *c, const cfg_node *v, const char *path, const char *what);
/* A list node or NULL (absent); *failed when v is not a list. */
const cfg_node *cfg__need_seq(cfg_ctx *c, const cfg_node *v, const char *kp, bool *failed);
int cfg__parse_int(const char *s, int64_t *out);
int cfg__parse_size(const char *s, uint64_t *out);
/* Canonical text of an IPv4/IPv6 address (malloc'd), or NULL. */
char *cfg__ip_canon(const char *s);
/* A DNS server: "ip", "ip:port" or "[v6]:port". */
bool cfg__dns_server_ok(const char *s);
int cfg__regex_check(cfg_ctx *c, const cfg_node *v, const char *kp);
int cfg__check_duration(cfg_ctx *c, const cfg_node *v, const char *kp, int64_t *out);
int cfg__opt_str(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, char **out);
int cfg__req_str(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, char **out);
int cfg__opt_int(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, int64_t min,
                 int64_t max, int64_t *out);
int cfg__opt_bool(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, bool *out);
/* true/yes/on or false/no/off, any case: 0, or -1 for anything else. */
int cfg__parse_bool(const char *s, bool *out);
/* Durations must be positive unless allow_zero. */
int cfg__opt_duration(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                      bool allow_zero, int64_t *out);
int cfg__opt_rate(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                  bool allow_unlimited, double *out);
int cfg__opt_burst(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, double *out);
int cfg__opt_size(cfg_ctx *c, const cfg_node *m, const char *path, const char *key, uint64_t *out);
/* A list of strings; a single scalar counts as a one-item list. */
int cfg__opt_str_list(cfg_ctx *c, const cfg_node *m, const char *path, const char *key,
                      char ***out, size_t *n_out);

/* config_keys.c: the key table. */
typedef enum {
    CFG_STR,      /* char *; a scalar */
    CFG_STRLIST,  /* char ** with its count at off_n; a list or one scalar */
    CFG_INT,      /* int, in [min, max] */
    CFG_U32,      /* uint32_t, in [min, max] */
    CFG_BOOL,     /* bool: true/false, yes/no, on/off */
    CFG_DURATION, /* int64_t milliseconds; min 0 allows zero, else above zero */
    CFG_SIZE,     /* uint64_t octets: "25M", "512k", bytes */
    CFG_CUSTOM    /* a structured value: walk, init, free below */
} cfg_type;

enum {
    CFG_LOWER = 1 << 0,    /* CFG_STR: lowercased before the check */
    CFG_SECRET = 1 << 1,   /* CFG_STR: wiped before it is freed; never in a message */
    CFG_HOSTNAME = 1 << 2, /* CFG_STR: the default is the host name */
};

typedef struct cfg_key {
    const char *name; /* "kafka.bootstrap"; a top-level key ("pools") has no dot */
    cfg_type type;
    size_t off;       /* offsetof(sl_config, field) */
    size_t off_n;     /* CFG_STRLIST: offsetof the count */
    int64_t min, max; /* CFG_INT, CFG_U32; CFG_DURATION: min 0 allows zero */
    const char *def;  /* the default as a file writes it; NULL: none (zero) */
    unsigned flags;   /* CFG_LOWER (CFG_STR, CFG_STRLIST), CFG_SECRET, CFG_HOSTNAME */
    const char *env;  /* the SLUICE_* variable that overrides it, or NULL */
    /* An extra check of a string (of each item of a list): 0, or -1 after
     * writing what is wrong to *why, quoting the value as shown. */
    int (*check)(const char *s, const char *shown, sl_buf *why);
    /* CFG_CUSTOM: walk the value node (NULL when absent) into c->cfg;
     * init sets the default (may be NULL); free releases it. */
    int (*walk)(cfg_ctx *c, const cfg_node *v);
    void (*init)(sl_config *cfg);
    void (*free)(sl_config *cfg);
    const char *doc; /* one line, for `sluice config keys` */
} cfg_key;

/* The table, for its unit test. */
const cfg_key *cfg__keys(size_t *n);
/* Walk the whole document into c->cfg (pre-filled with the defaults). */
int cfg__walk_root(cfg_ctx *c, const cfg_node *root);
/* Every key's default; an sl_config's first step. */
void cfg__keys_init(sl_config *cfg);
/* Release every key's value (not cfg itself nor cfg->path). */
void cfg__keys_free(sl_config *cfg);
/* The SLUICE_* overrides. strict: report a bad value (messages name
 * "environment" instead of the file); otherwise skip it. */
int cfg__env_apply(cfg_ctx *c, bool strict);

/* config_sections.c: the structured keys' walk, init and free. */
int cfg__walk_routes(cfg_ctx *c, const cfg_node *v);
int cfg__walk_pools(cfg_ctx *c, const cfg_node *v);
int cfg__walk_sites(cfg_ctx *c, const cfg_node *v);
int cfg__walk_shaping(cfg_ctx *c, const cfg_node *v);
int cfg__walk_backoff(cfg_ctx *c, const cfg_node *v);
int cfg__walk_bounce_rules(cfg_ctx *c, const cfg_node *v);
int cfg__walk_limits(cfg_ctx *c, const cfg_node *v);
int cfg__walk_retry_delays(cfg_ctx *c, const cfg_node *v);
int cfg__walk_dkim(cfg_ctx *c, const cfg_node *v);
int cfg__walk_webhook_endpoints(cfg_ctx *c, const cfg_node *v);
int cfg__walk_verp_tenants(cfg_ctx *c, const cfg_node *v);
void cfg__free_verp_tenants(sl_config *cfg);
void cfg__init_shaping(sl_config *cfg);
void cfg__init_retry_delays(sl_config *cfg);
void cfg__free_routes(sl_config *cfg);
void cfg__free_pools(sl_config *cfg);
void cfg__free_sites(sl_config *cfg);
void cfg__free_shaping(sl_config *cfg);
void cfg__free_backoff(sl_config *cfg);
void cfg__free_bounce_rules(sl_config *cfg);
void cfg__free_limits(sl_config *cfg);
void cfg__free_retry_delays(sl_config *cfg);
void cfg__free_dkim(sl_config *cfg);
void cfg__free_webhook_endpoints(sl_config *cfg);

#endif
