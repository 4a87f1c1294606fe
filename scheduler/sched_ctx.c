/*
 * sched_ctx - see sched_ctx.h.
 */
#include "sched_ctx.h"
#include "log.h"
#include "metrics.h"
#include "sched_site.h"

#include <stdlib.h>
#include <string.h>

void sched_ctx_init(sched_ctx *ctx, const sl_config *cfg, uv_loop_t *loop, sl_producer *prod)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->cfg = cfg;
    ctx->loop = loop;
    ctx->prod = prod;
    ctx->sites = sched_sites_new(cfg);
    ctx->t_jobs = sl_config_topic(cfg, "jobs");
    ctx->t_sited = sl_config_topic(cfg, "sited");
    ctx->t_dispatch = sl_config_topic(cfg, "dispatch");
    ctx->t_events = sl_config_topic(cfg, "events");
    ctx->t_suppressions = sl_config_topic(cfg, "suppressions");
    ctx->t_dlq = sl_config_topic(cfg, "dlq");
    ctx->t_state = sl_config_topic(cfg, "state");
    ctx->n_retry = cfg->retry.n_delays;
    ctx->t_retry = xcalloc(ctx->n_retry ? ctx->n_retry : 1, sizeof *ctx->t_retry);
    for (size_t i = 0; i < ctx->n_retry; i++) {
        char *suffix = sl_config_retry_suffix(cfg->retry.delays_ms[i]);
        ctx->t_retry[i] = sl_config_topic(cfg, suffix);
        free(suffix);
    }
}

void sched_ctx_free(sched_ctx *ctx)
{
    sched_sites_free(ctx->sites);
    free(ctx->t_jobs);
    free(ctx->t_sited);
    free(ctx->t_dispatch);
    free(ctx->t_events);
    free(ctx->t_suppressions);
    free(ctx->t_dlq);
    free(ctx->t_state);
    for (size_t i = 0; i < ctx->n_retry; i++)
        free(ctx->t_retry[i]);
    free(ctx->t_retry);
}

const char *sched_ctx_retry_topic(const sched_ctx *ctx, int64_t wait_ms, int64_t *delay_ms)
{
    const int64_t *d = ctx->cfg->retry.delays_ms;
    SL_ASSERT(ctx->n_retry > 0);
    int fit = -1;     /* the shortest delay >= wait_ms */
    size_t longest = 0;
    for (size_t i = 0; i < ctx->n_retry; i++) {
        if (d[i] >= wait_ms && (fit < 0 || d[i] < d[fit]))
            fit = (int)i;
        if (d[i] > d[longest])
            longest = i;
    }
    size_t k = fit >= 0 ? (size_t)fit : longest;
    if (delay_ms)
        *delay_ms = d[k];
    return ctx->t_retry[k];
}

sched_op *sched_op_new(const sched_ctx *ctx, const char *stage, sl_record *rec)
{
    sched_op *op = xcalloc(1, sizeof *op);
    op->ctx = ctx;
    op->stage = stage;
    op->rec = rec;
    op->pending = 1;
    return op;
}

sched_op *sched_op_new_mark(const sched_ctx *ctx, const char *stage, sl_mark *mark, void *owner,
                            const void *job, size_t job_len)
{
    sched_op *op = xcalloc(1, sizeof *op);
    op->ctx = ctx;
    op->stage = stage;
    op->mark = *mark;
    mark->part__ = NULL;
    op->owner = owner;
    op->copy = job;
    op->copy_len = job_len;
    op->pending = 1;
    return op;
}

void sched_op_hold(sched_op *op)
{
    op->pending++;
}

void sched_op_release(sched_op *op)
{
    SL_ASSERT(op->pending > 0);
    if (--op->pending > 0)
        return;
    if (op->rec)
        sl_record_done(op->rec);
    else if (op->mark.part__)
        sl_mark_done(&op->mark);
    free(op->owner);
    free(op);
}

/* What the op stands for: the consumed record's bytes and place. */
static const void *op_source(sched_op *op, size_t *len, const char **topic, int32_t *part,
                             int64_t *off)
{
    *part = -1;
    *off = -1;
    if (op->rec) {
        *topic = op->rec->topic;
        *part = op->rec->partition;
        *off = op->rec->offset;
        *len = op->rec->msg ? op->rec->msg->len : 0;
        return op->rec->msg ? op->rec->msg->payload : NULL;
    }
    *topic = op->mark.part__ ? sl_mark_topic(&op->mark, part) : "?";
    *len = op->copy_len;
    return op->copy;
}

/* The last resort's own callback: a DLQ record or REJECTED event that
 * fails too can only be logged and counted. */
