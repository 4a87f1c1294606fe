/*
 * Unit tests for common/smtp_server: the command parser and the DATA
 * state machine, driven through detached sessions (bytes in, replies out,
 * no sockets). Table-driven: each case is a transcript to feed, the reply
 * fragments that must appear in order, those that must not appear, and the
 * message the on_data hook must (or must not) have seen.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "smtp_server.h"
#include "util.h"

typedef struct rec {
    int messages;
    sl_buf last; /* the last message on_data saw */
    char last_from[300];
    int rcpts;
    bool defer_data; /* on_data does not answer */
    smtpd_session *deferred;
    int closes;
} rec;

static void on_mail(void *arg, smtpd_session *s, const char *from)
{
    rec *r = arg;
    snprintf(r->last_from, sizeof(r->last_from), "%s", from);
    smtpd_reply(s, 250, "2.1.0 Ok");
}

static void on_rcpt(void *arg, smtpd_session *s, const char *rcpt)
{
    rec *r = arg;
    if (strncmp(rcpt, "bad@", 4) == 0) {
        smtpd_reply(s, 550, "5.1.1 No such user");
        return;
    }
    if (strncmp(rcpt, "bye@", 4) == 0) {
        smtpd_reply(s, 421, "4.7.0 Go away");
        return;
    }
    r->rcpts++;
    smtpd_reply(s, 250, "2.1.5 Ok");
}

static void on_data(void *arg, smtpd_session *s, const char *msg, size_t len)
{
    rec *r = arg;
    r->messages++;
    sl_buf_reset(&r->last);
    sl_buf_append(&r->last, msg, len);
    if (r->defer_data) {
        r->deferred = s;
        return;
    }
    smtpd_reply(s, 250, "2.0.0 Ok: queued");
}

static void on_auth(void *arg, smtpd_session *s, const char *user, const char *pass)
{
    smtpd_reply(s, 535, "5.7.8 no");
}

static void on_close(void *arg, smtpd_session *s)
{
    rec *r = arg;
    r->closes++;
}

typedef struct result {
    char *out;
    int rc; /* last smtpd_session_feed() result */
    rec r;
} result;

static smtpd_config base_cfg(void)
{
    smtpd_config c = {0};
    c.hostname = "mx.test";
    return c;
}

/* Feed input in chunks of `chunk` bytes (0: all at once). */
static void run_cfg(result *res, const smtpd_config *cfg, const char *in, size_t len, size_t chunk)
{
    memset(res, 0, sizeof(*res));
    smtpd_hooks h = {.arg = &res->r,
                     .on_mail = on_mail,
                     .on_rcpt = on_rcpt,
                     .on_data = on_data,
                     .on_auth = on_auth,
                     .on_close = on_close};
    smtpd_server *srv = smtpd_server_new(uv_default_loop(), cfg, &h);
    smtpd_session *s = smtpd_session_new_detached(srv);
    if (chunk == 0)
        chunk = len ? len : 1;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        res->rc = smtpd_session_feed(s, in + off, n);
        if (res->rc < 0)
            break;
    }
    res->out = smtpd_session_output(s, NULL);
    smtpd_session_free_detached(s);
    smtpd_server_free(srv);
}

static void run(result *res, const char *in, size_t len, size_t chunk)
{
    smtpd_config c = base_cfg();
    run_cfg(res, &c, in, len, chunk);
}

static void result_free(result *res)
{
    free(res->out);
    sl_buf_free(&res->r.last);
}

#define HEAD "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"

typedef struct tcase {
    const char *name;
    const char *in;
    size_t len;            /* 0: strlen(in) */
    const char *expect[8]; /* fragments that must appear, in this order */
    const char *absent[4]; /* fragments that must not appear */
    int messages;          /* on_data calls */
    const char *msg;       /* the last message, if not NULL */
    bool closed;           /* the session must have closed */
    unsigned max_rcpt;
    size_t max_size;
} tcase;

