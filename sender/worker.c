/*
 * worker - see worker.h. The delivery of one Dispatch runs through:
 *   intake -> (slot timer) -> resolve -> next_target -> pool -> txn_done
 *          -> [next MX | 452 resend | finish] -> outcome -> record_done.
 */
#include "worker.h"
#include "dest.h"
#include "dns.h"
#include "health.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "outcome.h"
#include "pool.h"
#include "session.h"
#include "wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

/* Addresses tried per MX host before the next host (Postfix's
 * smtp_mx_address_limit is 5 too). */
#define SND_MX_ADDR_MAX 5

/* A destination past sender.max_inflight_per_destination may hold as many
 * deliveries as it completes in this many seconds. */
#define SND_DEST_DRAIN_S 10.0

typedef struct cand {
    char *host;
    uint16_t port;
    char *ip;           /* resolved address, NULL until known */
    snd_dane_answer *dane; /* DANE applies (USABLE, UNUSABLE) or failed; referenced */
    bool dane_done;     /* the TLSA lookup has answered (or was not needed) */
} cand;

typedef struct rcpt_state {
    bool final;
    Sluice__V1__EventType type;
    sl_reply reply;     /* what the event carries; code 0: none */
    Sluice__V1__BounceClass cls;
    bool hard;
    bool possible_duplicate;
    bool skipped;       /* the ledger holds its final outcome: no event */
    bool from_ledger;   /* skipped, but its final event is published again */
    bool claimed;       /* holds the ledger claim of (job id, recipient) */
    const char *reason;
} rcpt_state;

typedef struct delivery {
    struct snd_worker *w;
    sl_record *rec;
    sl_dispatch *d;
    sl_buf msg;         /* the message; unsigned when per_rcpt */
    bool per_rcpt;      /* List-Unsubscribe: a copy, and a transaction, per recipient */
    sl_buf rmsg;        /* per_rcpt: the current recipient's copy, signed */
    char *message_id;
    uv_timer_t timer;
    bool timer_live;
    bool started;       /* a transaction was submitted: drain lets it finish */
    bool sending;       /* past the last checks: counted in w->sending */
    bool ledger_held;   /* waited for its partition's ledger (counted once) */
    cand *cands;
    size_t n_cands, cur;
    rcpt_state *rs;     /* per job recipient */
    char **pending;     /* recipients of the current transaction */
    size_t *pending_idx;
    size_t n_pending;
    snd_txn txn;
    sl_buf verp_from;   /* the current transaction's VERP return path */
    int64_t slot_ms;
    int64_t first_try_ms;
    int64_t intake_ms;      /* wall clock when the record reached the worker */   /* first attempt to find the template */
    int64_t queue_ms, smtp_ms;
    char *held_key;         /* the destination this delivery counts against */
    char tls_protocol[16], tls_cipher[64];
    bool tls_verified;
    char tls_verify[80];
    char tls_failure[256];  /* the last candidate's TLS failure or note */
    snd_sts_policy sts;     /* the domain's MTA-STS policy; mode NONE: none */
    int64_t sts_wait_until; /* mono: how long to wait for its first fetch */
    struct delivery *next, *prev;
} delivery;

struct snd_worker {
    snd_shared sh;
    int index;
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    sl_record *in_head, *in_tail;   /* under mu */
    bool drain_req, stop_req;       /* under mu */
    bool draining;
    atomic_size_t busy;
    atomic_size_t sending;
    atomic_bool hold;
    sl_producer *prod;
    sl_producer *lprod; /* the delivery ledger's records (linger 0); NULL: off */
    sl_dns *dns;
    snd_dane *dane;     /* NULL: DANE is off */
    snd_dests *dests;
    snd_pools *pools;
    snd_pacer *pacer;
    uint32_t dest_cap;      /* deliveries in flight per destination */
    delivery *active;
    uv_timer_t stop_timer;
    uv_timer_t sweep_timer;
    uint16_t mx_port;
};

static void delivery_finish(delivery *dl);
static void next_target(delivery *dl);

/* ---- helpers ---- */

static const char *job_id(const delivery *dl)
{
    return dl->d && dl->d->job && dl->d->job->job_id ? dl->d->job->job_id : "-";
}

static void set_final(delivery *dl, size_t i, Sluice__V1__EventType type, const snd_result *r,
                      const sl_trouble_verdict *v, const char *reason)
{
    rcpt_state *s = &dl->rs[i];
    s->final = true;
    s->type = type;
    if (r)
        sl_reply_copy(&s->reply, &r->reply);
    if (v) {
        s->cls = v->bounce_class;
        s->hard = v->hard;
        s->possible_duplicate = v->possible_duplicate;
        s->reason = v->reason;
    }
    if (reason)
        s->reason = reason;
}

/* The policy as the config writes it, for events. */
static const char *tls_policy_name(sl_tls_policy p)
{
    switch (p) {
    case SL_TLS_OPPORTUNISTIC: return "opportunistic";
    case SL_TLS_REQUIRED: return "required";
    case SL_TLS_DISABLED: return "disabled";
    case SL_TLS_VERIFY: return "verify";
    }
    return "";
}

static Sluice__V1__EventType type_of(sl_trouble_action a)
{
    switch (a) {
    case SL_ACT_OK: return SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED;
    case SL_ACT_BOUNCE: return SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED;
    default: return SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED;
    }
}

/* Every recipient without a final state gets type/r. */
static void finish_all(delivery *dl, Sluice__V1__EventType type, const snd_result *r,
                       const sl_trouble_verdict *v, const char *reason)
{
    for (size_t i = 0; i < dl->d->job->n_recipients; i++)
        if (!dl->rs[i].final)
            set_final(dl, i, type, r, v, reason);
    delivery_finish(dl);
}

static void finish_local(delivery *dl, sl_smtp_cond cond, int code, const char *enh,
                         const char *text, const char *reason)
{
    snd_result r = {0};
    char *t = xasprintf("%d %s %s", code, enh, text);
    snd_result_set(&r, code, enh, t);
    free(t);
    r.stage = SL_STAGE_RCPT;
    r.cond = cond;
    sl_trouble_verdict v;
    sl_trouble_decide(dl->w->sh.trouble, SL_STAGE_RCPT, cond,
                      cond == SL_COND_REPLY ? &r.reply : NULL, &v);
    finish_all(dl, type_of(v.action == SL_ACT_NEXT_MX ? v.last_mx_action : v.action), &r, &v,
               reason);
    snd_result_clear(&r);
}

/* ---- completion ---- */

static void delivery_free(delivery *dl)
{
    snd_worker *w = dl->w;
    if (dl->prev)
        dl->prev->next = dl->next;
    else
        w->active = dl->next;
    if (dl->next)
        dl->next->prev = dl->prev;
    if (dl->d) {
        for (size_t i = 0; i < dl->d->job->n_recipients; i++)
            sl_reply_free(&dl->rs[i].reply);
        sl_dispatch_free(dl->d);
    }
    sl_buf_free(&dl->verp_from);
    for (size_t i = 0; i < dl->n_cands; i++) {
        free(dl->cands[i].host);
        free(dl->cands[i].ip);
        snd_dane_answer_unref(dl->cands[i].dane);
    }
    free(dl->cands);
    snd_sts_policy_clear(&dl->sts);
    if (dl->held_key)
        snd_dest_unhold(w->dests, dl->held_key, sl_mono_ms());
    free(dl->held_key);
    free(dl->rs);
    free(dl->pending);
    free(dl->pending_idx);
    snd_txn_reset(&dl->txn);
    sl_buf_free(&dl->msg);
    sl_buf_free(&dl->rmsg);
    free(dl->message_id);
    free(dl);
}

