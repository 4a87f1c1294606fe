/*
 * libsluice_int - helpers of libsluice that the `sluice` CLI shares but
 * that are not part of the public sluice.h (they expose sl_config and
 * protobuf types).
 *
 * sluice__template_fetch() reads the templates topic (compacted; the dev
 * broker does not compact, so the whole topic) to its end and returns the
 * newest Template stored under id: SL_ENOTFOUND when there is none or its
 * newest record is a tombstone, SL_EKAFKA (with *err, caller frees) when
 * the topic cannot be read, SL_EPROTO when the record does not decode. The
 * caller frees *out with sl_template_free(). Blocks; one thread.
 *
 * sluice__template_id_ok() checks a template id: 1-128 octets of
 * [A-Za-z0-9_.-], since it is a Kafka key and appears in file names.
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
#ifndef SLUICE_LIBSLUICE_INT_H
#define SLUICE_LIBSLUICE_INT_H

#include "config.h"
#include "wire.h"

int sluice__template_fetch(const sl_config *cfg, const char *id, sl_template_msg **out, char **err);
bool sluice__template_id_ok(const char *id);

#define SLUICE_STATS_CLASSES 10 /* BounceClass values 0..9 */

typedef struct sluice_stats_group {
    char *name;
    uint64_t accepted, delivered, deferred, bounced, hard, soft, expired, suppressed, rejected;
    uint64_t complained;  /* feedback-loop reports (ARF) against the group's mail */
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
