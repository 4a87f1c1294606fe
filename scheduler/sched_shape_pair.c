/*
 * sched_shape_pair - sites and their (site, source IP) pairs (see
 * sched_shape_int.h): a site is made on its first job or feedback
 * (shape__site_get()), a pair on its site's first use of the IP
 * (shape__pair_get()); the pair's rate, backoff state and suspension are
 * published as metrics and SHAPING events (shape__pair_publish()); the
 * feedback of the senders applies to the pair (sched_shape_feedback(),
 * sched_shape_down()). The shaper's tick recovers throttled pairs and
 * sweeps what has been idle (pairs, sites, limit buckets) back to nothing.
 *
 * Owns: the sites (s->sites) and their pairs, and a site's note of the
 * limit buckets its record carries (slim).
 *
 * Threads: the scheduler's loop thread.
 */
#include "sched_shape_int.h"
#include "sched_pick.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Remember that the site's jobs draw on the bucket of (limit, tenant,
 * campaign): its record carries it from now on. */
void shape__site_note_limit(ssite *site, uint32_t limit, const char *tenant, const char *campaign)
{
    char *key = xasprintf("%u\x1f%s\x1f%s", limit, tenant, campaign);
    if (!sl_map_get(&site->lims, key)) {
        slim *m = xcalloc(1, sizeof *m);
        m->limit = limit;
        m->tenant = xstrdup(tenant);
        m->campaign = xstrdup(campaign);
        sl_map_put(&site->lims, key, m);
    }
    free(key);
}

void shape__slim_free(slim *m)
{
    free(m->tenant);
    free(m->campaign);
    free(m);
}

static int slim_free_cb(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    shape__slim_free(val);
    return 0;
}

/* ---- pairs and their visible state ---- */

void shape__pair_publish(sched_shape *s, spair *p, const char *why)
{
    const char *st = sched_backoff_state_name(p->bo.state);
    sl_metric_set("sluice_shape_rate_per_second", p->labels, p->bo.rate);
    for (int i = 0; i < SCHED_BO_NSTATES; i++) {
        char l[600];
        snprintf(l, sizeof l, "%s,state=\"%s\"", p->labels, sched_backoff_state_name(i));
        sl_metric_set("sluice_shape_state", l, p->bo.state == (sched_bo_state)i ? 1 : 0);
    }
    /* While the pair may not send: until when, and why (one series; its
     * cause label changes, so the old one goes). */
    const char *cause = sched_backoff_usable(&p->bo) ? NULL
                        : p->bo.down                 ? "destination-down"
                                                     : "backoff-rule";
    char ul[600];
    if (p->cause && p->cause != cause) {
        snprintf(ul, sizeof ul, "%s,cause=\"%s\"", p->labels, p->cause);
        sl_metric_drop("sluice_shape_suspended_until_seconds", ul);
    }
    p->cause = cause;
    if (cause) {
        snprintf(ul, sizeof ul, "%s,cause=\"%s\"", p->labels, cause);
        sl_metric_set("sluice_shape_suspended_until_seconds", ul, (double)p->bo.until_ms / 1000.0);
    }
    if (!why)
        return;
    /* A backoff change is written at once, not coalesced. */
    ssite *site = sl_map_get(&s->sites, p->site);
    if (site)
        shape__site_write(s, site);
    char lab[600];
    snprintf(lab, sizeof lab, "%s,state=\"%s\"", p->labels, st);
    sl_metric_inc("sluice_shape_changes_total", lab, 1);
    sl_info("shape: %s via %s: %s, rate %g/s (%s)", p->site, p->ip, st, p->bo.rate, why);
    sl_event e;
    sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_SHAPING, NULL, "shape");
    e.site = p->site;
    e.source_ip = p->ip;
    e.rate_per_sec = p->bo.rate;
    char *reason = xasprintf("%s: %s", st, why);
    e.reason = reason;
    int rc = sl_event_publish(s->ctx->prod, s->ctx->cfg, &e, NULL, NULL);
    if (rc)
        sl_warn("shape: SHAPING event not published: %s", sl_strerror(rc));
    free(reason);
}