static void on_timer_closed(uv_handle_t *h)
{
    delivery_free(h->data);
}

static void delivery_release(delivery *dl, bool done)
{
    snd_worker *w = dl->w;
    if (dl->rec)
        (done ? w->sh.record_done : w->sh.record_release)(w->sh.record_done_arg, dl->rec);
    dl->rec = NULL;
    atomic_fetch_sub(&w->busy, 1);
    if (dl->d && dl->rs)
        for (size_t i = 0; i < dl->d->job->n_recipients; i++)
            if (dl->rs[i].claimed) {
                dl->rs[i].claimed = false;
                snd_ledger_unclaim(w->sh.ledger, dl->d->job->job_id, dl->d->job->recipients[i]);
            }
    if (dl->sending) {
        dl->sending = false;
        atomic_fetch_sub(&w->sending, 1);
    }
    /* Already closing only when the worker gave up its drain and closed
     * every handle of the loop (walk_close): the delivery is abandoned. */
    if (!uv_is_closing((uv_handle_t *)&dl->timer))
        uv_close((uv_handle_t *)&dl->timer, on_timer_closed);
}

static void on_published(void *arg, int err)
{
    delivery *dl = arg;
    if (err < 0) {
        /* Never ack a record whose outcome is not in Kafka: leave it
         * undone, so the offset stays below it and a restart repeats it. */
        sl_log_job(SL_LOG_ERROR, job_id(dl), "outcome could not be published: %s; the dispatch "
                   "stays uncommitted", sl_strerror(err));
        delivery_release(dl, false);
        return;
    }
    delivery_release(dl, true);
}

static void delivery_finish(delivery *dl)
{
    const sl_job *job = dl->d->job;
    size_t n = job->n_recipients;
    snd_rcpt_outcome *o = xcalloc(n ? n : 1, sizeof *o);
    size_t m = 0;
    /* Read again after its partition changed owner, and maybe sent by the
     * last owner already (ledger.h), or a job its scheduler read again so
     * (Dispatch.repeat): say so in the events. */
    bool suspect = dl->d->repeat ||
                   (dl->w->sh.ledger && dl->rec &&
                    snd_ledger_suspect(dl->w->sh.ledger, dl->rec->partition, dl->rec->offset));
    for (size_t i = 0; i < n; i++) {
        rcpt_state *s = &dl->rs[i];
        if (s->skipped)
            continue;
        o[m].rcpt = job->recipients[i];
        o[m].type = s->final ? s->type : SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED;
        o[m].reply = s->reply.code ? &s->reply : NULL;
        o[m].bounce_class = s->cls;
        o[m].hard = s->hard;
        o[m].possible_duplicate = s->possible_duplicate || suspect;
        o[m].reason = s->reason;
        o[m].from_ledger = s->from_ledger;
        m++;
    }
    if (m == 0) {
        /* Every recipient was skipped: nothing to publish. */
        free(o);
        delivery_release(dl, true);
        return;
    }
    cand *c = dl->cur < dl->n_cands ? &dl->cands[dl->cur] : NULL;
    /* Every candidate down: the event says when the first will be probed,
     * so that the scheduler can hold the site back until then. */
    int64_t down_until = 0;
    int64_t mono = sl_mono_ms();
    for (size_t i = 0; i < dl->n_cands; i++) {
        const cand *k = &dl->cands[i];
        int64_t u = 0;
        if (k->ip) {
            char *key = snd_dest_key(dl->d->source_ip, dl->d->socks5, k->ip, k->port);
            u = snd_dest_down_until(dl->w->dests, key);
            free(key);
        }
        if (!u) {
            down_until = 0;
            break;
        }
        if (!down_until || u < down_until)
            down_until = u;
    }
    if (down_until)
        down_until = sl_now_ms() + (down_until > mono ? down_until - mono : 0);
    snd_outcome_info info = {
        .sender_id = dl->w->sh.sender_id,
        .mx_host = c ? c->host : NULL,
        .mx_ip = c ? c->ip : NULL,
        .tls_protocol = dl->tls_protocol,
        .tls_cipher = dl->tls_cipher,
        /* DANE (usable TLSA records) takes precedence over MTA-STS. */
        .tls_policy = c && c->dane                      ? "dane"
                      : dl->sts.mode == SND_STS_ENFORCE ? "mta-sts-enforce"
                      : dl->sts.mode == SND_STS_TESTING ? "mta-sts-testing"
                                                        : tls_policy_name((sl_tls_policy)dl->d->tls),
        .tls_verified = dl->tls_verified,
        .tls_verify_result = dl->tls_verify,
        .tls_failure = dl->tls_failure,
        .message_id = dl->message_id,
        .queue_ms = dl->queue_ms,
        .smtp_ms = dl->smtp_ms,
        .worker = dl->w->index,
        .destination_down_until_ms = down_until,
        .ledger = dl->w->sh.ledger,
        .ledger_producer = dl->w->lprod,
        .key = dl->rec ? dl->rec->msg->key : NULL,
        .klen = dl->rec ? dl->rec->msg->key_len : 0,
        .partition = dl->rec ? dl->rec->partition : -1,
        .offset = dl->rec ? dl->rec->offset : -1,
    };
    if (!dl->rec)
        info.ledger = NULL;
    int rc = snd_outcome_publish(dl->w->prod, dl->w->sh.cfg, dl->d, &info, o, m, on_published, dl);
    free(o);
    if (rc < 0)
        on_published(dl, rc);
}

/* ---- the SMTP transaction ---- */

static void start_txn(delivery *dl);

/* The transaction could not start on the current candidate (the
 * connection failed, the destination is down or busy): the next MX when
 * policy says so, else every recipient gets r. */
static void candidate_failed(delivery *dl, const snd_result *r)
{
    if (r->cond == SL_COND_TLS || r->stage == SL_STAGE_STARTTLS)
        snprintf(dl->tls_failure, sizeof dl->tls_failure, "%s", r->reply.raw);
    sl_trouble_verdict v;
    sl_trouble_decide(dl->w->sh.trouble, r->stage, r->cond,
                      r->cond == SL_COND_REPLY ? &r->reply : NULL, &v);
    if (v.action == SL_ACT_NEXT_MX && dl->cur + 1 < dl->n_cands && !dl->w->draining) {
        const cand *c = &dl->cands[dl->cur];
        char key[600];
        snprintf(key, sizeof key, "next-mx|%s|%s|%s", c->host, c->ip ? c->ip : "-", r->reply.raw);
        sl_log_every(SL_LOG_INFO, key, "%s [%s] failed (%s), trying the next %s", c->host,
                     c->ip ? c->ip : "-", r->reply.raw,
                     !strcmp(c->host, dl->cands[dl->cur + 1].host) ? "address" : "MX");
        dl->cur++;
        next_target(dl);
        return;
    }
    sl_trouble_action a = v.action == SL_ACT_NEXT_MX ? v.last_mx_action : v.action;
    if (a == SL_ACT_OK)
        a = SL_ACT_DEFER;
    finish_all(dl, type_of(a), r, &v, NULL);
}

