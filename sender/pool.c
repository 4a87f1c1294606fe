/*
 * pool - see pool.h.
 */
#include "pool.h"
#include "map.h"
#include "dest.h"
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

typedef struct snd_share snd_share;

typedef struct snd_pool {
    char *key;
    char *dest_key;     /* snd_dest_key() of the target */
    snd_pools *owner;
    snd_share *share;   /* the (source, site) whose connections it counts in */
    /* the target, with owned strings */
    snd_target tg;
    char *mx_host, *ip, *source_ip, *ehlo, *socks5;
    uint32_t max_conn, max_msgs;
    /* A greeting refused while other connections of the pool work (a
     * receiver limiting connections per client): no more connections than
     * it had then, until limit_until. */
    uint32_t conn_limit;
    int64_t limit_until;
    qent *head, *tail;
    size_t n_queued;
    psess **sess;
    size_t n_sess, cap_sess;
    bool no_tls;        /* the opportunistic handshake failed here ... */
    int64_t no_tls_until; /* ... so plain text until then (monotonic ms) */
    char *no_tls_why;   /* the failure, for the events of plain-text mail */
    int64_t last_used;  /* monotonic ms: submit or a session's end */
} snd_pool;

/* The connections of one (source IP or proxy, site), across every MX
 * address of the site: max_conn caps their sum, so a site with N MX
 * hosts of equal preference (which classify shuffles) still gets at most
 * max_conn connections from one source. Dispatches are keyed `ip/site`
 * and a key always goes to the same worker, so one worker's shares are
 * the sender's. */
struct snd_share {
    char *key;
    uint32_t n_conn;   /* sessions open or opening in all its pools */
    uint32_t max_conn; /* from the latest Dispatch of the site */
    snd_pool **pools;  /* its pools, not owned */
    size_t n_pools, cap_pools;
};

/* Pools are found by key in a hash map (common/map.h), which is also the
 * set of all pools: a sender may talk to 100,000 destinations, so a linear
 * search per submit would be quadratic. */
struct snd_pools {
    uv_loop_t *loop;
    snd_dests *dests;
    sl_map pools;  /* key -> snd_pool, owned */
    sl_map shares; /* key -> snd_share, owned; freed with its last pool */
    size_t n_conn;
    int64_t tls_fallback_ms; /* how long a failed handshake means plain text */
};

static void pool_kick(snd_pool *p);
static void share_kick(snd_share *sh, const snd_pool *except);

/* How long a pool keeps to the connection count a receiver accepted. */
#define CONN_LIMIT_MS 60000

static void labels_source(const snd_pool *p, char *out, size_t n)
{
    snprintf(out, n, "source=\"%s\"", p->source_ip ? p->source_ip : "");
}

/* ---- session callbacks ---- */

/* True when the share has every connection in use and a pool other than
 * p has transactions waiting for one. */
static bool share_wanted(const snd_share *sh, const snd_pool *p)
{
    if (sh->n_conn < sh->max_conn)
        return false;
    for (size_t i = 0; i < sh->n_pools; i++)
        if (sh->pools[i] != p && sh->pools[i]->head)
            return true;
    return false;
}

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
        if (share_wanted(p->share, p)) {
            /* Another MX address of the site waits for a connection. */
            ps->idle = false;
            snd_session_quit(ps->s);
            return;
        }
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
        snd_dest_ok(ps->pool->owner->dests, ps->pool->dest_key, sl_mono_ms());
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

static void fail_queue(snd_pool *p, const snd_result *why)
{
    qent *q = p->head;
    p->head = p->tail = NULL;
    p->n_queued = 0;
    while (q) {
        qent *n = q->next;
        snd_txn_reset(q->t);
        q->t->session_failed = true;
        snd_result_copy(&q->t->session_reply, why);
        q->done(q->t);
        free(q);
        q = n;
    }
}

/* A failure before the session was established that says the destination
 * itself is unreachable or unwilling: the connection failed or timed out,
 * or the greeting was not 220 or never came. Later failures (EHLO, TLS)
 * mean the host is there and talking. */
static bool dest_failure(const snd_result *why)
{
    return why->cond != SL_COND_TLS &&
           (why->stage == SL_STAGE_CONNECT || why->stage == SL_STAGE_GREETING);
}

