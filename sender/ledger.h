/*
 * ledger - the sender's record of final outcomes, so that a dispatch
 * repeated after a crash, a rebalance or a scheduler restart is not
 * delivered twice.
 *
 * After every final outcome of a recipient (DELIVERED, BOUNCED, EXPIRED),
 * once its events are acknowledged, the sender publishes a ledger record
 * to the ledger topic (sl_config_topic(cfg, "ledger")) with the dispatch
 * record's own key, so that it lands on the partition number of the
 * dispatch (same key, same murmur2 partitioner, same partition count), and
 * only then lets the dispatch's offset be stored. The value is an Event
 * holding just the type, job id, recipient and sender id; the header
 * "dispatch" carries "PARTITION/OFFSET" of the dispatch record, for
 * operators.
 *
 * The lookup is a set of (job id, recipient) pairs with a final outcome:
 * filled as this sender's ledger records are acknowledged
 * (snd_ledger_note) and, on assignment, by reading the matching ledger
 * partitions back (snd_ledger_load): every record no older than
 * sender.ledger_lookback. It holds at most sender.ledger_max_entries
 * pairs; past that the oldest are forgotten first. A worker asks
 * snd_ledger_final() just before it starts a recipient's transaction,
 * whichever copy of the dispatch it holds: the check is by job id and
 * recipient, not by offset.
 *
 * Threads: snd_ledger_note(), snd_ledger_final() and snd_ledger_load() may
 * be called from any thread (one mutex). snd_ledger_load() blocks the
 * caller (the consumer thread, from on_assign) until the partitions are
 * read to their end or SND_LEDGER_LOAD_MS passed; what it could not read is
 * logged and counted, and delivery goes on at least once.
 *
 * Metrics: sluice_sender_ledger_skipped_total (recipients not sent because
 * the ledger had their final outcome), sluice_sender_ledger_loaded_total
 * (records read back on assignment), sluice_sender_ledger_entries (pairs
 * held), sluice_sender_ledger_load_failures_total.
 *
 * Memory: the ledger copies every string it keeps; snd_ledger_free() frees
 * them.
 */
#ifndef SLUICE_SND_LEDGER_H
#define SLUICE_SND_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "kafka.h"
#include "wire.h"

#define SND_LEDGER_LOAD_MS 60000

typedef struct snd_ledger snd_ledger;

/* NULL when cfg->sender.ledger is off. */
snd_ledger *snd_ledger_new(const sl_config *cfg);
void snd_ledger_free(snd_ledger *l);

/* A final type? DELIVERED, BOUNCED, EXPIRED (and the scheduler's finals). */
bool snd_ledger_is_final(Sluice__V1__EventType t);

/* Remember that (job_id, rcpt) has its final outcome. */
void snd_ledger_note(snd_ledger *l, const char *job_id, const char *rcpt);
/* Does (job_id, rcpt) have a final outcome? */
bool snd_ledger_final(snd_ledger *l, const char *job_id, const char *rcpt);
/* Pairs held. */
size_t snd_ledger_count(snd_ledger *l);

/* Publishes one ledger record with the dispatch record's key; cb as
 * sl_producer_send(). The caller notes the pair once cb reported 0. */
int snd_ledger_publish(sl_producer *p, const sl_config *cfg, const void *key, size_t klen,
                       int32_t partition, int64_t offset, const char *job_id, const char *rcpt,
                       Sluice__V1__EventType type, const char *sender_id, sl_produce_cb cb,
                       void *arg);

/* Reads the ledger partitions with these numbers from their start and
 * notes every final pair no older than sender.ledger_lookback. Returns the
 * number of records noted, or a negative error (logged). */
long snd_ledger_load(snd_ledger *l, const int32_t *partitions, size_t n);

#endif
