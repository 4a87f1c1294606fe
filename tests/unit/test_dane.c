/*
 * DANE certificate matching (sl_tls_dane in common/tls.c, and the usability
 * filter of sender/dane.c): a real TLS handshake in memory between a server
 * that presents tests/data/dane/server.pem (a certificate for mx.dane.test
 * and the test CA that signed it) and a client given TLSA records computed
 * here from the fixtures, for every usage, selector and matching type. The
 * client trusts only the system store, which knows nothing of the test CA:
 * whatever verifies does so by DANE. tests/data/dane/gen.sh makes the
 * fixtures.
 *
 * The lookups of sender/dane.c against a server we control
 * (tests/integration/dnstest.py as a child process): it signs nothing, so
 * every answer is insecure, which is what these tests need - the caching,
 * the callback's timing and cancellation. Secure and bogus answers are
 * tested end to end in tests/integration/test_sender_dane.py.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dane.h"
#include "tls.h"
#include "util.h"

#define DATA SLUICE_TEST_DATA "/dane/"

enum { LEAF, CA, OTHER };

static X509 *load_cert(int which)
{
    const char *path = which == OTHER ? DATA "other.pem" : which == CA ? DATA "ca.pem" : DATA "server.pem";
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL); /* server.pem: the leaf comes first */
    fclose(f);
    assert_non_null(x);
    return x;
}

/* The association data of a TLSA record for one fixture certificate. */
static size_t tlsa_data(int which, uint8_t selector, uint8_t mtype, unsigned char *out, size_t cap)
{
    X509 *x = load_cert(which);
    unsigned char *der = NULL;
    int n = selector == 0 ? i2d_X509(x, &der) : i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    X509_free(x);
    assert_true(n > 0);
    size_t len;
    if (mtype == 0) {
        assert_true((size_t)n <= cap);
        memcpy(out, der, (size_t)n);
        len = (size_t)n;
    } else {
        unsigned int dl = 0;
        assert_int_equal(EVP_Digest(der, (size_t)n, out, &dl, mtype == 1 ? EVP_sha256() : EVP_sha512(),
                                    NULL),
                         1);
        len = dl;
    }
    OPENSSL_free(der);
    return len;
}

typedef struct handshake {
    int dane_rc;    /* sl_tls_dane's */
    int rc;         /* the client's last sl_tls_read */
    bool done;
    bool verified;
    char why[128];
    char err[256];
} handshake;

/* One pair of contexts for every handshake: loading the system store is
 * the slow part, and each session takes its own reference. */
static SSL_CTX *sctx, *cctx;

static handshake run(const sl_tlsa *recs, size_t n, const char *base)
{
    char *err = NULL;
    if (!sctx)
        sctx = sl_tls_server_ctx(DATA "server.pem", DATA "server.key", &err);
    if (!cctx)
        cctx = sl_tls_client_ctx(NULL, &err);
    assert_non_null(sctx);
    assert_non_null(cctx);
    sl_tls *srv = sl_tls_new(sctx, true, NULL);
    sl_tls *cli = sl_tls_new(cctx, false, base);
    handshake h = {0};
    h.dane_rc = sl_tls_dane(cli, base, recs, n);
    sl_buf cp = SL_BUF_INIT, sp = SL_BUF_INIT;
    for (int round = 0; round < 20 && !sl_tls_handshake_done(cli); round++) {
        sl_buf x = SL_BUF_INIT;
        sl_tls_take_output(cli, &x);
        sl_tls_feed(srv, x.data, x.len);
        sl_buf_reset(&x);
        (void)sl_tls_read(srv, &sp);
        sl_tls_take_output(srv, &x);
        sl_tls_feed(cli, x.data, x.len);
        sl_buf_free(&x);
        h.rc = sl_tls_read(cli, &cp);
        if (h.rc < 0)
            break;
    }
    h.done = sl_tls_handshake_done(cli);
    const char *why = "";
    h.verified = sl_tls_verified(cli, &why);
    snprintf(h.why, sizeof h.why, "%s", why);
    snprintf(h.err, sizeof h.err, "%s", sl_tls_error(cli));
    sl_buf_free(&cp);
    sl_buf_free(&sp);
    sl_tls_free(srv);
    sl_tls_free(cli);
    return h;
}

