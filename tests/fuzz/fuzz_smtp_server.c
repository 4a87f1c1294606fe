/*
 * fuzz_smtp_server - libFuzzer harness for common/smtp_server's command
 * parser and DATA state machine, driven through detached sessions.
 *
 * Input: byte 0 selects the session shape (flags below), byte 1 caps the
 * size of each piece fed (0: no cap), the rest is what the client sends.
 * With FL_SPLIT every 0xFF byte is a split point (and is not sent).
 *
 * Each input is run twice: once fed whole with the hooks answering at once,
 * once fed in the fuzzer-chosen pieces with (FL_DEFER) the hooks answering
 * later, at most one answer between pieces - the way sluice-submit answers
 * DATA only once Kafka has acknowledged. The hooks decide from the
 * arguments alone, so both runs must write the same bytes and deliver the
 * same messages. Invariants checked on every run:
 *   - a message handed to on_data holds no NUL, no bare CR or LF, ends
 *     in CRLF, has no line over 1000 octets, fits max_message_size, and
 *     has a sender and 1..max_rcpt recipients;
 *   - every reply line is "DDD-" or "DDD " then text then CRLF, a 4xx/5xx
 *     final line carries an enhanced code of its class, and nothing
 *     follows a 221 or 421;
 *   - on_close is called at most once.
 * Memory: everything is freed before returning (LeakSanitizer checks).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_server.h"
#include "util.h"

enum {
    FL_NO_PIPELINING = 1 << 0,
    FL_DEFER = 1 << 1,       /* hooks answer between pieces */
    FL_SPLIT = 1 << 2,       /* 0xFF marks a split point */
    FL_SMALL_SIZE = 1 << 3,  /* max_message_size 2048 */
    FL_SMALL_RCPT = 1 << 4,  /* max_rcpt 3 */
    FL_NO_SMTPUTF8 = 1 << 5,
    FL_FEW_ERRORS = 1 << 6,  /* max_errors 3 */
    FL_BYTEWISE = 1 << 7,    /* one byte per feed */
};

#define FAIL(...)                                                                          \
    do {                                                                                   \
        fprintf(stderr, "fuzz_smtp_server: invariant: " __VA_ARGS__);                     \
        fputc('\n', stderr);                                                               \
        abort();                                                                           \
    } while (0)

typedef struct pending {
    smtpd_session *s;
    int code;
    const char *text;
} pending;

typedef struct run {
    const smtpd_config *cfg;
    bool defer;
    pending p;     /* an answer not given yet (defer mode) */
    bool has_p;
    sl_buf msgs;   /* every delivered message, length-prefixed */
    int closes;
} run;

static void answer(run *r, smtpd_session *s, int code, const char *text)
{
    if (!r->defer) {
        smtpd_reply(s, code, text);
        return;
    }
    if (r->has_p)
        FAIL("a question was asked while another was outstanding");
    r->p = (pending){s, code, text};
    r->has_p = true;
}

static bool no_ctl(const char *p)
{
    for (; *p; p++)
        if (*p == '\r' || *p == '\n')
            return false;
    return true;
}

static void on_mail(void *arg, smtpd_session *s, const char *from)
{
    run *r = arg;
    if (!no_ctl(from))
        FAIL("CR/LF in reverse path");
    if (strncmp(from, "bad", 3) == 0)
        answer(r, s, 550, "5.7.1 sender refused");
    else if (strncmp(from, "bye", 3) == 0)
        answer(r, s, 421, "4.3.2 going away");
    else
        answer(r, s, 250, "2.1.0 Ok");
}

static void on_rcpt(void *arg, smtpd_session *s, const char *rcpt)
{
    run *r = arg;
    const smtpd_envelope *e = smtpd_session_envelope(s);
    if (!no_ctl(rcpt))
        FAIL("CR/LF in forward path");
    if (!e->from)
        FAIL("RCPT asked without a sender");
    if (e->nrcpt >= (r->cfg->max_rcpt ? r->cfg->max_rcpt : 100))
        FAIL("RCPT asked with %zu recipients already", e->nrcpt);
    if (strncmp(rcpt, "bad", 3) == 0)
        answer(r, s, 550, "5.1.1 no such user");
    else if (strncmp(rcpt, "slow", 4) == 0)
        answer(r, s, 451, "4.3.0 try later");
    else if (strncmp(rcpt, "bye", 3) == 0)
        answer(r, s, 421, "4.3.2 going away");
    else
        answer(r, s, 250, "2.1.5 Ok");
}

