/*
 * ledger - see ledger.h.
 */
#include "ledger.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct snd_ledger {
    const sl_config *cfg;
    pthread_mutex_t mu;
    sl_map set;         /* "job id\nrecipient" -> (void *)1 */
    char **ring;        /* the same keys, oldest first from head, for eviction */
    size_t cap, head, count;
};

snd_ledger *snd_ledger_new(const sl_config *cfg)
{
    if (!cfg->sender.ledger)
        return NULL;
    snd_ledger *l = xcalloc(1, sizeof *l);
    l->cfg = cfg;
    pthread_mutex_init(&l->mu, NULL);
    sl_map_init(&l->set);
    l->cap = cfg->sender.ledger_max_entries ? cfg->sender.ledger_max_entries : 1000;
    l->ring = xcalloc(l->cap, sizeof *l->ring);
    sl_metric_help("sluice_sender_ledger_skipped_total", SL_METRIC_COUNTER,
                   "Recipients not sent because the delivery ledger had their final outcome");
    sl_metric_help("sluice_sender_ledger_loaded_total", SL_METRIC_COUNTER,
                   "Ledger records read back on partition assignment");
    sl_metric_help("sluice_sender_ledger_entries", SL_METRIC_GAUGE,
                   "Job and recipient pairs the ledger lookup holds");
    sl_metric_help("sluice_sender_ledger_load_failures_total", SL_METRIC_COUNTER,
                   "Assignments whose ledger partitions could not be read back in full");
    sl_metric_set("sluice_sender_ledger_entries", NULL, 0);
    return l;
}