static void session_closed(snd_session *s, const snd_result *why, bool established)
{
    psess *ps = snd_session_data(s);
    snd_pool *p = ps->pool;
    for (size_t i = 0; i < p->n_sess; i++)
        if (p->sess[i] == ps) {
            p->sess[i] = p->sess[--p->n_sess];
            break;
        }
    p->owner->n_conn--;
    p->share->n_conn--;
    int64_t now = sl_mono_ms();
    p->last_used = now;
    char l[128];
    labels_source(p, l, sizeof l);
    sl_metric_add("sluice_sender_connections_open", l, -1);
    bool tls_failed = snd_session_tls_failed(s);
    free(ps);
    if (why) {
        /* One line per condition and interval, whatever the traffic; each
         * message's own outcome is in its event. */
        char key[512];
        snprintf(key, sizeof key, "smtp-session|%s|%s", p->dest_key, why->reply.raw);
        sl_log_every(SL_LOG_INFO, key, "smtp session %s:%u from %s ended: %s", p->ip, p->tg.port,
                     p->source_ip ? p->source_ip : "-", why->reply.raw);
    }
    if (!established && why) {
        snd_dests *ds = p->owner->dests;
        if (tls_failed && p->tg.tls == SL_TLS_OPPORTUNISTIC && !p->no_tls) {
            snd_dest_ok(ds, p->dest_key, now); /* it greeted us */
            p->no_tls = true;
            p->no_tls_until = now + p->owner->tls_fallback_ms;
            free(p->no_tls_why);
            p->no_tls_why = xasprintf("plain text for %llds after a failed TLS handshake: %s",
                                      (long long)(p->owner->tls_fallback_ms / 1000), why->reply.raw);
            char lk[400];
            snprintf(lk, sizeof lk, "tls-fallback|%s", p->dest_key);
            sl_log_every(SL_LOG_WARN, lk,
                         "TLS with %s:%u failed (%s): plain text to it for %llds", p->ip,
                         p->tg.port, why->reply.raw, (long long)(p->owner->tls_fallback_ms / 1000));
            pool_kick(p);
            return;
        }
        char fl[160];
        snprintf(fl, sizeof fl, "source=\"%s\",result=\"failed\"",
                 p->source_ip ? p->source_ip : "");
        if (dest_failure(why) && p->n_sess > 0) {
            /* Other connections of the pool work or are still opening: the
             * host may only limit connections per client (a 421 greeting
             * beyond N), or be dead - the last of them decides. Meanwhile
             * the pool opens no more than it has, so failures never
             * reopen connections in a loop. */
            sl_metric_inc("sluice_sender_connections_total", fl, 1);
            p->conn_limit = (uint32_t)p->n_sess;
            p->limit_until = now + CONN_LIMIT_MS;
            pool_kick(p);
            return;
        }
        if (dest_failure(why)) {
            /* The destination is down: nothing else connects to it until
             * its probe, and what waits here is answered now, so that it
             * can go to the next MX or be deferred with this reason. */
            sl_metric_inc("sluice_sender_connections_total", fl, 1);
            p->limit_until = 0; /* the probe starts afresh */
            snd_dest_failed(ds, p->dest_key, why, now);
            fail_queue(p, why);
            pool_kick(p);
            return;
        }
        snd_dest_ok(ds, p->dest_key, now);
        if (p->n_sess == 0) {
            sl_metric_inc("sluice_sender_connections_total", fl, 1);
            fail_queue(p, why);
            return;
        }
    }
    pool_kick(p);
}

static void on_closed(void *arg, snd_session *s, const snd_result *why, bool established)
{
    snd_pool *p = ((psess *)snd_session_data(s))->pool;
    (void)arg;
    session_closed(s, why, established);
    /* The share has a connection free: a pool of another MX address of
     * the site may be waiting for it. */
    share_kick(p->share, p);
}

static const snd_session_cbs session_cbs = {NULL, on_ready, on_txn_done, on_closed};

/* ---- pools ---- */

/* Make room in the share for pool p: QUIT an idle connection of another
 * of its pools (its close kicks the share again). False when none is idle:
 * p waits for a busy one to end. */