static const tcase cases[] = {
    {"plain message",
     HEAD "Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n",
     0,
     {"220 mx.test ESMTP", "250-mx.test", "250-PIPELINING", "250 8BITMIME", "250 2.1.0",
      "250 2.1.5", "354 ", "250 2.0.0 Ok: queued"},
     {NULL},
     1,
     "Subject: t\r\n\r\nbody\r\n",
     true},
    {"dot unstuffing",
     HEAD "..dot\r\n...\r\nx.\r\n.\r\n",
     0,
     {"250 2.0.0"},
     {NULL},
     1,
     ".dot\r\n..\r\nx.\r\n"},
    {"empty message", HEAD ".\r\n", 0, {"250 2.0.0"}, {NULL}, 1, ""},
    {"bare LF in DATA",
     HEAD "a\nb\r\n.\r\n",
     0,
     {"354 ", "550 5.6.0 Bare CR or LF"},
     {"250 2.0.0"},
     0},
    {"bare CR in DATA", HEAD "a\rb\r\n.\r\n", 0, {"550 5.6.0 Bare CR or LF"}, {"250 2.0.0"}, 0},
    {"NUL in DATA",
     HEAD "a\0b\r\n.\r\n",
     sizeof(HEAD "a\0b\r\n.\r\n") - 1,
     {"550 5.6.0 NUL"},
     {"250 2.0.0"},
     0},
    {"LF.LF does not end DATA",
     HEAD "x\n.\nMAIL FROM:<evil@x.test>\r\n.\r\nNOOP\r\n",
     0,
     {"354 ", "550 5.6.0", "250 2.0.0 Ok"},
     {"250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n550"},
     0},
    {"CRLF.LF does not end DATA",
     HEAD "x\r\n.\nRCPT TO:<z@z.test>\r\n.\r\n",
     0,
     {"550 5.6.0"},
     {"250 2.0.0 Ok: queued"},
     0},
    {"LF.CRLF does not end DATA",
     HEAD "x\n.\r\ny\r\n.\r\n",
     0,
     {"550 5.6.0"},
     {"250 2.0.0 Ok: queued"},
     0},
    {"CR.CR does not end DATA",
     HEAD "x\r.\ry\r\n.\r\n",
     0,
     {"550 5.6.0"},
     {"250 2.0.0 Ok: queued"},
     0},
    {"bare LF command closes",
     "EHLO x\nNOOP\r\n",
     0,
     {"500 5.5.2 Bare LF/CR not allowed"},
     {"250-mx.test", "250 2.0.0"},
     0,
     NULL,
     true},
    {"bare CR command closes",
     "EHLO x\rNOOP\r\n",
     0,
     {"500 5.5.2 Bare LF/CR not allowed"},
     {"250-mx.test"},
     0,
     NULL,
     true},
    {"NUL in command",
     "NO\0OP\r\nNOOP\r\n",
     13,
     {"500 5.5.2 Error: NUL", "250 2.0.0 Ok"},
     {NULL},
     0},
    {"unknown command",
     "FOO\r\n\r\nNOOP\r\n",
     0,
     {"500 5.5.2 Error: command not recognized", "500 5.5.2", "250 2.0.0 Ok"},
     {NULL},
     0},
    {"lower case verbs",
     "ehlo x\r\nmail from:<a@b.test>\r\nrcpt to:<c@d.test>\r\nrset\r\n",
     0,
     {"250 8BITMIME", "250 2.1.0", "250 2.1.5", "250 2.0.0 Ok"},
     {NULL},
     0},
    {"MAIL before EHLO",
     "MAIL FROM:<a@b.test>\r\n",
     0,
     {"503 5.5.1 Error: send HELO/EHLO first"},
     {NULL},
     0},
    {"RCPT before MAIL",
     "EHLO x\r\nRCPT TO:<a@b.test>\r\n",
     0,
     {"503 5.5.1 Error: need MAIL"},
     {NULL},
     0},
    {"DATA without recipients",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nDATA\r\n",
     0,
     {"554 5.5.1 Error: no valid recipients"},
     {"354"},
     0},
    {"DATA before MAIL", "EHLO x\r\nDATA\r\n", 0, {"503 5.5.1"}, {"354"}, 0},
    {"nested MAIL",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\n",
     0,
     {"250 2.1.0", "503 5.5.1 Error: nested MAIL"},
     {NULL},
     0},
    {"null sender", "EHLO x\r\nMAIL FROM:<>\r\n", 0, {"250 2.1.0"}, {NULL}, 0},
    {"space after colon tolerated",
     "EHLO x\r\nMAIL FROM: <a@b.test>\r\n",
     0,
     {"250 2.1.0"},
     {NULL},
     0},
    {"source route dropped",
     "EHLO x\r\nMAIL FROM:<@r.test:a@b.test>\r\n",
     0,
     {"250 2.1.0"},
     {NULL},
     0},
    {"null recipient",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<>\r\n",
     0,
     {"501 5.1.3"},
     {NULL},
     0},
    {"postmaster recipient",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<Postmaster>\r\n",
     0,
     {"250 2.1.5"},
     {NULL},
     0},
    {"address without brackets", "EHLO x\r\nMAIL FROM:a@b.test\r\n", 0, {"501 5.5.4"}, {NULL}, 0},
    {"address without domain", "EHLO x\r\nMAIL FROM:<a@>\r\n", 0, {"501 5.1.3"}, {NULL}, 0},
    {"space in address", "EHLO x\r\nMAIL FROM:<a b@c.test>\r\n", 0, {"553 5.1.7"}, {NULL}, 0},
    {"quoted local part", "EHLO x\r\nMAIL FROM:<\"a b>\"@c.test>\r\n", 0, {"250 2.1.0"}, {NULL}, 0},
    {"bad domain chars", "EHLO x\r\nMAIL FROM:<a@c_d!.test>\r\n", 0, {"553 5.1.2"}, {NULL}, 0},
    {"unknown MAIL parameter",
     "EHLO x\r\nMAIL FROM:<a@b.test> RET=FULL\r\n",
     0,
     {"555 5.5.4 Unsupported parameter: RET"},
     {NULL},
     0},
    {"MAIL parameters",
     "EHLO x\r\nMAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME\r\n",
     0,
     {"250 2.1.0"},
     {NULL},
     0},
    {"bad SIZE", "EHLO x\r\nMAIL FROM:<a@b.test> SIZE=1x\r\n", 0, {"555 5.5.4"}, {NULL}, 0},
    {"declared SIZE too big",
     "EHLO x\r\nMAIL FROM:<a@b.test> SIZE=999999999999\r\n",
     0,
     {"552 5.3.4"},
     {"250 2.1.0"},
     0},
    {"UTF-8 address needs SMTPUTF8",
     "EHLO x\r\nMAIL FROM:<j\xc3\xb6@b.test>\r\n",
     0,
     {"553 5.6.7"},
     {NULL},
     0},
    {"UTF-8 address with SMTPUTF8",
     "EHLO x\r\nMAIL FROM:<j\xc3\xb6@b.test> SMTPUTF8\r\nRCPT TO:<m\xc3\xbc@d\xc3\xa9.test>\r\n",
     0,
     {"250 2.1.0", "250 2.1.5"},
     {NULL},
     0},
    {"UTF-8 recipient without SMTPUTF8",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<m\xc3\xbc@d.test>\r\n",
     0,
     {"250 2.1.0", "553 5.6.7"},
     {NULL},
     0},
    {"rejected recipient",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bad@y.test>\r\nDATA\r\n",
     0,
     {"550 5.1.1 No such user", "554 5.5.1"},
     {"354"},
     0},
    {"421 from a hook closes",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bye@y.test>\r\nNOOP\r\n",
     0,
     {"421 4.7.0 Go away"},
     {"250 2.0.0 Ok"},
     0,
     NULL,
     true},
    {"max recipients",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<b@y.test>\r\n"
     "RCPT TO:<c@y.test>\r\n",
     0,
     {"250 2.1.5", "250 2.1.5", "452 4.5.3 Too many recipients"},
     {NULL},
     0,
     NULL,
     false,
     2},
    {"message too big",
     HEAD "0123456789012345678901234567890123456789\r\n"
          "0123456789012345678901234567890123456789\r\n.\r\n",
     0,
     {"552 5.3.4"},
     {"250 2.0.0 Ok: queued"},
     0,
     NULL,
     false,
     0,
     60},
    {"line of 1000 octets accepted", NULL, 0, {"250 2.0.0 Ok: queued"}, {NULL}, 1},
    {"line of 1001 octets rejected", NULL, 0, {"550 5.6.0 Message line longer"}, {"Ok: queued"}, 0},
    {"command line too long",
     NULL,
     0,
     {"500 5.5.2 Error: line too long", "250 2.0.0 Ok"},
     {NULL},
     0},
    {"HELO", "HELO x\r\n", 0, {"250 mx.test\r\n"}, {"PIPELINING"}, 0},
    {"EHLO without argument", "EHLO\r\n", 0, {"501 5.5.4"}, {NULL}, 0},
    {"STARTTLS not configured", "EHLO x\r\nSTARTTLS\r\n", 0, {"502 5.5.1"}, {"250-STARTTLS"}, 0},
    {"AUTH needs TLS", "EHLO x\r\nAUTH PLAIN AGEAYg==\r\n", 0, {"538 5.7.11"}, {"AUTH PLAIN"}, 0},
    {"VRFY disabled", "VRFY root\r\n", 0, {"502 5.5.1"}, {NULL}, 0},
    {"too many errors",
     "A\r\nB\r\nC\r\nD\r\nE\r\nF\r\nG\r\nH\r\nI\r\nJ\r\nNOOP\r\n",
     0,
     {"421 4.7.0 Too many errors"},
     {"250 2.0.0 Ok"},
     0,
     NULL,
     true},
    {"two messages on one connection",
     HEAD "one\r\n.\r\nMAIL FROM:<c@x.test>\r\nRCPT TO:<d@y.test>\r\nDATA\r\ntwo\r\n.\r\n",
     0,
     {"250 2.0.0 Ok: queued", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0 Ok: queued"},
     {NULL},
     2,
     "two\r\n"},
    {"RSET ends the transaction",
     "EHLO x\r\nMAIL FROM:<a@b.test>\r\nRSET\r\nRCPT TO:<b@c.test>\r\n",
     0,
     {"250 2.1.0", "250 2.0.0 Ok", "503 5.5.1"},
     {NULL},
     0},
};

/* Build the inputs that are too long to write as literals. */
static char *make_input(const tcase *tc, size_t *len)
{
    sl_buf b = SL_BUF_INIT;
    if (strcmp(tc->name, "line of 1000 octets accepted") == 0 ||
        strcmp(tc->name, "line of 1001 octets rejected") == 0) {
        size_t n = strstr(tc->name, "1000") ? 998 : 999;
        sl_buf_puts(&b, HEAD);
        for (size_t i = 0; i < n; i++)
            sl_buf_putc(&b, 'x');
        sl_buf_puts(&b, "\r\n.\r\n");
    } else if (strcmp(tc->name, "command line too long") == 0) {
        sl_buf_puts(&b, "NOOP ");
        for (int i = 0; i < 600; i++)
            sl_buf_putc(&b, 'y');
        sl_buf_puts(&b, "\r\nNOOP\r\n");
    } else {
        sl_buf_append(&b, tc->in, tc->len ? tc->len : strlen(tc->in));
    }
    return sl_buf_steal(&b, len);
}

static void check_case(const tcase *tc, size_t chunk)
{
    size_t len;
    char *in = make_input(tc, &len);
    smtpd_config cfg = base_cfg();
    cfg.max_rcpt = tc->max_rcpt;
    cfg.max_message_size = tc->max_size;
    result res;
    run_cfg(&res, &cfg, in, len, chunk);
    const char *at = res.out;
    for (int i = 0; i < 8 && tc->expect[i]; i++) {
        const char *hit = strstr(at, tc->expect[i]);
        if (!hit)
            fail_msg("case '%s' (chunk %zu): expected \"%s\" in order, got:\n%s", tc->name, chunk,
                     tc->expect[i], res.out);
        at = hit + strlen(tc->expect[i]);
    }
    for (int i = 0; i < 4 && tc->absent[i]; i++)
        if (strstr(res.out, tc->absent[i]))
            fail_msg("case '%s' (chunk %zu): unexpected \"%s\" in:\n%s", tc->name, chunk,
                     tc->absent[i], res.out);
    if (res.r.messages != tc->messages)
        fail_msg("case '%s' (chunk %zu): %d messages, want %d; output:\n%s", tc->name, chunk,
                 res.r.messages, tc->messages, res.out);
    if (tc->msg) {
        assert_int_equal(res.r.last.len, strlen(tc->msg));
        assert_memory_equal(res.r.last.data ? res.r.last.data : "", tc->msg, strlen(tc->msg));
    }
    if (tc->closed)
        assert_int_equal(res.rc, SL_ECLOSED);
    else
        assert_int_equal(res.rc, 0);
    result_free(&res);
    free(in);
}

static void test_table_whole(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], 0);
}

