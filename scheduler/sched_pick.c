/*
 * sched_pick - see sched_pick.h.
 */
#include "sched_pick.h"

int sched_pick(sched_pick_cand *c, size_t n)
{
    int best = -1;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!c[i].eligible)
            continue;
        int64_t w = c[i].weight ? c[i].weight : 1;
        c[i].current += w;
        total += w;
        if (best < 0 || c[i].current > c[best].current)
            best = (int)i;
    }
    if (best >= 0)
        c[best].current -= total;
    return best;
}

uint32_t sched_warmup_cap(const sl_warmup *w, int64_t day)
{
    if (!w || !w->n_per_day)
        return SCHED_NO_CAP;
    if (day < w->start_day)
        return 0;
    int64_t d = day - w->start_day;
    if ((uint64_t)d >= w->n_per_day)
        return SCHED_NO_CAP;
    return w->per_day[d];
}

int64_t sched_day_of(int64_t wall_ms)
{
    return wall_ms >= 0 ? wall_ms / 86400000 : (wall_ms - 86399999) / 86400000;
}
