/*
 * sched_shape - see sched_shape.h.
 *
 * Structures: the shaper holds a map of sites; a site holds its queues and
 * a map of pairs, one per source IP that sent (or was told about) it. The
 * pair is the one struct per (site, IP) scope with every limit and piece
 * of feedback state: token bucket, AIMD backoff, warm-up count, weighted
 * round robin position.
 */
#include "sched_shape.h"
#include "sched_backoff.h"
#include "sched_bucket.h"
#include "sched_control.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "sched_pick.h"
#include "sched_fq.h"
#include "sched_limit.h"
#include "sched_retry.h"
#include "reader.h"
#include "sluice/v1/state.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>


typedef struct spair {
    char *site, *ip;
    const sl_source *src;
    sched_bucket bucket;
    sched_backoff bo;
    double cfg_rate, cfg_burst;
    int64_t day;
    uint32_t sent_today;
    int64_t swrr;
    char *labels;          /* site="...",source="..." */
    sl_series *dispatched; /* sluice_shape_dispatched_total{labels} */
    char *key;             /* "ip/site": the dispatch key */
    sl_buf head;           /* the pair's own Dispatch fields, encoded (pair_head()) */
    const sl_source *head_src; /* the source head was encoded for */
    int64_t used_ms;       /* last looked at by a job, a pump or feedback */
    int64_t shown_until;   /* the suspension end last logged and published */
    const char *cause;     /* of the sluice_shape_suspended_until_seconds series set */
    int64_t bo_at;         /* wall ms of the last reply that changed bo; 0: none */
} spair;

/* A held job. A million of them can wait behind one slow site, so it is
 * kept compact (72 octets and the job, one allocation): the Job as
 * encoded on sited (it goes into the Dispatch as it is, never decoded
 * again), what was looked up for it in the config when it arrived (the
 * config does not change), its expiry, and the record reduced to its
 * mark. */
typedef struct sjob {
    sched_fq_item it; /* first: an item is its sjob */
    sl_mark mark;
    int64_t expires_ms; /* wall ms (sched_retry_expiry()); 0: never */
    uint32_t len;     /* the encoded Job: data[0 .. len) */
    uint32_t pool;    /* index in cfg->pools */
    uint32_t route;   /* index in cfg->routes + 1; 0: none */
    unsigned char data[];
} sjob;

/* The job's id for a debug line (decoded again: only when one is logged). */
static char *sjob_id(const sjob *j)
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

/* A flow's data: the pool its jobs draw their IPs from, and the
 * tenant/campaign limit buckets they are under. */
typedef struct sflow_limits {
    uint32_t pool; /* index in cfg->pools */
    size_t n;
    sched_bucket *b[SCHED_LIMITS_MAX];
} sflow_limits;

typedef struct ssite {
    struct sched_shape *s;
    char *name;
    const sl_shaping *shp;
    sched_fq fq;       /* per (tenant, campaign) flow, per priority */
    size_t queued;
    sl_map pairs;
    uv_timer_t timer;
    int64_t timer_at;  /* wall ms the timer fires; 0: not armed */
    int64_t used_ms;   /* last job or feedback */
    bool dirty;        /* its state changed since it was last written */
    /* The tenant / campaign limit buckets its jobs took tokens from, named
     * "limit\x1ftenant\x1fcampaign" -> slim: its state record carries them
     * until they are full again (and swept). */
    sl_map lims;
} ssite;

typedef struct slim {
    uint32_t limit;
    char *tenant, *campaign;
} slim;

/* Remember that the site's jobs draw on the bucket of (limit, tenant,
 * campaign): its record carries it from now on. */
static void site_note_limit(ssite *site, uint32_t limit, const char *tenant, const char *campaign)
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

static void slim_free(slim *m)
{
    free(m->tenant);
    free(m->campaign);
    free(m);
}

static int slim_free_cb(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    slim_free(val);
    return 0;
}

struct sched_shape {
    sched_ctx *ctx;
    sl_consumer *cons;
    sl_map sites;
    sched_limits limits;
    size_t buffered;
    uv_timer_t tick;
    bool stopping;
    int closing;       /* site timers still closing */
    struct wrestore *restore; /* warm-up counts being read; NULL: done */
    bool freeing;             /* sched_shape_free() was called */
    char **routes;            /* cfg->routes as a Dispatch names them, "host:port" */
    sl_buf out;               /* the Dispatch being encoded */
    sl_series *m_buffered;    /* sluice_shape_buffered */
    sl_series *m_sites;       /* sluice_shape_sites */
    sl_series *m_pairs;       /* sluice_shape_pairs */
    uv_timer_t flush;         /* writes the dirty sites' state every 100 ms */
    sl_buf state;             /* the SiteState being encoded */
    /* Site states read for a new assignment on the consumer thread
     * (on_assign()), applied on the loop before any of its records. */
    pthread_mutex_t pend_mu;
    atomic_bool has_pend;
    sl_map pend;           /* site -> Sluice__V1__SiteState *; under pend_mu */
    unsigned char *pend_parts; /* the new assignment (1 per partition); under pend_mu */
    int32_t pend_n_parts;
    /* The sited partitions this shaper owns, as of the last assignment
     * taken: only the owner of a site writes its state (every scheduler
     * hears every site's feedback). n_parts 0: not known, write. */
    unsigned char *parts;
    int32_t n_parts;
    size_t n_pairs;           /* (site, IP) pairs held */
    int64_t next_sweep;       /* when idle state is next looked for */
};

