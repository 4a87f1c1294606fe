/*
 * Unit tests for common/tls: a client and a server sl_tls shake hands and
 * talk through memory only; bad input fails with SL_ETLS; and STARTTLS on
 * a detached smtpd session (discarding pipelined clear text, then AUTH
 * over TLS).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtp_server.h"
#include "tls.h"
#include "util.h"

static char dir[64];
static char cert[128], key[128];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/sluice-tls-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    return sl_tls_selfsigned(cert, key);
}

static int teardown(void **state)
{
    unlink(cert);
    unlink(key);
    rmdir(dir);
    return 0;
}

/* Move ciphertext between the two ends until neither has anything to say. */
static void shuttle(sl_tls *a, sl_tls *b, sl_buf *a_plain, sl_buf *b_plain)
{
    for (int round = 0; round < 20; round++) {
        sl_buf x = SL_BUF_INIT, y = SL_BUF_INIT;
        sl_tls_take_output(a, &x);
        sl_tls_take_output(b, &y);
        if (x.len == 0 && y.len == 0 && round > 0)
            break;
        if (x.len) {
            sl_tls_feed(b, x.data, x.len);
        }
        assert_true(sl_tls_read(b, b_plain) >= 0);
        if (y.len) {
            sl_tls_feed(a, y.data, y.len);
        }
        assert_true(sl_tls_read(a, a_plain) >= 0);
        sl_buf_free(&x);
        sl_buf_free(&y);
    }
}

static void test_handshake_and_data(void **state)
{
    char *err = NULL;
    SSL_CTX *sctx = sl_tls_server_ctx(cert, key, &err);
    assert_non_null(sctx);
    SSL_CTX *cctx = sl_tls_client_ctx(NULL, &err);
    assert_non_null(cctx);
    sl_tls *srv = sl_tls_new(sctx, true, NULL);
    sl_tls *cli = sl_tls_new(cctx, false, "localhost");
    /* Contexts are reference counted by the sessions. */
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    assert_false(sl_tls_handshake_done(cli));
    assert_string_equal(sl_tls_version(cli), "");
    /* Written before the handshake: queued, delivered after it. */
    assert_int_equal(sl_tls_write(cli, "EHLO early\r\n", 12), 0);
    sl_buf cp = SL_BUF_INIT, sp = SL_BUF_INIT;
    shuttle(cli, srv, &cp, &sp);
    assert_true(sl_tls_handshake_done(cli));
    assert_true(sl_tls_handshake_done(srv));
    assert_string_equal(sl_tls_version(srv), "TLSv1.3");
    assert_true(strlen(sl_tls_cipher(srv)) > 0);
    assert_string_equal(sp.data, "EHLO early\r\n");
    /* Both directions, and a record larger than one TLS record. */
    size_t big = 100000;
    char *payload = xmalloc(big);
    for (size_t i = 0; i < big; i++)
        payload[i] = (char)('a' + i % 26);
    assert_int_equal(sl_tls_write(srv, payload, big), 0);
    assert_int_equal(sl_tls_write(cli, "QUIT\r\n", 6), 0);
    shuttle(cli, srv, &cp, &sp);
    assert_int_equal(cp.len, big);
    assert_memory_equal(cp.data, payload, big);
    assert_string_equal(sp.data, "EHLO early\r\nQUIT\r\n");
    /* close_notify reaches the peer as SL_ECLOSED. */
    sl_tls_shutdown(cli);
    sl_buf c = SL_BUF_INIT;
    sl_tls_take_output(cli, &c);
    sl_tls_feed(srv, c.data, c.len);
    sl_buf_reset(&sp);
    assert_int_equal(sl_tls_read(srv, &sp), SL_ECLOSED);
    free(payload);
    sl_buf_free(&c);
    sl_buf_free(&cp);
    sl_buf_free(&sp);
    sl_tls_free(cli);
    sl_tls_free(srv);
}

