/*
 * sched_limit - see sched_limit.h.
 */
#include "sched_limit.h"
#include "util.h"

#include <stdlib.h>

/* A bucket and its holds; the bucket first, so a bucket pointer is its
 * entry's. */
typedef struct lim_ent {
    sched_bucket b;
    uint32_t refs;
    int64_t idle_since; /* when refs last fell to 0 */
    uint32_t limit;     /* its name: index in cfg->limits, */
    char *tenant;       /* and the values of the keys it names ("" else) */
    char *campaign;
} lim_ent;

/* The entry of (limit i, tenant, campaign), created (full) when absent. */
/* limit i's rate and depth at l's share of the cap. */
static void lim_rate(const sched_limits *l, size_t i, double *rate, double *burst)
{
    const sl_limit *lim = &l->cfg->limits[i];
    *rate = lim->max_message_rate * l->share;
    double depth = lim->burst > 0 ? lim->burst : lim->max_message_rate;
    *burst = depth * l->share >= 1 ? depth * l->share : 1;
}

static lim_ent *lim_get(sched_limits *l, size_t i, const char *tenant, const char *campaign,
                        int64_t now_ms, bool create)
{
    const sl_limit *lim = &l->cfg->limits[i];
    tenant = lim->tenant ? tenant : "";
    campaign = lim->campaign ? campaign : "";
    char *key = xasprintf("%zu\x1f%s\x1f%s", i, tenant, campaign);
    lim_ent *e = sl_map_get(&l->buckets, key);
    if (!e && create) {
        e = xcalloc(1, sizeof *e);
        double rate, burst;
        lim_rate(l, i, &rate, &burst);
        sched_bucket_init(&e->b, rate, burst, now_ms);
        e->limit = (uint32_t)i;
        e->tenant = xstrdup(tenant);
        e->campaign = xstrdup(campaign);
        e->idle_since = now_ms;
        sl_map_put(&l->buckets, key, e);
    }
    free(key);
    return e;
}

static void lim_free(lim_ent *e)
{
    free(e->tenant);
    free(e->campaign);
    free(e);
}

void sched_limits_init(sched_limits *l, const sl_config *cfg)
{
    l->cfg = cfg;
    l->share = 1.0;
    sl_map_init(&l->buckets);
}

static int free_bucket(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    lim_free(val);
    return 0;
}

void sched_limits_free(sched_limits *l)
{
    sl_map_each(&l->buckets, free_bucket, NULL);
    sl_map_free(&l->buckets);
}

size_t sched_limits_resolve(sched_limits *l, const char *tenant, const char *campaign,
                            sched_bucket **out, size_t max, int64_t now_ms)
{
    const sl_config *cfg = l->cfg;
    size_t n = 0;
    tenant = tenant ? tenant : "";
    campaign = campaign ? campaign : "";
    for (size_t i = 0; i < cfg->n_limits && n < max; i++) {
        const sl_limit *lim = &cfg->limits[i];
        if (lim->tenant && !sl_glob_match(lim->tenant, tenant))
            continue;
        if (lim->campaign && !sl_glob_match(lim->campaign, campaign))
            continue;
        lim_ent *e = lim_get(l, i, tenant, campaign, now_ms, true);
        e->refs++;
        out[n++] = &e->b;
    }
    return n;
}

/* The latest of op's answers over every bucket, and now_ms at the least. */
static int64_t limits_latest(sched_bucket *const *b, size_t n, int64_t now_ms,
                             int64_t (*op)(sched_bucket *, int64_t))
{
    int64_t at = now_ms;
    for (size_t i = 0; i < n; i++) {
        int64_t t = op(b[i], now_ms);
        if (t > at)
            at = t;
    }
    return at;
}

int64_t sched_limits_available_at(sched_bucket *const *b, size_t n, int64_t now_ms)
{
    return limits_latest(b, n, now_ms, sched_bucket_available_at);
}

int64_t sched_limits_take(sched_bucket *const *b, size_t n, int64_t now_ms)
{
    return limits_latest(b, n, now_ms, sched_bucket_take);
}

void sched_limits_release(sched_limits *l, sched_bucket *const *b, size_t n, int64_t now_ms)
{
    (void)l;
    for (size_t i = 0; i < n; i++) {
        lim_ent *e = (lim_ent *)b[i];
        SL_ASSERT(e->refs > 0);
        if (--e->refs == 0)
            e->idle_since = now_ms;
    }
}

typedef struct sweep_ctx {
    sched_limits *l;
    int64_t now, idle;
    size_t freed;
} sweep_ctx;

static int sweep_cb(void *arg, const char *key, void *val)
{
    sweep_ctx *c = arg;
    lim_ent *e = val;
    if (e->refs || c->now - e->idle_since < c->idle || !sched_bucket_full(&e->b, c->now))
        return 0;
    sl_map_del(&c->l->buckets, key); /* the entry being visited: allowed */
    lim_free(e);
    c->freed++;
    return 0;
}

size_t sched_limits_sweep(sched_limits *l, int64_t now_ms, int64_t idle_ms)
{
    sweep_ctx c = {l, now_ms, idle_ms, 0};
    sl_map_each(&l->buckets, sweep_cb, &c);
    sl_map_shrink(&l->buckets);
    return c.freed;
}

void sched_limits_key(const sched_bucket *b, uint32_t *limit, const char **tenant,
                      const char **campaign)
{
    const lim_ent *e = (const lim_ent *)b;
    *limit = e->limit;
    *tenant = e->tenant;
    *campaign = e->campaign;
}

sched_bucket *sched_limits_find(sched_limits *l, uint32_t limit, const char *tenant,
                                const char *campaign)
{
    if (limit >= l->cfg->n_limits)
        return NULL;
    lim_ent *e = lim_get(l, limit, tenant ? tenant : "", campaign ? campaign : "", 0, false);
    return e ? &e->b : NULL;
}

bool sched_limits_restore(sched_limits *l, uint32_t limit, const char *tenant,
                          const char *campaign, double tokens, int64_t at_ms, int64_t now_ms)
{
    if (limit >= l->cfg->n_limits)
        return false;
    lim_ent *e = lim_get(l, limit, tenant ? tenant : "", campaign ? campaign : "", now_ms, true);
    sched_bucket_restore(&e->b, tokens, at_ms, now_ms);
    return true;
}

typedef struct share_ctx {
    sched_limits *l;
    int64_t now;
} share_ctx;

static int share_cb(void *arg, const char *key, void *val)
{
    (void)key;
    share_ctx *c = arg;
    lim_ent *e = val;
    double rate, burst;
    lim_rate(c->l, e->limit, &rate, &burst);
    sched_bucket_set_rate(&e->b, rate, burst, c->now);
    return 0;
}

void sched_limits_set_share(sched_limits *l, double share, int64_t now_ms)
{
    if (!(share > 0) || share == l->share)
        return;
    l->share = share < 1 ? share : 1;
    share_ctx c = {l, now_ms};
    sl_map_each(&l->buckets, share_cb, &c);
}

size_t sched_limits_count(const sched_limits *l)
{
    return l->buckets.count;
}