static void txn_done(snd_txn *t)
{
    delivery *dl = t->arg;
    const sl_trouble *tr = dl->w->sh.trouble;
    if (dl->held_key) {
        if (!t->session_failed)
            snd_dest_done(dl->w->dests, dl->held_key, sl_mono_ms());
        snd_dest_unhold(dl->w->dests, dl->held_key, sl_mono_ms());
        free(dl->held_key);
        dl->held_key = NULL;
    }
    snprintf(dl->tls_protocol, sizeof dl->tls_protocol, "%s", t->tls_protocol);
    snprintf(dl->tls_cipher, sizeof dl->tls_cipher, "%s", t->tls_cipher);
    dl->tls_verified = t->tls_verified;
    snprintf(dl->tls_verify, sizeof dl->tls_verify, "%s", t->tls_verify);
    snprintf(dl->tls_failure, sizeof dl->tls_failure, "%s", t->tls_note);
    if (dl->sts.mode == SND_STS_TESTING && !t->session_failed) {
        /* MTA-STS testing: delivered as usual, what enforce would have
         * refused goes into the event (RFC 8461 5). */
        const char *host = dl->cands[dl->cur].host;
        if (!snd_sts_mx_match(&dl->sts, host))
            snprintf(dl->tls_failure, sizeof dl->tls_failure,
                     "MTA-STS testing: MX host %s does not match the policy", host);
        else if (!t->tls_verified)
            snprintf(dl->tls_failure, sizeof dl->tls_failure, "MTA-STS testing: %.80s%s%.150s%s",
                     t->tls_protocol[0] ? t->tls_verify : "no TLS",
                     !t->tls_protocol[0] && t->tls_note[0] ? " (" : "",
                     t->tls_protocol[0] ? "" : t->tls_note,
                     !t->tls_protocol[0] && t->tls_note[0] ? ")" : "");
    }
    dl->smtp_ms += t->smtp_ms;
    if (!t->session_failed) {
        char l[256];
        snprintf(l, sizeof l, "site=\"%s\",source=\"%s\"", dl->d->site, dl->d->source_ip);
        sl_metric_observe("sluice_sender_smtp_seconds", l, (double)t->smtp_ms / 1000.0);
        snprintf(l, sizeof l, "site=\"%s\",source=\"%s\",tls=\"%s\"", dl->d->site,
                 dl->d->source_ip, t->tls_protocol[0] ? "yes" : "no");
        sl_metric_inc("sluice_sender_transactions_total", l, 1);
    }

    if (t->session_failed) {
        candidate_failed(dl, &t->session_reply);
        return;
    }

    /* A per-recipient transaction (VERP, one-click unsubscribe) carries
     * the first pending recipient only; the others wait, untried, for the
     * next. */
    size_t n_txn = t->n_rcpts;
    size_t n_ok = 0, n_452 = 0;
    for (size_t k = 0; k < n_txn; k++) {
        const snd_result *r = &t->results[k];
        if (r->reply.code >= 200 && r->reply.code < 300)
            n_ok++;
        else if (r->stage == SL_STAGE_RCPT && (r->reply.code == 452 || !strcmp(r->reply.enh, "4.5.3")))
            n_452++;
    }
    size_t keep = 0;
    for (size_t k = 0; k < n_txn; k++) {
        const snd_result *r = &t->results[k];
        size_t i = dl->pending_idx[k];
        if (n_ok && n_452 && r->stage == SL_STAGE_RCPT &&
            (r->reply.code == 452 || !strcmp(r->reply.enh, "4.5.3"))) {
            /* Too many recipients for one transaction: the rest go in the
             * next one (RFC 5321 4.5.3.1.10). */
            dl->pending[keep] = dl->pending[k];
            dl->pending_idx[keep++] = i;
            continue;
        }
        sl_trouble_verdict v;
        sl_trouble_decide(tr, r->stage, r->cond, r->cond == SL_COND_REPLY ? &r->reply : NULL, &v);
        sl_trouble_action a = v.action;
        if (a == SL_ACT_NEXT_MX)
            a = SL_ACT_DEFER;
        if (a == SL_ACT_OK && !(r->reply.code >= 200 && r->reply.code < 300))
            a = SL_ACT_DEFER; /* never call a recipient delivered on anything but 2xx */
        set_final(dl, i, type_of(a), r, &v, NULL);
        if (t->possible_duplicate)
            dl->rs[i].possible_duplicate = true;
    }
    for (size_t k = n_txn; k < dl->n_pending; k++) {
        dl->pending[keep] = dl->pending[k];
        dl->pending_idx[keep++] = dl->pending_idx[k];
    }
    if (keep) {
        dl->n_pending = keep;
        start_txn(dl);
        return;
    }
    delivery_finish(dl);
}

/* Prepend the DKIM signature header fields of msg to it (unsigned when
 * signing fails: the message still goes). */
static void dkim_sign(delivery *dl, sl_buf *msg)
{
    if (!dl->w->sh.dkim)
        return;
    sl_buf hdr = SL_BUF_INIT;
    int rc = sl_dkim_keyring_sign(dl->w->sh.dkim, msg->data, msg->len, &hdr);
    if (rc < 0) {
        sl_log_job(SL_LOG_WARN, dl->d->job->job_id, "DKIM signing failed: %s; sending unsigned",
                   sl_strerror(rc));
    } else if (hdr.len) {
        sl_buf_append(&hdr, msg->data, msg->len);
        sl_buf_free(msg);
        *msg = hdr;
        hdr = (sl_buf)SL_BUF_INIT;
    }
    sl_buf_free(&hdr);
}

static const char *job_meta(const sl_job *job, const char *key)
{
    for (size_t i = 0; i < job->n_meta; i++)
        if (job->meta[i]->key && !strcmp(job->meta[i]->key, key))
            return job->meta[i]->value;
    return "";
}

/* dl->rmsg: the message with rcpt's own unsubscribe token, signed. */
static void recipient_copy(delivery *dl, const char *rcpt)
{
    const sl_job *job = dl->d->job;
    const sl_config *cfg = dl->w->sh.cfg;
    sl_unsub_token ut = {
        .tenant = job->tenant ? job->tenant : "",
        .recipient = rcpt,
        .campaign = job->campaign ? job->campaign : "",
        .list = job_meta(job, "list"),
        .job_id = job->job_id,
    };
    sl_buf tok = SL_BUF_INIT;
    sl_buf_reset(&dl->rmsg);
    sl_buf_append(&dl->rmsg, dl->msg.data, dl->msg.len);
    if (sl_unsub_token_seal(dl->w->sh.unsub_key, &ut, &tok) == 0) {
        sl_buf_putc(&tok, 0);
        snd_msg_list_unsub(&dl->rmsg, cfg->unsubscribe.url, cfg->unsubscribe.mailto_domain,
                           tok.data);
    } else {
        /* A field with the unit separator (0x1f) in it: no link rather
         * than a wrong one. */
        sl_log_job(SL_LOG_WARN, job->job_id, "no unsubscribe token for %s (0x1f in a field)",
                   rcpt);
    }
    sl_buf_free(&tok);
    dkim_sign(dl, &dl->rmsg);
}

