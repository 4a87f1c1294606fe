/*
 * api_suppress - see api_suppress.h.
 */
#include "api_suppress.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "reader.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct api_suppress {
    pthread_rwlock_t mu;
    sl_map set; /* "tenant/address" -> (void *)1; under mu */
    sl_reader *reader;
    bool loaded;
};

/* Records read per drain: a long list loads over several ticks without
 * holding the set's lock for long. */
#define DRAIN_BATCH 5000

static char *key_of(const char *tenant, const char *address)
{
    char *k = xasprintf("%s/%s", tenant ? tenant : "", address ? address : "");
    sl_lower(k);
    return k;
}

api_suppress *api_suppress_new(const sl_config *cfg, char **err)
{
    char *topic = sl_config_topic(cfg, "suppressions");
    sl_reader *r = sl_reader_new(cfg, topic, 0, err);
    free(topic);
    if (!r)
        return NULL;
    api_suppress *s = xcalloc(1, sizeof *s);
    pthread_rwlock_init(&s->mu, NULL);
    sl_map_init(&s->set);
    s->reader = r;
    sl_metric_help("sluice_api_suppressions", SL_METRIC_GAUGE,
                   "Suppressed (tenant, address) entries sluice-api checks recipients against");
    return s;
}

bool api_suppress_drain(api_suppress *s)
{
    rd_kafka_message_t *m;
    int n = 0;
    while (n < DRAIN_BATCH && (m = sl_reader_next(s->reader, 0))) {
        n++;
        if (m->key && m->key_len) {
            char *k = xstrndup(m->key, m->key_len);
            sl_lower(k);
            pthread_rwlock_wrlock(&s->mu);
            if (m->payload)
                sl_map_put(&s->set, k, (void *)1);
            else
                sl_map_del(&s->set, k);
            pthread_rwlock_unlock(&s->mu);
            free(k);
        }
        rd_kafka_message_destroy(m);
    }
    if (!s->loaded && n < DRAIN_BATCH && sl_reader_at_end(s->reader)) {
        s->loaded = true;
        sl_info("api: %zu suppressions loaded", s->set.count);
    }
    if (n)
        sl_metric_set("sluice_api_suppressions", NULL, (double)s->set.count);
    return s->loaded;
}

bool api_suppress_has(api_suppress *s, const char *tenant, const char *address)
{
    char *k = key_of(tenant, address);
    pthread_rwlock_rdlock(&s->mu);
    bool hit = s->set.count && sl_map_get(&s->set, k);
    pthread_rwlock_unlock(&s->mu);
    free(k);
    return hit;
}

void api_suppress_put(api_suppress *s, const char *tenant, const char *address, bool on)
{
    char *k = key_of(tenant, address);
    pthread_rwlock_wrlock(&s->mu);
    if (on)
        sl_map_put(&s->set, k, (void *)1);
    else
        sl_map_del(&s->set, k);
    pthread_rwlock_unlock(&s->mu);
    free(k);
}

void api_suppress_free(api_suppress *s)
{
    if (!s)
        return;
    sl_reader_free(s->reader);
    sl_map_free(&s->set);
    pthread_rwlock_destroy(&s->mu);
    free(s);
}
