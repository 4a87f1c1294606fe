/*
 * classify - the first scheduler stage: jobs -> sited.
 *
 * For each record of the jobs topic (consumer group sluice-classify):
 * reject what cannot be delivered (malformed or wrong-version protobuf,
 * larger than scheduler.max_job_bytes, no recipients, an address that is
 * not strict RFC 5321 syntax) to the DLQ with a reason header plus a
 * REJECTED event; drop suppressed recipients with a SUPPRESSED event each;
 * find the site (configured `domains` patterns, else a route's domain is
 * its own site, else the MX set from DNS rolled up by `mx` patterns; null
 * MX is flagged for the sender to bounce; a temporary DNS failure parks
 * the job on the shortest retry topic) and publish the job, with site and
 * MX list filled, to sited keyed by site. The record is done once all of
 * that is acknowledged, so a crash repeats a job and never loses one.
 *
 * sched_classify_validate() is the pure validation, unit tested.
 * Loop thread only.
 */
#ifndef SLUICE_SCHED_CLASSIFY_H
#define SLUICE_SCHED_CLASSIFY_H

#include "sched_ctx.h"

sched_classify *sched_classify_new(sched_ctx *ctx, char **err);
bool sched_classify_ready(const sched_classify *c);
void sched_classify_stop(sched_classify *c, sl_drained_cb cb, void *arg);
void sched_classify_free(sched_classify *c);

/* NULL when the job may go on, else a static reason. Lower-cases
 * job->domain in place and fills it from the first recipient when empty. */
const char *sched_classify_validate(const sl_config *cfg, sl_job *job);

#endif