/* The same transcripts one byte at a time: every split point at once. */
static void test_table_bytewise(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], 1);
}

/* CRLF.CRLF (and everything else) split across two reads at every byte
 * position gives exactly the replies of a single read. */
static void test_split_everywhere(void **state)
{
    const char *in = HEAD "..a\r\nb\r\n.\r\nMAIL FROM:<c@x.test>\r\nRCPT TO:<d@y.test>\r\nDATA\r\n"
                          "c\r\n.\r\nQUIT\r\n";
    size_t len = strlen(in);
    result whole;
    run(&whole, in, len, 0);
    assert_int_equal(whole.r.messages, 2);
    for (size_t cut = 1; cut < len; cut++) {
        smtpd_config cfg = base_cfg();
        rec r = {0};
        smtpd_hooks h = {.arg = &r, .on_data = on_data};
        smtpd_server *srv = smtpd_server_new(uv_default_loop(), &cfg, &h);
        smtpd_session *s = smtpd_session_new_detached(srv);
        assert_int_equal(smtpd_session_feed(s, in, cut), 0);
        smtpd_session_feed(s, in + cut, len - cut);
        char *out = smtpd_session_output(s, NULL);
        if (strcmp(out, whole.out) != 0)
            fail_msg("split at %zu differs:\n%s\nvs\n%s", cut, out, whole.out);
        assert_int_equal(r.messages, 2);
        assert_string_equal(r.last.data, "c\r\n");
        free(out);
        sl_buf_free(&r.last);
        smtpd_session_free_detached(s);
        smtpd_server_free(srv);
    }
    result_free(&whole);
}

