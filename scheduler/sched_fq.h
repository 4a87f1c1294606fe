/*
 * fq - the queue of one site in shape: a FIFO per priority (transactional,
 * normal, bulk) inside each flow, and round robin across flows.
 *
 * A flow is what a per-tenant or per-campaign limit can hold back: the
 * jobs of one (tenant, campaign). sched_fq_next() returns the oldest item
 * of the highest priority present among the flows the caller's `ok`
 * callback admits, trying the flows in round-robin order from the one
 * after the last flow served (sched_fq_take()): a flow over its cap is
 * skipped and never delays another flow's jobs, and flows with work share
 * the site's sends in turn.
 *
 * Items are embedded in the caller's structs; the fq owns its flows (freed
 * when they empty) and a flow's `data` (freed then with the queue's
 * free_data callback when set, else free()).
 *
 * Pure; unit tested in tests/unit/test_sched_fq.c. One thread.
 */
#ifndef SLUICE_SCHED_FQ_H
#define SLUICE_SCHED_FQ_H

#include <stdbool.h>
#include <stddef.h>

#include "map.h"

#define SCHED_FQ_NPRIO 3

typedef struct sched_fq_flow sched_fq_flow;

typedef struct sched_fq_item {
    struct sched_fq_item *prev, *next;
    sched_fq_flow *flow;
    int prio; /* 0 highest */
} sched_fq_item;

struct sched_fq_flow {
    char *key;
    sched_fq_item *head[SCHED_FQ_NPRIO], *tail[SCHED_FQ_NPRIO];
    size_t n;
    void *data;                     /* the caller's; free()d with the flow */
    sched_fq_flow *prev, *next;     /* ring of flows */
};

typedef struct sched_fq {
    sl_map flows;                /* key -> sched_fq_flow */
    sched_fq_flow *cursor;          /* next flow to try first; NULL: empty */
    size_t n;
    size_t n_prio[SCHED_FQ_NPRIO];
    void (*free_data)(void *arg, void *data); /* NULL: free() */
    void *free_arg;
} sched_fq;

typedef bool (*sched_fq_ok)(void *arg, sched_fq_flow *f);

void sched_fq_init(sched_fq *q);
/* Frees flows; the queue must hold no items any more. */
void sched_fq_free(sched_fq *q);
/* Append it (prio 0..2) to the flow named key; returns the flow. */
sched_fq_flow *sched_fq_push(sched_fq *q, const char *key, sched_fq_item *it, int prio);
/* The next item to serve, or NULL (nothing admitted). ok NULL admits all. */
sched_fq_item *sched_fq_next(sched_fq *q, sched_fq_ok ok, void *arg);
/* Unlink a served item: the round robin moves on past its flow. */
void sched_fq_take(sched_fq *q, sched_fq_item *it);
/* Unlink without moving the round robin (parking). */
void sched_fq_remove(sched_fq *q, sched_fq_item *it);
/* The item to park first: the newest of the lowest priority present, from
 * the flow holding the most items; NULL when empty. */
sched_fq_item *sched_fq_last(sched_fq *q);

#endif
