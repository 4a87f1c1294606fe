/*
 * reader - read a whole topic from the beginning without a consumer group:
 * what the CLI's `events`, `stats`, `dev` and `suppress list` need. All
 * partitions are assigned directly (no group, nothing committed) at
 * OFFSET_BEGINNING, at the first offset at or after a timestamp, or at the
 * end (what `events --follow` wants).
 *
 * sl_reader_next() returns the next record (caller destroys it with
 * rd_kafka_message_destroy()), or NULL when timeout_ms passed without one.
 * sl_reader_at_end() is true once every partition reached the high
 * watermark seen at open (or an EOF): "read to the end", and it stays
 * true while records written since keep coming (a topic written all the
 * time is read to the end too). One thread.
 *
 * sl_reader_each() is the one loop over a reader: it hands fn every record
 * (fn does not destroy it) until the end is reached (0), timeout_ms passed
 * first (SL_ETIMEOUT: what fn saw stays seen, partial results are the
 * caller's to keep or drop) or *cancel (may be NULL) became true
 * (SL_ECLOSED). The reader stays the caller's.
 */
#ifndef SLUICE_READER_H
#define SLUICE_READER_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "config.h"

typedef struct sl_reader sl_reader;

/* since_ms 0: from the beginning; SL_READER_END: from the end as it is at
 * open (each partition's high watermark), so that exactly what is produced
 * after the call is read. Returns NULL and *err on failure. */
#define SL_READER_END ((int64_t)-1)
sl_reader *sl_reader_new(const sl_config *cfg, const char *topic, int64_t since_ms, char **err);
rd_kafka_message_t *sl_reader_next(sl_reader *r, int timeout_ms);
bool sl_reader_at_end(const sl_reader *r);
/* The topic's partition count as seen at open. */
int sl_reader_partitions(const sl_reader *r);
/* The reader's Kafka handle, for a broker query (a watermark) on the
 * reader's thread; the reader keeps it. */
rd_kafka_t *sl_reader_handle(sl_reader *r);
void sl_reader_free(sl_reader *r);
typedef void (*sl_reader_fn)(void *arg, const rd_kafka_message_t *m);
int sl_reader_each(sl_reader *r, int64_t timeout_ms, const atomic_bool *cancel, sl_reader_fn fn,
                   void *arg);

#endif
