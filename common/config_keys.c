/*
 * config_keys - the table of every configuration key (config_int.h) and
 * what is done with it: the schema walk, the defaults, freeing, the
 * SLUICE_* environment overrides and the listing (`sluice config keys`).
 *
 * Adding a key is adding one entry to cfg_keys[] below (and its field to
 * sl_config, and a row to docs/configuration.md: a test checks that every
 * entry is documented there). An entry names the key with dots, its type,
 * its place in sl_config (offsetof), bounds, the default as a file would
 * write it, an optional SLUICE_* variable, an optional extra check of the
 * value and a one-line doc. Keys with structured values (pools, sites,
 * shaping rules...) are CFG_CUSTOM entries whose walk, init and free are
 * in config_sections.c.
 *
 * The table is in the order the file is walked: a section's keys are
 * together, and sections come in a fixed order whatever the order in the
 * file (pools and sites before shaping and backoff, which refer to them).
 */
#include "config_int.h"
#include "hostport.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Extra checks of a value                                             */
/*                                                                     */
/* Each returns 0, or -1 after writing what is wrong into *why; shown */
/* is how the value is quoted ("'x'" from a file, "SLUICE_X='x'" from  */
/* the environment).                                                   */

static int check_nonempty(const char *s, const char *shown, sl_buf *why)
{
    if (s[0])
        return 0;
    sl_buf_printf(why, "must not be empty");
    return -1;
}

/* A consumer group id's prefix: it also goes into group.instance.id
 * (static membership), which Kafka limits to these characters. */
static int check_group_prefix(const char *s, const char *shown, sl_buf *why)
{
    (void)shown;
    size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
    if (s[n]) {
        sl_buf_printf(why, "may hold only letters, digits, '.', '_' and '-'");
        return -1;
    }
    if (n > 100) {
        sl_buf_printf(why, "is longer than 100 characters");
        return -1;
    }
    return 0;
}

/* RFC 8058 3.1: the one-click URI is HTTPS. The sender appends "/u/TOKEN". */
static int check_unsubscribe_url(const char *s, const char *shown, sl_buf *why)
{
    (void)shown;
    size_t n = strlen(s);
    if (strncasecmp(s, "https://", 8) || n <= 8 || s[n - 1] == '/' || strpbrk(s, " <>,\"?#")) {
        sl_buf_printf(why, "must be an https URL without a trailing slash, query or fragment "
                           "(the links are <url>/u/TOKEN)");
        return -1;
    }
    return 0;
}

