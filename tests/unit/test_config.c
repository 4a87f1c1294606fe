/*
 * test_config - the configuration contract: the DESIGN example parses into
 * the values it says, every kind of mistake is reported at the right line
 * with the right key, defaults are inherited, the environment overrides.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "config_int.h"
#include "util.h"

static char tmpdir[] = "/tmp/sluice-test-config-XXXXXX";
static char key_rsa[256], key_ed[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup_all(void **state)
{
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(key_rsa, sizeof(key_rsa), "%s/s1.pem", tmpdir);
    snprintf(key_ed, sizeof(key_ed), "%s/e1.pem", tmpdir);
    write_file(key_rsa, "dummy\n");
    write_file(key_ed, "dummy\n");
    /* The environment must not leak into the cases that do not set it. */
    static const char *const vars[] = {"SLUICE_KAFKA_BOOTSTRAP",     "SLUICE_KAFKA_TOPIC_PREFIX",
                                       "SLUICE_KAFKA_SASL_USERNAME", "SLUICE_KAFKA_SASL_PASSWORD",
                                       "SLUICE_METRICS_LISTEN",      "SLUICE_DNS_SERVERS",
                                       "SLUICE_SENDER_WORKERS",      "SLUICE_INSTANCE_ID"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    return 0;
}

static int teardown_all(void **state)
{
    unlink(key_rsa);
    unlink(key_ed);
    rmdir(tmpdir);
    return 0;
}

static sl_config *parse_ok(const char *yaml)
{
    sl_config *cfg = NULL;
    char *err = NULL;
    int rc = sl_config_parse("t.yaml", yaml, strlen(yaml), &cfg, &err);
    if (rc != 0)
        fail_msg("unexpected config error: %s", err);
    assert_non_null(cfg);
    return cfg;
}

static char *parse_err(const char *yaml)
{
    sl_config *cfg = NULL;
    char *err = NULL;
    int rc = sl_config_parse("t.yaml", yaml, strlen(yaml), &cfg, &err);
    assert_int_equal(rc, SL_ECONFIG);
    assert_null(cfg);
    assert_non_null(err);
    return err;
}

/* The DESIGN.md example, with its dkim keys pointing at files that exist. */
static char *design_example(void)
{
    return xasprintf(
        "kafka:\n"
        "  bootstrap: 127.0.0.1:9092          # SLUICE_KAFKA_BOOTSTRAP overrides\n"
        "  topic_prefix: sluice.\n"
        "dns:\n"
        "  servers: [127.0.0.1:5353]          # optional; system resolver otherwise\n"
        "routes:                              # optional smart hosts, first match wins\n"
        "  \"*.test\": 127.0.0.1:2525\n"
        "pools:\n"
        "  default:\n"
        "    - { ip: 127.0.0.2, ehlo: mta1.example.net }\n"
        "    - { ip: 127.0.0.3, ehlo: mta2.example.net,\n"
        "        warmup: { start: 2026-11-01, per_day: [200, 500, 1000, 5000] } }\n"
        "sites:\n"
        "  google:    { mx: [\"*.google.com\", \"*.googlemail.com\"], domains: [gmail.com, "
        "googlemail.com] }\n"
        "  microsoft: { mx: [\"*.protection.outlook.com\"], domains: [outlook.com, hotmail.com] "
        "}\n"
        "shaping:\n"
        "  default:   { max_message_rate: 100/s, max_connections: 10, "
        "max_messages_per_connection: 100, tls: opportunistic }\n"
        "  google:    { max_message_rate: 50/s, max_connections: 5, tls: required }\n"
        "backoff:\n"
        "  - { match: \"^421 4\\\\.7\\\\.0\", site: google, action: halve, floor: 1/s, "
        "recover_after: 10m }\n"
        "retry:   { delays: [1m, 5m, 30m, 2h, 6h], expiry: 72h }\n"
        "dkim:\n"
        "  - { domain: example.net, selector: s1, key: %s, algorithm: rsa-sha256 }\n"
        "  - { domain: example.net, selector: e1, key: %s, algorithm: ed25519-sha256 }\n"
        "submit:\n"
        "  listen: [ \"0.0.0.0:587 starttls\", \"0.0.0.0:465 tls\" ]\n"
        "  cert: /etc/sluice/tls/cert.pem\n"
        "  key: /etc/sluice/tls/key.pem\n"
        "  users: /etc/sluice/users\n"
        "metrics: { listen: 127.0.0.1:9100 }\n",
        key_rsa, key_ed);
}

static void test_design_example(void **state)
{
    char *yaml = design_example();
    sl_config *cfg = parse_ok(yaml);
    free(yaml);

    assert_string_equal(cfg->path, "t.yaml");
    assert_string_equal(cfg->kafka.bootstrap, "127.0.0.1:9092");
    assert_string_equal(cfg->kafka.topic_prefix, "sluice.");
    assert_int_equal(cfg->kafka.partitions, 6);
    assert_int_equal(cfg->kafka.replication_factor, 3);
    assert_int_equal(cfg->dns.n_servers, 1);
    assert_string_equal(cfg->dns.servers[0], "127.0.0.1:5353");
    assert_int_equal(cfg->dns.timeout_ms, 5000);

    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(cfg->routes[0].pattern, "*.test");
    assert_string_equal(cfg->routes[0].host, "127.0.0.1");
    assert_int_equal(cfg->routes[0].port, 2525);

    assert_int_equal(cfg->n_pools, 1);
    const sl_pool *pool = sl_config_pool(cfg, "default");
    assert_non_null(pool);
    assert_int_equal(pool->n_sources, 2);
    assert_string_equal(pool->sources[0].ehlo, "mta1.example.net");
    assert_int_equal(pool->sources[0].weight, 1);
    assert_false(pool->sources[0].has_warmup);
    assert_true(pool->sources[1].has_warmup);
    /* 2026-11-01 is day 20758 of the Unix epoch. */
    assert_int_equal(pool->sources[1].warmup.start_day, 20758);
    assert_int_equal(pool->sources[1].warmup.n_per_day, 4);
    assert_int_equal(pool->sources[1].warmup.per_day[3], 5000);

    assert_int_equal(cfg->n_sites, 2);
    assert_string_equal(cfg->sites[0].name, "google");
    assert_int_equal(cfg->sites[0].n_mx, 2);
    assert_string_equal(cfg->sites[0].mx[1], "*.googlemail.com");
    assert_int_equal(cfg->sites[1].n_domains, 2);
    assert_string_equal(cfg->sites[1].domains[1], "hotmail.com");

    assert_int_equal(cfg->n_shaping, 2);
    assert_string_equal(cfg->shaping[0].site, "default");
    const sl_shaping *g = sl_config_shaping(cfg, "google");
    assert_string_equal(g->site, "google");
    assert_true(g->max_message_rate == 50);
    assert_true(g->burst == 50);
    assert_int_equal(g->max_connections, 5);
    assert_int_equal(g->max_messages_per_connection, 100);
    assert_int_equal(g->tls, SL_TLS_REQUIRED);
    assert_int_equal(g->timeouts.data_block, 180000);
    assert_ptr_equal(sl_config_shaping(cfg, "microsoft"), &cfg->shaping[0]);

    assert_int_equal(cfg->n_backoff, 1);
    assert_string_equal(cfg->backoff[0].match, "^421 4\\.7\\.0");
    assert_string_equal(cfg->backoff[0].site, "google");
    assert_int_equal(cfg->backoff[0].action, SL_BACKOFF_HALVE);
    assert_true(cfg->backoff[0].floor == 1);
    assert_int_equal(cfg->backoff[0].recover_after_ms, 600000);
    assert_int_equal(cfg->backoff[0].duration_ms, 1800000);
    assert_int_equal(cfg->backoff[0].line, 20);

    assert_int_equal(cfg->retry.n_delays, 5);
    assert_int_equal(cfg->retry.delays_ms[3], 7200000);
    assert_int_equal(cfg->retry.expiry_ms, 72LL * 3600000);

    assert_int_equal(cfg->n_dkim, 2);
    assert_string_equal(cfg->dkim[1].selector, "e1");
    assert_string_equal(cfg->dkim[1].algorithm, "ed25519-sha256");
    assert_string_equal(cfg->dkim[0].key_file, key_rsa);

    assert_int_equal(cfg->submit.n_listen, 2);
    assert_string_equal(cfg->submit.listen[1], "0.0.0.0:465 tls");
    assert_string_equal(cfg->submit.users, "/etc/sluice/users");
    assert_int_equal(cfg->submit.max_message_size, 25 * 1024 * 1024);
    assert_int_equal(cfg->submit.max_recipients, 100);
    assert_string_equal(cfg->metrics.listen, "127.0.0.1:9100");

    assert_int_equal(cfg->sender.max_inflight, 5000);
    assert_non_null(cfg->sender.instance_id);
    assert_int_equal(cfg->scheduler.max_job_bytes, 1024 * 1024);
    assert_string_equal(cfg->scheduler.default_pool, "default");

    /* No user bounce rules: none at all. The built-in table and the
     * catch-all live in common/trouble.c, after the operator's rules; a
     * catch-all here would hide the table (issue #18). */
    assert_int_equal(cfg->n_bounce_rules, 0);

    sl_config_free(cfg);
}