void shape__pair_apply_rate(spair *p, int64_t now)
{
    double burst = p->cfg_burst;
    if (p->bo.rate > 0 && p->bo.rate < p->cfg_rate) {
        double cap = p->bo.rate < 1 ? 1 : p->bo.rate;
        if (burst > cap)
            burst = cap;
    }
    sched_bucket_set_rate(&p->bucket, p->bo.rate, burst, now);
}

spair *shape__pair_get(ssite *site, const char *ip, const sl_source *src)
{
    spair *p = sl_map_get(&site->pairs, ip);
    if (p) {
        if (src)
            p->src = src;
        return p;
    }
    p = xcalloc(1, sizeof *p);
    p->site = site->name;
    p->ip = xstrdup(ip);
    p->src = src;
    p->cfg_rate = site->shp ? site->shp->max_message_rate : 0;
    p->cfg_burst = site->shp ? site->shp->burst : 0;
    if (p->cfg_burst <= 0)
        p->cfg_burst = p->cfg_rate > 1 ? p->cfg_rate : 1;
    int64_t now = sl_now_ms();
    sched_bucket_init(&p->bucket, p->cfg_rate, p->cfg_burst, now);
    sched_backoff_init(&p->bo, p->cfg_rate);
    p->day = sched_day_of(now);
    p->labels = xasprintf("site=\"%.400s\",source=\"%.64s\"", site->name, ip);
    p->dispatched = sl_metric_series("sluice_shape_dispatched_total", p->labels, SL_METRIC_COUNTER);
    p->key = xasprintf("%s/%s", ip, site->name);
    p->used_ms = now;
    sl_map_put(&site->pairs, ip, p);
    site->s->n_pairs++;
    shape__pair_publish(site->s, p, NULL);
    return p;
}

/* Nothing of the pair differs from a new one's: its backoff is back at the
 * configured rate, its bucket is full, no warm-up count of today would be
 * lost, and nothing used it for idle_ms. */
static bool pair_idle(spair *p, int64_t now, int64_t idle_ms)
{
    if (now - p->used_ms < idle_ms || !sched_backoff_idle(&p->bo))
        return false;
    if (!sched_bucket_full(&p->bucket, now))
        return false;
    if (p->src && p->src->has_warmup && p->sent_today && p->day == sched_day_of(now))
        return false;
    return true;
}

/* Forget the pair and its metric series (its counter restarts at 0 if the
 * pair comes back: Prometheus reads that as a reset). */
static void pair_free(ssite *site, spair *p)
{
    char l[600];
    sl_metric_drop("sluice_shape_rate_per_second", p->labels);
    sl_metric_drop("sluice_shape_dispatched_total", p->labels);
    for (int i = 0; i < SCHED_BO_NSTATES; i++) {
        snprintf(l, sizeof l, "%s,state=\"%s\"", p->labels, sched_backoff_state_name(i));
        sl_metric_drop("sluice_shape_state", l);
        sl_metric_drop("sluice_shape_changes_total", l);
    }
    if (p->cause) {
        snprintf(l, sizeof l, "%s,cause=\"%s\"", p->labels, p->cause);
        sl_metric_drop("sluice_shape_suspended_until_seconds", l);
    }
    sl_map_del(&site->pairs, p->ip);
    site->s->n_pairs--;
    free(p->labels);
    free(p->ip);
    free(p->key);
    sl_buf_free(&p->head);
    free(p);
}

void shape__pair_tick(sched_shape *s, spair *p, int64_t now)
{
    sched_bo_state before = p->bo.state;
    if (sched_backoff_tick(&p->bo, now)) {
        shape__pair_apply_rate(p, now);
        shape__pair_publish(s, p, before != p->bo.state ? "backoff expired" : "recovering");
    }
}

/* ---- sites ---- */

