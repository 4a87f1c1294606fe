/*
 * feedback - what the scheduler learns from the events topic.
 *
 * Two consumers of the events topic:
 * - durable (with classify, which holds the suppression list): the fleet's
 *   one group SCHED_FEEDBACK_GROUP, committed like every stage, starting
 *   at the beginning when new. Each event reaches one scheduler of the
 *   fleet, and nothing published while no scheduler runs is missed: a hard
 *   BOUNCED of class invalid-recipient (reason "hard-bounce") and a
 *   COMPLAINED event (reason "complaint", counted in
 *   sluice_complaints_total{site}) add the recipient to the tenant's
 *   suppression list, once.
 * - live (with shape): a group of this process alone
 *   (sluice-feedback-live-<instance id>-<pid>), from the end, never
 *   committed, so every scheduler reads every event and the site's owner
 *   sees its replies, and no group is left behind when the process goes:
 *   a DEFERRED or BOUNCED reply that matches a backoff rule (configured,
 *   then shipped defaults) adapts the (site, source IP) pair in shape; a
 *   DEFERRED event with destination_down_until_ms (every MX of the site
 *   down from that IP) suspends the pair in shape until then
 *   (sched_shape_down()). Each event is finished once the state-topic
 *   write of the change it caused is acknowledged, and the finished
 *   offsets are committed to the memberless group
 *   sluice-feedback-mark-<instance id>: a restart under the same id starts
 *   at the lower of that mark and the durable group's place, so a reply
 *   heard but not stored before a SIGKILL is heard again.
 * sched_feedback_stop() drains both, then calls cb once.
 * Loop thread only.
 */
#ifndef SLUICE_SCHED_FEEDBACK_H
#define SLUICE_SCHED_FEEDBACK_H

#include "sched_backoff.h"
#include "sched_ctx.h"

#define SCHED_FEEDBACK_GROUP "sluice-feedback"

sched_feedback *sched_feedback_new(sched_ctx *ctx, char **err);
void sched_feedback_stop(sched_feedback *f, sl_drained_cb cb, void *arg);
void sched_feedback_free(sched_feedback *f);

/* Handle one decoded event (the consumer's callback; tests call it). */
void sched_feedback_event(sched_feedback *f, const sl_event *e, sched_op *op);

#endif