static void test_sample_file(void **state)
{
    sl_config *cfg = NULL;
    char *err = NULL;
    char *path = xasprintf("%s/config/sluice.yaml", SLUICE_TEST_DATA);
    int rc = sl_config_load(path, &cfg, &err);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg->path, path);
    assert_int_equal(cfg->n_sites, 2);
    assert_int_equal(cfg->n_dkim, 0);
    sl_config_free(cfg);
    free(path);

    rc = sl_config_load("/nonexistent/sluice.yaml", &cfg, &err);
    assert_int_equal(rc, SL_ECONFIG);
    assert_non_null(strstr(err, "/nonexistent/sluice.yaml: cannot open"));
    free(err);
}

static void test_unknown_key_message(void **state)
{
    char *err = parse_err("sites:\n"
                          "  google: { domains: [gmail.com] }\n"
                          "shaping:\n"
                          "  google:\n"
                          "    max_connections: 3\n"
                          "    max_mesage_rate: 50/s\n");
    assert_string_equal(err, "t.yaml:6: unknown key 'shaping.google.max_mesage_rate' (did you "
                             "mean 'max_message_rate'?)");
    free(err);
}

static const struct err_case {
    const char *name;
    const char *yaml;
    const char *expect; /* substring of the message, "t.yaml:LINE: ..." */
} err_cases[] = {
    {"top-level typo", "kafka: {}\nshapng: {}\n",
     "t.yaml:2: unknown key 'shapng' (did you mean 'shaping'?)"},
    {"unknown key, no suggestion", "kafka:\n  zzzzzzzzzz: 1\n",
     "t.yaml:2: unknown key 'kafka.zzzzzzzzzz'"},
    {"wrong type: integer", "kafka:\n  partitions: many\n",
     "t.yaml:2: key 'kafka.partitions': 'many' is not an integer"},
    {"wrong type: list for string", "kafka:\n\n  bootstrap: [a, b]\n",
     "t.yaml:3: key 'kafka.bootstrap': expected a string"},
    {"integer out of range", "kafka:\n  partitions: 0\n",
     "t.yaml:2: key 'kafka.partitions': 0 is out of range"},
    {"section is a list", "retry:\n  - 1m\n", "t.yaml:2: key 'retry': expected a mapping"},
    {"bad duration", "retry:\n  expiry: 3 weeks\n",
     "t.yaml:2: key 'retry.expiry': '3 weeks' is not a duration"},
    {"bad retry delay", "retry:\n  delays: [1m,\n     5x]\n", "t.yaml:3: key 'retry.delays[1]'"},
    {"duplicate retry delay", "retry:\n  delays: [1m, 60s]\n",
     "t.yaml:2: key 'retry.delays[1]': 60s is listed twice"},
    {"bad rate", "shaping:\n  default:\n    max_message_rate: fast\n",
     "t.yaml:3: key 'shaping.default.max_message_rate': 'fast' is not a rate"},
    {"rate too small", "shaping:\n  default:\n    max_message_rate: 1e-300/s\n",
     "t.yaml:3: key 'shaping.default.max_message_rate': '1e-300/s' is out of range"},
    {"rate too large", "shaping:\n  default:\n    max_message_rate: 1e308/s\n",
     "t.yaml:3: key 'shaping.default.max_message_rate': '1e308/s' is out of range"},
    {"burst too large", "shaping:\n  default:\n    max_message_rate: 10/s\n    burst: 1e30\n",
     "t.yaml:4: key 'shaping.default.burst': '1e30' is out of range"},
    {"burst below one", "shaping:\n  default:\n    burst: 0.001\n",
     "t.yaml:3: key 'shaping.default.burst': '0.001' is out of range"},
    {"limit rate too small",
     "limits:\n  - { tenant: t, max_message_rate: 1/year }\n",
     "t.yaml:2: key 'limits[0].max_message_rate': '1/year' is not a rate"},
    {"limit rate out of range",
     "limits:\n  - { tenant: t, max_message_rate: 0.5/d }\n",
     "t.yaml:2: key 'limits[0].max_message_rate': '0.5/d' is out of range"},
    {"backoff floor out of range", "backoff:\n  - { match: x, floor: 1e-9/s }\n",
     "t.yaml:2: key 'backoff[0].floor': '1e-9/s' is out of range"},
    {"submit command_timeout 0", "submit:\n  command_timeout: 0\n",
     "t.yaml:2: key 'submit.command_timeout': must be longer than zero"},
    {"submit auth_workers 0", "submit:\n  auth_workers: 0\n",
     "t.yaml:2: key 'submit.auth_workers': 0 is out of range"},
    {"bad timeout", "shaping:\n  default:\n    timeouts: { connect: 0 }\n",
     "t.yaml:3: key 'shaping.default.timeouts.connect': must be longer than zero"},
    {"unknown timeout", "shaping:\n  default:\n    timeouts:\n      conect: 5s\n",
     "t.yaml:4: unknown key 'shaping.default.timeouts.conect' (did you mean 'connect'?)"},
    {"bad tls", "shaping:\n  default: { tls: maybe }\n",
     "t.yaml:2: key 'shaping.default.tls': 'maybe' is not one of"},
    {"bad ip", "pools:\n  p:\n    - ip: 300.1.1.1\n      ehlo: a.example\n",
     "t.yaml:3: key 'pools.p[0].ip': '300.1.1.1' is not an IPv4 or IPv6 address"},
    {"missing ehlo", "pools:\n  p:\n    - ip: 10.0.0.1\n",
     "t.yaml:3: key 'pools.p[0].ehlo': required"},
    {"empty pool", "pools:\n  p: []\n", "t.yaml:2: key 'pools.p': expected a non-empty list"},
    {"pool ip twice",
     "pools:\n  a:\n    - { ip: 10.0.0.1, ehlo: a }\n  b:\n    - { ip: 10.0.0.2, ehlo: b }\n    - "
     "{ ip: 10.0.0.1, ehlo: c }\nscheduler: { default_pool: a }\n",
     "t.yaml:6: key 'pools.b[1].ip': address 10.0.0.1 is already in pool 'a'"},
    {"pool ipv6 twice",
     "pools:\n  default:\n    - { ip: '2001:db8::1', ehlo: a }\n    - { ip: '2001:db8:0::1', ehlo: "
     "b }\n",
     "t.yaml:4: key 'pools.default[1].ip': address 2001:db8::1 is already in pool 'default'"},
    {"duplicate pool name",
     "pools:\n  default:\n    - { ip: 10.0.0.1, ehlo: a }\n  default:\n    - { ip: 10.0.0.2, ehlo: "
     "b }\n",
     "t.yaml:4: key 'pools.default': defined twice (first at line 2)"},
    {"duplicate site name",
     "sites:\n  google: { domains: [gmail.com] }\n  google: { domains: [x.com] }\n",
     "t.yaml:3: key 'sites.google': defined twice (first at line 2)"},
    {"site without patterns", "sites:\n  google: {}\n",
     "t.yaml:2: key 'sites.google': a site needs mx or domains"},
    {"bad warmup date",
     "pools:\n  default:\n    - ip: 10.0.0.1\n      ehlo: a\n      warmup: { start: 2026-02-30, "
     "per_day: [1] }\n",
     "t.yaml:5: key 'pools.default[0].warmup.start': '2026-02-30' is not a date"},
    {"bad socks5", "pools:\n  default:\n    - { ip: 10.0.0.1, ehlo: a, socks5: proxy }\n",
     "t.yaml:3: key 'pools.default[0].socks5': 'proxy' is not host:port"},
    {"shaping for undefined site",
     "sites:\n  google: { domains: [gmail.com] }\nshaping:\n  gogle: { max_connections: 2 }\n",
     "t.yaml:4: key 'shaping.gogle': site 'gogle' is not defined in sites (did you mean "
     "'google'?)"},
    {"backoff for undefined site", "backoff:\n  - match: '^421'\n    site: yahoo\n",
     "t.yaml:3: key 'backoff[0].site': site 'yahoo' is not defined"},
    {"backoff without match", "backoff:\n  - { action: suspend }\n",
     "t.yaml:2: key 'backoff[0].match': required"},
    {"backoff bad regex", "backoff:\n  - match: 'ok'\n  - match: '4(21'\n",
     "t.yaml:3: key 'backoff[1].match': invalid regular expression '4(21'"},
    {"backoff bad action", "backoff:\n  - { match: x, action: explode }\n",
     "t.yaml:2: key 'backoff[0].action': 'explode' is not one of"},
    {"backoff bad floor", "backoff:\n  - { match: x, floor: 0/s }\n",
     "t.yaml:2: key 'backoff[0].floor': rate must be above zero"},
    {"bounce bad regex", "bounce_rules:\n  - { match: '[5', class: policy }\n",
     "t.yaml:2: key 'bounce_rules[0].match': invalid regular expression"},
    {"bounce bad class", "bounce_rules:\n  - { match: '^5', class: spam-blok }\n",
     "t.yaml:2: key 'bounce_rules[0].class': 'spam-blok' is not a bounce class; did you mean "
     "'spam-block'?"},
    {"bounce bad bool", "bounce_rules:\n  - { match: '^5', class: policy, hard: perhaps }\n",
     "t.yaml:2: key 'bounce_rules[0].hard': 'perhaps' is not true or false"},
    {"bad route port", "routes:\n  \"*.test\": 127.0.0.1:99999\n",
     "t.yaml:2: key 'routes.*.test': '127.0.0.1:99999' is not host:port"},
    {"bad dns server", "dns:\n  servers:\n    - 127.0.0.1:53\n    - dns.example\n",
     "t.yaml:4: key 'dns.servers[1]': 'dns.example' is not an IP address"},
    {"bad metrics listen", "metrics:\n  listen: 9100\n",
     "t.yaml:2: key 'metrics.listen': '9100' is not host:port"},
    {"bad submit mode", "submit:\n  listen: ['0.0.0.0:587 smtps']\n",
     "t.yaml:2: key 'submit.listen[0]': mode 'smtps' is not one of"},
    {"tls listener without cert", "submit:\n  listen: ['0.0.0.0:465 tls']\n",
     "t.yaml:2: key 'submit.listen': a tls listener needs submit.cert"},
    {"bad size", "submit:\n  max_message_size: 25 parsecs\n",
     "t.yaml:2: key 'submit.max_message_size': '25 parsecs' is not a size"},
    {"dkim key unreadable",
     "dkim:\n  - domain: example.net\n    selector: s1\n    key: /nonexistent/s1.pem\n",
     "t.yaml:4: key 'dkim[0].key': cannot read '/nonexistent/s1.pem'"},
    {"dkim bad algorithm",
     "dkim:\n  - { domain: example.net, selector: s1, key: /dev/null, algorithm: md5 }\n",
     "t.yaml:2: key 'dkim[0].algorithm': 'md5' is not one of"},
    {"bad security protocol", "kafka:\n  security_protocol: tls\n",
     "t.yaml:2: key 'kafka.security_protocol': 'tls' is not one of"},
    {"default pool missing", "pools:\n  bulk:\n    - { ip: 10.0.0.1, ehlo: a }\n",
     "t.yaml:1: key 'scheduler.default_pool': pool 'default' is not defined"},
    {"default pool typo",
     "pools:\n  bulk:\n    - { ip: 10.0.0.1, ehlo: a }\nscheduler:\n  default_pool: blk\n",
     "t.yaml:5: key 'scheduler.default_pool': pool 'blk' is not defined"},
    {"yaml: unclosed flow", "kafka:\n  bootstrap: [a, b\nretry: {}\n",
     "t.yaml:3: YAML syntax error"},
    {"yaml: bad indent", "kafka:\n  bootstrap: a\n partitions: 3\n", "t.yaml:3: YAML syntax error"},
    {"yaml: tab", "kafka:\n\tbootstrap: a\n", "t.yaml:2: YAML syntax error"},
    {"yaml: two documents", "kafka: {}\n---\nretry: {}\n", "t.yaml:2: more than one YAML document"},
    {"top level not a map", "- kafka\n", "t.yaml:1: the top level must be a mapping"},
    {"alias to unknown anchor", "kafka: *nope\n", "t.yaml:1: unknown alias"},
    {"webhook: no secret", "webhook:\n  endpoints:\n    - { url: http://h/x }\n",
     "t.yaml:3: key 'webhook.endpoints[0]': exactly one of secret, secret_file is required"},
    {"webhook: bad url", "webhook:\n  endpoints:\n    - { url: ftp://h/x, secret: s }\n",
     "t.yaml:3: key 'webhook.endpoints[0].url': 'ftp://h/x' is not an http"},
    {"webhook: batch_size 0",
     "webhook:\n  endpoints:\n    - url: http://h/x\n      secret: s\n      batch_size: 0\n",
     "t.yaml:5: key 'webhook.endpoints[0].batch_size': 0 is out of range"},
    {"webhook: unknown key", "webhook:\n  endpoints:\n    - { url: http://h/, secret: s, tries: 3 }\n",
     "t.yaml:3: unknown key 'webhook.endpoints[0].tries'"},
};