static bool share_reclaim(snd_share *sh, const snd_pool *p)
{
    for (size_t i = 0; i < sh->n_pools; i++) {
        snd_pool *o = sh->pools[i];
        if (o == p)
            continue;
        for (size_t k = 0; k < o->n_sess; k++)
            if (o->sess[k]->idle) {
                o->sess[k]->idle = false;
                snd_session_quit(o->sess[k]->s);
                return true;
            }
    }
    return false;
}

static void pool_kick(snd_pool *p)
{
    for (size_t i = 0; i < p->n_sess && p->head; i++)
        if (p->sess[i]->idle)
            take_next(p->sess[i]);
    size_t opening = 0;
    for (size_t i = 0; i < p->n_sess; i++)
        if (!p->sess[i]->ready_once)
            opening++;
    snd_dests *ds = p->owner->dests;
    snd_share *sh = p->share;
    int64_t now = sl_mono_ms();
    uint32_t max_conn = p->max_conn;
    if (now < p->limit_until && p->conn_limit < max_conn)
        max_conn = p->conn_limit;
    bool share_full = false;
    while (p->n_queued > opening && p->n_sess < max_conn) {
        /* While a probe runs (this pool's or another's) nothing else
         * connects; a destination down and not yet due, neither. */
        if (snd_dest_state_of(ds, p->dest_key) == SND_DEST_PROBING ||
            !snd_dest_may_connect(ds, p->dest_key, now))
            break;
        if (sh->n_conn >= sh->max_conn) {
            /* The site's other MX addresses hold every connection this
             * source may have: wait for one (an idle one goes now). */
            share_full = true;
            share_reclaim(sh, p);
            break;
        }
        psess *ps = xcalloc(1, sizeof *ps);
        ps->pool = p;
        if (p->n_sess == p->cap_sess) {
            p->cap_sess = p->cap_sess ? p->cap_sess * 2 : 4;
            p->sess = xrealloc(p->sess, p->cap_sess * sizeof *p->sess);
        }
        p->sess[p->n_sess++] = ps;
        p->owner->n_conn++;
        sh->n_conn++;
        opening++;
        char l[128];
        labels_source(p, l, sizeof l);
        sl_metric_add("sluice_sender_connections_open", l, 1);
        snd_target tg = p->tg;
        if (p->no_tls && now >= p->no_tls_until) {
            /* The fallback has expired: STARTTLS again (the receiver's
             * certificate or software may have been fixed meanwhile). */
            p->no_tls = false;
            free(p->no_tls_why);
            p->no_tls_why = NULL;
        }
        if (p->no_tls) {
            tg.tls = SL_TLS_DISABLED;
            tg.tls_note = p->no_tls_why;
        }
        /* snd_session_new may fail synchronously and call on_closed later
         * (from the close callback), so the psess must be in place first. */
        snd_session *s = snd_session_new(p->owner->loop, &tg, &session_cbs);
        ps->s = s;
        snd_session_set_data(s, ps);
    }
    if (p->n_sess == 0 && p->head && !share_full) {
        /* No connection will come to take what waits: answer it with the
         * reason the destination is down. */
        const snd_result *why = snd_dest_why(ds, p->dest_key);
        snd_result r = {0};
        if (!why) {
            snd_result_set(&r, 451, "4.4.1", "451 4.4.1 destination is down");
            r.stage = SL_STAGE_CONNECT;
            r.cond = SL_COND_NETWORK;
            why = &r;
        }
        fail_queue(p, why);
        snd_result_clear(&r);
    }
}

/* Kick every pool of the share that has work waiting (but except). */
static void share_kick(snd_share *sh, const snd_pool *except)
{
    /* By index: a kick can complete transactions whose callbacks submit
     * again and so add a pool to this share. */
    for (size_t i = 0; i < sh->n_pools && sh->n_conn < sh->max_conn; i++)
        if (sh->pools[i] != except && sh->pools[i]->head)
            pool_kick(sh->pools[i]);
}

void snd_pools_set_tls_fallback(snd_pools *ps, int64_t ms)
{
    ps->tls_fallback_ms = ms > 0 ? ms : 1;
}

