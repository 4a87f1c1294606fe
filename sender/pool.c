/*
 * pool - see pool.h.
 */
#include "pool.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct qent {
    snd_txn *t;
    snd_txn_cb done;
    struct qent *next;
} qent;

typedef struct psess {
    snd_session *s;
    struct snd_pool *pool;
    bool idle;
    bool ready_once;
    qent *cur;
} psess;

typedef struct snd_pool {
    char *key;
    snd_pools *owner;
    /* the target, with owned strings */
    snd_target tg;
    char *mx_host, *ip, *source_ip, *ehlo, *socks5;
    uint32_t max_conn, max_msgs;
    qent *head, *tail;
    size_t n_queued;
    psess **sess;
    size_t n_sess, cap_sess;
    bool no_tls;        /* the opportunistic handshake failed here once */
    struct snd_pool *next;
} snd_pool;

struct snd_pools {
    uv_loop_t *loop;
    snd_pool *pools;
    size_t n_conn;
};

static void pool_kick(snd_pool *p);

static void labels_source(const snd_pool *p, char *out, size_t n)
{
    snprintf(out, n, "source=\"%s\"", p->source_ip ? p->source_ip : "");
}

/* ---- session callbacks ---- */

static void take_next(psess *ps)
{
    snd_pool *p = ps->pool;
    if (!snd_session_can_send(ps->s)) {
        /* Closing (a 421, an idle timeout): on_closed removes it soon. */
        ps->idle = false;
        return;
    }
    if (snd_session_txns(ps->s) >= p->max_msgs) {
        ps->idle = false;
        snd_session_quit(ps->s);
        return;
    }
    qent *q = p->head;
    if (!q) {
        ps->idle = true;
        return;
    }
    p->head = q->next;
    if (!p->head)
        p->tail = NULL;
    p->n_queued--;
    ps->idle = false;
    ps->cur = q;
    snd_session_send(ps->s, q->t);
}

static void on_ready(void *arg, snd_session *s)
{
    psess *ps = snd_session_data(s);
    (void)arg;
    if (!ps->ready_once) {
        ps->ready_once = true;
        char l[128];
        labels_source(ps->pool, l, sizeof l);
        sl_metric_inc("sluice_sender_connections_total", l, 1);
    }
    take_next(ps);
}

static void on_txn_done(void *arg, snd_session *s, snd_txn *t)
{
    psess *ps = snd_session_data(s);
    (void)arg;
    qent *q = ps->cur;
    ps->cur = NULL;
    SL_ASSERT(q && q->t == t);
    q->done(t);
    free(q);
}

static void fail_queue(snd_pool *p, const snd_reply *why)
{
    qent *q = p->head;
    p->head = p->tail = NULL;
    p->n_queued = 0;
    while (q) {
        qent *n = q->next;
        snd_txn_reset(q->t);
        q->t->session_failed = true;
        snd_reply_copy(&q->t->session_reply, why);
        q->done(q->t);
        free(q);
        q = n;
    }
}

static void on_closed(void *arg, snd_session *s, const snd_reply *why, bool established)
{
    psess *ps = snd_session_data(s);
    snd_pool *p = ps->pool;
    (void)arg;
    for (size_t i = 0; i < p->n_sess; i++)
        if (p->sess[i] == ps) {
            p->sess[i] = p->sess[--p->n_sess];
            break;
        }
    p->owner->n_conn--;
    char l[128];
    labels_source(p, l, sizeof l);
    sl_metric_add("sluice_sender_connections_open", l, -1);
    bool tls_failed = snd_session_tls_failed(s);
    free(ps);
    if (why)
        sl_info("smtp session %s:%u from %s ended: %s", p->ip, p->tg.port,
                p->source_ip ? p->source_ip : "-", why->text);
    if (!established && why) {
        if (tls_failed && p->tg.tls == SL_TLS_OPPORTUNISTIC && !p->no_tls) {
            p->no_tls = true;
            pool_kick(p);
            return;
        }
        if (p->n_sess == 0) {
            char fl[160];
            snprintf(fl, sizeof fl, "source=\"%s\",result=\"failed\"",
                     p->source_ip ? p->source_ip : "");
            sl_metric_inc("sluice_sender_connections_total", fl, 1);
            fail_queue(p, why);
            return;
        }
    }
    pool_kick(p);
}

static const snd_session_cbs session_cbs = {NULL, on_ready, on_txn_done, on_closed};

/* ---- pools ---- */