static void test_errors(void **state)
{
    for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
        const struct err_case *tc = &err_cases[i];
        sl_config *cfg = NULL;
        char *err = NULL;
        int rc = sl_config_parse("t.yaml", tc->yaml, strlen(tc->yaml), &cfg, &err);
        if (rc != SL_ECONFIG)
            fail_msg("case '%s': accepted", tc->name);
        assert_null(cfg);
        if (!err || !strstr(err, tc->expect))
            fail_msg("case '%s':\n  got:  %s\n  want: %s", tc->name, err ? err : "(null)",
                     tc->expect);
        free(err);
    }
}

static void test_secret_never_printed(void **state)
{
    char *err = parse_err("kafka:\n  sasl_password: [hunter2]\n");
    assert_non_null(strstr(err, "t.yaml:2: key 'kafka.sasl_password'"));
    assert_null(strstr(err, "hunter2"));
    free(err);
    err = parse_err("kafka:\n  sasl_password: { hunter2: x }\n");
    assert_null(strstr(err, "hunter2"));
    free(err);
}

static void test_shaping_inheritance(void **state)
{
    sl_config *cfg = parse_ok("sites:\n"
                              "  google: { domains: [gmail.com] }\n"
                              "  yahoo: { mx: ['*.yahoodns.net'] }\n"
                              "  ms: { domains: [outlook.com] }\n"
                              "shaping:\n"
                              "  yahoo: { max_connections: 2 }\n" /* before default: order free */
                              "  default:\n"
                              "    max_message_rate: 20/s\n"
                              "    burst: 40\n"
                              "    max_messages_per_connection: 7\n"
                              "    tls: disabled\n"
                              "    timeouts: { connect: 10s, dot: 15m }\n"
                              "  google:\n"
                              "    max_message_rate: 3000/min\n"
                              "    timeouts: { connect: 5s }\n"
                              "  ms: { max_message_rate: unlimited }\n");
    const sl_shaping *d = sl_config_shaping(cfg, NULL);
    assert_ptr_equal(d, &cfg->shaping[0]);
    assert_string_equal(d->site, "default");
    assert_true(d->max_message_rate == 20);
    assert_true(d->burst == 40);
    assert_int_equal(d->max_connections, 10);
    assert_int_equal(d->timeouts.connect, 10000);
    assert_int_equal(d->timeouts.greeting, 300000);

    const sl_shaping *y = sl_config_shaping(cfg, "yahoo");
    assert_int_equal(y->max_connections, 2);
    assert_true(y->max_message_rate == 20); /* inherited, burst too */
    assert_true(y->burst == 40);
    assert_int_equal(y->max_messages_per_connection, 7);
    assert_int_equal(y->tls, SL_TLS_DISABLED);
    assert_int_equal(y->timeouts.dot, 900000);

    const sl_shaping *g = sl_config_shaping(cfg, "google");
    assert_true(g->max_message_rate == 50);
    assert_true(g->burst == 50); /* its own rate: one second of it */
    assert_int_equal(g->timeouts.connect, 5000);
    assert_int_equal(g->timeouts.dot, 900000);

    const sl_shaping *m = sl_config_shaping(cfg, "ms");
    assert_true(m->max_message_rate == 0);
    assert_true(m->burst == 1);

    assert_ptr_equal(sl_config_shaping(cfg, "nosuchsite"), d);
    sl_config_free(cfg);

    /* An empty file: every default. */
    cfg = parse_ok("");
    d = sl_config_shaping(cfg, "x");
    assert_int_equal(cfg->n_shaping, 1);
    assert_true(d->max_message_rate == 100);
    assert_true(d->burst == 100);
    assert_int_equal(d->max_connections, 10);
    assert_int_equal(d->max_messages_per_connection, 100);
    assert_int_equal(d->tls, SL_TLS_OPPORTUNISTIC);
    assert_int_equal(d->timeouts.connect, 30000);
    assert_int_equal(d->timeouts.greeting, 300000);
    assert_int_equal(d->timeouts.data, 120000);
    assert_int_equal(d->timeouts.dot, 600000);
    assert_int_equal(d->timeouts.quit, 120000);
    assert_int_equal(d->timeouts.idle, 30000);
    assert_int_equal(cfg->kafka.session_timeout_ms, 10000);
    assert_int_equal(cfg->kafka.heartbeat_interval_ms, 3000);
    assert_int_equal(cfg->kafka.commit_interval_ms, 1000);
    assert_int_equal(cfg->kafka.linger_ms, -1);
    assert_false(cfg->kafka.static_membership);
    assert_string_equal(cfg->kafka.bootstrap, "127.0.0.1:9092");
    assert_int_equal(cfg->dns.tries, 2);
    assert_int_equal(cfg->retry.n_delays, 5);
    assert_int_equal(cfg->retry.delays_ms[0], 60000);
    assert_int_equal(cfg->retry.delays_ms[4], 6 * 3600000);
    assert_int_equal(cfg->submit.max_connections, 20000);
    assert_int_equal(cfg->submit.max_connections_per_ip, 20);
    assert_int_equal(cfg->submit.idle_timeout_ms, 300000);
    assert_null(cfg->metrics.listen);
    assert_int_equal(cfg->sender.drain_timeout_ms, 30000);
    assert_int_equal(cfg->sender.destination_backoff_initial_ms, 1000);
    assert_int_equal(cfg->sender.destination_backoff_max_ms, 300000);
    assert_int_equal(cfg->sender.max_inflight_per_destination, 0);
    assert_int_equal(cfg->sender.idle_state_timeout_ms, 600000);
    assert_true(cfg->sender.ledger);
    assert_int_equal(cfg->sender.ledger_lookback_ms, 1800000);
    assert_int_equal(cfg->sender.ledger_max_entries, 1000000);
    assert_null(cfg->sender.tls_ca_file);
    assert_int_equal(cfg->sender.tls_fallback_expiry_ms, 3600000);
    assert_int_equal(cfg->scheduler.max_buffered, 100000);
    assert_string_equal(cfg->scheduler.default_tenant, "default");
    assert_int_equal(cfg->n_pools, 0);
    sl_config_free(cfg);
}

