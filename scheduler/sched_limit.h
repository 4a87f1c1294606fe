/*
 * limit - per-tenant and per-campaign message rate caps (config `limits`).
 *
 * A job is under every configured limit whose tenant and campaign globs
 * both match it (an omitted key matches anything). Each limit keeps one
 * token bucket per distinct value of the keys it names: `tenant: "*"`
 * caps every tenant on its own, `{tenant: acme}` caps acme's campaigns
 * together, `{tenant: acme, campaign: "*"}` caps each of acme's campaigns.
 *
 * sched_limits_resolve() finds (creating on first use) the buckets that
 * apply to a (tenant, campaign); the pointers stay valid until
 * sched_limits_free(). sched_limits_available_at() is when every one of
 * them has a token, sched_limits_take() takes one from each and returns
 * the latest of their times (the job may not be sent before any of them).
 * Each resolve holds the buckets until sched_limits_release();
 * sched_limits_sweep() frees the buckets no one holds that have been
 * released for idle_ms and are full again (as a new one would be), so
 * memory follows the tenants and campaigns in use.
 *
 * sched_limits_key() names a bucket as the state topic does (limit index,
 * tenant, campaign); sched_limits_find() returns the bucket of that name
 * or NULL; sched_limits_restore() applies a bucket read back from the
 * state topic (the lower level wins, sched_bucket_restore()), creating it
 * unheld when it is not there: it goes at the next sweep once full.
 *
 * sched_limits_set_share() scales every cap by this scheduler's share of
 * the cluster (its sited partitions / all of them; 1 by default): each
 * scheduler enforces cap x share over the sites it owns, so the cluster
 * as a whole never exceeds the cap (docs/scheduler.md, "Tenant and
 * campaign caps in a cluster"). The burst is scaled too (at least 1).
 *
 * Pure (times passed in); unit tested in tests/unit/test_sched_limit.c.
 * One thread.
 */
#ifndef SLUICE_SCHED_LIMIT_H
#define SLUICE_SCHED_LIMIT_H

#include "config.h"
#include "sched_bucket.h"
#include "map.h"

#define SCHED_LIMITS_MAX 8 /* limits applied to one job; more are ignored */

typedef struct sched_limits {
    const sl_config *cfg;
    sl_map buckets; /* "index\x1ftenant\x1fcampaign" -> sched_bucket* */
    double share;   /* of each cap, (0, 1] */
} sched_limits;

void sched_limits_init(sched_limits *l, const sl_config *cfg);
void sched_limits_free(sched_limits *l);
/* tenant: the job's, or the default tenant when it has none. */
size_t sched_limits_resolve(sched_limits *l, const char *tenant, const char *campaign,
                            sched_bucket **out, size_t max, int64_t now_ms);
int64_t sched_limits_available_at(sched_bucket *const *b, size_t n, int64_t now_ms);
int64_t sched_limits_take(sched_bucket *const *b, size_t n, int64_t now_ms);
/* Drop the hold of one resolve on its n buckets. */
void sched_limits_release(sched_limits *l, sched_bucket *const *b, size_t n, int64_t now_ms);
/* Free idle buckets (see above); returns how many. */
size_t sched_limits_sweep(sched_limits *l, int64_t now_ms, int64_t idle_ms);
/* The bucket's name: limit index, tenant and campaign (owned by the
 * bucket, valid while it is). */
void sched_limits_key(const sched_bucket *b, uint32_t *limit, const char **tenant,
                      const char **campaign);
sched_bucket *sched_limits_find(sched_limits *l, uint32_t limit, const char *tenant,
                                const char *campaign);
/* False when limit is no index of the configuration. */
bool sched_limits_restore(sched_limits *l, uint32_t limit, const char *tenant,
                          const char *campaign, double tokens, int64_t at_ms, int64_t now_ms);
/* Scale every cap by share (clamped to (0, 1]; 0 or less: unchanged),
 * the existing buckets keeping what they hold, up to their new depth. */
void sched_limits_set_share(sched_limits *l, double share, int64_t now_ms);
/* Buckets held now (tests, metrics). */
size_t sched_limits_count(const sched_limits *l);

#endif
