/*
 * smtp_server - see smtp_server.h.
 *
 * A session is a named state machine: smtpd_enter_state() is the only
 * place the state changes, session_read_cb() the only I/O entry, and
 * session_process() the one loop that turns buffered input into replies.
 * Questions to the program (hooks) are asked through ask(); while one is
 * outstanding the loop stops and input waits in s->in.
 *
 * Lifetime: a session holds one reference per outstanding question and one
 * per open libuv handle; it is freed once closed with neither left.
 */
#define _GNU_SOURCE /* strcasestr */
#include "smtp_server.h"
#include "hostport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "log.h"
#include "tls.h"
#include "util.h"

#define SMTPD_LINE_MAX 512    /* command line incl. CRLF (RFC 5321 4.5.3.1.4) */
#define SMTPD_TEXT_MAX 1000   /* text line incl. CRLF (RFC 5321 4.5.3.1.6) */
#define SMTPD_PATH_MAX 256    /* path incl. <> (RFC 5321 4.5.3.1.3) */
#define SMTPD_READ_HIGH 65536 /* stop reading while a question waits */
/* Stop processing input, and reading, while this much output is queued
 * for a client that does not read its replies; resume once it is half
 * drained. Without it a client pipelining commands makes replies pile up
 * in memory without bound. */
#define SMTPD_OUT_HIGH 65536
#define SMTPD_OUT_LOW (SMTPD_OUT_HIGH / 2)

typedef enum {
    S_INIT,       /* connected, on_connect not answered yet */
    S_CONNECTED,  /* banner sent, waiting for EHLO/HELO */
    S_HELO,       /* greeted, no transaction */
    S_MAIL,       /* MAIL accepted, no recipient yet */
    S_RCPT,       /* at least one recipient */
    S_DATA,       /* reading the message */
    S_AUTH_PLAIN, /* waiting for the PLAIN response */
    S_AUTH_USER,  /* LOGIN: waiting for the user name */
    S_AUTH_PASS,  /* LOGIN: waiting for the password */
    S_CLOSING,    /* final reply queued; close once written */
    S_CLOSED
} smtpd_state;

static const char *state_names[] = {"INIT",      "CONNECTED", "HELO",       "MAIL",
                                    "RCPT",      "DATA",      "AUTH_PLAIN", "AUTH_USER",
                                    "AUTH_PASS", "CLOSING",   "CLOSED"};

typedef enum { Q_NONE, Q_CONNECT, Q_MAIL, Q_RCPT, Q_DATA, Q_AUTH } smtpd_question;

typedef struct smtpd_listener {
    uv_tcp_t tcp;
    smtpd_server *srv;
    smtpd_tls_mode mode;
    struct smtpd_listener *next;
} smtpd_listener;

typedef struct ip_count {
    char ip[48];
    unsigned n;
    struct ip_count *next;
} ip_count;

struct smtpd_server {
    uv_loop_t *loop;
    smtpd_config cfg;
    char *hostname;
    smtpd_hooks hooks;
    smtpd_listener *listeners;
    smtpd_session *sessions; /* open (not yet closed) sessions */
    size_t nsessions;        /* allocated, closed or not */
    ip_count *ips;
    smtpd_stats stats;
    int closing_handles;
    bool closing;
    void (*close_cb)(smtpd_server *, void *);
    void *close_arg;
    char rbuf[65536]; /* one loop thread: reads never overlap */
};

struct smtpd_session {
    smtpd_server *srv;
    smtpd_tls_mode mode;
    uv_tcp_t tcp;
    uv_timer_t idle;
    uv_timer_t delay;
    uv_timer_t deadline; /* the command line or DATA phase under way */
    int handles_open;
    int refs;
    bool detached;
    bool processing;
    bool reading;
    bool delay_armed;
    bool deadline_armed;
    bool out_blocked; /* input waits until the client reads its replies */
    smtpd_state state;
    smtpd_state auth_return;
    smtpd_question q;
    char *q_arg; /* the address asked about */
    int delay_code;
    char *delay_text;
    unsigned errors;
    bool skip_line; /* discarding the rest of an overlong command line */
    int writes_pending;
    size_t write_bytes; /* octets handed to uv_write and not yet written */

    sl_tls *tls;
    sl_buf in;   /* plaintext input not yet processed */
    sl_buf out;  /* replies not yet flushed */
    sl_buf dout; /* detached sessions: what was "sent" */

    /* the envelope and the strings it points into */
    smtpd_envelope env;
    char *helo, *from, *auth_user, *login_user;
    char **rcpt;
    size_t rcpt_cap;
    char peer[72], peer_ip[48], local[72];
    ip_count *ipc;

    /* DATA parsing */
    sl_buf msg;
    size_t line_len; /* octets of the current line consumed so far */
    size_t data_bytes;
    bool bad_newline, bad_nul, long_line, too_big;

    void *user;
    smtpd_session *next, *prev;
};

static void session_process(smtpd_session *s);
static void session_close(smtpd_session *s);
static void session_flush(smtpd_session *s);
static void session_read_start(smtpd_session *s);
static void deadline_stop(smtpd_session *s);

/* ---------------------------------------------------------------- state */

static void smtpd_enter_state(smtpd_session *s, smtpd_state st)
{
    if (s->state == S_CLOSED || s->state == st)
        return;
    if (s->state == S_CLOSING && st != S_CLOSED)
        return; /* a final reply has been queued: nothing else happens */
    sl_debug("smtpd %s: %s -> %s", s->peer, state_names[s->state], state_names[st]);
    s->state = st;
}

static void env_sync(smtpd_session *s)
{
    s->env.helo = s->helo;
    s->env.from = s->from;
    s->env.rcpt = (const char **)s->rcpt;
    s->env.auth_user = s->auth_user;
    s->env.tls = s->tls != NULL && sl_tls_handshake_done(s->tls);
    s->env.tls_version = s->tls ? sl_tls_version(s->tls) : "";
    s->env.tls_cipher = s->tls ? sl_tls_cipher(s->tls) : "";
    s->env.peer = s->peer;
    s->env.peer_ip = s->peer_ip;
    s->env.local = s->local;
}

static void trx_reset(smtpd_session *s)
{
    free(s->from);
    s->from = NULL;
    for (size_t i = 0; i < s->env.nrcpt; i++)
        free(s->rcpt[i]);
    s->env.nrcpt = 0;
    if (s->rcpt)
        s->rcpt[0] = NULL;
    s->env.size_declared = -1;
    s->env.body_8bit = false;
    s->env.smtputf8 = false;
    sl_buf_free(&s->msg);
    env_sync(s);
    if (s->state == S_MAIL || s->state == S_RCPT || s->state == S_DATA)
        smtpd_enter_state(s, S_HELO);
}

/* ---------------------------------------------------------------- output */

