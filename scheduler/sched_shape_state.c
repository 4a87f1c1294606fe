/*
 * sched_shape_state - the sites' state on the compacted state topic (see
 * sched_shape_int.h): the owner of a site writes its pairs' warm-up counts,
 * backoff and buckets and its limit buckets (shape__site_write(),
 * shape__flush_cb()); a new assignment's sites are read back before their
 * records (shape__on_assign(), shape__state_take_pending()), and on start
 * the whole topic and today's events are (shape__restore_start()).
 *
 * Owns: the pending states under pend_mu, the sited partitions owned
 * (s->parts), the restore in progress (wrestore) and what it read.
 *
 * Threads: the loop thread, but for shape__on_assign() (the sited
 * consumer's thread) and restore_work() (a libuv pool thread).
 */
#include "sched_shape_int.h"
#include "sched_pick.h"
#include "log.h"
#include "reader.h"
#include "sluice/v1/state.pb-c.h"

#include <stdlib.h>
#include <string.h>

/* ---- the site's state on the state topic ----
 *
 * The owner of a site writes its pairs' warm-up counts and backoff to the
 * compacted state topic, keyed by site (so co-partitioned with sited): at
 * once on every backoff change (shape__pair_publish()), and at most every 100 ms
 * for the counts (the dirty flag, shape__flush_cb()). A starting shaper reads the
 * topic to its end before it shapes anything (restore_work()). */

/* Is the site's sited partition ours (murmur2, as the producers key it)? */
static bool site_owned(const sched_shape *s, const char *name)
{
    if (s->n_parts <= 0)
        return true;
    int32_t p = rd_kafka_msg_partitioner_murmur2(NULL, name, strlen(name), s->n_parts, NULL,
                                                 NULL);
    return p >= 0 && p < s->n_parts && s->parts[p];
}

void shape__site_write(sched_shape *s, ssite *site)
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
                shape__slim_free(m);
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
    /* Losing one write costs little: the next change writes it all again.
     * A change a feedback record caused holds that record until stored. */
    sched_op *op = s->write_op;
    if (op)
        sched_op_hold(op);
    int rc = sl_producer_send(s->ctx->prod, s->ctx->t_state, site->name, strlen(site->name),
                              s->state.data, s->state.len, NULL, 0, op ? sched_op_cb : NULL, op);
    if (rc && op)
        sched_op_release(op);
    if (rc)
        sl_warn("shape: state of %s not written: %s", site->name, sl_strerror(rc));
    else
        sl_metric_inc("sluice_shape_state_writes_total", NULL, 1);
    free(lp);
    free(ls);
    free(pp);
    free(ps);
}

