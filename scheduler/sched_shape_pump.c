/*
 * sched_shape_pump - jobs in and Dispatches out (see sched_shape_int.h): a
 * record of sited joins its site's queue (shape__on_record()), and the
 * site's pump (shape__pump(), on arrival and by the site's own timer)
 * sends what its pairs and limits allow now in fair order, each job as a
 * Dispatch keyed "ip/site".
 *
 * Owns: the site's timer while armed (timer_at), the Dispatch being
 * encoded (s->out).
 *
 * Threads: the scheduler's loop thread.
 */
#include "sched_shape_int.h"
#include "sched_control.h"
#include "sched_pick.h"
#include "sched_retry.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int prio_of(int32_t priority)
{
    switch (priority) {
    case SLUICE__V1__PRIORITY__PRIORITY_TRANSACTIONAL: return 0;
    case SLUICE__V1__PRIORITY__PRIORITY_NORMAL: return 1;
    default: return 2;
    }
}

typedef struct flow_check {
    int64_t now;
    bool force;
    int64_t earliest; /* when a refused flow's limits allow it; INT64_MAX: none */
    const unsigned char *blocked; /* per pool: none of its IPs can send now */
} flow_check;

/* May the flow send now (its pool is not known to be blocked in this shape__pump,
 * and its tenant / campaign limits have a token within the look-ahead)? */
static bool flow_ok(void *arg, sched_fq_flow *f)
{
    flow_check *fc = arg;
    const sflow_limits *fl = f->data;
    if (fl && fc->blocked[fl->pool])
        return false;
    if (fc->force || !fl || !fl->n)
        return true;
    int64_t at = sched_limits_available_at(fl->b, fl->n, fc->now);
    if (at <= fc->now + SCHED_SHAPE_LOOKAHEAD_MS)
        return true;
    if (at - SCHED_SHAPE_LOOKAHEAD_MS < fc->earliest)
        fc->earliest = at - SCHED_SHAPE_LOOKAHEAD_MS;
    return false;
}

/* ---- output ---- */

/* The Dispatch fields that are the pair's own, encoded once (and again
 * when its source changes): version, site, source IP, EHLO name, the
 * site's connection limits and TLS policy, the SOCKS5 proxy. */
static const sl_buf *pair_head(ssite *site, spair *p)
{
    if (p->head.len && p->head_src == p->src)
        return &p->head;
    const sl_shaping *shp = site->shp;
    sl_dispatch d = SLUICE__V1__DISPATCH__INIT;
    d.version = SLUICE_WIRE_VERSION;
    d.site = site->name;
    d.source_ip = p->ip;
    d.ehlo = p->src && p->src->ehlo ? p->src->ehlo : (char *)"";
    d.max_connections = shp ? shp->max_connections : 0;
    d.max_messages_per_connection = shp ? shp->max_messages_per_connection : 0;
    d.tls = shp ? (Sluice__V1__TlsPolicy)shp->tls : SLUICE__V1__TLS_POLICY__TLS_OPPORTUNISTIC;
    d.socks5 = p->src && p->src->socks5 ? p->src->socks5 : (char *)"";
    sl_pack(&d.base, &p->head);
    p->head_src = p->src;
    return &p->head;
}