static void pool_kick(snd_pool *p)
{
    for (size_t i = 0; i < p->n_sess && p->head; i++)
        if (p->sess[i]->idle)
            take_next(p->sess[i]);
    size_t opening = 0;
    for (size_t i = 0; i < p->n_sess; i++)
        if (!p->sess[i]->ready_once)
            opening++;
    while (p->n_queued > opening && p->n_sess < p->max_conn) {
        psess *ps = xcalloc(1, sizeof *ps);
        ps->pool = p;
        if (p->n_sess == p->cap_sess) {
            p->cap_sess = p->cap_sess ? p->cap_sess * 2 : 4;
            p->sess = xrealloc(p->sess, p->cap_sess * sizeof *p->sess);
        }
        p->sess[p->n_sess++] = ps;
        p->owner->n_conn++;
        opening++;
        char l[128];
        labels_source(p, l, sizeof l);
        sl_metric_add("sluice_sender_connections_open", l, 1);
        snd_target tg = p->tg;
        if (p->no_tls)
            tg.tls = SL_TLS_DISABLED;
        /* snd_session_new may fail synchronously and call on_closed later
         * (from the close callback), so the psess must be in place first. */
        snd_session *s = snd_session_new(p->owner->loop, &tg, &session_cbs);
        ps->s = s;
        snd_session_set_data(s, ps);
    }
}

snd_pools *snd_pools_new(uv_loop_t *loop)
{
    snd_pools *ps = xcalloc(1, sizeof *ps);
    ps->loop = loop;
    return ps;
}

static char *dupnull(const char *s)
{
    return s && *s ? xstrdup(s) : NULL;
}

void snd_pools_submit(snd_pools *ps, const snd_target *tg, uint32_t max_conn, uint32_t max_msgs,
                      snd_txn *t, snd_txn_cb done)
{
    char *key = xasprintf("%s|%s|%s|%u|%d", tg->source_ip ? tg->source_ip : "",
                          tg->socks5 ? tg->socks5 : "", tg->ip, tg->port, (int)tg->tls);
    snd_pool *p;
    for (p = ps->pools; p; p = p->next)
        if (!strcmp(p->key, key))
            break;
    if (!p) {
        p = xcalloc(1, sizeof *p);
        p->key = key;
        key = NULL;
        p->owner = ps;
        p->tg = *tg;
        p->tg.mx_host = p->mx_host = dupnull(tg->mx_host);
        p->tg.ip = p->ip = xstrdup(tg->ip);
        p->tg.source_ip = p->source_ip = dupnull(tg->source_ip);
        p->tg.ehlo = p->ehlo = dupnull(tg->ehlo);
        p->tg.socks5 = p->socks5 = dupnull(tg->socks5);
        p->next = ps->pools;
        ps->pools = p;
    }
    free(key);
    /* The latest Dispatch carries the current limits. */
    p->max_conn = max_conn ? max_conn : 1;
    p->max_msgs = max_msgs ? max_msgs : 100;
    p->tg.timeouts = tg->timeouts;
    qent *q = xcalloc(1, sizeof *q);
    q->t = t;
    q->done = done;
    if (p->tail)
        p->tail->next = q;
    else
        p->head = q;
    p->tail = q;
    p->n_queued++;
    pool_kick(p);
}

size_t snd_pools_connections(const snd_pools *ps)
{
    return ps->n_conn;
}

void snd_pools_quit_idle(snd_pools *ps)
{
    for (snd_pool *p = ps->pools; p; p = p->next) {
        p->max_msgs = 0; /* busy ones QUIT after their transaction */
        for (size_t i = 0; i < p->n_sess; i++)
            if (p->sess[i]->idle) {
                p->sess[i]->idle = false;
                snd_session_quit(p->sess[i]->s);
            }
    }
}

void snd_pools_free(snd_pools *ps)
{
    if (!ps)
        return;
    SL_ASSERT(ps->n_conn == 0);
    snd_pool *p = ps->pools;
    while (p) {
        snd_pool *n = p->next;
        SL_ASSERT(!p->head);
        free(p->key);
        free(p->mx_host);
        free(p->ip);
        free(p->source_ip);
        free(p->ehlo);
        free(p->socks5);
        free(p->sess);
        free(p);
        p = n;
    }
    free(ps);
}

/* ---- pacing ---- */

#define PACER_BUCKETS 1024

typedef struct pace {
    char *key;
    int64_t last;
    struct pace *next;
} pace;

struct snd_pacer {
    pace *b[PACER_BUCKETS];
};

snd_pacer *snd_pacer_new(void)
{
    return xcalloc(1, sizeof(snd_pacer));
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

int64_t snd_pacer_slot(snd_pacer *p, const char *key, int64_t send_at_ms, double rate, int64_t now)
{
    pace **bp = &p->b[fnv1a(key) % PACER_BUCKETS], *e;
    for (e = *bp; e; e = e->next)
        if (!strcmp(e->key, key))
            break;
    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->key = xstrdup(key);
        e->last = INT64_MIN / 2;
        e->next = *bp;
        *bp = e;
    }
    int64_t slot = send_at_ms > now ? send_at_ms : now;
    if (rate > 0) {
        int64_t gap = (int64_t)(1000.0 / rate);
        if (e->last + gap > slot)
            slot = e->last + gap;
    }
    e->last = slot;
    return slot;
}

void snd_pacer_free(snd_pacer *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < PACER_BUCKETS; i++) {
        pace *e = p->b[i];
        while (e) {
            pace *n = e->next;
            free(e->key);
            free(e);
            e = n;
        }
    }
    free(p);
}
