/*
 * kafka - librdkafka the way every sluice component uses it.
 *
 * sl_kafka_conf() builds a client configuration from sl_config (bootstrap,
 * security, client.id, timeouts). The caller owns the result until it hands
 * it to rd_kafka_new().
 *
 * sl_topics() lists every sluice topic with its partition count, cleanup
 * policy, max.message.bytes and retention (the ledger's: twice
 * sender.ledger_lookback): what `sluice topics ensure` and the dev
 * broker create.
 *
 * sl_producer is the idempotent producer (enable.idempotence=true,
 * acks=all, murmur2_random partitioner, message.max.bytes from the size
 * budget, budget.h). sl_producer_send() copies key and
 * value; the callback fires exactly once per send with 0 when Kafka
 * acknowledged the record, or a negative error when it can never be
 * (record too large, unknown topic after the timeout). Transient failures
 * are retried inside: a timed-out record is produced again, and on
 * librdkafka's fatal idempotence error the producer is recreated and every
 * unacknowledged record re-sent. With a loop, callbacks run on that loop's
 * thread (the main queue is drained through an io-event pipe watched by
 * uv_poll); without one, in whichever thread calls sl_producer_poll() or
 * sl_producer_flush(). One owner thread.
 *
 * sl_consumer is the at-least-once consumer. A thread of its own polls
 * Kafka and hands each record to the loop thread through a bounded queue;
 * the record callback owns the
 * sl_record until it calls sl_record_done(), after everything produced for
 * it was acknowledged. The offset stored for a partition is always the
 * lowest record still in flight (or one past the last done), so a crash
 * repeats and never skips; the loop hands the offsets it advanced to
 * librdkafka once per loop iteration, and before every commit. Past max_inflight
 * records in memory the consumer pauses its partitions (never blocks the
 * loop) and resumes below half. Offsets are committed every
 * kafka.commit_interval_ms, on revoke and on stop; and where the group has
 * none, its start is committed as the partition is first assigned, so that
 * a later owner knows one came before (even if that one never got as far
 * as a commit of its own). A committed offset that
 * fell off the log raises the retention alarm: an error log and the counter
 * sluice_kafka_offsets_lost_total with the number of records lost, then
 * consumption continues from the oldest record still there. Eager
 * assignors only (range,roundrobin) as librdkafka 2.0.2 needs.
 */
#ifndef SLUICE_KAFKA_H
#define SLUICE_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "config.h"

typedef struct sl_topic_spec {
    char *name;         /* full name, prefix included */
    int partitions;
    bool compacted;
    uint64_t max_message_bytes; /* the topic's max.message.bytes (budget.h) */
    int64_t retention_ms;       /* retention.ms and segment.ms; 0: the broker's default */
} sl_topic_spec;

/* Does a Kafka broker answer at the bootstrap within timeout_ms? A TCP
 * connection, then (plaintext only) an ApiVersions round trip. Tries
 * each host:port of cfg->kafka.bootstrap (a "proto://" prefix and [v6]
 * brackets allowed) in turn within the one deadline. Returns 0 when one
 * answers; otherwise -1 with why set to one line, "cannot reach Kafka at
 * HOST:PORT: connection refused" (the last failure; "it accepts
 * connections but no Kafka broker answered" when something else listens
 * there). Blocks the calling thread: for command-line tools, before they
 * create a librdkafka client that would otherwise retry silently until its
 * own timeouts. */
int sl_kafka_probe(const sl_config *cfg, int timeout_ms, char *why, size_t whylen);

/* Command-line tools: librdkafka's own log lines go at debug level, so that
 * a tool prints its own one-line error instead of the retry chatter. */
void sl_kafka_quiet_logs(bool quiet);

/* Every sluice topic; caller frees with sl_topics_free(). */
sl_topic_spec *sl_topics(const sl_config *cfg, size_t *n);
void sl_topics_free(sl_topic_spec *t, size_t n);

/* The metadata of topic once it has at least one partition: up to 10 tries
 * of 5 s (a cluster that is starting too), at least 0.5 s apart (a topic
 * just created that a broker does not know yet), stopping early when stop
 * (may be NULL) returns true between tries. 0 and *md (the caller destroys it
 * with rd_kafka_metadata_destroy()), or the last error and *md NULL. Any
 * thread; blocks. */
rd_kafka_resp_err_t sl_kafka_topic_metadata(rd_kafka_t *rk, const char *topic,
                                            int (*stop)(void), const rd_kafka_metadata_t **md);

