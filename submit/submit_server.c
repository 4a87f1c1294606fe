/*
 * submit_server - the relay's hooks over the SMTP engine, the password
 * checks in the thread pool, and the transactions that wait for Kafka
 * (see submit_server.h for the policy).
 *
 * Lifetimes. A session's own data (sess) lives from on_connect until both
 * the engine closed it and nothing of ours still owes it an answer (an
 * AUTH check in the thread pool, a transaction waiting for Kafka): owing
 * an answer keeps the engine's session handle valid too (smtp_server.h).
 * A transaction (trx) lives until its answer is given AND every job's
 * callback fired AND its timer closed: libsluice calls back once per job
 * however late, and the callback must find the trx.
 *
 * libsluice is driven by polling: a timer polls it every POLL_FAST_MS
 * while transactions wait and every POLL_SLOW_MS while anything else is
 * outstanding (ACCEPTED events, jobs of an answered transaction), and
 * stops when nothing is.
 */
#include "submit_server.h"
#include "budget.h"
#include "log.h"
#include "metrics.h"
#include "sluice.h"
#include "smtp_server.h"
#include "submit_limits.h"
#include "submit_msg.h"
#include "util.h"
#include "wire.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_FAST_MS 2
#define POLL_SLOW_MS 50

typedef struct sub_trx sub_trx;

typedef struct sess {
    sub_server *srv;
    smtpd_session *s;
    unsigned auth_failures;
    bool closed;
    bool auth_busy; /* a password check owes this session its answer */
    sub_trx *trx;   /* the transaction owing this session its answer */
} sess;

struct sub_trx {
    sub_server *srv;
    sess *se; /* NULL once answered */
    uv_timer_t timer;
    bool timer_open;
    size_t jobs, acked, failed, reported;
    bool too_big; /* a job was refused as too large: a permanent condition */
    bool sending; /* inside sluice_send(): callbacks may fire early */
    sl_buf ids;
    char user[129];
    size_t bytes;
    int64_t started_ms;
    sub_trx *prev, *next;
};

struct sub_server {
    uv_loop_t *loop;
    sub_opts o;
    const sub_users *users;
    smtpd_server *smtpd;
    sluice_client *client;
    uv_timer_t poll;
    sub_rate *rate;
    sub_fails *fails;
    char *dummy_hash;
    sub_trx *trxs;
    size_t waiting; /* transactions not yet answered */
    size_t auth_busy;    /* password checks owed: running or queued */
    size_t auth_running; /* in the thread pool, at most auth_workers */
    size_t auth_queued;  /* waiting for a worker, at most auth_queue */
    struct auth_work *auth_head, *auth_tail;
    unsigned auth_workers, auth_queue;
    size_t nsess;
    sub_stats stats;
    bool closing;
    bool smtpd_closed;
    bool done;
    bool poll_closed;
    void (*close_cb)(sub_server *, void *);
    void *close_arg;
};

static void close_maybe_done(sub_server *srv);

/* Every counter is kept twice: in sub_stats for the caller and tests, and
 * in the metrics registry for /metrics. */
#define COUNT(srv, field, metric, labels)                                                         \
    do {                                                                                           \
        (srv)->stats.field++;                                                                      \
        sl_metric_inc(metric, labels, 1);                                                          \
    } while (0)

static void metrics_help(void)
{
    sl_metric_help("sluice_submit_messages_total", SL_METRIC_COUNTER,
                   "Messages answered at the end of DATA, by result");
    sl_metric_help("sluice_submit_jobs_total", SL_METRIC_COUNTER,
                   "Jobs acknowledged by Kafka for submitted messages");
    sl_metric_help("sluice_submit_auth_total", SL_METRIC_COUNTER, "AUTH attempts by result");
    sl_metric_help("sluice_submit_auth_queued", SL_METRIC_GAUGE,
                   "Password checks waiting for a worker");
    sl_metric_help("sluice_submit_rejected_total", SL_METRIC_COUNTER,
                   "Envelopes or messages refused by policy, by reason");
    sl_metric_help("sluice_submit_ack_seconds", SL_METRIC_HISTOGRAM,
                   "Time from the end of DATA to the last Kafka acknowledgement");
    sl_metric_help("sluice_submit_sessions", SL_METRIC_GAUGE, "Open SMTP sessions");
}

