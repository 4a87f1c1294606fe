/* Unit tests for common/dns: the resolver against a loopback DNS server we
 * control (tests/integration/dnstest.py run as a child process), so every
 * answer, failure and TTL is known and the server's per-name query counter
 * proves what was cached and what was coalesced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "dns.h"
#include "metrics.h"
#include "util.h"

/* ---- the DNS server child --------------------------------------------- */

static const char *records_json =
    "{"
    "\"tie.test\": {\"MX\": [[10, \"a.tie.test\"], [10, \"b.tie.test\"], [20, \"c.tie.test\"],"
    "               [5, \"z.tie.test\"]], \"ttl\": 300},"
    "\"example.test\": {\"MX\": [[10, \"mx1.example.test\"]], \"ttl\": 300},"
    "\"mx1.example.test\": {\"A\": [\"127.0.0.1\", \"127.0.0.2\"], \"AAAA\": [\"::1\"], \"ttl\": "
    "120},"
    "\"v4only.test\": {\"A\": [\"127.0.0.5\"], \"ttl\": 120},"
    "\"nullmx.test\": {\"MX\": [[0, \".\"]], \"ttl\": 300},"
    "\"noemail.test\": {\"A\": [\"127.0.0.3\"]},"
    "\"servfail.test\": \"SERVFAIL\","
    "\"refused.test\": \"REFUSED\","
    "\"timeout.test\": \"TIMEOUT\","
    "\"zero.test\": {\"MX\": [[10, \"mx.zero.test\"]], \"ttl\": 0},"
    "\"short.test\": {\"MX\": [[10, \"mx.short.test\"]], \"ttl\": 1},"
    "\"co.test\": {\"MX\": [[10, \"mx.co.test\"]]},"
    "\"e1.test\": {\"MX\": [[10, \"mx.e1.test\"]]},"
    "\"e2.test\": {\"MX\": [[10, \"mx.e2.test\"]]},"
    "\"e3.test\": {\"MX\": [[10, \"mx.e3.test\"]]},"
    "\"hit.test\": {\"MX\": [[10, \"mx.hit.test\"]]},"
    "\"alias.test\": {\"CNAME\": \"mx1.example.test\"},"
    "\"_mta-sts.txt.test\": {\"TXT\": [\"v=STSv1; id=20261205\", \"v=spf1 include:a-fairly-long-include-name.example.test include:a-fairly-long-include-name.example.test include:a-fairly-long-include-name.example.test include:a-fairly-long-include-name.example.test include:a-fairly-long-include-name.example.test include:a-fairly-long-include-name.example.test -all\"], \"ttl\": 200},"
    "\"big.test\": {\"MX\": [%s]}"
    "}";

static pid_t srv_pid;
static FILE *srv_in, *srv_out;
static int srv_port;

static const char *dnstest_path(void)
{
    static char path[4096];
    const char *src = getenv("SLUICE_SRC");
    if (src) {
        snprintf(path, sizeof path, "%s/tests/integration/dnstest.py", src);
    } else {
        /* SLUICE_TEST_DATA is <source>/tests/data. */
        snprintf(path, sizeof path, "%s", SLUICE_TEST_DATA);
        char *p = strrchr(path, '/');
        if (p)
            snprintf(p, sizeof path - (size_t)(p - path), "/integration/dnstest.py");
    }
    return path;
}

static int srv_start(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    /* 40 MX records: too big for a 512-byte UDP answer, so over TCP. */
    sl_buf big = SL_BUF_INIT;
    for (int i = 0; i < 40; i++)
        sl_buf_printf(&big, "%s[%d, \"mx%02d.a-rather-long-name-for-the-big-test.test\"]",
                      i ? "," : "", 10 + i, i);
    char *json = xasprintf(records_json, big.data);
    sl_buf_free(&big);

    int to_child[2], from_child[2];
    if (pipe(to_child) || pipe(from_child))
        return -1;
    srv_pid = fork();
    if (srv_pid < 0)
        return -1;
    if (srv_pid == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        close(to_child[1]);
        close(from_child[0]);
        execlp("python3", "python3", dnstest_path(), "--serve", "--records", json, (char *)NULL);
        perror("exec python3");
        _exit(127);
    }
    free(json);
    close(to_child[0]);
    close(from_child[1]);
    srv_in = fdopen(to_child[1], "w");
    srv_out = fdopen(from_child[0], "r");
    char line[128];
    if (!fgets(line, sizeof line, srv_out) || sscanf(line, "PORT %d", &srv_port) != 1) {
        fprintf(stderr, "dnstest.py did not start (%s)\n", dnstest_path());
        return -1;
    }
    return 0;
}