static void reply(smtpd_session *s, int code, const char *text)
{
    size_t start = s->out.len;
    sl_buf_printf(&s->out, "%d %s", code, text);
    for (size_t i = start; i < s->out.len; i++)
        if (s->out.data[i] == '\r' || s->out.data[i] == '\n' || s->out.data[i] == 0)
            s->out.data[i] = ' ';
    sl_buf_puts(&s->out, "\r\n");
}

/* A 5xx for a bad command; too many of them end the session. */
static void reply_error(smtpd_session *s, int code, const char *text)
{
    reply(s, code, text);
    s->errors++;
    if (s->errors >= s->srv->cfg.max_errors) {
        reply(s, 421, "4.7.0 Too many errors, closing connection");
        smtpd_enter_state(s, S_CLOSING);
    }
}

typedef struct wreq {
    uv_write_t req;
    smtpd_session *s;
    size_t len;
    char data[];
} wreq;

static void write_cb(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    smtpd_session *s = w->s;
    s->write_bytes -= w->len;
    free(w);
    s->writes_pending--;
    if (status < 0 && status != UV_ECANCELED) {
        session_close(s);
        return;
    }
    if (s->state == S_CLOSING && s->writes_pending == 0) {
        session_close(s);
        return;
    }
    /* The client read its replies: take up its input again. */
    if (s->out_blocked && s->write_bytes <= SMTPD_OUT_LOW) {
        s->out_blocked = false;
        session_process(s);
    }
}

static void raw_write(smtpd_session *s, const char *p, size_t n)
{
    if (n == 0 || s->state == S_CLOSED)
        return;
    if (s->detached) {
        sl_buf_append(&s->dout, p, n);
        return;
    }
    wreq *w = xmalloc(sizeof(*w) + n);
    w->s = s;
    w->len = n;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, write_cb);
    if (rc < 0) {
        free(w);
        session_close(s);
        return;
    }
    s->writes_pending++;
    s->write_bytes += n;
}

static void tls_pump(smtpd_session *s)
{
    sl_buf c = SL_BUF_INIT;
    sl_tls_take_output(s->tls, &c);
    raw_write(s, c.data, c.len);
    sl_buf_free(&c);
}

static void session_flush(smtpd_session *s)
{
    if (s->state == S_CLOSED)
        return;
    if (s->out.len) {
        if (s->tls) {
            if (sl_tls_write(s->tls, s->out.data, s->out.len) < 0) {
                sl_buf_reset(&s->out);
                session_close(s);
                return;
            }
        } else {
            raw_write(s, s->out.data, s->out.len);
        }
        sl_buf_reset(&s->out);
    }
    if (s->tls) {
        if (s->state == S_CLOSING)
            sl_tls_shutdown(s->tls);
        tls_pump(s);
    }
    if (s->state == S_CLOSING && s->writes_pending == 0)
        session_close(s);
}

/* ---------------------------------------------------------------- hooks */

static void ask(smtpd_session *s, smtpd_question q, char *arg)
{
    const smtpd_hooks *h = &s->srv->hooks;
    SL_ASSERT(s->q == Q_NONE);
    s->q = q;
    s->q_arg = arg; /* now owned by the session */
    s->refs++;
    env_sync(s);
    if (!s->detached && s->state != S_CLOSED)
        uv_timer_stop(&s->idle); /* our own slowness is not the client's idleness */
    switch (q) {
    case Q_CONNECT:
        if (h->on_connect)
            h->on_connect(h->arg, s);
        else
            smtpd_reply(s, 220, "2.0.0 ready");
        return;
    case Q_MAIL:
        if (h->on_mail)
            h->on_mail(h->arg, s, arg);
        else
            smtpd_reply(s, 250, "2.1.0 Ok");
        return;
    case Q_RCPT:
        if (h->on_rcpt)
            h->on_rcpt(h->arg, s, arg);
        else
            smtpd_reply(s, 250, "2.1.5 Ok");
        return;
    case Q_DATA:
        if (h->on_data)
            h->on_data(h->arg, s, s->msg.data ? s->msg.data : "", s->msg.len);
        else
            smtpd_reply(s, 250, "2.0.0 Ok: queued");
        return;
    case Q_AUTH: {
        /* arg is "user\0pass" */
        const char *user = arg;
        const char *pass = arg + strlen(arg) + 1;
        h->on_auth(h->arg, s, user, pass);
        return;
    }
    case Q_NONE:
        break;
    }
    sl_panic("ask: bad question");
}

static void maybe_free(smtpd_session *s);

void smtpd_reply(smtpd_session *s, int code, const char *text)
{
    SL_ASSERT(s->q != Q_NONE);
    smtpd_question q = s->q;
    char *arg = s->q_arg;
    s->q = Q_NONE;
    s->q_arg = NULL;
    if (s->delay_armed) {
        if (!s->detached && s->state != S_CLOSED)
            uv_timer_stop(&s->delay);
        s->delay_armed = false;
    }
    bool ok = code >= 200 && code < 300;
    if (s->state == S_CLOSED) {
        if (q == Q_AUTH && arg)
            OPENSSL_cleanse(arg, strlen(arg) + 1 + strlen(arg + strlen(arg) + 1));
        free(arg);
        s->refs--;
        maybe_free(s);
        return;
    }
    switch (q) {
    case Q_CONNECT:
        if (ok) {
            sl_buf_printf(&s->out, "220 %s ESMTP sluice\r\n", s->srv->hostname);
            smtpd_enter_state(s, S_CONNECTED);
        } else {
            s->srv->stats.refused++;
            reply(s, code, text);
            smtpd_enter_state(s, S_CLOSING);
        }
        break;
    case Q_MAIL:
        reply(s, code, text);
        if (ok) {
            s->from = arg;
            arg = NULL;
            smtpd_enter_state(s, S_MAIL);
        } else {
            s->env.size_declared = -1;
            s->env.body_8bit = s->env.smtputf8 = false;
        }
        break;
    case Q_RCPT:
        reply(s, code, text);
        if (ok) {
            if (s->env.nrcpt + 2 > s->rcpt_cap) {
                s->rcpt_cap = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
                s->rcpt = xrealloc(s->rcpt, s->rcpt_cap * sizeof(char *));
            }
            s->rcpt[s->env.nrcpt++] = arg;
            s->rcpt[s->env.nrcpt] = NULL;
            arg = NULL;
            smtpd_enter_state(s, S_RCPT);
        }
        break;
    case Q_DATA:
        reply(s, code, text);
        if (ok)
            s->srv->stats.messages++;
        else
            s->srv->stats.rejected++;
        trx_reset(s);
        break;
    case Q_AUTH:
        reply(s, code, text);
        if (code == 235) {
            s->auth_user = xstrdup(arg);
        } else {
            s->errors++;
            if (s->errors >= s->srv->cfg.max_errors) {
                reply(s, 421, "4.7.0 Too many errors, closing connection");
                smtpd_enter_state(s, S_CLOSING);
            }
        }
        OPENSSL_cleanse(arg, strlen(arg) + 1 + strlen(arg + strlen(arg) + 1));
        smtpd_enter_state(s, s->auth_return);
        break;
    case Q_NONE:
        break;
    }
    free(arg);
    if (code == 421)
        smtpd_enter_state(s, S_CLOSING);
    env_sync(s);
    if (!s->detached && s->state != S_CLOSED)
        uv_timer_again(&s->idle);
    s->refs--;
    if (!s->processing)
        session_process(s);
}

