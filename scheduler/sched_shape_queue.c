/*
 * sched_shape_queue - the jobs shape holds (see sched_shape_int.h): a
 * site's queue (sched_fq: a flow per (tenant, campaign, pool), a FIFO per
 * priority), and the ways a held job leaves other than a Dispatch: parked
 * on a retry topic (shape__park()), EXPIRED (shape__expire()), CANCELLED or
 * held by the controls in force (shape__control(), and
 * shape__control_changed() when they change), or parked beyond
 * scheduler.max_buffered (shape__enforce_bound()).
 *
 * Owns: the held jobs (sjob) until a sched_op takes one over.
 *
 * Threads: the scheduler's loop thread.
 */
#include "sched_shape_int.h"
#include "sched_control.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The job's id for a debug line (decoded again: only when one is logged). */
char *shape__sjob_id(const sjob *j)
{
    sl_job *job = NULL;
    const char *why = NULL;
    if (sl_job_decode(j->data, j->len, &job, &why) != 0)
        return xstrdup("");
    char *id = xstrdup(job->job_id ? job->job_id : "");
    sl_job_free(job);
    return id;
}

/* The job's creation time (peeked again: only when the controls change). */
static int64_t sjob_created(const sjob *j)
{
    sl_job_fields f;
    const char *why = NULL;
    int rc = sl_job_peek(j->data, j->len, &f, &why);
    SL_ASSERT(rc == 0); /* it was peeked when it arrived */
    return f.created_at_ms;
}

/* tenant: the job's or the default one; campaign: the job's or "".
 *
 * A flow is the jobs of one (tenant, campaign, pool): the pool is part of
 * its key so that a pool that cannot send to the site (its IPs disabled,
 * suspended or at their warm-up cap) holds back only its own flows; shape__pump()
 * passes over them to the flows of the other pools. */
void shape__q_push(ssite *site, sjob *j, const char *tenant, const char *campaign, int prio)
{
    /* The flow key "tenant\x1fcampaign\x1fpool" (sched_fq copies it). */
    size_t tl = strlen(tenant), cl = strlen(campaign);
    char stack[256];
    size_t need = tl + cl + 2 + 12;
    char *key = need <= sizeof stack ? stack : xmalloc(need);
    memcpy(key, tenant, tl);
    key[tl] = '\x1f';
    memcpy(key + tl + 1, campaign, cl);
    snprintf(key + tl + 1 + cl, 12, "\x1f%u", j->pool);
    sched_fq_flow *f = sched_fq_push(&site->fq, key, &j->it, prio);
    if (key != stack)
        free(key);
    if (!f->data) {
        sflow_limits *fl = xcalloc(1, sizeof *fl);
        fl->pool = j->pool;
        fl->n = sched_limits_resolve(&site->s->limits, tenant, campaign, fl->b, SCHED_LIMITS_MAX,
                                     sl_now_ms());
        f->data = fl;
    }
    site->queued++;
    site->s->buffered++;
}

/* Unlink j; served: the round robin across flows moves on. */
void shape__q_unlink(ssite *site, sjob *j, bool served)
{
    if (served)
        sched_fq_take(&site->fq, &j->it);
    else
        sched_fq_remove(&site->fq, &j->it);
    site->queued--;
    site->s->buffered--;
}

static sjob *q_last(ssite *site)
{
    return (sjob *)sched_fq_last(&site->fq);
}

void shape__sjob_free(sjob *j)
{
    free(j);
}

/* Why a job is parked: the reason label of sluice_shape_parked_total. */
const char *const shape__park_reasons[PARK_NREASONS] = {"over-bound", "pool-unusable",
                                                         "stopping", "held"};

