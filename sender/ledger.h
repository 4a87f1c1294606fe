/*
 * ledger - the sender's record of final outcomes, so that a dispatch
 * repeated after a crash, a rebalance or a scheduler restart is not
 * delivered twice.
 *
 * With every final outcome of a recipient (DELIVERED, BOUNCED, EXPIRED),
 * just before its event and on a producer of its own with linger 0
 * (outcome.h), the sender publishes a ledger record
 * to the ledger topic (sl_config_topic(cfg, "ledger")) with the dispatch
 * record's own key, so that it lands on the partition number of the
 * dispatch (same key, same murmur2 partitioner, same partition count), and
 * lets the dispatch's offset be stored only once both are acknowledged. The value is an Event
 * holding just the type, job id, recipient and sender id; the header
 * "dispatch" carries "PARTITION/OFFSET" of the dispatch record, for
 * operators.
 *
 * The lookup maps (job id, recipient) pairs to their final outcome:
 * filled as this sender's ledger records are acknowledged
 * (snd_ledger_note) and by the follower, which reads the whole ledger
 * topic from sender.ledger_lookback ago onwards. On assignment the
 * consumer thread only hands the partitions to the loader
 * (snd_ledger_assign), so that the group's rebalance never waits for the
 * ledger; the loader waits until the follower has read the matching ledger
 * partitions to their end (snd_ledger_load) and then marks them ready.
 * Until then a worker holds every dispatch of those partitions at its slot
 * (snd_ledger_ready): nothing above the committed offset is sent before
 * its partition's ledger is loaded. It holds at most sender.ledger_max_entries
 * pairs; past that the oldest are forgotten first. A worker asks
 * snd_ledger_final() just before it starts a recipient's transaction,
 * whichever copy of the dispatch it holds: the check is by job id and
 * recipient, not by offset. Two copies in one sender at once (a scheduler
 * that produced a job twice) do not race: the first claims the pair and
 * the second waits for its outcome (snd_ledger_claim).
 *
 * Threads: every function may be called from any thread (one mutex); the
 * follower and the loader run on threads of their own. The loader's
 * snd_ledger_load() waits until the partitions are read to their end or
 * SND_LEDGER_LOAD_MS passed; what it could not read is logged and
 * counted, and delivery goes on at least once.
 *
 * Metrics: sluice_sender_ledger_skipped_total (recipients not sent because
 * the ledger had their final outcome), sluice_sender_ledger_loaded_total
 * (ledger records the follower read), sluice_sender_ledger_entries (pairs
 * held), sluice_sender_ledger_load_failures_total,
 * sluice_sender_ledger_held_total (dispatches held until their partition's
 * ledger was loaded; the worker counts them).
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

#define SND_LEDGER_LOAD_MS 15000
/* Each broker query on that path (the watermarks, the committed offsets),
 * in all: short, since a partition whose leader just died answers nothing
 * until the metadata names the new one. */
#define SND_LEDGER_QUERY_MS 2000

typedef struct snd_ledger snd_ledger;

/* NULL when cfg->sender.ledger is off. */
snd_ledger *snd_ledger_new(const sl_config *cfg);
void snd_ledger_free(snd_ledger *l);

/* A final type? DELIVERED, BOUNCED, EXPIRED (and the scheduler's finals). */
bool snd_ledger_is_final(Sluice__V1__EventType t);

/* Remember that (job_id, rcpt) has its final outcome, of type t. */
void snd_ledger_note(snd_ledger *l, const char *job_id, const char *rcpt,
                     Sluice__V1__EventType t);
/* The final outcome the ledger holds for (job_id, rcpt), or
 * EVENT_UNKNOWN. */
Sluice__V1__EventType snd_ledger_outcome(snd_ledger *l, const char *job_id, const char *rcpt);
/* Does (job_id, rcpt) have a final outcome? */
bool snd_ledger_final(snd_ledger *l, const char *job_id, const char *rcpt);
/* Claims (job_id, rcpt) for a transaction of this sender: returns 0 (now
 * claimed: release it with snd_ledger_unclaim() once the outcome is
 * recorded or the delivery handed back), SND_LEDGER_FINAL (the ledger
 * holds its final outcome: skip it) or SND_LEDGER_BUSY (another copy of
 * the job is on its way in this sender: ask again once it is done). */
#define SND_LEDGER_FINAL 1
#define SND_LEDGER_BUSY 2
int snd_ledger_claim(snd_ledger *l, const char *job_id, const char *rcpt);
void snd_ledger_unclaim(snd_ledger *l, const char *job_id, const char *rcpt);
/* A clean hand-over: every dispatch of these partitions this sender
 * started is done and in the ledger, the rest was handed back. Writes a
 * marker (an Event of type UNKNOWN with the header "handover") to each of
 * their ledger partitions and waits (at most 5 s) for it. Consumer
 * thread, on revoke. */
void snd_ledger_handover(snd_ledger *l, const int32_t *partitions, size_t n);

/* Might a previous owner of the dispatch partition have sent this record
 * without its ledger record landing (it died in the remaining window)?
 * Unless the partition's last ledger record at assignment was a hand-over
 * marker: true for records from the committed offset up to
 * sender.max_inflight past the last dispatch the ledger names (or past
 * the committed offset), and already in the log at assignment: their
 * events carry possible_duplicate. */
bool snd_ledger_suspect(snd_ledger *l, int32_t partition, int64_t offset);
/* Pairs held. */
size_t snd_ledger_count(snd_ledger *l);

/* Publishes one ledger record with the dispatch record's key; cb as
 * sl_producer_send(). The caller notes the pair once cb reported 0. */
int snd_ledger_publish(sl_producer *p, const sl_config *cfg, const void *key, size_t klen,
                       int32_t partition, int64_t offset, const char *job_id, const char *rcpt,
                       Sluice__V1__EventType type, const char *sender_id, sl_produce_cb cb,
                       void *arg);

/* Starts the follower: a thread of the ledger's own that reads every
 * ledger partition from sender.ledger_lookback ago and keeps reading,
 * noting every final pair as it arrives (another sender's outcomes too:
 * a copy of a job can come on another partition than the first). Returns
 * 0, or a negative error with *err set (the topic does not exist). */
int snd_ledger_start(snd_ledger *l, char **err);

/* On assignment (the consumer thread; returns at once): every partition
 * is unready until the loader has loaded the ledger partitions of this
 * assignment (eager rebalancing: the whole assignment each time); a newer
 * assignment supersedes one still loading. */
void snd_ledger_assign(snd_ledger *l, const int32_t *partitions, size_t n);
/* May dispatches of this partition go out: is its ledger loaded? True for
 * a partition the ledger topic does not have (sent unchecked, logged). */
bool snd_ledger_ready(snd_ledger *l, int32_t partition);

/* The loader's step: waits until the follower has read these ledger
 * partitions up to their end as of now (at most SND_LEDGER_LOAD_MS).
 * Returns the number of records the follower noted meanwhile, or a
 * negative error (logged, counted). */
long snd_ledger_load(snd_ledger *l, const int32_t *partitions, size_t n);

#endif
