/*
 * sched_bucket - see sched_bucket.h.
 */
#include "sched_bucket.h"

#include <math.h>

#define SCHED_BUCKET_WAIT_MAX 3.2e13 /* ms, about a thousand years */

void sched_bucket_init(sched_bucket *b, double rate, double burst, int64_t now_ms)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst > 0 ? burst : (rate > 1 ? rate : 1);
    if (b->burst < 1)
        b->burst = 1;
    b->tokens = b->burst;
    b->last_ms = now_ms;
}

static void refill(sched_bucket *b, int64_t now_ms)
{
    if (now_ms <= b->last_ms)
        return;
    if (b->rate > 0) {
        b->tokens += (double)(now_ms - b->last_ms) * b->rate / 1000.0;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->last_ms = now_ms;
}

void sched_bucket_set_rate(sched_bucket *b, double rate, double burst, int64_t now_ms)
{
    refill(b, now_ms);
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst >= 1 ? burst : 1;
    if (b->tokens > b->burst)
        b->tokens = b->burst;
}

int64_t sched_bucket_available_at(sched_bucket *b, int64_t now_ms)
{
    refill(b, now_ms);
    if (b->rate <= 0 || b->tokens >= 1.0)
        return now_ms;
    /* The config bounds rates, but a wait beyond int64 milliseconds must
     * still not wrap into the past: cap it at about a thousand years. */
    double wait = ceil((1.0 - b->tokens) * 1000.0 / b->rate);
    if (!(wait < SCHED_BUCKET_WAIT_MAX))
        wait = SCHED_BUCKET_WAIT_MAX;
    return now_ms + (int64_t)wait;
}

int64_t sched_bucket_take(sched_bucket *b, int64_t now_ms)
{
    int64_t at = sched_bucket_available_at(b, now_ms);
    if (b->rate > 0)
        b->tokens -= 1.0;
    return at;
}

void sched_bucket_refund(sched_bucket *b)
{
    if (b->rate > 0)
        b->tokens += 1.0;
}

void sched_bucket_restore(sched_bucket *b, double tokens, int64_t at_ms, int64_t now_ms)
{
    refill(b, now_ms);
    if (b->rate <= 0 || !isfinite(tokens))
        return;
    if (at_ms < now_ms)
        tokens += (double)(now_ms - at_ms) * b->rate / 1000.0;
    if (tokens > b->burst)
        tokens = b->burst;
    if (tokens < b->tokens)
        b->tokens = tokens;
}

bool sched_bucket_full(sched_bucket *b, int64_t now_ms)
{
    refill(b, now_ms);
    return b->rate <= 0 || b->tokens >= b->burst;
}