void snd_ledger_free(snd_ledger *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        free(l->ring[(l->head + i) % l->cap]);
    free(l->ring);
    sl_map_free(&l->set);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

bool snd_ledger_is_final(Sluice__V1__EventType t)
{
    switch (t) {
    case SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED:
    case SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED:
    case SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED:
    case SLUICE__V1__EVENT_TYPE__EVENT_SUPPRESSED:
    case SLUICE__V1__EVENT_TYPE__EVENT_REJECTED: return true;
    default: return false;
    }
}

static char *pair_key(const char *job_id, const char *rcpt)
{
    /* Neither holds a newline: job ids and addresses are validated. */
    return xasprintf("%s\n%s", job_id, rcpt);
}

/* Under mu. */
static void note_locked(snd_ledger *l, char *key)
{
    if (sl_map_get(&l->set, key)) {
        free(key);
        return;
    }
    if (l->count == l->cap) {
        char *old = l->ring[l->head];
        sl_map_del(&l->set, old);
        free(old);
        l->head = (l->head + 1) % l->cap;
        l->count--;
    }
    sl_map_put(&l->set, key, (void *)1);
    l->ring[(l->head + l->count) % l->cap] = key;
    l->count++;
}

void snd_ledger_note(snd_ledger *l, const char *job_id, const char *rcpt)
{
    char *key = pair_key(job_id, rcpt);
    pthread_mutex_lock(&l->mu);
    note_locked(l, key);
    size_t n = l->count;
    pthread_mutex_unlock(&l->mu);
    sl_metric_set("sluice_sender_ledger_entries", NULL, (double)n);
}

bool snd_ledger_final(snd_ledger *l, const char *job_id, const char *rcpt)
{
    char *key = pair_key(job_id, rcpt);
    pthread_mutex_lock(&l->mu);
    bool found = sl_map_get(&l->set, key) != NULL;
    pthread_mutex_unlock(&l->mu);
    free(key);
    return found;
}

size_t snd_ledger_count(snd_ledger *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->count;
    pthread_mutex_unlock(&l->mu);
    return n;
}

int snd_ledger_publish(sl_producer *p, const sl_config *cfg, const void *key, size_t klen,
                       int32_t partition, int64_t offset, const char *job_id, const char *rcpt,
                       Sluice__V1__EventType type, const char *sender_id, sl_produce_cb cb,
                       void *arg)
{
    sl_event e;
    sl_event_from_job(&e, type, NULL, "sender");
    e.job_id = (char *)job_id;
    e.recipient = (char *)rcpt;
    e.sender_id = (char *)(sender_id ? sender_id : "");
    sl_buf b = SL_BUF_INIT;
    sl_pack(&e.base, &b);
    char where[48];
    snprintf(where, sizeof where, "%d/%lld", partition, (long long)offset);
    sl_header h = {"dispatch", where};
    char *topic = sl_config_topic(cfg, "ledger");
    int rc = sl_producer_send(p, topic, key, klen, b.data, b.len, &h, 1, cb, arg);
    free(topic);
    sl_buf_free(&b);
    return rc;
}

long snd_ledger_load(snd_ledger *l, const int32_t *partitions, size_t n)
{
    if (!n)
        return 0;
    const sl_config *cfg = l->cfg;
    char *topic = sl_config_topic(cfg, "ledger");
    rd_kafka_conf_t *kc = sl_kafka_conf(cfg, "consumer");
    char errstr[512];
    /* Never joins a group nor commits: it assigns partitions itself. */
    if (rd_kafka_conf_set(kc, "group.id", "sluice-sender-ledger", errstr, sizeof errstr) ||
        rd_kafka_conf_set(kc, "enable.auto.commit", "false", errstr, sizeof errstr) ||
        rd_kafka_conf_set(kc, "auto.offset.reset", "earliest", errstr, sizeof errstr) ||
        rd_kafka_conf_set(kc, "fetch.wait.max.ms", "20", errstr, sizeof errstr))
        sl_panic("ledger reader: %s", errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(kc);
        sl_error("ledger reader: %s", errstr);
        free(topic);
        sl_metric_inc("sluice_sender_ledger_load_failures_total", NULL, 1);
        return SL_EKAFKA;
    }
    int64_t since = sl_now_ms() - cfg->sender.ledger_lookback_ms;
    int64_t *end = xcalloc(n, sizeof *end);
    size_t left = 0;
    int64_t deadline = sl_mono_ms() + SND_LEDGER_LOAD_MS;
    long noted = 0, failed = 0;
    rd_kafka_topic_partition_list_t *asg = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, topic, partitions[i], &lo, &hi, 10000);
        if (e) {
            sl_error("ledger %s[%d]: cannot read its offsets: %s; its dispatches are sent "
                     "without the check",
                     topic, partitions[i], rd_kafka_err2str(e));
            failed++;
            end[i] = -1;
            continue;
        }
        end[i] = hi;
        if (hi > lo) {
            rd_kafka_topic_partition_list_add(asg, topic, partitions[i])->offset = since;
            left++;
        }
    }
    /* Start at the first record of the lookback where the broker can say
     * (real Kafka); otherwise (an error, or no answer: the dev broker) read
     * from the start: the timestamps filter below either way. */
    if (left) {
        rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, asg, 10000);
        for (int i = 0; i < asg->cnt; i++)
            if (e || asg->elems[i].err || asg->elems[i].offset < 0)
                asg->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk, asg);
    }
    while (left && sl_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                sl_warn("ledger reader: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        size_t k = 0;
        while (k < n && partitions[k] != m->partition)
            k++;
        if (k == n || end[k] < 0 || m->offset >= end[k]) {
            rd_kafka_message_destroy(m);
            continue;
        }
        rd_kafka_timestamp_type_t tt;
        int64_t ts = rd_kafka_message_timestamp(m, &tt);
        sl_event *e = NULL;
        const char *why = NULL;
        if ((ts < 0 || ts >= since) && sl_event_decode(m->payload, m->len, &e, &why) == 0) {
            if (snd_ledger_is_final(e->type) && e->job_id && *e->job_id && e->recipient) {
                pthread_mutex_lock(&l->mu);
                note_locked(l, pair_key(e->job_id, e->recipient));
                pthread_mutex_unlock(&l->mu);
                noted++;
            }
            sl_event_free(e);
        }
        if (m->offset + 1 >= end[k]) {
            end[k] = -1;
            left--;
        }
        rd_kafka_message_destroy(m);
    }
    if (left) {
        sl_error("ledger %s: %zu partition(s) not read to the end within %d ms; their "
                 "dispatches are checked against what was read",
                 topic, left, SND_LEDGER_LOAD_MS);
        failed++;
    }
    rd_kafka_topic_partition_list_destroy(asg);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(end);
    if (failed)
        sl_metric_inc("sluice_sender_ledger_load_failures_total", NULL, 1);
    sl_metric_inc("sluice_sender_ledger_loaded_total", NULL, (double)noted);
    sl_metric_set("sluice_sender_ledger_entries", NULL, (double)snd_ledger_count(l));
    sl_info("ledger %s: read back %ld final outcomes for %zu partition(s)", topic, noted, n);
    free(topic);
    return noted;
}
