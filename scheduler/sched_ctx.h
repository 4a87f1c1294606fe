/*
 * sched - what the three scheduler stages share: the context (config,
 * loop, producer, topic names, resolver, suppressions) and the per-record
 * acknowledgement tracker.
 *
 * sched_op ties one consumed record to everything produced for it: the
 * record is released with sl_record_done() only when every send started
 * through sched_op_send()/sched_op_cb has been acknowledged and the owner
 * dropped its own hold (sched_op_release()). A send Kafka can never accept
 * (SL_ETOOBIG) is logged and counted; the record is released anyway, since
 * retrying it forever would stall its partition.
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
    char *t_jobs, *t_sited, *t_dispatch, *t_events, *t_suppressions, *t_dlq;
    char **t_retry;              /* one per cfg->retry.delays_ms */
    size_t n_retry;
    sched_suppress *supp;        /* NULL when classify is not run */
    sched_shape *shape;          /* NULL when shape is not run */
    bool draining;
} sched_ctx;

void sched_ctx_init(sched_ctx *ctx, const sl_config *cfg, uv_loop_t *loop, sl_producer *prod);
void sched_ctx_free(sched_ctx *ctx);
/* The retry topic for a wait of wait_ms: the smallest delay at least that
 * long, else the longest. *delay_ms gets its delay. */
const char *sched_ctx_retry_topic(const sched_ctx *ctx, int64_t wait_ms, int64_t *delay_ms);

typedef struct sched_op {
    sl_record *rec;   /* or, for a job shape held, its mark */
    sl_mark mark;
    int pending;
} sched_op;

/* A hold of 1 for the caller. */
sched_op *sched_op_new(sl_record *rec);
/* The same for a record reduced to its mark (taken over from *mark).
 * sched_op_reject() needs the record: not for these. */
sched_op *sched_op_new_mark(sl_mark *mark);
/* The produce callback to pass with the op as arg, after sched_op_hold(). */
void sched_op_hold(sched_op *op);
void sched_op_cb(void *arg, int err);
void sched_op_release(sched_op *op);

/* Produce with the op tracking the acknowledgement. */
int sched_op_send(sched_op *op, sl_producer *p, const char *topic, const char *key,
                  const void *val, size_t vlen);
/* Publish an event for the op's record. */
int sched_op_event(sched_op *op, const sched_ctx *ctx, const sl_event *e);
/* DLQ the record's raw bytes with reason, and publish a REJECTED event
 * (job may be NULL when it did not decode). */
void sched_op_reject(sched_op *op, const sched_ctx *ctx, const sl_job *job, const char *stage,
                     const char *reason);

#endif