static void pump(ssite *site, bool force);
static void site_write(sched_shape *s, ssite *site);
static void state_take_pending(sched_shape *s);

/* ---- pairs and their visible state ---- */

static void pair_publish(sched_shape *s, spair *p, const char *why)
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
        site_write(s, site);
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

static void pair_apply_rate(spair *p, int64_t now)
{
    double burst = p->cfg_burst;
    if (p->bo.rate > 0 && p->bo.rate < p->cfg_rate) {
        double cap = p->bo.rate < 1 ? 1 : p->bo.rate;
        if (burst > cap)
            burst = cap;
    }
    sched_bucket_set_rate(&p->bucket, p->bo.rate, burst, now);
}

static spair *pair_get(ssite *site, const char *ip, const sl_source *src)
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
    pair_publish(site->s, p, NULL);
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

static void pair_tick(sched_shape *s, spair *p, int64_t now)
{
    sched_bo_state before = p->bo.state;
    if (sched_backoff_tick(&p->bo, now)) {
        pair_apply_rate(p, now);
        pair_publish(s, p, before != p->bo.state ? "backoff expired" : "recovering");
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

static ssite *site_get(sched_shape *s, const char *name)
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

static int prio_of(int32_t priority)
{
    switch (priority) {
    case SLUICE__V1__PRIORITY__PRIORITY_TRANSACTIONAL: return 0;
    case SLUICE__V1__PRIORITY__PRIORITY_NORMAL: return 1;
    default: return 2;
    }
}

/* tenant: the job's or the default one; campaign: the job's or "".
 *
 * A flow is the jobs of one (tenant, campaign, pool): the pool is part of
 * its key so that a pool that cannot send to the site (its IPs disabled,
 * suspended or at their warm-up cap) holds back only its own flows; pump()
 * passes over them to the flows of the other pools. */
static void q_push(ssite *site, sjob *j, const char *tenant, const char *campaign, int prio)
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
static void q_unlink(ssite *site, sjob *j, bool served)
{
    if (served)
        sched_fq_take(&site->fq, &j->it);
    else
        sched_fq_remove(&site->fq, &j->it);
    site->queued--;
    site->s->buffered--;
}

typedef struct flow_check {
    int64_t now;
    bool force;
    int64_t earliest; /* when a refused flow's limits allow it; INT64_MAX: none */
    const unsigned char *blocked; /* per pool: none of its IPs can send now */
} flow_check;

/* May the flow send now (its pool is not known to be blocked in this pump,
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

static sjob *q_last(ssite *site)
{
    return (sjob *)sched_fq_last(&site->fq);
}

static void sjob_free(sjob *j)
{
    free(j);
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
        sjob_free(j);
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
    if (sl_log_enabled(SL_LOG_DEBUG)) {
        char *id = sjob_id(j);
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

/* Why a job is parked: the reason label of sluice_shape_parked_total. */
static const char *const park_reasons[] = {"over-bound", "pool-unusable", "stopping", "held"};
enum { PARK_OVER_BOUND, PARK_POOL_UNUSABLE, PARK_STOPPING, PARK_HELD };

/* Park j (already unlinked) on the retry topic whose delay fits wait_ms. */
static void park(ssite *site, sjob *j, int64_t wait_ms, int reason)
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
             park_reasons[reason]);
    sl_metric_inc("sluice_shape_parked_total", labels, 1);
    sl_log_job(SL_LOG_DEBUG, job->job_id, "shape: %s parked on %s (%s)", site->name, topic,
               park_reasons[reason]);
    sl_job_free(job);
    sched_op_release(op); /* frees j once the park is acknowledged */
}

/* j (already unlinked) expired while shape held it, or would be sent after
 * its expiry: it becomes an EXPIRED event and is never dispatched. */
static void expire(ssite *site, sjob *j, int64_t now)
{
    sched_shape *s = site->s;
    if (sl_mark_revoked(&j->mark)) {
        /* The partition's new owner reads it again and judges it. */
        sl_mark_release(&j->mark);
        sjob_free(j);
        return;
    }
    sl_job *job = NULL;
    const char *why = NULL;
    int rc = sl_job_decode(j->data, j->len, &job, &why);
    SL_ASSERT(rc == 0); /* it decoded when it arrived */
    sl_event e;
    sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED, job, "shape");
    e.site = site->name;
    char *reason = now >= j->expires_ms
                       ? xasprintf("expired while held for %s, %lld s ago", site->name,
                                   (long long)((now - j->expires_ms) / 1000))
                       : xasprintf("expired while held for %s: its next send time falls "
                                   "after its expiry", site->name);
    e.reason = reason;
    sched_op *op = sched_op_new_mark(s->ctx, "shape", &j->mark, j, j->data, j->len);
    sched_op_event(op, s->ctx, &e);
    free(reason);
    sl_log_job(SL_LOG_INFO, job->job_id, "shape: expired while held for %s", site->name);
    sl_metric_inc("sluice_shape_expired_total", NULL, 1);
    sl_job_free(job);
    sched_op_release(op); /* frees j once the event is acknowledged */
}

