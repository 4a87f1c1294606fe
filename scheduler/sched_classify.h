/*
 * classify - the first scheduler stage: jobs -> sited.
 *
 * For each record of the jobs topic (consumer group sluice-classify):
 * reject what cannot be delivered (malformed or wrong-version protobuf,
 * larger than scheduler.max_job_bytes, no recipients, an address that is
 * not strict RFC 5321 syntax, a NUL in a string, a bad job_id, more than
 * 100 recipients; sched_classify_validate()) to the DLQ with a reason
 * header plus a REJECTED event; ignore the fields a producer must leave
 * empty (site, mx, null_mx, not_before_ms, and attempt unless the retry
 * stage republished the job: sched_classify_reset()); drop suppressed recipients with a SUPPRESSED event each;
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

/* NULL when the job may go on, else a static reason: no or more than 100
 * recipients, no job_id or one over 255 octets or with a control
 * character (it becomes the Message-ID), an address that is not strict
 * RFC 5321 syntax or not UTF-8, recipients outside the domain, no content.
 * Lower-cases job->domain in place and fills it from the first recipient
 * when empty. (A NUL inside a string is found on the encoded record,
 * sl_job_nul_field(), since decoding cuts the string at it.) */
const char *sched_classify_validate(const sl_config *cfg, sl_job *job);
/* Drop what the scheduler fills and a producer must leave empty: site, mx,
 * null_mx, not_before_ms, and attempt unless retried (the record came from
 * the retry stage, SCHED_RETRY_HEADER). */
void sched_classify_reset(sl_job *job, bool retried);

#endif