/* One handshake between a server with the self-signed "localhost"
 * certificate and a client trusting ca_file (NULL: the system store) and
 * checking host; returns the client's last sl_tls_read() result and leaves
 * the client in *out (the caller frees it). */
static int verify_handshake(const char *ca_file, const char *host, bool require, sl_tls **out)
{
    char *err = NULL;
    SSL_CTX *sctx = sl_tls_server_ctx(cert, key, &err);
    SSL_CTX *cctx = sl_tls_client_ctx(ca_file, &err);
    assert_non_null(sctx);
    assert_non_null(cctx);
    sl_tls *srv = sl_tls_new(sctx, true, NULL);
    sl_tls *cli = sl_tls_new(cctx, false, host);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    sl_tls_verify(cli, host, require);
    sl_buf cp = SL_BUF_INIT, sp = SL_BUF_INIT;
    int rc = 0;
    for (int round = 0; round < 20 && !sl_tls_handshake_done(cli); round++) {
        sl_buf x = SL_BUF_INIT;
        sl_tls_take_output(cli, &x);
        sl_tls_feed(srv, x.data, x.len);
        sl_buf_reset(&x);
        (void)sl_tls_read(srv, &sp);
        sl_tls_take_output(srv, &x);
        sl_tls_feed(cli, x.data, x.len);
        sl_buf_free(&x);
        rc = sl_tls_read(cli, &cp);
        if (rc < 0)
            break;
    }
    sl_buf_free(&cp);
    sl_buf_free(&sp);
    sl_tls_free(srv);
    *out = cli;
    return rc;
}

static void test_verify(void **state)
{
    sl_tls *cli;
    const char *why;
    /* Trusted, and the name matches. */
    assert_true(verify_handshake(cert, "localhost", true, &cli) >= 0);
    assert_true(sl_tls_handshake_done(cli));
    assert_true(sl_tls_verified(cli, &why));
    assert_string_equal(why, "ok");
    sl_tls_free(cli);
    /* Trusted, but issued for another name: the MX host name decides. */
    assert_int_equal(verify_handshake(cert, "mx.example.test", true, &cli), SL_ETLS);
    assert_non_null(strstr(sl_tls_error(cli), "certificate verify failed: "));
    assert_non_null(strstr(sl_tls_error(cli), "mismatch"));
    sl_tls_free(cli);
    /* Not trusted (the system store does not know it). */
    assert_int_equal(verify_handshake(NULL, "localhost", true, &cli), SL_ETLS);
    assert_non_null(strstr(sl_tls_error(cli), "certificate verify failed: self-signed"));
    sl_tls_free(cli);
    /* Not required: the handshake completes and the result is reported. */
    assert_true(verify_handshake(NULL, "localhost", false, &cli) >= 0);
    assert_true(sl_tls_handshake_done(cli));
    assert_false(sl_tls_verified(cli, &why));
    assert_non_null(strstr(why, "self-signed"));
    sl_tls_free(cli);
    /* A CA file that cannot be read is an error, not the system store. */
    char *err = NULL;
    assert_null(sl_tls_client_ctx("/nonexistent/ca.pem", &err));
    assert_non_null(strstr(err, "/nonexistent/ca.pem"));
    free(err);
}

static void test_garbage_fails(void **state)
{
    char *err = NULL;
    SSL_CTX *sctx = sl_tls_server_ctx(cert, key, &err);
    assert_non_null(sctx);
    sl_tls *srv = sl_tls_new(sctx, true, NULL);
    const char junk[] = "EHLO this is not TLS\r\n";
    sl_tls_feed(srv, junk, sizeof(junk) - 1);
    sl_buf p = SL_BUF_INIT;
    assert_int_equal(sl_tls_read(srv, &p), SL_ETLS);
    assert_true(strlen(sl_tls_error(srv)) > 0);
    /* Stays failed. */
    assert_int_equal(sl_tls_write(srv, "x", 1), SL_ETLS);
    sl_tls_free(srv);
    SSL_CTX_free(sctx);
}

