/*
 * outcome - see outcome.h.
 */
#include "outcome.h"
#include "log.h"
#include "metrics.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct acks {
    int pending;
    int err;
    bool armed;     /* every send issued */
    snd_outcome_cb done;
    void *arg;
    snd_ledger *ledger;
    char *job_id;   /* with ledger */
} acks;

/* One ledger record on its way: its pair is noted once acknowledged. */
typedef struct lack {
    acks *a;
    char *rcpt;
    Sluice__V1__EventType type;
} lack;

static void acks_free(acks *a)
{
    free(a->job_id);
    free(a);
}

static void maybe_done(acks *a)
{
    if (!a->armed || a->pending != 0)
        return;
    a->done(a->arg, a->err);
    acks_free(a);
}

static void on_ack(void *arg, int err)
{
    acks *a = arg;
    a->pending--;
    if (err < 0 && !a->err)
        a->err = err;
    maybe_done(a);
}

static void on_ledger_ack(void *arg, int err)
{
    lack *k = arg;
    acks *a = k->a;
    if (err == 0)
        snd_ledger_note(a->ledger, a->job_id, k->rcpt, k->type);
    free(k->rcpt);
    free(k);
    on_ack(a, err);
}

int64_t snd_retry_delay(const sl_config *cfg, uint32_t attempt)
{
    if (!cfg->retry.n_delays)
        return 60000;
    size_t i = attempt < cfg->retry.n_delays ? attempt : cfg->retry.n_delays - 1;
    return cfg->retry.delays_ms[i];
}

bool snd_retry_expired(const sl_config *cfg, const sl_job *job, int64_t now_ms, int64_t delay_ms)
{
    int64_t expiry = job->expires_at_ms ? job->expires_at_ms
                                        : job->created_at_ms + cfg->retry.expiry_ms;
    if (!job->expires_at_ms && !job->created_at_ms)
        return false; /* no clock to measure from: let the retry stage decide */
    return now_ms + delay_ms > expiry;
}

static const char *metric_for(Sluice__V1__EventType t)
{
    switch (t) {
    case SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED: return "sluice_sender_delivered_total";
    case SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED: return "sluice_sender_deferred_total";
    case SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED: return "sluice_sender_bounced_total";
    default: return "sluice_sender_expired_total";
    }
}

/* The reply codes this process has counted, one bit each (SMTP codes are
 * three digits): forgetting a pair drops its replies_total series for each
 * code ever seen, a handful in practice, without a list per pair. */
#define REPLY_CODES 1000
static _Atomic uint64_t codes_seen[REPLY_CODES / 64 + 1];

static void replies_labels(char *l, size_t size, const char *site, const char *source, int code)
{
    snprintf(l, size, "site=\"%s\",source=\"%s\",code=\"%d\"", site, source, code);
}

static void count_reply(const char *site, const char *source, int code)
{
    if (code <= 0 || code >= REPLY_CODES)
        return;
    atomic_fetch_or(&codes_seen[code / 64], UINT64_C(1) << (code % 64));
    char l[320];
    replies_labels(l, sizeof l, site, source, code);
    sl_metric_inc("sluice_sender_replies_total", l, 1);
}

void snd_outcome_forget_pair(const char *site, const char *source_ip)
{
    static const Sluice__V1__EventType types[] = {
        SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED, SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED,
        SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED, SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED};
    char l[256]; /* as snd_outcome_publish() writes them */
    snprintf(l, sizeof l, "site=\"%s\",source=\"%s\"", site, source_ip);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        sl_metric_drop(metric_for(types[i]), l);
    for (int w = 0; w < REPLY_CODES / 64 + 1; w++) {
        uint64_t bits = atomic_load(&codes_seen[w]);
        for (int b = 0; bits; b++, bits >>= 1)
            if (bits & 1) {
                char r[320];
                replies_labels(r, sizeof r, site, source_ip, w * 64 + b);
                sl_metric_drop("sluice_sender_replies_total", r);
            }
    }
}