/* Pipelined commands get their replies in order, in one batch. */
static void test_pipelining_order(void **state)
{
    const char *in =
        "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bad@c.test>\r\nRCPT TO:<ok@c.test>\r\n"
        "DATA\r\nhi\r\n.\r\nNOOP\r\nQUIT\r\n";
    result res;
    run(&res, in, strlen(in), 0);
    const char *want = "250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n250 2.1.5 Ok\r\n"
                       "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n"
                       "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n";
    const char *p = strstr(res.out, "250 8BITMIME\r\n");
    assert_non_null(p);
    assert_string_equal(p + strlen("250 8BITMIME\r\n"), want);
    result_free(&res);
}

/* An on_data hook may answer later; the session waits, then goes on with
 * what was pipelined behind the message. */
static void test_async_reply(void **state)
{
    smtpd_config cfg = base_cfg();
    rec r = {0};
    r.defer_data = true;
    smtpd_hooks h = {.arg = &r, .on_data = on_data, .on_close = on_close};
    smtpd_server *srv = smtpd_server_new(uv_default_loop(), &cfg, &h);
    smtpd_session *s = smtpd_session_new_detached(srv);
    const char *in = HEAD "x\r\n.\r\nNOOP\r\n";
    assert_int_equal(smtpd_session_feed(s, in, strlen(in)), 0);
    char *out = smtpd_session_output(s, NULL);
    assert_non_null(strstr(out, "354 "));
    assert_null(strstr(out, "250 2.0.0"));
    free(out);
    assert_ptr_equal(r.deferred, s);
    assert_string_equal(smtpd_session_envelope(s)->rcpt[0], "b@y.test");
    assert_string_equal(smtpd_session_envelope(s)->from, "a@x.test");
    smtpd_reply(s, 451, "4.3.0 later");
    out = smtpd_session_output(s, NULL);
    assert_string_equal(out, "451 4.3.0 later\r\n250 2.0.0 Ok\r\n");
    free(out);
    smtpd_stats st;
    smtpd_server_stats(srv, &st);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.messages, 0);
    smtpd_session_free_detached(s);
    assert_int_equal(r.closes, 1);
    sl_buf_free(&r.last);
    smtpd_server_free(srv);
}

