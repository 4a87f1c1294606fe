/*
 * stats_count - the counting behind `sluice stats` (see stats_count.h).
 */
#include "stats_count.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; s && *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    h ^= 0xff; /* separator */
    h *= 0x100000001b3ULL;
    return h;
}

/* true when this outcome was seen before. */
bool sluice__stats_seen(sluice_stats *st, const sl_event *e)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, e->job_id);
    h = fnv(h, e->recipient);
    h ^= ((uint64_t)e->attempt << 8) | (uint64_t)e->type;
    h *= 0x100000001b3ULL;
    if (!h)
        h = 1;
    if (st->seen_n * 2 >= st->seen_cap) {
        size_t ncap = st->seen_cap ? st->seen_cap * 2 : 4096;
        uint64_t *n = xcalloc(ncap, sizeof *n);
        for (size_t i = 0; i < st->seen_cap; i++) {
            uint64_t v = st->seen[i];
            if (!v)
                continue;
            size_t j = v & (ncap - 1);
            while (n[j])
                j = (j + 1) & (ncap - 1);
            n[j] = v;
        }
        free(st->seen);
        st->seen = n;
        st->seen_cap = ncap;
    }
    size_t j = h & (st->seen_cap - 1);
    while (st->seen[j]) {
        if (st->seen[j] == h)
            return true;
        j = (j + 1) & (st->seen_cap - 1);
    }
    st->seen[j] = h;
    st->seen_n++;
    return false;
}

sluice_stats_group *sluice__stats_group(sluice_stats *st, const char *name)
{
    if (!name || !*name)
        name = "-";
    for (size_t i = 0; i < st->n; i++)
        if (!strcmp(st->g[i].name, name))
            return &st->g[i];
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 16;
        st->g = xrealloc(st->g, st->cap * sizeof *st->g);
    }
    sluice_stats_group *g = &st->g[st->n++];
    memset(g, 0, sizeof *g);
    g->name = xstrdup(name);
    return g;
}

void sluice__stats_add(sluice_stats_group *g, const sl_event *e)
{
    switch (e->type) {
    case SLUICE__V1__EVENT_TYPE__EVENT_ACCEPTED:
        g->accepted++;
        break;
    case SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED:
        g->deferred++;
        break;
    case SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED:
        g->expired++;
        break;
    case SLUICE__V1__EVENT_TYPE__EVENT_SUPPRESSED:
        g->suppressed++;
        break;
    case SLUICE__V1__EVENT_TYPE__EVENT_REJECTED:
        g->rejected++;
        break;
    case SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED:
        g->complained++;
        break;
    case SLUICE__V1__EVENT_TYPE__EVENT_UNSUBSCRIBED:
        g->unsubscribed++;
        break;
    case SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED:
        g->bounced++;
        if (e->bounce_hard)
            g->hard++;
        else
            g->soft++;
        g->by_class[(unsigned)e->bounce_class < SLUICE_STATS_CLASSES ? e->bounce_class
                                                                     : SLUICE_STATS_CLASSES - 1]++;
        break;
    case SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED:
        g->delivered++;
        if (e->created_at_ms > 0 && e->timestamp_ms >= e->created_at_ms) {
            if (g->n_lat == g->cap_lat) {
                g->cap_lat = g->cap_lat ? g->cap_lat * 2 : 64;
                g->lat = xrealloc(g->lat, g->cap_lat * sizeof *g->lat);
            }
            g->lat[g->n_lat++] = e->timestamp_ms - e->created_at_ms;
        }
        break;
    default:
        break;
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v. */
int64_t sluice__stats_pct(const int64_t *v, size_t n, double p)
{
    if (!n)
        return -1;
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

void sluice__stats_group_json(const sluice_stats_group *g, sl_buf *b)
{
    sl_buf_puts(b, "{\"group\":");
    sl_buf_json_str(b, g->name, strlen(g->name));
    sl_buf_printf(b,
                  ",\"accepted\":%llu,\"delivered\":%llu,\"deferred\":%llu,\"bounced\":%llu,"
                  "\"bounced_hard\":%llu,\"bounced_soft\":%llu,\"expired\":%llu,"
                  "\"suppressed\":%llu,\"rejected\":%llu,\"complained\":%llu,"
                  "\"unsubscribed\":%llu,\"bounced_by_class\":{",
                  (unsigned long long)g->accepted, (unsigned long long)g->delivered,
                  (unsigned long long)g->deferred, (unsigned long long)g->bounced,
                  (unsigned long long)g->hard, (unsigned long long)g->soft,
                  (unsigned long long)g->expired, (unsigned long long)g->suppressed,
                  (unsigned long long)g->rejected, (unsigned long long)g->complained,
                  (unsigned long long)g->unsubscribed);
    bool first = true;
    for (int c = 0; c < SLUICE_STATS_CLASSES; c++) {
        if (!g->by_class[c])
            continue;
        sl_buf_printf(b, "%s\"%s\":%llu", first ? "" : ",",
                      sl_bounce_class_name((Sluice__V1__BounceClass)c),
                      (unsigned long long)g->by_class[c]);
        first = false;
    }
    sl_buf_puts(b, "},\"latency_ms\":");
    if (g->n_lat)
        sl_buf_printf(b, "{\"count\":%zu,\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"max\":%lld}",
                      g->n_lat, (long long)sluice__stats_pct(g->lat, g->n_lat, 50),
                      (long long)sluice__stats_pct(g->lat, g->n_lat, 90),
                      (long long)sluice__stats_pct(g->lat, g->n_lat, 99),
                      (long long)g->lat[g->n_lat - 1]);
    else
        sl_buf_puts(b, "null");
    sl_buf_putc(b, '}');
}

void sluice__stats_init(sluice_stats *st)
{
    memset(st, 0, sizeof *st);
    st->total.name = xstrdup("total");
}

void sluice__stats_finish(sluice_stats *st)
{
    /* qsort() of a NULL array is undefined even with no elements. */
    if (st->total.n_lat)
        qsort(st->total.lat, st->total.n_lat, sizeof *st->total.lat, cmp_i64);
    for (size_t i = 0; i < st->n; i++)
        if (st->g[i].n_lat)
            qsort(st->g[i].lat, st->g[i].n_lat, sizeof *st->g[i].lat, cmp_i64);
}

void sluice__stats_free(sluice_stats *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->g[i].name);
        free(st->g[i].lat);
    }
    free(st->g);
    free(st->total.name);
    free(st->total.lat);
    free(st->seen);
    memset(st, 0, sizeof *st);
}
