/*
 * pick - which source IP of a pool sends the next job to a site.
 *
 * sched_pick() is smooth weighted round robin (as nginx balances
 * upstreams): over the eligible candidates, each gets a share of picks
 * proportional to its weight, interleaved rather than in runs. The caller
 * decides eligibility (not suspended, not disabled for the site, warm-up
 * cap not spent, token available soon) and keeps `current` between calls.
 *
 * sched_warmup_cap() is the day's cap of a warming IP: per_day[d] on day d
 * counted from start_day, no cap after the last entry, and 0 (do not use
 * yet) before the start day.
 *
 * Pure; unit tested in tests/unit/test_sched_pick.c.
 */
#ifndef SLUICE_SCHED_PICK_H
#define SLUICE_SCHED_PICK_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

typedef struct sched_pick_cand {
    uint32_t weight;    /* 0 is treated as 1 */
    int64_t current;    /* SWRR state, owned by the caller, starts at 0 */
    bool eligible;
} sched_pick_cand;

/* Index of the chosen candidate, or -1 when none is eligible. */
int sched_pick(sched_pick_cand *c, size_t n);

#define SCHED_NO_CAP UINT32_MAX
/* day: days since the epoch (UTC). */
uint32_t sched_warmup_cap(const sl_warmup *w, int64_t day);
/* Days since the epoch of a wall-clock time in ms. */
int64_t sched_day_of(int64_t wall_ms);

#endif
