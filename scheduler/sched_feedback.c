/*
 * sched_feedback - see sched_feedback.h.
 */
#include "sched_feedback.h"
#include "log.h"
#include "metrics.h"
#include "sched_shape.h"
#include "sched_suppress.h"

#include <stdlib.h>
#include <string.h>

struct sched_feedback {
    sched_ctx *ctx;
    sl_consumer *cons;
    sched_backoff_rules rules;
};

/* Add e's recipient to its tenant's suppression list (once), holding op
 * until the entry is acknowledged. */
static void suppress_recipient(sched_feedback *f, const sl_event *e, sched_op *op,
                               const char *reason, const char *why)
{
    sched_ctx *ctx = f->ctx;
    if (!ctx->supp || !e->recipient || !*e->recipient)
        return;
    const char *tenant = e->tenant && *e->tenant ? e->tenant : ctx->cfg->scheduler.default_tenant;
    if (sched_suppress_has(ctx->supp, tenant, e->recipient))
        return;
    if (op)
        sched_op_hold(op);
    int rc = sched_suppress_add(ctx->supp, tenant, e->recipient, reason, e->job_id,
                                op ? sched_op_cb : NULL, op);
    if (rc && op)
        sched_op_release(op);
    sl_log_job(SL_LOG_INFO, e->job_id, "suppressing %s for tenant %s after %s", e->recipient,
               tenant, why);
    char labels[64];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    sl_metric_inc("sluice_suppressions_added_total", labels, 1);
}

void sched_feedback_event(sched_feedback *f, const sl_event *e, sched_op *op)
{
    sched_ctx *ctx = f->ctx;
    /* Backoff rules see deferrals and bounces alike: a rate-limit reply is
     * usually a 4xx, but a block list hit such as Microsoft's 5.7.606
     * bounces every message and must take the IP out of rotation. */
    if ((e->type == SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED ||
         e->type == SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED) &&
        ctx->shape && e->site && *e->site && e->source_ip && *e->source_ip) {
        const sl_backoff_rule *rule =
            sched_backoff_match(&f->rules, e->site, e->smtp_code, e->enhanced_code, e->reply);
        if (rule)
            sched_shape_feedback(ctx->shape, e->site, e->source_ip, rule, e->reply);
        /* Every MX of the site is down from that IP: dispatching more only
         * fills the sender with jobs it must defer. */
        if (e->type == SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED && e->destination_down_until_ms > 0)
            sched_shape_down(ctx->shape, e->site, e->source_ip, e->destination_down_until_ms,
                             e->reply && *e->reply ? e->reply : e->reason);
    }
    if (e->type == SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED && e->bounce_hard &&
        e->bounce_class == SLUICE__V1__BOUNCE_CLASS__BOUNCE_INVALID_RECIPIENT)
        suppress_recipient(f, e, op, "hard-bounce", "a hard bounce");
    if (e->type == SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED) {
        char labels[300];
        snprintf(labels, sizeof labels, "site=\"%.200s\"", e->site ? e->site : "");
        sl_metric_inc("sluice_complaints_total", labels, 1);
        suppress_recipient(f, e, op, "complaint", "a complaint");
    }
}

static void on_record(void *arg, sl_record *rec)
{
    sched_feedback *f = arg;
    sched_op *op = sched_op_new(f->ctx, "feedback", rec);
    sl_event *e = NULL;
    const char *why = NULL;
    if (rec->msg->payload && sl_event_decode(rec->msg->payload, rec->msg->len, &e, &why) == 0) {
        sched_feedback_event(f, e, op);
        sl_event_free(e);
    }
    /* An undecodable event is not ours to DLQ: analytics reads it too. */
    sched_op_release(op);
}

sched_feedback *sched_feedback_new(sched_ctx *ctx, char **err)
{
    sched_feedback *f = xcalloc(1, sizeof *f);
    f->ctx = ctx;
    sl_metric_help("sluice_complaints_total", SL_METRIC_COUNTER,
                   "COMPLAINED events (feedback-loop reports) seen, by site");
    if (sched_backoff_rules_init(&f->rules, ctx->cfg, err) != 0) {
        free(f);
        return NULL;
    }
    if (!ctx->loop)
        return f; /* tests */
    char *group = xasprintf("sluice-feedback-%s",
                            ctx->cfg->sender.instance_id ? ctx->cfg->sender.instance_id : "0");
    const char *topics[] = {ctx->t_events};
    sl_consumer_opts o = {.group = group,
                          .topics = topics,
                          .n_topics = 1,
                          .from_end = true,
                          .on_record = on_record,
                          .arg = f};
    f->cons = sl_consumer_new(ctx->cfg, ctx->loop, &o, err);
    free(group);
    if (!f->cons) {
        sched_backoff_rules_free(&f->rules);
        free(f);
        return NULL;
    }
    return f;
}

void sched_feedback_stop(sched_feedback *f, sl_drained_cb cb, void *arg)
{
    sl_consumer_stop(f->cons, cb, arg);
}

void sched_feedback_free(sched_feedback *f)
{
    if (!f)
        return;
    if (f->cons)
        sl_consumer_free(f->cons);
    sched_backoff_rules_free(&f->rules);
    free(f);
}
