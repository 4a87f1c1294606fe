/*
 * sched_shape_int - what the modules of shape (sched_shape.h) share; only
 * scheduler/sched_shape*.c include it.
 *
 *   sched_shape.c        the public API: new (the consumer, the timers,
 *                        the metrics' help), ready, buffered, stop, free
 *   sched_shape_pair.c   sites and their (site, IP) pairs: rate, backoff and
 *                        their metrics and SHAPING events; the feedback a
 *                        pair gets (sched_shape_feedback(),
 *                        sched_shape_down()); the tick and the idle sweep
 *   sched_shape_queue.c  the held jobs: a site's queue, parking on retry,
 *                        EXPIRED and CANCELLED, the controls in force
 *                        (shape__control(), shape__control_changed()), the
 *                        max_buffered bound
 *   sched_shape_pump.c   a sited record in (shape__on_record()) and a
 *                        Dispatch out: the pump of a site, its timer
 *   sched_shape_state.c  the site's state on the state topic: written by
 *                        its owner, read back on an assignment
 *                        (shape__on_assign()) and on start
 *                        (shape__restore_start()), with today's warm-up
 *                        counts from the events topic
 *
 * Structures: the shaper holds a map of sites; a site holds its queues and
 * a map of pairs, one per source IP that sent (or was told about) it. The
 * pair is the one struct per (site, IP) scope with every limit and piece
 * of feedback state: token bucket, AIMD backoff, warm-up count, weighted
 * round robin position.
 *
 * Threads: everything here runs on the scheduler's loop thread, but for
 * shape__on_assign() (the sited consumer's thread: it hands what it read
 * over under pend_mu) and the restore's work (a pool thread: it touches
 * only its wrestore until restore_done() on the loop).
 */
#ifndef SLUICE_SCHED_SHAPE_INT_H
#define SLUICE_SCHED_SHAPE_INT_H

#include "sched_shape.h"
#include "sched_backoff.h"
#include "sched_bucket.h"
#include "sched_fq.h"
#include "sched_limit.h"
#include "map.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* How often the dirty sites' state is written. */
#define STATE_FLUSH_MS 100
/* The shaper's consumer group, on the sited topic. */
#define SCHED_SHAPE_GROUP "sluice-shape"

typedef struct spair {
    char *site, *ip;
    const sl_source *src;
    sched_bucket bucket;
    sched_backoff bo;
    double cfg_rate, cfg_burst;
    int64_t day;
    uint32_t sent_today;
    int64_t swrr;
    char *labels;          /* site="...",source="..." */
    sl_series *dispatched; /* sluice_shape_dispatched_total{labels} */
    char *key;             /* "ip/site": the dispatch key */
    sl_buf head;           /* the pair's own Dispatch fields, encoded (pair_head()) */
    const sl_source *head_src; /* the source head was encoded for */
    int64_t used_ms;       /* last looked at by a job, a pump or feedback */
    int64_t shown_until;   /* the suspension end last logged and published */
    const char *cause;     /* of the sluice_shape_suspended_until_seconds series set */
    int64_t bo_at;         /* wall ms of the last reply that changed bo; 0: none */
} spair;

/* A held job. A million of them can wait behind one slow site, so it is
 * kept compact (72 octets and the job, one allocation): the Job as
 * encoded on sited (it goes into the Dispatch as it is, never decoded
 * again), what was looked up for it in the config when it arrived (the
 * config does not change), its expiry, and the record reduced to its
 * mark. */
typedef struct sjob {
    sched_fq_item it; /* first: an item is its sjob */
    sl_mark mark;
    int64_t expires_ms; /* wall ms (sched_retry_expiry()); 0: never */
    uint32_t len;     /* the encoded Job: data[0 .. len) */
    uint32_t pool;    /* index in cfg->pools */
    uint32_t route;   /* index in cfg->routes + 1; 0: none */
    bool repeat;      /* within the last owner's window (Dispatch.repeat) */
    unsigned char data[];
} sjob;

/* A flow's data: the pool its jobs draw their IPs from, and the
 * tenant/campaign limit buckets they are under. */
typedef struct sflow_limits {
    uint32_t pool; /* index in cfg->pools */
    size_t n;
    sched_bucket *b[SCHED_LIMITS_MAX];
} sflow_limits;

typedef struct ssite {
    struct sched_shape *s;
    char *name;
    const sl_shaping *shp;
    sched_fq fq;       /* per (tenant, campaign) flow, per priority */
    size_t queued;
    sl_map pairs;
    uv_timer_t timer;
    int64_t timer_at;  /* wall ms the timer fires; 0: not armed */
    int64_t used_ms;   /* last job or feedback */
    bool dirty;        /* its state changed since it was last written */
    /* The tenant / campaign limit buckets its jobs took tokens from, named
     * "limit\x1ftenant\x1fcampaign" -> slim: its state record carries them
     * until they are full again (and swept). */
    sl_map lims;
} ssite;

