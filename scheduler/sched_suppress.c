/*
 * sched_suppress - see sched_suppress.h.
 */
#include "sched_suppress.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "reader.h"

#include <stdlib.h>
#include <string.h>

struct sched_suppress {
    sched_ctx *ctx;
    sl_map set;         /* key -> (void *)1 */
    sl_reader *reader;     /* NULL in tests */
    uv_timer_t timer;
    bool loaded;
};

/* Records read per timer tick: bounded so a large list never holds the
 * loop for long; the timer comes back at once while there is more. */
#define DRAIN_BATCH 2000

char *sched_suppress_key(const char *tenant, const char *address)
{
    char *k = xasprintf("%s/%s", tenant ? tenant : "", address ? address : "");
    sl_lower(k);
    return k;
}

void sched_suppress_put(sched_suppress *s, const char *tenant, const char *address, bool on)
{
    char *k = sched_suppress_key(tenant, address);
    if (on)
        sl_map_put(&s->set, k, (void *)1);
    else
        sl_map_del(&s->set, k);
    free(k);
    sl_metric_set("sluice_suppressions", NULL, (double)s->set.count);
}

static void apply(sched_suppress *s, rd_kafka_message_t *m)
{
    if (!m->key || !m->key_len)
        return;
    char *key = xstrndup(m->key, m->key_len);
    sl_lower(key);
    if (!m->payload) {
        sl_map_del(&s->set, key);
    } else {
        sl_suppression *sup = NULL;
        const char *why = NULL;
        if (sl_suppression_decode(m->payload, m->len, &sup, &why) == 0) {
            sl_map_put(&s->set, key, (void *)1);
            sl_suppression_free(sup);
        } else {
            sl_warn("suppressions: ignoring record %s: %s", key, why);
        }
    }
    free(key);
}

static void drain_cb(uv_timer_t *t)
{
    sched_suppress *s = t->data;
    int n = 0;
    rd_kafka_message_t *m;
    while (n < DRAIN_BATCH && (m = sl_reader_next(s->reader, 0))) {
        apply(s, m);
        rd_kafka_message_destroy(m);
        n++;
    }
    if (!s->loaded && sl_reader_at_end(s->reader)) {
        s->loaded = true;
        sl_info("suppressions: loaded %zu entries", s->set.count);
    }
    sl_metric_set("sluice_suppressions", NULL, (double)s->set.count);
    uv_timer_start(&s->timer, drain_cb, n == DRAIN_BATCH ? 0 : 200, 0);
}

sched_suppress *sched_suppress_new(sched_ctx *ctx, char **err)
{
    sched_suppress *s = xcalloc(1, sizeof *s);
    s->ctx = ctx;
    sl_map_init(&s->set);
    if (!ctx->loop) {
        s->loaded = true; /* tests: in memory only */
        return s;
    }
    s->reader = sl_reader_new(ctx->cfg, ctx->t_suppressions, 0, err);
    if (!s->reader) {
        sl_map_free(&s->set);
        free(s);
        return NULL;
    }
    uv_timer_init(ctx->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, drain_cb, 0, 0);
    return s;
}

bool sched_suppress_loaded(const sched_suppress *s)
{
    return s->loaded;
}

bool sched_suppress_has(const sched_suppress *s, const char *tenant, const char *address)
{
    if (!s->set.count)
        return false;
    char *k = sched_suppress_key(tenant, address);
    bool hit = sl_map_get(&s->set, k) != NULL;
    free(k);
    return hit;
}

size_t sched_suppress_count(const sched_suppress *s)
{
    return s->set.count;
}

int sched_suppress_add(sched_suppress *s, const char *tenant, const char *address,
                       const char *reason, const char *job_id, sl_produce_cb cb, void *arg)
{
    sl_suppression sup = SLUICE__V1__SUPPRESSION__INIT;
    char *addr = xstrdup(address);
    sl_lower(addr);
    sup.version = SLUICE_WIRE_VERSION;
    sup.tenant = (char *)(tenant ? tenant : "");
    sup.address = addr;
    sup.reason = (char *)reason;
    sup.created_at_ms = sl_now_ms();
    sup.source_job_id = (char *)(job_id ? job_id : "");
    sl_buf b = SL_BUF_INIT;
    sl_pack(&sup.base, &b);
    char *key = sched_suppress_key(tenant, addr);
    sl_map_put(&s->set, key, (void *)1);
    int rc = sl_producer_send(s->ctx->prod, s->ctx->t_suppressions, key, strlen(key), b.data,
                              b.len, NULL, 0, cb, arg);
    free(key);
    free(addr);
    sl_buf_free(&b);
    return rc;
}

static void close_cb(uv_handle_t *h)
{
    free(h->data);
}

void sched_suppress_free(sched_suppress *s)
{
    if (!s)
        return;
    sl_map_free(&s->set);
    if (s->reader) {
        sl_reader_free(s->reader);
        uv_close((uv_handle_t *)&s->timer, close_cb);
    } else {
        free(s);
    }
}
