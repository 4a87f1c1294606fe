/*
 * session - see session.h. The SMTP client state machine.
 *
 * Every state change goes through enter_state(), which arms the state's
 * timeout; every byte from the network goes through on_read() and then
 * process_input(), which hands complete replies to the state's handler.
 * Replies to pipelined commands are matched to what was sent through the
 * `expect` queue, so the same code serves PIPELINING and lock-step servers.
 */
#include "session.h"
#include "hostport.h"
#include "message.h"
#include "log.h"
#include "tls.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum {
    S_CONNECT,
    S_SOCKS_HELLO,
    S_SOCKS_CONNECT,
    S_GREETING,
    S_EHLO,
    S_HELO,
    S_STARTTLS,
    S_TLS,
    S_READY,
    S_TXN,      /* replies to RSET/MAIL/RCPT/DATA outstanding */
    S_BODY,     /* message being written: the data-block timeout runs */
    S_DOT,      /* message sent, waiting for the final reply */
    S_QUIT,
    S_CLOSED,
} snd_state;

static const char *const state_names[] = {"connect", "socks-hello", "socks-connect", "greeting",
                                          "ehlo",    "helo",        "starttls",      "tls",
                                          "ready",   "transaction", "body",        "dot",           "quit",
                                          "closed"};

typedef enum { X_RSET, X_MAIL, X_RCPT, X_DATA, X_DOT_DISCARD } expect_kind;

typedef struct expect {
    expect_kind kind;
    size_t idx;
} expect;

struct snd_session {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    int handles_open;
    snd_state state;
    snd_session_cbs cbs;
    void *data;

    char *mx_host, *ip, *source_ip, *ehlo, *socks5;
    uint16_t port;
    sl_tls_policy tls_policy;
    sl_timeouts to;
    size_t writes_pending;      /* uv_write requests not yet completed */
    SSL_CTX *tls_ctx;
    snd_dane_answer *dane; /* referenced; NULL without DANE */

    sl_buf in;          /* plaintext received, not yet processed */
    sl_tls *tls;
    bool established;
    bool tls_failed;
    char *tls_note;     /* why the policy allowed TLS and this went without */

    /* EHLO capabilities */
    bool esmtp, pipelining, starttls, smtputf8, eightbit;
    uint64_t size_limit;

    /* the transaction in flight */
    snd_txn *txn;
    expect *exp;
    size_t n_exp, exp_head, cap_exp;
    bool mail_failed;
    snd_result mail_reply;
    size_t accepted;
    bool *acc;
    size_t next_rcpt;   /* lock-step: next RCPT to send */
    int64_t txn_start;
    unsigned n_txns;

    snd_result why;      /* why the session ended, code 0: cleanly */
};

static void enter_state(snd_session *s, snd_state st);
static void session_close(snd_session *s, sl_smtp_cond cond, int code, const char *enh,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- replies ---- */

void snd_result_set(snd_result *r, int code, const char *enh, const char *text)
{
    sl_reply_free(&r->reply);
    sl_reply_of(code, enh, text, &r->reply);
    r->stage = SL_STAGE_MAIL;
    r->cond = SL_COND_REPLY;
}

void snd_result_copy(snd_result *dst, const snd_result *src)
{
    if (dst == src)
        return;
    sl_reply_copy(&dst->reply, &src->reply);
    dst->stage = src->stage;
    dst->cond = src->cond;
}

void snd_result_clear(snd_result *r)
{
    sl_reply_free(&r->reply);
    memset(r, 0, sizeof *r);
}

void snd_txn_reset(snd_txn *t)
{
    if (t->results)
        for (size_t i = 0; i < t->n_rcpts; i++)
            snd_result_clear(&t->results[i]);
    free(t->results);
    t->results = NULL;
    snd_result_clear(&t->session_reply);
    t->possible_duplicate = false;
    t->session_failed = false;
    t->tls_protocol[0] = t->tls_cipher[0] = 0;
    t->tls_verified = false;
    t->tls_verify[0] = t->tls_note[0] = 0;
    t->smtp_ms = 0;
}

/* ---- output ---- */

typedef struct wreq {
    uv_write_t req;
    char *buf;
} wreq;

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    snd_session *s = req->data;
    free(w->buf);
    free(w);
    s->writes_pending--;
    if (status >= 0 && s->state == S_BODY && !s->writes_pending)
        enter_state(s, S_DOT);
    if (status < 0 && status != UV_ECANCELED && s->state != S_CLOSED)
        session_close(s, SL_COND_NETWORK, 451, "4.4.2", "write failed in %s: %s", state_names[s->state],
                      uv_strerror(status));
}