static void dispatch(ssite *site, sjob *j, spair *p, const char *pool, int64_t send_at)
{
    sched_shape *s = site->s;
    if (sl_mark_revoked(&j->mark)) {
        /* The partition's new owner reads this job again: dispatching it
         * here too would deliver it twice. */
        sl_mark_release(&j->mark);
        sl_metric_inc("sluice_shape_released_total", NULL, 1);
        shape__sjob_free(j);
        return;
    }
    /* The pair's fields, then this job's; the job's bytes as they came. */
    const sl_buf *head = pair_head(site, p);
    sl_buf *b = &s->out;
    sl_buf_reset(b);
    sl_buf_append(b, head->data, head->len);
    if (*pool)
        sl_wire_put_bytes(b, SL_DISPATCH_FIELD_POOL, pool, strlen(pool));
    if (j->route) {
        const char *route = s->routes[j->route - 1];
        sl_wire_put_bytes(b, SL_DISPATCH_FIELD_ROUTE, route, strlen(route));
    }
    sl_wire_put_varint(b, SL_DISPATCH_FIELD_SEND_AT, (uint64_t)send_at);
    if (p->bo.rate != 0)
        sl_wire_put_double(b, SL_DISPATCH_FIELD_RATE, p->bo.rate);
    sl_wire_put_bytes(b, SL_DISPATCH_FIELD_JOB, j->data, j->len);
    if (j->repeat) {
        sl_wire_put_varint(b, SL_DISPATCH_FIELD_REPEAT, 1);
        sl_metric_inc("sluice_shape_repeat_total", NULL, 1);
    }
    if (sl_log_enabled(SL_LOG_DEBUG)) {
        char *id = shape__sjob_id(j);
        sl_log_job(SL_LOG_DEBUG, id, "shape: %s via %s at +%lldms", site->name, p->ip,
                   (long long)(send_at - sl_now_ms()));
        free(id);
    }
    /* The op takes j over: should the dispatch fail, its job goes to the
     * DLQ. */
    sched_op *op = sched_op_new_mark(s->ctx, "shape", &j->mark, j, j->data, j->len);
    sched_op_send(op, s->ctx->t_dispatch, p->key, b->data, b->len, NULL, 0);
    sched_op_release(op);
    sl_series_add(p->dispatched, 1);
}

/* ---- pumping ---- */

static void timer_cb(uv_timer_t *t)
{
    ssite *site = t->data;
    site->timer_at = 0;
    shape__pump(site, site->s->stopping);
}

static void arm(ssite *site, int64_t at, int64_t now)
{
    if (site->timer_at && site->timer_at <= at)
        return;
    site->timer_at = at;
    uv_timer_start(&site->timer, timer_cb, (uint64_t)(at > now ? at - now : 0), 0);
}

/* name: the job's pool, "" for the tenant's default. */
static const sl_pool *pool_of(const sl_config *cfg, const char *name)
{
    const sl_pool *pool = NULL;
    if (*name)
        pool = sl_config_pool(cfg, name);
    if (!pool && cfg->scheduler.default_pool)
        pool = sl_config_pool(cfg, cfg->scheduler.default_pool);
    if (!pool && cfg->n_pools)
        pool = &cfg->pools[0];
    return pool;
}

/* Send what the site's pairs and limits allow now, in fair order.
 *
 * A job whose pool has no IP that can send now does not hold back the
 * site: its pool is marked blocked for the rest of this pump and the flows
 * of that pool are passed over (flow_ok()). When no IP of the pool can
 * send for at least the shortest retry delay (disabled, suspended or at
 * its warm-up cap, not merely out of tokens), the job is parked on the
 * shortest retry topic that covers the wait rather than held. A job that
 * would be sent after its expiry becomes EXPIRED instead. */