static void test_values(void **state)
{
    sl_config *cfg = parse_ok("submit:\n"
                              "  max_message_size: 10MB\n"
                              "  max_connections: 50000\n"
                              "scheduler:\n"
                              "  max_job_bytes: 512k\n"
                              "kafka:\n"
                              "  security_protocol: SASL_SSL\n"
                              "  sasl_password: 12345\n"
                              "  linger_ms: 0\n"
                              "  static_membership: true\n"
                              "backoff:\n"
                              "  - { match: '^421', action: suspend, duration: 1h }\n"
                              "  - { match: '^550 5\\.7\\.1', action: disable_ip, site: default }\n"
                              "bounce_rules:\n"
                              "  - { match: 'quota', class: mailbox-full, hard: no }\n"
                              "dns: { servers: ['::1', '[::1]:5353', 127.0.0.1], timeout: 250ms }\n"
                              "pools:\n"
                              "  default:\n"
                              "    - { ip: 10.0.0.1, ehlo: a, weight: 3, socks5: '[::1]:1080' }\n");
    assert_int_equal(cfg->submit.max_message_size, 10 * 1024 * 1024);
    assert_int_equal(cfg->submit.max_connections, 50000);
    assert_int_equal(cfg->scheduler.max_job_bytes, 512 * 1024);
    assert_string_equal(cfg->kafka.security_protocol, "sasl_ssl");
    assert_string_equal(cfg->kafka.sasl_password, "12345");
    assert_int_equal(cfg->kafka.linger_ms, 0);
    assert_true(cfg->kafka.static_membership);
    assert_int_equal(cfg->backoff[0].action, SL_BACKOFF_SUSPEND);
    assert_int_equal(cfg->backoff[0].duration_ms, 3600000);
    assert_int_equal(cfg->backoff[0].line, 12);
    assert_null(cfg->backoff[0].site);
    assert_int_equal(cfg->backoff[1].action, SL_BACKOFF_DISABLE_IP);
    assert_string_equal(cfg->backoff[1].site, "default");
    assert_string_equal(cfg->bounce_rules[0].class_name, "mailbox-full");
    assert_false(cfg->bounce_rules[0].hard);
    assert_int_equal(cfg->n_bounce_rules, 1); /* the built-in table is the sender's */
    assert_int_equal(cfg->dns.n_servers, 3);
    assert_int_equal(cfg->dns.timeout_ms, 250);
    const sl_source *s = sl_config_source(cfg, "10.0.0.1");
    assert_non_null(s);
    assert_int_equal(s->weight, 3);
    assert_string_equal(s->socks5, "[::1]:1080");
    assert_null(sl_config_source(cfg, "10.0.0.2"));
    sl_config_free(cfg);

    /* Anchors and aliases are expanded; null values mean "default". */
    cfg = parse_ok("sites:\n"
                   "  a: &pat { domains: [a.example] }\n"
                   "  b: *pat\n"
                   "metrics:\n"
                   "kafka:\n"
                   "  partitions: ~\n");
    assert_int_equal(cfg->n_sites, 2);
    assert_string_equal(cfg->sites[1].domains[0], "a.example");
    assert_null(cfg->metrics.listen);
    assert_int_equal(cfg->kafka.partitions, 6);
    sl_config_free(cfg);
}

