/*
 * sched_shape - see sched_shape.h; the public API. How the modules of shape
 * split the work, and what they share, is in sched_shape_int.h.
 *
 * Owns the shaper: its consumer of sited, its tick and flush timers, its
 * map of sites; frees them all (sched_shape_free()), the last closed
 * handle or the restore's completion freeing the struct itself.
 *
 * Threads: the scheduler's loop thread.
 */
#include "sched_shape_int.h"
#include "sched_control.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

sched_shape *sched_shape_new(sched_ctx *ctx, char **err)
{
    sched_shape *s = xcalloc(1, sizeof *s);
    s->ctx = ctx;
    sl_map_init(&s->sites);
    sl_map_init(&s->pend);
    pthread_mutex_init(&s->pend_mu, NULL);
    atomic_init(&s->has_pend, false);
    sched_limits_init(&s->limits, ctx->cfg);
    uint32_t max = ctx->cfg->scheduler.max_buffered;
    const char *topics[] = {ctx->t_sited};
    sl_consumer_opts o = {.group = SCHED_SHAPE_GROUP,
                          .topics = topics,
                          .n_topics = 1,
                          /* Above max_buffered, so that parking (per site) and not
                           * the consumer's pause (every site) bounds memory. */
                          .max_inflight = max ? max * 2 + 1000 : 0,
                          .on_record = shape__on_record,
                          .on_assign = shape__on_assign,
                          .arg = s};
    s->cons = sl_consumer_new(ctx->cfg, ctx->loop, &o, err);
    if (!s->cons) {
        sched_limits_free(&s->limits);
        sl_map_free(&s->sites);
        sl_map_free(&s->pend);
        pthread_mutex_destroy(&s->pend_mu);
        free(s);
        return NULL;
    }
    s->routes = xcalloc(ctx->cfg->n_routes ? ctx->cfg->n_routes : 1, sizeof *s->routes);
    for (size_t i = 0; i < ctx->cfg->n_routes; i++) {
        const sl_route *r = &ctx->cfg->routes[i];
        s->routes[i] = strchr(r->host, ':') ? xasprintf("[%s]:%u", r->host, r->port)
                                            : xasprintf("%s:%u", r->host, r->port);
    }
    s->m_buffered = sl_metric_series("sluice_shape_buffered", NULL, SL_METRIC_GAUGE);
    s->m_sites = sl_metric_series("sluice_shape_sites", NULL, SL_METRIC_GAUGE);
    s->m_pairs = sl_metric_series("sluice_shape_pairs", NULL, SL_METRIC_GAUGE);
    uv_timer_init(ctx->loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, shape__tick_cb, 1000, 1000);
    uv_timer_init(ctx->loop, &s->flush);
    s->flush.data = s;
    uv_timer_start(&s->flush, shape__flush_cb, STATE_FLUSH_MS, STATE_FLUSH_MS);
    shape__restore_start(s);
    if (ctx->control)
        sched_control_on_change(ctx->control, shape__control_changed, s);
    sl_metric_help("sluice_shape_cancelled_total", SL_METRIC_COUNTER,
                   "Jobs of a cancelled campaign that shape dropped (CANCELLED events)");
    sl_metric_help("sluice_shape_rate_per_second", SL_METRIC_GAUGE,
                   "Current message rate of a (site, source IP) pair; 0: unlimited");
    sl_metric_help("sluice_shape_state", SL_METRIC_GAUGE,
                   "Backoff state of a (site, source IP) pair (1 for the current state)");
    sl_metric_help("sluice_shape_buffered", SL_METRIC_GAUGE, "Jobs waiting in shape");
    sl_metric_help("sluice_shape_sites", SL_METRIC_GAUGE,
                   "Sites whose state shape holds (idle ones are freed)");
    sl_metric_help("sluice_shape_pairs", SL_METRIC_GAUGE,
                   "(site, source IP) pairs whose state shape holds (idle ones are freed)");
    sl_metric_help("sluice_shape_idle_freed_total", SL_METRIC_COUNTER,
                   "Sites, (site, source IP) pairs and limit buckets freed after "
                   "scheduler.idle_state_timeout, by kind");
    sl_metric_help("sluice_shape_suspended_until_seconds", SL_METRIC_GAUGE,
                   "When a suspended or disabled (site, source IP) pair may send again (Unix "
                   "time), by cause: destination-down or backoff-rule");
    sl_metric_help("sluice_shape_state_writes_total", SL_METRIC_COUNTER,
                   "Site state records written to the state topic");
    sl_metric_help("sluice_shape_state_restores_total", SL_METRIC_COUNTER,
                   "Assignments of sited partitions whose sites' state was read back from the "
                   "state topic");
    sl_metric_help("sluice_shape_expired_total", SL_METRIC_COUNTER,
                   "Held jobs that expired before shape dispatched them (EXPIRED events)");
    sl_metric_help("sluice_shape_destination_down_total", SL_METRIC_COUNTER,
                   "DEFERRED events saying every MX of a site is down from a source IP");
    return s;
}