typedef struct tcase {
    uint8_t usage, selector, mtype;
    int cert;            /* whose data the record carries */
    const char *base;
    bool ok;
} tcase;

/* Every usable combination matches its own certificate (DANE-EE: the
 * server's; DANE-TA: the CA's, which the server sends in its chain). */
static void test_each_usage_selector_mtype(void **state)
{
    (void)state;
    for (uint8_t usage = 2; usage <= 3; usage++)
        for (uint8_t sel = 0; sel <= 1; sel++)
            for (uint8_t mt = 0; mt <= 2; mt++) {
                unsigned char buf[4096];
                sl_tlsa r = {usage, sel, mt, buf, 0};
                r.len = tlsa_data(usage == 3 ? LEAF : CA, sel, mt, buf, sizeof buf);
                assert_true(snd_dane_tlsa_usable(&r));
                handshake h = run(&r, 1, "mx.dane.test");
                if (h.rc < 0 || !h.verified)
                    fail_msg("TLSA %u %u %u: rc %d, %s / %s", usage, sel, mt, h.rc, h.why, h.err);
                assert_int_equal(h.dane_rc, 0);
                assert_true(h.done);
                assert_string_equal(h.why, "ok");
            }
}

static void test_cases(void **state)
{
    (void)state;
    static const tcase cases[] = {
        /* Another certificate's digest: no match, the handshake fails. */
        {3, 1, 1, OTHER, "mx.dane.test", false},
        {3, 0, 2, OTHER, "mx.dane.test", false},
        /* A trust anchor that did not sign the chain. */
        {2, 0, 1, OTHER, "mx.dane.test", false},
        {2, 1, 0, OTHER, "mx.dane.test", false},
        /* DANE-TA checks the name (RFC 7672 3.1.2) ... */
        {2, 1, 1, CA, "wrong.dane.test", false},
        /* ... DANE-EE does not (3.1.1). */
        {3, 1, 1, LEAF, "wrong.dane.test", true},
        /* DANE-EE of the CA, DANE-TA of the leaf as a self-anchor: the
         * EE record names the wrong certificate. */
        {3, 1, 1, CA, "mx.dane.test", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tcase *c = &cases[i];
        unsigned char buf[4096];
        sl_tlsa r = {c->usage, c->selector, c->mtype, buf, 0};
        r.len = tlsa_data(c->cert, c->selector, c->mtype, buf, sizeof buf);
        handshake h = run(&r, 1, c->base);
        assert_int_equal(h.dane_rc, 0);
        if (c->ok) {
            if (h.rc < 0 || !h.verified)
                fail_msg("case %zu: rc %d, %s / %s", i, h.rc, h.why, h.err);
        } else {
            if (h.rc != SL_ETLS || h.done)
                fail_msg("case %zu: expected a failed handshake, rc %d", i, h.rc);
            assert_non_null(strstr(h.err, "certificate verify failed"));
        }
    }
}

/* A set of records matches when any one does. */
static void test_any_record_matches(void **state)
{
    (void)state;
    unsigned char a[64], b[64];
    sl_tlsa recs[2] = {{3, 1, 1, a, 0}, {3, 1, 1, b, 0}};
    recs[0].len = tlsa_data(OTHER, 1, 1, a, sizeof a);
    recs[1].len = tlsa_data(LEAF, 1, 1, b, sizeof b);
    handshake h = run(recs, 2, "mx.dane.test");
    assert_true(h.rc >= 0);
    assert_true(h.verified);
}

/* PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP (RFC 7672 3.1.3), as are
 * unknown selectors and matching types and digests of the wrong length. */
static void test_unusable(void **state)
{
    (void)state;
    unsigned char d[64];
    size_t n = tlsa_data(LEAF, 1, 1, d, sizeof d);
    static const struct {
        uint8_t u, s, m;
        int len_delta;
        bool usable;
    } t[] = {
        {0, 1, 1, 0, false}, {1, 1, 1, 0, false}, {4, 1, 1, 0, false}, {3, 2, 1, 0, false},
        {3, 1, 3, 0, false}, {3, 1, 1, -1, false}, {3, 1, 2, 0, false}, {3, 1, 1, 0, true},
        {2, 1, 1, 0, true},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        sl_tlsa r = {t[i].u, t[i].s, t[i].m, d, (size_t)((int)n + t[i].len_delta)};
        if (snd_dane_tlsa_usable(&r) != t[i].usable)
            fail_msg("row %zu: usable should be %d", i, t[i].usable);
    }
    /* Given only PKIX records, sl_tls_dane refuses them and the session
     * is left to its ordinary verification. */
    sl_tlsa pk[2] = {{0, 1, 1, d, n}, {1, 1, 1, d, n}};
    handshake h = run(pk, 2, "mx.dane.test");
    assert_int_equal(h.dane_rc, SL_EINVAL);
}

/* ---- lookups ---------------------------------------------------------- */

static pid_t srv_pid;
static FILE *srv_in, *srv_out;
static int srv_port;

static int srv_start(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    static char path[4096];
    const char *src = getenv("SLUICE_SRC");
    if (src) {
        snprintf(path, sizeof path, "%s/tests/integration/dnstest.py", src);
    } else {
        snprintf(path, sizeof path, "%s", SLUICE_TEST_DATA); /* <source>/tests/data */
        char *p = strrchr(path, '/');
        if (p)
            snprintf(p, sizeof path - (size_t)(p - path), "/integration/dnstest.py");
    }
    const char *json = "{\"mx.plain.example\": {\"A\": [\"127.0.0.1\"], \"ttl\": 300},"
                       " \"slow.example\": \"TIMEOUT\"}";
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
        execlp("python3", "python3", path, "--serve", "--records", json, (char *)NULL);
        perror("exec python3");
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    srv_in = fdopen(to_child[1], "w");
    srv_out = fdopen(from_child[0], "r");
    char line[128];
    if (!fgets(line, sizeof line, srv_out) || sscanf(line, "PORT %d", &srv_port) != 1) {
        fprintf(stderr, "dnstest.py did not start (%s)\n", path);
        return -1;
    }
    return 0;
}

static int srv_stop(void **state)
{
    (void)state;
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

static int srv_count(const char *name, const char *type)
{
    fprintf(srv_in, "count %s %s\n", name, type);
    fflush(srv_in);
    char line[64];
    assert_non_null(fgets(line, sizeof line, srv_out));
    return atoi(line);
}

typedef struct got {
    int n;
    snd_dane_status status;
    char why[200];
    char qname[200];
} got;

static void on_answer(const snd_dane_answer *a, void *arg)
{
    got *g = arg;
    g->n++;
    g->status = a->status;
    snprintf(g->why, sizeof g->why, "%s", a->why);
    snprintf(g->qname, sizeof g->qname, "%s", a->qname);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void run_until(uv_loop_t *loop, const got *g, int64_t ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 20, 20);
    int64_t end = sl_mono_ms() + ms;
    while (g->n == 0 && sl_mono_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void test_lookups(void **state)
{
    (void)state;
    /* An anchor for a zone nothing here is in: every answer is insecure. */
    char anchor[] = "/tmp/sluice-dane-anchor-XXXXXX";
    int fd = mkstemp(anchor);
    assert_true(fd >= 0);
    const char *ds = "nowhere.example. IN DS 1 13 2 "
                     "0000000000000000000000000000000000000000000000000000000000000000\n";
    assert_int_equal(write(fd, ds, strlen(ds)), (ssize_t)strlen(ds));
    close(fd);
    char fwd[64];
    snprintf(fwd, sizeof fwd, "127.0.0.1:%d", srv_port);
    sl_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.sender.dane_resolver = fwd;
    cfg.sender.dane_trust_anchor = anchor;

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    snd_dane_cache *cache = snd_dane_cache_new(100);
    char *err = NULL;
    snd_dane *d = snd_dane_new(&loop, &cfg, cache, &err);
    if (!d)
        fail_msg("snd_dane_new: %s", err);

    /* Insecure addresses: no DANE, and no TLSA query (RFC 7672 2.2). The
     * callback never runs inside the call. */
    got g = {0};
    assert_int_equal(snd_dane_lookup(d, "MX.Plain.Example.", 25, on_answer, &g), 0);
    assert_int_equal(g.n, 0);
    run_until(&loop, &g, 10000);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.status, SND_DANE_NONE);
    assert_string_equal(g.qname, "_25._tcp.mx.plain.example");
    assert_non_null(strstr(g.why, "insecure"));
    assert_int_equal(srv_count("_25._tcp.mx.plain.example", ""), 0);
    int a_queries = srv_count("mx.plain.example", "A");
    assert_true(a_queries >= 1);

    /* Again, from another resolver sharing the cache (another worker):
     * answered from the cache, still on a later loop iteration. */
    snd_dane *d2 = snd_dane_new(&loop, &cfg, cache, &err);
    assert_non_null(d2);
    got g2 = {0};
    assert_int_equal(snd_dane_lookup(d2, "mx.plain.example", 25, on_answer, &g2), 0);
    assert_int_equal(g2.n, 0);
    run_until(&loop, &g2, 10000);
    assert_int_equal(g2.n, 1);
    assert_int_equal(g2.status, SND_DANE_NONE);
    assert_int_equal(srv_count("mx.plain.example", "A"), a_queries);

    /* Another port is another TLSA name, so another entry. */
    got g3 = {0};
    assert_int_equal(snd_dane_lookup(d2, "mx.plain.example", 2525, on_answer, &g3), 0);
    run_until(&loop, &g3, 10000);
    assert_string_equal(g3.qname, "_2525._tcp.mx.plain.example");

    /* A name no server answers: still pending when the resolver is freed,
     * completed then with FAILED "cancelled", exactly once. */
    got g4 = {0};
    assert_int_equal(snd_dane_lookup(d2, "slow.example", 25, on_answer, &g4), 0);
    assert_int_equal(snd_dane_lookup(d2, "", 25, on_answer, &g4), SL_EINVAL);
    snd_dane_free(d2);
    assert_int_equal(g4.n, 1);
    assert_int_equal(g4.status, SND_DANE_FAILED);
    assert_string_equal(g4.why, "cancelled");

    snd_dane_free(d);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    snd_dane_cache_free(cache);
    unlink(anchor);
}

/* A trust anchor file that is missing or holds no key: refused up front. */
static void test_bad_anchor(void **state)
{
    (void)state;
    char anchor[] = "/tmp/sluice-dane-anchor-XXXXXX";
    int fd = mkstemp(anchor);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "example. IN A 192.0.2.1\n", 24), 24);
    close(fd);
    sl_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.sender.dane_resolver = "127.0.0.1:53";
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *files[] = {anchor, "/nonexistent/anchor.ds"};
    for (size_t i = 0; i < 2; i++) {
        cfg.sender.dane_trust_anchor = (char *)files[i];
        char *err = NULL;
        assert_null(snd_dane_new(&loop, &cfg, NULL, &err));
        assert_non_null(err);
        assert_non_null(strstr(err, files[i]));
        free(err);
    }
    cfg.sender.dane_resolver = "not a host:port:";
    cfg.sender.dane_trust_anchor = NULL;
    char *err = NULL;
    snd_dane *d = snd_dane_new(&loop, &cfg, NULL, &err);
    assert_null(d);
    assert_non_null(strstr(err, "sender.dane_resolver"));
    free(err);
    assert_int_equal(uv_loop_close(&loop), 0);
    unlink(anchor);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_bad_anchor),
        cmocka_unit_test(test_each_usage_selector_mtype),
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_any_record_matches),
        cmocka_unit_test(test_unusable),
    };
    int rc = cmocka_run_group_tests(tests, srv_start, srv_stop);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return rc;
}