snd_pools *snd_pools_new(uv_loop_t *loop, snd_dests *dests)
{
    snd_pools *ps = xcalloc(1, sizeof *ps);
    ps->loop = loop;
    ps->dests = dests;
    ps->tls_fallback_ms = 3600 * 1000;
    sl_map_init(&ps->pools);
    sl_map_init(&ps->shares);
    return ps;
}

static char *dupnull(const char *s)
{
    return s && *s ? xstrdup(s) : NULL;
}

static snd_share *share_get(snd_pools *ps, const char *site, const snd_target *tg)
{
    char *key = xasprintf("%s|%s|%s", site ? site : "", tg->source_ip ? tg->source_ip : "",
                          tg->socks5 ? tg->socks5 : "");
    snd_share *sh = sl_map_get(&ps->shares, key);
    if (sh) {
        free(key);
        return sh;
    }
    sh = xcalloc(1, sizeof *sh);
    sh->key = key;
    sl_map_put(&ps->shares, sh->key, sh);
    return sh;
}

static void share_add(snd_share *sh, snd_pool *p)
{
    if (sh->n_pools == sh->cap_pools) {
        sh->cap_pools = sh->cap_pools ? sh->cap_pools * 2 : 4;
        sh->pools = xrealloc(sh->pools, sh->cap_pools * sizeof *sh->pools);
    }
    sh->pools[sh->n_pools++] = p;
    p->share = sh;
}

void snd_pools_submit(snd_pools *ps, const char *site, const snd_target *tg, uint32_t max_conn,
                      uint32_t max_msgs, snd_txn *t, snd_txn_cb done)
{
    /* Under verify the certificate is checked against the MX host name, so
     * two names on one address are two pools. */
    char *key = xasprintf("%s|%s|%s|%s|%u|%d|%s%s", site ? site : "",
                          tg->source_ip ? tg->source_ip : "", tg->socks5 ? tg->socks5 : "",
                          tg->ip, tg->port, (int)tg->tls,
                          (tg->tls == SL_TLS_VERIFY || tg->dane) && tg->mx_host ? tg->mx_host : "",
                          tg->dane ? "|dane" : "");
    snd_pool *p = sl_map_get(&ps->pools, key);
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
        p->tg.dane = NULL;
        p->dest_key = snd_dest_key(p->source_ip, p->socks5, p->ip, p->tg.port);
        sl_map_put(&ps->pools, p->key, p);
        share_add(share_get(ps, site, tg), p);
    }
    free(key);
    p->last_used = sl_mono_ms();
    /* The latest Dispatch carries the current limits. */
    p->max_conn = max_conn ? max_conn : 1;
    p->share->max_conn = p->max_conn;
    p->max_msgs = max_msgs ? max_msgs : 100;
    p->tg.timeouts = tg->timeouts;
    /* New connections use the latest TLSA answer (they expire by TTL). */
    if (tg->dane != p->tg.dane) {
        snd_dane_answer_unref(p->tg.dane);
        p->tg.dane = tg->dane ? snd_dane_answer_ref(tg->dane) : NULL;
    }
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

static int quit_idle(void *arg, const char *key, void *val)
{
    snd_pool *p = val;
    p->max_msgs = 0; /* busy ones QUIT after their transaction */
    for (size_t i = 0; i < p->n_sess; i++)
        if (p->sess[i]->idle) {
            p->sess[i]->idle = false;
            snd_session_quit(p->sess[i]->s);
        }
    return 0;
}

void snd_pools_quit_idle(snd_pools *ps)
{
    sl_map_each(&ps->pools, quit_idle, NULL);
}

static void share_free(snd_share *sh)
{
    free(sh->key);
    free(sh->pools);
    free(sh);
}

/* Take p out of its share; the share goes with its last pool. */
static void share_remove(snd_pools *ps, snd_pool *p)
{
    snd_share *sh = p->share;
    for (size_t i = 0; i < sh->n_pools; i++)
        if (sh->pools[i] == p) {
            sh->pools[i] = sh->pools[--sh->n_pools];
            break;
        }
    if (sh->n_pools == 0) {
        sl_map_del(&ps->shares, sh->key);
        share_free(sh);
    }
}