static void test_bad_cert_path(void **state)
{
    char *err = NULL;
    SSL_CTX *ctx = sl_tls_server_ctx("/nonexistent/cert.pem", key, &err);
    assert_null(ctx);
    assert_non_null(err);
    assert_non_null(strstr(err, "/nonexistent/cert.pem"));
    free(err);
}

static bool auth_called;

static void on_auth(void *arg, smtpd_session *s, const char *user, const char *pass)
{
    auth_called = true;
    if (strcmp(user, "u") == 0 && strcmp(pass, "p") == 0)
        smtpd_reply(s, 235, "2.7.0 Authentication successful");
    else
        smtpd_reply(s, 535, "5.7.8 Authentication credentials invalid");
}

static int mail_calls;

static void on_mail(void *arg, smtpd_session *s, const char *from)
{
    mail_calls++;
    smtpd_reply(s, 250, "2.1.0 Ok");
}

/* Client side of a conversation with a detached session under TLS; it
 * owns all of it (convo_free). */
typedef struct convo {
    smtpd_session *s;
    sl_tls *cli;
    sl_buf plain; /* what the client decrypted */
    smtpd_server *srv;
    SSL_CTX *sctx, *cctx;
} convo;

static void convo_free(convo *c)
{
    sl_buf_free(&c->plain);
    sl_tls_free(c->cli);
    smtpd_session_free_detached(c->s);
    smtpd_server_free(c->srv);
    SSL_CTX_free(c->sctx);
    SSL_CTX_free(c->cctx);
}

static void convo_pump(convo *c)
{
    for (int i = 0; i < 20; i++) {
        sl_buf out = SL_BUF_INIT;
        sl_tls_take_output(c->cli, &out);
        if (out.len)
            assert_int_equal(smtpd_session_feed(c->s, out.data, out.len), 0);
        sl_buf_free(&out);
        size_t n;
        char *in = smtpd_session_output(c->s, &n);
        if (n)
            sl_tls_feed(c->cli, in, n);
        free(in);
        assert_true(sl_tls_read(c->cli, &c->plain) >= 0);
        if (!n && sl_tls_handshake_done(c->cli))
            break;
    }
}

static void convo_say(convo *c, const char *line)
{
    sl_buf_reset(&c->plain);
    assert_int_equal(sl_tls_write(c->cli, line, strlen(line)), 0);
    convo_pump(c);
}