static int srv_stop(void **state)
{
    if (srv_in) {
        fputs("quit\n", srv_in);
        fclose(srv_in);
    }
    if (srv_out)
        fclose(srv_out);
    if (srv_pid > 0)
        waitpid(srv_pid, NULL, 0);
    return 0;
}

/* Queries the server saw for name (and type, or NULL for all). */
static int srv_count(const char *name, const char *type)
{
    fprintf(srv_in, "count %s %s\n", name, type ? type : "");
    fflush(srv_in);
    char line[64];
    assert_non_null(fgets(line, sizeof line, srv_out));
    return atoi(line);
}

/* ---- a resolver on a fresh loop per test ------------------------------- */

typedef struct env {
    uv_loop_t loop;
    sl_dns *dns;
    sl_config cfg;
    char server[64];
    char *servers[1];
} env;

static void env_init_opts(env *e, int64_t timeout_ms, int tries)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    snprintf(e->server, sizeof e->server, "127.0.0.1:%d", srv_port);
    e->servers[0] = e->server;
    e->cfg.dns.servers = e->servers;
    e->cfg.dns.n_servers = 1;
    e->cfg.dns.timeout_ms = timeout_ms;
    e->cfg.dns.tries = tries;
    char *err = NULL;
    e->dns = sl_dns_new(&e->loop, &e->cfg, &err);
    if (!e->dns)
        fail_msg("sl_dns_new: %s", err);
}

static void env_init(env *e)
{
    env_init_opts(e, 1000, 2);
}