void shape__pump(ssite *site, bool force)
{
    sched_shape *s = site->s;
    const sl_config *cfg = s->ctx->cfg;
    sched_pick_cand stack[16];
    /* Until today's warm-up counts are back, a warming IP could be sent
     * past its cap, and until the controls are read a suspended campaign
     * could be sent: hold everything (stop() forces it out regardless). */
    if ((s->restore || (s->ctx->control && !sched_control_loaded(s->ctx->control))) && !force)
        return;
    unsigned char bstack[16] = {0};
    unsigned char *blocked = cfg->n_pools <= sizeof bstack ? bstack : xcalloc(cfg->n_pools, 1);
    int64_t shortest_retry = 0;
    sched_ctx_retry_topic(s->ctx, 0, &shortest_retry);
    int64_t pools_at = INT64_MAX; /* when the first blocked pool can send */
    while (site->queued) {
        int64_t now = sl_now_ms();
        flow_check fc = {now, force, INT64_MAX, blocked};
        sjob *j = (sjob *)sched_fq_next(&site->fq, flow_ok, &fc);
        if (!j) {
            /* Every flow with work is over a tenant / campaign limit, or
             * its pool cannot send yet. */
            if (fc.earliest != INT64_MAX)
                arm(site, fc.earliest, now);
            if (pools_at != INT64_MAX)
                arm(site, pools_at, now);
            break;
        }
        if (j->expires_ms && now >= j->expires_ms) {
            shape__q_unlink(site, j, false);
            shape__expire(site, j, now);
            continue;
        }
        const sl_pool *pool = &cfg->pools[j->pool];
        size_t n = pool->n_sources;
        sched_pick_cand *c = n <= 16 ? stack : xcalloc(n, sizeof *c);
        spair **pairs = xcalloc(n, sizeof *pairs);
        int64_t earliest = INT64_MAX;
        bool tokens_only = false; /* some IP waits only for its bucket */
        int64_t day = sched_day_of(now);
        for (size_t i = 0; i < n; i++) {
            const sl_source *src = &pool->sources[i];
            spair *p = pairs[i] = shape__pair_get(site, src->ip, src);
            p->used_ms = now;
            shape__pair_tick(s, p, now);
            c[i].weight = src->weight;
            c[i].current = p->swrr;
            c[i].eligible = false;
            if (p->day != day) {
                p->day = day;
                p->sent_today = 0;
            }
            if (!sched_backoff_usable(&p->bo)) {
                if (p->bo.until_ms < earliest)
                    earliest = p->bo.until_ms;
                continue;
            }
            uint32_t cap = src->has_warmup ? sched_warmup_cap(&src->warmup, day) : SCHED_NO_CAP;
            if (cap != SCHED_NO_CAP && p->sent_today >= cap) {
                int64_t tomorrow = (day + 1) * 86400000LL;
                if (tomorrow < earliest)
                    earliest = tomorrow;
                continue;
            }
            tokens_only = true;
            int64_t at = sched_bucket_available_at(&p->bucket, now);
            if (force || at <= now + SCHED_SHAPE_LOOKAHEAD_MS)
                c[i].eligible = true;
            else if (at - SCHED_SHAPE_LOOKAHEAD_MS < earliest)
                earliest = at - SCHED_SHAPE_LOOKAHEAD_MS;
        }
        int k = sched_pick(c, n);
        for (size_t i = 0; i < n; i++)
            pairs[i]->swrr = c[i].current;
        spair *p = k >= 0 ? pairs[k] : NULL;
        free(pairs);
        if (c != stack)
            free(c);
        if (!p) {
            int64_t wait = earliest == INT64_MAX ? INT64_MAX / 4 : earliest - now;
            if (force || (!tokens_only && wait >= shortest_retry)) {
                shape__q_unlink(site, j, false);
                shape__park(site, j, wait, force ? PARK_STOPPING : PARK_POOL_UNUSABLE);
                continue;
            }
            /* A short wait: hold the pool's jobs and go on with the
             * other pools'. */
            blocked[j->pool] = 1;
            if (earliest < pools_at)
                pools_at = earliest;
            continue;
        }
        /* The flow (and its data) goes when its last job leaves: take the
         * limit tokens first. The job goes when both the pair's and every
         * limit's token are there. */
        const sflow_limits *fl = j->it.flow->data;
        int64_t send_at = sched_bucket_available_at(&p->bucket, now);
        int64_t lim_at = fl && fl->n ? sched_limits_available_at(fl->b, fl->n, now) : now;
        if (lim_at > send_at)
            send_at = lim_at;
        if (j->expires_ms && send_at >= j->expires_ms) {
            /* Its turn comes too late: no token is spent on it. */
            shape__q_unlink(site, j, false);
            shape__expire(site, j, now);
            continue;
        }
        lim_at = fl ? sched_limits_take(fl->b, fl->n, now) : now;
        for (size_t i = 0; fl && i < fl->n; i++) {
            uint32_t li;
            const char *lt, *lc;
            sched_limits_key(fl->b[i], &li, &lt, &lc);
            shape__site_note_limit(site, li, lt, lc);
        }
        shape__q_unlink(site, j, true);
        send_at = sched_bucket_take(&p->bucket, now);
        if (lim_at > send_at)
            send_at = lim_at;
        p->sent_today++;
        site->dirty = true;
        dispatch(site, j, p, pool->name, send_at);
    }
    if (blocked != bstack)
        free(blocked);
}