static void test_starttls_session(void **state)
{
    char *err = NULL;
    SSL_CTX *sctx = sl_tls_server_ctx(cert, key, &err);
    SSL_CTX *cctx = sl_tls_client_ctx(NULL, &err);
    assert_non_null(sctx);
    assert_non_null(cctx);
    smtpd_config cfg = {.hostname = "mx.test", .tls_ctx = sctx};
    smtpd_hooks h = {.on_auth = on_auth, .on_mail = on_mail};
    smtpd_server *srv = smtpd_server_new(uv_default_loop(), &cfg, &h);
    smtpd_session *s = smtpd_session_new_detached(srv);
    char *out = smtpd_session_output(s, NULL);
    free(out);
    /* Clear text: STARTTLS advertised, AUTH not; a command smuggled
     * behind STARTTLS must be thrown away (CVE-2011-0411). */
    const char *pre = "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\n";
    assert_int_equal(smtpd_session_feed(s, pre, strlen(pre)), 0);
    out = smtpd_session_output(s, NULL);
    assert_non_null(strstr(out, "250-STARTTLS"));
    assert_null(strstr(out, "AUTH"));
    assert_non_null(strstr(out, "220 2.0.0 Ready to start TLS\r\n"));
    assert_null(strstr(out, "2.1.0"));
    free(out);

    convo c = {.s = s, .cli = sl_tls_new(cctx, false, "mx.test"),
               .srv = srv, .sctx = sctx, .cctx = cctx};
    convo_pump(&c);
    assert_true(sl_tls_handshake_done(c.cli));
    assert_int_equal(mail_calls, 0);
    assert_int_equal(c.plain.len, 0); /* the smuggled MAIL got no reply */
    assert_true(smtpd_session_envelope(s)->tls);

    /* EHLO is needed again; now AUTH is offered and STARTTLS is not. */
    convo_say(&c, "MAIL FROM:<a@b.test>\r\n");
    assert_non_null(strstr(c.plain.data, "503 5.5.1"));
    convo_say(&c, "EHLO c\r\n");
    assert_non_null(strstr(c.plain.data, "250-AUTH PLAIN LOGIN"));
    assert_null(strstr(c.plain.data, "STARTTLS"));
    convo_say(&c, "AUTH PLAIN AHUAeA==\r\n"); /* \0u\0x */
    assert_non_null(strstr(c.plain.data, "535 5.7.8"));
    convo_say(&c, "AUTH LOGIN\r\n");
    assert_non_null(strstr(c.plain.data, "334 VXNlcm5hbWU6"));
    convo_say(&c, "dQ==\r\n");
    assert_non_null(strstr(c.plain.data, "334 UGFzc3dvcmQ6"));
    convo_say(&c, "cA==\r\n");
    assert_non_null(strstr(c.plain.data, "235 2.7.0"));
    assert_string_equal(smtpd_session_envelope(s)->auth_user, "u");
    convo_say(&c, "AUTH PLAIN AHUAcA==\r\n");
    assert_non_null(strstr(c.plain.data, "503 5.5.1 Already authenticated"));
    convo_say(&c, "MAIL FROM:<a@b.test>\r\n");
    assert_non_null(strstr(c.plain.data, "250 2.1.0"));
    assert_int_equal(mail_calls, 1);
    assert_true(auth_called);

    convo_free(&c);
}

/* AUTH PLAIN in two steps, and cancelling. */
static void test_auth_plain_steps(void **state)
{
    char *err = NULL;
    SSL_CTX *sctx = sl_tls_server_ctx(cert, key, &err);
    SSL_CTX *cctx = sl_tls_client_ctx(NULL, &err);
    smtpd_config cfg = {.hostname = "mx.test", .tls_ctx = sctx, .require_auth = true};
    smtpd_hooks h = {.on_auth = on_auth};
    smtpd_server *srv = smtpd_server_new(uv_default_loop(), &cfg, &h);
    smtpd_session *s = smtpd_session_new_detached(srv);
    free(smtpd_session_output(s, NULL));
    assert_int_equal(smtpd_session_feed(s, "STARTTLS\r\n", 10), 0);
    free(smtpd_session_output(s, NULL));
    convo c = {.s = s, .cli = sl_tls_new(cctx, false, NULL),
               .srv = srv, .sctx = sctx, .cctx = cctx};
    convo_pump(&c);
    convo_say(&c, "EHLO c\r\n");
    convo_say(&c, "MAIL FROM:<a@b.test>\r\n");
    assert_non_null(strstr(c.plain.data, "530 5.7.0 Authentication required"));
    convo_say(&c, "AUTH PLAIN\r\n");
    assert_string_equal(c.plain.data, "334 \r\n");
    convo_say(&c, "*\r\n");
    assert_non_null(strstr(c.plain.data, "501 5.7.0"));
    convo_say(&c, "AUTH PLAIN\r\n");
    convo_say(&c, "not base64!\r\n");
    assert_non_null(strstr(c.plain.data, "501 5.5.2"));
    convo_say(&c, "AUTH PLAIN\r\n");
    convo_say(&c, "AHUAcA==\r\n");
    assert_non_null(strstr(c.plain.data, "235 2.7.0"));
    convo_say(&c, "MAIL FROM:<a@b.test>\r\n");
    assert_non_null(strstr(c.plain.data, "250 2.1.0"));
    convo_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_data), cmocka_unit_test(test_garbage_fails),
        cmocka_unit_test(test_bad_cert_path),      cmocka_unit_test(test_starttls_session),
        cmocka_unit_test(test_auth_plain_steps),
        cmocka_unit_test(test_verify),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