static void env_done(env *e)
{
    sl_dns_free(e->dns);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

static void on_tick(uv_timer_t *t)
{
}

/* Run the loop until *counter reaches want or ms pass. */
static void run_until(env *e, const int *counter, int want, int64_t ms)
{
    uv_timer_t tick;
    uv_timer_init(&e->loop, &tick);
    uv_timer_start(&tick, on_tick, 20, 20);
    int64_t deadline = sl_mono_ms() + ms;
    while (*counter < want && sl_mono_ms() < deadline)
        uv_run(&e->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
}

static void run_for(env *e, int64_t ms)
{
    int never = 0;
    run_until(e, &never, 1, ms);
}

/* What a callback saw, copied out (the result dies with the callback). */
typedef struct got {
    int calls;
    sl_dns_status status;
    char domain[256];
    char hosts[64][128];
    uint16_t prefs[64];
    size_t n;
    uint32_t ttl;
    bool cached;
} got;

static void on_mx(const sl_dns_mx_result *r, void *arg)
{
    got *g = arg;
    g->calls++;
    g->status = r->status;
    snprintf(g->domain, sizeof g->domain, "%s", r->domain);
    g->n = r->n_hosts;
    for (size_t i = 0; i < r->n_hosts && i < 64; i++) {
        snprintf(g->hosts[i], sizeof g->hosts[i], "%s", r->hosts[i].host);
        g->prefs[i] = r->hosts[i].preference;
    }
    g->ttl = r->ttl;
    g->cached = r->cached;
}

static void on_addr(const sl_dns_addr_result *r, void *arg)
{
    got *g = arg;
    g->calls++;
    g->status = r->status;
    snprintf(g->domain, sizeof g->domain, "%s", r->host);
    g->n = r->n_addrs;
    for (size_t i = 0; i < r->n_addrs && i < 64; i++)
        snprintf(g->hosts[i], sizeof g->hosts[i], "%s", r->addrs[i].text);
    g->ttl = r->ttl;
    g->cached = r->cached;
}

static void on_txt(const sl_dns_txt_result *r, void *arg)
{
    got *g = arg;
    g->calls++;
    g->status = r->status;
    snprintf(g->domain, sizeof g->domain, "%s", r->name);
    g->n = r->n_txt;
    for (size_t i = 0; i < r->n_txt && i < 64; i++) {
        snprintf(g->hosts[i], sizeof g->hosts[i], "%s", r->txt[i]);
        g->prefs[i] = (uint16_t)strlen(r->txt[i]); /* the record's length */
    }
    g->ttl = r->ttl;
    g->cached = r->cached;
}

static got mx_once(env *e, const char *domain)
{
    got g;
    memset(&g, 0, sizeof g);
    assert_int_equal(sl_dns_mx(e->dns, domain, on_mx, &g), 0);
    run_until(e, &g.calls, 1, 5000);
    assert_int_equal(g.calls, 1);
    return g;
}

static got addr_once(env *e, const char *host)
{
    got g;
    memset(&g, 0, sizeof g);
    assert_int_equal(sl_dns_addr(e->dns, host, on_addr, &g), 0);
    run_until(e, &g.calls, 1, 5000);
    assert_int_equal(g.calls, 1);
    return g;
}

/* ---- tests ---------------------------------------------------------- */

static void test_mx_order_and_ties(void **state)
{
    env e;
    env_init(&e);
    int ab = 0, ba = 0;
    for (int i = 0; i < 60; i++) {
        got g = mx_once(&e, "tie.test");
        assert_int_equal(g.status, SL_DNS_OK);
        assert_int_equal(g.n, 4);
        assert_string_equal(g.hosts[0], "z.tie.test");
        assert_int_equal(g.prefs[0], 5);
        assert_string_equal(g.hosts[3], "c.tie.test");
        assert_int_equal(g.prefs[1], 10);
        assert_int_equal(g.prefs[2], 10);
        if (!strcmp(g.hosts[1], "a.tie.test") && !strcmp(g.hosts[2], "b.tie.test"))
            ab++;
        else if (!strcmp(g.hosts[1], "b.tie.test") && !strcmp(g.hosts[2], "a.tie.test"))
            ba++;
        else
            fail_msg("unexpected middle: %s %s", g.hosts[1], g.hosts[2]);
    }
    /* 60 fair coin flips all alike: 2^-59. */
    assert_true(ab > 0);
    assert_true(ba > 0);
    /* Every one after the first came from the cache. */
    assert_int_equal(srv_count("tie.test", "MX"), 1);
    env_done(&e);
}

static void test_mx_statuses(void **state)
{
    static const struct {
        const char *name;
        sl_dns_status status;
        size_t n;
        bool temporary;
    } cases[] = {
        {"example.test", SL_DNS_OK, 1, false},
        {"nullmx.test", SL_DNS_NULL_MX, 0, false},
        {"noemail.test", SL_DNS_NODATA, 0, false},
        {"does-not-exist.test", SL_DNS_NXDOMAIN, 0, false},
        {"servfail.test", SL_DNS_SERVFAIL, 0, true},
        {"refused.test", SL_DNS_SERVFAIL, 0, true},
    };
    env e;
    env_init(&e);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        got g = mx_once(&e, cases[i].name);
        if (g.status != cases[i].status)
            fail_msg("%s: got %s, want %s", cases[i].name, sl_dns_status_name(g.status),
                     sl_dns_status_name(cases[i].status));
        assert_int_equal(g.n, cases[i].n);
        assert_int_equal(sl_dns_status_temporary(g.status), cases[i].temporary);
        assert_string_equal(g.domain, cases[i].name);
    }
    env_done(&e);
}

static void test_negative_cached_by_soa(void **state)
{
    env e;
    env_init(&e);
    got g = mx_once(&e, "Missing.TEST.");
    assert_int_equal(g.status, SL_DNS_NXDOMAIN);
    assert_string_equal(g.domain, "missing.test");
    /* The server's SOA minimum is 60 s. */
    assert_true(g.ttl > 50 && g.ttl <= 60);
    g = mx_once(&e, "missing.test");
    assert_int_equal(g.status, SL_DNS_NXDOMAIN);
    assert_true(g.cached);
    assert_int_equal(srv_count("missing.test", "MX"), 1);

    g = mx_once(&e, "noemail.test");
    assert_int_equal(g.status, SL_DNS_NODATA);
    int before = srv_count("noemail.test", "MX");
    g = mx_once(&e, "noemail.test");
    assert_int_equal(g.status, SL_DNS_NODATA);
    assert_true(g.cached);
    assert_int_equal(srv_count("noemail.test", "MX"), before);
    env_done(&e);
}

static void test_servfail_not_cached(void **state)
{
    env e;
    env_init_opts(&e, 500, 1);
    got g = mx_once(&e, "servfail.test");
    assert_int_equal(g.status, SL_DNS_SERVFAIL);
    assert_int_equal(g.ttl, 0);
    int n1 = srv_count("servfail.test", "MX");
    assert_true(n1 >= 1);
    assert_int_equal(sl_dns_cache_size(e.dns), 0);
    g = mx_once(&e, "servfail.test");
    assert_int_equal(g.status, SL_DNS_SERVFAIL);
    assert_false(g.cached);
    assert_true(srv_count("servfail.test", "MX") > n1);
    env_done(&e);
}

static void test_timeout(void **state)
{
    env e;
    env_init_opts(&e, 200, 2);
    int64_t t0 = sl_mono_ms();
    got g = mx_once(&e, "timeout.test");
    int64_t took = sl_mono_ms() - t0;
    assert_int_equal(g.status, SL_DNS_TIMEOUT);
    assert_true(sl_dns_status_temporary(g.status));
    /* Two tries of 200 ms (c-ares doubles the second): well under 5 s. */
    assert_true(took >= 150 && took < 3000);
    assert_int_equal(srv_count("timeout.test", "MX"), 2);
    assert_int_equal(sl_dns_cache_size(e.dns), 0);
    env_done(&e);
}

static void test_ttl_cache(void **state)
{
    env e;
    env_init(&e);
    got g = mx_once(&e, "example.test");
    assert_int_equal(g.status, SL_DNS_OK);
    assert_false(g.cached);
    assert_true(g.ttl > 290 && g.ttl <= 300);
    int n = srv_count("example.test", "MX");
    g = mx_once(&e, "EXAMPLE.test");
    assert_true(g.cached);
    assert_string_equal(g.hosts[0], "mx1.example.test");
    assert_int_equal(srv_count("example.test", "MX"), n);

    /* TTL 0: never cached. */
    mx_once(&e, "zero.test");
    g = mx_once(&e, "zero.test");
    assert_false(g.cached);
    assert_int_equal(srv_count("zero.test", "MX"), 2);

    /* TTL 1: cached, then expired. */
    mx_once(&e, "short.test");
    g = mx_once(&e, "short.test");
    assert_true(g.cached);
    assert_int_equal(srv_count("short.test", "MX"), 1);
    run_for(&e, 1100);
    g = mx_once(&e, "short.test");
    assert_false(g.cached);
    assert_int_equal(srv_count("short.test", "MX"), 2);
    env_done(&e);
}

static void test_coalescing(void **state)
{
    env e;
    env_init(&e);
    got g[5];
    memset(g, 0, sizeof g);
    int calls = 0;
    for (int i = 0; i < 5; i++)
        assert_int_equal(sl_dns_mx(e.dns, "co.test", on_mx, &g[i]), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(g[i].calls, 0);
    int64_t deadline = sl_mono_ms() + 5000;
    while (sl_mono_ms() < deadline) {
        calls = 0;
        for (int i = 0; i < 5; i++)
            calls += g[i].calls;
        if (calls == 5)
            break;
        run_for(&e, 20);
    }
    assert_int_equal(calls, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(g[i].status, SL_DNS_OK);
        assert_string_equal(g[i].hosts[0], "mx.co.test");
    }
    assert_int_equal(srv_count("co.test", "MX"), 1);
    env_done(&e);
}

/* Many names at once: the table grows, every lookup completes once. */
typedef struct many {
    int calls;
    int nx;
} many;

static void on_mx_many(const sl_dns_mx_result *r, void *arg)
{
    many *m = arg;
    m->calls++;
    if (r->status == SL_DNS_NXDOMAIN)
        m->nx++;
}

static void test_many_in_flight(void **state)
{
    env e;
    env_init(&e);
    many m = {0, 0};
    char name[64];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "many-%d.test", i);
        assert_int_equal(sl_dns_mx(e.dns, name, on_mx_many, &m), 0);
        assert_int_equal(sl_dns_mx(e.dns, name, on_mx_many, &m), 0); /* coalesced */
    }
    run_until(&e, &m.calls, 600, 10000);
    assert_int_equal(m.calls, 600);
    assert_int_equal(m.nx, 600);
    assert_int_equal(sl_dns_cache_size(e.dns), 300);
    assert_int_equal(srv_count("many-299.test", "MX"), 1);
    env_done(&e);
}