static void raw_write(snd_session *s, const void *p, size_t n)
{
    if (s->state == S_CLOSED || !n)
        return;
    wreq *w = xmalloc(sizeof *w);
    w->buf = xmalloc(n);
    memcpy(w->buf, p, n);
    w->req.data = s;
    uv_buf_t b = uv_buf_init(w->buf, (unsigned)n);
    int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_write);
    if (rc == 0)
        s->writes_pending++;
    if (rc < 0) {
        free(w->buf);
        free(w);
        session_close(s, SL_COND_NETWORK, 451, "4.4.2", "write failed: %s", uv_strerror(rc));
    }
}

static void flush_tls(snd_session *s)
{
    sl_buf c = SL_BUF_INIT;
    if (sl_tls_take_output(s->tls, &c) > 0)
        raw_write(s, c.data, c.len);
    sl_buf_free(&c);
}

static void send_bytes(snd_session *s, const void *p, size_t n)
{
    if (s->tls) {
        if (sl_tls_write(s->tls, p, n) < 0) {
            session_close(s, SL_COND_TLS, 451, "4.7.5", "TLS write failed: %s", sl_tls_error(s->tls));
            return;
        }
        flush_tls(s);
    } else {
        raw_write(s, p, n);
    }
}

static void send_line(snd_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_line(snd_session *s, const char *fmt, ...)
{
    sl_buf b = SL_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    sl_debug("smtp %s > %s", s->ip, b.data);
    sl_buf_append(&b, "\r\n", 2);
    send_bytes(s, b.data, b.len);
    sl_buf_free(&b);
}

/* ---- timers and states ---- */

static void on_timeout(uv_timer_t *t)
{
    snd_session *s = t->data;
    if (s->state == S_READY) { /* idle too long: leave politely */
        snd_session_quit(s);
        return;
    }
    session_close(s, SL_COND_TIMEOUT, 451, "4.4.2", "timeout in state %s talking to %s", state_names[s->state],
                  s->ip);
}

static int64_t state_timeout(const snd_session *s, snd_state st)
{
    switch (st) {
    case S_CONNECT:
    case S_SOCKS_HELLO:
    case S_SOCKS_CONNECT: return s->to.connect;
    case S_GREETING: return s->to.greeting;
    case S_EHLO:
    case S_HELO:
    case S_STARTTLS:
    case S_TLS: return s->to.ehlo;
    case S_READY: return s->to.idle;
    case S_TXN: return s->to.rcpt > s->to.mail ? s->to.rcpt : s->to.mail;
    case S_BODY: return s->to.data_block;
    case S_DOT: return s->to.dot;
    case S_QUIT: return s->to.quit;
    default: return 0;
    }
}

static void enter_state(snd_session *s, snd_state st)
{
    if (s->state == S_CLOSED)
        return;
    sl_debug("smtp %s: %s -> %s", s->ip, state_names[s->state], state_names[st]);
    s->state = st;
    int64_t ms = state_timeout(s, st);
    if (ms > 0)
        uv_timer_start(&s->timer, on_timeout, (uint64_t)ms, 0);
    else
        uv_timer_stop(&s->timer);
}

/* The trouble.h stage the session is in, for failures. */
static sl_smtp_stage current_stage(const snd_session *s, snd_state st)
{
    switch (st) {
    case S_CONNECT:
    case S_SOCKS_HELLO:
    case S_SOCKS_CONNECT: return SL_STAGE_CONNECT;
    case S_GREETING: return SL_STAGE_GREETING;
    case S_EHLO:
    case S_HELO: return SL_STAGE_EHLO;
    case S_STARTTLS:
    case S_TLS: return SL_STAGE_STARTTLS;
    case S_TXN:
        if (s->exp_head < s->n_exp) {
            switch (s->exp[s->exp_head].kind) {
            case X_RCPT: return SL_STAGE_RCPT;
            case X_DATA: return SL_STAGE_DATA;
            case X_DOT_DISCARD: return SL_STAGE_DOT;
            default: return SL_STAGE_MAIL; /* RSET in front of a transaction */
            }
        }
        return SL_STAGE_MAIL;
    case S_BODY: return SL_STAGE_DATA; /* not all sent: never a duplicate */
    case S_DOT: return SL_STAGE_DOT;
    case S_QUIT: return SL_STAGE_QUIT;
    default: return SL_STAGE_RSET;
    }
}

/* ---- transactions ---- */

static void push_expect(snd_session *s, expect_kind k, size_t idx)
{
    if (s->n_exp == s->cap_exp) {
        s->cap_exp = s->cap_exp ? s->cap_exp * 2 : 16;
        s->exp = xrealloc(s->exp, s->cap_exp * sizeof *s->exp);
    }
    s->exp[s->n_exp++] = (expect){k, idx};
}

/* Give every recipient without a result the reply r. */
static void fill_unanswered(snd_session *s, const snd_result *r)
{
    snd_txn *t = s->txn;
    for (size_t i = 0; i < t->n_rcpts; i++)
        if (!t->results[i].reply.code)
            snd_result_copy(&t->results[i], r);
}

/* What the transaction's event says about TLS. */
static void txn_tls(snd_session *s, snd_txn *t)
{
    if (s->tls) {
        const char *why;
        snprintf(t->tls_protocol, sizeof t->tls_protocol, "%s", sl_tls_version(s->tls));
        snprintf(t->tls_cipher, sizeof t->tls_cipher, "%s", sl_tls_cipher(s->tls));
        t->tls_verified = sl_tls_verified(s->tls, &why);
        snprintf(t->tls_verify, sizeof t->tls_verify, "%s", why);
    }
    snprintf(t->tls_note, sizeof t->tls_note, "%s", s->tls_note ? s->tls_note : "");
}

static void txn_finish(snd_session *s)
{
    snd_txn *t = s->txn;
    s->txn = NULL;
    s->n_exp = s->exp_head = 0;
    t->smtp_ms = sl_mono_ms() - s->txn_start;
    txn_tls(s, t);
    snd_result_clear(&s->mail_reply);
    free(s->acc);
    s->acc = NULL;
    if (s->state != S_CLOSED)
        enter_state(s, S_READY);
    s->cbs.on_txn_done(s->cbs.arg, s, t);
    if (s->state == S_READY && !s->txn)
        s->cbs.on_ready(s->cbs.arg, s);
}

static void send_rcpt(snd_session *s, size_t i)
{
    send_line(s, "RCPT TO:<%s>", s->txn->rcpts[i]);
    push_expect(s, X_RCPT, i);
}

/* MAIL FROM, and with PIPELINING every RCPT TO and DATA in the same write. */
static void send_mail_group(snd_session *s)
{
    snd_txn *t = s->txn;
    sl_buf mail = SL_BUF_INIT;
    sl_buf_printf(&mail, "MAIL FROM:<%s>", t->mail_from ? t->mail_from : "");
    if (s->esmtp) {
        if (s->size_limit)
            sl_buf_printf(&mail, " SIZE=%zu", t->msg_len);
        if (t->body_8bit && s->eightbit)
            sl_buf_puts(&mail, " BODY=8BITMIME");
        if (t->smtputf8)
            sl_buf_puts(&mail, " SMTPUTF8");
    }
    send_line(s, "%s", mail.data);
    sl_buf_free(&mail);
    push_expect(s, X_MAIL, 0);
    if (s->pipelining) {
        for (size_t i = 0; i < t->n_rcpts; i++)
            send_rcpt(s, i);
        send_line(s, "DATA");
        push_expect(s, X_DATA, 0);
    }
}

void snd_session_send(snd_session *s, snd_txn *t)
{
    SL_ASSERT(s->state == S_READY && !s->txn);
    s->txn = t;
    snd_txn_reset(t);
    t->results = xcalloc(t->n_rcpts ? t->n_rcpts : 1, sizeof *t->results);
    s->acc = xcalloc(t->n_rcpts ? t->n_rcpts : 1, sizeof *s->acc);
    s->accepted = 0;
    s->mail_failed = false;
    s->n_exp = s->exp_head = 0;
    s->next_rcpt = 0;
    s->txn_start = sl_mono_ms();

    /* Refusals we can decide without asking the server. */
    if (t->smtputf8 && !s->smtputf8) {
        snd_result r = {0};
        snd_result_set(&r, 550, "5.6.7",
                       "550 5.6.7 message needs SMTPUTF8 but the server does not offer it");
        fill_unanswered(s, &r);
        snd_result_clear(&r);
        txn_finish(s);
        return;
    }
    if (s->size_limit && t->msg_len > s->size_limit) {
        snd_result r = {0};
        char text[160];
        snprintf(text, sizeof text, "552 5.3.4 message of %zu bytes exceeds the server's SIZE %llu",
                 t->msg_len, (unsigned long long)s->size_limit);
        snd_result_set(&r, 552, "5.3.4", text);
        fill_unanswered(s, &r);
        snd_result_clear(&r);
        txn_finish(s);
        return;
    }

    s->n_txns++;
    enter_state(s, S_TXN);
    if (s->n_txns > 1) {
        send_line(s, "RSET");
        push_expect(s, X_RSET, 0);
        if (!s->pipelining)
            return; /* MAIL follows the RSET reply */
    }
    send_mail_group(s);
}

static void send_body(snd_session *s)
{
    sl_buf b = SL_BUF_INIT;
    snd_msg_dotstuff(s->txn->msg, s->txn->msg_len, &b);
    /* RFC 5321 4.5.3.2.5: the data-block timeout runs while the body is
     * still being written; the final-dot timeout once it is all out. */
    enter_state(s, S_BODY);
    send_bytes(s, b.data, b.len);
    sl_buf_free(&b);
    if (s->state == S_BODY && !s->writes_pending)
        enter_state(s, S_DOT);
}

static void txn_reply(snd_session *s, snd_result *r)
{
    snd_txn *t = s->txn;
    if (s->exp_head >= s->n_exp) {
        session_close(s, SL_COND_PROTOCOL, 451, "4.5.0", "unexpected reply from %s: %s", s->ip, r->reply.raw);
        return;
    }
    expect e = s->exp[s->exp_head++];
    bool ok = r->reply.code >= 200 && r->reply.code < 300;
    static const sl_smtp_stage stage_of[] = {SL_STAGE_RSET, SL_STAGE_MAIL, SL_STAGE_RCPT,
                                             SL_STAGE_DATA, SL_STAGE_DOT};
    r->stage = stage_of[e.kind];
    switch (e.kind) {
    case X_RSET:
        if (!ok) {
            session_close(s, SL_COND_REPLY, r->reply.code == 421 ? 421 : 451, r->reply.enh, "%s", r->reply.raw);
            return;
        }
        if (!s->pipelining) {
            send_mail_group(s);
        }
        break;
    case X_MAIL:
        if (!ok) {
            s->mail_failed = true;
            snd_result_copy(&s->mail_reply, r);
            if (!s->pipelining) {
                fill_unanswered(s, r);
                txn_finish(s);
                return;
            }
        } else if (!s->pipelining) {
            send_rcpt(s, s->next_rcpt++);
        }
        break;
    case X_RCPT:
        if (s->mail_failed) {
            snd_result_copy(&t->results[e.idx], &s->mail_reply);
        } else if (!ok) {
            snd_result_copy(&t->results[e.idx], r);
        } else {
            s->acc[e.idx] = true;
            s->accepted++;
        }
        if (!s->pipelining) {
            if (s->next_rcpt < t->n_rcpts) {
                send_rcpt(s, s->next_rcpt++);
            } else if (s->accepted) {
                send_line(s, "DATA");
                push_expect(s, X_DATA, 0);
                enter_state(s, S_TXN);
                uv_timer_start(&s->timer, on_timeout, (uint64_t)s->to.data, 0);
            } else {
                txn_finish(s);
                return;
            }
        }
        break;
    case X_DATA:
        if (r->reply.code == 354) {
            if (s->mail_failed || !s->accepted) {
                /* RFC 2920: the server should have refused DATA; send an
                 * empty message and ignore its fate. */
                send_line(s, ".");
                push_expect(s, X_DOT_DISCARD, 0);
                break;
            }
            send_body(s);
            return;
        }
        if (!s->mail_failed)
            fill_unanswered(s, r);
        else
            fill_unanswered(s, &s->mail_reply);
        txn_finish(s);
        return;
    case X_DOT_DISCARD:
        fill_unanswered(s, &s->mail_reply);
        txn_finish(s);
        return;
    }
}

/* ---- the reply handlers per state ---- */

static void parse_ehlo(snd_session *s, const snd_result *r)
{
    s->pipelining = s->starttls = s->smtputf8 = s->eightbit = false;
    s->size_limit = 0;
    /* The parsed reply's lines, without their "250-" prefixes: one
     * keyword (and its parameters) a line after the greeting. */
    const char *p = r->reply.text, *end = p ? p + r->reply.text_len : NULL;
    while (p && p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        size_t n = e ? (size_t)(e - p) : (size_t)(end - p);
        if (n > 0) {
            const char *kw = p;
            size_t kn = n;
            if (kn >= 10 && !strncasecmp(kw, "PIPELINING", 10))
                s->pipelining = true;
            else if (kn >= 8 && !strncasecmp(kw, "STARTTLS", 8))
                s->starttls = true;
            else if (kn >= 8 && !strncasecmp(kw, "SMTPUTF8", 8))
                s->smtputf8 = true;
            else if (kn >= 8 && !strncasecmp(kw, "8BITMIME", 8))
                s->eightbit = true;
            else if (kn >= 4 && !strncasecmp(kw, "SIZE", 4))
                s->size_limit = kn > 5 ? strtoull(kw + 5, NULL, 10) : 0;
        }
        p = e ? e + 1 : NULL;
    }
}

static void become_ready(snd_session *s)
{
    bool must = s->tls_policy == SL_TLS_REQUIRED || s->tls_policy == SL_TLS_VERIFY;
    if (!s->tls && must) {
        session_close(s, SL_COND_TLS, 451, "4.7.4", "TLS is required%s but %s does not offer STARTTLS",
                      s->dane ? " by DANE" : "", s->ip);
        return;
    }
    if (!s->tls && !s->tls_note && s->tls_policy == SL_TLS_OPPORTUNISTIC)
        s->tls_note = xstrdup(s->starttls ? "STARTTLS unavailable" : "STARTTLS not offered");
    s->established = true;
    enter_state(s, S_READY);
    s->cbs.on_ready(s->cbs.arg, s);
}

static void after_ehlo(snd_session *s)
{
    if (!s->tls && s->starttls && s->tls_policy != SL_TLS_DISABLED && s->tls_ctx &&
        !s->tls_failed) {
        send_line(s, "STARTTLS");
        enter_state(s, S_STARTTLS);
        return;
    }
    become_ready(s);
}

static void handle_reply(snd_session *s, snd_result *r)
{
    sl_debug("smtp %s < %s", s->ip, r->reply.raw);
    if (r->reply.code == 421 && s->state != S_QUIT) {
        /* The server is closing: every open question gets this answer. */
        session_close(s, SL_COND_REPLY, 421, r->reply.enh[0] ? r->reply.enh : "4.4.2", "%s", r->reply.raw);
        return;
    }
    switch (s->state) {
    case S_GREETING:
        if (r->reply.code != 220) {
            session_close(s, SL_COND_REPLY, r->reply.code, r->reply.enh, "%s", r->reply.raw);
            return;
        }
        send_line(s, "EHLO %s", s->ehlo);
        enter_state(s, S_EHLO);
        break;
    case S_EHLO:
        if (r->reply.code == 250) {
            s->esmtp = true;
            parse_ehlo(s, r);
            after_ehlo(s);
        } else if (r->reply.code >= 500 && !s->tls) {
            send_line(s, "HELO %s", s->ehlo);
            enter_state(s, S_HELO);
        } else {
            session_close(s, SL_COND_REPLY, r->reply.code, r->reply.enh, "%s", r->reply.raw);
        }
        break;
    case S_HELO:
        if (r->reply.code != 250) {
            session_close(s, SL_COND_REPLY, r->reply.code, r->reply.enh, "%s", r->reply.raw);
            return;
        }
        s->esmtp = false;
        become_ready(s);
        break;
    case S_STARTTLS:
        if (r->reply.code != 220) {
            if (s->tls_policy == SL_TLS_REQUIRED || s->tls_policy == SL_TLS_VERIFY) {
                session_close(s, SL_COND_REPLY, 451, "4.7.4", "TLS is required%s but STARTTLS failed: %s",
                              s->dane ? " by DANE" : "", r->reply.raw);
                return;
            }
            free(s->tls_note);
            s->tls_note = xasprintf("STARTTLS refused: %s", r->reply.raw);
            become_ready(s);
            return;
        }
        /* Whatever came with the 220 was sent before the handshake and must
         * not be trusted (CVE-2011-0411): discard it. */
        sl_buf_reset(&s->in);
        s->tls = sl_tls_new(s->tls_ctx, false, s->mx_host);
        /* The name checked is the MX host's, never the address's: an
         * attacker who controls the address must not control the name. */
        if (!s->dane || s->dane->status != SND_DANE_USABLE ||
            sl_tls_dane(s->tls, s->mx_host, s->dane->recs, s->dane->n_recs) < 0)
            sl_tls_verify(s->tls, s->mx_host, s->tls_policy == SL_TLS_VERIFY);
        enter_state(s, S_TLS);
        sl_buf plain = SL_BUF_INIT;
        sl_tls_read(s->tls, &plain); /* starts the handshake */
        sl_buf_free(&plain);
        flush_tls(s);
        break;
    case S_TXN:
        txn_reply(s, r);
        break;
    case S_BODY: /* answered before our write callbacks ran */
    case S_DOT:
        r->stage = SL_STAGE_DOT;
        fill_unanswered(s, r);
        txn_finish(s);
        break;
    case S_QUIT:
        session_close(s, SL_COND_REPLY, 0, NULL, "quit");
        break;
    case S_READY:
        /* Unsolicited (a 421 was handled above); ignore. */
        break;
    default:
        session_close(s, SL_COND_PROTOCOL, 451, "4.5.0", "unexpected reply in state %s: %s", state_names[s->state],
                      r->reply.raw);
    }
}

/* Pull complete replies off s->in. */
static void process_replies(snd_session *s)
{
    for (;;) {
        if (s->state == S_CLOSED || s->state == S_TLS || s->state == S_CONNECT)
            return;
        snd_result r = {0};
        size_t end = 0;
        int rc = sl_reply_parse(s->in.data, s->in.len, &r.reply, &end);
        if (rc == SL_EAGAIN) {
            if (s->in.len > 65536)
                session_close(s, SL_COND_PROTOCOL, 451, "4.5.0", "reply from %s too long", s->ip);
            return;
        }
        if (rc < 0) {
            char bad[128];
            const char *eol = memchr(s->in.data, '\n', s->in.len);
            size_t nl = eol ? (size_t)(eol - s->in.data) : s->in.len;
            snprintf(bad, sizeof bad, "%.*s", (int)(nl > 100 ? 100 : nl), s->in.data);
            session_close(s, SL_COND_PROTOCOL, 451, "4.5.0", "malformed reply from %s: %s", s->ip, bad);
            return;
        }
        sl_buf_consume(&s->in, end);
        handle_reply(s, &r);
        snd_result_clear(&r);
    }
}

/* ---- SOCKS5 (RFC 1928), no authentication ---- */

static void socks_process(snd_session *s)
{
    const unsigned char *p = (const unsigned char *)s->in.data;
    if (s->state == S_SOCKS_HELLO) {
        if (s->in.len < 2)
            return;
        if (p[0] != 5 || p[1] != 0) {
            session_close(s, SL_COND_NETWORK, 451, "4.4.1", "SOCKS5 proxy %s refused the handshake", s->socks5);
            return;
        }
        sl_buf_consume(&s->in, 2);
        unsigned char req[22] = {5, 1, 0};
        size_t n;
        struct in_addr a4;
        struct in6_addr a6;
        if (inet_pton(AF_INET, s->ip, &a4) == 1) {
            req[3] = 1;
            memcpy(req + 4, &a4, 4);
            n = 8;
        } else if (inet_pton(AF_INET6, s->ip, &a6) == 1) {
            req[3] = 4;
            memcpy(req + 4, &a6, 16);
            n = 20;
        } else {
            session_close(s, SL_COND_NETWORK, 451, "4.4.1", "bad address %s", s->ip);
            return;
        }
        req[n] = (unsigned char)(s->port >> 8);
        req[n + 1] = (unsigned char)(s->port & 0xff);
        raw_write(s, req, n + 2);
        enter_state(s, S_SOCKS_CONNECT);
        p = (const unsigned char *)s->in.data;
    }
    if (s->state == S_SOCKS_CONNECT) {
        if (s->in.len < 5)
            return;
        if (p[0] != 5 || p[1] != 0) {
            session_close(s, SL_COND_NETWORK, 451, "4.4.1", "SOCKS5 proxy %s could not connect to %s:%u (reply %u)",
                          s->socks5, s->ip, s->port, p[1]);
            return;
        }
        size_t need = p[3] == 1 ? 10 : p[3] == 4 ? 22 : p[3] == 3 ? (size_t)7 + p[4] : 0;
        if (!need) {
            session_close(s, SL_COND_NETWORK, 451, "4.4.1", "SOCKS5 proxy %s sent a bad reply", s->socks5);
            return;
        }
        if (s->in.len < need)
            return;
        sl_buf_consume(&s->in, need);
        enter_state(s, S_GREETING);
    }
}

/* ---- input ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = xmalloc(16384);
    buf->len = 16384;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    snd_session *s = st->data;
    if (nread < 0) {
        free(buf->base);
        if (s->state == S_QUIT)
            session_close(s, SL_COND_REPLY, 0, NULL, "quit");
        else
            session_close(s, SL_COND_NETWORK, 451, "4.4.2", "connection lost in state %s with %s: %s",
                          state_names[s->state], s->ip,
                          nread == UV_EOF ? "closed by the server" : uv_strerror((int)nread));
        return;
    }
    if (s->tls) {
        sl_tls_feed(s->tls, buf->base, (size_t)nread);
        free(buf->base);
        int rc = sl_tls_read(s->tls, &s->in);
        flush_tls(s);
        if (rc == SL_ETLS) {
            s->tls_failed = true;
            session_close(s, SL_COND_TLS, 451, "4.7.5", "TLS with %s failed: %s", s->ip, sl_tls_error(s->tls));
            return;
        }
        if (rc == SL_ECLOSED && s->state != S_QUIT) {
            session_close(s, SL_COND_NETWORK, 451, "4.4.2", "TLS closed by %s", s->ip);
            return;
        }
        if (s->state == S_TLS && sl_tls_handshake_done(s->tls)) {
            send_line(s, "EHLO %s", s->ehlo);
            enter_state(s, S_EHLO);
        }
    } else {
        sl_buf_append(&s->in, buf->base, (size_t)nread);
        free(buf->base);
    }
    if (s->state == S_SOCKS_HELLO || s->state == S_SOCKS_CONNECT)
        socks_process(s);
    process_replies(s);
}

/* ---- connect and close ---- */

static void on_connect(uv_connect_t *req, int status)
{
    snd_session *s = req->data;
    if (s->state == S_CLOSED)
        return;
    if (status < 0) {
        session_close(s, SL_COND_NETWORK, 451, "4.4.1", "connect to %s:%u%s%s failed: %s", s->ip, s->port,
                      s->socks5 ? " via " : "", s->socks5 ? s->socks5 : "", uv_strerror(status));
        return;
    }
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
    if (s->socks5) {
        static const unsigned char hello[3] = {5, 1, 0};
        raw_write(s, hello, 3);
        enter_state(s, S_SOCKS_HELLO);
    } else {
        enter_state(s, S_GREETING);
    }
}

/* The socket for a bound source address, opened here so that it can say
 * IP_BIND_ADDRESS_NO_PORT first: bind() then leaves the port for connect()
 * to choose per (source, destination) pair. Without it bind() picks a
 * port unique among every socket on the source address, a search whose
 * cost grows with the connections open from that address (milliseconds
 * each with ten thousand, all in the loop thread) and which fails once
 * the ephemeral range is used up, whatever the destinations. */
static int open_unported(snd_session *s, int family)
{
#ifdef IP_BIND_ADDRESS_NO_PORT
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    int rc = uv_tcp_open(&s->tcp, fd);
    if (rc < 0)
        close(fd);
    return rc;
#else
    (void)s;
    (void)family;
    return 0;
#endif
}

static void start_connect(snd_session *s)
{
    struct sockaddr_storage dst;
    char hp[160];
    if (s->socks5)
        snprintf(hp, sizeof hp, "%s", s->socks5);
    else
        snprintf(hp, sizeof hp, strchr(s->ip, ':') ? "[%s]:%u" : "%s:%u", s->ip, s->port);
    if (sl_hostport_addr(hp, 0, &dst) < 0) {
        session_close(s, SL_COND_NETWORK, 451, "4.4.1", "cannot connect to '%s': not an IP address and port", hp);
        return;
    }
    if (s->source_ip && *s->source_ip && !s->socks5) {
        struct sockaddr_storage src;
        char shp[80];
        snprintf(shp, sizeof shp, strchr(s->source_ip, ':') ? "[%s]:0" : "%s:0", s->source_ip);
        int rc = sl_hostport_addr(shp, SL_HP_ANY_PORT, &src);
        if (rc == 0)
            rc = open_unported(s, src.ss_family);
        if (rc == 0)
            rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&src, 0);
        if (rc < 0) {
            session_close(s, SL_COND_NETWORK, 451, "4.4.1", "cannot bind source address %s: %s", s->source_ip,
                          rc == SL_EADDRESS ? "not an IP address" : uv_strerror(rc));
            return;
        }
    }
    s->creq.data = s;
    int rc = uv_tcp_connect(&s->creq, &s->tcp, (struct sockaddr *)&dst, on_connect);
    if (rc < 0)
        session_close(s, SL_COND_NETWORK, 451, "4.4.1", "connect to %s failed: %s", hp, uv_strerror(rc));
}