/* Refuse the record to the DLQ, naming its job when it decodes. */
static void reject(sched_shape *s, sl_record *rec, const char *why)
{
    rd_kafka_message_t *m = rec->msg;
    sl_job *job = NULL;
    const char *ignored = NULL;
    if (m->payload)
        sl_job_decode(m->payload, m->len, &job, &ignored);
    sched_op *op = sched_op_new(s->ctx, "shape", rec);
    sched_op_reject(op, s->ctx, job, "shape", why);
    sched_op_release(op);
    sl_job_free(job);
}

/* Copy a span to *at as a C string; *at moves past it. */
static const char *span_str(char **at, sl_span v)
{
    char *s = *at;
    if (v.n) /* an absent field's span is NULL */
        memcpy(s, v.p, v.n);
    s[v.n] = 0;
    *at += v.n + 1;
    return s;
}

/* Is rec within the last owner's window of its partition (the
 * rep_from/rep_end comment in sched_shape_int.h)? Loop thread. */
static bool repeat_window(sched_shape *s, const sl_record *rec)
{
    int32_t p = rec->partition;
    if (!s->rep_end || p < 0 || p >= s->n_parts || s->rep_end[p] < 0)
        return false;
    if (s->rep_from[p] < 0)
        s->rep_from[p] = rec->offset;
    return rec->offset < s->rep_end[p] &&
           rec->offset - s->rep_from[p] < (int64_t)s->ctx->cfg->scheduler.max_buffered;
}

void shape__on_record(void *arg, sl_record *rec)
{
    sched_shape *s = arg;
    shape__state_take_pending(s); /* a new assignment's state, before its records */
    const sl_config *cfg = s->ctx->cfg;
    rd_kafka_message_t *m = rec->msg;
    /* Shape reads only what it routes by; the job's bytes go into the
     * Dispatch as they came. */
    sl_job_fields f;
    const char *why = NULL;
    if (!m->payload || sl_job_peek(m->payload, m->len, &f, &why) != 0) {
        reject(s, rec, why ? why : "empty record");
        return;
    }
    sl_span name = f.site.n ? f.site : m->key_len ? (sl_span){m->key, m->key_len} : f.domain;
    size_t need = f.tenant.n + f.campaign.n + f.pool.n + f.domain.n + name.n + 5;
    char stack[1024];
    char *buf = need <= sizeof stack ? stack : xmalloc(need), *at = buf;
    const char *tenant = span_str(&at, f.tenant);
    const char *campaign = span_str(&at, f.campaign);
    const char *pool_name = span_str(&at, f.pool);
    const char *domain = span_str(&at, f.domain);
    const char *site_name = span_str(&at, name);
    const sl_pool *pool = pool_of(cfg, pool_name);
    if (!pool || !pool->n_sources) {
        reject(s, rec, "no pool with source IPs for the job");
    } else {
        ssite *site = shape__site_get(s, site_name);
        const sl_route *r = sl_config_route(cfg, domain);
        sjob *j = xmalloc(sizeof *j + m->len);
        memset(j, 0, sizeof *j);
        j->len = (uint32_t)m->len;
        j->pool = (uint32_t)(pool - cfg->pools);
        j->route = r ? (uint32_t)(r - cfg->routes + 1) : 0;
        j->expires_ms = sched_retry_expiry(cfg, f.created_at_ms, f.expires_at_ms);
        j->repeat = repeat_window(s, rec);
        memcpy(j->data, m->payload, m->len);
        if (!*tenant && cfg->scheduler.default_tenant)
            tenant = cfg->scheduler.default_tenant;
        sl_record_to_mark(rec, &j->mark);
        if (!shape__control(site, j, tenant, campaign, f.created_at_ms)) {
            shape__q_push(site, j, tenant, campaign, prio_of(f.priority));
            shape__pump(site, s->stopping);
            shape__enforce_bound(s);
        }
        sl_series_set(s->m_buffered, (double)s->buffered);
    }
    if (buf != stack)
        free(buf);
}
