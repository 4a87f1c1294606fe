/*
 * submit_limits - the per-user message rate and the per-IP AUTH failure
 * counter of sluice-submit. Pure bookkeeping: the caller passes the
 * monotonic clock, so tests drive time by hand.
 *
 * sub_rate: one token bucket per key (user name): rate_per_min tokens a
 * minute, at most rate_per_min in the bucket (a minute's burst).
 * sub_rate_take() takes a token and returns true, or returns false when the
 * user is over the rate (nothing taken); sub_rate_check() looks without
 * taking. A rate of 0 means unlimited.
 *
 * sub_fails: failures per client IP in a sliding window (the count resets
 * once window_ms passed since the first failure of the run).
 * sub_fails_note() counts one and returns the count in the window;
 * sub_fails_count() returns it without counting. The table forgets
 * expired entries as it grows and holds at most max_entries IPs (the oldest
 * are dropped first), so an attacker with many addresses cannot grow it
 * without bound.
 *
 * Both own their memory (free with *_free()); one thread.
 */
#ifndef SLUICE_SUBMIT_LIMITS_H
#define SLUICE_SUBMIT_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sub_rate sub_rate;
sub_rate *sub_rate_new(void);
void sub_rate_free(sub_rate *r);
bool sub_rate_take(sub_rate *r, const char *key, uint32_t rate_per_min, int64_t now_ms);
bool sub_rate_check(sub_rate *r, const char *key, uint32_t rate_per_min, int64_t now_ms);

typedef struct sub_fails sub_fails;
sub_fails *sub_fails_new(int64_t window_ms, size_t max_entries);
void sub_fails_free(sub_fails *f);
unsigned sub_fails_note(sub_fails *f, const char *ip, int64_t now_ms);
unsigned sub_fails_count(sub_fails *f, const char *ip, int64_t now_ms);

#endif
