/*
 * retry - the third scheduler stage: retry.<delay> topics -> jobs.
 *
 * One consumer group (sluice-retry) reads every retry topic. Records in a
 * partition of one topic are in due order, since each topic has a fixed
 * delay; so when a record's not_before_ms is in the future the stage
 * pauses that topic, holds the record (and any already fetched behind it)
 * with a timer, and when due republishes the Job to jobs keyed by domain,
 * resuming the topic once nothing of it is held. A job past its expiry
 * (expires_at_ms, else created_at_ms + retry.expiry) becomes an EXPIRED
 * event instead. A record's offset is stored only after its output is
 * acknowledged. On stop, held records are produced again to their own
 * topic (nothing is lost; they are due again in order within a delay).
 * Loop thread only.
 */
#ifndef SLUICE_SCHED_RETRY_H
#define SLUICE_SCHED_RETRY_H

#include "sched_ctx.h"

sched_retry *sched_retry_new(sched_ctx *ctx, char **err);
bool sched_retry_ready(const sched_retry *r);
void sched_retry_stop(sched_retry *r, sl_drained_cb cb, void *arg);
void sched_retry_free(sched_retry *r);
size_t sched_retry_held(const sched_retry *r);

/* The expiry time in wall ms of a job with these fields: its own, else
 * created + retry.expiry; 0: never. Retry and shape (for the jobs it holds)
 * both judge by it. */
int64_t sched_retry_expiry(const sl_config *cfg, int64_t created_at_ms, int64_t expires_at_ms);

#endif
