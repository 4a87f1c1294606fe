/*
 * config - the one YAML configuration of every sluice process.
 *
 * sl_config_load() reads the file named by -c (libyaml), applies SLUICE_*
 * environment overrides, validates every key and value, and returns a
 * fully-defaulted sl_config. Invalid input is reported as
 * "FILE:LINE: key 'x.y': what is wrong" through *err and the function
 * returns SL_ECONFIG; daemons then exit 2 (sl_config_load_or_exit()).
 * Unknown keys are errors (a typo must never silently become a default).
 *
 * Environment overrides (for Kubernetes): SLUICE_KAFKA_BOOTSTRAP,
 * SLUICE_KAFKA_TOPIC_PREFIX, SLUICE_KAFKA_SASL_USERNAME,
 * SLUICE_KAFKA_SASL_PASSWORD, SLUICE_METRICS_LISTEN, SLUICE_DNS_SERVERS
 * (comma separated), SLUICE_SENDER_WORKERS, SLUICE_INSTANCE_ID; the key
 * table (config_keys.c) names them.
 *
 * Ownership: the sl_config and every string and array in it belong to the
 * config; sl_config_free() releases all of it. Immutable after load, so any
 * thread may read it.
 *
 * sl_config_default() returns the built-in config `sluice dev` uses when no
 * file is given: local dev broker, one pool of 127.0.0.1, a route of every
 * domain to the capture server.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef struct sl_warmup {
    int64_t start_day;      /* days since the epoch (UTC) of the first day */
    uint32_t *per_day;      /* cap for day 0, 1, ...; after the last: none */
    size_t n_per_day;
} sl_warmup;

typedef struct sl_source {
    char *ip;               /* source address to bind */
    char *ehlo;             /* EHLO name for that address */
    uint32_t weight;        /* relative share in its pool, default 1 */
    char *socks5;           /* "host:port" egress proxy, NULL: bind ip */
    bool has_warmup;
    sl_warmup warmup;
} sl_source;

typedef struct sl_pool {
    char *name;
    sl_source *sources;
    size_t n_sources;
} sl_pool;

typedef struct sl_site {
    char *name;
    char **mx;              /* MX host patterns, "*.google.com" */
    size_t n_mx;
    char **domains;         /* recipient domain patterns, "gmail.com", "*.test" */
    size_t n_domains;
} sl_site;

/* The values are proto's TlsPolicy (common.proto). verify: TLS required,
 * with a certificate that chains to the trust store and names the MX host. */
typedef enum {
    SL_TLS_OPPORTUNISTIC = 0,
    SL_TLS_REQUIRED = 1,
    SL_TLS_DISABLED = 2,
    SL_TLS_VERIFY = 3
} sl_tls_policy;

typedef struct sl_timeouts {  /* milliseconds; RFC 5321 4.5.3.2 defaults */
    int64_t connect, greeting, ehlo, mail, rcpt, data, data_block, dot, quit, idle;
} sl_timeouts;

typedef struct sl_shaping {
    char *site;             /* "default" applies to sites with no entry */
    double max_message_rate;/* per second per source IP; 0: unlimited */
    double burst;           /* token bucket depth, default max(1, rate) */
    uint32_t max_connections;
    uint32_t max_messages_per_connection;
    sl_tls_policy tls;
    sl_timeouts timeouts;
} sl_shaping;

typedef enum { SL_BACKOFF_HALVE = 0, SL_BACKOFF_SUSPEND, SL_BACKOFF_DISABLE_IP } sl_backoff_action;

typedef struct sl_backoff_rule {
    char *match;            /* POSIX extended regex over "CODE ENH TEXT" */
    char *site;             /* NULL: every site */
    sl_backoff_action action;
    double floor;           /* halve: lowest rate, per second */
    int64_t recover_after_ms;
    int64_t duration_ms;    /* suspend / disable_ip */
    int line;               /* where it was configured, for messages */
} sl_backoff_rule;

/* A message rate cap over jobs rather than over a (site, IP) pair. A job
 * is under every limit whose tenant and campaign globs both match; the cap
 * holds separately for each distinct value of the keys the limit names
 * (tenant: "*" caps every tenant on its own), and the keys it omits are
 * summed (no campaign: all the tenant's campaigns together). */
typedef struct sl_limit {
    char *tenant;           /* glob; NULL: any tenant, summed */
    char *campaign;         /* glob; NULL: any campaign, summed */
    double max_message_rate;/* per second, > 0 */
    double burst;           /* bucket depth, default max(1, rate) */
    int line;
} sl_limit;

typedef struct sl_route {
    char *pattern;          /* domain glob, first match wins */
    char *host;
    uint16_t port;
} sl_route;

typedef struct sl_dkim_key {
    char *domain;
    char *selector;
    char *key_file;
    char *algorithm;        /* "rsa-sha256" or "ed25519-sha256" */
} sl_dkim_key;