/* Park j (already unlinked) on the retry topic whose delay fits wait_ms. */
void shape__park(ssite *site, sjob *j, int64_t wait_ms, int reason)
{
    sched_shape *s = site->s;
    int64_t delay = 0;
    const char *topic = sched_ctx_retry_topic(s->ctx, wait_ms, &delay);
    /* The overflow path: decode, set the time, encode again. It decoded
     * when it arrived, so it decodes now. */
    sl_job *job = NULL;
    const char *why = NULL;
    int rc = sl_job_decode(j->data, j->len, &job, &why);
    SL_ASSERT(rc == 0);
    job->not_before_ms = sl_now_ms() + delay;
    sl_buf b = SL_BUF_INIT;
    sl_pack(&job->base, &b);
    sched_op *op = sched_op_new_mark(s->ctx, "shape", &j->mark, j, j->data, j->len);
    sched_op_send(op, topic, site->name, b.data, b.len, NULL, 0);
    sl_buf_free(&b);
    char labels[340];
    snprintf(labels, sizeof labels, "site=\"%.300s\",reason=\"%s\"", site->name,
             shape__park_reasons[reason]);
    sl_metric_inc("sluice_shape_parked_total", labels, 1);
    sl_log_job(SL_LOG_DEBUG, job->job_id, "shape: %s parked on %s (%s)", site->name, topic,
               shape__park_reasons[reason]);
    sl_job_free(job);
    sched_op_release(op); /* frees j once the park is acknowledged */
}

/* j (already unlinked) ends in shape with a final event of type instead
 * of a Dispatch: reason(j) names why, the log line and metric say it too.
 * A job whose partition was revoked is left to its new owner. */
static void final_event(ssite *site, sjob *j, Sluice__V1__EventType type, const char *reason,
                        sl_log_level lvl, const char *metric)
{
    sched_shape *s = site->s;
    if (sl_mark_revoked(&j->mark)) {
        /* The partition's new owner reads it again and judges it. */
        sl_mark_release(&j->mark);
        shape__sjob_free(j);
        return;
    }
    sl_job *job = NULL;
    const char *ignored = NULL;
    int rc = sl_job_decode(j->data, j->len, &job, &ignored);
    SL_ASSERT(rc == 0); /* it decoded when it arrived */
    sl_event e;
    sl_event_from_job(&e, type, job, "shape");
    e.site = site->name;
    e.reason = (char *)reason;
    sched_op *op = sched_op_new_mark(s->ctx, "shape", &j->mark, j, j->data, j->len);
    sched_op_event(op, s->ctx, &e);
    sl_log_job(lvl, job->job_id, "shape: %s", reason);
    sl_metric_inc(metric, NULL, 1);
    sl_job_free(job);
    sched_op_release(op); /* frees j once the event is acknowledged */
}

/* j (already unlinked) expired while shape held it, or would be sent after
 * its expiry: it becomes an EXPIRED event and is never dispatched. */
void shape__expire(ssite *site, sjob *j, int64_t now)
{
    char *reason = now >= j->expires_ms
                       ? xasprintf("expired while held for %s, %lld s ago", site->name,
                                   (long long)((now - j->expires_ms) / 1000))
                       : xasprintf("expired while held for %s: its next send time falls "
                                   "after its expiry", site->name);
    final_event(site, j, SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED, reason, SL_LOG_INFO,
                "sluice_shape_expired_total");
    free(reason);
}

/* j (already unlinked) belongs to a cancelled campaign: a CANCELLED event
 * instead of a Dispatch. */
static void cancel(ssite *site, sjob *j, const char *why)
{
    final_event(site, j, SLUICE__V1__EVENT_TYPE__EVENT_CANCELLED, why, SL_LOG_DEBUG,
                "sluice_shape_cancelled_total");
}

/* What the controls in force say of j (already unlinked) of flow
 * (tenant, campaign) in site, created at created_ms: cancel it, park it on the shortest retry
 * topic (a held job waits in Kafka, not here: it comes back through retry
 * and is judged again), or neither (false: the caller goes on with it). */
bool shape__control(ssite *site, sjob *j, const char *tenant, const char *campaign,
                    int64_t created_ms)
{
    const sched_control *c = site->s->ctx->control;
    const char *why = NULL;
    sched_control_verdict v =
        c ? sched_control_job(c, tenant, campaign, site->name, created_ms, &why)
          : SCHED_CONTROL_GO;
    if (v == SCHED_CONTROL_CANCEL)
        cancel(site, j, why);
    else if (v == SCHED_CONTROL_HOLD)
        shape__park(site, j, 0, PARK_HELD);
    return v != SCHED_CONTROL_GO;
}

/* How long the site's queue needs at its current rates. When every pair
 * is suspended (a destination down) or disabled, from the end of the
 * first suspension at the rates of the pairs it frees: a short outage
 * parks the excess on a short retry topic, not the longest. */