static void start_txn(delivery *dl)
{
    snd_worker *w = dl->w;
    const sl_dispatch *d = dl->d;
    const sl_config *cfg = w->sh.cfg;
    cand *c = &dl->cands[dl->cur];
    const sl_shaping *sh = sl_config_shaping(cfg, d->site);
    if (!sh)
        sh = &cfg->shaping[0];

    snd_txn_reset(&dl->txn);
    dl->txn.mail_from = d->job->mail_from;
    dl->txn.rcpts = dl->pending;
    dl->txn.n_rcpts = dl->n_pending;
    const char *verp_domain = w->sh.verp_key ? sl_config_verp_domain(cfg, d->job->tenant) : NULL;
    if (verp_domain && d->job->mail_from && *d->job->mail_from) {
        /* VERP: each recipient has its own return path, so its own
         * transaction (on the same connection, one after the other). */
        sl_verp_token vt = {.tenant = d->job->tenant ? d->job->tenant : "",
                            .job_id = d->job->job_id ? d->job->job_id : "",
                            .recipient = dl->pending[0]};
        sl_buf_reset(&dl->verp_from);
        sl_buf_puts(&dl->verp_from, "bounce+");
        if (sl_verp_token_seal(w->sh.verp_key, &vt, &dl->verp_from) == 0) {
            sl_buf_printf(&dl->verp_from, "@%s", verp_domain);
            dl->txn.mail_from = dl->verp_from.data;
            dl->txn.n_rcpts = 1;
        } else {
            /* A field with 0x1f cannot be sealed: the job's own return
             * path is used, and the bounce is not mapped back. */
            sl_buf_reset(&dl->verp_from);
        }
    }
    const sl_buf *m = &dl->msg;
    if (dl->per_rcpt) {
        dl->txn.n_rcpts = 1;
        recipient_copy(dl, dl->pending[0]);
        m = &dl->rmsg;
    }
    dl->txn.msg = m->data;
    dl->txn.msg_len = m->len;
    dl->txn.body_8bit = snd_msg_has_8bit(m->data, m->len);
    dl->txn.smtputf8 = snd_msg_needs_smtputf8(dl->txn.mail_from, dl->pending, dl->txn.n_rcpts,
                                              m->data, m->len);
    dl->txn.arg = dl;

    snd_target tg = {
        .mx_host = c->host,
        .ip = c->ip,
        .port = c->port,
        .source_ip = d->source_ip,
        .ehlo = d->ehlo,
        .socks5 = d->socks5,
        /* MTA-STS enforce: verified TLS to a matching MX, whatever the
         * site's policy says. */
        .tls = dl->sts.mode == SND_STS_ENFORCE ? SL_TLS_VERIFY : (sl_tls_policy)d->tls,
        .timeouts = sh->timeouts,
        .tls_ctx = w->sh.tls_ctx,
    };
    /* Usable TLSA records outrank the site's policy (RFC 7672 2.2): TLS is
     * mandatory and the certificate must match them; secure but unusable
     * records still make TLS mandatory (and leave `verify` as it is). */
    if (c->dane && c->dane->status != SND_DANE_FAILED) {
        tg.dane = c->dane;
        if (c->dane->status == SND_DANE_USABLE || tg.tls == SL_TLS_VERIFY)
            tg.tls = SL_TLS_VERIFY;
        else
            tg.tls = SL_TLS_REQUIRED;
    }
    if (!dl->started) {
        dl->started = true;
        /* No send_at: the wait counts from when the sender took it in. */
        int64_t from = d->send_at_ms > 0 ? d->send_at_ms : dl->intake_ms;
        dl->queue_ms = sl_now_ms() - from;
        if (dl->queue_ms < 0)
            dl->queue_ms = 0;
        char l[256];
        snprintf(l, sizeof l, "site=\"%s\",source=\"%s\"", d->site, d->source_ip);
        sl_metric_inc("sluice_sender_attempts_total", l, 1);
        sl_metric_observe("sluice_sender_queue_wait_seconds", l, (double)dl->queue_ms / 1000.0);
    }
    /* A destination that is down is not tried (its probe is the pools'
     * business), and one that already holds its share of the window takes
     * no more: either way the delivery moves on at once, to the next MX or
     * to a deferral with the reason, without a connection. */
    char *dkey = snd_dest_key(d->source_ip, d->socks5, c->ip, c->port);
    int64_t mono = sl_mono_ms();
    const snd_result *down_why = NULL;
    int64_t until = 0;
    if (snd_dest_blocked(w->dests, dkey, mono, &down_why, &until)) {
        free(dkey);
        sl_metric_inc("sluice_sender_destination_skips_total", "reason=\"down\"", 1);
        snd_result r = {0};
        snd_result_copy(&r, down_why);
        candidate_failed(dl, &r);
        snd_result_clear(&r);
        return;
    }
    /* Past its share, a destination keeps taking deliveries only while it
     * drains what it holds within SND_DEST_DRAIN_S at its recent rate: a
     * fast one may use the whole window, a stuck or slow one may not. */
    size_t held = snd_dest_held(w->dests, dkey);
    if (held >= w->dest_cap &&
        (double)held >= snd_dest_rate(w->dests, dkey, mono) * SND_DEST_DRAIN_S) {
        free(dkey);
        sl_metric_inc("sluice_sender_destination_skips_total", "reason=\"busy\"", 1);
        char text[400];
        snprintf(text, sizeof text,
                 "451 4.4.5 destination %s:%u busy: %zu deliveries in flight from this sender "
                 "(sender.max_inflight_per_destination)",
                 c->ip, c->port, held);
        char key[300];
        snprintf(key, sizeof key, "busy|%s|%u|%s", c->ip, c->port, d->source_ip);
        sl_log_every(SL_LOG_WARN, key,
                     "destination %s:%u from %s holds %zu deliveries "
                     "(sender.max_inflight_per_destination): deferring the rest",
                     c->ip, c->port, d->source_ip, held);
        snd_result r = {0};
        snd_result_set(&r, 451, "4.4.5", text);
        r.stage = SL_STAGE_CONNECT;
        r.cond = SL_COND_TIMEOUT;
        candidate_failed(dl, &r);
        snd_result_clear(&r);
        return;
    }
    snd_dest_hold(w->dests, dkey, mono);
    dl->held_key = dkey;
    snd_pools_submit(w->pools, d->site, &tg,
                     d->max_connections ? d->max_connections : sh->max_connections,
                     d->max_messages_per_connection ? d->max_messages_per_connection
                                                    : sh->max_messages_per_connection,
                     &dl->txn, txn_done);
}

/* ---- destinations ---- */

/* The address family a bound source address can reach (0: any). */
static int source_family(const sl_dispatch *d)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!d->source_ip || !*d->source_ip || (d->socks5 && *d->socks5))
        return 0;
    if (inet_pton(AF_INET, d->source_ip, &a4) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, d->source_ip, &a6) == 1)
        return AF_INET6;
    return 0;
}