static void test_envelope(void **state)
{
    smtpd_config cfg = base_cfg();
    rec r = {0};
    r.defer_data = true;
    smtpd_hooks h = {.arg = &r, .on_data = on_data, .on_rcpt = on_rcpt};
    smtpd_server *srv = smtpd_server_new(uv_default_loop(), &cfg, &h);
    smtpd_session *s = smtpd_session_new_detached(srv);
    const char *in = "EHLO c.test\r\nMAIL FROM:<a@b.test> SIZE=5 BODY=8BITMIME\r\n"
                     "RCPT TO:<x@y.test>\r\nRCPT TO:<bad@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n"
                     "abc\r\n.\r\n";
    assert_int_equal(smtpd_session_feed(s, in, strlen(in)), 0);
    const smtpd_envelope *e = smtpd_session_envelope(s);
    assert_string_equal(e->helo, "c.test");
    assert_true(e->esmtp);
    assert_int_equal(e->size_declared, 5);
    assert_true(e->body_8bit);
    assert_int_equal(e->nrcpt, 2);
    assert_string_equal(e->rcpt[0], "x@y.test");
    assert_string_equal(e->rcpt[1], "z@y.test");
    assert_false(e->tls);
    assert_string_equal(e->peer_ip, "127.0.0.1");
    smtpd_reply(s, 250, "2.0.0 ok");
    assert_int_equal(smtpd_session_envelope(s)->nrcpt, 0);
    smtpd_session_free_detached(s);
    sl_buf_free(&r.last);
    smtpd_server_free(srv);
}

