/*
 * smtp_server - see smtp_server.h.
 *
 * A session is a named state machine: smtpd__enter_state() is the only
 * place the state changes, read_cb() the only I/O entry, and
 * smtpd__session_process() (smtp_server_cmd.c) the one loop that turns
 * buffered input into replies. Questions to the program (hooks) are asked
 * through smtpd__ask(); while one is outstanding the loop stops and input
 * waits in s->in. This file keeps the sessions' lifetime, output, hooks,
 * transport and the server; the protocol is in smtp_server_cmd.c.
 *
 * Lifetime: a session holds one reference per outstanding question and one
 * per open libuv handle; it is freed once closed with neither left.
 */
#define _GNU_SOURCE /* strcasestr */
#include "smtp_server_int.h"
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

const char *const smtpd__state_names[] = {"INIT",      "CONNECTED", "HELO",       "MAIL",
                                          "RCPT",      "DATA",      "AUTH_PLAIN", "AUTH_USER",
                                          "AUTH_PASS", "CLOSING",   "CLOSED"};

/* ---------------------------------------------------------------- state */

void smtpd__enter_state(smtpd_session *s, smtpd_state st)
{
    if (s->state == S_CLOSED || s->state == st)
        return;
    if (s->state == S_CLOSING && st != S_CLOSED)
        return; /* a final reply has been queued: nothing else happens */
    sl_debug("smtpd %s: %s -> %s", s->peer, smtpd__state_names[s->state], smtpd__state_names[st]);
    s->state = st;
}

void smtpd__env_sync(smtpd_session *s)
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

void smtpd__trx_reset(smtpd_session *s)
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
    smtpd__env_sync(s);
    if (s->state == S_MAIL || s->state == S_RCPT || s->state == S_DATA)
        smtpd__enter_state(s, S_HELO);
}

/* ---------------------------------------------------------------- output */

void smtpd__reply(smtpd_session *s, int code, const char *text)
{
    size_t start = s->out.len;
    sl_buf_printf(&s->out, "%d %s", code, text);
    for (size_t i = start; i < s->out.len; i++)
        if (s->out.data[i] == '\r' || s->out.data[i] == '\n' || s->out.data[i] == 0)
            s->out.data[i] = ' ';
    sl_buf_puts(&s->out, "\r\n");
}