/* Where partitions' logs stand: lo[i] the first offset, hi[i] the end
 * (the offset the next record gets) of topic's partition parts[i] (parts
 * NULL: partitions 0..n-1); lo or hi may be NULL (not asked). Within
 * timeout_ms in all, asking again after a metadata refresh when a try is
 * not answered; what stays unknown is -1 and the call returns the error
 * (0 when all are known). Any thread; blocks.
 *
 * Use this, never rd_kafka_query_watermark_offsets(): in librdkafka 2.0.2
 * that one waits for its request whatever its timeout, and a request
 * queued for a leader that just died is sent to that dead broker again
 * and again: a re-assigned sender's ledger load stood still for minutes
 * so (docs/kafka.md). */
rd_kafka_resp_err_t sl_kafka_watermarks(rd_kafka_t *rk, const char *topic, const int32_t *parts,
                                        size_t n, int64_t *lo, int64_t *hi, int timeout_ms);

/* role: "producer", "consumer"; client.id becomes "sluice-<role>". */
rd_kafka_conf_t *sl_kafka_conf(const sl_config *cfg, const char *role);
/* A consumer handle that never subscribes, for assign() and
 * rd_kafka_committed(): sl_kafka_conf(cfg, role), group.id group
 * (librdkafka wants one even for assign(); nothing is committed unless the
 * caller commits), auto-commit off, then the further "key", "value" pairs
 * up to a NULL key. NULL and *err ("kafka: ...", caller frees) when
 * librdkafka refuses. The caller destroys it. */
rd_kafka_t *sl_kafka_assign_handle(const sl_config *cfg, const char *role, const char *group,
                                   char **err, ...) __attribute__((sentinel));

/* ---- producer ---- */
typedef struct sl_producer sl_producer;
typedef void (*sl_produce_cb)(void *arg, int err);

typedef struct sl_header {
    const char *name;
    const char *value;
} sl_header;

/* loop may be NULL (then poll/flush by hand). On failure returns NULL and
 * a malloc'd message in *err. */
sl_producer *sl_producer_new(const sl_config *cfg, uv_loop_t *loop, char **err);
/* The same with linger.ms 0 whatever kafka.linger_ms says: each record
 * leaves at once, in batches of what queued meanwhile; for the few records
 * whose acknowledgement a crash window depends on (the delivery ledger).
 * acks=1 and not idempotent: a record is acknowledged once the partition
 * leader appended it; it may be written twice or out of order, and is lost
 * if the leader dies before a follower copied it. Only for records whose
 * loss costs at most a duplicate and whose repeat is harmless. */
sl_producer *sl_producer_new_prompt(const sl_config *cfg, uv_loop_t *loop, char **err);
/* key may be NULL (no key, e.g. the DLQ); value NULL with vlen 0 is a
 * tombstone. cb may be NULL. Never blocks: on a full local queue it polls
 * and retries. Returns 0, or a negative error (then cb never fires). */
int sl_producer_send(sl_producer *p, const char *topic, const void *key, size_t klen,
                     const void *val, size_t vlen, const sl_header *hdrs, size_t nhdrs,
                     sl_produce_cb cb, void *arg);
void sl_producer_poll(sl_producer *p, int timeout_ms);
/* Wait until nothing is outstanding or timeout; returns 0 or SL_ETIMEOUT. */
int sl_producer_flush(sl_producer *p, int timeout_ms);
size_t sl_producer_outstanding(const sl_producer *p);
/* The uv_poll handle is closed; with a loop, run it once more to let the
 * close callback fire before freeing the loop. Unacknowledged records are
 * lost: flush first. */
void sl_producer_free(sl_producer *p);
rd_kafka_t *sl_producer_handle(sl_producer *p);

/* ---- consumer ---- */
typedef struct sl_consumer sl_consumer;
typedef struct sl_record sl_record;

struct sl_record {
    rd_kafka_message_t *msg;    /* owned by the record until sl_record_done() */
    const char *topic;
    int32_t partition;
    int64_t offset;
    /* private */
    struct sl_part *part__;
    uint64_t seq__;
    sl_record *next__;
};

typedef void (*sl_record_cb)(void *arg, sl_record *rec);
typedef void (*sl_drained_cb)(void *arg);