/* j (already unlinked) belongs to a cancelled campaign: a CANCELLED event
 * instead of a Dispatch. */
static void cancel(ssite *site, sjob *j, const char *why)
{
    sched_shape *s = site->s;
    if (sl_mark_revoked(&j->mark)) {
        sl_mark_release(&j->mark);
        sjob_free(j);
        return;
    }
    sl_job *job = NULL;
    const char *ignored = NULL;
    int rc = sl_job_decode(j->data, j->len, &job, &ignored);
    SL_ASSERT(rc == 0); /* it decoded when it arrived */
    sl_event e;
    sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_CANCELLED, job, "shape");
    e.site = site->name;
    e.reason = (char *)why;
    sched_op *op = sched_op_new_mark(s->ctx, "shape", &j->mark, j, j->data, j->len);
    sched_op_event(op, s->ctx, &e);
    sl_log_job(SL_LOG_DEBUG, job->job_id, "shape: %s", why);
    sl_metric_inc("sluice_shape_cancelled_total", NULL, 1);
    sl_job_free(job);
    sched_op_release(op); /* frees j once the event is acknowledged */
}

/* What the controls in force say of j (already unlinked) of flow
 * (tenant, campaign) in site, created at created_ms: cancel it, park it on the shortest retry
 * topic (a held job waits in Kafka, not here: it comes back through retry
 * and is judged again), or neither (false: the caller goes on with it). */
static bool control(ssite *site, sjob *j, const char *tenant, const char *campaign,
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
        park(site, j, 0, PARK_HELD);
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

/* ---- pumping ---- */

static void timer_cb(uv_timer_t *t)
{
    ssite *site = t->data;
    site->timer_at = 0;
    pump(site, site->s->stopping);
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
static void pump(ssite *site, bool force)
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
            q_unlink(site, j, false);
            expire(site, j, now);
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
            spair *p = pairs[i] = pair_get(site, src->ip, src);
            p->used_ms = now;
            pair_tick(s, p, now);
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
                q_unlink(site, j, false);
                park(site, j, wait, force ? PARK_STOPPING : PARK_POOL_UNUSABLE);
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
            q_unlink(site, j, false);
            expire(site, j, now);
            continue;
        }
        lim_at = fl ? sched_limits_take(fl->b, fl->n, now) : now;
        for (size_t i = 0; fl && i < fl->n; i++) {
            uint32_t li;
            const char *lt, *lc;
            sched_limits_key(fl->b[i], &li, &lt, &lc);
            site_note_limit(site, li, lt, lc);
        }
        q_unlink(site, j, true);
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

/* Beyond max_buffered: park the tail of the longest queue. */
static void enforce_bound(sched_shape *s)
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
        q_unlink(worst, j, false);
        park(worst, j, site_drain_ms(worst), PARK_OVER_BOUND);
    }
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

static void on_record(void *arg, sl_record *rec)
{
    sched_shape *s = arg;
    state_take_pending(s); /* a new assignment's state, before its records */
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
        ssite *site = site_get(s, site_name);
        const sl_route *r = sl_config_route(cfg, domain);
        sjob *j = xmalloc(sizeof *j + m->len);
        memset(j, 0, sizeof *j);
        j->len = (uint32_t)m->len;
        j->pool = (uint32_t)(pool - cfg->pools);
        j->route = r ? (uint32_t)(r - cfg->routes + 1) : 0;
        j->expires_ms = sched_retry_expiry(cfg, f.created_at_ms, f.expires_at_ms);
        memcpy(j->data, m->payload, m->len);
        if (!*tenant && cfg->scheduler.default_tenant)
            tenant = cfg->scheduler.default_tenant;
        sl_record_to_mark(rec, &j->mark);
        if (!control(site, j, tenant, campaign, f.created_at_ms)) {
            q_push(site, j, tenant, campaign, prio_of(f.priority));
            pump(site, s->stopping);
            enforce_bound(s);
        }
        sl_series_set(s->m_buffered, (double)s->buffered);
    }
    if (buf != stack)
        free(buf);
}

static void site_close_cb(uv_handle_t *h);

