/*
 * sched_limit - see sched_limit.h.
 */
#include "sched_limit.h"
#include "util.h"

#include <stdlib.h>

void sched_limits_init(sched_limits *l, const sl_config *cfg)
{
    l->cfg = cfg;
    sched_map_init(&l->buckets);
}

static int free_bucket(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    free(val);
    return 0;
}

void sched_limits_free(sched_limits *l)
{
    sched_map_each(&l->buckets, free_bucket, NULL);
    sched_map_free(&l->buckets);
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
        char *key = xasprintf("%zu\x1f%s\x1f%s", i, lim->tenant ? tenant : "",
                              lim->campaign ? campaign : "");
        sched_bucket *b = sched_map_get(&l->buckets, key);
        if (!b) {
            b = xcalloc(1, sizeof *b);
            sched_bucket_init(b, lim->max_message_rate, lim->burst, now_ms);
            sched_map_put(&l->buckets, key, b);
        }
        free(key);
        out[n++] = b;
    }
    return n;
}

int64_t sched_limits_available_at(sched_bucket *const *b, size_t n, int64_t now_ms)
{
    int64_t at = now_ms;
    for (size_t i = 0; i < n; i++) {
        int64_t t = sched_bucket_available_at(b[i], now_ms);
        if (t > at)
            at = t;
    }
    return at;
}

int64_t sched_limits_take(sched_bucket *const *b, size_t n, int64_t now_ms)
{
    int64_t at = now_ms;
    for (size_t i = 0; i < n; i++) {
        int64_t t = sched_bucket_take(b[i], now_ms);
        if (t > at)
            at = t;
    }
    return at;
}
