/*
 * config - see config.h.
 *
 * Loading happens in three steps:
 *
 *   1. config_yaml.c turns the text into a tree of nodes with lines.
 *   2. config_keys.c walks the tree with the key table into an sl_config
 *      pre-filled with the table's defaults (config_base() here); the keys
 *      with structured values have their walks in config_sections.c.
 *   3. SLUICE_* environment overrides (the table's too), then the checks
 *      that span sections.
 *
 * Only the first error is reported. The error path frees whatever was
 * built: every array in the partial sl_config is kept consistent with its
 * count at all times so sl_config_free() can release it.
 *
 * Secrets (kafka.sasl_password) are never put into a message.
 */
#include "config.h"
#include "config_int.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Defaults                                                            */

/* Every default a config file starts from: the key table's. */
static sl_config *config_base(const char *path)
{
    sl_config *cfg = xcalloc(1, sizeof(*cfg));
    cfg->path = xstrdup(path);
    cfg__keys_init(cfg);
    return cfg;
}

/* Checks across sections, after the environment. */
static int check_final(cfg_ctx *c, const cfg_node *root)
{
    sl_config *cfg = c->cfg;
    if (cfg->n_pools > 0 && !sl_config_pool(cfg, cfg->scheduler.default_pool)) {
        const cfg_node *sch = cfg__map_get(root, "scheduler");
        int line = sch && cfg__map_get(sch, "default_pool") ? cfg__map_line(sch, "default_pool")
                                                       : cfg__map_line(root, "pools");
        return cfg__fail(c, line, "key 'scheduler.default_pool': pool '%s' is not defined in pools",
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
    if (cfg__yaml_load(&c, yaml, len, &root) == 0 && cfg__walk_root(&c, root) == 0 &&
        cfg__env_apply(&c, true) == 0)
        check_final(&c, root);
    cfg__node_free(root);
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
        if (cfg__env_apply(&c, true) < 0) {
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

/* glibc's name of the running program ("sluice-sender"), so that a daemon
 * names itself in its config error. */
extern char *program_invocation_short_name;

sl_config *sl_config_load_or_exit(const char *path)
{
    sl_config *cfg;
    char *err = NULL;
    if (sl_config_load(path, &cfg, &err) < 0) {
        fprintf(stderr, "%s: config error: %s\n", program_invocation_short_name,
                err ? err : "invalid configuration");
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

    cfg__env_apply(&c, false);
    return cfg;
}

void sl_config_free(sl_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    cfg__keys_free(cfg);
    free(cfg);
}

char *sl_config_topic(const sl_config *cfg, const char *suffix)
{
    return xasprintf("%s%s", cfg->kafka.topic_prefix, suffix);
}

char *sl_config_group(const sl_config *cfg, const char *name)
{
    return xasprintf("%s%s", cfg->kafka.group_prefix ? cfg->kafka.group_prefix : "", name);
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

const char *sl_config_verp_domain(const sl_config *cfg, const char *tenant)
{
    if (tenant)
        for (size_t i = 0; i < cfg->verp.n_tenants; i++)
            if (!strcmp(cfg->verp.tenants[i].tenant, tenant))
                return cfg->verp.tenants[i].domain;
    return cfg->verp.domain;
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
    char *canon = cfg__ip_canon(ip);
    const char *want = canon ? canon : ip;
    const sl_source *found = NULL;
    for (size_t i = 0; i < cfg->n_pools && !found; i++)
        for (size_t j = 0; j < cfg->pools[i].n_sources && !found; j++)
            if (!strcmp(cfg->pools[i].sources[j].ip, want))
                found = &cfg->pools[i].sources[j];
    free(canon);
    return found;
}