static void test_addr(void **state)
{
    env e;
    env_init(&e);
    got g = addr_once(&e, "mx1.example.test");
    assert_int_equal(g.status, SL_DNS_OK);
    assert_int_equal(g.n, 3);
    assert_string_equal(g.hosts[0], "127.0.0.1");
    assert_string_equal(g.hosts[1], "127.0.0.2");
    assert_string_equal(g.hosts[2], "::1");
    assert_true(g.ttl > 110 && g.ttl <= 120);
    g = addr_once(&e, "mx1.example.test");
    assert_true(g.cached);
    assert_int_equal(srv_count("mx1.example.test", "A"), 1);
    assert_int_equal(srv_count("mx1.example.test", "AAAA"), 1);

    /* An A record and no AAAA: OK with the IPv4 address. */
    g = addr_once(&e, "v4only.test");
    assert_int_equal(g.status, SL_DNS_OK);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.hosts[0], "127.0.0.5");

    /* Through a CNAME. */
    g = addr_once(&e, "alias.test");
    assert_int_equal(g.status, SL_DNS_OK);
    assert_int_equal(g.n, 3);

    g = addr_once(&e, "no-such-host.test");
    assert_int_equal(g.status, SL_DNS_NXDOMAIN);
    g = addr_once(&e, "tie.test"); /* exists, MX only */
    assert_int_equal(g.status, SL_DNS_NODATA);
    g = addr_once(&e, "servfail.test");
    assert_int_equal(g.status, SL_DNS_SERVFAIL);
    env_done(&e);
}