typedef struct sl_bounce_rule {
    char *match;            /* regex over "CODE ENH TEXT" */
    char *class_name;       /* invalid-recipient, bad-domain, ... */
    bool hard;
} sl_bounce_rule;

typedef struct sl_webhook_endpoint {
    char *url;              /* http:// or https:// */
    char *secret;           /* HMAC-SHA256 key; secret: never logged */
    char *secret_file;      /* or: read the key from this file (Kubernetes Secret) */
    uint32_t batch_size;    /* events per POST, default 100 */
    int64_t timeout_ms;     /* per request, default 10 s */
} sl_webhook_endpoint;

typedef struct sl_config {
    char *path;             /* the file loaded, "(built-in)" for the default */

    struct {
        char *bootstrap;
        char *topic_prefix;
        char *group_prefix;         /* prepended to every consumer group id */
        char *security_protocol;    /* plaintext, ssl, sasl_ssl, sasl_plaintext */
        char *sasl_mechanism;
        char *sasl_username;
        char *sasl_password;        /* secret: never logged */
        char *ssl_ca_location;
        int session_timeout_ms;
        int heartbeat_interval_ms;
        int commit_interval_ms;
        int linger_ms;              /* producer batching; -1: the component's default */
        int partitions;             /* for topics ensure and the dev broker */
        int replication_factor;
        char *client_id;
        bool static_membership;     /* group.instance.id from sender.instance_id */
    } kafka;

    struct {
        char **servers;             /* "127.0.0.1:5353"; empty: system resolver */
        size_t n_servers;
        int64_t timeout_ms;
        int tries;
    } dns;

    sl_route *routes;
    size_t n_routes;
    sl_pool *pools;
    size_t n_pools;
    sl_site *sites;
    size_t n_sites;
    sl_shaping *shaping;            /* [0] is always "default" */
    size_t n_shaping;
    sl_backoff_rule *backoff;
    size_t n_backoff;
    sl_limit *limits;               /* per tenant / campaign caps, in file order */
    size_t n_limits;
    sl_bounce_rule *bounce_rules;   /* the operator's only; common/trouble.c has the rest */
    size_t n_bounce_rules;

    struct {
        int64_t *delays_ms;
        size_t n_delays;
        int64_t expiry_ms;
    } retry;

    sl_dkim_key *dkim;
    size_t n_dkim;

    struct {
        char **listen;              /* "0.0.0.0:587 starttls", "0.0.0.0:465 tls" */
        size_t n_listen;
        char *cert, *key, *users;
        uint64_t max_message_size;
        uint32_t max_recipients;
        uint32_t max_connections;   /* sessions in all */
        uint32_t max_connections_per_ip;
        int64_t idle_timeout_ms;
        int64_t command_timeout_ms; /* a command line must arrive whole */
        int64_t data_timeout_ms;    /* the message must arrive whole */
        uint32_t auth_workers;      /* password checks running at once */
        uint32_t auth_queue;        /* password checks waiting; then 454 */
    } submit;

    struct {                        /* sluice-api (api/, docs/api.md) */
        char *listen;               /* "0.0.0.0:8443" */
        char *cert, *key;           /* HTTPS; both or neither */
        char *keys;                 /* the API keys file */
        bool allow_plain;           /* serve plain HTTP without cert/key */
        uint64_t max_body;          /* request body octets; 413 beyond */
        uint32_t max_connections;
        int64_t ack_timeout_ms;     /* wait for Kafka before answering 503 */
        int64_t idempotency_ttl_ms; /* retention of the idempotency topic */
    } api;

    struct {
        char *listen;               /* "127.0.0.1:9100"; NULL: no metrics server */
        int64_t health_timeout_ms;  /* /healthz is 503 once a heartbeat is older */
    } metrics;

    struct {
        int workers;                /* 0: one per core */
        uint32_t max_inflight;      /* dispatches in memory per process */
        int64_t drain_timeout_ms;
        char *instance_id;
        int64_t destination_backoff_initial_ms; /* a destination down: first backoff */
        int64_t destination_backoff_max_ms;     /* ... doubling up to this */
        uint32_t max_inflight_per_destination;  /* 0: max_inflight / 4 (at least 1) */
        int64_t idle_state_timeout_ms;          /* per-destination state freed after */
        bool ledger;                    /* publish final outcomes, skip them on assignment */
        int64_t ledger_lookback_ms;     /* how far back a new owner reads the ledger */
        uint32_t ledger_max_entries;    /* job + recipient pairs remembered */
        char *tls_ca_file;                      /* trusted CAs (PEM); NULL: system store */
        int64_t tls_fallback_expiry_ms;         /* plain text after a failed handshake, this long */
        bool dane;                              /* DANE (RFC 7672) TLSA lookups */
        char *dane_resolver;                    /* "host[:port]" forwarder; NULL: resolv.conf */
        char *dane_trust_anchor;                /* DNSSEC trust anchor file; NULL: the root's */
        bool mta_sts;                           /* apply receivers' MTA-STS policies */
        int64_t mta_sts_fetch_timeout_ms;       /* one policy fetch, and a delivery's wait for it */
        int64_t mta_sts_recheck_ms;             /* a cached policy's TXT id checked this often */
    } sender;

    struct {
        uint32_t max_buffered;      /* jobs in memory in shape before parking */
        uint64_t max_job_bytes;     /* classify rejects larger jobs */
        char *default_pool;
        char *default_tenant;
        int64_t idle_state_timeout_ms; /* shape frees a quiet site's state after it */
    } scheduler;

    struct {
        sl_webhook_endpoint *endpoints;  /* sluice-webhook posts events to each */
        size_t n_endpoints;
        uint32_t max_attempts;      /* a batch rejected (4xx but 408/429) this often is dead-lettered */
    } webhook;

    struct {                        /* common/token.h: VERP and unsubscribe tokens */
        char *secret_file;          /* the HMAC key's file; the key itself is never logged */
    } tokens;

    struct {                        /* one-click unsubscribe (RFC 8058), deliverability.md */
        char *url;                  /* "https://unsub.example.net"; NULL: no List-Unsubscribe */
        char *mailto_domain;        /* unsub+TOKEN@ this; NULL: no mailto URI */
    } unsubscribe;
    struct {                        /* VERP return paths (docs/inbound.md) */
        char *domain;               /* bounce+TOKEN@domain; NULL: VERP off */
        struct sl_verp_tenant {     /* a tenant's own bounce domain, first */
            char *tenant, *domain;
        } *tenants;
        size_t n_tenants;
    } verp;

    struct {                        /* sluice-inbound: DSN, ARF and mailto unsubscribes */
        char **listen;              /* "host:port" listeners */
        size_t n_listen;
        char **domains;             /* RCPT domains accepted (lower case) */
        size_t n_domains;
        char **fbl;                 /* feedback-loop mailboxes, whole addresses */
        size_t n_fbl;
        uint64_t max_message_size;
    } inbound;
} sl_config;