/* A flow emptied: its hold on its limit buckets goes with it. */
static void flow_data_free(void *arg, void *data)
{
    sched_shape *s = arg;
    sflow_limits *fl = data;
    sched_limits_release(&s->limits, fl->b, fl->n, sl_now_ms());
    free(fl);
}

ssite *shape__site_get(sched_shape *s, const char *name)
{
    ssite *site = sl_map_get(&s->sites, name);
    if (site) {
        site->used_ms = sl_now_ms();
        return site;
    }
    site = xcalloc(1, sizeof *site);
    site->s = s;
    site->name = xstrdup(name);
    site->shp = sl_config_shaping(s->ctx->cfg, name);
    sl_map_init(&site->pairs);
    sl_map_init(&site->lims);
    sched_fq_init(&site->fq);
    site->fq.free_data = flow_data_free;
    site->fq.free_arg = s;
    uv_timer_init(s->ctx->loop, &site->timer);
    site->timer.data = site;
    site->used_ms = sl_now_ms();
    sl_map_put(&s->sites, name, site);
    return site;
}

/* Forget a site that holds nothing: no job, no pair, no timer armed. */
static void site_free(sched_shape *s, ssite *site)
{
    if (site->dirty)
        shape__site_write(s, site);
    char labels[340];
    for (size_t i = 0; i < sizeof shape__park_reasons / sizeof shape__park_reasons[0]; i++) {
        snprintf(labels, sizeof labels, "site=\"%.300s\",reason=\"%s\"", site->name,
                 shape__park_reasons[i]);
        sl_metric_drop("sluice_shape_parked_total", labels);
    }
    sl_map_del(&s->sites, site->name);
    sl_map_free(&site->pairs);
    sched_fq_free(&site->fq);
    s->closing++;
    uv_close((uv_handle_t *)&site->timer, shape__site_close_cb);
}

/* Free what has been idle for scheduler.idle_state_timeout and is back at
 * its defaults: pairs (pair_idle()), then sites left with no pair, no
 * queued job and no timer, and limit buckets no flow holds. State that
 * still matters (a suspension, a lowered rate, a warm-up count of today, a
 * bucket not yet full) stays. */
static void sweep(sched_shape *s, int64_t now)
{
    int64_t idle = s->ctx->cfg->scheduler.idle_state_timeout_ms;
    size_t sites = 0, pairs = 0;
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i], *next; e; e = next) {
            next = e->next; /* e may go */
            ssite *site = e->val;
            for (size_t k = 0; k < site->pairs.n_slots; k++)
                for (sl_map_ent *pe = site->pairs.slots[k], *pnext; pe; pe = pnext) {
                    pnext = pe->next;
                    if (pair_idle(pe->val, now, idle)) {
                        pair_free(site, pe->val);
                        pairs++;
                    }
                }
            if (!site->queued && !site->pairs.count && !site->timer_at &&
                !uv_is_active((uv_handle_t *)&site->timer) && now - site->used_ms >= idle) {
                site_free(s, site);
                sites++;
            }
        }
    sl_map_shrink(&s->sites);
    size_t limits = sched_limits_sweep(&s->limits, now, idle);
    if (limits)
        sl_metric_inc("sluice_shape_idle_freed_total", "kind=\"limit\"", (double)limits);
    if (pairs)
        sl_metric_inc("sluice_shape_idle_freed_total", "kind=\"pair\"", (double)pairs);
    if (sites)
        sl_metric_inc("sluice_shape_idle_freed_total", "kind=\"site\"", (double)sites);
    if (pairs || sites)
        sl_debug("shape: freed %zu idle sites and %zu idle (site, IP) pairs; %zu and %zu left",
                 sites, pairs, s->sites.count, s->n_pairs);
}