static void test_addr_ipv6_off(void **state)
{
    env e;
    env_init(&e);
    sl_dns_set_ipv6(e.dns, false);
    got g = addr_once(&e, "noemail.test");
    assert_int_equal(g.status, SL_DNS_OK);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.hosts[0], "127.0.0.3");
    assert_int_equal(srv_count("noemail.test", "AAAA"), 0);
    env_done(&e);
}

static void test_big_answer_over_tcp(void **state)
{
    env e;
    env_init(&e);
    got g = mx_once(&e, "big.test");
    assert_int_equal(g.status, SL_DNS_OK);
    assert_int_equal(g.n, 40);
    for (size_t i = 1; i < g.n; i++)
        assert_true(g.prefs[i - 1] < g.prefs[i]);
    assert_string_equal(g.hosts[0], "mx00.a-rather-long-name-for-the-big-test.test");
    /* Truncated over UDP, asked again over TCP. */
    assert_int_equal(srv_count("big.test", "MX"), 2);
    env_done(&e);
}

static void test_bad_names(void **state)
{
    static const char *bad[] = {
        "",
        ".",
        "a..b",
        ".leading.test",
        "sp ace.test",
        "a123456789012345678901234567890123456789012345678901234567890123.test",
    };
    env e;
    env_init(&e);
    got g;
    memset(&g, 0, sizeof g);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (sl_dns_mx(e.dns, bad[i], on_mx, &g) != SL_EINVAL)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(sl_dns_addr(e.dns, bad[i], on_addr, &g), SL_EINVAL);
    }
    assert_int_equal(sl_dns_mx(e.dns, NULL, on_mx, &g), SL_EINVAL);
    run_for(&e, 50);
    assert_int_equal(g.calls, 0);
    env_done(&e);
}