static int64_t site_drain_ms(ssite *site)
{
    double rate = 0, later_rate = 0;
    bool unlimited = false, later_unlimited = false;
    int64_t first_until = INT64_MAX;
    for (size_t i = 0; i < site->pairs.n_slots; i++)
        for (sl_map_ent *e = site->pairs.slots[i]; e; e = e->next) {
            spair *p = e->val;
            if (!sched_backoff_usable(&p->bo)) {
                if (p->bo.until_ms < first_until)
                    first_until = p->bo.until_ms;
                if (p->bo.rate <= 0)
                    later_unlimited = true;
                later_rate += p->bo.rate;
                continue;
            }
            if (p->bo.rate <= 0)
                unlimited = true;
            rate += p->bo.rate;
        }
    if (unlimited)
        return 0;
    if (rate > 0)
        return (int64_t)((double)site->queued * 1000.0 / rate);
    if (first_until == INT64_MAX)
        return INT64_MAX / 4;
    int64_t wait = first_until - sl_now_ms();
    if (wait < 0)
        wait = 0;
    if (!later_unlimited && later_rate > 0)
        wait += (int64_t)((double)site->queued * 1000.0 / later_rate);
    return wait;
}

/* Beyond max_buffered: park the tail of the longest queue. */
void shape__enforce_bound(sched_shape *s)
{
    uint32_t max = s->ctx->cfg->scheduler.max_buffered;
    if (!max)
        return;
    while (s->buffered > max) {
        ssite *worst = NULL;
        for (size_t i = 0; i < s->sites.n_slots; i++)
            for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next) {
                ssite *site = e->val;
                if (!worst || site->queued > worst->queued)
                    worst = site;
            }
        if (!worst || !worst->queued)
            return;
        sjob *j = q_last(worst);
        shape__q_unlink(worst, j, false);
        shape__park(worst, j, site_drain_ms(worst), PARK_OVER_BOUND);
    }
}

/* What the controls say changed (or they were first read): the jobs held
 * in the flows now suspended or cancelled leave, then every site with work
 * is pumped (a resumed site's jobs come back through retry). A flow's key
 * is "tenant\x1fcampaign\x1fpool" (shape__q_push()). */
void shape__control_changed(void *arg)
{
    sched_shape *s = arg;
    struct {
        ssite *site;
        sjob *j;
    } *out = NULL;
    size_t n_out = 0, cap = 0;
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next) {
            ssite *site = e->val;
            sl_map *flows = &site->fq.flows;
            for (size_t fi = 0; fi < flows->n_slots; fi++)
                for (sl_map_ent *fe = flows->slots[fi]; fe; fe = fe->next) {
                    const sched_fq_flow *f = fe->val;
                    const char *tenant = f->key, *us = strchr(tenant, '\x1f');
                    char *campaign = xstrndup(us + 1, strcspn(us + 1, "\x1f"));
                    char *t = xstrndup(tenant, (size_t)(us - tenant));
                    for (int p = 0; p < SCHED_FQ_NPRIO; p++)
                        for (sched_fq_item *it = f->head[p]; it; it = it->next) {
                            if (!sched_control_job(s->ctx->control, t, campaign, site->name,
                                                   sjob_created((sjob *)it), NULL))
                                continue;
                            if (n_out == cap)
                                out = xrealloc(out, (cap = cap ? cap * 2 : 64) * sizeof *out);
                            out[n_out].site = site;
                            out[n_out++].j = (sjob *)it;
                        }
                    free(t);
                    free(campaign);
                }
        }
    /* Unlinking frees emptied flows: only after the walk. */
    for (size_t i = 0; i < n_out; i++) {
        sjob *j = out[i].j;
        ssite *site = out[i].site;
        const sched_fq_flow *f = j->it.flow;
        const char *us = strchr(f->key, '\x1f');
        char *campaign = xstrndup(us + 1, strcspn(us + 1, "\x1f"));
        char *tenant = xstrndup(f->key, (size_t)(us - f->key));
        shape__q_unlink(site, j, false);
        bool acted = shape__control(site, j, tenant, campaign, sjob_created(j));
        SL_ASSERT(acted);
        free(tenant);
        free(campaign);
    }
    free(out);
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next)
            if (((ssite *)e->val)->queued)
                shape__pump(e->val, s->stopping);
    sl_series_set(s->m_buffered, (double)s->buffered);
}
