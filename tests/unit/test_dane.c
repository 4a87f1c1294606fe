/*
 * DANE certificate matching (sl_tls_dane in common/tls.c, and the usability
 * filter of sender/dane.c): a real TLS handshake in memory between a server
 * that presents tests/data/dane/server.pem (a certificate for mx.dane.test
 * and the test CA that signed it) and a client given TLSA records computed
 * here from the fixtures, for every usage, selector and matching type. The
 * client trusts only the system store, which knows nothing of the test CA:
 * whatever verifies does so by DANE. tests/data/dane/gen.sh makes the
 * fixtures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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

static handshake run(const sl_tlsa *recs, size_t n, const char *base)
{
    char *err = NULL;
    SSL_CTX *sctx = sl_tls_server_ctx(DATA "server.pem", DATA "server.key", &err);
    SSL_CTX *cctx = sl_tls_client_ctx(NULL, &err);
    assert_non_null(sctx);
    assert_non_null(cctx);
    sl_tls *srv = sl_tls_new(sctx, true, NULL);
    sl_tls *cli = sl_tls_new(cctx, false, base);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_usage_selector_mtype),
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_any_record_matches),
        cmocka_unit_test(test_unusable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