static void op_last_cb(void *arg, int err)
{
    sched_op *op = arg;
    if (err) {
        sl_error("%s: the DLQ record or REJECTED event for a failed record could not be "
                 "produced either: %s",
                 op->stage, sl_strerror(err));
        sl_metric_inc("sluice_scheduler_produce_failures_total", NULL, 1);
    }
    sched_op_release(op);
}

/* A send for the op failed for good: the record is not handed on, so it is
 * not committed silently either. Once per op. */
static void op_failed(sched_op *op, const char *to, int err)
{
    size_t len;
    const char *topic;
    int32_t part;
    int64_t off;
    const void *raw = op_source(op, &len, &topic, &part, &off);
    sl_error("%s: a record for %s[%d]@%lld could never be produced%s%s: %s", op->stage, topic,
             part, (long long)off, to ? " to " : "", to ? to : "", sl_strerror(err));
    sl_metric_inc("sluice_scheduler_produce_failures_total", NULL, 1);
    if (op->failed)
        return;
    op->failed = true;
    char labels[64];
    snprintf(labels, sizeof labels, "stage=\"%s\"", op->stage);
    sl_metric_inc("sluice_scheduler_handoff_failures_total", labels, 1);
    char *reason = xasprintf("%s: could not hand the job on%s%s: %s", op->stage,
                             to ? " to " : "", to ? to : "", sl_strerror(err));
    sched_op_hold(op);
    if (sl_dlq_publish(op->ctx->prod, op->ctx->cfg, raw, len, reason, topic, part, off, op_last_cb,
                       op) != 0)
        sched_op_release(op);
    /* The feedback stage reads events, not jobs: for it the DLQ record and
     * the counter say it all. */
    if (!strcmp(op->stage, "feedback")) {
        free(reason);
        return;
    }
    sl_job *job = NULL;
    const char *why;
    if (!raw || sl_job_decode(raw, len, &job, &why) != 0)
        job = NULL;
    sl_event e;
    sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_REJECTED, job, op->stage);
    e.reason = reason;
    sched_op_hold(op);
    if (sl_event_publish(op->ctx->prod, op->ctx->cfg, &e, op_last_cb, op) != 0)
        sched_op_release(op);
    sl_job_free(job);
    free(reason);
}

void sched_op_cb(void *arg, int err)
{
    sched_op *op = arg;
    if (err)
        op_failed(op, NULL, err);
    sched_op_release(op);
}

int sched_op_send(sched_op *op, const char *topic, const char *key, const void *val, size_t vlen,
                  const sl_header *hdrs, size_t nhdrs)
{
    sched_op_hold(op);
    int rc = sl_producer_send(op->ctx->prod, topic, key, key ? strlen(key) : 0, val, vlen, hdrs,
                              nhdrs, sched_op_cb, op);
    if (rc) {
        op_failed(op, topic, rc);
        sched_op_release(op);
    }
    return rc;
}

int sched_op_event(sched_op *op, const sched_ctx *ctx, const sl_event *e)
{
    sched_op_hold(op);
    int rc = sl_event_publish(ctx->prod, ctx->cfg, e, sched_op_cb, op);
    if (rc) {
        sl_error("scheduler: publishing an event failed: %s", sl_strerror(rc));
        sched_op_release(op);
    }
    return rc;
}

void sched_op_reject(sched_op *op, const sched_ctx *ctx, const sl_job *job, const char *stage,
                     const char *reason)
{
    sl_record *rec = op->rec;
    SL_ASSERT(rec && rec->msg);
    if (job)
        sl_log_job(SL_LOG_WARN, job->job_id, "%s: rejected: %s", stage, reason);
    else
        sl_warn("%s: rejected %s[%d]@%lld: %s", stage, rec->topic, rec->partition,
                (long long)rec->offset, reason);
    char labels[128];
    snprintf(labels, sizeof labels, "stage=\"%s\"", stage);
    sl_metric_inc("sluice_scheduler_rejected_total", labels, 1);
    op->failed = true; /* this is the DLQ record: a failure is only logged */
    sched_op_hold(op);
    int rc = sl_dlq_publish(ctx->prod, ctx->cfg, rec->msg->payload, rec->msg->len, reason,
                            rec->topic, rec->partition, rec->offset, sched_op_cb, op);
    if (rc) {
        sl_error("%s: DLQ publish failed: %s", stage, sl_strerror(rc));
        sched_op_release(op);
    }
    sl_event e;
    sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_REJECTED, job, stage);
    e.reason = (char *)reason;
    sched_op_event(op, ctx, &e);
}