/* ---- sessions ---- */

static void sess_maybe_free(sess *se)
{
    if (se->closed && !se->auth_busy && !se->trx) {
        se->srv->nsess--;
        free(se);
    }
}

static const sub_user *sess_user(sess *se)
{
    const smtpd_envelope *e = smtpd_session_envelope(se->s);
    return e->auth_user ? sub_users_find(se->srv->users, e->auth_user) : NULL;
}

static void on_connect(void *arg, smtpd_session *s)
{
    sub_server *srv = arg;
    sess *se = xcalloc(1, sizeof *se);
    se->srv = srv;
    se->s = s;
    srv->nsess++;
    sl_metric_add("sluice_submit_sessions", NULL, 1);
    smtpd_session_set_data(s, se);
    smtpd_reply(s, 220, "2.0.0 ready");
}

static void on_close(void *arg, smtpd_session *s)
{
    (void)arg;
    sess *se = smtpd_session_data(s);
    if (!se)
        return;
    se->closed = true;
    sl_metric_add("sluice_submit_sessions", NULL, -1);
    sess_maybe_free(se);
}

/* ---- AUTH ---- */

/*
 * Password checks. Each argon2 check takes 64 MiB and tens of milliseconds
 * of a core, so at most auth_workers run at once (in the libuv pool, off
 * the loop) and at most auth_queue wait for one, in arrival order; an AUTH
 * beyond that is answered 454 4.7.0 at once, without a check, and does not
 * count as a failure of its IP. A queued check whose session closed is
 * dropped unrun.
 */
typedef struct auth_work {
    uv_work_t req;
    struct auth_work *next; /* in the queue */
    sess *se;
    char *hash;
    char *user;
    char *pass;
    size_t plen;
    bool known;
    int rc;
} auth_work;

static void auth_work_cb(uv_work_t *req)
{
    auth_work *w = req->data;
    w->rc = sub_password_verify(w->hash, w->pass, w->plen);
}

static void auth_work_free(auth_work *w)
{
    OPENSSL_cleanse(w->pass, w->plen);
    free(w->pass);
    free(w->hash);
    free(w->user);
    free(w);
}

/* The check owed to w's session ends without running: 454. */
static void auth_refuse(sub_server *srv, auth_work *w)
{
    sess *se = w->se;
    auth_work_free(w);
    srv->auth_busy--;
    se->auth_busy = false;
    COUNT(srv, auth_busy, "sluice_submit_auth_total", "result=\"busy\"");
    smtpd_reply(se->s, 454, "4.7.0 Too many authentication attempts in progress, try again later");
    sess_maybe_free(se);
}

static void auth_after_cb(uv_work_t *req, int status);

/* Start queued checks while workers are free. */
static void auth_next(sub_server *srv)
{
    while (srv->auth_head && srv->auth_running < srv->auth_workers) {
        auth_work *w = srv->auth_head;
        srv->auth_head = w->next;
        if (!srv->auth_head)
            srv->auth_tail = NULL;
        srv->auth_queued--;
        sl_metric_add("sluice_submit_auth_queued", NULL, -1);
        if (w->se->closed) {
            auth_refuse(srv, w); /* the answer is discarded */
            continue;
        }
        srv->auth_running++;
        int rc = uv_queue_work(srv->loop, &w->req, auth_work_cb, auth_after_cb);
        if (rc != 0) {
            sl_error("submit: uv_queue_work: %s", uv_strerror(rc));
            srv->auth_running--;
            auth_refuse(srv, w);
        }
    }
}