static void free_session(snd_session *s)
{
    free(s->mx_host);
    free(s->ip);
    free(s->source_ip);
    free(s->ehlo);
    free(s->socks5);
    free(s->tls_note);
    snd_dane_answer_unref(s->dane);
    sl_buf_free(&s->in);
    if (s->tls)
        sl_tls_free(s->tls);
    free(s->exp);
    free(s->acc);
    snd_result_clear(&s->mail_reply);
    snd_result_clear(&s->why);
    free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    snd_session *s = h->data;
    if (--s->handles_open > 0)
        return;
    s->cbs.on_closed(s->cbs.arg, s, s->why.reply.code ? &s->why : NULL, s->established);
    free_session(s);
}

static void session_close(snd_session *s, sl_smtp_cond cond, int code, const char *enh,
                          const char *fmt, ...)
{
    if (s->state == S_CLOSED)
        return;
    snd_state was = s->state;
    /* Whatever ends a session inside the TLS handshake (a bad record, the
     * peer closing, a timeout) is a failed handshake: under opportunistic
     * TLS the pool then tries that destination in plain text. */
    if (was == S_TLS)
        s->tls_failed = true;
    if (code) {
        sl_buf b = SL_BUF_INIT;
        va_list ap;
        va_start(ap, fmt);
        sl_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        /* A server reply is kept as it was said; our own text gets a code. */
        bool server = b.len > 3 && atoi(b.data) == code;
        if (!server) {
            char *t = xasprintf("%d %s%s%s", code, enh && *enh ? enh : "", enh && *enh ? " " : "",
                                b.data);
            snd_result_set(&s->why, code, enh, t);
            free(t);
        } else {
            snd_result_set(&s->why, code, enh, b.data);
        }
        sl_buf_free(&b);
        s->why.stage = current_stage(s, was);
        s->why.cond = cond;
    }
    s->state = S_CLOSED;
    if (s->txn) {
        snd_txn *t = s->txn;
        snd_result r = {0};
        if (s->why.reply.code) {
            snd_result_copy(&r, &s->why);
        } else {
            snd_result_set(&r, 451, "4.4.2", "451 4.4.2 connection closed");
            r.stage = current_stage(s, was);
            r.cond = SL_COND_NETWORK;
        }
        if (was == S_DOT)
            t->possible_duplicate = true;
        fill_unanswered(s, &r);
        snd_result_clear(&r);
        s->txn = NULL;
        t->smtp_ms = sl_mono_ms() - s->txn_start;
        txn_tls(s, t);
        s->cbs.on_txn_done(s->cbs.arg, s, t);
    }
    uv_timer_stop(&s->timer);
    if (s->tls && code == 0) {
        sl_tls_shutdown(s->tls);
        flush_tls(s);
    }
    /* A worker that gave up its drain closes every handle of its loop
     * (walk_close in worker.c); a write cancelled by that close lands
     * here with the handles already closing. */
    if (!uv_is_closing((uv_handle_t *)&s->timer))
        uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&s->tcp))
        uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
}