typedef struct slim {
    uint32_t limit;
    char *tenant, *campaign;
} slim;

struct sched_shape {
    sched_ctx *ctx;
    sl_consumer *cons;
    sl_map sites;
    sched_limits limits;
    /* The feedback record whose backoff change is being written (the
     * state write holds it until acknowledged); NULL otherwise. */
    sched_op *write_op;
    size_t buffered;
    uv_timer_t tick;
    bool stopping;
    int closing;       /* site timers still closing */
    struct wrestore *restore; /* warm-up counts being read; NULL: done */
    bool freeing;             /* sched_shape_free() was called */
    char **routes;            /* cfg->routes as a Dispatch names them, "host:port" */
    sl_buf out;               /* the Dispatch being encoded */
    sl_series *m_buffered;    /* sluice_shape_buffered */
    sl_series *m_sites;       /* sluice_shape_sites */
    sl_series *m_pairs;       /* sluice_shape_pairs */
    uv_timer_t flush;         /* writes the dirty sites' state every 100 ms */
    sl_buf state;             /* the SiteState being encoded */
    /* Site states read for a new assignment on the consumer thread
     * (shape__on_assign()), applied on the loop before any of its records. */
    pthread_mutex_t pend_mu;
    atomic_bool has_pend;
    sl_map pend;           /* site -> Sluice__V1__SiteState *; under pend_mu */
    unsigned char *pend_parts; /* the new assignment (1 per partition); under pend_mu */
    int64_t *pend_end;         /* each assigned partition's end at assignment; under pend_mu */
    int32_t pend_n_parts;
    /* The sited partitions this shaper owns, as of the last assignment
     * taken: only the owner of a site writes its state (every scheduler
     * hears every site's feedback). n_parts 0: not known, write. */
    unsigned char *parts;
    int32_t n_parts;
    /* The repeat window of each owned partition (Dispatch.repeat): from
     * the first offset read after the assignment (the committed one),
     * rep_from[p] (-1 until read), to the partition's end at assignment,
     * rep_end[p], at most scheduler.max_buffered records: what the last
     * owner may have dispatched without committing it. */
    int64_t *rep_from, *rep_end;
    size_t n_pairs;           /* (site, IP) pairs held */
    int64_t next_sweep;       /* when idle state is next looked for */
};

typedef struct wrestore {
    uv_work_t req;
    sched_shape *s;         /* NULL: the shaper was freed meanwhile */
    const sl_config *cfg;
    char *topic;
    sl_map warm;         /* ip -> (void *)1 */
    sl_map counts;       /* "site\x1fip" -> (uintptr_t) count */
    sl_map seen;         /* "job\x1fattempt\x1fsite\x1fip" */
    char *state_topic;
    sl_map states;       /* site -> Sluice__V1__SiteState *, the latest */
    size_t n_states;        /* records read */
    int64_t since_ms;
    size_t events;
    atomic_bool cancel;
} wrestore;

/* Why a job is parked: the reason label of sluice_shape_parked_total. */
enum { PARK_OVER_BOUND, PARK_POOL_UNUSABLE, PARK_STOPPING, PARK_HELD, PARK_NREASONS };
extern const char *const shape__park_reasons[PARK_NREASONS];

/* sched_shape_pair.c */
void shape__site_note_limit(ssite *site, uint32_t limit, const char *tenant,
                            const char *campaign);
void shape__slim_free(slim *m);
void shape__pair_publish(sched_shape *s, spair *p, const char *why);
void shape__pair_apply_rate(spair *p, int64_t now);
spair *shape__pair_get(ssite *site, const char *ip, const sl_source *src);
void shape__pair_tick(sched_shape *s, spair *p, int64_t now);
ssite *shape__site_get(sched_shape *s, const char *name);
void shape__site_close_cb(uv_handle_t *h);
void shape__tick_cb(uv_timer_t *t);

/* sched_shape_queue.c */
char *shape__sjob_id(const sjob *j);
void shape__q_push(ssite *site, sjob *j, const char *tenant, const char *campaign, int prio);
void shape__q_unlink(ssite *site, sjob *j, bool served);
void shape__sjob_free(sjob *j);
void shape__park(ssite *site, sjob *j, int64_t wait_ms, int reason);
void shape__expire(ssite *site, sjob *j, int64_t now);
bool shape__control(ssite *site, sjob *j, const char *tenant, const char *campaign,
                    int64_t created_ms);
void shape__enforce_bound(sched_shape *s);
void shape__control_changed(void *arg);

/* sched_shape_pump.c */
void shape__pump(ssite *site, bool force);
void shape__on_record(void *arg, sl_record *rec);

/* sched_shape_state.c */
void shape__site_write(sched_shape *s, ssite *site);
void shape__flush_cb(uv_timer_t *t);
int shape__state_free_cb(void *arg, const char *key, void *val);
void shape__on_assign(void *arg, const sl_assignment *a);
void shape__state_take_pending(sched_shape *s);
void shape__restore_start(sched_shape *s);

#endif