static void test_no_pipelining_no_smtputf8(void **state)
{
    smtpd_config cfg = base_cfg();
    cfg.no_pipelining = true;
    cfg.no_smtputf8 = true;
    result res;
    const char *in = "EHLO c\r\nMAIL FROM:<a@b.test> SMTPUTF8\r\n";
    run_cfg(&res, &cfg, in, strlen(in), 0);
    assert_null(strstr(res.out, "PIPELINING"));
    assert_null(strstr(res.out, "250-SMTPUTF8"));
    assert_non_null(strstr(res.out, "555 5.5.4"));
    result_free(&res);
}

static void connect_reject(void *arg, smtpd_session *s)
{
    smtpd_reply(s, 421, "4.7.0 not now");
}

static void test_connect_reject(void **state)
{
    smtpd_config cfg = base_cfg();
    smtpd_hooks h = {.on_connect = connect_reject};
    smtpd_server *srv = smtpd_server_new(uv_default_loop(), &cfg, &h);
    smtpd_session *s = smtpd_session_new_detached(srv);
    char *out = smtpd_session_output(s, NULL);
    assert_string_equal(out, "421 4.7.0 not now\r\n");
    assert_true(smtpd_session_closed(s));
    assert_int_equal(smtpd_session_feed(s, "EHLO x\r\n", 8), SL_ECLOSED);
    free(out);
    smtpd_session_free_detached(s);
    smtpd_server_free(srv);
}

