/*
 * suppress - the suppression list in memory: every (tenant, address) on
 * the compacted suppressions topic (key "tenant/address", value a
 * Suppression, a tombstone removes it).
 *
 * sched_suppress_new() opens a group-less reader of the whole topic; a
 * timer on the loop drains it without blocking (so it keeps following
 * additions made by the CLI or by other schedulers). sched_suppress_loaded()
 * turns true once the reader first reached the end of every partition:
 * classify reports ready only then, so that no job slips past an entry not
 * yet read. sched_suppress_add() publishes a new entry (e.g. after a hard
 * bounce) and records it at once. Addresses are compared lower-cased.
 *
 * Metrics: sluice_suppressions (gauge), sluice_suppressed_total.
 * Loop thread only.
 */
#ifndef SLUICE_SCHED_SUPPRESS_H
#define SLUICE_SCHED_SUPPRESS_H

#include "sched_ctx.h"

sched_suppress *sched_suppress_new(sched_ctx *ctx, char **err);
bool sched_suppress_loaded(const sched_suppress *s);
bool sched_suppress_has(const sched_suppress *s, const char *tenant, const char *address);
size_t sched_suppress_count(const sched_suppress *s);
/* cb/arg as for sl_producer_send (may be NULL). */
int sched_suppress_add(sched_suppress *s, const char *tenant, const char *address,
                       const char *reason, const char *job_id, sl_produce_cb cb, void *arg);
/* In memory only (tests, and the reader's own updates). */
void sched_suppress_put(sched_suppress *s, const char *tenant, const char *address, bool on);
void sched_suppress_free(sched_suppress *s);
/* "tenant/address" lower-cased; caller frees. */
char *sched_suppress_key(const char *tenant, const char *address);

#endif