static void on_addr(const sl_dns_addr_result *res, void *arg)
{
    delivery *dl = arg;
    const char *why = res->status == SL_DNS_OK ? "no address of the source IP's family"
                                               : sl_dns_status_name(res->status);
    if (res->status == SL_DNS_OK && res->n_addrs) {
        /* Every address of the host is tried before the next MX host (RFC
         * 5321 5.1), in the resolver's order (IPv4 first), each as a
         * candidate of its own right after this one. Like Postfix's
         * smtp_mx_address_limit, a host's addresses are capped, so that a
         * host with a hundred dead addresses cannot stall the delivery. An
         * address the bound source IP cannot reach (the other family) is
         * left out. */
        int fam = source_family(dl->d);
        size_t n_use = 0;
        const char **use = xcalloc(res->n_addrs, sizeof *use);
        for (size_t i = 0; i < res->n_addrs && n_use < SND_MX_ADDR_MAX; i++) {
            const char *ip = res->addrs[i].text;
            bool v6 = strchr(ip, ':') != NULL;
            if (fam && (fam == AF_INET6) != v6)
                continue;
            use[n_use++] = ip;
        }
        if (n_use) {
            size_t at = dl->cur;
            dl->cands = xrealloc(dl->cands, (dl->n_cands + n_use - 1) * sizeof *dl->cands);
            memmove(&dl->cands[at + n_use], &dl->cands[at + 1],
                    (dl->n_cands - at - 1) * sizeof *dl->cands);
            for (size_t k = 1; k < n_use; k++)
                dl->cands[at + k] = (cand){xstrdup(dl->cands[at].host), dl->cands[at].port,
                                           xstrdup(use[k]),
                                           dl->cands[at].dane ? snd_dane_answer_ref(dl->cands[at].dane)
                                                              : NULL,
                                           true};
            dl->cands[at].ip = xstrdup(use[0]);
            dl->n_cands += n_use - 1;
            free(use);
            start_txn(dl);
            return;
        }
        free(use);
    }
    if (dl->cur + 1 < dl->n_cands) {
        dl->cur++;
        next_target(dl);
        return;
    }
    cand *c = &dl->cands[dl->cur];
    char text[300];
    snprintf(text, sizeof text, "cannot resolve MX host %s: %s", c->host, why);
    /* An MX host without an address is the domain's own misconfiguration;
     * it may be fixed, so it defers like a connection failure. */
    finish_local(dl, SL_COND_NETWORK, 451, "4.4.3", text, "MX host has no address");
}

static void on_dane(const snd_dane_answer *a, void *arg)
{
    delivery *dl = arg;
    cand *c = &dl->cands[dl->cur];
    c->dane_done = true;
    if (a->status == SND_DANE_NONE) {
        next_target(dl);
        return;
    }
    c->dane = snd_dane_answer_ref(a);
    if (a->status != SND_DANE_FAILED) {
        next_target(dl);
        return;
    }
    /* RFC 7672 2.2: an MX host whose TLSA lookup fails is not used, and
     * never in plain text: the next MX, else a deferral with the reason. */
    char text[600];
    snprintf(text, sizeof text, "451 4.7.5 DANE: %s: %s", a->qname, a->why);
    char key[300];
    snprintf(key, sizeof key, "dane|%s", a->qname);
    sl_log_every(SL_LOG_WARN, key, "DANE lookup of %s failed: %s", a->qname, a->why);
    snd_result r = {0};
    snd_result_set(&r, 451, "4.7.5", text);
    r.stage = SL_STAGE_CONNECT;
    r.cond = SL_COND_TLS;
    candidate_failed(dl, &r);
    snd_result_clear(&r);
}

static void next_target(delivery *dl)
{
    cand *c = &dl->cands[dl->cur];
    struct in_addr a4;
    struct in6_addr a6;
    if (!c->ip && !strcmp(c->host, "localhost"))
        c->ip = xstrdup("127.0.0.1");
    if (!c->ip && (inet_pton(AF_INET, c->host, &a4) == 1 || inet_pton(AF_INET6, c->host, &a6) == 1))
        c->ip = xstrdup(c->host);
    /* A host name's TLSA records come before its addresses (DANE is on and
     * the policy is not `disabled`); an address literal has none. */
    if (!c->ip && !c->dane_done && dl->w->dane && (sl_tls_policy)dl->d->tls != SL_TLS_DISABLED) {
        if (snd_dane_lookup(dl->w->dane, c->host, c->port, on_dane, dl) == 0)
            return;
        c->dane_done = true;
    }
    if (c->ip) {
        start_txn(dl);
        return;
    }
    if (!dl->w->dns || sl_dns_addr(dl->w->dns, c->host, on_addr, dl) < 0) {
        char text[300];
        snprintf(text, sizeof text, "cannot resolve %s", c->host);
        finish_local(dl, SL_COND_NETWORK, 451, "4.4.3", text, "bad MX host name");
    }
}

/* MTA-STS (mtasts.h), once the MX hosts are known: wait briefly for the
 * domain's first policy fetch (deferring past mta_sts_fetch_timeout); under
 * enforce, only MX hosts the policy names are tried, each with verified
 * TLS (start_txn), and a domain none of whose MX hosts match defers. */
static void sts_check(delivery *dl);

static void on_sts_wait(uv_timer_t *t)
{
    sts_check(t->data);
}

static void sts_check(delivery *dl)
{
    snd_worker *w = dl->w;
    const char *domain = dl->d->job->domain;
    if (!w->sh.mtasts) {
        next_target(dl);
        return;
    }
    snd_sts_policy_clear(&dl->sts);
    if (snd_mtasts_get(w->sh.mtasts, domain, &dl->sts) > 0) {
        int64_t now = sl_mono_ms();
        if (!dl->sts_wait_until)
            dl->sts_wait_until = now + w->sh.cfg->sender.mta_sts_fetch_timeout_ms + 1000;
        if (now < dl->sts_wait_until) {
            uv_timer_start(&dl->timer, on_sts_wait, 50, 0);
            return;
        }
        sl_metric_inc("sluice_sender_mtasts_deferrals_total", "reason=\"pending\"", 1);
        char text[400];
        snprintf(text, sizeof text, "MTA-STS policy of %s is still being fetched", domain);
        finish_local(dl, SL_COND_NETWORK, 451, "4.4.3", text, "MTA-STS policy pending");
        return;
    }
    if (dl->sts.mode == SND_STS_ENFORCE) {
        size_t keep = 0;
        char first_bad[256] = "";
        for (size_t i = 0; i < dl->n_cands; i++) {
            if (snd_sts_mx_match(&dl->sts, dl->cands[i].host)) {
                dl->cands[keep++] = dl->cands[i];
                continue;
            }
            if (!first_bad[0])
                snprintf(first_bad, sizeof first_bad, "%s", dl->cands[i].host);
            free(dl->cands[i].host);
            free(dl->cands[i].ip);
        }
        dl->n_cands = keep;
        if (first_bad[0])
            snprintf(dl->tls_failure, sizeof dl->tls_failure,
                     "MTA-STS: MX host %.200s does not match the policy", first_bad);
        if (!keep) {
            sl_metric_inc("sluice_sender_mtasts_deferrals_total", "reason=\"mx_mismatch\"", 1);
            char text[400];
            snprintf(text, sizeof text,
                     "no MX host of %s matches its MTA-STS policy (mode enforce; %s)", domain,
                     first_bad);
            finish_local(dl, SL_COND_TLS, 451, "4.7.5", text, "MTA-STS MX mismatch");
            return;
        }
    }
    next_target(dl);
}

