/*
 * api_idem - see api_idem.h.
 */
#include "api_idem.h"
#include "kafka.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "reader.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct api_idem {
    int64_t ttl_ms;
    char *topic;
    rd_kafka_t *query;   /* asks a partition's end: never fetches (thread safe) */
    pthread_mutex_t rmu; /* the reader and next[] */
    sl_reader *reader;
    int n_parts;
    int64_t *next;      /* per partition: the offset after the newest record read */
    pthread_rwlock_t mu; /* the map */
    sl_map recs;         /* topic key -> json_t * (owned) */
    int64_t swept_ms;    /* last sweep of expired records; drain's thread */
};

/* Records read per drain, so that a long topic loads over several ticks. */
#define DRAIN_BATCH 5000

char *api_idem_key(const char *tenant, const char *key)
{
    return xasprintf("%s/%s", tenant ? tenant : "", key ? key : "");
}

api_idem *api_idem_new(const sl_config *cfg, char **err)
{
    char *topic = sl_config_topic(cfg, "idempotency");
    sl_reader *r = sl_reader_new(cfg, topic, 0, err);
    if (!r) {
        free(topic);
        return NULL;
    }
    /* Not the reader's handle: a broker answers a connection's requests
     * in order, so a ListOffsets behind the reader's waiting fetch would
     * wait out fetch.wait.max.ms each time. */
    rd_kafka_t *q = sl_kafka_assign_handle(cfg, "api", "sluice-reader", err, NULL);
    if (!q) {
        sl_reader_free(r);
        free(topic);
        return NULL;
    }
    api_idem *s = xcalloc(1, sizeof *s);
    s->query = q;
    s->ttl_ms = cfg->api.idempotency_ttl_ms;
    s->topic = topic;
    s->reader = r;
    s->n_parts = sl_reader_partitions(r);
    s->next = xcalloc((size_t)s->n_parts, sizeof *s->next);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_rwlock_init(&s->mu, NULL);
    sl_map_init(&s->recs);
    sl_metric_help("sluice_api_idempotency_keys", SL_METRIC_GAUGE,
                   "Idempotency-Key records sluice-api holds (read from the idempotency topic)");
    return s;
}

static void put_locked(api_idem *s, const char *k, json_t *rec)
{
    json_t *old = sl_map_put(&s->recs, k, rec);
    json_decref(old);
}

/* One record of the topic. Under rmu. */
static void apply(api_idem *s, rd_kafka_message_t *m)
{
    if (m->partition >= 0 && m->partition < s->n_parts)
        s->next[m->partition] = m->offset + 1;
    if (!m->key || !m->key_len)
        return;
    char *k = xstrndup(m->key, m->key_len);
    json_t *rec = NULL;
    if (m->payload) {
        json_error_t jerr;
        rec = json_loadb(m->payload, m->len, 0, &jerr);
        if (!rec || !json_is_string(json_object_get(rec, "sha256"))) {
            sl_warn("api: idempotency record %s does not decode; ignored", k);
            json_decref(rec);
            free(k);
            return;
        }
    }
    pthread_rwlock_wrlock(&s->mu);
    if (rec)
        put_locked(s, k, rec);
    else
        json_decref(sl_map_del(&s->recs, k));
    pthread_rwlock_unlock(&s->mu);
    free(k);
}

static bool expired(void *arg, void *val)
{
    const api_idem *s = arg;
    if (json_integer_value(json_object_get(val, "at_ms")) + s->ttl_ms >= sl_now_ms())
        return false;
    json_decref(val);
    return true;
}

