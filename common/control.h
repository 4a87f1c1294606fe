/*
 * control - what an operator asks about a campaign or a site, read from
 * the topics (used by `sluice campaign|site show` and sluice-api's
 * GET /v1/campaigns/ID): the Control in force for a key of the compacted
 * control topic, and a campaign's events counted.
 *
 * Both read a whole topic from the beginning with a group-less reader
 * (reader.h) within timeout_ms: fine for an operator's question, not for a
 * hot path. They return 0, SL_ETIMEOUT when the topic was not read to its
 * end in time, or SL_EKAFKA with *err (caller frees) when it could not be
 * read. Any thread; nothing shared.
 */
#ifndef SLUICE_CONTROL_H
#define SLUICE_CONTROL_H

#include "config.h"
#include "wire.h"

#include <stddef.h>

/* The newest Control of key ("campaign/TENANT/ID", "site/NAME"); *out
 * NULL when there is none or the newest is a tombstone (caller frees with
 * sl_control_free()). */
int sl_control_load(const sl_config *cfg, const char *key, sl_control **out, int timeout_ms,
                    char **err);
/* "active", "suspended" or "cancelled" for a Control in force (NULL: none). */
const char *sl_control_state(const sl_control *c);

#define SL_EVENT_TYPES 32

/* A campaign's events: by[type] counts the distinct (job, attempt, type)
 * (the events topic's de-duplication key, so a repeated event counts
 * once); jobs the distinct jobs seen; queued those of them with no final
 * event (DELIVERED, BOUNCED, EXPIRED, SUPPRESSED, REJECTED, CANCELLED). An
 * event without a tenant counts as cfg's scheduler.default_tenant. */
typedef struct sl_campaign_counts {
    size_t by[SL_EVENT_TYPES];
    size_t jobs, queued;
} sl_campaign_counts;

int sl_campaign_count(const sl_config *cfg, const char *tenant, const char *campaign,
                      sl_campaign_counts *out, int timeout_ms, char **err);

#endif