static void test_cache_hit_is_async(void **state)
{
    env e;
    env_init(&e);
    mx_once(&e, "hit.test");
    got g;
    memset(&g, 0, sizeof g);
    assert_int_equal(sl_dns_mx(e.dns, "hit.test", on_mx, &g), 0);
    assert_int_equal(g.calls, 0); /* not from inside the call */
    run_until(&e, &g.calls, 1, 1000);
    assert_int_equal(g.calls, 1);
    assert_true(g.cached);
    env_done(&e);
}

static void test_cache_bound(void **state)
{
    env e;
    env_init(&e);
    sl_dns_set_cache_max(e.dns, 2);
    mx_once(&e, "e1.test");
    mx_once(&e, "e2.test");
    mx_once(&e, "e1.test"); /* e1 now most recently used */
    mx_once(&e, "e3.test"); /* evicts e2 */
    assert_int_equal(sl_dns_cache_size(e.dns), 2);
    assert_true(mx_once(&e, "e1.test").cached);
    assert_true(mx_once(&e, "e3.test").cached);
    got g = mx_once(&e, "e2.test");
    assert_false(g.cached);
    assert_int_equal(srv_count("e2.test", "MX"), 2);
    sl_dns_cache_clear(e.dns);
    assert_int_equal(sl_dns_cache_size(e.dns), 0);
    env_done(&e);
}

static void test_free_cancels_pending(void **state)
{
    env e;
    env_init_opts(&e, 5000, 1);
    got g1, g2, g3;
    memset(&g1, 0, sizeof g1);
    memset(&g2, 0, sizeof g2);
    memset(&g3, 0, sizeof g3);
    assert_int_equal(sl_dns_mx(e.dns, "timeout.test", on_mx, &g1), 0);
    assert_int_equal(sl_dns_addr(e.dns, "timeout.test", on_addr, &g2), 0);
    run_for(&e, 50);
    mx_once(&e, "example.test");
    assert_int_equal(sl_dns_mx(e.dns, "example.test", on_mx, &g3), 0); /* queued hit */
    sl_dns_free(e.dns);
    assert_int_equal(g1.calls, 1);
    assert_int_equal(g1.status, SL_DNS_CANCELLED);
    assert_int_equal(g2.calls, 1);
    assert_int_equal(g2.status, SL_DNS_CANCELLED);
    assert_int_equal(g3.calls, 1);
    assert_int_equal(g3.status, SL_DNS_CANCELLED);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e.loop), 0);
}

/* sl_dns_free() from inside a resolver callback is postponed safely. */
typedef struct free_in_cb {
    sl_dns *dns;
    int calls;
} free_in_cb;

static void on_mx_free(const sl_dns_mx_result *r, void *arg)
{
    free_in_cb *f = arg;
    f->calls++;
    sl_dns_free(f->dns);
    /* After free, new lookups are refused at once. */
    got g;
    memset(&g, 0, sizeof g);
    assert_int_equal(sl_dns_mx(f->dns, "example.test", on_mx, &g), SL_ECLOSED);
}

static void test_free_from_callback(void **state)
{
    env e;
    env_init(&e);
    free_in_cb f = {e.dns, 0};
    assert_int_equal(sl_dns_mx(e.dns, "tie.test", on_mx_free, &f), 0);
    run_until(&e, &f.calls, 1, 5000);
    assert_int_equal(f.calls, 1);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e.loop), 0);
}

static void test_metrics(void **state)
{
    const char *nx = "type=\"mx\",result=\"nxdomain\"";
    double lookups = sl_metric_get("sluice_dns_lookups_total", nx);
    double hits = sl_metric_get("sluice_dns_cache_hits_total", "type=\"mx\"");
    env e;
    env_init(&e);
    mx_once(&e, "metrics-nx.test");
    mx_once(&e, "metrics-nx.test");
    assert_true(sl_metric_get("sluice_dns_lookups_total", nx) == lookups + 2);
    assert_true(sl_metric_get("sluice_dns_cache_hits_total", "type=\"mx\"") == hits + 1);
    env_done(&e);
}

