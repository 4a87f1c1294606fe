/*
 * stats_count - the counting behind `sluice stats`, apart from Kafka so
 * that unit tests can feed it events.
 *
 * sluice_stats counts outcomes from events, for `sluice stats`:
 * sluice__stats_seen() is true when the same outcome (job id, recipient,
 * attempt, type) was counted before (repeats from a sender that died are
 * dropped); sluice__stats_add() counts one event into a group (latency of
 * DELIVERED = timestamp_ms - created_at_ms); sluice__stats_group() finds or
 * makes a named group ("-" for an empty name); sluice__stats_finish() sorts
 * latencies, after which sluice__stats_pct() (nearest rank, -1 when none)
 * and sluice__stats_group_json() may be used. The stats own every group
 * and string; sluice__stats_free() releases them. One thread.
 */
#ifndef SLUICE_STATS_COUNT_H
#define SLUICE_STATS_COUNT_H

#include "util.h"
#include "wire.h"

#define SLUICE_STATS_CLASSES 10 /* BounceClass values 0..9 */

typedef struct sluice_stats_group {
    char *name;
    uint64_t accepted, delivered, deferred, bounced, hard, soft, expired, suppressed, rejected;
    uint64_t complained;  /* feedback-loop reports (ARF) against the group's mail */
    uint64_t unsubscribed; /* recipients who unsubscribed (EVENT_UNSUBSCRIBED) */
    uint64_t by_class[SLUICE_STATS_CLASSES];
    int64_t *lat;
    size_t n_lat, cap_lat;
} sluice_stats_group;

typedef struct sluice_stats {
    sluice_stats_group *g;
    size_t n, cap;
    sluice_stats_group total;
    /* seen outcomes: open addressing over 64-bit hashes, 0 = empty */
    uint64_t *seen;
    size_t seen_cap, seen_n;
    uint64_t duplicates;
} sluice_stats;

void sluice__stats_init(sluice_stats *st);
bool sluice__stats_seen(sluice_stats *st, const sl_event *e);
sluice_stats_group *sluice__stats_group(sluice_stats *st, const char *name);
void sluice__stats_add(sluice_stats_group *g, const sl_event *e);
void sluice__stats_finish(sluice_stats *st);
int64_t sluice__stats_pct(const int64_t *v, size_t n, double p);
void sluice__stats_group_json(const sluice_stats_group *g, sl_buf *b);
void sluice__stats_free(sluice_stats *st);

#endif