void shape__flush_cb(uv_timer_t *t)
{
    sched_shape *s = t->data;
    for (size_t i = 0; i < s->sites.n_slots; i++)
        for (sl_map_ent *e = s->sites.slots[i]; e; e = e->next) {
            ssite *site = e->val;
            if (site->dirty)
                shape__site_write(s, site);
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
    ssite *site = shape__site_get(s, st->site);
    int64_t day = sched_day_of(now);
    for (size_t i = 0; i < st->n_pairs; i++) {
        const Sluice__V1__PairState *q = st->pairs[i];
        if (!q->source_ip || !*q->source_ip)
            continue;
        const sl_source *src = sl_config_source(s->ctx->cfg, q->source_ip);
        if (!src)
            continue; /* an IP no longer configured */
        spair *p = shape__pair_get(site, q->source_ip, src);
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
        shape__pair_tick(s, p, now);
        shape__pair_apply_rate(p, now);
    bucket:
        /* The sends the old owner reserved are not granted again. */
        if (q->bucket_at_ms > 0)
            sched_bucket_restore(&p->bucket, q->bucket_tokens, q->bucket_at_ms, now);
        shape__pair_publish(s, p, NULL);
    }
    for (size_t i = 0; i < st->n_limits; i++) {
        const Sluice__V1__LimitState *q = st->limits[i];
        const char *t = q->tenant ? q->tenant : "", *c = q->campaign ? q->campaign : "";
        if (sched_limits_restore(&s->limits, q->limit, t, c, q->tokens, q->at_ms, now))
            shape__site_note_limit(site, q->limit, t, c);
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

int shape__state_free_cb(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    sluice__v1__site_state__free_unpacked(val, NULL);
    return 0;
}

/* The last owner's window of each newly assigned sited partition, for
 * the repeat window (sched_shape_int.h): ends[i] is the partition's end
 * (high watermark) where the group had committed an offset (an owner came
 * before, and may have dispatched records above it); INT64_MAX where an
 * owner came before (or the broker did not say whether one did) but the
 * end is not known: the window is then max_buffered records long;
 * -1 where the group had no offset (nobody came before). Consumer thread,
 * on the consumer's own handle: the group's rebalance waits for it. */
static void repeat_ends(const sl_assignment *a, const char *sited, int64_t *ends)
{
    int64_t *hi = xcalloc(a->n ? a->n : 1, sizeof *hi);
    bool ask = false;
    for (size_t i = 0; i < a->n; i++)
        ask |= a->committed[i] != SL_OFFSET_NONE;
    if (ask && sl_kafka_watermarks(a->rk, sited, a->partitions, a->n, NULL, hi, 3000))
        sl_warn("shape: the end of some of %zu assigned partitions unknown: up to "
                "scheduler.max_buffered records of each are flagged possible_duplicate", a->n);
    for (size_t i = 0; i < a->n; i++)
        ends[i] = a->committed[i] == SL_OFFSET_NONE ? -1 : hi[i] >= 0 ? hi[i] : INT64_MAX;
    free(hi);
}

/* The sited consumer's hook, on its thread: read the state of the newly
 * assigned partitions' sites before their records come (so a site moving
 * here from another running scheduler keeps its counts and backoff). */
void shape__on_assign(void *arg, const sl_assignment *a)
{
    sched_shape *s = arg;
    const int32_t *parts = a->partitions;
    size_t n = a->n;
    static const int32_t none = -1; /* no partition: read for the count only */
    if (!n)
        parts = &none;
    sl_map got;
    sl_map_init(&got);
    int64_t t0 = sl_now_ms();
    int32_t total = 0;
    int64_t *ends = xcalloc(n ? n : 1, sizeof *ends);
    repeat_ends(a, s->ctx->t_sited, ends);
    size_t recs = state_read(s->ctx->cfg, s->ctx->t_state, parts, n, &got, NULL, &total);
    pthread_mutex_lock(&s->pend_mu);
    free(s->pend_parts);
    free(s->pend_end);
    s->pend_parts = NULL;
    s->pend_end = NULL;
    s->pend_n_parts = 0;
    if (total > 0) {
        /* The state topic has as many partitions as sited (co-partitioned). */
        s->pend_parts = xcalloc((size_t)total, 1);
        s->pend_end = xcalloc((size_t)total, sizeof *s->pend_end);
        s->pend_n_parts = total;
        for (size_t i = 0; i < n; i++)
            if (parts[i] >= 0 && parts[i] < total) {
                s->pend_parts[parts[i]] = 1;
                s->pend_end[parts[i]] = ends[i];
            }
    }
    free(ends);
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

/* Tenant and campaign caps are the cluster's: this scheduler allows its
 * share of the sited partitions of each (docs/scheduler.md, "Tenant and
 * campaign caps in a cluster"). With none assigned it shapes nothing:
 * the share it had stays. */
static void limits_share(sched_shape *s)
{
    int32_t owned = 0;
    for (int32_t i = 0; i < s->n_parts; i++)
        owned += s->parts[i] ? 1 : 0;
    if (owned <= 0)
        return;
    double share = (double)owned / (double)s->n_parts;
    if (share != s->limits.share)
        sl_info("shape: %d of %d sited partitions: tenant and campaign caps at %.3g of each",
                (int)owned, (int)s->n_parts, share);
    sched_limits_set_share(&s->limits, share, sl_now_ms());
}

/* Apply what shape__on_assign() read. Loop thread. */
void shape__state_take_pending(sched_shape *s)
{
    if (!atomic_load(&s->has_pend))
        return;
    sl_map got;
    pthread_mutex_lock(&s->pend_mu);
    got = s->pend;
    sl_map_init(&s->pend);
    if (s->pend_n_parts) {
        free(s->parts);
        free(s->rep_end);
        free(s->rep_from);
        s->parts = s->pend_parts;
        s->rep_end = s->pend_end;
        s->n_parts = s->pend_n_parts;
        s->rep_from = xmalloc((size_t)s->n_parts * sizeof *s->rep_from);
        for (int32_t i = 0; i < s->n_parts; i++)
            s->rep_from[i] = -1;
        s->pend_parts = NULL;
        s->pend_end = NULL;
        s->pend_n_parts = 0;
    }
    atomic_store(&s->has_pend, false);
    pthread_mutex_unlock(&s->pend_mu);
    limits_share(s);
    state_apply_arg sa = {s, sl_now_ms()};
    sl_map_each(&got, state_apply_cb, &sa);
    sl_map_each(&got, shape__state_free_cb, NULL);
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
    ssite *site = shape__site_get(ra->s, site_name);
    free(site_name);
    spair *p = shape__pair_get(site, ip, sl_config_source(ra->s->ctx->cfg, ip));
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
    shape__pump(site, site->s->stopping);
    return 0;
}

static void restore_free(wrestore *w)
{
    sl_map_each(&w->states, shape__state_free_cb, NULL);
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

void shape__restore_start(sched_shape *s)
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
