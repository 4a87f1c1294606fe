/*
 * dane - DNSSEC-validated TLSA lookups for DANE SMTP (RFC 7672). The
 * contract is in dane.h.
 */
#include "dane.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <unbound.h>

#include "hostport.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "util.h"

#define RR_A 1
#define RR_TLSA 52
#define CLASS_IN 1
#define DANE_TTL_MAX 3600
#define DANE_TTL_NEG 60 /* an insecure or empty answer without a TTL */
#define DEFAULT_ANCHOR "/usr/share/dns/root.key"

/* ---- answers ---- */

const char *snd_dane_status_name(snd_dane_status s)
{
    switch (s) {
    case SND_DANE_NONE: return "none";
    case SND_DANE_USABLE: return "usable";
    case SND_DANE_UNUSABLE: return "unusable";
    case SND_DANE_FAILED: return "failed";
    }
    return "?";
}

snd_dane_answer *snd_dane_answer_ref(const snd_dane_answer *a)
{
    snd_dane_answer *m = (snd_dane_answer *)a;
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void snd_dane_answer_unref(const snd_dane_answer *a)
{
    snd_dane_answer *m = (snd_dane_answer *)a;
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    for (size_t i = 0; i < m->n_recs; i++)
        free((void *)m->recs[i].data);
    free(m->recs);
    free(m->why);
    free(m->qname);
    free(m);
}

static snd_dane_answer *answer_new(snd_dane_status st, const char *qname, uint32_t ttl,
                                   const char *why)
{
    snd_dane_answer *a = xcalloc(1, sizeof *a);
    atomic_init(&a->refs, 1);
    a->status = st;
    a->qname = xstrdup(qname);
    a->why = xstrdup(why ? why : "");
    a->ttl = ttl > DANE_TTL_MAX ? DANE_TTL_MAX : ttl;
    return a;
}

bool snd_dane_tlsa_usable(const sl_tlsa *r)
{
    if (r->usage != 2 && r->usage != 3)
        return false;
    if (r->selector > 1)
        return false;
    switch (r->mtype) {
    case 0: return r->len > 0;
    case 1: return r->len == 32;
    case 2: return r->len == 64;
    }
    return false;
}

/* ---- the shared cache ---- */

typedef struct cache_ent {
    snd_dane_answer *a;
    int64_t expires; /* monotonic ms */
} cache_ent;

struct snd_dane_cache {
    pthread_mutex_t mu;
    sl_map map; /* "host|port" -> cache_ent */
    uint32_t max;
};

snd_dane_cache *snd_dane_cache_new(uint32_t max)
{
    snd_dane_cache *c = xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    sl_map_init(&c->map);
    c->max = max ? max : 1;
    return c;
}

static bool drop_ent(void *arg, void *val)
{
    const int64_t *now = arg;
    cache_ent *e = val;
    if (now && e->expires > *now)
        return false;
    snd_dane_answer_unref(e->a);
    free(e);
    return true;
}

void snd_dane_cache_free(snd_dane_cache *c)
{
    if (!c)
        return;
    sl_map_sweep(&c->map, drop_ent, NULL);
    sl_map_free(&c->map);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static snd_dane_answer *cache_get(snd_dane_cache *c, const char *key)
{
    snd_dane_answer *a = NULL;
    pthread_mutex_lock(&c->mu);
    cache_ent *e = sl_map_get(&c->map, key);
    if (e && e->expires > sl_mono_ms())
        a = snd_dane_answer_ref(e->a);
    pthread_mutex_unlock(&c->mu);
    return a;
}

static void cache_put(snd_dane_cache *c, const char *key, snd_dane_answer *a)
{
    if (a->status == SND_DANE_FAILED || a->ttl == 0)
        return;
    int64_t now = sl_mono_ms();
    pthread_mutex_lock(&c->mu);
    if (c->map.count >= c->max)
        sl_map_sweep(&c->map, drop_ent, &now);
    cache_ent *e = sl_map_get(&c->map, key);
    if (e) {
        snd_dane_answer_unref(e->a);
    } else if (c->map.count < c->max) {
        e = xcalloc(1, sizeof *e);
        sl_map_put(&c->map, key, e);
    }
    if (e) {
        e->a = snd_dane_answer_ref(a);
        e->expires = now + (int64_t)a->ttl * 1000;
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- lookups ---- */

typedef struct lookup {
    struct snd_dane *d;
    char *key;
    char *host;
    char *qname;
    int async_id;
    bool in_ub;          /* a query is outstanding in libunbound */
    uint32_t ttl;        /* the A RRset's */
    snd_dane_answer *ready; /* delivered on the next loop iteration */
    snd_dane_cb cb;
    void *arg;
    struct lookup *next, *prev;
} lookup;

struct snd_dane {
    uv_loop_t *loop;
    struct ub_ctx *ub;
    snd_dane_cache *cache;
    uv_poll_t poll;
    uv_timer_t ready_timer;
    int open_handles;
    bool closing;
    lookup *head;
};

static void unlink_lookup(snd_dane *d, lookup *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        d->head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

static void finish(lookup *l, snd_dane_answer *a)
{
    snd_dane *d = l->d;
    unlink_lookup(d, l);
    char lbl[64];
    snprintf(lbl, sizeof lbl, "result=\"%s\"", snd_dane_status_name(a->status));
    sl_metric_inc("sluice_sender_dane_lookups_total", lbl, 1);
    sl_debug("DANE %s: %s (%s)", a->qname, snd_dane_status_name(a->status), a->why);
    l->cb(a, l->arg);
    snd_dane_answer_unref(a);
    free(l->key);
    free(l->host);
    free(l->qname);
    free(l);
}

static snd_dane_answer *failed(const lookup *l, const char *fmt, const char *detail)
{
    char why[400];
    snprintf(why, sizeof why, fmt, detail ? detail : "");
    return answer_new(SND_DANE_FAILED, l->qname, 0, why);
}

static void on_tlsa(void *arg, int err, struct ub_result *r)
{
    lookup *l = arg;
    l->in_ub = false;
    snd_dane_answer *a;
    if (err) {
        a = failed(l, "TLSA lookup failed: %s", ub_strerror(err));
    } else if (r->bogus) {
        a = failed(l, "TLSA records are bogus (DNSSEC validation failed: %s)",
                   r->why_bogus ? r->why_bogus : "no reason given");
    } else if (!r->secure) {
        if (r->rcode != 0 && r->rcode != 3)
            a = failed(l, "TLSA lookup failed: %s", r->rcode == 2 ? "SERVFAIL" : "DNS error");
        else
            a = answer_new(SND_DANE_NONE, l->qname, l->ttl ? l->ttl : DANE_TTL_NEG,
                           "TLSA records insecure");
    } else if (!r->havedata) {
        uint32_t t = r->ttl > 0 ? (uint32_t)r->ttl : DANE_TTL_NEG;
        a = answer_new(SND_DANE_NONE, l->qname, t < l->ttl || !l->ttl ? t : l->ttl,
                       "no TLSA records");
    } else {
        uint32_t t = r->ttl > 0 ? (uint32_t)r->ttl : DANE_TTL_NEG;
        if (l->ttl && l->ttl < t)
            t = l->ttl;
        size_t n = 0;
        while (r->data[n])
            n++;
        sl_tlsa *recs = xcalloc(n ? n : 1, sizeof *recs);
        size_t used = 0, total = 0;
        for (size_t i = 0; i < n; i++) {
            if (r->len[i] < 3)
                continue;
            total++;
            const unsigned char *p = (const unsigned char *)r->data[i];
            sl_tlsa rec = {p[0], p[1], p[2], p + 3, (size_t)r->len[i] - 3};
            if (!snd_dane_tlsa_usable(&rec))
                continue;
            unsigned char *copy = xmalloc(rec.len);
            memcpy(copy, rec.data, rec.len);
            rec.data = copy;
            recs[used++] = rec;
        }
        char why[64];
        snprintf(why, sizeof why, "%zu of %zu TLSA records usable", used, total);
        a = answer_new(used ? SND_DANE_USABLE : SND_DANE_UNUSABLE, l->qname, t, why);
        a->recs = recs;
        a->n_recs = used;
    }
    if (r)
        ub_resolve_free(r);
    cache_put(l->d->cache, l->key, a);
    finish(l, a);
}

static void on_addr(void *arg, int err, struct ub_result *r)
{
    lookup *l = arg;
    l->in_ub = false;
    snd_dane_answer *a = NULL;
    if (err) {
        a = failed(l, "address lookup for DANE failed: %s", ub_strerror(err));
    } else if (r->bogus) {
        char why[300];
        snprintf(why, sizeof why, "address records of %s are bogus (DNSSEC validation failed: %s)",
                 l->host, r->why_bogus ? r->why_bogus : "no reason given");
        a = answer_new(SND_DANE_FAILED, l->qname, 0, why);
    } else if (!r->secure) {
        if (r->rcode != 0 && r->rcode != 3)
            a = failed(l, "address lookup for DANE failed: %s",
                       r->rcode == 2 ? "SERVFAIL" : "DNS error");
        else
            a = answer_new(SND_DANE_NONE, l->qname, r->ttl > 0 ? (uint32_t)r->ttl : DANE_TTL_NEG,
                           "MX host address records insecure");
    }
    if (!a) {
        /* Secure addresses (or a secure denial of A: the host may have
         * only AAAA): its TLSA records decide (RFC 7672 2.2). */
        l->ttl = r->ttl > 0 ? (uint32_t)r->ttl : DANE_TTL_NEG;
        ub_resolve_free(r);
        int rc = ub_resolve_async(l->d->ub, l->qname, RR_TLSA, CLASS_IN, l, on_tlsa, &l->async_id);
        if (rc == 0) {
            l->in_ub = true;
            return;
        }
        a = failed(l, "TLSA lookup failed: %s", ub_strerror(rc));
        cache_put(l->d->cache, l->key, a);
        finish(l, a);
        return;
    }
    if (r)
        ub_resolve_free(r);
    cache_put(l->d->cache, l->key, a);
    finish(l, a);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    snd_dane *d = h->data;
    int rc = ub_process(d->ub);
    if (rc != 0)
        sl_warn("DANE resolver: %s", ub_strerror(rc));
}

static void on_ready(uv_timer_t *h)
{
    snd_dane *d = h->data;
    lookup *l = d->head, *next;
    for (; l; l = next) {
        next = l->next;
        if (l->ready) {
            snd_dane_answer *a = l->ready;
            l->ready = NULL;
            finish(l, a);
        }
    }
}

int snd_dane_lookup(snd_dane *d, const char *host, uint16_t port, snd_dane_cb cb, void *arg)
{
    if (d->closing || !host || !*host || strlen(host) > 253)
        return SL_EINVAL;
    lookup *l = xcalloc(1, sizeof *l);
    l->d = d;
    l->cb = cb;
    l->arg = arg;
    l->host = xstrdup(host);
    size_t n = strlen(l->host);
    if (l->host[n - 1] == '.')
        l->host[n - 1] = 0;
    for (char *p = l->host; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    l->qname = xasprintf("_%u._tcp.%s", port, l->host);
    l->key = xasprintf("%s|%u", l->host, port);
    l->next = d->head;
    if (d->head)
        d->head->prev = l;
    d->head = l;
    l->ready = cache_get(d->cache, l->key);
    if (l->ready) {
        sl_metric_inc("sluice_sender_dane_cache_hits_total", "", 1);
        uv_timer_start(&d->ready_timer, on_ready, 0, 0);
        return 0;
    }
    int rc = ub_resolve_async(d->ub, l->host, RR_A, CLASS_IN, l, on_addr, &l->async_id);
    if (rc != 0) {
        l->ready = failed(l, "address lookup for DANE failed: %s", ub_strerror(rc));
        uv_timer_start(&d->ready_timer, on_ready, 0, 0);
        return 0;
    }
    l->in_ub = true;
    return 0;
}

/* ---- life cycle ---- */

/* Whether a trust anchor file holds at least one DS or DNSKEY record.
 * libunbound reads the file only when the context is first used, and then
 * fails every lookup; checking it here makes a wrong file a configuration
 * error at start instead. */
static bool anchor_has_keys(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        char *semi = strchr(line, ';');
        if (semi)
            *semi = 0;
        for (char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save); tok;
             tok = strtok_r(NULL, " \t\r\n", &save))
            if (!strcmp(tok, "DS") || !strcmp(tok, "DNSKEY")) {
                found = true;
                break;
            }
    }
    fclose(f);
    return found;
}

snd_dane *snd_dane_new(uv_loop_t *loop, const sl_config *cfg, snd_dane_cache *cache, char **err)
{
    struct ub_ctx *ub = ub_ctx_create();
    if (!ub) {
        *err = xstrdup("DANE: cannot create a libunbound context");
        return NULL;
    }
    /* Threads, not the forked process libunbound uses by default. */
    int rc = ub_ctx_async(ub, 1);
    const char *fwd = cfg->sender.dane_resolver;
    if (rc == 0 && fwd) {
        char *h = NULL;
        uint16_t port = 53;
        if (sl_hostport_parse(fwd, 0, 53, &h, &port) < 0) {
            *err = xasprintf("sender.dane_resolver: not host:port: %s", fwd);
            ub_ctx_delete(ub);
            return NULL;
        }
        char *at = xasprintf("%s@%u", h, port);
        rc = ub_ctx_set_fwd(ub, at);
        free(at);
        free(h);
    } else if (rc == 0) {
        rc = ub_ctx_resolvconf(ub, NULL);
    }
    const char *ta = cfg->sender.dane_trust_anchor ? cfg->sender.dane_trust_anchor : DEFAULT_ANCHOR;
    if (rc == 0) {
        if (access(ta, R_OK) != 0) {
            *err = xasprintf("DANE: trust anchor %s cannot be read%s", ta,
                             cfg->sender.dane_trust_anchor
                                 ? ""
                                 : " (install dns-root-data or set sender.dane_trust_anchor)");
            ub_ctx_delete(ub);
            return NULL;
        }
        if (!anchor_has_keys(ta)) {
            *err = xasprintf("DANE: trust anchor %s holds no DS or DNSKEY record", ta);
            ub_ctx_delete(ub);
            return NULL;
        }
        rc = ub_ctx_add_ta_file(ub, ta);
    }
    if (rc != 0) {
        *err = xasprintf("DANE resolver setup: %s", ub_strerror(rc));
        ub_ctx_delete(ub);
        return NULL;
    }
    snd_dane *d = xcalloc(1, sizeof *d);
    d->loop = loop;
    d->ub = ub;
    d->cache = cache;
    /* ub_fd() finalises the context: a bad anchor file shows here. */
    int fd = ub_fd(ub);
    if (fd < 0 || uv_poll_init(loop, &d->poll, fd) != 0) {
        *err = xasprintf("DANE resolver: no descriptor to watch (trust anchor %s unusable?)", ta);
        ub_ctx_delete(ub);
        free(d);
        return NULL;
    }
    d->poll.data = d;
    uv_poll_start(&d->poll, UV_READABLE, on_poll);
    uv_timer_init(loop, &d->ready_timer);
    d->ready_timer.data = d;
    d->open_handles = 2;
    return d;
}

static void on_close(uv_handle_t *h)
{
    snd_dane *d = h->data;
    if (--d->open_handles > 0)
        return;
    ub_ctx_delete(d->ub);
    free(d);
}

void snd_dane_free(snd_dane *d)
{
    if (!d)
        return;
    d->closing = true;
    while (d->head) {
        lookup *l = d->head;
        if (l->in_ub)
            ub_cancel(d->ub, l->async_id);
        snd_dane_answer *a = l->ready ? l->ready : answer_new(SND_DANE_FAILED, l->qname, 0,
                                                               "cancelled");
        l->ready = NULL;
        finish(l, a);
    }
    uv_poll_stop(&d->poll);
    uv_close((uv_handle_t *)&d->poll, on_close);
    uv_close((uv_handle_t *)&d->ready_timer, on_close);
}