/* Forget a site that holds nothing: no job, no pair, no timer armed. */
static void site_free(sched_shape *s, ssite *site)
{
    if (site->dirty)
        site_write(s, site);
    char labels[340];
    for (size_t i = 0; i < sizeof park_reasons / sizeof park_reasons[0]; i++) {
        snprintf(labels, sizeof labels, "site=\"%.300s\",reason=\"%s\"", site->name,
                 park_reasons[i]);
        sl_metric_drop("sluice_shape_parked_total", labels);
    }
    sl_map_del(&s->sites, site->name);
    sl_map_free(&site->pairs);
    sched_fq_free(&site->fq);
    s->closing++;
    uv_close((uv_handle_t *)&site->timer, site_close_cb);
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

static void tick_cb(uv_timer_t *t)
{
    sched_shape *s = t->data;
    state_take_pending(s);
    int64_t now = sl_now_ms();
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next) {
            ssite *site = e->val;
            for (size_t k = 0; k < site->pairs.n_slots; k++)
                for (sl_map_ent *pe = site->pairs.slots[k]; pe; pe = pe->next)
                    pair_tick(s, pe->val, now);
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

/* ---- the site's state on the state topic ----
 *
 * The owner of a site writes its pairs' warm-up counts and backoff to the
 * compacted state topic, keyed by site (so co-partitioned with sited): at
 * once on every backoff change (pair_publish()), and at most every 100 ms
 * for the counts (the dirty flag, flush_cb()). A starting shaper reads the
 * topic to its end before it shapes anything (restore_work()). */

#define STATE_FLUSH_MS 100

/* Is the site's sited partition ours (murmur2, as the producers key it)? */
static bool site_owned(const sched_shape *s, const char *name)
{
    if (s->n_parts <= 0)
        return true;
    int32_t p = rd_kafka_msg_partitioner_murmur2(NULL, name, strlen(name), s->n_parts, NULL,
                                                 NULL);
    return p >= 0 && p < s->n_parts && s->parts[p];
}

static void site_write(sched_shape *s, ssite *site)
{
    site->dirty = false;
    if (!site_owned(s, site->name))
        return; /* its owner writes it */
    size_t n = site->pairs.count, i = 0;
    Sluice__V1__PairState *ps = xcalloc(n ? n : 1, sizeof *ps);
    Sluice__V1__PairState **pp = xcalloc(n ? n : 1, sizeof *pp);
    for (size_t k = 0; k < site->pairs.n_slots; k++)
        for (sl_map_ent *e = site->pairs.slots[k]; e; e = e->next) {
            const spair *p = e->val;
            Sluice__V1__PairState *q = &ps[i];
            sluice__v1__pair_state__init(q);
            q->source_ip = p->ip;
            q->day = p->day;
            q->sent_today = p->sent_today;
            q->state = (int32_t)p->bo.state;
            q->resume_state = (int32_t)p->bo.resume_state;
            q->rate = p->bo.rate;
            q->floor = p->bo.floor;
            q->recover_after_ms = p->bo.recover_after_ms;
            q->last_halve_ms = p->bo.last_halve_ms;
            q->last_step_ms = p->bo.last_step_ms;
            q->until_ms = p->bo.until_ms;
            q->down = p->bo.down;
            q->bucket_tokens = p->bucket.tokens;
            q->bucket_at_ms = p->bucket.last_ms;
            pp[i] = q;
            i++;
        }
    /* The limit buckets, while they hold anything back (a freed bucket was
     * full: the site stops carrying it). */
    size_t nl = site->lims.count, li = 0;
    Sluice__V1__LimitState *ls = xcalloc(nl ? nl : 1, sizeof *ls);
    Sluice__V1__LimitState **lp = xcalloc(nl ? nl : 1, sizeof *lp);
    for (size_t k = 0; k < site->lims.n_slots; k++)
        for (sl_map_ent *e = site->lims.slots[k], *next; e; e = next) {
            next = e->next;
            slim *m = e->val;
            sched_bucket *b = sched_limits_find(&s->limits, m->limit, m->tenant, m->campaign);
            if (!b) {
                sl_map_del(&site->lims, e->key); /* e goes; next was kept */
                slim_free(m);
                continue;
            }
            Sluice__V1__LimitState *q = &ls[li];
            sluice__v1__limit_state__init(q);
            q->limit = m->limit;
            q->tenant = m->tenant;
            q->campaign = m->campaign;
            q->tokens = b->tokens;
            q->at_ms = b->last_ms;
            lp[li++] = q;
        }
    Sluice__V1__SiteState st = SLUICE__V1__SITE_STATE__INIT;
    st.version = SLUICE_WIRE_VERSION;
    st.site = site->name;
    st.updated_at_ms = sl_now_ms();
    st.n_pairs = i;
    st.pairs = pp;
    st.n_limits = li;
    st.limits = lp;
    sl_pack(&st.base, &s->state);
    /* Losing one write costs little: the next change writes it all again. */
    int rc = sl_producer_send(s->ctx->prod, s->ctx->t_state, site->name, strlen(site->name),
                              s->state.data, s->state.len, NULL, 0, NULL, NULL);
    if (rc)
        sl_warn("shape: state of %s not written: %s", site->name, sl_strerror(rc));
    else
        sl_metric_inc("sluice_shape_state_writes_total", NULL, 1);
    free(lp);
    free(ls);
    free(pp);
    free(ps);
}

static void flush_cb(uv_timer_t *t)
{
    sched_shape *s = t->data;
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next) {
            ssite *site = e->val;
            if (site->dirty)
                site_write(s, site);
        }
}

/* Apply a site's state read back from the topic: the backoff as written
 * (its times are wall clock, so a suspension ends and a throttled rate
 * recovers as if nothing had happened), and today's warm-up count when it
 * is higher than the one the events gave. */
static void state_apply(sched_shape *s, const Sluice__V1__SiteState *st, int64_t now)
{
    if (!st->site || !*st->site)
        return;
    ssite *site = site_get(s, st->site);
    int64_t day = sched_day_of(now);
    for (size_t i = 0; i < st->n_pairs; i++) {
        const Sluice__V1__PairState *q = st->pairs[i];
        if (!q->source_ip || !*q->source_ip)
            continue;
        const sl_source *src = sl_config_source(s->ctx->cfg, q->source_ip);
        if (!src)
            continue; /* an IP no longer configured */
        spair *p = pair_get(site, q->source_ip, src);
        if (q->day == day && q->sent_today > p->sent_today) {
            p->day = day;
            p->sent_today = q->sent_today;
        }
        if (q->state < 0 || q->state >= SCHED_BO_NSTATES || q->resume_state < 0 ||
            q->resume_state >= SCHED_BO_NSTATES)
            continue;
        /* A reply heard after the record was written (one that came while
         * no scheduler ran, picked up at start) is newer than it: keep it. */
        if (p->bo_at > st->updated_at_ms)
            goto bucket;
        p->bo.state = (sched_bo_state)q->state;
        p->bo.resume_state = (sched_bo_state)q->resume_state;
        /* A rate above the configured one (the config changed) is capped. */
        p->bo.rate = p->bo.base > 0 && (q->rate <= 0 || q->rate > p->bo.base) ? p->bo.base
                                                                               : q->rate;
        p->bo.floor = q->floor;
        p->bo.recover_after_ms = q->recover_after_ms;
        p->bo.last_halve_ms = q->last_halve_ms;
        p->bo.last_step_ms = q->last_step_ms;
        p->bo.until_ms = q->until_ms;
        p->bo.down = q->down;
        pair_tick(s, p, now);
        pair_apply_rate(p, now);
    bucket:
        /* The sends the old owner reserved are not granted again. */
        if (q->bucket_at_ms > 0)
            sched_bucket_restore(&p->bucket, q->bucket_tokens, q->bucket_at_ms, now);
        pair_publish(s, p, NULL);
    }
    for (size_t i = 0; i < st->n_limits; i++) {
        const Sluice__V1__LimitState *q = st->limits[i];
        const char *t = q->tenant ? q->tenant : "", *c = q->campaign ? q->campaign : "";
        if (sched_limits_restore(&s->limits, q->limit, t, c, q->tokens, q->at_ms, now))
            site_note_limit(site, q->limit, t, c);
    }
}

/* ---- warm-up counts after a restart ----
 *
 * The count of a warming IP lives in memory, so on start shape reads the
 * events topic from today's 00:00 UTC on a pool thread and counts, per
 * (site, source IP) of a source that has a warm-up schedule, the distinct
 * (job, attempt) the senders reported (DELIVERED, DEFERRED, BOUNCED). Shape
 * dispatches nothing and is not ready until that is done. Dispatches still
 * in flight at the restart (no event yet) are not counted. */

#define RESTORE_DEADLINE_MS 120000
#define RESTORE_FALLBACK_MS 15000

typedef struct wrestore {
    uv_work_t req;
    sched_shape *s;         /* NULL: the shaper was freed meanwhile */
    const sl_config *cfg;
    char *topic;
    sl_map warm;         /* ip -> (void *)1 */
    sl_map counts;       /* "site\x1fip" -> (uintptr_t) count */
    sl_map seen;         /* "job\x1fattempt\x1fsite\x1fip" */
    char *state_topic;
    sl_map states;       /* site -> Sluice__V1__SiteState *, the latest */
    size_t n_states;        /* records read */
    int64_t since_ms;
    size_t events;
    atomic_bool cancel;
} wrestore;

typedef struct restore_pass {
    wrestore *w;
    size_t n;
} restore_pass;

/* One event of today: a delivery attempt from a warming IP counts once
 * per dispatch. */
static void restore_event(void *arg, const rd_kafka_message_t *m)
{
    restore_pass *p = arg;
    wrestore *w = p->w;
    p->n++;
    sl_event *e = NULL;
    const char *why = NULL;
    if (!m->payload || sl_event_decode(m->payload, m->len, &e, &why) != 0)
        return;
    bool attempt = e->type == SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED ||
                   e->type == SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED ||
                   e->type == SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED;
    if (attempt && e->site && *e->site && e->source_ip && sl_map_get(&w->warm, e->source_ip) &&
        e->timestamp_ms >= w->since_ms) {
        /* One event per recipient: count the dispatch once. */
        char *seen = xasprintf("%s\x1f%u\x1f%s\x1f%s", e->job_id ? e->job_id : "", e->attempt,
                               e->site, e->source_ip);
        if (!sl_map_get(&w->seen, seen)) {
            sl_map_put(&w->seen, seen, (void *)1);
            char *k = xasprintf("%s\x1f%s", e->site, e->source_ip);
            uintptr_t c = (uintptr_t)sl_map_get(&w->counts, k);
            sl_map_put(&w->counts, k, (void *)(c + 1));
            free(k);
            w->events++;
        }
        free(seen);
    }
    sl_event_free(e);
}

/* Read topic from since_ms (0: the beginning) for at most limit_ms,
 * counting into w. Returns the number of records read. */
static size_t restore_read(wrestore *w, int64_t since_ms, int64_t limit_ms)
{
    char *err = NULL;
    sl_reader *r = sl_reader_new(w->cfg, w->topic, since_ms, &err);
    if (!r) {
        sl_warn("shape: warm-up counts not restored: %s", err ? err : "?");
        free(err);
        return 0;
    }
    restore_pass p = {w, 0};
    if (sl_reader_each(r, limit_ms, &w->cancel, restore_event, &p) == SL_ETIMEOUT)
        sl_warn("shape: warm-up counts: events of today not read to the end in %llds; "
                "going on with what was read", (long long)(limit_ms / 1000));
    sl_reader_free(r);
    return p.n;
}

typedef struct state_pass {
    const int32_t *parts;
    size_t n_parts;
    sl_map *states;
    size_t n;
} state_pass;

/* One record of the state topic: a site's latest state, if its partition
 * is one of ours. */
static void state_record(void *arg, const rd_kafka_message_t *m)
{
    state_pass *p = arg;
    p->n++;
    bool mine = !p->parts;
    for (size_t i = 0; i < p->n_parts && !mine; i++)
        mine = p->parts[i] == m->partition;
    if (!mine || !m->key || !m->key_len)
        return;
    char *site = xstrndup(m->key, m->key_len);
    Sluice__V1__SiteState *st =
        m->payload ? sluice__v1__site_state__unpack(NULL, m->len, m->payload) : NULL;
    /* A tombstone or an undecodable record forgets what came before. */
    Sluice__V1__SiteState *old = st ? sl_map_put(p->states, site, st) : sl_map_del(p->states, site);
    if (old)
        sluice__v1__site_state__free_unpacked(old, NULL);
    free(site);
}

/* Read the state topic to its end, keeping in states each site's latest
 * record of the given partitions (parts NULL: of all). Returns the number of
 * records read. Any thread. */
static size_t state_read(const sl_config *cfg, const char *topic, const int32_t *parts,
                         size_t n_parts, sl_map *states, atomic_bool *cancel,
                         int32_t *topic_parts)
{
    char *err = NULL;
    sl_reader *r = sl_reader_new(cfg, topic, 0, &err);
    if (!r) {
        sl_warn("shape: site state not restored: %s", err ? err : "?");
        free(err);
        return 0;
    }
    if (topic_parts)
        *topic_parts = sl_reader_partitions(r);
    state_pass p = {parts, n_parts, states, 0};
    if (sl_reader_each(r, RESTORE_DEADLINE_MS, cancel, state_record, &p) == SL_ETIMEOUT)
        sl_warn("shape: site state: %s not read to the end in %llds; going on with what "
                "was read", topic, (long long)(RESTORE_DEADLINE_MS / 1000));
    sl_reader_free(r);
    return p.n;
}

static int state_free_cb(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    sluice__v1__site_state__free_unpacked(val, NULL);
    return 0;
}

/* The sited consumer's hook, on its thread: read the state of the newly
 * assigned partitions' sites before their records come (so a site moving
 * here from another running scheduler keeps its counts and backoff). */
static void on_assign(void *arg, const int32_t *parts, size_t n)
{
    sched_shape *s = arg;
    static const int32_t none = -1; /* no partition: read for the count only */
    if (!n)
        parts = &none;
    sl_map got;
    sl_map_init(&got);
    int64_t t0 = sl_now_ms();
    int32_t total = 0;
    size_t recs = state_read(s->ctx->cfg, s->ctx->t_state, parts, n, &got, NULL, &total);
    pthread_mutex_lock(&s->pend_mu);
    free(s->pend_parts);
    s->pend_parts = NULL;
    s->pend_n_parts = 0;
    if (total > 0) {
        /* The state topic has as many partitions as sited (co-partitioned). */
        s->pend_parts = xcalloc((size_t)total, 1);
        s->pend_n_parts = total;
        for (size_t i = 0; i < n; i++)
            if (parts[i] >= 0 && parts[i] < total)
                s->pend_parts[parts[i]] = 1;
    }
    for (size_t i = 0; i < got.n_slots; i++)
        for (sl_map_ent *e = got.slots[i]; e; e = e->next) {
            Sluice__V1__SiteState *old = sl_map_put(&s->pend, e->key, e->val);
            if (old)
                sluice__v1__site_state__free_unpacked(old, NULL);
        }
    atomic_store(&s->has_pend, true);
    pthread_mutex_unlock(&s->pend_mu);
    sl_info("shape: state of %zu sites of %zu assigned partitions read (%zu records, %lld ms)",
            got.count, n, recs, (long long)(sl_now_ms() - t0));
    sl_map_free(&got);
}

typedef struct state_apply_arg {
    sched_shape *s;
    int64_t now;
} state_apply_arg;

static int state_apply_cb(void *arg, const char *key, void *val)
{
    (void)key;
    state_apply_arg *a = arg;
    state_apply(a->s, val, a->now);
    return 0;
}

/* Apply what on_assign() read. Loop thread. */
static void state_take_pending(sched_shape *s)
{
    if (!atomic_load(&s->has_pend))
        return;
    sl_map got;
    pthread_mutex_lock(&s->pend_mu);
    got = s->pend;
    sl_map_init(&s->pend);
    if (s->pend_n_parts) {
        free(s->parts);
        s->parts = s->pend_parts;
        s->n_parts = s->pend_n_parts;
        s->pend_parts = NULL;
        s->pend_n_parts = 0;
    }
    atomic_store(&s->has_pend, false);
    pthread_mutex_unlock(&s->pend_mu);
    state_apply_arg sa = {s, sl_now_ms()};
    sl_map_each(&got, state_apply_cb, &sa);
    sl_map_each(&got, state_free_cb, NULL);
    sl_map_free(&got);
    sl_metric_inc("sluice_shape_state_restores_total", NULL, 1);
}

static void restore_states(wrestore *w)
{
    w->n_states = state_read(w->cfg, w->state_topic, NULL, 0, &w->states, &w->cancel, NULL);
}

static void restore_work(uv_work_t *req)
{
    wrestore *w = req->data;
    restore_states(w);
    if (!w->warm.count || atomic_load(&w->cancel))
        return;
    if (restore_read(w, w->since_ms, RESTORE_DEADLINE_MS) == 0 && !atomic_load(&w->cancel))
        /* Nothing at or after 00:00 by offset-for-time: either no event
         * today, or a broker that cannot look offsets up by time (the dev
         * broker's mock cluster answers "none"). Read from the beginning,
         * filtering by the events' own timestamps, for a short while. */
        restore_read(w, 0, RESTORE_FALLBACK_MS);
}

typedef struct restore_apply {
    sched_shape *s;
    int64_t day;
    size_t pairs;
} restore_apply;

static int restore_apply_cb(void *arg, const char *key, void *val)
{
    restore_apply *ra = arg;
    const char *sep = strchr(key, '\x1f');
    if (!sep)
        return 0;
    char *site_name = xstrndup(key, (size_t)(sep - key));
    const char *ip = sep + 1;
    ssite *site = site_get(ra->s, site_name);
    free(site_name);
    spair *p = pair_get(site, ip, sl_config_source(ra->s->ctx->cfg, ip));
    if (p->day != ra->day) {
        p->day = ra->day;
        p->sent_today = 0;
    }
    uint32_t n = (uint32_t)(uintptr_t)val;
    if (n > p->sent_today)
        p->sent_today = n;
    ra->pairs++;
    return 0;
}

static int pump_site_cb(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    ssite *site = val;
    pump(site, site->s->stopping);
    return 0;
}

static void restore_free(wrestore *w)
{
    sl_map_each(&w->states, state_free_cb, NULL);
    sl_map_free(&w->states);
    free(w->state_topic);
    sl_map_free(&w->warm);
    sl_map_free(&w->counts);
    sl_map_free(&w->seen);
    free(w->topic);
    free(w);
}

static void restore_done(uv_work_t *req, int status)
{
    (void)status;
    wrestore *w = req->data;
    sched_shape *s = w->s;
    if (!s) {
        restore_free(w);
        return;
    }
    s->restore = NULL;
    if (!atomic_load(&w->cancel)) {
        state_apply_arg sa = {s, sl_now_ms()};
        sl_map_each(&w->states, state_apply_cb, &sa);
        sl_info("shape: state restored for %zu sites from %zu records of %s", w->states.count,
                w->n_states, w->state_topic);
        restore_apply ra = {s, sched_day_of(sl_now_ms()), 0};
        if (ra.day == sched_day_of(w->since_ms))
            sl_map_each(&w->counts, restore_apply_cb, &ra);
        sl_info("shape: today's warm-up counts restored for %zu (site, IP) pairs from %zu "
                "dispatches", ra.pairs, w->events);
    }
    bool cancelled = atomic_load(&w->cancel);
    restore_free(w);
    if (!cancelled)
        sl_map_each(&s->sites, pump_site_cb, NULL);
    /* While the shaper lives, closing only counts this hold. */
    if (--s->closing == 0 && s->freeing)
        free(s);
}

static void restore_start(sched_shape *s)
{
    const sl_config *cfg = s->ctx->cfg;
    wrestore *w = xcalloc(1, sizeof *w);
    sl_map_init(&w->warm);
    sl_map_init(&w->counts);
    sl_map_init(&w->seen);
    sl_map_init(&w->states);
    w->state_topic = xstrdup(s->ctx->t_state);
    for (size_t i = 0; i < cfg->n_pools; i++)
        for (size_t k = 0; k < cfg->pools[i].n_sources; k++)
            if (cfg->pools[i].sources[k].has_warmup)
                sl_map_put(&w->warm, cfg->pools[i].sources[k].ip, (void *)1);
    w->s = s;
    w->cfg = cfg;
    w->topic = xstrdup(s->ctx->t_events);
    w->since_ms = sched_day_of(sl_now_ms()) * 86400000LL;
    atomic_init(&w->cancel, false);
    w->req.data = w;
    s->restore = w;
    s->closing++; /* the shaper is freed only after restore_done */
    if (uv_queue_work(s->ctx->loop, &w->req, restore_work, restore_done) != 0) {
        sl_warn("shape: state and warm-up counts not restored: no worker thread");
        s->restore = NULL;
        s->closing--;
        restore_free(w);
    }
}

/* What the controls say changed (or they were first read): the jobs held
 * in the flows now suspended or cancelled leave, then every site with work
 * is pumped (a resumed site's jobs come back through retry). A flow's key
 * is "tenant\x1fcampaign\x1fpool" (q_push()). */
static void control_changed(void *arg)
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
        q_unlink(site, j, false);
        bool acted = control(site, j, tenant, campaign, sjob_created(j));
        SL_ASSERT(acted);
        free(tenant);
        free(campaign);
    }
    free(out);
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next)
            if (((ssite *)e->val)->queued)
                pump(e->val, s->stopping);
    sl_series_set(s->m_buffered, (double)s->buffered);
}

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
    sl_consumer_opts o = {.group = "sluice-shape",
                          .topics = topics,
                          .n_topics = 1,
                          /* Above max_buffered, so that parking (per site) and not
                           * the consumer's pause (every site) bounds memory. */
                          .max_inflight = max ? max * 2 + 1000 : 0,
                          .on_record = on_record,
                          .on_assign = on_assign,
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
    uv_timer_start(&s->tick, tick_cb, 1000, 1000);
    uv_timer_init(ctx->loop, &s->flush);
    s->flush.data = s;
    uv_timer_start(&s->flush, flush_cb, STATE_FLUSH_MS, STATE_FLUSH_MS);
    restore_start(s);
    if (ctx->control)
        sched_control_on_change(ctx->control, control_changed, s);
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
            pump(site, true);
            if (site->dirty)
                site_write(s, site);
        }
    sl_consumer_stop(s->cons, cb, arg);
}