static void pool_free(snd_pool *p)
{
    free(p->key);
    free(p->dest_key);
    free(p->mx_host);
    snd_dane_answer_unref(p->tg.dane);
    free(p->ip);
    free(p->source_ip);
    free(p->ehlo);
    free(p->socks5);
    free(p->no_tls_why);
    free(p->sess);
    free(p);
}

size_t snd_pools_count(const snd_pools *ps)
{
    return ps->pools.count;
}

typedef struct sweep {
    int64_t idle_ms, now_ms;
    snd_pools *ps; /* the pools' sweep: shares go with their last pool */
} sweep;

static bool sweep_pool(void *arg, void *val)
{
    const sweep *sw = arg;
    snd_pool *p = val;
    /* A pool in its plain-text fallback is the memory of a failed
     * handshake: freeing it early would make that memory shorter than
     * sender.tls_fallback_expiry. */
    if (p->n_sess || p->head || sw->now_ms - p->last_used < sw->idle_ms ||
        (p->no_tls && sw->now_ms < p->no_tls_until))
        return false;
    share_remove(sw->ps, p);
    pool_free(p);
    return true;
}

size_t snd_pools_sweep(snd_pools *ps, int64_t idle_ms, int64_t now_ms)
{
    sweep sw = {idle_ms, now_ms, ps};
    return sl_map_sweep(&ps->pools, sweep_pool, &sw);
}

static int free_pool(void *arg, const char *key, void *val)
{
    snd_pool *p = val;
    SL_ASSERT(!p->head);
    pool_free(p);
    return 0;
}

static int free_share(void *arg, const char *key, void *val)
{
    share_free(val);
    return 0;
}

void snd_pools_free(snd_pools *ps)
{
    if (!ps)
        return;
    SL_ASSERT(ps->n_conn == 0);
    sl_map_each(&ps->pools, free_pool, NULL);
    sl_map_free(&ps->pools);
    sl_map_each(&ps->shares, free_share, NULL);
    sl_map_free(&ps->shares);
    free(ps);
}

/* ---- pacing ---- */

/* Per pair, the last slot booked (monotonic ms), and the pair's key for
 * the sweep's forget callback. */
typedef struct pace {
    int64_t last;
    char key[];
} pace;

struct snd_pacer {
    sl_map m; /* pair key -> pace, owned */
};

snd_pacer *snd_pacer_new(void)
{
    snd_pacer *p = xcalloc(1, sizeof(snd_pacer));
    sl_map_init(&p->m);
    return p;
}

int64_t snd_pacer_slot(snd_pacer *p, const char *key, int64_t send_at_ms, double rate, int64_t now)
{
    pace *e = sl_map_get(&p->m, key);
    if (!e) {
        size_t kl = strlen(key);
        e = xcalloc(1, sizeof *e + kl + 1);
        memcpy(e->key, key, kl + 1);
        e->last = INT64_MIN / 2;
        sl_map_put(&p->m, key, e);
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

typedef struct pace_sweep {
    sweep sw;
    void (*forget)(void *arg, const char *key);
    void *arg;
} pace_sweep;

static bool sweep_pace(void *arg, void *val)
{
    const pace_sweep *ps = arg;
    const sweep *sw = &ps->sw;
    pace *e = val;
    /* Slots are booked in the future at most by the carried rate: a pair
     * whose last slot is long past has no effect on the next one and can
     * be forgotten. */
    if (sw->now_ms - e->last < sw->idle_ms)
        return false;
    if (ps->forget)
        ps->forget(ps->arg, e->key);
    free(e);
    return true;
}

size_t snd_pacer_sweep(snd_pacer *p, int64_t idle_ms, int64_t now_ms,
                       void (*forget)(void *arg, const char *key), void *arg)
{
    pace_sweep ps = {{idle_ms, now_ms, NULL}, forget, arg};
    return sl_map_sweep(&p->m, sweep_pace, &ps);
}

size_t snd_pacer_count(const snd_pacer *p)
{
    return p->m.count;
}

static int free_pace(void *arg, const char *key, void *val)
{
    free(val);
    return 0;
}

void snd_pacer_free(snd_pacer *p)
{
    if (!p)
        return;
    sl_map_each(&p->m, free_pace, NULL);
    sl_map_free(&p->m);
    free(p);
}