int snd_outcome_publish(sl_producer *p, const sl_config *cfg, const sl_dispatch *d,
                        const snd_outcome_info *info, const snd_rcpt_outcome *r, size_t n,
                        snd_outcome_cb done, void *arg)
{
    const sl_job *job = d->job;
    int64_t now = sl_now_ms();
    int64_t delay = snd_retry_delay(cfg, job->attempt);
    bool expired = snd_retry_expired(cfg, job, now, delay);
    char *retry_suffix = sl_config_retry_suffix(delay);
    char *retry_topic = sl_config_topic(cfg, retry_suffix);
    free(retry_suffix);

    acks *a = xcalloc(1, sizeof *a);
    a->done = done;
    a->arg = arg;
    if (info->ledger) {
        a->ledger = info->ledger;
        a->job_id = xstrdup(job->job_id);
    }
    int rc = 0;
    char **deferred = xcalloc(n ? n : 1, sizeof *deferred);
    char *events_topic = sl_config_topic(cfg, "events");
    sl_buf eb = SL_BUF_INIT;
    size_t n_def = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        Sluice__V1__EventType type = r[i].type;
        if (type == SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED) {
            if (expired)
                type = SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED;
            else
                deferred[n_def++] = (char *)r[i].rcpt;
        }
        sl_event e;
        sl_event_from_job(&e, type, job, "sender");
        e.recipient = (char *)r[i].rcpt;
        if (d->site && *d->site)
            e.site = d->site;
        if (d->pool && *d->pool)
            e.pool = d->pool;
        e.source_ip = d->source_ip;
        e.mx_host = (char *)(info->mx_host ? info->mx_host : "");
        e.mx_ip = (char *)(info->mx_ip ? info->mx_ip : "");
        e.tls_protocol = (char *)(info->tls_protocol ? info->tls_protocol : "");
        e.tls_cipher = (char *)(info->tls_cipher ? info->tls_cipher : "");
        e.tls_policy = (char *)(info->tls_policy ? info->tls_policy : "");
        e.tls_verified = info->tls_verified;
        e.tls_verify_result = (char *)(info->tls_verify_result ? info->tls_verify_result : "");
        e.tls_failure = (char *)(info->tls_failure ? info->tls_failure : "");
        e.message_id = (char *)(info->message_id ? info->message_id : "");
        e.sender_id = (char *)(info->sender_id ? info->sender_id : "");
        e.queue_ms = info->queue_ms;
        e.smtp_ms = info->smtp_ms;
        e.possible_duplicate = r[i].possible_duplicate;
        e.republished = r[i].from_ledger;
        e.reason = (char *)(r[i].reason ? r[i].reason : "");
        if (r[i].reply) {
            e.smtp_code = (uint32_t)r[i].reply->code;
            e.enhanced_code = (char *)r[i].reply->enh;
            e.reply = r[i].reply->raw ? r[i].reply->raw : (char *)"";
        }
        if (type == SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED) {
            e.bounce_class = r[i].bounce_class;
            e.bounce_hard = r[i].hard;
        }
        if (type == SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED) {
            e.retry_topic = retry_topic;
            e.next_attempt_ms = now + delay;
            e.destination_down_until_ms = info->destination_down_until_ms;
        }
        if (type == SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED && !r[i].from_ledger)
            e.reason = (char *)"expired: the next attempt would fall after the job's expiry";
        if (info->ledger && snd_ledger_is_final(type) && !r[i].from_ledger) {
            /* The ledger record goes first, on its own prompt producer, so
             * that it is on its way in the same instant as the event. */
            lack *k = xcalloc(1, sizeof *k);
            k->a = a;
            k->rcpt = xstrdup(r[i].rcpt);
            k->type = type;
            a->pending++;
            rc = snd_ledger_publish(info->ledger_producer ? info->ledger_producer : p, cfg,
                                    info->key, info->klen, info->partition, info->offset,
                                    job->job_id, r[i].rcpt, type, info->sender_id,
                                    on_ledger_ack, k);
            if (rc < 0) {
                a->pending--;
                free(k->rcpt);
                free(k);
                break;
            }
        }
        /* Packed here rather than by sl_event_publish(), whose per-thread
         * buffers outlive worker threads. */
        sl_buf_reset(&eb);
        sl_pack(&e.base, &eb);
        a->pending++;
        rc = sl_producer_send(p, events_topic, job->job_id, strlen(job->job_id), eb.data, eb.len,
                              NULL, 0, on_ack, a);
        if (rc < 0)
            a->pending--;
        char l[256];
        snprintf(l, sizeof l, "site=\"%s\",source=\"%s\"", d->site ? d->site : "",
                 d->source_ip ? d->source_ip : "");
        sl_metric_inc(metric_for(type), l, 1);
        if (r[i].reply && r[i].reply->code)
            count_reply(d->site ? d->site : "", d->source_ip ? d->source_ip : "",
                        r[i].reply->code);
        /* Per-message detail is the event's; the log line is for debugging. */
        sl_log_job(SL_LOG_DEBUG, job->job_id, "%s %s attempt %u worker=%d key=%s/%s: %s",
                   sl_event_type_name(type), r[i].rcpt, job->attempt, info->worker,
                   d->source_ip ? d->source_ip : "", d->site ? d->site : "",
                   r[i].reply && r[i].reply->raw ? r[i].reply->raw : e.reason);
    }

    if (rc == 0 && n_def) {
        sl_job j = *job;
        j.recipients = deferred;
        j.n_recipients = n_def;
        j.attempt = job->attempt + 1;
        j.not_before_ms = now + delay;
        if ((!j.site || !*j.site) && d->site)
            j.site = d->site;
        sl_buf b = SL_BUF_INIT;
        sl_pack(&j.base, &b);
        const char *key = j.site ? j.site : "";
        a->pending++;
        rc = sl_producer_send(p, retry_topic, key, strlen(key), b.data, b.len, NULL, 0, on_ack, a);
        if (rc < 0)
            a->pending--;
        sl_buf_free(&b);
    }
    free(deferred);
    free(retry_topic);
    free(events_topic);
    sl_buf_free(&eb);
    if (rc < 0) {
        a->err = rc;
        sl_error("publishing the outcome of job %s failed: %s", job->job_id, sl_strerror(rc));
    }
    /* Acknowledgements run on this thread (the ledger producer's too: the
     * same loop), so none can have fired yet. */
    a->armed = true;
    if (a->pending == 0) {
        int err = a->err;
        acks_free(a);
        return err ? err : SL_EINVAL;
    }
    return 0;
}
