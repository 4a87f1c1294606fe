/*
 * config - see config.h.
 *
 * Loading happens in three steps:
 *
 *   1. config_yaml.c turns the text into a tree of nodes with lines.
 *   2. config_sections.c walks the tree into an sl_config pre-filled
 *      with the defaults (config_base() here).
 *   3. SLUICE_* environment overrides, then the checks that span sections.
 *
 * Only the first error is reported. The error path frees whatever was
 * built: every array in the partial sl_config is kept consistent with its
 * count at all times so sl_config_free() can release it.
 *
 * Secrets (kafka.sasl_password) are never put into a message.
 */
#include "config.h"
#include "config_int.h"
#include "hostport.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
            return cfg__fail(c, -1,
                            "key 'metrics.listen': SLUICE_METRICS_LISTEN='%s' is not host:port", v);
        }
    }
    if ((v = env_get("SLUICE_DNS_SERVERS"))) {
        char **list = NULL;
        size_t n = 0;
        bool ok = true;
        char *copy = xstrdup(v), *save = NULL;
        for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
            if (!cfg__dns_server_ok(tok)) {
                ok = false;
                if (strict)
                    cfg__fail(c, -1,
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
        if (cfg__parse_int(v, &x) == 0 && x >= 0 && x <= 1024)
            cfg->sender.workers = (int)x;
        else if (strict)
            return cfg__fail(c, -1,
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
        env_apply(&c, true) == 0 && check_final(&c, root) == 0) {
        append_default_bounce_rules(c.cfg);
    }
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
