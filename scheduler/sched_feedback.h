/*
 * feedback - what the scheduler learns from the events topic.
 *
 * A consumer group per scheduler instance (sluice-feedback-<instance id>,
 * starting at the end when new) reads every event: a DEFERRED or BOUNCED
 * reply that matches a backoff rule (configured, then shipped defaults)
 * adapts the (site, source IP) pair in shape; a DEFERRED event with
 * destination_down_until_ms (every MX of the site down from that IP)
 * suspends the pair in shape until then (sched_shape_down()); a hard BOUNCED of class
 * invalid-recipient (reason "hard-bounce") and a COMPLAINED event (reason
 * "complaint", counted in sluice_complaints_total{site}) add the recipient
 * to the tenant's suppression list, once.
 * Loop thread only.
 */
#ifndef SLUICE_SCHED_FEEDBACK_H
#define SLUICE_SCHED_FEEDBACK_H

#include "sched_backoff.h"
#include "sched_ctx.h"

sched_feedback *sched_feedback_new(sched_ctx *ctx, char **err);
void sched_feedback_stop(sched_feedback *f, sl_drained_cb cb, void *arg);
void sched_feedback_free(sched_feedback *f);

/* Handle one decoded event (the consumer's callback; tests call it). */
void sched_feedback_event(sched_feedback *f, const sl_event *e, sched_op *op);

#endif