/* What on_assign is told of a new assignment; valid during the call. */
typedef struct sl_assignment {
    const int32_t *partitions;
    /* The group's committed offset of each partition when it was assigned:
     * SL_OFFSET_NONE where the group had none (no owner before this one),
     * SL_OFFSET_UNKNOWN where the broker did not say. */
    const int64_t *committed;
    size_t n;
    rd_kafka_t *rk;             /* the consumer's handle, to ask the broker
                                 * during the call (sl_kafka_watermarks()) */
} sl_assignment;
#define SL_OFFSET_NONE (-1)
#define SL_OFFSET_UNKNOWN (-2)

typedef struct sl_consumer_opts {
    const char *group;          /* consumer group id */
    const char **topics;        /* full names */
    size_t n_topics;
    uint32_t max_inflight;      /* 0: 10000 */
    sl_record_cb on_record;     /* loop thread */
    void *arg;
    bool from_end;              /* a new group starts at the end (analytics tails) */
    /* When set, called on the consumer thread with each new assignment
     * (its partitions and the group's committed offsets) before any record
     * of them is fetched (they are assigned when it returns): a stage
     * restores what it keeps about them. It may block, briefly: the
     * group's rebalance waits for it. */
    void (*on_assign)(void *arg, const sl_assignment *a);
    /* When set, called on the consumer thread when the assignment is
     * revoked, before the offsets are committed: a stage may wait, briefly,
     * for work under way to finish, so that its offsets are committed (and
     * what it recorded is visible) before the next owner starts. */
    void (*on_revoke)(void *arg);
    bool no_commit;             /* never commit: a live tail whose group keeps no
                                 * offsets, so it leaves nothing behind (no lag
                                 * to alert on) once its member is gone */
    /* When set, a partition this group has no committed offset for starts
     * where that other group had committed when the consumer was created
     * (at the beginning of a partition it had none for; as from_end says
     * when the group has no offset at all): a live tail that picks up what
     * a durable group has not read yet. */
    const char *start_group;
    /* With no_commit: a group of no members where this consumer commits
     * the offsets it has finished (sl_record_done()), every commit
     * interval and when it stops. A partition it holds
     * an offset for starts at the lower of that offset and start_group's
     * (else as start_group says): what a SIGKILLed incarnation of the same
     * name had read but not finished is read again. */
    const char *mark_group;
} sl_consumer_opts;

sl_consumer *sl_consumer_new(const sl_config *cfg, uv_loop_t *loop, const sl_consumer_opts *o,
                             char **err);
/* Everything produced for rec is acknowledged: advance the stored offset.
 * Frees rec and its message. Loop thread. */
void sl_record_done(sl_record *rec);
/* Give rec back undone (a drain hands back work it will not start): its
 * offset, and so every later one of its partition, stays unstored, so the
 * next owner repeats it. Frees rec and its message. Loop thread. */
void sl_record_release(sl_record *rec);
/* A record reduced to its place in its partition (16 octets), for a stage
 * that holds very many records for long and has copied what it needs:
 * librdkafka's per-message state is several hundred octets and pins the
 * fetch buffer the payload lives in. sl_record_to_mark() frees rec and its
 * message; the mark then stands in for it and is finished exactly once,
 * with sl_mark_done() or sl_mark_release() (same meaning as for records).
 * Loop thread, except sl_mark_revoked() (any thread). */
typedef struct sl_mark {
    struct sl_part *part__;
    uint64_t seq__;
} sl_mark;

void sl_record_to_mark(sl_record *rec, sl_mark *mark);
void sl_mark_done(sl_mark *mark);
void sl_mark_release(sl_mark *mark);
bool sl_mark_revoked(const sl_mark *mark);
/* The mark's topic (valid until it is finished) and partition. */
const char *sl_mark_topic(const sl_mark *mark, int32_t *partition);
/* True once rec's partition was revoked from this consumer: its next owner
 * reads it again, so work not yet handed on is better released than done
 * (a duplicate avoided). Any thread. */
bool sl_record_revoked(const sl_record *rec);
/* Pause or resume fetching of one topic (e.g. a retry topic whose head is
 * not yet due). Loop thread; the consumer thread applies it. */
void sl_consumer_pause_topic(sl_consumer *c, const char *topic, bool pause);
/* Stop fetching; when every record handed out is done, commit, close the
 * consumer and call cb on the loop thread. Idempotent. */
void sl_consumer_stop(sl_consumer *c, sl_drained_cb cb, void *arg);
size_t sl_consumer_inflight(const sl_consumer *c);
bool sl_consumer_assigned(const sl_consumer *c); /* has received an assignment */
/* After stop's callback. */
void sl_consumer_free(sl_consumer *c);

#endif