/* A 5xx for a bad command; too many of them end the session. */
void smtpd__reply_error(smtpd_session *s, int code, const char *text)
{
    smtpd__reply(s, code, text);
    s->errors++;
    if (s->errors >= s->srv->cfg.max_errors) {
        smtpd__reply(s, 421, "4.7.0 Too many errors, closing connection");
        smtpd__enter_state(s, S_CLOSING);
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
        smtpd__session_close(s);
        return;
    }
    if (s->state == S_CLOSING && s->writes_pending == 0) {
        smtpd__session_close(s);
        return;
    }
    /* The client read its replies: take up its input again. */
    if (s->out_blocked && s->write_bytes <= SMTPD_OUT_LOW) {
        s->out_blocked = false;
        smtpd__session_process(s);
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
        smtpd__session_close(s);
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

void smtpd__session_flush(smtpd_session *s)
{
    if (s->state == S_CLOSED)
        return;
    if (s->out.len) {
        if (s->tls) {
            if (sl_tls_write(s->tls, s->out.data, s->out.len) < 0) {
                sl_buf_reset(&s->out);
                smtpd__session_close(s);
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
        smtpd__session_close(s);
}

/* ---------------------------------------------------------------- hooks */

void smtpd__ask(smtpd_session *s, smtpd_question q, char *arg)
{
    const smtpd_hooks *h = &s->srv->hooks;
    SL_ASSERT(s->q == Q_NONE);
    s->q = q;
    s->q_arg = arg; /* now owned by the session */
    s->refs++;
    smtpd__env_sync(s);
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
            smtpd__enter_state(s, S_CONNECTED);
        } else {
            s->srv->stats.refused++;
            smtpd__reply(s, code, text);
            smtpd__enter_state(s, S_CLOSING);
        }
        break;
    case Q_MAIL:
        smtpd__reply(s, code, text);
        if (ok) {
            s->from = arg;
            arg = NULL;
            smtpd__enter_state(s, S_MAIL);
        } else {
            s->env.size_declared = -1;
            s->env.body_8bit = s->env.smtputf8 = false;
        }
        break;
    case Q_RCPT:
        smtpd__reply(s, code, text);
        if (ok) {
            if (s->env.nrcpt + 2 > s->rcpt_cap) {
                s->rcpt_cap = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
                s->rcpt = xrealloc(s->rcpt, s->rcpt_cap * sizeof(char *));
            }
            s->rcpt[s->env.nrcpt++] = arg;
            s->rcpt[s->env.nrcpt] = NULL;
            arg = NULL;
            smtpd__enter_state(s, S_RCPT);
        }
        break;
    case Q_DATA:
        smtpd__reply(s, code, text);
        if (ok)
            s->srv->stats.messages++;
        else
            s->srv->stats.rejected++;
        smtpd__trx_reset(s);
        break;
    case Q_AUTH:
        smtpd__reply(s, code, text);
        if (code == 235) {
            s->auth_user = xstrdup(arg);
        } else {
            s->errors++;
            if (s->errors >= s->srv->cfg.max_errors) {
                smtpd__reply(s, 421, "4.7.0 Too many errors, closing connection");
                smtpd__enter_state(s, S_CLOSING);
            }
        }
        OPENSSL_cleanse(arg, strlen(arg) + 1 + strlen(arg + strlen(arg) + 1));
        smtpd__enter_state(s, s->auth_return);
        break;
    case Q_NONE:
        break;
    }
    free(arg);
    if (code == 421)
        smtpd__enter_state(s, S_CLOSING);
    smtpd__env_sync(s);
    if (!s->detached && s->state != S_CLOSED)
        uv_timer_again(&s->idle);
    s->refs--;
    if (!s->processing)
        smtpd__session_process(s);
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
        smtpd__session_close(s);
        return;
    }
    if (s->state == S_CLOSING || s->state == S_CLOSED)
        return;
    uv_timer_again(&s->idle);
    smtpd__deadline_read(s);
    if (s->tls) {
        sl_tls_feed(s->tls, buf->base, (size_t)nread);
        int rc = sl_tls_read(s->tls, &s->in);
        tls_pump(s);
        if (rc < 0) {
            if (rc == SL_ETLS)
                sl_debug("smtpd %s: %s", s->peer, sl_tls_error(s->tls));
            smtpd__session_close(s);
            return;
        }
        smtpd__env_sync(s);
    } else {
        sl_buf_append(&s->in, buf->base, (size_t)nread);
    }
    smtpd__session_process(s);
}

void smtpd__session_read_start(smtpd_session *s)
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
        smtpd__session_close(s);
        return;
    }
    if (s->q != Q_NONE || s->state == S_CLOSED)
        return;
    char *text = xasprintf("4.4.2 %s Error: timeout exceeded", s->srv->hostname);
    smtpd__reply(s, 421, text);
    free(text);
    smtpd__enter_state(s, S_CLOSING);
    smtpd__session_flush(s);
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
    smtpd__trx_reset(s);
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

void smtpd__session_close(smtpd_session *s)
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
    smtpd__session_close(s);
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
    smtpd__env_sync(s);
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
        smtpd__reply(s, 421, refuse);
        smtpd__enter_state(s, S_CLOSING);
        smtpd__session_flush(s);
        return;
    }
    s->processing = true;
    smtpd__ask(s, Q_CONNECT, NULL);
    s->processing = false;
    smtpd__session_process(s);
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
        smtpd__session_close(s);
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
    smtpd__session_read_start(s);
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
        smtpd__session_close(srv->sessions);
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
    smtpd__env_sync(s);
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
                smtpd__session_close(s);
                return SL_ECLOSED;
            }
        } else {
            sl_buf_append(&s->in, data, n);
        }
        smtpd__session_process(s);
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
    smtpd__session_close(s);
    if (s->q != Q_NONE) {
        free(s->q_arg);
        s->q_arg = NULL;
        s->q = Q_NONE;
    }
    session_free(s);
}