void shape__tick_cb(uv_timer_t *t)
{
    sched_shape *s = t->data;
    shape__state_take_pending(s);
    int64_t now = sl_now_ms();
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next) {
            ssite *site = e->val;
            for (size_t k = 0; k < site->pairs.n_slots; k++)
                for (sl_map_ent *pe = site->pairs.slots[k]; pe; pe = pe->next)
                    shape__pair_tick(s, pe->val, now);
        }
    if (now >= s->next_sweep && !s->stopping && !s->restore) {
        int64_t idle = s->ctx->cfg->scheduler.idle_state_timeout_ms;
        int64_t every = idle / 4 < 1000 ? 1000 : idle / 4 > 60000 ? 60000 : idle / 4;
        s->next_sweep = now + every;
        sweep(s, now);
    }
    sl_series_set(s->m_buffered, (double)s->buffered);
    sl_series_set(s->m_sites, (double)s->sites.count);
    sl_series_set(s->m_pairs, (double)s->n_pairs);
}

/* ---- feedback from the senders (sched_shape.h) ---- */

void sched_shape_feedback(sched_shape *s, const char *site_name, const char *ip,
                          const sl_backoff_rule *rule, const char *reply, int64_t at_ms,
                          sched_op *op)
{
    ssite *site = shape__site_get(s, site_name);
    spair *p = shape__pair_get(site, ip, sl_config_source(s->ctx->cfg, ip));
    int64_t now = sl_now_ms();
    p->used_ms = now;
    shape__pair_tick(s, p, now);
    if (rule->action == SL_BACKOFF_HALVE && at_ms > 0 && at_ms <= p->bo.last_halve_ms)
        return; /* heard already: its halving is in the (restored) state */
    if (sched_backoff_apply(&p->bo, rule, now)) {
        p->bo_at = now;
        shape__pair_apply_rate(p, now);
        char *why = xasprintf("rule \"%s\" matched \"%.200s\"", rule->match, reply ? reply : "");
        s->write_op = op;
        shape__pair_publish(s, p, why);
        s->write_op = NULL;
        free(why);
    }
    /* A lifted pair might let the site go sooner, a throttled one later:
     * re-plan. */
    if (site->queued && !s->stopping)
        shape__pump(site, false);
}

void sched_shape_down(sched_shape *s, const char *site_name, const char *ip, int64_t until_ms,
                      const char *reply, sched_op *op)
{
    int64_t now = sl_now_ms();
    if (until_ms <= now)
        return;
    sl_metric_inc("sluice_shape_destination_down_total", NULL, 1);
    ssite *site = shape__site_get(s, site_name);
    spair *p = shape__pair_get(site, ip, sl_config_source(s->ctx->cfg, ip));
    p->used_ms = now;
    shape__pair_tick(s, p, now);
    sched_bo_state before = p->bo.state;
    if (!sched_backoff_down(&p->bo, until_ms, now))
        return;
    p->bo_at = now;
    /* Every deferral of the outage says so, each a little later: log and
     * publish a SHAPING event when the pair stops, and when its end moves
     * by a second or more, not for each of them. */
    if (before != p->bo.state || p->bo.until_ms - p->shown_until >= 1000) {
        p->shown_until = p->bo.until_ms;
        char at[40];
        sl_fmt_time(p->bo.until_ms, at, sizeof at);
        char *why = xasprintf("destination down until %s (%.200s)", at, reply ? reply : "");
        s->write_op = op;
        shape__pair_publish(s, p, why);
        s->write_op = NULL;
        free(why);
    } else {
        shape__pair_publish(s, p, NULL);
    }
    /* The site's timer is armed for the old end, or not at all: re-plan. */
    if (site->queued && !s->stopping)
        shape__pump(site, false);
}

void shape__site_close_cb(uv_handle_t *h)
{
    ssite *site = h->data;
    sched_shape *s = site->s;
    sl_map_each(&site->lims, slim_free_cb, NULL);
    sl_map_free(&site->lims);
    free(site->name);
    free(site);
    /* Idle sites close while the shaper lives: only its free ends it. */
    if (--s->closing == 0 && s->freeing)
        free(s);
}
