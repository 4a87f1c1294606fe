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
#include <unistd.h>

struct sched_feedback {
    sched_ctx *ctx;
    sl_consumer *durable; /* sluice-feedback: suppressions; NULL without classify */
    sl_consumer *live;    /* a tail of this process: backoff; NULL without shape */
    sched_backoff_rules rules;
    int stopping;         /* consumers still draining */
    sl_drained_cb stop_cb;
    void *stop_arg;
};

/* What a consumer of feedback acts on. */
enum { FB_BACKOFF = 1, FB_SUPPRESS = 2, FB_ALL = 3 };

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

static void feedback_event(sched_feedback *f, const sl_event *e, sched_op *op, int what)
{
    sched_ctx *ctx = f->ctx;
    /* Backoff rules see deferrals and bounces alike: a rate-limit reply is
     * usually a 4xx, but a block list hit such as Microsoft's 5.7.606
     * bounces every message and must take the IP out of rotation. */
    if ((what & FB_BACKOFF) &&
        (e->type == SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED ||
         e->type == SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED) &&
        ctx->shape && e->site && *e->site && e->source_ip && *e->source_ip) {
        const sl_backoff_rule *rule =
            sched_backoff_match(&f->rules, e->site, e->smtp_code, e->enhanced_code, e->reply);
        if (rule)
            sched_shape_feedback(ctx->shape, e->site, e->source_ip, rule, e->reply,
                                 e->timestamp_ms, op);
        /* Every MX of the site is down from that IP: dispatching more only
         * fills the sender with jobs it must defer. */
        if (e->type == SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED && e->destination_down_until_ms > 0)
            sched_shape_down(ctx->shape, e->site, e->source_ip, e->destination_down_until_ms,
                             e->reply && *e->reply ? e->reply : e->reason, op);
    }
    if (!(what & FB_SUPPRESS))
        return;
    if (e->type == SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED && e->bounce_hard &&
        e->bounce_class == SLUICE__V1__BOUNCE_CLASS__BOUNCE_INVALID_RECIPIENT)
        suppress_recipient(f, e, op, "hard-bounce", "a hard bounce");
    if (e->type == SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED) {
        char labels[300];
        snprintf(labels, sizeof labels, "site=\"%.200s\"", e->site ? e->site : "");
        sl_metric_inc("sluice_complaints_total", labels, 1);
        suppress_recipient(f, e, op, "complaint", "a complaint");
    }
    /* A Suppression has no list scope (suppression.proto): an unsubscribe
     * from one list suppresses the address for the whole tenant, which
     * honours the request more than it asks rather than less. */
    if (e->type == SLUICE__V1__EVENT_TYPE__EVENT_UNSUBSCRIBED) {
        sl_metric_inc("sluice_unsubscribes_total", NULL, 1);
        suppress_recipient(f, e, op, "unsubscribe", "an unsubscribe");
    }
}

void sched_feedback_event(sched_feedback *f, const sl_event *e, sched_op *op)
{
    feedback_event(f, e, op, FB_ALL);
}

static void on_record(sched_feedback *f, sl_record *rec, int what)
{
    sched_op *op = sched_op_new(f->ctx, "feedback", rec);
    sl_event *e = NULL;
    const char *why = NULL;
    if (rec->msg->payload && sl_event_decode(rec->msg->payload, rec->msg->len, &e, &why) == 0) {
        feedback_event(f, e, op, what);
        sl_event_free(e);
    }
    /* An undecodable event is not ours to DLQ: analytics reads it too. */
    sched_op_release(op);
}

static void on_durable(void *arg, sl_record *rec)
{
    on_record(arg, rec, FB_SUPPRESS);
}

static void on_live(void *arg, sl_record *rec)
{
    on_record(arg, rec, FB_BACKOFF);
}

sched_feedback *sched_feedback_new(sched_ctx *ctx, char **err)
{
    sched_feedback *f = xcalloc(1, sizeof *f);
    f->ctx = ctx;
    sl_metric_help("sluice_complaints_total", SL_METRIC_COUNTER,
                   "COMPLAINED events (feedback-loop reports) seen, by site");
    sl_metric_help("sluice_unsubscribes_total", SL_METRIC_COUNTER,
                   "UNSUBSCRIBED events (one-click or mailto unsubscribes) seen");
    if (sched_backoff_rules_init(&f->rules, ctx->cfg, err) != 0) {
        free(f);
        return NULL;
    }
    if (!ctx->loop)
        return f; /* tests */
    const char *topics[] = {ctx->t_events};
    if (ctx->shape) {
        /* A group of its own per process, so that every scheduler sees
         * every site's replies (whichever it owns), never committed: when
         * the process goes, its group goes with it. It starts where the
         * fleet's durable group stands, so replies that came while no
         * scheduler ran are applied too (else from the end). Made before
         * this process's durable consumer can commit anything. */
        char *group = xasprintf("sluice-feedback-live-%s-%ld", ctx->cfg->sender.instance_id,
                                (long)getpid());
        /* Where this scheduler's last incarnation had got to, each event
         * finished only once the state write of the change it caused was
         * acknowledged: a reply heard just before a SIGKILL, and not yet
         * stored, is heard again. */
        char *mark = xasprintf("sluice-feedback-mark-%s", ctx->cfg->sender.instance_id);
        sl_consumer_opts o = {.group = group,
                              .topics = topics,
                              .n_topics = 1,
                              .from_end = true,
                              .no_commit = true,
                              .start_group = SCHED_FEEDBACK_GROUP,
                              .mark_group = mark,
                              .on_record = on_live,
                              .arg = f};
        f->live = sl_consumer_new(ctx->cfg, ctx->loop, &o, err);
        free(mark);
        free(group);
        if (!f->live)
            goto fail;
    }
    if (ctx->supp) {
        /* One group for the fleet, committed, from the beginning when new:
         * what arrives while no scheduler runs is read when one starts. */
        sl_consumer_opts o = {.group = SCHED_FEEDBACK_GROUP,
                              .topics = topics,
                              .n_topics = 1,
                              .on_record = on_durable,
                              .arg = f};
        f->durable = sl_consumer_new(ctx->cfg, ctx->loop, &o, err);
        if (!f->durable)
            goto fail;
    }
    return f;
fail:
    if (f->live)
        sl_consumer_free(f->live);
    sched_backoff_rules_free(&f->rules);
    free(f);
    return NULL;
}

static void drained_cb(void *arg)
{
    sched_feedback *f = arg;
    if (--f->stopping == 0 && f->stop_cb)
        f->stop_cb(f->stop_arg);
}

void sched_feedback_stop(sched_feedback *f, sl_drained_cb cb, void *arg)
{
    f->stop_cb = cb;
    f->stop_arg = arg;
    f->stopping = 1; /* held until both are asked */
    if (f->durable) {
        f->stopping++;
        sl_consumer_stop(f->durable, drained_cb, f);
    }
    if (f->live) {
        f->stopping++;
        sl_consumer_stop(f->live, drained_cb, f);
    }
    drained_cb(f);
}

void sched_feedback_free(sched_feedback *f)
{
    if (!f)
        return;
    if (f->durable)
        sl_consumer_free(f->durable);
    if (f->live)
        sl_consumer_free(f->live);
    sched_backoff_rules_free(&f->rules);
    free(f);
}