static void add_cand(delivery *dl, const char *host, uint16_t port)
{
    dl->cands = xrealloc(dl->cands, (dl->n_cands + 1) * sizeof *dl->cands);
    dl->cands[dl->n_cands++] = (cand){xstrdup(host), port, NULL};
}

static bool add_hostport(delivery *dl, const char *hp)
{
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp)
        return false;
    char host[256];
    size_t n = (size_t)(colon - hp);
    if (hp[0] == '[' && n > 2 && hp[n - 1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(n - 2), hp + 1);
    else
        snprintf(host, sizeof host, "%.*s", (int)n, hp);
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535)
        return false;
    add_cand(dl, host, (uint16_t)port);
    return true;
}

static void on_mx(const sl_dns_mx_result *res, void *arg)
{
    delivery *dl = arg;
    switch (res->status) {
    case SL_DNS_OK:
        for (size_t i = 0; i < res->n_hosts; i++)
            add_cand(dl, res->hosts[i].host, dl->w->mx_port);
        break;
    case SL_DNS_NODATA:
        /* RFC 5321 5.1: no MX, the domain itself is the implicit MX. */
        add_cand(dl, dl->d->job->domain, dl->w->mx_port);
        break;
    case SL_DNS_NULL_MX:
        finish_local(dl, SL_COND_NULL_MX, 556, "5.1.10",
                     "recipient domain publishes a null MX (RFC 7505)", "null MX");
        return;
    case SL_DNS_NXDOMAIN:
        finish_local(dl, SL_COND_REPLY, 550, "5.1.2", "recipient domain does not exist",
                     "domain does not exist");
        return;
    default: {
        /* Temporary: never fall back to A records, the MX may exist. */
        char text[200];
        snprintf(text, sizeof text, "MX lookup for %s failed: %s", dl->d->job->domain,
                 sl_dns_status_name(res->status));
        finish_local(dl, SL_COND_NETWORK, 451, "4.4.3", text, "DNS lookup failed");
        return;
    }
    }
    dl->cur = 0;
    sts_check(dl);
}

static void delivery_route(delivery *dl)
{
    const sl_dispatch *d = dl->d;
    const sl_job *job = d->job;
    const sl_config *cfg = dl->w->sh.cfg;
    if (d->route && *d->route) {
        if (!add_hostport(dl, d->route)) {
            finish_local(dl, SL_COND_NETWORK, 451, "4.3.5", "bad route in dispatch", "bad route");
            return;
        }
    } else if (sl_config_route(cfg, job->domain)) {
        const sl_route *r = sl_config_route(cfg, job->domain);
        add_cand(dl, r->host, r->port);
    } else if (job->null_mx) {
        finish_local(dl, SL_COND_NULL_MX, 556, "5.1.10",
                     "recipient domain publishes a null MX (RFC 7505)", "null MX");
        return;
    } else if (job->n_mx) {
        /* classify resolved it already; sort by preference, stable. */
        size_t n = job->n_mx;
        size_t *order = xcalloc(n, sizeof *order);
        for (size_t i = 0; i < n; i++)
            order[i] = i;
        for (size_t i = 1; i < n; i++)
            for (size_t k = i; k > 0 && job->mx[order[k]]->preference <
                                             job->mx[order[k - 1]]->preference; k--) {
                size_t t = order[k];
                order[k] = order[k - 1];
                order[k - 1] = t;
            }
        for (size_t i = 0; i < n; i++)
            add_cand(dl, job->mx[order[i]]->host, dl->w->mx_port);
        free(order);
        dl->cur = 0;
        sts_check(dl);
        return;
    } else {
        if (!dl->w->dns || sl_dns_mx(dl->w->dns, job->domain, on_mx, dl) < 0)
            finish_local(dl, SL_COND_REPLY, 550, "5.1.2", "recipient domain name is invalid",
                         "invalid domain");
        return;
    }
    dl->cur = 0;
    next_target(dl);
}

/* ---- intake ---- */

/* The delivery ledger's check, just before the first transaction: every
 * recipient whose final outcome it holds is skipped, whichever copy of the
 * dispatch this is; one that another copy in this sender is delivering
 * right now is waited for. Returns true when the delivery is finished
 * (nothing left to send) or waits. */
#define SND_LEDGER_BUSY_WAIT_MS 50
/* How often a dispatch held for its partition's ledger looks again. */
#define SND_LEDGER_HOLD_POLL_MS 20

static void on_slot(uv_timer_t *t);

static bool ledger_skip(delivery *dl)
{
    snd_ledger *l = dl->w->sh.ledger;
    const sl_job *job = dl->d->job;
    if (!l)
        return false;
    int *rc = xcalloc(dl->n_pending ? dl->n_pending : 1, sizeof *rc);
    for (size_t k = 0; k < dl->n_pending; k++) {
        size_t i = dl->pending_idx[k];
        rc[k] = snd_ledger_claim(l, job->job_id, job->recipients[i]);
        if (rc[k] != SND_LEDGER_BUSY)
            continue;
        /* Another copy of this job is on its way: let go of what this
         * pass claimed and ask again once that one may be done. */
        for (size_t j = 0; j < k; j++)
            if (rc[j] == 0)
                snd_ledger_unclaim(l, job->job_id, job->recipients[dl->pending_idx[j]]);
        free(rc);
        uv_timer_start(&dl->timer, on_slot, SND_LEDGER_BUSY_WAIT_MS, 0);
        return true;
    }
    /* In a crashed owner's window its ledger record may have landed
     * without the event it was produced with (outcome.h): the final event
     * is published again from the ledger's record. */
    bool suspect = dl->rec && snd_ledger_suspect(l, dl->rec->partition, dl->rec->offset);
    size_t keep = 0, skipped = 0, again = 0;
    for (size_t k = 0; k < dl->n_pending; k++) {
        size_t i = dl->pending_idx[k];
        if (rc[k] == SND_LEDGER_FINAL) {
            rcpt_state *s = &dl->rs[i];
            s->final = true;
            s->type = suspect ? snd_ledger_outcome(l, job->job_id, job->recipients[i])
                              : SLUICE__V1__EVENT_TYPE__EVENT_UNKNOWN;
            s->from_ledger = s->type != SLUICE__V1__EVENT_TYPE__EVENT_UNKNOWN;
            s->skipped = !s->from_ledger;
            if (s->from_ledger) {
                s->reason = "the delivery ledger holds this final outcome; its event is "
                            "published again (the previous owner may have died before it)";
                again++;
            }
            skipped++;
            sl_log_job(SL_LOG_INFO, job->job_id,
                       "skipped %s: the delivery ledger holds its final outcome "
                       "(dispatch %s[%d]@%lld, attempt %u)%s",
                       job->recipients[i], dl->rec ? dl->rec->topic : "-",
                       dl->rec ? dl->rec->partition : -1,
                       dl->rec ? (long long)dl->rec->offset : -1LL, job->attempt,
                       s->from_ledger ? "; its final event is published again" : "");
            continue;
        }
        dl->rs[i].claimed = true;
        dl->pending[keep] = dl->pending[k];
        dl->pending_idx[keep++] = i;
    }
    free(rc);
    dl->n_pending = keep;
    if (!skipped)
        return false;
    char lab[256];
    snprintf(lab, sizeof lab, "site=\"%s\"", dl->d->site ? dl->d->site : "");
    sl_metric_inc("sluice_sender_ledger_skipped_total", lab, (double)skipped);
    if (keep)
        return false;
    if (again)
        delivery_finish(dl);
    else
        delivery_release(dl, true);
    return true;
}