static int check_security_protocol(const char *s, const char *shown, sl_buf *why)
{
    static const char *const protos[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
    for (size_t i = 0; i < NELEM(protos); i++)
        if (!strcmp(s, protos[i]))
            return 0;
    sl_buf_printf(why, "%s is not one of plaintext, ssl, sasl_plaintext, sasl_ssl", shown);
    return -1;
}

static int check_dns_server(const char *s, const char *shown, sl_buf *why)
{
    if (cfg__dns_server_ok(s))
        return 0;
    sl_buf_printf(why, "%s is not an IP address or ip:port", shown);
    return -1;
}

static int check_listen(const char *s, const char *shown, sl_buf *why)
{
    uint16_t port;
    if (sl_hostport_parse(s, SL_HP_LISTEN, 0, NULL, &port) == 0)
        return 0;
    sl_buf_printf(why, "%s is not host:port", shown);
    return -1;
}

/* The mode of a submit.listen item: "host:port [plain|starttls|tls]". */
static const char *listen_mode(const char *s)
{
    const char *sp = strchr(s, ' ');
    const char *mode = sp ? sp + 1 : "plain";
    while (*mode == ' ')
        mode++;
    return mode;
}

static int check_submit_listen(const char *s, const char *shown, sl_buf *why)
{
    const char *sp = strchr(s, ' ');
    char *addr = sp ? xstrndup(s, (size_t)(sp - s)) : xstrdup(s);
    uint16_t port;
    int bad = sl_hostport_parse(addr, SL_HP_LISTEN, 0, NULL, &port);
    free(addr);
    if (bad < 0) {
        sl_buf_printf(why, "%s is not host:port [mode]", shown);
        return -1;
    }
    const char *mode = listen_mode(s);
    if (strcmp(mode, "tls") && strcmp(mode, "starttls") && strcmp(mode, "plain")) {
        sl_buf_printf(why, "mode '%s' is not one of plain, starttls, tls", mode);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The table                                                           */

#define F(field) offsetof(sl_config, field)

static const cfg_key cfg_keys[] = {
    {.name = "kafka.bootstrap", .type = CFG_STR, .off = F(kafka.bootstrap),
     .def = "127.0.0.1:9092", .env = "SLUICE_KAFKA_BOOTSTRAP", .check = check_nonempty,
     .doc = "comma-separated Kafka broker list"},
    {.name = "kafka.topic_prefix", .type = CFG_STR, .off = F(kafka.topic_prefix),
     .def = "sluice.", .env = "SLUICE_KAFKA_TOPIC_PREFIX",
     .doc = "prepended to every topic name"},
    {.name = "kafka.group_prefix", .type = CFG_STR, .off = F(kafka.group_prefix), .def = "",
     .env = "SLUICE_KAFKA_GROUP_PREFIX", .check = check_group_prefix,
     .doc = "prepended to every consumer group id"},
    {.name = "kafka.security_protocol", .type = CFG_STR, .off = F(kafka.security_protocol),
     .def = "plaintext", .flags = CFG_LOWER, .check = check_security_protocol,
     .doc = "plaintext, ssl, sasl_plaintext or sasl_ssl"},
    {.name = "kafka.sasl_mechanism", .type = CFG_STR, .off = F(kafka.sasl_mechanism),
     .doc = "SASL mechanism as librdkafka names it (PLAIN, SCRAM-SHA-512...)"},
    {.name = "kafka.sasl_username", .type = CFG_STR, .off = F(kafka.sasl_username),
     .env = "SLUICE_KAFKA_SASL_USERNAME", .doc = "SASL user name"},
    {.name = "kafka.sasl_password", .type = CFG_STR, .off = F(kafka.sasl_password),
     .flags = CFG_SECRET, .env = "SLUICE_KAFKA_SASL_PASSWORD",
     .doc = "SASL password (secret: never logged)"},
    {.name = "kafka.ssl_ca_location", .type = CFG_STR, .off = F(kafka.ssl_ca_location),
     .doc = "CA bundle file to verify the brokers with"},
    {.name = "kafka.session_timeout_ms", .type = CFG_INT, .off = F(kafka.session_timeout_ms),
     .min = 1, .max = 3600000, .def = "10000", .doc = "consumer group session timeout (ms)"},
    {.name = "kafka.heartbeat_interval_ms", .type = CFG_INT,
     .off = F(kafka.heartbeat_interval_ms), .min = 1, .max = 3600000, .def = "3000",
     .doc = "consumer heartbeat interval (ms), below session_timeout_ms"},
    {.name = "kafka.commit_interval_ms", .type = CFG_INT, .off = F(kafka.commit_interval_ms),
     .min = 1, .max = 3600000, .def = "1000",
     .doc = "how often consumed offsets are committed (ms)"},
    {.name = "kafka.linger_ms", .type = CFG_INT, .off = F(kafka.linger_ms), .min = 0,
     .max = 60000, .def = "-1", .doc = "producer batching delay (ms); -1: each program's own"},
    {.name = "kafka.partitions", .type = CFG_INT, .off = F(kafka.partitions), .min = 1,
     .max = 100000, .def = "6", .doc = "partitions per topic sluice creates"},
    {.name = "kafka.replication_factor", .type = CFG_INT, .off = F(kafka.replication_factor),
     .min = 1, .max = 1000, .def = "3", .doc = "replicas per topic sluice creates"},
    {.name = "kafka.client_id", .type = CFG_STR, .off = F(kafka.client_id), .def = "sluice",
     .doc = "Kafka client id"},
    {.name = "kafka.static_membership", .type = CFG_BOOL, .off = F(kafka.static_membership),
     .def = "false", .env = "SLUICE_KAFKA_STATIC_MEMBERSHIP",
     .doc = "committed groups use group.instance.id from sender.instance_id (no rebalance on restart)"},

    {.name = "dns.servers", .type = CFG_STRLIST, .off = F(dns.servers), .off_n = F(dns.n_servers),
     .env = "SLUICE_DNS_SERVERS", .check = check_dns_server,
     .doc = "resolvers, ip or ip:port; none: the system's"},
    {.name = "dns.timeout", .type = CFG_DURATION, .off = F(dns.timeout_ms), .min = 1, .def = "5s",
     .doc = "per-query timeout"},
    {.name = "dns.tries", .type = CFG_INT, .off = F(dns.tries), .min = 1, .max = 20, .def = "2",
     .doc = "attempts per server"},

    {.name = "routes", .type = CFG_CUSTOM, .walk = cfg__walk_routes, .free = cfg__free_routes,
     .doc = "smart hosts: recipient-domain glob to host:port, first match wins"},
    {.name = "pools", .type = CFG_CUSTOM, .walk = cfg__walk_pools, .free = cfg__free_pools,
     .doc = "named lists of source addresses (ip, ehlo, weight, socks5, warmup)"},
    {.name = "sites", .type = CFG_CUSTOM, .walk = cfg__walk_sites, .free = cfg__free_sites,
     .doc = "destinations that share limits, by MX and domain patterns"},
    {.name = "shaping", .type = CFG_CUSTOM, .walk = cfg__walk_shaping, .init = cfg__init_shaping,
     .free = cfg__free_shaping, .def = "default: 100/s, burst 100, 10 connections",
     .doc = "rates, connections, TLS and timeouts per site"},
    {.name = "backoff", .type = CFG_CUSTOM, .walk = cfg__walk_backoff, .free = cfg__free_backoff,
     .doc = "rules that slow a site down on matching replies"},
    {.name = "bounce_rules", .type = CFG_CUSTOM, .walk = cfg__walk_bounce_rules,
     .free = cfg__free_bounce_rules, .def = "none",
     .doc = "your bounce classification rules, tried before the built-in table"},
    {.name = "limits", .type = CFG_CUSTOM, .walk = cfg__walk_limits, .free = cfg__free_limits,
     .doc = "message rate caps per tenant and campaign"},

    {.name = "retry.delays", .type = CFG_CUSTOM, .walk = cfg__walk_retry_delays,
     .init = cfg__init_retry_delays, .free = cfg__free_retry_delays,
     .def = "[1m, 5m, 30m, 2h, 6h]", .doc = "waits before attempt 2, 3, ...; one topic each"},
    {.name = "retry.expiry", .type = CFG_DURATION, .off = F(retry.expiry_ms), .min = 1,
     .def = "72h", .doc = "a message undelivered this long after submission expires"},

    {.name = "dkim", .type = CFG_CUSTOM, .walk = cfg__walk_dkim, .free = cfg__free_dkim,
     .doc = "signing keys (domain, selector, key, algorithm)"},

    {.name = "submit.listen", .type = CFG_STRLIST, .off = F(submit.listen),
     .off_n = F(submit.n_listen), .check = check_submit_listen,
     .doc = "\"host:port mode\" listeners, mode plain, starttls or tls"},
    {.name = "submit.cert", .type = CFG_STR, .off = F(submit.cert),
     .doc = "PEM certificate chain"},
    {.name = "submit.key", .type = CFG_STR, .off = F(submit.key), .doc = "PEM private key"},
    {.name = "submit.users", .type = CFG_STR, .off = F(submit.users),
     .doc = "the users file for AUTH"},
    {.name = "submit.max_message_size", .type = CFG_SIZE, .off = F(submit.max_message_size),
     .def = "25M", .doc = "largest message accepted"},
    {.name = "submit.max_recipients", .type = CFG_U32, .off = F(submit.max_recipients), .min = 1,
     .max = 1000000, .def = "100", .doc = "recipients per message"},
    {.name = "submit.max_connections", .type = CFG_U32, .off = F(submit.max_connections),
     .min = 1, .max = 1000000, .def = "20000", .doc = "concurrent sessions in all"},
    {.name = "submit.max_connections_per_ip", .type = CFG_U32,
     .off = F(submit.max_connections_per_ip), .min = 1, .max = 1000000, .def = "20",
     .doc = "concurrent sessions from one client address"},
    {.name = "submit.idle_timeout", .type = CFG_DURATION, .off = F(submit.idle_timeout_ms),
     .min = 1, .def = "5m", .doc = "a silent client is disconnected after this"},
    {.name = "submit.command_timeout", .type = CFG_DURATION, .off = F(submit.command_timeout_ms),
     .min = 1, .def = "1m", .doc = "a command line must arrive whole within this"},
    {.name = "submit.data_timeout", .type = CFG_DURATION, .off = F(submit.data_timeout_ms),
     .min = 1, .def = "10m", .doc = "a message must arrive whole within this of the 354"},
    {.name = "submit.auth_workers", .type = CFG_U32, .off = F(submit.auth_workers), .min = 1,
     .max = 64, .def = "2", .doc = "password checks running at once"},
    {.name = "submit.auth_queue", .type = CFG_U32, .off = F(submit.auth_queue), .min = 0,
     .max = 100000, .def = "32", .doc = "password checks waiting; beyond, 454"},

    {.name = "api.listen", .type = CFG_STR, .off = F(api.listen),
     .doc = "host:port of sluice-api (its own default 0.0.0.0:8443)"},
    {.name = "api.cert", .type = CFG_STR, .off = F(api.cert), .doc = "PEM certificate chain"},
    {.name = "api.key", .type = CFG_STR, .off = F(api.key), .doc = "PEM private key"},
    {.name = "api.keys", .type = CFG_STR, .off = F(api.keys), .doc = "the API keys file"},
    {.name = "api.allow_plain", .type = CFG_BOOL, .off = F(api.allow_plain), .def = "false",
     .doc = "serve plain HTTP without cert and key (tests, loopback)"},
    {.name = "api.max_body", .type = CFG_SIZE, .off = F(api.max_body), .def = "64M",
     .doc = "largest request body; 413 beyond"},
    {.name = "api.max_connections", .type = CFG_U32, .off = F(api.max_connections), .min = 1,
     .max = 100000, .def = "1000", .doc = "connections served at once"},
    {.name = "api.ack_timeout", .type = CFG_DURATION, .off = F(api.ack_timeout_ms), .min = 1,
     .def = "30s", .doc = "wait for Kafka's acknowledgement before answering 503"},
    {.name = "api.idempotency_ttl", .type = CFG_DURATION, .off = F(api.idempotency_ttl_ms),
     .min = 60000, .def = "24h", .doc = "how long an Idempotency-Key's record is kept"},

    {.name = "metrics.health_timeout", .type = CFG_DURATION, .off = F(metrics.health_timeout_ms),
     .min = 1, .def = "60s", .doc = "/healthz is 503 once a heartbeat is older"},
    {.name = "metrics.listen", .type = CFG_STR, .off = F(metrics.listen),
     .env = "SLUICE_METRICS_LISTEN", .check = check_listen,
     .doc = "host:port serving /metrics, /healthz, /readyz; none: off"},

    {.name = "sender.workers", .type = CFG_INT, .off = F(sender.workers), .min = 0, .max = 1024,
     .def = "0", .env = "SLUICE_SENDER_WORKERS", .doc = "worker threads; 0: one per core"},
    {.name = "sender.max_inflight", .type = CFG_U32, .off = F(sender.max_inflight), .min = 1,
     .max = 10000000, .def = "5000", .doc = "dispatches held in memory per process"},
    {.name = "sender.drain_timeout", .type = CFG_DURATION, .off = F(sender.drain_timeout_ms),
     .min = 0, .def = "30s", .doc = "on SIGTERM, how long to finish what is in flight"},
    {.name = "sender.destination_backoff_initial", .type = CFG_DURATION,
     .off = F(sender.destination_backoff_initial_ms), .min = 1, .def = "1s",
     .doc = "a destination that failed is down this long before one probe"},
    {.name = "sender.destination_backoff_max", .type = CFG_DURATION,
     .off = F(sender.destination_backoff_max_ms), .min = 1, .def = "5m",
     .doc = "each failed probe doubles the backoff up to this"},
    {.name = "sender.max_inflight_per_destination", .type = CFG_U32,
     .off = F(sender.max_inflight_per_destination), .min = 1, .max = 10000000, .def = "0",
     .doc = "deliveries one destination may hold; 0: max_inflight / 4"},
    {.name = "sender.idle_state_timeout", .type = CFG_DURATION,
     .off = F(sender.idle_state_timeout_ms), .min = 1, .def = "10m",
     .doc = "per-destination state unused this long is freed"},
    {.name = "sender.ledger", .type = CFG_BOOL, .off = F(sender.ledger), .def = "true",
     .doc = "publish final outcomes to the ledger and skip what it holds as final"},
    {.name = "sender.ledger_lookback", .type = CFG_DURATION, .off = F(sender.ledger_lookback_ms),
     .min = 1, .def = "30m", .doc = "how far back the ledger is read on assignment"},
    {.name = "sender.ledger_max_entries", .type = CFG_U32, .off = F(sender.ledger_max_entries),
     .min = 1000, .max = 100000000, .def = "1000000",
     .doc = "job + recipient pairs the ledger lookup keeps in memory"},
    {.name = "sender.instance_id", .type = CFG_STR, .off = F(sender.instance_id),
     .flags = CFG_HOSTNAME, .env = "SLUICE_INSTANCE_ID", .check = check_nonempty,
     .doc = "names this sender in events and metrics; default: the host name"},
    {.name = "sender.tls_ca_file", .type = CFG_STR, .off = F(sender.tls_ca_file),
     .env = "SLUICE_SENDER_TLS_CA_FILE", .check = check_nonempty,
     .doc = "PEM file of CAs trusted for `tls: verify`; default: the system store"},
    {.name = "sender.tls_fallback_expiry", .type = CFG_DURATION,
     .off = F(sender.tls_fallback_expiry_ms), .min = 1, .def = "1h",
     .doc = "after a failed opportunistic handshake, plain text to that MX this long"},
    {.name = "sender.dane", .type = CFG_BOOL, .off = F(sender.dane), .def = "false",
     .env = "SLUICE_SENDER_DANE",
     .doc = "look up DNSSEC-validated TLSA records and authenticate MX hosts by them"},
    {.name = "sender.dane_resolver", .type = CFG_STR, .off = F(sender.dane_resolver),
     .check = check_nonempty,
     .doc = "host:port of the resolver DANE lookups forward to; default: /etc/resolv.conf"},
    {.name = "sender.dane_trust_anchor", .type = CFG_STR, .off = F(sender.dane_trust_anchor),
     .check = check_nonempty,
     .doc = "DNSSEC trust anchor file; default: /usr/share/dns/root.key (dns-root-data)"},
    {.name = "sender.mta_sts", .type = CFG_BOOL, .off = F(sender.mta_sts), .def = "true",
     .doc = "apply receivers' MTA-STS policies (RFC 8461)"},
    {.name = "sender.mta_sts_fetch_timeout", .type = CFG_DURATION,
     .off = F(sender.mta_sts_fetch_timeout_ms), .min = 100, .def = "10s",
     .doc = "an MTA-STS policy fetch, and how long a delivery waits for it"},
    {.name = "sender.mta_sts_recheck", .type = CFG_DURATION, .off = F(sender.mta_sts_recheck_ms),
     .min = 1000, .def = "5m",
     .doc = "how often a cached MTA-STS policy's TXT id is checked for a change"},

    {.name = "scheduler.max_buffered", .type = CFG_U32, .off = F(scheduler.max_buffered),
     .min = 1, .max = 100000000, .def = "100000", .doc = "jobs in memory in shape before parking"},
    {.name = "scheduler.max_job_bytes", .type = CFG_SIZE, .off = F(scheduler.max_job_bytes),
     .def = "1M", .doc = "larger jobs are rejected; sizes every topic and producer"},
    {.name = "scheduler.default_pool", .type = CFG_STR, .off = F(scheduler.default_pool),
     .def = "default", .doc = "pool for jobs that name none"},
    {.name = "scheduler.default_tenant", .type = CFG_STR, .off = F(scheduler.default_tenant),
     .def = "default", .doc = "tenant for jobs that name none"},
    {.name = "scheduler.idle_state_timeout", .type = CFG_DURATION,
     .off = F(scheduler.idle_state_timeout_ms), .min = 1, .def = "10m",
     .doc = "shape frees a quiet site's state after this"},

    {.name = "webhook.max_attempts", .type = CFG_U32, .off = F(webhook.max_attempts), .min = 1,
     .max = 1000, .def = "5", .doc = "refusals of a batch before its events are dead-lettered"},
    {.name = "webhook.endpoints", .type = CFG_CUSTOM, .walk = cfg__walk_webhook_endpoints,
     .free = cfg__free_webhook_endpoints,
     .doc = "receivers of the events (url, secret or secret_file, batch_size, timeout)"},

    {.name = "tokens.secret_file", .type = CFG_STR, .off = F(tokens.secret_file),
     .env = "SLUICE_TOKENS_SECRET_FILE",
     .doc = "file holding the key that signs VERP and unsubscribe tokens (secret)"},

    {.name = "unsubscribe.url", .type = CFG_STR, .off = F(unsubscribe.url),
     .check = check_unsubscribe_url,
     .doc = "https base of the one-click unsubscribe links (<url>/u/TOKEN); unset: none"},
    {.name = "unsubscribe.mailto_domain", .type = CFG_STR, .off = F(unsubscribe.mailto_domain),
     .check = check_nonempty,
     .doc = "domain of the mailto unsubscribe address unsub+TOKEN@<domain>"},
    {.name = "verp.domain", .type = CFG_STR, .off = F(verp.domain), .flags = CFG_LOWER,
     .check = check_nonempty, .doc = "domain of the VERP return paths bounce+TOKEN@domain"},
    {.name = "verp.tenants", .type = CFG_CUSTOM, .walk = cfg__walk_verp_tenants,
     .free = cfg__free_verp_tenants, .doc = "tenant -> its own VERP bounce domain"},

    {.name = "inbound.listen", .type = CFG_STRLIST, .off = F(inbound.listen),
     .off_n = F(inbound.n_listen), .doc = "\"host:port\" listeners of sluice-inbound"},
    {.name = "inbound.domains", .type = CFG_STRLIST, .off = F(inbound.domains),
     .off_n = F(inbound.n_domains), .flags = CFG_LOWER,
     .doc = "bounce and feedback-loop domains sluice-inbound accepts mail for"},
    {.name = "inbound.fbl", .type = CFG_STRLIST, .off = F(inbound.fbl), .off_n = F(inbound.n_fbl),
     .flags = CFG_LOWER, .doc = "feedback-loop mailboxes (whole addresses) that take ARF reports"},
    {.name = "inbound.max_message_size", .type = CFG_SIZE, .off = F(inbound.max_message_size),
     .def = "10M", .doc = "largest report accepted"},
};

/* ------------------------------------------------------------------ */
/* Checks across the keys of one section, after them                   */

static int check_kafka(cfg_ctx *c, const cfg_node *m)
{
    const sl_config *cfg = c->cfg;
    if (cfg->kafka.heartbeat_interval_ms >= cfg->kafka.session_timeout_ms)
        return cfg__fail(c, cfg__map_line(m, "heartbeat_interval_ms"),
                         "key 'kafka.heartbeat_interval_ms': must be below session_timeout_ms (%d)",
                         cfg->kafka.session_timeout_ms);
    return 0;
}

static int check_submit(cfg_ctx *c, const cfg_node *m)
{
    const sl_config *cfg = c->cfg;
    bool need_tls = false;
    for (size_t i = 0; i < cfg->submit.n_listen; i++)
        need_tls |= !strcmp(listen_mode(cfg->submit.listen[i]), "tls");
    if (need_tls && (!cfg->submit.cert || !cfg->submit.key))
        return cfg__fail(c, cfg__map_line(m, "listen"),
                         "key 'submit.listen': a tls listener needs submit.cert and submit.key");
    if (!cfg->submit.cert != !cfg->submit.key)
        return cfg__fail(c, cfg__map_line(m, cfg->submit.cert ? "cert" : "key"),
                         "key 'submit.%s': cert and key go together",
                         cfg->submit.cert ? "key" : "cert");
    return 0;
}

static int check_api(cfg_ctx *c, const cfg_node *m)
{
    const sl_config *cfg = c->cfg;
    if (!cfg->api.cert != !cfg->api.key)
        return cfg__fail(c, cfg__map_line(m, cfg->api.cert ? "cert" : "key"),
                         "key 'api.%s': cert and key go together", cfg->api.cert ? "key" : "cert");
    return 0;
}

static int check_sender(cfg_ctx *c, const cfg_node *m)
{
    const sl_config *cfg = c->cfg;
    if (cfg->sender.destination_backoff_max_ms < cfg->sender.destination_backoff_initial_ms)
        return cfg__fail(c,
                         cfg__map_line(m, cfg__map_get(m, "destination_backoff_max")
                                              ? "destination_backoff_max"
                                              : "destination_backoff_initial"),
                         "key 'sender.destination_backoff_max': must not be shorter than "
                         "sender.destination_backoff_initial");
    if (cfg->sender.max_inflight_per_destination > cfg->sender.max_inflight)
        return cfg__fail(c, cfg__map_line(m, "max_inflight_per_destination"),
                         "key 'sender.max_inflight_per_destination': must not exceed "
                         "sender.max_inflight (%u)",
                         (unsigned)cfg->sender.max_inflight);
    return 0;
}

static int check_unsubscribe(cfg_ctx *c, const cfg_node *m)
{
    const sl_config *cfg = c->cfg;
    if (cfg->unsubscribe.mailto_domain && !cfg->unsubscribe.url)
        return cfg__fail(c, cfg__map_line(m, "mailto_domain"),
                         "key 'unsubscribe.mailto_domain': needs unsubscribe.url (the one-click "
                         "link receivers require)");
    return 0;
}

static const struct {
    const char *section;
    int (*check)(cfg_ctx *c, const cfg_node *section);
} section_checks[] = {
    {"kafka", check_kafka},
    {"submit", check_submit},
    {"api", check_api},
    {"sender", check_sender},
    {"unsubscribe", check_unsubscribe},
};

/* ------------------------------------------------------------------ */
/* Walking the document                                                */

/* Length of the section part of a key name ("kafka" of "kafka.bootstrap";
 * the whole name of a top-level key). */
static size_t section_len(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot ? (size_t)(dot - name) : strlen(name);
}

static bool same_section(const cfg_key *a, const cfg_key *b)
{
    size_t n = section_len(a->name);
    return n == section_len(b->name) && !strncmp(a->name, b->name, n);
}

/* The key's extra check on one value; line and kp say where it came from. */
static int check_value(cfg_ctx *c, const cfg_key *k, const char *s, const char *kp, int line)
{
    if (!k->check)
        return 0;
    sl_buf why = SL_BUF_INIT, shown = SL_BUF_INIT;
    sl_buf_printf(&shown, "'%s'", s);
    int rc = 0;
    if (k->check(s, (const char *)shown.data, &why) < 0)
        rc = cfg__fail(c, line, "key '%s': %s", kp, (const char *)why.data);
    sl_buf_free(&why);
    sl_buf_free(&shown);
    return rc;
}

static void *field_of(sl_config *cfg, size_t off)
{
    return (char *)cfg + off;
}

/* One key of section mapping m (path sec, the key's own name leaf). */
static int walk_key(cfg_ctx *c, const cfg_key *k, const cfg_node *m, const char *sec,
                    const char *leaf)
{
    void *field = field_of(c->cfg, k->off);
    const cfg_node *v = cfg__map_get(m, leaf);
    char kp[PATH_MAX_LEN];
    int64_t x;
    int r;
    cfg__key_path(kp, sizeof(kp), sec, leaf);
    switch (k->type) {
    case CFG_STR:
        r = cfg__opt_str(c, m, sec, leaf, field);
        if (r <= 0)
            return r;
        if (k->flags & CFG_LOWER)
            sl_lower(*(char **)field);
        return check_value(c, k, *(char **)field, kp, v->line);
    case CFG_STRLIST: {
        size_t *n = field_of(c->cfg, k->off_n);
        r = cfg__opt_str_list(c, m, sec, leaf, field, n);
        if (r <= 0)
            return r;
        for (size_t i = 0; i < *n; i++) {
            char ip[PATH_MAX_LEN];
            cfg__pathf(ip, sizeof(ip), "%s[%zu]", kp, i);
            if (k->flags & CFG_LOWER)
                sl_lower((*(char ***)field)[i]);
            if (check_value(c, k, (*(char ***)field)[i], ip,
                            v->type == CN_SEQ ? v->kids[i]->line : v->line) < 0)
                return -1;
        }
        return 0;
    }
    case CFG_INT:
    case CFG_U32:
        r = cfg__opt_int(c, m, sec, leaf, k->min, k->max, &x);
        if (r > 0 && k->type == CFG_INT)
            *(int *)field = (int)x;
        else if (r > 0)
            *(uint32_t *)field = (uint32_t)x;
        return r < 0 ? -1 : 0;
    case CFG_BOOL:
        return cfg__opt_bool(c, m, sec, leaf, field) < 0 ? -1 : 0;
    case CFG_DURATION:
        return cfg__opt_duration(c, m, sec, leaf, k->min == 0, field) < 0 ? -1 : 0;
    case CFG_SIZE:
        return cfg__opt_size(c, m, sec, leaf, field) < 0 ? -1 : 0;
    case CFG_CUSTOM:
        return k->walk(c, v);
    }
    return 0;
}

/* The section of keys [first, end) in mapping m. */
static int walk_section(cfg_ctx *c, const cfg_node *m, size_t first, size_t end)
{
    size_t seclen = section_len(cfg_keys[first].name);
    char sec[PATH_MAX_LEN];
    cfg__pathf(sec, sizeof(sec), "%.*s", (int)seclen, cfg_keys[first].name);
    const char *leaves[64];
    size_t n = 0;
    for (size_t i = first; i < end && n < NELEM(leaves); i++)
        leaves[n++] = cfg_keys[i].name + seclen + 1;
    TRY(cfg__map_check(c, m, sec, leaves, n));
    for (size_t i = first; i < end; i++)
        TRY(walk_key(c, &cfg_keys[i], m, sec, cfg_keys[i].name + seclen + 1));
    for (size_t i = 0; i < NELEM(section_checks); i++)
        if (!strcmp(section_checks[i].section, sec))
            TRY(section_checks[i].check(c, m));
    return 0;
}

int cfg__walk_root(cfg_ctx *c, const cfg_node *root)
{
    if (!root)
        return 0;
    if (root->type != CN_MAP)
        return cfg__fail(c, root->line,
                         "the top level must be a mapping of sections (kafka:, "
                         "pools:, ...)");
    char names[32][32];
    const char *top[32];
    size_t n_top = 0;
    for (size_t i = 0; i < NELEM(cfg_keys) && n_top < NELEM(top); i++) {
        if (i > 0 && same_section(&cfg_keys[i - 1], &cfg_keys[i]))
            continue;
        snprintf(names[n_top], sizeof(names[n_top]), "%.*s", (int)section_len(cfg_keys[i].name),
                 cfg_keys[i].name);
        top[n_top] = names[n_top];
        n_top++;
    }
    TRY(cfg__map_check(c, root, "", top, n_top));
    for (size_t i = 0; i < NELEM(cfg_keys);) {
        size_t end = i + 1;
        while (end < NELEM(cfg_keys) && same_section(&cfg_keys[i], &cfg_keys[end]))
            end++;
        char sec[PATH_MAX_LEN];
        cfg__pathf(sec, sizeof(sec), "%.*s", (int)section_len(cfg_keys[i].name), cfg_keys[i].name);
        const cfg_node *m = cfg__map_get(root, sec);
        if (!strchr(cfg_keys[i].name, '.'))
            TRY(cfg_keys[i].walk(c, m)); /* a top-level key with a structured value */
        else
            TRY(walk_section(c, m, i, end));
        i = end;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Defaults and freeing                                                */

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

void cfg__keys_init(sl_config *cfg)
{
    for (size_t i = 0; i < NELEM(cfg_keys); i++) {
        const cfg_key *k = &cfg_keys[i];
        void *field = field_of(cfg, k->off);
        int64_t x = 0;
        uint64_t size = 0;
        if (k->type == CFG_CUSTOM) {
            if (k->init)
                k->init(cfg);
            continue;
        }
        if (k->flags & CFG_HOSTNAME) {
            *(char **)field = hostname_or("sluice");
            continue;
        }
        if (!k->def)
            continue;
        /* The defaults are the table's own text, checked by the unit test
         * (test_config_key_table), so a failed parse here cannot happen. */
        switch (k->type) {
        case CFG_STR:
            *(char **)field = xstrdup(k->def);
            break;
        case CFG_INT:
            if (cfg__parse_int(k->def, &x) == 0)
                *(int *)field = (int)x;
            break;
        case CFG_U32:
            if (cfg__parse_int(k->def, &x) == 0)
                *(uint32_t *)field = (uint32_t)x;
            break;
        case CFG_BOOL:
            *(bool *)field = !strcmp(k->def, "true");
            break;
        case CFG_DURATION:
            if (sl_parse_duration_ms(k->def, &x) == 0)
                *(int64_t *)field = x;
            break;
        case CFG_SIZE:
            if (cfg__parse_size(k->def, &size) == 0)
                *(uint64_t *)field = size;
            break;
        case CFG_STRLIST:
        case CFG_CUSTOM:
            break;
        }
    }
}

void cfg__keys_free(sl_config *cfg)
{
    for (size_t i = 0; i < NELEM(cfg_keys); i++) {
        const cfg_key *k = &cfg_keys[i];
        void *field = field_of(cfg, k->off);
        if (k->type == CFG_CUSTOM) {
            k->free(cfg);
        } else if (k->type == CFG_STR) {
            char *s = *(char **)field;
            if (s && (k->flags & CFG_SECRET)) {
                /* Do not leave the secret in freed heap memory. */
                volatile char *p = s;
                while (*p)
                    *p++ = 0;
            }
            free(s);
        } else if (k->type == CFG_STRLIST) {
            char **v = *(char ***)field;
            size_t n = *(size_t *)field_of(cfg, k->off_n);
            for (size_t j = 0; j < n; j++)
                free(v[j]);
            free(v);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Environment                                                         */

/* One SLUICE_* variable v for key k. A bad value is reported when strict
 * and otherwise skipped. */
static int env_key(cfg_ctx *c, const cfg_key *k, const char *v, bool strict)
{
    void *field = field_of(c->cfg, k->off);
    sl_buf why = SL_BUF_INIT, shown = SL_BUF_INIT;
    int rc = 0;
    switch (k->type) {
    case CFG_STR: {
        char *s = xstrdup(v);
        if (k->flags & CFG_LOWER)
            sl_lower(s);
        sl_buf_printf(&shown, "%s='%s'", k->env, s);
        if (k->check && k->check(s, (const char *)shown.data, &why) < 0) {
            free(s);
            rc = -1;
            break;
        }
        free(*(char **)field);
        *(char **)field = s;
        break;
    }
    case CFG_STRLIST: {
        char **list = NULL;
        size_t n = 0;
        char *copy = xstrdup(v), *save = NULL;
        for (char *tok = strtok_r(copy, ", ", &save); tok && rc == 0;
             tok = strtok_r(NULL, ", ", &save)) {
            sl_buf_reset(&shown);
            sl_buf_printf(&shown, "%s item '%s'", k->env, tok);
            if (k->check && k->check(tok, (const char *)shown.data, &why) < 0) {
                rc = -1;
                break;
            }
            list = xrealloc(list, (n + 1) * sizeof(char *));
            list[n++] = xstrdup(tok);
        }
        free(copy);
        char ***out = field;
        size_t *n_out = field_of(c->cfg, k->off_n);
        if (rc == 0) { /* swap: the old list is freed below */
            char **old = *out;
            size_t n_old = *n_out;
            *out = list;
            *n_out = n;
            list = old;
            n = n_old;
        }
        for (size_t i = 0; i < n; i++)
            free(list[i]);
        free(list);
        break;
    }
    case CFG_INT:
    case CFG_U32: {
        int64_t x;
        if (cfg__parse_int(v, &x) < 0 || x < k->min || x > k->max) {
            sl_buf_printf(&why, "%s='%s' is not an integer in [%lld, %lld]", k->env, v,
                          (long long)k->min, (long long)k->max);
            rc = -1;
        } else if (k->type == CFG_INT) {
            *(int *)field = (int)x;
        } else {
            *(uint32_t *)field = (uint32_t)x;
        }
        break;
    }
    case CFG_BOOL:
        if (cfg__parse_bool(v, (bool *)field) < 0) {
            sl_buf_printf(&why, "%s='%s' is not true or false", k->env, v);
            rc = -1;
        }
        break;
    default:
        /* The unit test keeps env to the types above. */
        break;
    }
    if (rc < 0 && strict)
        cfg__fail(c, -1, "key '%s': %s", k->name, (const char *)why.data);
    sl_buf_free(&why);
    sl_buf_free(&shown);
    return strict ? rc : 0;
}

int cfg__env_apply(cfg_ctx *c, bool strict)
{
    const char *file = c->file;
    c->file = "environment";
    int rc = 0;
    for (size_t i = 0; i < NELEM(cfg_keys) && rc == 0; i++) {
        const char *v = cfg_keys[i].env ? getenv(cfg_keys[i].env) : NULL;
        if (v && *v) /* an empty variable is ignored */
            rc = env_key(c, &cfg_keys[i], v, strict);
    }
    c->file = file;
    return rc;
}

/* ------------------------------------------------------------------ */
/* The listing                                                         */

const cfg_key *cfg__keys(size_t *n)
{
    *n = NELEM(cfg_keys);
    return cfg_keys;
}

size_t sl_config_key_count(void)
{
    return NELEM(cfg_keys);
}

int sl_config_key_get(size_t i, sl_config_key_doc *out)
{
    static const char *const type_names[] = {
        [CFG_STR] = "string",     [CFG_STRLIST] = "list",      [CFG_INT] = "integer",
        [CFG_U32] = "integer",    [CFG_BOOL] = "boolean",      [CFG_DURATION] = "duration",
        [CFG_SIZE] = "size",      [CFG_CUSTOM] = "structured",
    };
    if (i >= NELEM(cfg_keys))
        return SL_EINVAL;
    const cfg_key *k = &cfg_keys[i];
    out->name = k->name;
    out->type = type_names[k->type];
    out->def = k->flags & CFG_HOSTNAME ? "(the host name)" : k->def;
    out->env = k->env;
    out->doc = k->doc;
    out->min = k->min;
    out->max = k->max;
    return 0;
}
