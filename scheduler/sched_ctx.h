/*
 * sched - what the three scheduler stages share: the context (config,
 * loop, producer, topic names, resolver, suppressions) and the per-record
 * acknowledgement tracker.
 *
 * sched_op ties one consumed record to everything produced for it: the
 * record is released with sl_record_done() only when every send started
 * through sched_op_send()/sched_op_cb has been acknowledged and the owner
 * dropped its own hold (sched_op_release()). A send Kafka can never accept
 * (SL_ETOOBIG) is handed to the DLQ with its reason and a REJECTED event
 * (sched_op_send()); the record is then released, since retrying it
 * forever would stall its partition.
 *
 * Every function here runs on the scheduler's loop thread.
 */
#ifndef SLUICE_SCHED_H
#define SLUICE_SCHED_H

#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "kafka.h"
#include "wire.h"

typedef struct sched_suppress sched_suppress;
typedef struct sched_control sched_control;
typedef struct sched_classify sched_classify;
typedef struct sched_shape sched_shape;
typedef struct sched_retry sched_retry;
typedef struct sched_feedback sched_feedback;
typedef struct sl_dns sl_dns;
typedef struct sched_sites sched_sites;

typedef struct sched_ctx {
    const sl_config *cfg;
    uv_loop_t *loop;
    sl_producer *prod;
    sl_dns *dns;                 /* NULL: no MX lookups (sites by domain) */
    sched_sites *sites;          /* the config's site patterns, indexed */
    char *t_jobs, *t_sited, *t_dispatch, *t_events, *t_suppressions, *t_dlq, *t_state;
    char **t_retry;              /* one per cfg->retry.delays_ms */
    size_t n_retry;
    sched_suppress *supp;        /* NULL when classify is not run */
    sched_shape *shape;          /* NULL when shape is not run */
    sched_control *control;      /* campaign / site controls; NULL when shape is not run */
    bool draining;
} sched_ctx;

void sched_ctx_init(sched_ctx *ctx, const sl_config *cfg, uv_loop_t *loop, sl_producer *prod);
void sched_ctx_free(sched_ctx *ctx);
/* The retry topic for a wait of wait_ms: the smallest delay at least that
 * long, else the longest. *delay_ms gets its delay. */
const char *sched_ctx_retry_topic(const sched_ctx *ctx, int64_t wait_ms, int64_t *delay_ms);

/* The record header the retry stage puts on each job it republishes to the
 * jobs topic, holding the job's attempt count. classify keeps the attempt
 * of a record that carries it (and it says the same attempt) and resets it
 * to 0 on any other: a producer's job starts at 0 whatever it says. It
 * marks, it does not authenticate: whoever may write the jobs topic with
 * headers can forge it, and so choose no more than its own retry delays. */
#define SCHED_RETRY_HEADER "sluice-retry"

typedef struct sched_op {
    const struct sched_ctx *ctx;
    const char *stage; /* "classify", "shape", "retry", "feedback": static */
    sl_record *rec;    /* or, for a job shape held, its mark */
    sl_mark mark;
    void *owner;       /* freed with the op: the allocation holding copy */
    const void *copy;  /* a mark's job bytes, for the DLQ should a send fail */
    size_t copy_len;
    int pending;
    bool failed;       /* a send failed: the record went to the DLQ instead */
} sched_op;

/* A hold of 1 for the caller. */
sched_op *sched_op_new(const sched_ctx *ctx, const char *stage, sl_record *rec);
/* The same for a record reduced to its mark (taken over from *mark), with
 * the job's bytes job[0 .. job_len) inside owner, which the op takes over
 * (free()d with it), so that a send that fails can still put the job on
 * the DLQ. sched_op_reject() needs the record: not for these. */
sched_op *sched_op_new_mark(const sched_ctx *ctx, const char *stage, sl_mark *mark, void *owner,
                            const void *job, size_t job_len);
/* The produce callback to pass with the op as arg, after sched_op_hold(). */
void sched_op_hold(sched_op *op);
void sched_op_cb(void *arg, int err);
void sched_op_release(sched_op *op);

/* Produce with the op tracking the acknowledgement. When it fails, at once
 * or in its delivery report (a record Kafka can never take), the record
 * the op stands for is not committed silently: it goes to the DLQ with the
 * reason, a REJECTED event says so, and sluice_scheduler_handoff_failures_total
 * counts it. hdrs may be NULL. */
int sched_op_send(sched_op *op, const char *topic, const char *key, const void *val, size_t vlen,
                  const sl_header *hdrs, size_t nhdrs);
/* Publish an event for the op's record. */
int sched_op_event(sched_op *op, const sched_ctx *ctx, const sl_event *e);
/* DLQ the record's raw bytes with reason, and publish a REJECTED event
 * (job may be NULL when it did not decode). */
void sched_op_reject(sched_op *op, const sched_ctx *ctx, const sl_job *job, const char *stage,
                     const char *reason);

#endif
