/*
 * control - the campaign and site controls in force: what the compacted
 * control topic says (key "campaign/TENANT/ID" or "site/NAME", value a
 * Control; written by `sluice campaign|site` and sluice-api).
 *
 * sched_control_new() opens a group-less reader of the whole topic and a
 * loop timer drains it without blocking, so every scheduler running shape
 * knows every control, from the beginning after a restart, and follows new
 * ones live. The newest record of a key is in force: SUSPEND holds, CANCEL
 * (campaigns only) cancels, RESUME (or a tombstone) lifts either.
 * sched_control_loaded() turns true once the reader first reached the end
 * of every partition: shape dispatches nothing before (a suspension
 * written before a restart is honoured from the first job). A PURGE of a
 * site (key "purge/site/NAME", apart from the suspension) cancels every
 * job to the site created before its time.
 *
 * sched_control_job() judges one job by its tenant, campaign, site and
 * creation time: a cancel (its campaign's, or its site's purge) wins over
 * a hold. The change callback runs on the
 * loop after a drain that changed what is in force (and once when first
 * loaded), so shape can act on the jobs it already holds.
 *
 * Strings passed in are copied; `why` strings returned stay valid until
 * the next drain (the loop's next turn). Metrics: sluice_control_in_force
 * {scope,action}. Loop thread only.
 */
#ifndef SLUICE_SCHED_CONTROL_H
#define SLUICE_SCHED_CONTROL_H

#include "sched_ctx.h"

typedef enum sched_control_verdict {
    SCHED_CONTROL_GO = 0, /* nothing in force for it */
    SCHED_CONTROL_HOLD,   /* its campaign or its site is suspended */
    SCHED_CONTROL_CANCEL, /* its campaign is cancelled */
} sched_control_verdict;

/* ctx->loop NULL (unit tests): in memory only, loaded at once. */
sched_control *sched_control_new(sched_ctx *ctx, char **err);
bool sched_control_loaded(const sched_control *c);
/* cb(arg) after what is in force changed; NULL: none. */
void sched_control_on_change(sched_control *c, void (*cb)(void *arg), void *arg);
/* Apply one record of the topic (val NULL: a tombstone). Returns true when
 * what is in force changed; a record that does not decode, or a CANCEL of
 * a site, is ignored with a warning. */
bool sched_control_apply(sched_control *c, const char *key, const void *val, size_t len);
/* The verdict for a job of (tenant, campaign) to site created at
 * created_ms; campaign "" is no campaign. *why (may be NULL) names the
 * control in force. */
sched_control_verdict sched_control_job(const sched_control *c, const char *tenant,
                                        const char *campaign, const char *site,
                                        int64_t created_ms, const char **why);
/* Controls in force (suspended or cancelled keys, site purges). */
size_t sched_control_count(const sched_control *c);
void sched_control_free(sched_control *c);

#endif