static void on_slot(uv_timer_t *t)
{
    delivery *dl = t->data;
    if (dl->w->draining) {
        delivery_release(dl, false);
        return;
    }
    /* The partition moved to another sender (a rebalance): it reads the
     * dispatch again, so handing it back avoids a second copy. */
    if (dl->rec && (atomic_load(&dl->w->hold) || sl_record_revoked(dl->rec))) {
        delivery_release(dl, false);
        return;
    }
    /* Newly assigned: its ledger partition is still being read back, and
     * the previous owner may have finished this very job (ledger.h). */
    if (dl->rec && dl->w->sh.ledger && !snd_ledger_ready(dl->w->sh.ledger, dl->rec->partition)) {
        if (!dl->ledger_held) {
            dl->ledger_held = true;
            sl_metric_inc("sluice_sender_ledger_held_total", NULL, 1);
        }
        uv_timer_start(&dl->timer, on_slot, SND_LEDGER_HOLD_POLL_MS, 0);
        return;
    }
    if (ledger_skip(dl))
        return;
    dl->sending = true;
    atomic_fetch_add(&dl->w->sending, 1);
    delivery_route(dl);
}

static void on_dlq(void *arg, int err)
{
    delivery *dl = arg;
    if (err < 0) {
        sl_error("DLQ publish failed: %s; the record stays uncommitted", sl_strerror(err));
        delivery_release(dl, false);
        return;
    }
    delivery_release(dl, true);
}

static bool prepare_message(delivery *dl)
{
    const sl_job *job = dl->d->job;
    snd_worker *w = dl->w;
    char *err = NULL;
    int rc;
    int64_t now = sl_now_ms();
    if (job->template_id && *job->template_id) {
        rc = snd_tmplstore_build(w->sh.templates, job, now, &dl->msg, &err);
        if (!dl->first_try_ms)
            dl->first_try_ms = sl_mono_ms();
        /* Not loaded yet, or published a moment ago and still on its way
         * through the templates reader: ask again shortly. */
        if (rc == SL_ENOTFOUND && (!snd_tmplstore_loaded(w->sh.templates) ||
                                   sl_mono_ms() - dl->first_try_ms < 3000)) {
            free(err);
            return false;
        }
    } else {
        rc = snd_msg_build(job, NULL, now, &dl->msg, &err);
    }
    if (rc < 0) {
        char text[400];
        snprintf(text, sizeof text, "cannot build the message: %s", err ? err : sl_strerror(rc));
        free(err);
        /* A template still missing once the store is loaded and the grace
         * above is over, a broken one, or bad variables will not mend
         * themselves: bounce as content at once rather than retry to expiry. */
        finish_local(dl, SL_COND_REPLY, 554, "5.6.0", text,
                     rc == SL_ENOTFOUND ? "unknown template" : "message could not be built");
        return true;
    }
    char dom[256];
    const char *d = snd_msg_from_domain(dl->msg.data, dl->msg.len, dom, sizeof dom) == 0
                        ? dom
                        : NULL;
    dl->message_id = sl_message_id(job->job_id, d);
    /* A bulk job gets one-click unsubscribe: each recipient's own token,
     * so a copy per recipient, built and signed per transaction. A raw
     * message with its own List-Unsubscribe keeps it. */
    dl->per_rcpt = w->sh.unsub_key && !job->transactional &&
                   !snd_msg_has_field(dl->msg.data, dl->msg.len, "List-Unsubscribe");
    if (!dl->per_rcpt)
        dkim_sign(dl, &dl->msg);
    return true;
}

static void on_prepare_retry(uv_timer_t *t);

static void delivery_schedule(delivery *dl)
{
    if (!prepare_message(dl)) {
        uv_timer_start(&dl->timer, on_prepare_retry, 200, 0);
        return;
    }
    if (dl->rs[0].final || dl->msg.len == 0)
        return; /* finished already (could not build) */
    const sl_dispatch *d = dl->d;
    char key[300];
    snprintf(key, sizeof key, "%s/%s", d->source_ip, d->site);
    int64_t now = sl_now_ms();
    dl->slot_ms = snd_pacer_slot(dl->w->pacer, key, d->send_at_ms, d->rate_per_sec, now);
    int64_t wait = dl->slot_ms - now;
    uv_timer_start(&dl->timer, on_slot, wait > 0 ? (uint64_t)wait : 0, 0);
}

static void on_prepare_retry(uv_timer_t *t)
{
    delivery *dl = t->data;
    if (dl->w->draining) {
        delivery_release(dl, false);
        return;
    }
    delivery_schedule(dl);
}

static void intake(snd_worker *w, sl_record *rec)
{
    delivery *dl = xcalloc(1, sizeof *dl);
    dl->w = w;
    dl->rec = rec;
    dl->intake_ms = sl_now_ms();
    uv_timer_init(&w->loop, &dl->timer);
    dl->timer.data = dl;
    dl->next = w->active;
    if (w->active)
        w->active->prev = dl;
    w->active = dl;
    atomic_fetch_add(&w->busy, 1);
    if (w->draining) {
        delivery_release(dl, false);
        return;
    }
    const char *why = NULL;
    rd_kafka_message_t *m = rec->msg;
    int rc = sl_dispatch_decode(m->payload, m->len, &dl->d, &why);
    if (rc == 0 && (!dl->d->job || !dl->d->job->n_recipients || !dl->d->job->job_id)) {
        why = "dispatch without a job or recipients";
        sl_dispatch_free(dl->d);
        dl->d = NULL;
        rc = SL_EPROTO;
    }
    if (rc < 0) {
        sl_warn("malformed dispatch at %s[%d]@%lld: %s; to the DLQ", rec->topic, rec->partition,
                (long long)rec->offset, why);
        sl_metric_inc("sluice_sender_malformed_total", NULL, 1);
        if (sl_dlq_publish(w->prod, w->sh.cfg, m->payload, m->len, why, rec->topic,
                           rec->partition, rec->offset, on_dlq, dl) < 0)
            delivery_release(dl, false);
        return;
    }
    size_t n = dl->d->job->n_recipients;
    dl->rs = xcalloc(n, sizeof *dl->rs);
    dl->pending = xcalloc(n, sizeof *dl->pending);
    dl->pending_idx = xcalloc(n, sizeof *dl->pending_idx);
    for (size_t i = 0; i < n; i++) {
        dl->pending[i] = dl->d->job->recipients[i];
        dl->pending_idx[i] = i;
    }
    dl->n_pending = n;
    delivery_schedule(dl);
}

/* ---- the thread ---- */

static void on_async(uv_async_t *h)
{
    snd_worker *w = h->data;
    pthread_mutex_lock(&w->mu);
    sl_record *r = w->in_head;
    w->in_head = w->in_tail = NULL;
    bool drain = w->drain_req, stop = w->stop_req;
    pthread_mutex_unlock(&w->mu);
    if (drain && !w->draining) {
        w->draining = true;
        /* Hand back what has not started; transactions under way finish. */
        delivery *dl = w->active;
        while (dl) {
            delivery *n = dl->next;
            if (!dl->started && dl->rec && uv_is_active((uv_handle_t *)&dl->timer)) {
                uv_timer_stop(&dl->timer);
                delivery_release(dl, false);
            }
            dl = n;
        }
        snd_pools_quit_idle(w->pools);
    }
    while (r) {
        sl_record *n = r->next__;
        r->next__ = NULL;
        intake(w, r);
        r = n;
    }
    if (stop) {
        snd_pools_quit_idle(w->pools);
        uv_stop(&w->loop);
    }
}