static void check_message(run *r, const smtpd_envelope *e, const char *msg, size_t len)
{
    size_t limit = r->cfg->max_message_size ? r->cfg->max_message_size : 35u * 1024 * 1024;
    if (len > limit)
        FAIL("message of %zu octets over the limit %zu", len, limit);
    if (!e->from || e->nrcpt == 0)
        FAIL("DATA asked with no sender or no recipient");
    if (e->nrcpt > (r->cfg->max_rcpt ? r->cfg->max_rcpt : 100))
        FAIL("%zu recipients over max_rcpt", e->nrcpt);
    if (memchr(msg, 0, len))
        FAIL("NUL in a delivered message");
    if (len > 0 && (len < 2 || msg[len - 2] != '\r' || msg[len - 1] != '\n'))
        FAIL("delivered message does not end in CRLF");
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\r' && (i + 1 == len || msg[i + 1] != '\n'))
            FAIL("bare CR at %zu in a delivered message", i);
        if (msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r'))
            FAIL("bare LF at %zu in a delivered message", i);
        line++;
        if (msg[i] == '\n') {
            if (line > 1000)
                FAIL("delivered line of %zu octets", line);
            line = 0;
        }
    }
    if (len >= 3 && memcmp(msg, ".\r\n", 3) == 0)
        FAIL("the end-of-data line was delivered");
}

static void on_data(void *arg, smtpd_session *s, const char *msg, size_t len)
{
    run *r = arg;
    check_message(r, smtpd_session_envelope(s), msg, len);
    uint64_t n = len;
    sl_buf_append(&r->msgs, &n, sizeof(n));
    sl_buf_append(&r->msgs, msg, len);
    if (len >= 6 && memcmp(msg, "REJECT", 6) == 0)
        answer(r, s, 554, "5.6.0 content refused");
    else if (len >= 3 && memcmp(msg, "BYE", 3) == 0)
        answer(r, s, 421, "4.3.2 going away");
    else
        answer(r, s, 250, "2.0.0 Ok: queued");
}

static void on_close(void *arg, smtpd_session *s)
{
    run *r = arg;
    if (++r->closes > 1)
        FAIL("on_close called twice");
}

static void give_answer(run *r)
{
    pending p = r->p;
    r->has_p = false;
    smtpd_reply(p.s, p.code, p.text);
}

/* Check the reply stream: framing, enhanced codes, nothing after 221/421. */
static void check_output(const char *out, size_t len)
{
    size_t i = 0;
    bool first = true, ended = false;
    while (i < len) {
        const char *nl = memchr(out + i, '\n', len - i);
        if (!nl)
            FAIL("output does not end in CRLF");
        size_t e = (size_t)(nl - out);
        if (e == i || out[e - 1] != '\r')
            FAIL("bare LF in the output");
        const char *l = out + i;
        size_t ll = e - 1 - i;
        if (ended)
            FAIL("output after a 221/421: %.*s", (int)ll, l);
        if (ll < 4 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
            l[2] > '9' || (l[3] != ' ' && l[3] != '-'))
            FAIL("malformed reply line: %.*s", (int)ll, l);
        if (memchr(l, '\r', ll) || memchr(l, 0, ll))
            FAIL("CR or NUL inside a reply line");
        if (l[3] == ' ') {
            if (!first && l[0] >= '4' &&
                !(ll >= 9 && l[4] == l[0] && l[5] == '.' && l[6] >= '0' && l[6] <= '9'))
                FAIL("error reply without an enhanced code: %.*s", (int)ll, l);
            if (memcmp(l, "221", 3) == 0 || memcmp(l, "421", 3) == 0)
                ended = true;
            first = false;
        }
        i = e + 1;
    }
}