void api_idem_drain(api_idem *s)
{
    /* Records past the TTL, once a minute: the topic's retention drops
     * them too. */
    if (sl_mono_ms() - s->swept_ms > 60000) {
        s->swept_ms = sl_mono_ms();
        pthread_rwlock_wrlock(&s->mu);
        sl_map_sweep(&s->recs, expired, s);
        pthread_rwlock_unlock(&s->mu);
    }
    if (pthread_mutex_trylock(&s->rmu) != 0)
        return; /* a request's sync is reading */
    rd_kafka_message_t *m;
    int n = 0;
    while (n < DRAIN_BATCH && (m = sl_reader_next(s->reader, 0))) {
        n++;
        apply(s, m);
        rd_kafka_message_destroy(m);
    }
    pthread_mutex_unlock(&s->rmu);
    if (n) {
        pthread_rwlock_rdlock(&s->mu);
        size_t count = s->recs.count;
        pthread_rwlock_unlock(&s->mu);
        sl_metric_set("sluice_api_idempotency_keys", NULL, (double)count);
    }
}

int api_idem_sync(api_idem *s, const char *tenant, const char *key, int timeout_ms)
{
    char *k = api_idem_key(tenant, key);
    int64_t deadline = sl_mono_ms() + timeout_ms;
    /* The partition the producer's murmur2 partitioner gives the key. */
    int32_t p = rd_kafka_msg_partitioner_murmur2(NULL, k, strlen(k), s->n_parts, NULL, NULL);
    free(k);
    /* The end now. */
    int64_t hi = -1, lo = 0, cached_hi = 0;
    rd_kafka_resp_err_t e = sl_kafka_watermarks(s->query, s->topic, &p, 1, NULL, &hi, timeout_ms);
    int rc = 0;
    if (e || hi < 0) {
        sl_warn("api: idempotency topic %s [%d]: %s", s->topic, (int)p,
                e ? rd_kafka_err2str(e) : "no end offset");
        rc = SL_EKAFKA;
    }
    /* An empty partition (everything past its retention) has nothing to
     * read: its start (as the fetches last saw it) is its end. */
    if (!rc && rd_kafka_get_watermark_offsets(sl_reader_handle(s->reader), s->topic, p, &lo,
                                              &cached_hi) != 0)
        lo = 0;
    /* The broker was asked without the lock (librdkafka's calls are
     * thread safe): concurrent requests wait on Kafka together, and only
     * reading the records is one at a time. */
    pthread_mutex_lock(&s->rmu);
    while (!rc && hi > lo && s->next[p] < hi) {
        int64_t left = deadline - sl_mono_ms();
        if (left <= 0) {
            rc = SL_ETIMEOUT;
            break;
        }
        rd_kafka_message_t *m = sl_reader_next(s->reader, left < 100 ? (int)left : 100);
        if (m) {
            apply(s, m);
            rd_kafka_message_destroy(m);
        }
    }
    pthread_mutex_unlock(&s->rmu);
    return rc;
}

json_t *api_idem_get(api_idem *s, const char *tenant, const char *key)
{
    char *k = api_idem_key(tenant, key);
    pthread_rwlock_rdlock(&s->mu);
    json_t *rec = json_incref(sl_map_get(&s->recs, k));
    pthread_rwlock_unlock(&s->mu);
    free(k);
    /* Past the TTL the record is gone from the topic (or soon will be):
     * the key is free again, whatever this instance still holds. */
    json_int_t at = json_integer_value(json_object_get(rec, "at_ms"));
    if (rec && at + s->ttl_ms < sl_now_ms()) {
        json_decref(rec);
        rec = NULL;
    }
    return rec;
}

void api_idem_put(api_idem *s, json_t *rec)
{
    char *k = api_idem_key(json_string_value(json_object_get(rec, "tenant")),
                           json_string_value(json_object_get(rec, "key")));
    pthread_rwlock_wrlock(&s->mu);
    put_locked(s, k, json_deep_copy(rec));
    pthread_rwlock_unlock(&s->mu);
    free(k);
}

static int free_rec(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    json_decref(val);
    return 0;
}

void api_idem_free(api_idem *s)
{
    if (!s)
        return;
    sl_reader_free(s->reader);
    rd_kafka_destroy(s->query);
    sl_map_each(&s->recs, free_rec, NULL);
    sl_map_free(&s->recs);
    pthread_rwlock_destroy(&s->mu);
    pthread_mutex_destroy(&s->rmu);
    free(s->next);
    free(s->topic);
    free(s);
}