static void test_env_override(void **state)
{
    setenv("SLUICE_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092", 1);
    setenv("SLUICE_KAFKA_TOPIC_PREFIX", "prod.", 1);
    setenv("SLUICE_KAFKA_SASL_USERNAME", "u", 1);
    setenv("SLUICE_KAFKA_SASL_PASSWORD", "p", 1);
    setenv("SLUICE_METRICS_LISTEN", "0.0.0.0:9200", 1);
    setenv("SLUICE_DNS_SERVERS", "10.0.0.53,10.0.0.54:5353", 1);
    setenv("SLUICE_SENDER_WORKERS", "3", 1);
    setenv("SLUICE_INSTANCE_ID", "sender-7", 1);
    sl_config *cfg = parse_ok("kafka: { bootstrap: file:9092, topic_prefix: file. }\n"
                              "dns: { servers: [127.0.0.1] }\n"
                              "sender: { workers: 1, instance_id: file }\n");
    assert_string_equal(cfg->kafka.bootstrap, "kafka-0:9092,kafka-1:9092");
    assert_string_equal(cfg->kafka.topic_prefix, "prod.");
    assert_string_equal(cfg->kafka.sasl_username, "u");
    assert_string_equal(cfg->kafka.sasl_password, "p");
    assert_string_equal(cfg->metrics.listen, "0.0.0.0:9200");
    assert_int_equal(cfg->dns.n_servers, 2);
    assert_string_equal(cfg->dns.servers[1], "10.0.0.54:5353");
    assert_int_equal(cfg->sender.workers, 3);
    assert_string_equal(cfg->sender.instance_id, "sender-7");
    char *t = sl_config_topic(cfg, "jobs");
    assert_string_equal(t, "prod.jobs");
    free(t);
    sl_config_free(cfg);

    cfg = sl_config_default();
    assert_string_equal(cfg->kafka.bootstrap, "kafka-0:9092,kafka-1:9092");
    sl_config_free(cfg);

    setenv("SLUICE_SENDER_WORKERS", "lots", 1);
    char *err = parse_err("kafka: {}\n");
    assert_non_null(strstr(err, "environment: key 'sender.workers': SLUICE_SENDER_WORKERS='lots'"));
    free(err);
    /* The built-in default skips a bad value rather than failing. */
    cfg = sl_config_default();
    assert_int_equal(cfg->sender.workers, 0);
    sl_config_free(cfg);
    setenv("SLUICE_SENDER_WORKERS", "1", 1);
    setenv("SLUICE_DNS_SERVERS", "10.0.0.1,resolver", 1);
    err = parse_err("kafka: {}\n");
    assert_non_null(strstr(err, "key 'dns.servers': SLUICE_DNS_SERVERS item 'resolver'"));
    free(err);

    static const char *const vars[] = {"SLUICE_KAFKA_BOOTSTRAP",     "SLUICE_KAFKA_TOPIC_PREFIX",
                                       "SLUICE_KAFKA_SASL_USERNAME", "SLUICE_KAFKA_SASL_PASSWORD",
                                       "SLUICE_METRICS_LISTEN",      "SLUICE_DNS_SERVERS",
                                       "SLUICE_SENDER_WORKERS",      "SLUICE_INSTANCE_ID"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

/* Kubernetes turns static membership on for the schedulers alone, through
 * their pod spec, while every daemon loads the one sluice.yaml. */
static void test_env_static_membership(void **state)
{
    setenv("SLUICE_KAFKA_STATIC_MEMBERSHIP", "true", 1);
    sl_config *cfg = parse_ok("kafka: { static_membership: false }\n");
    assert_true(cfg->kafka.static_membership);
    sl_config_free(cfg);
    setenv("SLUICE_KAFKA_STATIC_MEMBERSHIP", "sometimes", 1);
    char *err = parse_err("kafka: {}\n");
    assert_non_null(strstr(err, "environment: key 'kafka.static_membership': "
                                "SLUICE_KAFKA_STATIC_MEMBERSHIP='sometimes'"));
    free(err);
    unsetenv("SLUICE_KAFKA_STATIC_MEMBERSHIP");
    cfg = parse_ok("kafka: {}\n");
    assert_false(cfg->kafka.static_membership);
    sl_config_free(cfg);
}

static void test_retry_suffix(void **state)
{
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {60000, "retry.1m"},    {5000, "retry.5s"},     {7200000, "retry.2h"},
        {90000, "retry.90s"},   {86400000, "retry.1d"}, {172800000, "retry.2d"},
        {1800000, "retry.30m"}, {1500, "retry.1500ms"}, {21600000, "retry.6h"},
        {5400000, "retry.90m"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = sl_config_retry_suffix(cases[i].ms);
        if (strcmp(s, cases[i].want))
            fail_msg("%lld ms: got %s, want %s", (long long)cases[i].ms, s, cases[i].want);
        free(s);
    }
}

static void test_default_config(void **state)
{
    sl_config *cfg = sl_config_default();
    assert_string_equal(cfg->path, "(built-in)");
    assert_string_equal(cfg->kafka.bootstrap, "127.0.0.1:9092");
    const sl_pool *p = sl_config_pool(cfg, "default");
    assert_non_null(p);
    assert_int_equal(p->n_sources, 1);
    assert_string_equal(p->sources[0].ip, "127.0.0.1");
    assert_string_equal(p->sources[0].ehlo, "localhost");
    assert_ptr_equal(sl_config_source(cfg, "127.0.0.1"), &p->sources[0]);
    assert_null(sl_config_pool(cfg, "bulk"));
    const sl_route *r = sl_config_route(cfg, "anything.example.com");
    assert_non_null(r);
    assert_string_equal(r->host, "127.0.0.1");
    assert_int_equal(r->port, 2525);
    assert_true(sl_config_shaping(cfg, "google")->max_message_rate == 1000);
    assert_int_equal(cfg->retry.n_delays, 3);
    assert_int_equal(cfg->retry.delays_ms[0], 1000);
    assert_int_equal(cfg->retry.delays_ms[2], 30000);
    assert_int_equal(cfg->retry.expiry_ms, 3600000);
    char *t = sl_config_topic(cfg, "jobs");
    assert_string_equal(t, "sluice.jobs");
    free(t);
    sl_config_free(cfg);

    cfg = sl_config_load_or_exit(NULL);
    assert_string_equal(cfg->path, "(built-in)");
    sl_config_free(cfg);
}

static void test_routes_first_match(void **state)
{
    sl_config *cfg = parse_ok("routes:\n"
                              "  \"special.test\": 10.0.0.9:25\n"
                              "  \"*.test\": 127.0.0.1:2525\n"
                              "  \"*\": smarthost.example\n");
    assert_int_equal(sl_config_route(cfg, "special.test")->port, 25);
    assert_int_equal(sl_config_route(cfg, "A.TEST")->port, 2525);
    const sl_route *r = sl_config_route(cfg, "gmail.com");
    assert_string_equal(r->host, "smarthost.example");
    assert_int_equal(r->port, 25);
    sl_config_free(cfg);
}

static void test_webhook(void **state)
{
    sl_config *cfg = parse_ok("webhook:\n"
                              "  endpoints:\n"
                              "    - { url: https://hooks.example/a, secret: k1 }\n"
                              "    - url: http://127.0.0.1:8080/b\n"
                              "      secret: k2\n"
                              "      batch_size: 7\n"
                              "      timeout: 2s\n");
    assert_int_equal(cfg->webhook.n_endpoints, 2);
    assert_string_equal(cfg->webhook.endpoints[0].url, "https://hooks.example/a");
    assert_string_equal(cfg->webhook.endpoints[0].secret, "k1");
    assert_int_equal(cfg->webhook.endpoints[0].batch_size, 100);
    assert_int_equal(cfg->webhook.endpoints[0].timeout_ms, 10000);
    assert_int_equal(cfg->webhook.endpoints[1].batch_size, 7);
    assert_int_equal(cfg->webhook.endpoints[1].timeout_ms, 2000);
    sl_config_free(cfg);
    /* A secret must never be echoed, even when its value is the problem. */
    char *err = parse_err("webhook:\n  endpoints:\n    - { url: http://h/, secret: [hunter2] }\n");
    assert_non_null(strstr(err, "t.yaml:3: key 'webhook.endpoints[0].secret'"));
    assert_null(strstr(err, "hunter2"));
    free(err);
    cfg = parse_ok("kafka: {}\n");
    assert_int_equal(cfg->webhook.n_endpoints, 0);
    sl_config_free(cfg);
}

static void test_limits(void **state)
{
    sl_config *cfg = parse_ok("limits:\n"
                              "  - { tenant: acme, max_message_rate: 100/s }\n"
                              "  - { tenant: acme, campaign: \"*\", max_message_rate: 10/s, burst: 3 }\n"
                              "  - { campaign: spring-*, max_message_rate: 60/min }\n");
    assert_int_equal(cfg->n_limits, 3);
    assert_string_equal(cfg->limits[0].tenant, "acme");
    assert_null(cfg->limits[0].campaign);
    assert_true(cfg->limits[0].max_message_rate == 100);
    assert_true(cfg->limits[0].burst == 100);
    assert_string_equal(cfg->limits[1].campaign, "*");
    assert_true(cfg->limits[1].burst == 3);
    assert_null(cfg->limits[2].tenant);
    assert_true(cfg->limits[2].max_message_rate == 1);
    assert_true(cfg->limits[2].burst == 1);
    assert_int_equal(cfg->limits[2].line, 4);
    sl_config_free(cfg);
    const struct {
        const char *yaml, *expect;
    } bad[] = {
        {"limits:\n  - { max_message_rate: 5/s }\n",
         "t.yaml:2: key 'limits[0]': needs a tenant or a campaign"},
        {"limits:\n  - { tenant: a }\n", "t.yaml:2: key 'limits[0].max_message_rate': required"},
        {"limits:\n  - { tenant: a, max_message_rate: unlimited }\n",
         "t.yaml:2: key 'limits[0].max_message_rate': 'unlimited' is not a rate"},
        {"limits:\n  - { tenant: a, max_message_rate: 1/s, rate: 2 }\n",
         "t.yaml:2: unknown key 'limits[0].rate'"},
        {"limits: { tenant: a }\n", "t.yaml:1: key 'limits'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *err = parse_err(bad[i].yaml);
        if (!strstr(err, bad[i].expect))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].expect);
        free(err);
    }
}

extern char *program_invocation_short_name;

static void test_load_or_exit(void **state)
{
    char *path = xasprintf("%s/bad.yaml", tmpdir);
    write_file(path, "kafka:\n  partitions: -1\n");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        sl_config_load_or_exit(path);
        _exit(0);
    }
    close(fds[1]);
    char buf[512] = {0};
    size_t n = 0;
    ssize_t r;
    while (n < sizeof(buf) - 1 && (r = read(fds[0], buf + n, sizeof(buf) - 1 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    /* The program names itself: here the test binary. */
    char *want = xasprintf("%s: config error: %s:2: key 'kafka.partitions'",
                           program_invocation_short_name, path);
    if (!strstr(buf, want))
        fail_msg("stderr: %s", buf);
    free(want);
    unlink(path);
    free(path);
}

/* YAML anchors and aliases: a document that makes the loader compare or
 * copy without bound ("billion laughs", or many aliases each looked up
 * among many anchors) is refused early, at the line where it goes over. */
static void test_alias_bomb(void **state)
{
    sl_buf y = SL_BUF_INIT;
    for (int i = 0; i < 60000; i++)
        sl_buf_printf(&y, "x%d: &a%d v\n", i, i);
    for (int i = 0; i < 40000; i++)
        sl_buf_printf(&y, "y%d: *a0\n", i);
    sl_config *cfg = NULL;
    char *err = NULL;
    clock_t t0 = clock();
    int rc = sl_config_parse("t.yaml", y.data, y.len, &cfg, &err);
    double cpu = (double)(clock() - t0) / CLOCKS_PER_SEC;
    assert_int_equal(rc, SL_ECONFIG);
    assert_null(cfg);
    if (!err || !strstr(err, "t.yaml:1001: more than 1000 anchors"))
        fail_msg("got: %s", err ? err : "(null)");
    free(err);
    /* The brief's bound: it must fail within a few seconds, not minutes. */
    assert_true(cpu < 5.0);
    sl_buf_free(&y);

    /* Many aliases of one anchor. */
    sl_buf_printf(&y, "a: &a [1, 2]\nb: [");
    for (int i = 0; i < 20000; i++)
        sl_buf_puts(&y, "*a, ");
    sl_buf_puts(&y, "*a]\n");
    rc = sl_config_parse("t.yaml", y.data, y.len, &cfg, &err);
    assert_int_equal(rc, SL_ECONFIG);
    if (!err || !strstr(err, "t.yaml:2: more than 10000 aliases"))
        fail_msg("got: %s", err ? err : "(null)");
    free(err);
    sl_buf_free(&y);
}

static void test_sender_destinations(void **state)
{
    (void)state;
    sl_config *cfg = parse_ok("sender:\n  max_inflight: 100\n  destination_backoff_initial: 250ms\n"
                              "  destination_backoff_max: 1m\n  max_inflight_per_destination: 10\n"
                              "  idle_state_timeout: 30s\n  tls_ca_file: /etc/ssl/ca.pem\n"
                              "  tls_fallback_expiry: 10m\n"
                              "shaping:\n  default: { tls: verify }\n");
    assert_string_equal(cfg->sender.tls_ca_file, "/etc/ssl/ca.pem");
    assert_int_equal(cfg->sender.tls_fallback_expiry_ms, 600000);
    assert_int_equal(cfg->shaping[0].tls, SL_TLS_VERIFY);
    assert_int_equal(cfg->sender.destination_backoff_initial_ms, 250);
    assert_int_equal(cfg->sender.destination_backoff_max_ms, 60000);
    assert_int_equal(cfg->sender.max_inflight_per_destination, 10);
    assert_int_equal(cfg->sender.idle_state_timeout_ms, 30000);
    sl_config_free(cfg);
    cfg = parse_ok("sender:\n  ledger: false\n  ledger_lookback: 2h\n  ledger_max_entries: 5000\n");
    assert_false(cfg->sender.ledger);
    assert_int_equal(cfg->sender.ledger_lookback_ms, 7200000);
    assert_int_equal(cfg->sender.ledger_max_entries, 5000);
    sl_config_free(cfg);
    static const struct {
        const char *yaml, *want;
    } bad[] = {
        {"sender:\n  destination_backoff_initial: 10s\n  destination_backoff_max: 1s\n",
         ":3: key 'sender.destination_backoff_max': must not be shorter than"},
        {"sender:\n  destination_backoff_initial: 0s\n",
         "key 'sender.destination_backoff_initial': must be longer than zero"},
        {"sender:\n  destination_backoff_max: soon\n",
         "key 'sender.destination_backoff_max': 'soon' is not a duration"},
        {"sender:\n  max_inflight: 10\n  max_inflight_per_destination: 11\n",
         ":3: key 'sender.max_inflight_per_destination': must not exceed sender.max_inflight (10)"},
        {"sender:\n  max_inflight_per_destination: 0\n", "max_inflight_per_destination"},
        {"sender:\n  idle_state_timeout: 0s\n",
         "key 'sender.idle_state_timeout': must be longer than zero"},
        {"sender:\n  ledger_lookback: 0s\n",
         "key 'sender.ledger_lookback': must be longer than zero"},
        {"sender:\n  ledger_max_entries: 10\n", "ledger_max_entries"},
        {"sender:\n  ledger: maybe\n", "sender.ledger"},
        {"sender:\n  tls_fallback_expiry: 0s\n",
         "key 'sender.tls_fallback_expiry': must be longer than zero"},
        {"sender:\n  tls_ca_file: ''\n", "key 'sender.tls_ca_file': must not be empty"},
        {"shaping:\n  default: { tls: verified }\n",
         "'verified' is not one of opportunistic, required, verify, disabled"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *err = parse_err(bad[i].yaml);
        if (!strstr(err, bad[i].want))
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, bad[i].want);
        free(err);
    }
}

/* The key table is consistent: names are unique and each section's keys
 * are together (the walk takes a section at a time), every entry has its
 * doc, the structured ones their walk and free, a list its count, an
 * environment variable only a type the overrides read, no two entries one
 * field, and every default parses with the parser the file's value goes
 * through. */
static void test_config_key_table(void **state)
{
    (void)state;
    size_t n;
    const cfg_key *keys = cfg__keys(&n);
    assert_true(n > 50);
    assert_int_equal(sl_config_key_count(), n);
    for (size_t i = 0; i < n; i++) {
        const cfg_key *k = &keys[i];
        const char *dot = strchr(k->name, '.');
        size_t seclen = dot ? (size_t)(dot - k->name) : strlen(k->name);
        if (!k->doc || !k->doc[0])
            fail_msg("%s: no doc", k->name);
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(keys[j].name, k->name))
                fail_msg("%s: listed twice", k->name);
            /* An entry copied from another whose F() was left unchanged. */
            if (k->type != CFG_CUSTOM && keys[j].type != CFG_CUSTOM && keys[j].off == k->off)
                fail_msg("%s: stored where %s is", k->name, keys[j].name);
            /* An earlier key of the same section must be the one before. */
            if (j + 1 < i && !strncmp(keys[j].name, k->name, seclen) &&
                (keys[j].name[seclen] == '.' || !keys[j].name[seclen]) &&
                strncmp(keys[i - 1].name, k->name, seclen))
                fail_msg("%s: its section's keys are not together", k->name);
        }
        if (k->type == CFG_CUSTOM && (!k->walk || !k->free))
            fail_msg("%s: a structured key needs walk and free", k->name);
        if (k->type != CFG_CUSTOM && !dot)
            fail_msg("%s: a plain key belongs to a section", k->name);
        if (k->type == CFG_STRLIST && !k->off_n)
            fail_msg("%s: a list needs its count", k->name);
        if (k->env && k->type != CFG_STR && k->type != CFG_STRLIST && k->type != CFG_INT &&
            k->type != CFG_U32 && k->type != CFG_BOOL)
            fail_msg("%s: the environment overrides only strings, lists, integers and booleans",
                     k->name);
        if (k->env && strncmp(k->env, "SLUICE_", 7))
            fail_msg("%s: variable %s is not SLUICE_*", k->name, k->env);
        int64_t x;
        uint64_t size;
        bool ok = true;
        if (k->def && (k->type == CFG_INT || k->type == CFG_U32))
            ok = cfg__parse_int(k->def, &x) == 0;
        else if (k->def && k->type == CFG_DURATION)
            ok = sl_parse_duration_ms(k->def, &x) == 0;
        else if (k->def && k->type == CFG_SIZE)
            ok = cfg__parse_size(k->def, &size) == 0;
        else if (k->def && k->type == CFG_BOOL)
            ok = !strcmp(k->def, "true") || !strcmp(k->def, "false");
        if (!ok)
            fail_msg("%s: default '%s' does not parse", k->name, k->def);
        sl_config_key_doc d;
        assert_int_equal(sl_config_key_get(i, &d), 0);
        assert_string_equal(d.name, k->name);
    }
    sl_config_key_doc d;
    assert_int_equal(sl_config_key_get(n, &d), SL_EINVAL);
}

/* A value a probe writes for key k, and what its field must then hold. */
static const char *probe_value(const cfg_key *k, int64_t *want)
{
    static char buf[64];
    static const struct {
        const char *name, *value;
    } special[] = {
        {"kafka.security_protocol", "SASL_SSL"}, /* lowercased */
        {"dns.servers", "10.9.9.9"},
        {"submit.listen", "127.0.0.1:0 starttls"},
        {"metrics.listen", "127.0.0.1:0"},
        {"unsubscribe.url", "https://unsub.example.net"},
        {"verp.domain", "Bounce.Example.NET"},      /* lowercased */
        {"inbound.domains", "Bounce.Example.NET"},  /* lowercased */
        {"inbound.fbl", "FBL@Example.NET"},         /* lowercased */
        {"inbound.listen", "127.0.0.1:0"},
    };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        if (!strcmp(k->name, special[i].name))
            return special[i].value;
    int64_t def = 0;
    switch (k->type) {
    case CFG_INT:
    case CFG_U32:
        /* One more than the default stays clear of the cross-key checks. */
        if (k->def)
            def = strtoll(k->def, NULL, 10);
        *want = def + 1 >= k->min && def + 1 <= k->max ? def + 1 : k->min;
        snprintf(buf, sizeof buf, "%lld", (long long)*want);
        return buf;
    case CFG_DURATION:
        if (k->def)
            assert_int_equal(sl_parse_duration_ms(k->def, &def), 0);
        *want = def + 1000;
        snprintf(buf, sizeof buf, "%lldms", (long long)*want);
        return buf;
    case CFG_SIZE:
        *want = 3072;
        return "3k";
    case CFG_BOOL:
        *want = k->def && !strcmp(k->def, "true") ? 0 : 1;
        return *want ? "true" : "false";
    default:
        return "probe";
    }
}

/* verp.tenants gives a tenant its own bounce domain; the others use
 * verp.domain, and without it no VERP at all. */
static void test_config_verp_tenants(void **state)
{
    (void)state;
    sl_config *cfg = parse_ok("verp:\n  domain: bounce.example.net\n"
                              "  tenants:\n    acme: Bounce.Acme.Example\n    beta: b.beta.test\n");
    assert_string_equal(sl_config_verp_domain(cfg, "acme"), "bounce.acme.example");
    assert_string_equal(sl_config_verp_domain(cfg, "beta"), "b.beta.test");
    assert_string_equal(sl_config_verp_domain(cfg, "other"), "bounce.example.net");
    assert_string_equal(sl_config_verp_domain(cfg, NULL), "bounce.example.net");
    sl_config_free(cfg);
    cfg = parse_ok("verp:\n  tenants: { acme: bounce.acme.example }\n");
    assert_string_equal(sl_config_verp_domain(cfg, "acme"), "bounce.acme.example");
    assert_null(sl_config_verp_domain(cfg, "other"));
    sl_config_free(cfg);
    char *err = parse_err("verp:\n  tenants:\n    acme: \"not a domain\"\n");
    assert_non_null(strstr(err, "verp.tenants.acme"));
    free(err);
    err = parse_err("verp:\n  tenants:\n    acme:\n");
    assert_non_null(strstr(err, "needs a domain"));
    free(err);
}

/* Each plain key, written in a file or (when it has one) its SLUICE_*
 * variable, lands in the field its entry names: the offsets, types and
 * sections of the table are right. */
static void test_config_unsubscribe(void **state)
{
    (void)state;
    static const char *const bad[] = {"http://u.example.net", "https://u.example.net/",
                                      "https://u.example.net/?a=b", "https://"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_buf y = SL_BUF_INIT;
        sl_buf_printf(&y, "unsubscribe:\n  url: \"%s\"\n", bad[i]);
        char *err = parse_err((const char *)y.data);
        assert_non_null(strstr(err, "t.yaml:2: key 'unsubscribe.url': must be an https URL"));
        free(err);
        sl_buf_free(&y);
    }
    char *err = parse_err("unsubscribe:\n  mailto_domain: b.example.net\n");
    assert_non_null(strstr(err, "key 'unsubscribe.mailto_domain': needs unsubscribe.url"));
    free(err);
    sl_config *cfg = parse_ok("unsubscribe:\n  url: https://u.example.net/x\n"
                              "  mailto_domain: b.example.net\n");
    assert_string_equal(cfg->unsubscribe.url, "https://u.example.net/x");
    assert_string_equal(cfg->unsubscribe.mailto_domain, "b.example.net");
    sl_config_free(cfg);
    cfg = parse_ok("{}\n");
    assert_null(cfg->unsubscribe.url); /* off unless configured */
    sl_config_free(cfg);
}

static void test_config_key_probe(void **state)
{
    (void)state;
    size_t n;
    const cfg_key *keys = cfg__keys(&n);
    for (size_t i = 0; i < n; i++) {
        const cfg_key *k = &keys[i];
        if (k->type == CFG_CUSTOM)
            continue;
        int64_t want = 0;
        const char *value = probe_value(k, &want);
        const char *dot = strchr(k->name, '.');
        for (int from_env = 0; from_env < 2; from_env++) {
            if (from_env && !k->env)
                continue;
            sl_buf y = SL_BUF_INIT;
            if (from_env) {
                setenv(k->env, value, 1);
                sl_buf_printf(&y, "{}\n");
            } else {
                sl_buf_printf(&y, "%.*s:\n  %s: \"%s\"\n", (int)(dot - k->name), k->name, dot + 1,
                              value);
                /* cert and key go together */
                if (!strcmp(dot + 1, "cert") || !strcmp(dot + 1, "key"))
                    sl_buf_printf(&y, "  %s: other\n", strcmp(dot + 1, "cert") ? "cert" : "key");
                /* a mailto address only alongside the one-click URL */
                if (!strcmp(k->name, "unsubscribe.mailto_domain"))
                    sl_buf_printf(&y, "  url: https://unsub.example.net\n");
            }
            sl_config *cfg = parse_ok((const char *)y.data);
            sl_buf_free(&y);
            const void *field = (const char *)cfg + k->off;
            switch (k->type) {
            case CFG_STR: {
                const char *got = *(char *const *)field;
                assert_non_null(got);
                if (k->flags & CFG_LOWER)
                    assert_true(!strcasecmp(got, value) && strcmp(got, value));
                else
                    assert_string_equal(got, value);
                break;
            }
            case CFG_STRLIST:
                assert_int_equal(*(const size_t *)((const char *)cfg + k->off_n), 1);
                if (k->flags & CFG_LOWER)
                    assert_true(!strcasecmp((*(char **const *)field)[0], value) &&
                                strcmp((*(char **const *)field)[0], value));
                else
                    assert_string_equal((*(char **const *)field)[0], value);
                break;
            case CFG_INT:
                assert_int_equal(*(const int *)field, want);
                break;
            case CFG_U32:
                assert_int_equal(*(const uint32_t *)field, want);
                break;
            case CFG_BOOL:
                assert_int_equal(*(const bool *)field, want);
                break;
            case CFG_DURATION:
                assert_int_equal(*(const int64_t *)field, want);
                break;
            case CFG_SIZE:
                assert_int_equal(*(const uint64_t *)field, want);
                break;
            case CFG_CUSTOM:
                break;
            }
            sl_config_free(cfg);
            if (from_env)
                unsetenv(k->env);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_design_example),
        cmocka_unit_test(test_sample_file),
        cmocka_unit_test(test_unknown_key_message),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_secret_never_printed),
        cmocka_unit_test(test_shaping_inheritance),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_env_override),
        cmocka_unit_test(test_env_static_membership),
        cmocka_unit_test(test_retry_suffix),
        cmocka_unit_test(test_default_config),
        cmocka_unit_test(test_sender_destinations),
        cmocka_unit_test(test_routes_first_match),
        cmocka_unit_test(test_load_or_exit),
        cmocka_unit_test(test_webhook),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_config_key_table),
        cmocka_unit_test(test_config_key_probe),
        cmocka_unit_test(test_config_unsubscribe),
        cmocka_unit_test(test_config_verp_tenants),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