snd_session *snd_session_new(uv_loop_t *loop, const snd_target *tg, const snd_session_cbs *cbs)
{
    snd_session *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->cbs = *cbs;
    s->mx_host = xstrdup(tg->mx_host ? tg->mx_host : tg->ip);
    s->ip = xstrdup(tg->ip);
    s->port = tg->port ? tg->port : 25;
    s->source_ip = tg->source_ip && *tg->source_ip ? xstrdup(tg->source_ip) : NULL;
    s->ehlo = xstrdup(tg->ehlo && *tg->ehlo ? tg->ehlo : "localhost");
    s->socks5 = tg->socks5 && *tg->socks5 ? xstrdup(tg->socks5) : NULL;
    s->tls_policy = tg->tls;
    s->to = tg->timeouts;
    s->tls_ctx = tg->tls_ctx;
    s->tls_note = tg->tls_note && *tg->tls_note ? xstrdup(tg->tls_note) : NULL;
    s->dane = tg->dane ? snd_dane_answer_ref(tg->dane) : NULL;
    uv_tcp_init(loop, &s->tcp);
    uv_timer_init(loop, &s->timer);
    s->tcp.data = s->timer.data = s;
    s->handles_open = 2;
    s->state = S_CONNECT;
    enter_state(s, S_CONNECT);
    start_connect(s);
    return s;
}

void snd_session_quit(snd_session *s)
{
    if (s->state == S_CLOSED || s->state == S_QUIT)
        return;
    if (s->state == S_READY) {
        send_line(s, "QUIT");
        enter_state(s, S_QUIT);
        return;
    }
    session_close(s, SL_COND_NETWORK, 451, "4.3.2", "session aborted in state %s", state_names[s->state]);
}

bool snd_session_can_send(const snd_session *s)
{
    return s->state == S_READY && !s->txn;
}

unsigned snd_session_txns(const snd_session *s)
{
    return s->n_txns;
}

bool snd_session_tls_failed(const snd_session *s)
{
    return s->tls_failed;
}

void *snd_session_data(const snd_session *s)
{
    return s->data;
}

void snd_session_set_data(snd_session *s, void *data)
{
    s->data = data;
}
