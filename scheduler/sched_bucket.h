/*
 * bucket - the token bucket of one (site, source IP) pair, in reservation
 * form: a job takes a token now or in the future, and the time its token
 * is available becomes the Dispatch's send_at_ms.
 *
 * The bucket holds up to `burst` tokens and refills at `rate` per second.
 * sched_bucket_take() may drive the count negative: that is a reservation
 * of a future token, so successive takes return evenly spaced times at the
 * configured rate once the burst is spent. rate 0 means unlimited (every
 * take is available at once).
 *
 * Pure: times are passed in (monotonic or wall milliseconds, consistently),
 * no allocation, no I/O. Unit tested in tests/unit/test_sched_bucket.c.
 */
#ifndef SLUICE_SCHED_BUCKET_H
#define SLUICE_SCHED_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sched_bucket {
    double rate;      /* tokens per second; 0: unlimited */
    double burst;     /* depth, >= 1 */
    double tokens;    /* may be negative: reserved future tokens */
    int64_t last_ms;  /* time of the last refill */
} sched_bucket;

/* A full bucket at now_ms. burst <= 0 means max(1, rate). */
void sched_bucket_init(sched_bucket *b, double rate, double burst, int64_t now_ms);
/* Change rate and depth (adaptive backoff) keeping what was earned so far,
 * capped at the new depth: after a halving the receiver must see fewer
 * messages at once, not a burst sized for the old rate. */
void sched_bucket_set_rate(sched_bucket *b, double rate, double burst, int64_t now_ms);
/* When the next token is available (>= now_ms). */
int64_t sched_bucket_available_at(sched_bucket *b, int64_t now_ms);
/* Take one token: returns the time it is available (>= now_ms). */
int64_t sched_bucket_take(sched_bucket *b, int64_t now_ms);
/* Give back a token taken but not used. */
void sched_bucket_refund(sched_bucket *b);
/* Another holder's view of this bucket: `tokens` at at_ms (a record of
 * the state topic). Keeps the lower of the two levels at now_ms, so a
 * restored bucket never grants what was already taken (an at_ms in the
 * future, another host's clock, counts as now). */
void sched_bucket_restore(sched_bucket *b, double tokens, int64_t at_ms, int64_t now_ms);
/* Full at now_ms (no token taken or reserved that has not come back):
 * the bucket is as sched_bucket_init() makes it. Unlimited: always. */
bool sched_bucket_full(sched_bucket *b, int64_t now_ms);

#endif