static void auth_after_cb(uv_work_t *req, int status)
{
    auth_work *w = req->data;
    sess *se = w->se;
    sub_server *srv = se->srv;
    srv->auth_running--;
    srv->auth_busy--;
    se->auth_busy = false;
    const smtpd_envelope *e = smtpd_session_envelope(se->s);
    if (status == 0 && w->rc == 0 && w->known) {
        COUNT(srv, auth_ok, "sluice_submit_auth_total", "result=\"ok\"");
        sl_info("submit: %s authenticated as %s", e->peer, w->user);
        smtpd_reply(se->s, 235, "2.7.0 Authentication successful");
    } else {
        COUNT(srv, auth_failed, "sluice_submit_auth_total", "result=\"failed\"");
        se->auth_failures++;
        unsigned ipn = sub_fails_note(srv->fails, e->peer_ip, sl_mono_ms());
        /* The name is logged (operators need it to spot guessing), the
         * password never. */
        sl_warn("submit: %s failed to authenticate as %s%s (%u in this session, %u from this "
                "IP)",
                e->peer, w->user, w->known ? "" : " (no such user)", se->auth_failures, ipn);
        if (se->auth_failures >= srv->o.auth_max_failures || ipn >= srv->o.auth_ip_failures)
            smtpd_reply(se->s, 421, "4.7.0 Too many authentication failures, closing connection");
        else if (srv->o.auth_fail_delay_ms > 0)
            smtpd_reply_after(se->s, (uint64_t)srv->o.auth_fail_delay_ms, 535,
                              "5.7.8 Authentication credentials invalid");
        else
            smtpd_reply(se->s, 535, "5.7.8 Authentication credentials invalid");
    }
    auth_work_free(w);
    sess_maybe_free(se);
    auth_next(srv);
    close_maybe_done(srv);
}

static void on_auth(void *arg, smtpd_session *s, const char *user, const char *pass)
{
    sub_server *srv = arg;
    sess *se = smtpd_session_data(s);
    const smtpd_envelope *e = smtpd_session_envelope(s);
    if (srv->closing) {
        smtpd_reply(s, 421, "4.3.2 Service shutting down");
        return;
    }
    unsigned ipn = sub_fails_count(srv->fails, e->peer_ip, sl_mono_ms());
    if (ipn >= srv->o.auth_ip_failures) {
        sl_warn("submit: %s: AUTH refused, %u recent failures from this IP", e->peer, ipn);
        smtpd_reply(s, 421, "4.7.0 Too many authentication failures, try again later");
        return;
    }
    const sub_user *u = sub_users_find(srv->users, user);
    auth_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->se = se;
    w->known = u != NULL;
    /* An unknown name costs the same hash as a known one. */
    w->hash = xstrdup(u ? u->hash : srv->dummy_hash);
    w->user = xstrndup(user, strnlen(user, 128)); /* xstrndup copies exactly n */
    w->plen = strlen(pass);
    w->pass = xstrndup(pass, w->plen);
    se->auth_busy = true;
    srv->auth_busy++;
    if (srv->auth_running >= srv->auth_workers && srv->auth_queued >= srv->auth_queue) {
        sl_warn("submit: %s: AUTH refused, %zu password checks running and %zu waiting",
                e->peer, srv->auth_running, srv->auth_queued);
        auth_refuse(srv, w);
        return;
    }
    if (srv->auth_tail)
        srv->auth_tail->next = w;
    else
        srv->auth_head = w;
    srv->auth_tail = w;
    srv->auth_queued++;
    sl_metric_add("sluice_submit_auth_queued", NULL, 1);
    auth_next(srv);
}

/* ---- MAIL, RCPT ---- */

