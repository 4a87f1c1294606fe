/*
 * sched_fq - see sched_fq.h.
 */
#include "sched_fq.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

void sched_fq_init(sched_fq *q)
{
    memset(q, 0, sizeof *q);
    sl_map_init(&q->flows);
}

static void data_free(sched_fq *q, sched_fq_flow *f)
{
    if (f->data && q->free_data)
        q->free_data(q->free_arg, f->data);
    else
        free(f->data);
}

static int flow_free_cb(void *arg, const char *key, void *val)
{
    (void)key;
    sched_fq_flow *f = val;
    data_free(arg, f);
    free(f->key);
    free(f);
    return 0;
}

void sched_fq_free(sched_fq *q)
{
    SL_ASSERT(q->n == 0);
    sl_map_each(&q->flows, flow_free_cb, q);
    sl_map_free(&q->flows);
    q->cursor = NULL;
}

sched_fq_flow *sched_fq_push(sched_fq *q, const char *key, sched_fq_item *it, int prio)
{
    sched_fq_flow *f = sl_map_get(&q->flows, key);
    if (!f) {
        f = xcalloc(1, sizeof *f);
        f->key = xstrdup(key);
        sl_map_put(&q->flows, key, f);
        /* A new flow joins the ring just before the cursor: it is served
         * after every flow already waiting has had its turn. */
        if (!q->cursor) {
            f->prev = f->next = f;
            q->cursor = f;
        } else {
            f->next = q->cursor;
            f->prev = q->cursor->prev;
            f->prev->next = f;
            q->cursor->prev = f;
        }
    }
    if (prio < 0)
        prio = 0;
    if (prio >= SCHED_FQ_NPRIO)
        prio = SCHED_FQ_NPRIO - 1;
    it->prio = prio;
    it->flow = f;
    it->next = NULL;
    it->prev = f->tail[prio];
    if (f->tail[prio])
        f->tail[prio]->next = it;
    else
        f->head[prio] = it;
    f->tail[prio] = it;
    f->n++;
    q->n++;
    q->n_prio[prio]++;
    return f;
}

sched_fq_item *sched_fq_next(sched_fq *q, sched_fq_ok ok, void *arg)
{
    if (!q->cursor)
        return NULL;
    /* Ask ok() at most once per flow per call: it may be costly, and the
     * caller may record when a refused flow could go. */
    size_t nflows = q->flows.count;
    char stackv[64];
    char *verdict = nflows <= sizeof stackv ? stackv : xcalloc(nflows, 1);
    memset(verdict, 0, nflows <= sizeof stackv ? sizeof stackv : nflows);
    sched_fq_item *hit = NULL;
    for (int k = 0; k < SCHED_FQ_NPRIO && !hit; k++) {
        if (!q->n_prio[k])
            continue;
        sched_fq_flow *f = q->cursor;
        size_t i = 0;
        do {
            if (f->head[k]) {
                if (!verdict[i])
                    verdict[i] = !ok || ok(arg, f) ? 1 : 2;
                if (verdict[i] == 1) {
                    hit = f->head[k];
                    break;
                }
            }
            f = f->next;
            i++;
        } while (f != q->cursor && i < nflows);
    }
    if (verdict != stackv)
        free(verdict);
    return hit;
}

static void unlink_item(sched_fq *q, sched_fq_item *it, bool advance)
{
    sched_fq_flow *f = it->flow;
    int k = it->prio;
    if (it->prev)
        it->prev->next = it->next;
    else
        f->head[k] = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        f->tail[k] = it->prev;
    it->prev = it->next = NULL;
    it->flow = NULL;
    f->n--;
    q->n--;
    q->n_prio[k]--;
    if (advance)
        q->cursor = f->next;
    if (f->n)
        return;
    /* An empty flow leaves the ring and the map. */
    if (f->next == f) {
        q->cursor = NULL;
    } else {
        f->prev->next = f->next;
        f->next->prev = f->prev;
        if (q->cursor == f)
            q->cursor = f->next;
    }
    sl_map_del(&q->flows, f->key);
    data_free(q, f);
    free(f->key);
    free(f);
}

void sched_fq_take(sched_fq *q, sched_fq_item *it)
{
    unlink_item(q, it, true);
}

void sched_fq_remove(sched_fq *q, sched_fq_item *it)
{
    unlink_item(q, it, false);
}

sched_fq_item *sched_fq_last(sched_fq *q)
{
    if (!q->cursor)
        return NULL;
    int k = SCHED_FQ_NPRIO - 1;
    while (k > 0 && !q->n_prio[k])
        k--;
    sched_fq_item *best = NULL;
    size_t best_n = 0;
    sched_fq_flow *f = q->cursor;
    do {
        if (f->tail[k] && (!best || f->n > best_n)) {
            best = f->tail[k];
            best_n = f->n;
        }
        f = f->next;
    } while (f != q->cursor);
    return best;
}