static void delay_cb(uv_timer_t *t)
{
    smtpd_session *s = t->data;
    s->delay_armed = false;
    char *text = s->delay_text;
    s->delay_text = NULL;
    smtpd_reply(s, s->delay_code, text ? text : "");
    free(text);
}

void smtpd_reply_after(smtpd_session *s, uint64_t delay_ms, int code, const char *text)
{
    SL_ASSERT(s->q != Q_NONE && !s->delay_armed);
    if (delay_ms == 0 || s->detached || s->state == S_CLOSED) {
        smtpd_reply(s, code, text);
        return;
    }
    s->delay_code = code;
    free(s->delay_text);
    s->delay_text = xstrdup(text);
    s->delay_armed = true;
    uv_timer_start(&s->delay, delay_cb, delay_ms, 0);
}

/* ------------------------------------------------------------- parsing */

static bool is_verb(const char *line, size_t vlen, const char *verb)
{
    return strlen(verb) == vlen && strncasecmp(line, verb, vlen) == 0;
}

/*
 * Parse "<path>" at *pp. On success store the address (source route
 * dropped) in *addr and advance *pp past '>'. Returns 0, or the reply
 * code for the error with *why set.
 */
static int parse_path(const char **pp, char **addr, bool null_ok, bool utf8, const char **why)
{
    const char *p = *pp;
    if (*p != '<') {
        *why = "5.5.4 Syntax: address must be in <>";
        return 501;
    }
    p++;
    const char *start = p;
    bool quoted = false;
    bool nonascii = false;
    for (;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == 0) {
            *why = "5.5.4 Syntax: missing >";
            return 501;
        }
        if (c < 0x20 || c == 0x7f) {
            *why = "5.1.7 Invalid character in address";
            return 553;
        }
        if (c >= 0x80)
            nonascii = true;
        if (quoted && c == '\\' && p[1]) {
            p++;
            continue;
        }
        if (c == '"')
            quoted = !quoted;
        else if (!quoted && c == '>')
            break;
        else if (!quoted && (c == ' ' || c == '<')) {
            *why = "5.1.7 Invalid character in address";
            return 553;
        }
    }
    size_t len = (size_t)(p - start);
    if (len + 2 > SMTPD_PATH_MAX) {
        *why = "5.1.7 Address too long";
        return 553;
    }
    /* A source route "@a,@b:user@d" must be accepted and ignored. */
    if (len > 0 && *start == '@') {
        const char *colon = memchr(start, ':', len);
        if (!colon) {
            *why = "5.1.7 Invalid source route";
            return 553;
        }
        len -= (size_t)(colon + 1 - start);
        start = colon + 1;
    }
    if (nonascii && !utf8) {
        *why = "5.6.7 Non-ASCII address requires SMTPUTF8";
        return 553;
    }
    if (len == 0) {
        if (!null_ok) {
            *why = "5.1.3 Empty address not allowed";
            return 501;
        }
    } else {
        const char *at = NULL;
        for (const char *q = start + len; q > start; q--)
            if (q[-1] == '@') {
                at = q - 1;
                break;
            }
        bool postmaster = len == 10 && strncasecmp(start, "postmaster", 10) == 0;
        if (!postmaster && (!at || at == start || at == start + len - 1)) {
            *why = "5.1.3 Address must be local-part@domain";
            return 501;
        }
        if (at) {
            for (const char *q = at + 1; q < start + len; q++) {
                unsigned char c = (unsigned char)*q;
                if (!(c >= 0x80 || c == '.' || c == '-' || c == '[' || c == ']' || c == ':' ||
                      (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
                    *why = "5.1.2 Invalid domain in address";
                    return 553;
                }
            }
        }
    }
    *addr = xstrndup(start, len);
    *pp = p + 1;
    return 0;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* ------------------------------------------------------------ commands */

static void cmd_helo(smtpd_session *s, char *args, bool esmtp)
{
    const smtpd_config *c = &s->srv->cfg;
    if (!args || !*args || strchr(args, ' ')) {
        reply_error(s, 501, esmtp ? "5.5.4 Syntax: EHLO hostname" : "5.5.4 Syntax: HELO hostname");
        return;
    }
    trx_reset(s);
    free(s->helo);
    s->helo = xstrdup(args);
    s->env.esmtp = esmtp;
    smtpd_enter_state(s, S_HELO);
    env_sync(s);
    if (!esmtp) {
        sl_buf_printf(&s->out, "250 %s\r\n", s->srv->hostname);
        return;
    }
    bool tls = s->tls != NULL;
    sl_buf_printf(&s->out, "250-%s\r\n", s->srv->hostname);
    if (!c->no_pipelining)
        sl_buf_puts(&s->out, "250-PIPELINING\r\n");
    sl_buf_printf(&s->out, "250-SIZE %zu\r\n", c->max_message_size);
    if (!tls && s->mode == SMTPD_STARTTLS && c->tls_ctx)
        sl_buf_puts(&s->out, "250-STARTTLS\r\n");
    if (tls && s->srv->hooks.on_auth && !s->auth_user)
        sl_buf_puts(&s->out, "250-AUTH PLAIN LOGIN\r\n");
    sl_buf_puts(&s->out, "250-ENHANCEDSTATUSCODES\r\n");
    if (!c->no_smtputf8)
        sl_buf_puts(&s->out, "250-SMTPUTF8\r\n");
    sl_buf_puts(&s->out, "250 8BITMIME\r\n");
}

static bool need_helo(smtpd_session *s)
{
    if (s->state == S_CONNECTED) {
        reply_error(s, 503, "5.5.1 Error: send HELO/EHLO first");
        return false;
    }
    return true;
}

static void cmd_mail(smtpd_session *s, char *args)
{
    const smtpd_config *c = &s->srv->cfg;
    if (!need_helo(s))
        return;
    if (s->state != S_HELO) {
        reply_error(s, 503, "5.5.1 Error: nested MAIL command");
        return;
    }
    if (c->require_tls && !s->tls) {
        reply_error(s, 530, "5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (c->require_auth && !s->auth_user) {
        reply_error(s, 530, "5.7.0 Authentication required");
        return;
    }
    if (!args || strncasecmp(args, "FROM:", 5) != 0) {
        reply_error(s, 501, "5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    const char *p = args + 5;
    while (*p == ' ')
        p++;
    /* SMTPUTF8 may appear after the path, so look for it first. */
    bool utf8 = false;
    if (!c->no_smtputf8) {
        const char *q = strchr(p, '>');
        for (q = q ? q + 1 : p; (q = strcasestr(q, "SMTPUTF8")) != NULL; q += 8)
            if (q[-1] == ' ' && (q[8] == 0 || q[8] == ' '))
                utf8 = true;
    }
    char *addr = NULL;
    const char *why = NULL;
    int code = parse_path(&p, &addr, true, utf8, &why);
    if (code) {
        reply_error(s, code, why);
        return;
    }
    int64_t size = -1;
    bool body8 = false, smtputf8 = false;
    while (*p) {
        if (*p != ' ') {
            free(addr);
            reply_error(s, 501, "5.5.4 Syntax: MAIL FROM:<address> [parameters]");
            return;
        }
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, ' ');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *kv = xstrndup(p, n);
        p += n;
        char *val = strchr(kv, '=');
        if (val)
            *val++ = 0;
        bool bad = false;
        if (strcasecmp(kv, "SIZE") == 0 && val && all_digits(val) && strlen(val) <= 18) {
            size = strtoll(val, NULL, 10);
        } else if (strcasecmp(kv, "BODY") == 0 && val &&
                   (strcasecmp(val, "7BIT") == 0 || strcasecmp(val, "8BITMIME") == 0)) {
            body8 = strcasecmp(val, "8BITMIME") == 0;
        } else if (strcasecmp(kv, "SMTPUTF8") == 0 && !val && !c->no_smtputf8) {
            smtputf8 = true;
        } else if (strcasecmp(kv, "AUTH") == 0 && val) {
            /* RFC 4954 5: accepted and ignored. */
        } else {
            bad = true;
        }
        if (bad) {
            char *msg = xasprintf("5.5.4 Unsupported parameter: %.60s", kv);
            free(kv);
            free(addr);
            reply_error(s, 555, msg);
            free(msg);
            return;
        }
        free(kv);
    }
    if (size >= 0 && (uint64_t)size > c->max_message_size) {
        free(addr);
        reply(s, 552, "5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    s->env.size_declared = size;
    s->env.body_8bit = body8;
    s->env.smtputf8 = smtputf8;
    ask(s, Q_MAIL, addr);
}

static void cmd_rcpt(smtpd_session *s, char *args)
{
    if (!need_helo(s))
        return;
    if (s->state != S_MAIL && s->state != S_RCPT) {
        reply_error(s, 503, "5.5.1 Error: need MAIL command");
        return;
    }
    if (!args || strncasecmp(args, "TO:", 3) != 0) {
        reply_error(s, 501, "5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (s->env.nrcpt >= s->srv->cfg.max_rcpt) {
        reply(s, 452, "4.5.3 Too many recipients");
        return;
    }
    const char *p = args + 3;
    while (*p == ' ')
        p++;
    char *addr = NULL;
    const char *why = NULL;
    int code = parse_path(&p, &addr, false, s->env.smtputf8, &why);
    if (code) {
        reply_error(s, code, why);
        return;
    }
    while (*p == ' ')
        p++;
    if (*p) {
        free(addr);
        reply_error(s, 555, "5.5.4 Unsupported parameter");
        return;
    }
    ask(s, Q_RCPT, addr);
}

static void cmd_data(smtpd_session *s, char *args)
{
    if (!need_helo(s))
        return;
    if (args) {
        reply_error(s, 501, "5.5.4 Syntax: DATA");
        return;
    }
    if (s->state == S_MAIL) {
        reply(s, 554, "5.5.1 Error: no valid recipients");
        return;
    }
    if (s->state != S_RCPT) {
        reply_error(s, 503, "5.5.1 Error: need RCPT command");
        return;
    }
    sl_buf_reset(&s->msg);
    s->line_len = 0;
    s->data_bytes = 0;
    s->bad_newline = s->bad_nul = s->long_line = s->too_big = false;
    reply(s, 354, "End data with <CR><LF>.<CR><LF>");
    smtpd_enter_state(s, S_DATA);
}

static void cmd_starttls(smtpd_session *s, char *args)
{
    const smtpd_config *c = &s->srv->cfg;
    if (s->tls || s->mode != SMTPD_STARTTLS || !c->tls_ctx) {
        reply_error(s, 502, "5.5.1 STARTTLS not available");
        return;
    }
    if (args) {
        reply_error(s, 501, "5.5.4 Syntax: STARTTLS");
        return;
    }
    reply(s, 220, "2.0.0 Ready to start TLS");
    session_flush(s);
    /* CVE-2011-0411: whatever the client pipelined after STARTTLS was sent
     * in clear text and must not be read as if it came through TLS. */
    sl_buf_reset(&s->in);
    s->tls = sl_tls_new(c->tls_ctx, true, NULL);
    /* RFC 3207 4.2: forget everything learnt before TLS. */
    trx_reset(s);
    free(s->helo);
    s->helo = NULL;
    s->state = S_CONNECTED;
    env_sync(s);
}

static bool b64_decode(const char *in, char **out, size_t *outlen)
{
    size_t n = strlen(in);
    if (n % 4 != 0)
        return false;
    if (n == 0) {
        *out = xstrdup("");
        *outlen = 0;
        return true;
    }
    unsigned char *buf = xmalloc(n / 4 * 3 + 1);
    int r = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n);
    if (r < 0) {
        free(buf);
        return false;
    }
    size_t len = (size_t)r;
    if (in[n - 1] == '=')
        len--;
    if (in[n - 2] == '=')
        len--;
    buf[len] = 0;
    *out = (char *)buf;
    *outlen = len;
    return true;
}

static void auth_ask(smtpd_session *s, const char *user, size_t ulen, const char *pass, size_t plen)
{
    if (memchr(user, 0, ulen) || memchr(pass, 0, plen) || ulen == 0) {
        reply_error(s, 535, "5.7.8 Authentication credentials invalid");
        smtpd_enter_state(s, s->auth_return);
        return;
    }
    char *arg = xmalloc(ulen + plen + 2);
    memcpy(arg, user, ulen);
    arg[ulen] = 0;
    memcpy(arg + ulen + 1, pass, plen);
    arg[ulen + 1 + plen] = 0;
    ask(s, Q_AUTH, arg);
}

/* The decoded PLAIN response: authzid NUL authcid NUL password. */
static void auth_plain(smtpd_session *s, const char *b64)
{
    char *d;
    size_t n;
    if (!b64_decode(b64, &d, &n)) {
        reply_error(s, 501, "5.5.2 Cannot decode response");
        smtpd_enter_state(s, s->auth_return);
        return;
    }
    char *z1 = memchr(d, 0, n);
    char *z2 = z1 ? memchr(z1 + 1, 0, n - (size_t)(z1 + 1 - d)) : NULL;
    if (!z1 || !z2 || (z1 != d && (strcmp(d, z1 + 1) != 0))) {
        OPENSSL_cleanse(d, n);
        free(d);
        reply_error(s, 535, "5.7.8 Authentication credentials invalid");
        smtpd_enter_state(s, s->auth_return);
        return;
    }
    auth_ask(s, z1 + 1, (size_t)(z2 - z1 - 1), z2 + 1, n - (size_t)(z2 + 1 - d));
    OPENSSL_cleanse(d, n);
    free(d);
}

static void cmd_auth(smtpd_session *s, char *args)
{
    if (!s->srv->hooks.on_auth) {
        reply_error(s, 502, "5.5.1 AUTH not available");
        return;
    }
    if (!s->tls) {
        reply_error(s, 538, "5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (!need_helo(s))
        return;
    if (s->auth_user) {
        reply_error(s, 503, "5.5.1 Already authenticated");
        return;
    }
    if (s->state != S_HELO) {
        reply_error(s, 503, "5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    if (!args) {
        reply_error(s, 501, "5.5.4 Syntax: AUTH mechanism");
        return;
    }
    char *initial = strchr(args, ' ');
    if (initial)
        *initial++ = 0;
    s->auth_return = S_HELO;
    if (strcasecmp(args, "PLAIN") == 0) {
        if (!initial) {
            reply(s, 334, "");
            smtpd_enter_state(s, S_AUTH_PLAIN);
        } else {
            auth_plain(s, strcmp(initial, "=") == 0 ? "" : initial);
        }
    } else if (strcasecmp(args, "LOGIN") == 0) {
        if (!initial) {
            reply(s, 334, "VXNlcm5hbWU6"); /* "Username:" */
            smtpd_enter_state(s, S_AUTH_USER);
        } else {
            char *u;
            size_t n;
            if (!b64_decode(initial, &u, &n)) {
                reply_error(s, 501, "5.5.2 Cannot decode response");
                return;
            }
            free(s->login_user);
            s->login_user = u;
            reply(s, 334, "UGFzc3dvcmQ6"); /* "Password:" */
            smtpd_enter_state(s, S_AUTH_PASS);
        }
    } else {
        reply_error(s, 504, "5.5.4 Unrecognized authentication type");
    }
}

/* A line typed in answer to a 334 challenge. */
static void auth_line(smtpd_session *s, char *line)
{
    if (strcmp(line, "*") == 0) {
        reply(s, 501, "5.7.0 Authentication cancelled");
        smtpd_enter_state(s, s->auth_return);
        return;
    }
    if (s->state == S_AUTH_PLAIN) {
        auth_plain(s, line);
        return;
    }
    char *d;
    size_t n;
    if (!b64_decode(line, &d, &n)) {
        reply_error(s, 501, "5.5.2 Cannot decode response");
        smtpd_enter_state(s, s->auth_return);
        return;
    }
    if (s->state == S_AUTH_USER) {
        free(s->login_user);
        s->login_user = d;
        reply(s, 334, "UGFzc3dvcmQ6");
        smtpd_enter_state(s, S_AUTH_PASS);
        return;
    }
    char *user = s->login_user;
    s->login_user = NULL;
    auth_ask(s, user, strlen(user), d, n);
    free(user);
    OPENSSL_cleanse(d, n);
    free(d);
}

static void handle_line(smtpd_session *s, char *line, size_t len)
{
    if (s->state == S_AUTH_PLAIN || s->state == S_AUTH_USER || s->state == S_AUTH_PASS) {
        auth_line(s, line);
        return;
    }
    size_t vlen = strcspn(line, " ");
    char *args = line[vlen] ? line + vlen + 1 : NULL;
    if (args) {
        /* Trailing spaces are common and harmless; an empty argument is
         * no argument. */
        size_t al = strlen(args);
        while (al > 0 && args[al - 1] == ' ')
            args[--al] = 0;
        if (al == 0)
            args = NULL;
    }
    if (is_verb(line, vlen, "EHLO"))
        cmd_helo(s, args, true);
    else if (is_verb(line, vlen, "HELO"))
        cmd_helo(s, args, false);
    else if (is_verb(line, vlen, "MAIL"))
        cmd_mail(s, args);
    else if (is_verb(line, vlen, "RCPT"))
        cmd_rcpt(s, args);
    else if (is_verb(line, vlen, "DATA"))
        cmd_data(s, args);
    else if (is_verb(line, vlen, "RSET")) {
        if (args) {
            reply_error(s, 501, "5.5.4 Syntax: RSET");
            return;
        }
        trx_reset(s);
        reply(s, 250, "2.0.0 Ok");
    } else if (is_verb(line, vlen, "NOOP"))
        reply(s, 250, "2.0.0 Ok");
    else if (is_verb(line, vlen, "QUIT")) {
        reply(s, 221, "2.0.0 Bye");
        smtpd_enter_state(s, S_CLOSING);
    } else if (is_verb(line, vlen, "STARTTLS"))
        cmd_starttls(s, args);
    else if (is_verb(line, vlen, "AUTH"))
        cmd_auth(s, args);
    else if (is_verb(line, vlen, "HELP"))
        reply(s, 214, "2.0.0 See RFC 5321");
    else if (is_verb(line, vlen, "VRFY") || is_verb(line, vlen, "EXPN"))
        reply(s, 502, "5.5.1 Command disabled");
    else if (is_verb(line, vlen, "BDAT"))
        reply_error(s, 502, "5.5.1 CHUNKING not supported");
    else
        reply_error(s, 500, "5.5.2 Error: command not recognized");
    (void)len;
}

/* One command line from s->in; returns true if it consumed input. */
static bool line_consume(smtpd_session *s)
{
    char *b = s->in.data;
    size_t n = s->in.len;
    if (s->skip_line) {
        for (size_t i = 0; i + 1 < n; i++)
            if (b[i] == '\r' && b[i + 1] == '\n') {
                sl_buf_consume(&s->in, i + 2);
                s->skip_line = false;
                deadline_stop(s);
                return true;
            }
        size_t keep = (n > 0 && b[n - 1] == '\r') ? 1 : 0;
        sl_buf_consume(&s->in, n - keep);
        return false;
    }
    size_t p = 0;
    while (p < n && b[p] != '\r' && b[p] != '\n')
        p++;
    if (p > SMTPD_LINE_MAX - 2) {
        reply_error(s, 500, "5.5.2 Error: line too long");
        sl_buf_consume(&s->in, p);
        s->skip_line = true;
        return true;
    }
    if (p == n)
        return false;
    if (b[p] == '\r' && p + 1 == n)
        return false; /* the LF may be in the next read */
    if (b[p] == '\n' || b[p + 1] != '\n') {
        reply(s, 500, "5.5.2 Bare LF/CR not allowed");
        sl_buf_reset(&s->in);
        smtpd_enter_state(s, S_CLOSING);
        return true;
    }
    char *line = xstrndup(b, p);
    sl_buf_consume(&s->in, p + 2);
    deadline_stop(s);
    if (memchr(line, 0, p)) {
        reply_error(s, 500, "5.5.2 Error: NUL in command");
    } else {
        handle_line(s, line, p);
    }
    free(line);
    return true;
}

static void data_store(smtpd_session *s, const char *p, size_t n)
{
    s->data_bytes += n;
    if (s->data_bytes > s->srv->cfg.max_message_size)
        s->too_big = true;
    if (!s->too_big && !s->bad_newline && !s->bad_nul && !s->long_line)
        sl_buf_append(&s->msg, p, n);
}

static void data_done(smtpd_session *s)
{
    if (s->too_big) {
        reply(s, 552, "5.3.4 Message size exceeds fixed maximum message size");
    } else if (s->bad_newline) {
        reply(s, 550, "5.6.0 Bare CR or LF in message not allowed");
    } else if (s->bad_nul) {
        reply(s, 550, "5.6.0 NUL in message not allowed");
    } else if (s->long_line) {
        reply(s, 550, "5.6.0 Message line longer than 1000 octets");
    } else {
        ask(s, Q_DATA, NULL);
        return;
    }
    s->srv->stats.rejected++;
    trx_reset(s);
}

/*
 * Consume message bytes. Lines split only at CRLF, so only CRLF.CRLF ends
 * the message: a bare LF or CR is content (which rejects the message),
 * never a line end. Works through everything buffered before consuming it
 * once, so a large message costs no quadratic copying. Returns true if it
 * consumed input.
 */
static bool data_consume(smtpd_session *s)
{
    const char *b = s->in.data;
    size_t n = s->in.len, off = 0;
    bool ended = false;
    while (off < n) {
        if (s->line_len == 0 && b[off] == '.') {
            /* At a line start a dot needs the next bytes to tell the end
             * (".\r\n") from a stuffed dot. */
            size_t rem = n - off;
            if (rem < 3 && (rem < 2 || b[off + 1] == '\r'))
                break;
            if (b[off + 1] == '\r' && b[off + 2] == '\n') {
                off += 3;
                ended = true;
                break;
            }
            off++;
            s->line_len = 1; /* the stuffing dot counts towards the line length */
            continue;
        }
        size_t p = off;
        bool found = false, trailing_cr = false;
        const char *cr;
        while ((cr = memchr(b + p, '\r', n - p)) != NULL) {
            size_t i = (size_t)(cr - b);
            if (i + 1 == n) {
                trailing_cr = true; /* its LF may come with the next read */
                p = i;
                break;
            }
            if (b[i + 1] == '\n') {
                found = true;
                p = i;
                break;
            }
            s->bad_newline = true; /* bare CR */
            p = i + 1;
        }
        if (!found && !trailing_cr)
            p = n;
        size_t clen = p - off;
        if (memchr(b + off, '\n', clen))
            s->bad_newline = true; /* any LF before the first CRLF is bare */
        if (memchr(b + off, 0, clen))
            s->bad_nul = true;
        s->line_len += clen;
        if (found) {
            if (s->line_len + 2 > SMTPD_TEXT_MAX)
                s->long_line = true;
            data_store(s, b + off, clen + 2);
            off = p + 2;
            s->line_len = 0;
        } else {
            if (s->line_len + 2 > SMTPD_TEXT_MAX)
                s->long_line = true;
            data_store(s, b + off, clen);
            off = p;
            break;
        }
    }
    sl_buf_consume(&s->in, off);
    if (ended) {
        deadline_stop(s);
        smtpd_enter_state(s, S_HELO);
        data_done(s);
    }
    return off > 0;
}

/*
 * The deadline of the command under way: a command line must be complete
 * within command_timeout_ms of the read that brought its first octet (or
 * the first octet of a TLS record or handshake, which may hold no line
 * yet), and the message within data_timeout_ms of the 354. The idle timer
 * alone restarts on every read, so a client trickling one octet at a time
 * would hold the session for ever. The command deadline stops when a line
 * is complete; one arrives without further input only with a new read.
 */
static void deadline_stop(smtpd_session *s)
{
    if (!s->deadline_armed)
        return;
    s->deadline_armed = false;
    if (!s->detached && s->state != S_CLOSED)
        uv_timer_stop(&s->deadline);
}

static void deadline_cb(uv_timer_t *t)
{
    smtpd_session *s = t->data;
    s->deadline_armed = false;
    if (s->state == S_CLOSING) {
        session_close(s); /* the client does not even take the final reply */
        return;
    }
    if (s->q != Q_NONE || s->state == S_CLOSED)
        return;
    char *text = xasprintf("4.4.2 %s Error: %s timeout exceeded", s->srv->hostname,
                           s->state == S_DATA ? "data" : "command");
    sl_info("smtpd %s: %s timeout in state %s", s->peer, s->state == S_DATA ? "data" : "command",
            state_names[s->state]);
    reply(s, 421, text);
    free(text);
    smtpd_enter_state(s, S_CLOSING);
    sl_buf_reset(&s->in);
    session_flush(s);
}

static void deadline_arm(smtpd_session *s, uint64_t ms)
{
    if (s->deadline_armed || s->detached)
        return;
    s->deadline_armed = true;
    uv_timer_start(&s->deadline, deadline_cb, ms, 0);
}

/* Octets arrived: in a command state with nothing asked of the program,
 * they start a command line. */
static void deadline_read(smtpd_session *s)
{
    if (s->q == Q_NONE && s->state != S_INIT && s->state != S_DATA && s->state != S_CLOSING &&
        s->state != S_CLOSED)
        deadline_arm(s, s->srv->cfg.command_timeout_ms);
}

/* Output queued for the client: replies being written and those not yet
 * flushed. Detached sessions "send" into a buffer and never block. */
static bool out_high(const smtpd_session *s)
{
    return !s->detached && s->write_bytes + s->out.len > SMTPD_OUT_HIGH;
}

static void session_process(smtpd_session *s)
{
    if (s->processing)
        return;
    s->processing = true;
    while (s->q == Q_NONE && s->state != S_INIT && s->state != S_CLOSING && s->state != S_CLOSED &&
           s->in.len > 0) {
        if (out_high(s)) {
            session_flush(s);
            if (s->state == S_CLOSED || out_high(s)) {
                s->out_blocked = true;
                break;
            }
        }
        bool progress = s->state == S_DATA ? data_consume(s) : line_consume(s);
        if (!progress)
            break;
    }
    s->processing = false;
    if (s->state == S_CLOSING)
        sl_buf_reset(&s->in);
    session_flush(s);
    if (s->detached || s->state == S_CLOSED)
        return;
    if (s->state == S_DATA)
        deadline_arm(s, s->srv->cfg.data_timeout_ms); /* once, when DATA starts */
    bool want = (s->q == Q_NONE || s->in.len < SMTPD_READ_HIGH) && !s->out_blocked;
    if (want && !s->reading) {
        session_read_start(s);
    } else if (!want && s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
}

/* ------------------------------------------------------------ transport */

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    smtpd_session *s = h->data;
    buf->base = s->srv->rbuf;
    buf->len = sizeof(s->srv->rbuf);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    smtpd_session *s = st->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        session_close(s);
        return;
    }
    if (s->state == S_CLOSING || s->state == S_CLOSED)
        return;
    uv_timer_again(&s->idle);
    deadline_read(s);
    if (s->tls) {
        sl_tls_feed(s->tls, buf->base, (size_t)nread);
        int rc = sl_tls_read(s->tls, &s->in);
        tls_pump(s);
        if (rc < 0) {
            if (rc == SL_ETLS)
                sl_debug("smtpd %s: %s", s->peer, sl_tls_error(s->tls));
            session_close(s);
            return;
        }
        env_sync(s);
    } else {
        sl_buf_append(&s->in, buf->base, (size_t)nread);
    }
    session_process(s);
}

static void session_read_start(smtpd_session *s)
{
    if (uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb) == 0)
        s->reading = true;
}

static void idle_cb(uv_timer_t *t)
{
    smtpd_session *s = t->data;
    if (s->state == S_CLOSING) {
        /* A whole idle period since the final reply was queued: the client
         * does not read it (the timer repeats). */
        session_close(s);
        return;
    }
    if (s->q != Q_NONE || s->state == S_CLOSED)
        return;
    char *text = xasprintf("4.4.2 %s Error: timeout exceeded", s->srv->hostname);
    reply(s, 421, text);
    free(text);
    smtpd_enter_state(s, S_CLOSING);
    session_flush(s);
}

static void server_maybe_done(smtpd_server *srv)
{
    if (srv->closing && srv->closing_handles == 0 && srv->nsessions == 0 && srv->close_cb) {
        void (*cb)(smtpd_server *, void *) = srv->close_cb;
        srv->close_cb = NULL;
        cb(srv, srv->close_arg);
    }
}

static void session_free(smtpd_session *s)
{
    smtpd_server *srv = s->srv;
    trx_reset(s);
    free(s->rcpt);
    free(s->helo);
    free(s->auth_user);
    free(s->login_user);
    free(s->delay_text);
    free(s->q_arg);
    sl_buf_free(&s->in);
    sl_buf_free(&s->out);
    sl_buf_free(&s->dout);
    sl_buf_free(&s->msg);
    sl_tls_free(s->tls);
    free(s);
    srv->nsessions--;
    server_maybe_done(srv);
}

static void maybe_free(smtpd_session *s)
{
    if (s->state == S_CLOSED && s->refs == 0 && s->handles_open == 0 && !s->detached)
        session_free(s);
}

static void handle_closed_cb(uv_handle_t *h)
{
    smtpd_session *s = h->data;
    s->handles_open--;
    maybe_free(s);
}

static void session_close(smtpd_session *s)
{
    if (s->state == S_CLOSED)
        return;
    smtpd_server *srv = s->srv;
    s->state = S_CLOSED;
    /* Unlink and release the per-IP slot now: a closed session is no
     * longer a connection even while a hook still owes it an answer. */
    if (s->prev)
        s->prev->next = s->next;
    else if (srv->sessions == s)
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    if (s->ipc)
        s->ipc->n--;
    s->ipc = NULL;
    srv->stats.active--;
    if (s->delay_armed) {
        /* The delayed answer counts as given; it is discarded. */
        s->delay_armed = false;
        s->q = Q_NONE;
        free(s->q_arg);
        s->q_arg = NULL;
        s->refs--;
    }
    s->refs++; /* on_close may answer; do not free under its feet */
    if (srv->hooks.on_close)
        srv->hooks.on_close(srv->hooks.arg, s);
    s->refs--;
    if (s->detached)
        return;
    uv_close((uv_handle_t *)&s->tcp, handle_closed_cb);
    uv_close((uv_handle_t *)&s->idle, handle_closed_cb);
    uv_close((uv_handle_t *)&s->delay, handle_closed_cb);
    uv_close((uv_handle_t *)&s->deadline, handle_closed_cb);
}

void smtpd_session_drop(smtpd_session *s)
{
    session_close(s);
}

static ip_count *ip_slot(smtpd_server *srv, const char *ip)
{
    ip_count **pp = &srv->ips;
    for (ip_count *c = srv->ips; c; c = c->next) {
        if (strcmp(c->ip, ip) == 0)
            return c;
    }
    /* Reuse an empty slot so the list stays as long as the distinct
     * clients connected now, not ever. */
    for (ip_count *c = srv->ips; c; c = c->next)
        if (c->n == 0) {
            snprintf(c->ip, sizeof(c->ip), "%s", ip);
            return c;
        }
    ip_count *c = xcalloc(1, sizeof(*c));
    snprintf(c->ip, sizeof(c->ip), "%s", ip);
    c->next = *pp;
    *pp = c;
    return c;
}

static void sockaddr_str(const struct sockaddr_storage *ss, char *ip, size_t iplen, char *full,
                         size_t fulllen)
{
    int port = 0;
    ip[0] = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, ip, iplen);
        port = ntohs(a->sin_port);
        snprintf(full, fulllen, "%s:%d", ip, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, ip, iplen);
        port = ntohs(a->sin6_port);
        snprintf(full, fulllen, "[%s]:%d", ip, port);
    } else {
        snprintf(ip, iplen, "unknown");
        snprintf(full, fulllen, "unknown");
    }
}

static smtpd_session *session_alloc(smtpd_server *srv, smtpd_tls_mode mode)
{
    smtpd_session *s = xcalloc(1, sizeof(*s));
    s->srv = srv;
    s->mode = mode;
    s->state = S_INIT;
    s->env.size_declared = -1;
    srv->nsessions++;
    srv->stats.connections++;
    srv->stats.active++;
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    return s;
}

/* Limits, then implicit TLS, then the on_connect question. */
static void session_start(smtpd_session *s)
{
    smtpd_server *srv = s->srv;
    s->ipc = ip_slot(srv, s->peer_ip);
    s->ipc->n++;
    env_sync(s);
    const char *refuse = NULL;
    if (srv->closing)
        refuse = "4.3.2 Service shutting down";
    else if (srv->stats.active > srv->cfg.max_conn)
        refuse = "4.7.0 Too many connections";
    else if (s->ipc->n > srv->cfg.max_conn_per_ip)
        refuse = "4.7.0 Too many connections from your IP";
    if (s->mode == SMTPD_TLS && srv->cfg.tls_ctx)
        s->tls = sl_tls_new(srv->cfg.tls_ctx, true, NULL);
    if (refuse) {
        srv->stats.refused++;
        reply(s, 421, refuse);
        smtpd_enter_state(s, S_CLOSING);
        session_flush(s);
        return;
    }
    s->processing = true;
    ask(s, Q_CONNECT, NULL);
    s->processing = false;
    session_process(s);
}

static void accept_cb(uv_stream_t *server, int status)
{
    smtpd_listener *l = server->data;
    smtpd_server *srv = l->srv;
    if (status < 0) {
        sl_warn("smtpd: accept: %s", uv_strerror(status));
        return;
    }
    smtpd_session *s = session_alloc(srv, l->mode);
    uv_tcp_init(srv->loop, &s->tcp);
    uv_timer_init(srv->loop, &s->idle);
    uv_timer_init(srv->loop, &s->delay);
    uv_timer_init(srv->loop, &s->deadline);
    s->tcp.data = s->idle.data = s->delay.data = s->deadline.data = s;
    s->handles_open = 4;
    if (uv_accept(server, (uv_stream_t *)&s->tcp) < 0) {
        session_close(s);
        return;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len);
    sockaddr_str(&ss, s->peer_ip, sizeof(s->peer_ip), s->peer, sizeof(s->peer));
    len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len);
    char lip[48];
    sockaddr_str(&ss, lip, sizeof(lip), s->local, sizeof(s->local));
    uv_timer_start(&s->idle, idle_cb, srv->cfg.idle_timeout_ms, srv->cfg.idle_timeout_ms);
    session_read_start(s);
    session_start(s);
}

/* ---------------------------------------------------------------- server */

smtpd_server *smtpd_server_new(uv_loop_t *loop, const smtpd_config *cfg, const smtpd_hooks *hooks)
{
    smtpd_server *srv = xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = *cfg;
    if (cfg->hostname && *cfg->hostname) {
        srv->hostname = xstrdup(cfg->hostname);
    } else {
        char h[256] = "localhost";
        gethostname(h, sizeof(h) - 1);
        srv->hostname = xstrdup(h);
    }
    srv->cfg.hostname = srv->hostname;
    if (!srv->cfg.max_message_size)
        srv->cfg.max_message_size = 35u << 20;
    if (!srv->cfg.max_rcpt)
        srv->cfg.max_rcpt = 100;
    if (!srv->cfg.max_conn)
        srv->cfg.max_conn = 1000;
    if (!srv->cfg.max_conn_per_ip)
        srv->cfg.max_conn_per_ip = 20;
    if (!srv->cfg.max_errors)
        srv->cfg.max_errors = 10;
    if (!srv->cfg.idle_timeout_ms)
        srv->cfg.idle_timeout_ms = 300000;
    if (!srv->cfg.command_timeout_ms)
        srv->cfg.command_timeout_ms = 60000;
    if (!srv->cfg.data_timeout_ms)
        srv->cfg.data_timeout_ms = 600000;
    if (hooks)
        srv->hooks = *hooks;
    return srv;
}

static void listener_closed_cb(uv_handle_t *h)
{
    smtpd_listener *l = h->data;
    smtpd_server *srv = l->srv;
    free(l);
    srv->closing_handles--;
    server_maybe_done(srv);
}

int smtpd_server_listen(smtpd_server *srv, const char *hostport, smtpd_tls_mode mode,
                        int *bound_port)
{
    if (mode != SMTPD_PLAIN && !srv->cfg.tls_ctx)
        return SL_EINVAL;
    struct sockaddr_storage ss;
    int rc = sl_hostport_addr(hostport, SL_HP_LISTEN | SL_HP_RESOLVE, &ss);
    if (rc)
        return rc;
    smtpd_listener *l = xcalloc(1, sizeof(*l));
    l->srv = srv;
    l->mode = mode;
    uv_tcp_init(srv->loop, &l->tcp);
    l->tcp.data = l;
    rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 511, accept_cb);
    if (rc < 0) {
        srv->closing_handles++;
        uv_close((uv_handle_t *)&l->tcp, listener_closed_cb);
        return rc;
    }
    if (bound_port) {
        struct sockaddr_storage b;
        int len = sizeof(b);
        uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&b, &len);
        *bound_port = b.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&b)->sin6_port)
                                              : ntohs(((struct sockaddr_in *)&b)->sin_port);
    }
    l->next = srv->listeners;
    srv->listeners = l;
    return 0;
}