bool sched_shape_ready(const sched_shape *s)
{
    return !s->restore && sl_consumer_assigned(s->cons) &&
           (!s->ctx->control || sched_control_loaded(s->ctx->control));
}

size_t sched_shape_buffered(const sched_shape *s)
{
    return s->buffered;
}

void sched_shape_stop(sched_shape *s, sl_drained_cb cb, void *arg)
{
    s->stopping = true;
    if (s->restore)
        atomic_store(&s->restore->cancel, true);
    uv_timer_stop(&s->tick);
    uv_timer_stop(&s->flush);
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next) {
            ssite *site = e->val;
            uv_timer_stop(&site->timer);
            site->timer_at = 0;
            shape__pump(site, true);
            if (site->dirty)
                shape__site_write(s, site);
        }
    sl_consumer_stop(s->cons, cb, arg);
}

static void tick_close_cb(uv_handle_t *h)
{
    sched_shape *s = h->data;
    if (--s->closing == 0 && s->freeing)
        free(s);
}

void sched_shape_free(sched_shape *s)
{
    if (!s)
        return;
    sl_consumer_free(s->cons);
    /* The consumer thread is gone: no shape__on_assign() any more. */
    sl_map_each(&s->pend, shape__state_free_cb, NULL);
    sl_map_free(&s->pend);
    free(s->pend_parts);
    free(s->pend_end);
    free(s->parts);
    free(s->rep_from);
    free(s->rep_end);
    pthread_mutex_destroy(&s->pend_mu);
    /* A restore still reading is told to stop; its completion drops the
     * hold it has on the shaper. */
    if (s->restore)
        atomic_store(&s->restore->cancel, true);
    s->freeing = true;
    s->closing += 1;
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next) {
            ssite *site = e->val;
            SL_ASSERT(site->queued == 0);
            for (size_t k = 0; k < site->pairs.n_slots; k++)
                for (sl_map_ent *pe = site->pairs.slots[k]; pe; pe = pe->next) {
                    spair *p = pe->val;
                    free(p->labels);
                    free(p->ip);
                    free(p->key);
                    sl_buf_free(&p->head);
                    free(p);
                }
            sl_map_free(&site->pairs);
            sched_fq_free(&site->fq);
            s->closing++;
            uv_close((uv_handle_t *)&site->timer, shape__site_close_cb);
        }
    sl_map_free(&s->sites);
    sched_limits_free(&s->limits);
    for (size_t i = 0; i < s->ctx->cfg->n_routes; i++)
        free(s->routes[i]);
    free(s->routes);
    sl_buf_free(&s->out);
    sl_buf_free(&s->state);
    s->closing++;
    uv_close((uv_handle_t *)&s->flush, tick_close_cb);
    uv_close((uv_handle_t *)&s->tick, tick_close_cb);
}