void sched_shape_feedback(sched_shape *s, const char *site_name, const char *ip,
                          const sl_backoff_rule *rule, const char *reply, int64_t at_ms)
{
    ssite *site = site_get(s, site_name);
    spair *p = pair_get(site, ip, sl_config_source(s->ctx->cfg, ip));
    int64_t now = sl_now_ms();
    p->used_ms = now;
    pair_tick(s, p, now);
    if (rule->action == SL_BACKOFF_HALVE && at_ms > 0 && at_ms <= p->bo.last_halve_ms)
        return; /* heard already: its halving is in the (restored) state */
    if (sched_backoff_apply(&p->bo, rule, now)) {
        p->bo_at = now;
        pair_apply_rate(p, now);
        char *why = xasprintf("rule \"%s\" matched \"%.200s\"", rule->match, reply ? reply : "");
        pair_publish(s, p, why);
        free(why);
    }
    /* A lifted pair might let the site go sooner, a throttled one later:
     * re-plan. */
    if (site->queued && !s->stopping)
        pump(site, false);
}

void sched_shape_down(sched_shape *s, const char *site_name, const char *ip, int64_t until_ms,
                      const char *reply)
{
    int64_t now = sl_now_ms();
    if (until_ms <= now)
        return;
    sl_metric_inc("sluice_shape_destination_down_total", NULL, 1);
    ssite *site = site_get(s, site_name);
    spair *p = pair_get(site, ip, sl_config_source(s->ctx->cfg, ip));
    p->used_ms = now;
    pair_tick(s, p, now);
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
        pair_publish(s, p, why);
        free(why);
    } else {
        pair_publish(s, p, NULL);
    }
    /* The site's timer is armed for the old end, or not at all: re-plan. */
    if (site->queued && !s->stopping)
        pump(site, false);
}

static void site_close_cb(uv_handle_t *h)
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
    /* The consumer thread is gone: no on_assign() any more. */
    sl_map_each(&s->pend, state_free_cb, NULL);
    sl_map_free(&s->pend);
    free(s->pend_parts);
    free(s->parts);
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
            uv_close((uv_handle_t *)&site->timer, site_close_cb);
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
