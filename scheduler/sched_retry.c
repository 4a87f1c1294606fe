/*
 * sched_retry - see sched_retry.h.
 */
#include "sched_retry.h"
#include "log.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct held {
    sl_record *rec;
    sl_job *job;
    struct held *next;
} held;

typedef struct rtopic {
    struct sched_retry *r;
    char *name;
    held *head;        /* sorted by not_before_ms, stable */
    size_t n;
    uv_timer_t timer;
    bool paused;
} rtopic;

struct sched_retry {
    sched_ctx *ctx;
    sl_consumer *cons;
    rtopic *topics;
    size_t n_topics;
    size_t held;
    bool stopping;
    int closing;
};

int64_t sched_retry_expiry(const sl_config *cfg, int64_t created_at_ms, int64_t expires_at_ms)
{
    if (expires_at_ms)
        return expires_at_ms;
    if (created_at_ms && cfg->retry.expiry_ms)
        return created_at_ms + cfg->retry.expiry_ms;
    return 0;
}

static rtopic *topic_of(sched_retry *r, const char *name)
{
    for (size_t i = 0; i < r->n_topics; i++)
        if (!strcmp(r->topics[i].name, name))
            return &r->topics[i];
    return NULL;
}

/* Produce the job to jobs, or EXPIRED when it is past expiry. Takes job. */
static void release(sched_retry *r, sl_record *rec, sl_job *job, int64_t now)
{
    sched_ctx *ctx = r->ctx;
    sched_op *op = sched_op_new(ctx, "retry", rec);
    int64_t exp = sched_retry_expiry(ctx->cfg, job->created_at_ms, job->expires_at_ms);
    if (exp && now >= exp) {
        sl_event e;
        sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED, job, "retry");
        char *reason = xasprintf("undelivered after %u attempts; expired %lld s ago",
                                 job->attempt, (long long)((now - exp) / 1000));
        e.reason = reason;
        sched_op_event(op, ctx, &e);
        free(reason);
        sl_log_job(SL_LOG_INFO, job->job_id, "retry: expired");
        sl_metric_inc("sluice_retry_expired_total", NULL, 1);
    } else {
        sl_buf b = SL_BUF_INIT;
        sl_pack(&job->base, &b);
        /* The mark that lets classify keep this job's attempt count: a
         * producer's job starts at attempt 0 whatever it says. */
        char attempt[16];
        snprintf(attempt, sizeof attempt, "%u", job->attempt);
        sl_header h = {SCHED_RETRY_HEADER, attempt};
        sched_op_send(op, ctx->t_jobs, job->domain, b.data, b.len, &h, 1);
        sl_buf_free(&b);
        sl_metric_inc("sluice_retry_released_total", NULL, 1);
    }
    sl_job_free(job);
    sched_op_release(op);
}

static void timer_cb(uv_timer_t *t);

static void topic_plan(rtopic *t)
{
    sched_retry *r = t->r;
    int64_t now = sl_now_ms();
    while (t->head && (t->head->job->not_before_ms <= now || r->stopping)) {
        held *h = t->head;
        t->head = h->next;
        t->n--;
        r->held--;
        if (r->stopping && h->job->not_before_ms > now) {
            /* Hand it back undone: its offset is not committed, so the
             * next owner reads it again, in order and on time. */
            sl_record_release(h->rec);
            sl_job_free(h->job);
        } else {
            release(r, h->rec, h->job, now);
        }
        free(h);
    }
    sl_metric_set("sluice_retry_held", NULL, (double)r->held);
    if (t->head) {
        int64_t wait = t->head->job->not_before_ms - now;
        uv_timer_start(&t->timer, timer_cb, (uint64_t)(wait > 0 ? wait : 0), 0);
        if (!t->paused) {
            sl_consumer_pause_topic(r->cons, t->name, true);
            t->paused = true;
        }
    } else {
        uv_timer_stop(&t->timer);
        if (t->paused) {
            sl_consumer_pause_topic(r->cons, t->name, false);
            t->paused = false;
        }
    }
}

static void timer_cb(uv_timer_t *t)
{
    topic_plan(t->data);
}

static void on_record(void *arg, sl_record *rec)
{
    sched_retry *r = arg;
    rd_kafka_message_t *m = rec->msg;
    sl_job *job = NULL;
    const char *why = NULL;
    if (!m->payload || sl_job_decode(m->payload, m->len, &job, &why) != 0) {
        sched_op *op = sched_op_new(r->ctx, "retry", rec);
        sched_op_reject(op, r->ctx, NULL, "retry", why ? why : "empty record");
        sched_op_release(op);
        return;
    }
    int64_t now = sl_now_ms();
    rtopic *t = topic_of(r, rec->topic);
    if (!t || job->not_before_ms <= now) {
        /* Due, and nothing of this topic may be held ahead of it? Order
         * only matters for the timer; releasing early what is due is
         * always right. */
        release(r, rec, job, now);
        return;
    }
    held *h = xcalloc(1, sizeof *h);
    h->rec = rec;
    h->job = job;
    held **pp = &t->head;
    while (*pp && (*pp)->job->not_before_ms <= job->not_before_ms)
        pp = &(*pp)->next;
    h->next = *pp;
    *pp = h;
    t->n++;
    r->held++;
    topic_plan(t);
}

sched_retry *sched_retry_new(sched_ctx *ctx, char **err)
{
    if (!ctx->n_retry) {
        *err = xstrdup("retry: no retry delays configured");
        return NULL;
    }
    sched_retry *r = xcalloc(1, sizeof *r);
    r->ctx = ctx;
    r->n_topics = ctx->n_retry;
    r->topics = xcalloc(r->n_topics, sizeof *r->topics);
    for (size_t i = 0; i < r->n_topics; i++) {
        r->topics[i].r = r;
        r->topics[i].name = ctx->t_retry[i];
        uv_timer_init(ctx->loop, &r->topics[i].timer);
        r->topics[i].timer.data = &r->topics[i];
    }
    sl_consumer_opts o = {.group = "sluice-retry",
                          .topics = (const char **)ctx->t_retry,
                          .n_topics = ctx->n_retry,
                          .on_record = on_record,
                          .arg = r};
    r->cons = sl_consumer_new(ctx->cfg, ctx->loop, &o, err);
    if (!r->cons) {
        /* The timers were never started: closing them is all there is. */
        r->cons = NULL;
        sched_retry_free(r);
        return NULL;
    }
    return r;
}

bool sched_retry_ready(const sched_retry *r)
{
    return sl_consumer_assigned(r->cons);
}

size_t sched_retry_held(const sched_retry *r)
{
    return r->held;
}

void sched_retry_stop(sched_retry *r, sl_drained_cb cb, void *arg)
{
    r->stopping = true;
    for (size_t i = 0; i < r->n_topics; i++)
        topic_plan(&r->topics[i]);
    sl_consumer_stop(r->cons, cb, arg);
}

static void close_cb(uv_handle_t *h)
{
    rtopic *t = h->data;
    sched_retry *r = t->r;
    if (--r->closing == 0) {
        free(r->topics);
        free(r);
    }
}

void sched_retry_free(sched_retry *r)
{
    if (!r)
        return;
    if (r->cons)
        sl_consumer_free(r->cons);
    r->closing = (int)r->n_topics;
    for (size_t i = 0; i < r->n_topics; i++) {
        SL_ASSERT(r->topics[i].head == NULL);
        uv_close((uv_handle_t *)&r->topics[i].timer, close_cb);
    }
}