typedef struct result {
    char *out;
    size_t out_len;
    sl_buf msgs;
    bool closed;
} result;

static void run_once(const smtpd_config *cfg, bool defer, const uint8_t *data, size_t size,
                     uint8_t flags, size_t cap, result *res)
{
    run r = {.cfg = cfg, .defer = defer};
    smtpd_hooks h = {.arg = &r, .on_mail = on_mail, .on_rcpt = on_rcpt, .on_data = on_data,
                     .on_close = on_close};
    smtpd_server *srv = smtpd_server_new(uv_default_loop(), cfg, &h);
    smtpd_session *s = smtpd_session_new_detached(srv);
    sl_buf out = SL_BUF_INIT;
    int rc = 0;
    size_t off = 0;
    while (off < size && rc == 0) {
        size_t n = size - off;
        if (flags & FL_SPLIT) {
            const uint8_t *m = memchr(data + off, 0xFF, n);
            if (m)
                n = (size_t)(m - (data + off));
        }
        if (cap && n > cap)
            n = cap;
        if (flags & FL_BYTEWISE && n > 1)
            n = 1;
        if (n > 0)
            rc = smtpd_session_feed(s, data + off, n);
        off += n;
        if ((flags & FL_SPLIT) && off < size && data[off] == 0xFF)
            off++;
        if (r.has_p && rc == 0)
            give_answer(&r);
        size_t ol;
        char *o = smtpd_session_output(s, &ol);
        sl_buf_append(&out, o, ol);
        free(o);
    }
    while (r.has_p)
        give_answer(&r);
    size_t ol;
    char *o = smtpd_session_output(s, &ol);
    sl_buf_append(&out, o, ol);
    free(o);
    res->closed = smtpd_session_closed(s);
    smtpd_session_free_detached(s);
    smtpd_server_free(srv);
    check_output(out.data ? out.data : "", out.len);
    res->out = sl_buf_steal(&out, &res->out_len);
    res->msgs = r.msgs;
}

/* The stream the split run sends: data without the 0xFF markers. */
static uint8_t *joined(const uint8_t *data, size_t size, uint8_t flags, size_t *n)
{
    uint8_t *j = xmalloc(size ? size : 1);
    size_t k = 0;
    for (size_t i = 0; i < size; i++)
        if (!(flags & FL_SPLIT) || data[i] != 0xFF)
            j[k++] = data[i];
    *n = k;
    return j;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    size_t cap = data[1];
    data += 2;
    size -= 2;
    smtpd_config cfg = {.hostname = "mx.fuzz"};
    cfg.no_pipelining = flags & FL_NO_PIPELINING;
    cfg.max_message_size = (flags & FL_SMALL_SIZE) ? 2048 : 0;
    cfg.max_rcpt = (flags & FL_SMALL_RCPT) ? 3 : 0;
    cfg.no_smtputf8 = flags & FL_NO_SMTPUTF8;
    cfg.max_errors = (flags & FL_FEW_ERRORS) ? 3 : 0;

    size_t jn;
    uint8_t *j = joined(data, size, flags, &jn);
    result whole = {0}, split = {0};
    run_once(&cfg, false, j, jn, 0, 0, &whole);
    run_once(&cfg, flags & FL_DEFER, data, size, flags, cap, &split);
    if (whole.out_len != split.out_len || memcmp(whole.out, split.out, whole.out_len) != 0) {
        fprintf(stderr, "--- whole:\n%.*s--- split:\n%.*s---\n", (int)whole.out_len, whole.out,
                (int)split.out_len, split.out);
        FAIL("replies depend on how the input was split or when hooks answered");
    }
    if (whole.msgs.len != split.msgs.len ||
        (whole.msgs.len && memcmp(whole.msgs.data, split.msgs.data, whole.msgs.len) != 0))
        FAIL("delivered messages depend on how the input was split");
    if (whole.closed != split.closed)
        FAIL("whether the session closed depends on how the input was split");
    free(whole.out);
    free(split.out);
    sl_buf_free(&whole.msgs);
    sl_buf_free(&split.msgs);
    free(j);
    return 0;
}