/* Load and validate. On error returns SL_ECONFIG and sets *err to a
 * malloc'd "file:line: ..." message the caller frees. */
int sl_config_load(const char *path, sl_config **out, char **err);
/* Load, or print the error and exit(2). path NULL: the built-in default. */
sl_config *sl_config_load_or_exit(const char *path);
/* Parse from a string (tests); name is used in messages. */
int sl_config_parse(const char *name, const char *yaml, size_t len, sl_config **out, char **err);
sl_config *sl_config_default(void);
void sl_config_free(sl_config *cfg);

/* The keys a file may hold, in the order they are read (`sluice config
 * keys`). The strings are static. sl_config_key_get() returns SL_EINVAL
 * for i >= sl_config_key_count(). */
typedef struct sl_config_key_doc {
    const char *name; /* "kafka.bootstrap"; a top-level key ("pools") has no dot */
    const char *type; /* string, list, integer, boolean, duration, size, structured */
    const char *def;  /* the default as a file writes it; NULL: none */
    const char *env;  /* the SLUICE_* variable that overrides it; NULL: none */
    const char *doc;  /* one line */
    int64_t min, max; /* integers: the bounds */
} sl_config_key_doc;
size_t sl_config_key_count(void);
int sl_config_key_get(size_t i, sl_config_key_doc *out);

/* Full topic name: prefix + suffix ("jobs", "retry.5m"). Caller frees. */
char *sl_config_topic(const sl_config *cfg, const char *suffix);
/* The senders' consumer group on the dispatch topic: the sender joins it,
 * its ledger follower and `sluice top` read its committed offsets. */
#define SL_GROUP_SENDER "sluice-sender"
/* Full consumer group id: kafka.group_prefix + name (SL_GROUP_SENDER).
 * Caller frees. */
char *sl_config_group(const sl_config *cfg, const char *name);
/* The retry topic suffix for a delay: "retry.1m", "retry.2h". Caller frees. */
char *sl_config_retry_suffix(int64_t delay_ms);

/* Lookups; NULL when absent. */
const sl_pool *sl_config_pool(const sl_config *cfg, const char *name);
const sl_shaping *sl_config_shaping(const sl_config *cfg, const char *site);
const sl_route *sl_config_route(const sl_config *cfg, const char *domain);
/* The VERP bounce domain of a tenant's jobs: its verp.tenants entry, else
 * verp.domain; NULL: no VERP for it. */
const char *sl_config_verp_domain(const sl_config *cfg, const char *tenant);
const sl_source *sl_config_source(const sl_config *cfg, const char *ip);

#endif