static void test_config_errors(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char *servers[] = {"not an address"};
    cfg.dns.servers = servers;
    cfg.dns.n_servers = 1;
    char *err = NULL;
    assert_null(sl_dns_new(&loop, &cfg, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "dns.servers"));
    free(err);

    /* Bare and bracketed IPv6, with and without a port, are accepted; so
     * is no server at all (the system resolver). */
    char *v6[] = {"::1", "[::1]:5353", "[::1]", "127.0.0.1"};
    cfg.dns.servers = v6;
    cfg.dns.n_servers = 4;
    sl_dns *dns = sl_dns_new(&loop, &cfg, &err);
    assert_non_null(dns);
    sl_dns_free(dns);
    cfg.dns.n_servers = 0;
    dns = sl_dns_new(&loop, &cfg, &err);
    assert_non_null(dns);
    sl_dns_free(dns);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_status_names(void **state)
{
    assert_string_equal(sl_dns_status_name(SL_DNS_OK), "ok");
    assert_string_equal(sl_dns_status_name(SL_DNS_NULL_MX), "null_mx");
    assert_string_equal(sl_dns_status_name(SL_DNS_CANCELLED), "cancelled");
    assert_string_equal(sl_dns_status_name((sl_dns_status)99), "unknown");
    assert_false(sl_dns_status_temporary(SL_DNS_NXDOMAIN));
    assert_false(sl_dns_status_temporary(SL_DNS_NULL_MX));
    assert_true(sl_dns_status_temporary(SL_DNS_TIMEOUT));
}

/* TXT: each record whole, a record longer than 255 bytes (several
 * character strings) joined; NODATA and NXDOMAIN as for MX; cached. */
static void test_txt(void **state)
{
    (void)state;
    env e;
    env_init(&e);
    got g;
    memset(&g, 0, sizeof g);
    assert_int_equal(sl_dns_txt(e.dns, "_MTA-STS.txt.test.", on_txt, &g), 0);
    run_until(&e, &g.calls, 1, 5000);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, SL_DNS_OK);
    assert_string_equal(g.domain, "_mta-sts.txt.test");
    assert_int_equal(g.n, 2);
    bool sts = false, spf = false;
    for (size_t i = 0; i < g.n; i++) {
        sts |= !strcmp(g.hosts[i], "v=STSv1; id=20261205");
        /* 299 bytes: two character strings on the wire, one record here */
        spf |= g.prefs[i] == 299 && !strncmp(g.hosts[i], "v=spf1 include:", 15);
    }
    assert_true(sts);
    assert_true(spf);
    memset(&g, 0, sizeof g);
    assert_int_equal(sl_dns_txt(e.dns, "_mta-sts.txt.test", on_txt, &g), 0);
    run_until(&e, &g.calls, 1, 5000);
    assert_true(g.cached);
    memset(&g, 0, sizeof g);
    assert_int_equal(sl_dns_txt(e.dns, "example.test", on_txt, &g), 0);
    run_until(&e, &g.calls, 1, 5000);
    assert_int_equal(g.status, SL_DNS_NODATA);
    memset(&g, 0, sizeof g);
    assert_int_equal(sl_dns_txt(e.dns, "_mta-sts.nowhere.test", on_txt, &g), 0);
    run_until(&e, &g.calls, 1, 5000);
    assert_int_equal(g.status, SL_DNS_NXDOMAIN);
    env_done(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_order_and_ties),
        cmocka_unit_test(test_mx_statuses),
        cmocka_unit_test(test_negative_cached_by_soa),
        cmocka_unit_test(test_servfail_not_cached),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_ttl_cache),
        cmocka_unit_test(test_coalescing),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_addr_ipv6_off),
        cmocka_unit_test(test_big_answer_over_tcp),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_cache_hit_is_async),
        cmocka_unit_test(test_cache_bound),
        cmocka_unit_test(test_free_cancels_pending),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_txt),
    };
    return cmocka_run_group_tests(tests, srv_start, srv_stop);
}
