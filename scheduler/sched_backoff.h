/*
 * backoff - adaptive backoff of one (site, source IP) pair: the explicit
 * feedback state, like Postfix's qmgr_queue.c throttle/unthrottle.
 *
 * States: NORMAL (the configured rate), THROTTLED (rate lowered by rate
 * limit replies; additive recovery), SUSPENDED (no sending until a time),
 * DISABLED (this IP is not used for the site until a time). Transitions:
 *   halve:      rate = max(floor, rate / 2), THROTTLED; recovery starts
 *               recover_after after the last halving and adds a tenth of
 *               the configured rate every recover_after / 10 (at least 1 s)
 *               until the configured rate is back (NORMAL). Multiplicative
 *               decrease, additive increase (AIMD).
 *   suspend:    SUSPENDED until now + duration, then back to the state
 *               (and rate) it had.
 *   disable_ip: DISABLED until now + duration, likewise.
 *   down:       a sender reported that every MX address of the site is
 *               down from this IP until a time (its next probe):
 *               SUSPENDED until then, marked `down` so operators see why.
 *               A later report extends it; an earlier one changes
 *               nothing; DISABLED outranks it as it outranks a suspension.
 * sched_backoff_tick() applies the passage of time; every function that
 * changes something returns true so the caller can publish a SHAPING event
 * and update the metrics.
 *
 * sched_backoff_rules compiles the configured rules (POSIX extended regex,
 * case-insensitive, over "CODE ENH TEXT") followed by the shipped defaults
 * for well-known rate-limit replies; the first rule whose regex and site
 * glob match wins.
 *
 * Pure apart from the regex compilation; unit tested in
 * tests/unit/test_sched_backoff.c. One thread.
 */
#ifndef SLUICE_SCHED_BACKOFF_H
#define SLUICE_SCHED_BACKOFF_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

typedef enum {
    SCHED_BO_NORMAL = 0,
    SCHED_BO_THROTTLED,
    SCHED_BO_SUSPENDED,
    SCHED_BO_DISABLED,
} sched_bo_state;
#define SCHED_BO_NSTATES 4

typedef struct sched_backoff {
    sched_bo_state state;
    sched_bo_state resume_state; /* where SUSPENDED/DISABLED return to */
    double base;                 /* configured rate; 0: unlimited */
    double rate;                 /* current rate; 0: unlimited */
    double floor;
    int64_t recover_after_ms;
    int64_t last_halve_ms;
    int64_t last_step_ms;
    int64_t until_ms;            /* SUSPENDED / DISABLED end */
    bool down;                   /* SUSPENDED's end is a destination-down report's */
} sched_backoff;

/* The rate halving starts from when the configured rate is unlimited. */
#define SCHED_BO_UNLIMITED_START 100.0

void sched_backoff_init(sched_backoff *b, double base_rate);
bool sched_backoff_apply(sched_backoff *b, const sl_backoff_rule *rule, int64_t now_ms);
bool sched_backoff_tick(sched_backoff *b, int64_t now_ms);
/* The destination is down until until_ms (see "down" above). */
bool sched_backoff_down(sched_backoff *b, int64_t until_ms, int64_t now_ms);
/* Back at the defaults (NORMAL at the configured rate): nothing to
 * remember, the state may be freed and made again by init. */
bool sched_backoff_idle(const sched_backoff *b);
/* May this pair send at now? (not SUSPENDED or DISABLED) */
bool sched_backoff_usable(const sched_backoff *b);
/* When tick next has something to do; INT64_MAX: nothing pending. */
int64_t sched_backoff_next_ms(const sched_backoff *b);
const char *sched_backoff_state_name(sched_bo_state s); /* "normal", ... */

typedef struct sched_backoff_rules {
    sl_backoff_rule *rules; /* configured then defaults; strings borrowed */
    regex_t *re;
    size_t n;
} sched_backoff_rules;

/* Compile cfg->backoff then the defaults. Returns 0, or SL_ECONFIG with a
 * malloc'd message in *err naming the rule. */
int sched_backoff_rules_init(sched_backoff_rules *r, const sl_config *cfg, char **err);
void sched_backoff_rules_free(sched_backoff_rules *r);
/* The first matching rule for a reply at site, or NULL. */
const sl_backoff_rule *sched_backoff_match(const sched_backoff_rules *r, const char *site,
                                           unsigned code, const char *enh, const char *text);

#endif