/* A (source IP, site) pair the pacer forgot: its metric series go too, so
 * that memory follows the pairs in use (the key is "source/site"). */
static void forget_pair(void *arg, const char *key)
{
    (void)arg;
    const char *slash = strchr(key, '/');
    if (!slash)
        return;
    char source[64], l[256];
    snprintf(source, sizeof source, "%.*s", (int)(slash - key), key);
    const char *site = slash + 1;
    snd_outcome_forget_pair(site, source);
    snprintf(l, sizeof l, "site=\"%s\",source=\"%s\"", site, source);
    sl_metric_drop("sluice_sender_attempts_total", l);
    sl_metric_drop("sluice_sender_queue_wait_seconds", l);
    sl_metric_drop("sluice_sender_smtp_seconds", l);
    for (int tls = 0; tls < 2; tls++) {
        snprintf(l, sizeof l, "site=\"%s\",source=\"%s\",tls=\"%s\"", site, source,
                 tls ? "yes" : "no");
        sl_metric_drop("sluice_sender_transactions_total", l);
    }
}

/* Once a second: print log summaries whose interval is over, and free the
 * per-destination state that has been idle for sender.idle_state_timeout. */
static void on_sweep(uv_timer_t *t)
{
    snd_worker *w = t->data;
    int64_t idle = w->sh.cfg->sender.idle_state_timeout_ms;
    sl_log_every_flush();
    snd_dests_sweep(w->dests, sl_mono_ms());
    snd_pools_sweep(w->pools, idle, sl_mono_ms());
    snd_pacer_sweep(w->pacer, idle, sl_now_ms(), forget_pair, NULL);
    char l[32];
    snprintf(l, sizeof l, "worker=\"%d\"", w->index);
    sl_metric_set("sluice_sender_destinations_known", l, (double)snd_dests_count(w->dests));
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void *worker_main(void *arg)
{
    snd_worker *w = arg;
    /* Deliveries run here, not on the main loop: a worker blocked in a
     * callback must turn /healthz to 503 as a blocked main loop does. */
    char name[32];
    snprintf(name, sizeof name, "worker %d loop", w->index);
    sl_beat *beat = sl_health_loop(&w->loop, name, w->sh.cfg->metrics.health_timeout_ms);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    sl_health_loop_stop(beat);
    /* Stopped: flush what is outstanding, then release the loop. */
    sl_producer_flush(w->prod, 10000);
    sl_producer_free(w->prod);
    if (w->lprod) {
        sl_producer_flush(w->lprod, 10000);
        sl_producer_free(w->lprod);
    }
    if (w->dane)
        snd_dane_free(w->dane);
    if (w->dns)
        sl_dns_free(w->dns);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    uv_walk(&w->loop, walk_close, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

snd_worker *snd_worker_start(const snd_shared *sh, int index, char **err)
{
    snd_worker *w = xcalloc(1, sizeof *w);
    w->sh = *sh;
    w->index = index;
    uv_loop_init(&w->loop);
    w->prod = sl_producer_new(sh->cfg, &w->loop, err);
    if (!w->prod) {
        uv_loop_close(&w->loop);
        free(w);
        return NULL;
    }
    if (sh->ledger) {
        w->lprod = sl_producer_new_prompt(sh->cfg, &w->loop, err);
        if (!w->lprod) {
            sl_producer_free(w->prod);
            uv_run(&w->loop, UV_RUN_NOWAIT);
            uv_loop_close(&w->loop);
            free(w);
            return NULL;
        }
    }
    if (sh->dane_cache) {
        w->dane = snd_dane_new(&w->loop, sh->cfg, sh->dane_cache, err);
        if (!w->dane) {
            sl_producer_free(w->prod);
            if (w->lprod)
                sl_producer_free(w->lprod);
            uv_run(&w->loop, UV_RUN_NOWAIT);
            uv_loop_close(&w->loop);
            free(w);
            return NULL;
        }
    }
    char *derr = NULL;
    w->dns = sl_dns_new(&w->loop, sh->cfg, &derr);
    if (!w->dns) {
        sl_warn("worker %d: no DNS resolver (%s); only routes and MX lists in jobs work", index,
                derr ? derr : "?");
        free(derr);
    }
    const char *mp = getenv("SLUICE_SENDER_MX_PORT"); /* tests: MX on a high port */
    w->mx_port = mp && atoi(mp) > 0 ? (uint16_t)atoi(mp) : 25;
    const sl_config *cfg = sh->cfg;
    snd_dest_opts dopt = {
        .backoff_initial_ms = cfg->sender.destination_backoff_initial_ms,
        .backoff_max_ms = cfg->sender.destination_backoff_max_ms,
        .idle_ms = cfg->sender.idle_state_timeout_ms,
        .seed = (uint64_t)sl_now_ms() * 2654435761u + (uint64_t)index + 1,
    };
    w->dests = snd_dests_new(&dopt);
    w->dest_cap = cfg->sender.max_inflight_per_destination;
    if (!w->dest_cap)
        w->dest_cap = cfg->sender.max_inflight / 4 ? cfg->sender.max_inflight / 4 : 1;
    w->pools = snd_pools_new(&w->loop, w->dests);
    snd_pools_set_tls_fallback(w->pools, sh->cfg->sender.tls_fallback_expiry_ms);
    w->pacer = snd_pacer_new();
    uv_timer_init(&w->loop, &w->sweep_timer);
    w->sweep_timer.data = w;
    uv_timer_start(&w->sweep_timer, on_sweep, 1000, 1000);
    uv_unref((uv_handle_t *)&w->sweep_timer);
    pthread_mutex_init(&w->mu, NULL);
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        sl_panic("pthread_create failed");
    return w;
}

void snd_worker_submit(snd_worker *w, sl_record *rec)
{
    rec->next__ = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->in_tail)
        w->in_tail->next__ = rec;
    else
        w->in_head = rec;
    w->in_tail = rec;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
}

void snd_worker_drain(snd_worker *w)
{
    pthread_mutex_lock(&w->mu);
    w->drain_req = true;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
}

size_t snd_worker_sending(snd_worker *w)
{
    return atomic_load(&w->sending);
}

void snd_worker_hold(snd_worker *w, bool hold)
{
    atomic_store(&w->hold, hold);
}

size_t snd_worker_busy(snd_worker *w)
{
    return atomic_load(&w->busy);
}

void snd_worker_stop(snd_worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->drain_req = w->stop_req = true;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
    pthread_join(w->thread, NULL);
    /* Deliveries still listed were abandoned by the stop; their records
     * stay undone on purpose. */
    snd_pacer_free(w->pacer);
    if (snd_pools_connections(w->pools) == 0) {
        snd_pools_free(w->pools);
        /* Abandoned deliveries may still hold entries: only then free. */
        if (!w->active)
            snd_dests_free(w->dests);
    }
    pthread_mutex_destroy(&w->mu);
    uv_loop_close(&w->loop);
    free(w);
}