/* Per-IP limit: detached sessions all come from 127.0.0.1. */
static void test_per_ip_limit(void **state)
{
    smtpd_config cfg = base_cfg();
    cfg.max_conn_per_ip = 2;
    smtpd_server *srv = smtpd_server_new(uv_default_loop(), &cfg, NULL);
    smtpd_session *a = smtpd_session_new_detached(srv);
    smtpd_session *b = smtpd_session_new_detached(srv);
    smtpd_session *c = smtpd_session_new_detached(srv);
    char *out = smtpd_session_output(c, NULL);
    assert_string_equal(out, "421 4.7.0 Too many connections from your IP\r\n");
    free(out);
    out = smtpd_session_output(b, NULL);
    assert_non_null(strstr(out, "220 "));
    free(out);
    smtpd_session_free_detached(c);
    smtpd_session_free_detached(b);
    smtpd_session *d = smtpd_session_new_detached(srv);
    out = smtpd_session_output(d, NULL);
    assert_non_null(strstr(out, "220 "));
    free(out);
    smtpd_stats st;
    smtpd_server_stats(srv, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.active, 2);
    smtpd_session_free_detached(a);
    smtpd_session_free_detached(d);
    smtpd_server_free(srv);
}

/* One grammar for a listen address: what config validation accepts, a
 * listener binds, and what it refuses, the listener refuses too. Port 0 is
 * "any free port". */
static void closed_cb(smtpd_server *srv, void *arg)
{
    (void)srv;
    *(bool *)arg = true;
}

static void test_listen_forms(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        bool ok;
    } cases[] = {
        {"127.0.0.1:0", true},  {"[::1]:0", true},         {"localhost:0", true},
        {"0.0.0.0:0", true},    {"127.0.0.1", false},      {"127.0.0.1:65536", false},
        {"[::1]", false},       {"127.0.0.1:x", false},    {"[::1:0", false},
        {"127.0.0.1:-1", false}, {"127.0.0.1: 1", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[200];
        snprintf(yaml, sizeof yaml, "metrics:\n  listen: \"%s\"\nsubmit:\n  listen: [\"%s\"]\n",
                 cases[i].addr, cases[i].addr);
        sl_config *cfg = NULL;
        char *err = NULL;
        int rc = sl_config_parse("t.yaml", yaml, strlen(yaml), &cfg, &err);
        if ((rc == 0) != cases[i].ok)
            fail_msg("config %s '%s': %s", cases[i].ok ? "refuses" : "accepts", cases[i].addr,
                     err ? err : "");
        sl_config_free(cfg);
        free(err);

        smtpd_config scfg = base_cfg();
        smtpd_server *srv = smtpd_server_new(uv_default_loop(), &scfg, NULL);
        int port = -1;
        rc = smtpd_server_listen(srv, cases[i].addr, SMTPD_PLAIN, &port);
        if ((rc == 0) != cases[i].ok)
            fail_msg("listener %s '%s': %d", cases[i].ok ? "refuses" : "accepts", cases[i].addr, rc);
        if (rc == 0)
            assert_true(port > 0);
        bool closed = false;
        smtpd_server_close(srv, closed_cb, &closed);
        while (!closed)
            uv_run(uv_default_loop(), UV_RUN_ONCE);
        smtpd_server_free(srv);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_whole),
        cmocka_unit_test(test_table_bytewise),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test(test_pipelining_order),
        cmocka_unit_test(test_async_reply),
        cmocka_unit_test(test_envelope),
        cmocka_unit_test(test_no_pipelining_no_smtputf8),
        cmocka_unit_test(test_connect_reject),
        cmocka_unit_test(test_per_ip_limit),
        cmocka_unit_test(test_listen_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