/* smtpd_reply() with a formatted text. */
static void reply_fmt(smtpd_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_fmt(smtpd_session *s, int code, const char *fmt, ...)
{
    sl_buf b = SL_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    smtpd_reply(s, code, b.data);
    sl_buf_free(&b);
}

static void on_mail(void *arg, smtpd_session *s, const char *from)
{
    sub_server *srv = arg;
    sess *se = smtpd_session_data(s);
    const sub_user *u = sess_user(se);
    if (!u) {
        smtpd_reply(s, 530, "5.7.0 Authentication required");
        return;
    }
    if (!*from) {
        COUNT(srv, policy_rejected, "sluice_submit_rejected_total", "reason=\"policy\"");
        smtpd_reply(s, 550, "5.7.1 The null sender is not allowed for submission");
        return;
    }
    char norm[SLUICE_ADDRESS_MAX + 1], why[200];
    if (sluice_address_normalize(from, norm, why, sizeof why) != 0) {
        reply_fmt(s, 553, "5.1.7 Bad sender address: %s", why);
        return;
    }
    const char *dom = strchr(norm, '@') + 1;
    if (!sub_user_domain_allowed(u, dom)) {
        COUNT(srv, policy_rejected, "sluice_submit_rejected_total", "reason=\"policy\"");
        sl_warn("submit: %s: user %s may not send as %s", smtpd_session_envelope(s)->peer,
                u->name, norm);
        reply_fmt(s, 550, "5.7.1 Sender domain %s not allowed for user %s", dom, u->name);
        return;
    }
    if (!sub_rate_check(srv->rate, u->name, u->rate_per_min, sl_mono_ms())) {
        COUNT(srv, rate_limited, "sluice_submit_rejected_total", "reason=\"rate\"");
        smtpd_reply(s, 451, "4.7.1 Message rate limit exceeded, try again later");
        return;
    }
    smtpd_reply(s, 250, "2.1.0 Ok");
}

static void on_rcpt(void *arg, smtpd_session *s, const char *rcpt)
{
    (void)arg;
    char norm[SLUICE_ADDRESS_MAX + 1], why[200];
    if (sluice_address_normalize(rcpt, norm, why, sizeof why) != 0) {
        reply_fmt(s, 553, "5.1.3 Bad recipient address: %s", why);
        return;
    }
    smtpd_reply(s, 250, "2.1.5 Ok");
}

/* ---- DATA and the wait for Kafka ---- */

static void poll_arm(sub_server *srv);

static void trx_timer_closed(uv_handle_t *h)
{
    sub_trx *t = h->data;
    t->timer_open = false;
    sub_server *srv = t->srv;
    if (t->prev)
        t->prev->next = t->next;
    else
        srv->trxs = t->next;
    if (t->next)
        t->next->prev = t->prev;
    sl_buf_free(&t->ids);
    free(t);
    close_maybe_done(srv);
}

static void trx_maybe_free(sub_trx *t)
{
    if (!t->se && !t->sending && t->reported == t->jobs && t->timer_open &&
        !uv_is_closing((uv_handle_t *)&t->timer))
        uv_close((uv_handle_t *)&t->timer, trx_timer_closed);
}

static void trx_answer(sub_trx *t, int code, const char *text)
{
    sess *se = t->se;
    if (!se)
        return;
    t->se = NULL;
    se->trx = NULL;
    t->srv->waiting--;
    uv_timer_stop(&t->timer);
    smtpd_reply(se->s, code, text);
    sess_maybe_free(se);
}

static void trx_check(sub_trx *t)
{
    if (t->sending)
        return;
    if (t->se && t->failed && t->too_big && !t->acked && t->reported == t->jobs) {
        /* Nothing went out and never will: a temporary answer would only
         * have the client send it again. The size budget makes this rare
         * (a job within it fits every topic), so it is a configuration
         * mismatch with the broker: say so loudly. */
        COUNT(t->srv, too_big, "sluice_submit_rejected_total", "reason=\"size\"");
        sl_error("submit: Kafka refused a message of %zu octets from %s as too large; check "
                 "the topics' max.message.bytes (sluice topics ensure)",
                 t->bytes, t->user);
        trx_answer(t, 552, "5.3.4 Message too big for the queue");
    } else if (t->se && t->failed && (!t->too_big || t->reported == t->jobs)) {
        COUNT(t->srv, kafka_timeouts, "sluice_submit_messages_total", "result=\"kafka_failed\"");
        trx_answer(t, 451, "4.3.0 Queueing failed, try again later");
    } else if (t->se && t->acked == t->jobs) {
        COUNT(t->srv, accepted, "sluice_submit_messages_total", "result=\"accepted\"");
        sl_metric_observe("sluice_submit_ack_seconds", NULL, (double)(sl_mono_ms() - t->started_ms) / 1000.0);
        char *text = xasprintf("2.0.0 Ok: queued as %s", t->ids.data);
        sl_info("submit: accepted %zu octets from %s as %s", t->bytes, t->user, t->ids.data);
        trx_answer(t, 250, text);
        free(text);
    }
    trx_maybe_free(t);
    close_maybe_done(t->srv);
}

static void trx_job_cb(void *arg, const sluice_job_result *r)
{
    sub_trx *t = arg;
    t->reported++;
    if (r->err == 0) {
        t->acked++;
        COUNT(t->srv, jobs, "sluice_submit_jobs_total", NULL);
        if (t->ids.len)
            sl_buf_putc(&t->ids, ' ');
        sl_buf_puts(&t->ids, r->job_id);
        if (!t->se)
            sl_log_job(SL_LOG_WARN, r->job_id,
                       "submit: job for %s acknowledged after its message was answered 451; "
                       "the client's retry will be a duplicate",
                       r->domain);
    } else {
        t->failed++;
        if (r->err == SLUICE_ETOOBIG)
            t->too_big = true;
        sl_log_job(SL_LOG_ERROR, r->job_id, "submit: job for %s not published: %s", r->domain,
                   sluice_strerror(r->err));
    }
    trx_check(t);
}

static void trx_timeout_cb(uv_timer_t *h)
{
    sub_trx *t = h->data;
    if (!t->se)
        return;
    COUNT(t->srv, kafka_timeouts, "sluice_submit_messages_total", "result=\"kafka_failed\"");
    sl_error("submit: Kafka did not acknowledge %zu of %zu jobs from %s within %lld ms; "
             "answered 451",
             t->jobs - t->acked, t->jobs, t->user, (long long)t->srv->o.ack_timeout_ms);
    trx_answer(t, 451, "4.3.0 Queueing timed out, try again later");
    trx_maybe_free(t);
}

static int rcpt_domain_cmp(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int c = strcmp(strrchr(x, '@'), strrchr(y, '@'));
    return c ? c : strcmp(x, y);
}

static void on_data(void *arg, smtpd_session *s, const char *msg, size_t len)
{
    sub_server *srv = arg;
    sess *se = smtpd_session_data(s);
    const smtpd_envelope *e = smtpd_session_envelope(s);
    const sub_user *u = sess_user(se);
    if (!u) {
        smtpd_reply(s, 530, "5.7.0 Authentication required");
        return;
    }
    if (srv->closing) {
        smtpd_reply(s, 421, "4.3.2 Service shutting down");
        return;
    }
    if (u->check_from) {
        char **doms = NULL;
        size_t nd = 0;
        int rc = sub_msg_from_domains(msg, len, &doms, &nd);
        if (rc == SL_ENOTFOUND || rc == SL_EEXISTS || rc == SL_EPARSE) {
            COUNT(srv, policy_rejected, "sluice_submit_rejected_total", "reason=\"policy\"");
            smtpd_reply(s, 550,
                        rc == SL_ENOTFOUND  ? "5.6.0 The message has no From header"
                        : rc == SL_EEXISTS ? "5.6.0 The message has more than one From header"
                                           : "5.6.0 The From header has an address without a "
                                             "domain");
            return;
        }
        for (size_t i = 0; i < nd; i++)
            if (!sub_user_domain_allowed(u, doms[i])) {
                COUNT(srv, policy_rejected, "sluice_submit_rejected_total", "reason=\"policy\"");
                sl_warn("submit: %s: user %s may not send with From domain %s", e->peer, u->name,
                        doms[i]);
                reply_fmt(s, 550, "5.7.1 From header domain %s not allowed for user %s", doms[i],
                          u->name);
                sub_strv_free(doms, nd);
                return;
            }
        sub_strv_free(doms, nd);
    }
    if (!sub_rate_take(srv->rate, u->name, u->rate_per_min, sl_mono_ms())) {
        COUNT(srv, rate_limited, "sluice_submit_rejected_total", "reason=\"rate\"");
        smtpd_reply(s, 451, "4.7.1 Message rate limit exceeded, try again later");
        return;
    }

    /* Normalise and group the recipients by domain: one sluice_send() per
     * group of at most SLUICE_MAX_RCPTS_PER_JOB makes exactly one job, so
     * the transaction knows how many acknowledgements to wait for. */
    size_t n = e->nrcpt;
    char **rc = xcalloc(n ? n : 1, sizeof *rc);
    for (size_t i = 0; i < n; i++) {
        char norm[SLUICE_ADDRESS_MAX + 1];
        if (sluice_address_normalize(e->rcpt[i], norm, NULL, 0) != 0)
            sl_panic("submit: a recipient accepted at RCPT does not normalise");
        rc[i] = xstrdup(norm);
    }
    qsort(rc, n, sizeof *rc, rcpt_domain_cmp);

    char qid[27];
    sl_job_id_new(qid);
    sl_buf raw = SL_BUF_INIT;
    sub_received rv = {.helo = e->helo,
                       .peer_ip = e->peer_ip,
                       .by = srv->o.hostname,
                       .tls = e->tls,
                       .auth = true,
                       .esmtp = e->esmtp,
                       .tls_version = e->tls_version,
                       .tls_cipher = e->tls_cipher,
                       .id = qid,
                       .rcpt = n == 1 ? rc[0] : NULL,
                       .now_ms = sl_now_ms()};
    sub_msg_received(&raw, &rv);
    sl_buf_append(&raw, msg, len);

    sub_trx *t = xcalloc(1, sizeof *t);
    t->srv = srv;
    t->se = se;
    t->bytes = raw.len;
    t->started_ms = sl_mono_ms();
    snprintf(t->user, sizeof t->user, "%s", u->name);
    uv_timer_init(srv->loop, &t->timer);
    t->timer.data = t;
    t->timer_open = true;
    t->next = srv->trxs;
    if (t->next)
        t->next->prev = t;
    srv->trxs = t;
    se->trx = t;
    srv->waiting++;

    sluice_message m = SLUICE_MESSAGE_INIT;
    m.from = e->from;
    m.raw = raw.data;
    m.raw_len = raw.len;
    m.tenant = u->tenant;
    m.pool = u->pool;
    m.priority = SLUICE_PRIORITY_NORMAL;
    t->sending = true;
    int err = 0;
    for (size_t i = 0; i < n;) {
        const char *dom = strrchr(rc[i], '@');
        size_t k = 1;
        while (i + k < n && k < SLUICE_MAX_RCPTS_PER_JOB && !strcmp(strrchr(rc[i + k], '@'), dom))
            k++;
        m.to = (const char *const *)&rc[i];
        m.n_to = k;
        err = sluice_send(srv->client, &m, trx_job_cb, t);
        if (err) {
            sl_warn("submit: message from %s not published: %s", u->name,
                    sluice_errmsg(srv->client));
            break;
        }
        t->jobs++;
        i += k;
    }
    t->sending = false;
    for (size_t i = 0; i < n; i++)
        free(rc[i]);
    free(rc);
    sl_buf_free(&raw);

    if (err && t->jobs == 0) {
        /* Nothing went to Kafka: a permanent answer is safe. */
        trx_answer(t, err == SLUICE_ETOOBIG ? 552 : 554,
                   err == SLUICE_ETOOBIG ? "5.3.4 Message too big for the queue"
                                         : "5.6.0 Message refused by the queue");
        trx_maybe_free(t);
        return;
    }
    if (err)
        t->failed++; /* part went out: the client must retry the whole */
    uv_timer_start(&t->timer, trx_timeout_cb, (uint64_t)srv->o.ack_timeout_ms, 0);
    trx_check(t);
    poll_arm(srv);
}

size_t sub_server_size_limit(const sl_config *cfg)
{
    uint64_t budget = sl_budget_message_max(cfg);
    uint64_t want = cfg->submit.max_message_size;
    return (size_t)(want && want < budget ? want : budget);
}

/* ---- polling libsluice ---- */

static void poll_cb(uv_timer_t *h)
{
    sub_server *srv = h->data;
    sluice_poll(srv->client, 0);
    poll_arm(srv);
    close_maybe_done(srv);
}

static void poll_arm(sub_server *srv)
{
    if (srv->done)
        return;
    uint64_t want = srv->waiting ? POLL_FAST_MS : sluice_outstanding(srv->client) ? POLL_SLOW_MS : 0;
    if (!want) {
        uv_timer_stop(&srv->poll);
        return;
    }
    if (uv_is_active((uv_handle_t *)&srv->poll) && uv_timer_get_repeat(&srv->poll) == want)
        return;
    uv_timer_start(&srv->poll, poll_cb, want, want);
}

/* ---- the server ---- */

sub_server *sub_server_new(uv_loop_t *loop, const sub_opts *o, char **err)
{
    sub_server *srv = xcalloc(1, sizeof *srv);
    srv->loop = loop;
    srv->o = *o;
    srv->users = o->users;
    if (!srv->o.ack_timeout_ms)
        srv->o.ack_timeout_ms = 30000;
    if (!srv->o.auth_max_failures)
        srv->o.auth_max_failures = 3;
    if (!srv->o.auth_ip_failures)
        srv->o.auth_ip_failures = 10;
    if (!srv->o.auth_ip_window_ms)
        srv->o.auth_ip_window_ms = 300000;
    if (!srv->o.auth_fail_delay_ms)
        srv->o.auth_fail_delay_ms = 1000;
    if (!srv->o.flush_ms)
        srv->o.flush_ms = 5000;
    srv->auth_workers = o->cfg->submit.auth_workers ? o->cfg->submit.auth_workers : 2;
    srv->auth_queue = o->cfg->submit.auth_queue;
    char host[256] = "localhost";
    if (o->hostname && *o->hostname)
        snprintf(host, sizeof host, "%s", o->hostname);
    else
        gethostname(host, sizeof host - 1);
    srv->o.hostname = xstrdup(host);
    srv->client = sluice_client_new_from_config(o->cfg, err);
    if (!srv->client) {
        free((char *)srv->o.hostname);
        free(srv);
        return NULL;
    }
    metrics_help();
    if (o->cfg->submit.max_message_size > sub_server_size_limit(o->cfg))
        sl_warn("submit: submit.max_message_size %llu is over what a job may carry "
                "(scheduler.max_job_bytes less room for the envelope): SIZE is %zu",
                (unsigned long long)o->cfg->submit.max_message_size,
                sub_server_size_limit(o->cfg));
    srv->rate = sub_rate_new();
    srv->fails = sub_fails_new(srv->o.auth_ip_window_ms, 100000);
    srv->dummy_hash = sub_password_hash("sluice-submit dummy", 19);
    uv_timer_init(loop, &srv->poll);
    srv->poll.data = srv;
    smtpd_config sc = {
        .hostname = srv->o.hostname,
        .max_message_size = sub_server_size_limit(o->cfg),
        .max_rcpt = o->cfg->submit.max_recipients,
        .max_conn = o->cfg->submit.max_connections,
        .max_conn_per_ip = o->cfg->submit.max_connections_per_ip,
        .idle_timeout_ms = (uint64_t)o->cfg->submit.idle_timeout_ms,
        .command_timeout_ms = (uint64_t)o->cfg->submit.command_timeout_ms,
        .data_timeout_ms = (uint64_t)o->cfg->submit.data_timeout_ms,
        .require_tls = true,
        .require_auth = true,
        .tls_ctx = o->tls_ctx,
    };
    smtpd_hooks hooks = {.arg = srv,
                         .on_connect = on_connect,
                         .on_mail = on_mail,
                         .on_rcpt = on_rcpt,
                         .on_data = on_data,
                         .on_auth = on_auth,
                         .on_close = on_close};
    srv->smtpd = smtpd_server_new(loop, &sc, &hooks);
    return srv;
}

int sub_server_listen(sub_server *srv, const char *spec, int *bound_port)
{
    const char *sp = strchr(spec, ' ');
    char *addr = sp ? xstrndup(spec, (size_t)(sp - spec)) : xstrdup(spec);
    const char *mode = sp ? sp + 1 : "plain";
    while (*mode == ' ')
        mode++;
    smtpd_tls_mode m;
    if (!strcmp(mode, "tls"))
        m = SMTPD_TLS;
    else if (!strcmp(mode, "starttls"))
        m = SMTPD_STARTTLS;
    else if (!strcmp(mode, "plain"))
        m = SMTPD_PLAIN;
    else {
        free(addr);
        return SL_EINVAL;
    }
    int rc = smtpd_server_listen(srv->smtpd, addr, m, bound_port);
    free(addr);
    return rc;
}

void sub_server_set_users(sub_server *srv, const sub_users *users)
{
    srv->users = users;
}

void sub_server_stats(const sub_server *srv, sub_stats *out)
{
    *out = srv->stats;
}

static void final_maybe(sub_server *srv)
{
    if (!srv->done || srv->trxs || !srv->poll_closed || !srv->close_cb)
        return;
    void (*cb)(sub_server *, void *) = srv->close_cb;
    srv->close_cb = NULL;
    cb(srv, srv->close_arg);
}

static void poll_closed(uv_handle_t *h)
{
    sub_server *srv = h->data;
    srv->poll_closed = true;
    final_maybe(srv);
}

/* Closing ends once the engine is closed (which waits for every answer we
 * owe: at most the ack timeout) and no password check is left; then
 * libsluice gets flush_ms to deliver what is still outstanding, and the
 * transactions still waiting for late acknowledgements (already answered
 * 451) are abandoned: their clients retry. */
static void close_maybe_done(sub_server *srv)
{
    if (!srv->closing || srv->done) {
        if (srv->done)
            final_maybe(srv);
        return;
    }
    if (!srv->smtpd_closed || srv->waiting || srv->auth_busy)
        return;
    srv->done = true;
    if (sluice_flush(srv->client, (int)srv->o.flush_ms) != 0)
        sl_warn("submit: %zu Kafka records still unacknowledged at exit",
                sluice_outstanding(srv->client));
    for (sub_trx *t = srv->trxs; t; t = t->next) {
        t->reported = t->jobs;
        t->sending = false;
        trx_maybe_free(t);
    }
    uv_timer_stop(&srv->poll);
    uv_close((uv_handle_t *)&srv->poll, poll_closed);
}

static void smtpd_closed_cb(smtpd_server *s, void *arg)
{
    (void)s;
    sub_server *srv = arg;
    srv->smtpd_closed = true;
    close_maybe_done(srv);
}

void sub_server_close(sub_server *srv, void (*cb)(sub_server *, void *), void *arg)
{
    if (srv->closing)
        return;
    srv->closing = true;
    srv->close_cb = cb;
    srv->close_arg = arg;
    smtpd_server_close(srv->smtpd, smtpd_closed_cb, srv);
}

void sub_server_free(sub_server *srv)
{
    if (!srv)
        return;
    smtpd_server_free(srv->smtpd);
    sluice_client_free(srv->client);
    sub_rate_free(srv->rate);
    sub_fails_free(srv->fails);
    free(srv->dummy_hash);
    free((char *)srv->o.hostname);
    free(srv);
}