void smtpd_server_close(smtpd_server *srv, void (*cb)(smtpd_server *, void *), void *arg)
{
    srv->closing = true;
    srv->close_cb = cb;
    srv->close_arg = arg;
    for (smtpd_listener *l = srv->listeners, *next; l; l = next) {
        next = l->next;
        srv->closing_handles++;
        uv_close((uv_handle_t *)&l->tcp, listener_closed_cb);
    }
    srv->listeners = NULL;
    while (srv->sessions)
        session_close(srv->sessions);
    server_maybe_done(srv);
}

void smtpd_server_free(smtpd_server *srv)
{
    if (!srv)
        return;
    SL_ASSERT(srv->listeners == NULL && srv->nsessions == 0);
    for (ip_count *c = srv->ips, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(srv->hostname);
    free(srv);
}

void smtpd_server_stats(smtpd_server *srv, smtpd_stats *out)
{
    *out = srv->stats;
}

/* ------------------------------------------------------------ accessors */

const smtpd_envelope *smtpd_session_envelope(smtpd_session *s)
{
    env_sync(s);
    return &s->env;
}

smtpd_server *smtpd_session_server(smtpd_session *s)
{
    return s->srv;
}

void smtpd_session_set_data(smtpd_session *s, void *data)
{
    s->user = data;
}

void *smtpd_session_data(smtpd_session *s)
{
    return s->user;
}

bool smtpd_session_closed(smtpd_session *s)
{
    return s->state == S_CLOSED;
}

/* ------------------------------------------------------------- detached */

smtpd_session *smtpd_session_new_detached(smtpd_server *srv)
{
    smtpd_session *s = session_alloc(srv, srv->cfg.tls_ctx ? SMTPD_STARTTLS : SMTPD_PLAIN);
    s->detached = true;
    snprintf(s->peer_ip, sizeof(s->peer_ip), "127.0.0.1");
    snprintf(s->peer, sizeof(s->peer), "127.0.0.1:1");
    snprintf(s->local, sizeof(s->local), "127.0.0.1:25");
    session_start(s);
    return s;
}

int smtpd_session_feed(smtpd_session *s, const void *data, size_t n)
{
    if (s->state == S_CLOSED)
        return SL_ECLOSED;
    if (s->state != S_CLOSING) {
        if (s->tls) {
            sl_tls_feed(s->tls, data, n);
            int rc = sl_tls_read(s->tls, &s->in);
            tls_pump(s);
            if (rc < 0) {
                session_close(s);
                return SL_ECLOSED;
            }
        } else {
            sl_buf_append(&s->in, data, n);
        }
        session_process(s);
    }
    return s->state == S_CLOSED ? SL_ECLOSED : 0;
}

char *smtpd_session_output(smtpd_session *s, size_t *len)
{
    size_t n = 0;
    char *p = sl_buf_steal(&s->dout, &n);
    if (len)
        *len = n;
    return p ? p : xstrdup("");
}

void smtpd_session_free_detached(smtpd_session *s)
{
    SL_ASSERT(s->detached);
    session_close(s);
    if (s->q != Q_NONE) {
        free(s->q_arg);
        s->q_arg = NULL;
        s->q = Q_NONE;
    }
    session_free(s);
}
