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

sched_op *sched_op_new(sl_record *rec)
{
    sched_op *op = xcalloc(1, sizeof *op);
    op->rec = rec;
    op->pending = 1;
    return op;
}

sched_op *sched_op_new_mark(sl_mark *mark)
{
    sched_op *op = xcalloc(1, sizeof *op);
    op->mark = *mark;
    mark->part__ = NULL;
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
    free(op);
}

void sched_op_cb(void *arg, int err)
{
    sched_op *op = arg;
    if (err) {
        int32_t part = -1;
        const char *topic = op->rec ? op->rec->topic
                            : op->mark.part__ ? sl_mark_topic(&op->mark, &part) : "?";
        if (op->rec)
            part = op->rec->partition;
        sl_error("scheduler: a record for %s[%d]@%lld could never be produced: %s", topic, part,
                 op->rec ? (long long)op->rec->offset : -1LL, sl_strerror(err));
        sl_metric_inc("sluice_scheduler_produce_failures_total", NULL, 1);
    }
    sched_op_release(op);
}

int sched_op_send(sched_op *op, sl_producer *p, const char *topic, const char *key,
                  const void *val, size_t vlen)
{
    sched_op_hold(op);
    int rc = sl_producer_send(p, topic, key, key ? strlen(key) : 0, val, vlen, NULL, 0,
                              sched_op_cb, op);
    if (rc) {
        sl_error("scheduler: producing to %s failed: %s", topic, sl_strerror(rc));
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
