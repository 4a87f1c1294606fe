/*
 * ledger - see ledger.h.
 */
#include "cmdline.h"
#include "ledger.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct snd_ledger {
    const sl_config *cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* the follower advanced */
    sl_map set;         /* "job id\nrecipient" -> (void *)(uintptr_t) final type */
    sl_map claims;      /* pairs a transaction of this sender holds */
    char **ring;        /* the same keys, oldest first from head, for eviction */
    size_t cap, head, count;
    /* the follower */
    rd_kafka_t *rk;
    char *topic;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    int64_t since_ms;
    int n_parts;
    int64_t *pos;       /* under mu: next offset to read, per partition */
    int64_t *maxled;    /* under mu: highest dispatch offset the ledger names, per partition */
    int64_t *suspect;   /* under mu: dispatches below this were maybe sent by the last owner */
    bool *clean;        /* under mu: the partition's last record is a hand-over marker */
    rd_kafka_t *pk;     /* writes the hand-over markers (consumer thread) */
    long loaded;        /* under mu: records noted by the follower */
    /* The loader: reads the ledger for an assignment off the consumer
     * thread (snd_ledger_assign). */
    pthread_t loader;
    bool loader_running;
    pthread_cond_t lcv;  /* a request, or stop */
    bool *ready;         /* under mu: the partition's ledger is loaded */
    int32_t *req;        /* under mu: the assignment to load; NULL: none */
    size_t n_req;
    uint64_t gen;        /* under mu: assignments seen */
};

snd_ledger *snd_ledger_new(const sl_config *cfg)
{
    if (!cfg->sender.ledger)
        return NULL;
    snd_ledger *l = xcalloc(1, sizeof *l);
    l->cfg = cfg;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    pthread_cond_init(&l->lcv, NULL);
    sl_map_init(&l->set);
    sl_map_init(&l->claims);
    l->cap = cfg->sender.ledger_max_entries ? cfg->sender.ledger_max_entries : 1000;
    l->ring = xcalloc(l->cap, sizeof *l->ring);
    sl_metric_help("sluice_sender_ledger_skipped_total", SL_METRIC_COUNTER,
                   "Recipients not sent because the delivery ledger had their final outcome");
    sl_metric_help("sluice_sender_ledger_loaded_total", SL_METRIC_COUNTER,
                   "Final outcomes the ledger follower read from the ledger topic");
    sl_metric_help("sluice_sender_ledger_entries", SL_METRIC_GAUGE,
                   "Job and recipient pairs the ledger lookup holds");
    sl_metric_help("sluice_sender_ledger_load_failures_total", SL_METRIC_COUNTER,
                   "Assignments whose ledger partitions could not be read back in full");
    sl_metric_help("sluice_sender_ledger_held_total", SL_METRIC_COUNTER,
                   "Dispatches held at their slot until their partition's ledger was loaded");
    sl_metric_set("sluice_sender_ledger_entries", NULL, 0);
    return l;
}

void snd_ledger_free(snd_ledger *l)
{
    if (!l)
        return;
    atomic_store(&l->stop, true);
    if (l->loader_running) {
        pthread_mutex_lock(&l->mu);
        pthread_cond_broadcast(&l->lcv);
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->loader, NULL);
    }
    if (l->running)
        pthread_join(l->thread, NULL);
    if (l->rk) {
        rd_kafka_consumer_close(l->rk);
        rd_kafka_destroy(l->rk);
    }
    free(l->topic);
    free(l->pos);
    free(l->maxled);
    free(l->suspect);
    free(l->clean);
    free(l->ready);
    free(l->req);
    if (l->pk)
        rd_kafka_destroy(l->pk);
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->lcv);
    for (size_t i = 0; i < l->count; i++)
        free(l->ring[(l->head + i) % l->cap]);
    free(l->ring);
    sl_map_free(&l->set);
    sl_map_free(&l->claims);
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
static void note_locked(snd_ledger *l, char *key, Sluice__V1__EventType t)
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
    /* A final type is never EVENT_UNKNOWN (0): the value is never NULL. */
    sl_map_put(&l->set, key, (void *)(uintptr_t)t);
    l->ring[(l->head + l->count) % l->cap] = key;
    l->count++;
}

void snd_ledger_note(snd_ledger *l, const char *job_id, const char *rcpt,
                     Sluice__V1__EventType t)
{
    char *key = pair_key(job_id, rcpt);
    pthread_mutex_lock(&l->mu);
    note_locked(l, key, t);
    size_t n = l->count;
    pthread_mutex_unlock(&l->mu);
    sl_metric_set("sluice_sender_ledger_entries", NULL, (double)n);
}

bool snd_ledger_final(snd_ledger *l, const char *job_id, const char *rcpt)
{
    return snd_ledger_outcome(l, job_id, rcpt) != SLUICE__V1__EVENT_TYPE__EVENT_UNKNOWN;
}

Sluice__V1__EventType snd_ledger_outcome(snd_ledger *l, const char *job_id, const char *rcpt)
{
    char *key = pair_key(job_id, rcpt);
    pthread_mutex_lock(&l->mu);
    Sluice__V1__EventType t = (Sluice__V1__EventType)(uintptr_t)sl_map_get(&l->set, key);
    pthread_mutex_unlock(&l->mu);
    free(key);
    return t;
}

void snd_ledger_handover(snd_ledger *l, const int32_t *partitions, size_t n)
{
    if (!l->pk || !l->running || !n)
        return;
    sl_event e;
    sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_UNKNOWN, NULL, "sender");
    sl_buf b = SL_BUF_INIT;
    sl_pack(&e.base, &b);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            l->pk, RD_KAFKA_V_TOPIC(l->topic), RD_KAFKA_V_PARTITION(partitions[i]),
            RD_KAFKA_V_VALUE(b.data, b.len), RD_KAFKA_V_HEADER("handover", "1", 1),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err)
            sl_warn("ledger %s[%d]: hand-over marker: %s", l->topic, partitions[i],
                    rd_kafka_err2str(err));
    }
    sl_buf_free(&b);
    if (rd_kafka_flush(l->pk, 5000))
        sl_warn("ledger %s: hand-over markers not acknowledged within 5 s", l->topic);
}

bool snd_ledger_suspect(snd_ledger *l, int32_t partition, int64_t offset)
{
    pthread_mutex_lock(&l->mu);
    bool s = partition >= 0 && partition < l->n_parts && offset < l->suspect[partition];
    pthread_mutex_unlock(&l->mu);
    return s;
}

int snd_ledger_claim(snd_ledger *l, const char *job_id, const char *rcpt)
{
    char *key = pair_key(job_id, rcpt);
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    if (sl_map_get(&l->set, key))
        rc = SND_LEDGER_FINAL;
    else if (sl_map_get(&l->claims, key))
        rc = SND_LEDGER_BUSY;
    else
        sl_map_put(&l->claims, key, (void *)1);
    pthread_mutex_unlock(&l->mu);
    free(key);
    return rc;
}

void snd_ledger_unclaim(snd_ledger *l, const char *job_id, const char *rcpt)
{
    char *key = pair_key(job_id, rcpt);
    pthread_mutex_lock(&l->mu);
    sl_map_del(&l->claims, key);
    pthread_mutex_unlock(&l->mu);
    free(key);
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

/* ---- the follower ---- */

/* The follower's thread: every ledger record, noted as it arrives. */
static void *follow_main(void *arg)
{
    snd_ledger *l = arg;
    while (!atomic_load(&l->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(l->rk, 100);
        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                sl_warn("ledger follower: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        rd_kafka_timestamp_type_t tt;
        int64_t ts = rd_kafka_message_timestamp(m, &tt);
        sl_event *e = NULL;
        const char *why = NULL;
        char *key = NULL;
        Sluice__V1__EventType ftype = SLUICE__V1__EVENT_TYPE__EVENT_UNKNOWN;
        int dp = -1;
        long long doff = -1;
        rd_kafka_headers_t *hdrs = NULL;
        const void *hv = NULL;
        size_t hl = 0;
        bool marker = !rd_kafka_message_headers(m, &hdrs) &&
                      !rd_kafka_header_get_last(hdrs, "handover", &hv, &hl);
        if (!marker && hdrs && !rd_kafka_header_get_last(hdrs, "dispatch", &hv, &hl) && hv &&
            hl < 40) {
            char buf[48];
            memcpy(buf, hv, hl);
            buf[hl] = 0;
            if (sscanf(buf, "%d/%lld", &dp, &doff) != 2)
                dp = -1;
        }
        if ((ts < 0 || ts >= l->since_ms) && m->payload &&
            sl_event_decode(m->payload, m->len, &e, &why) == 0) {
            if (snd_ledger_is_final(e->type) && e->job_id && *e->job_id && e->recipient) {
                key = pair_key(e->job_id, e->recipient);
                ftype = e->type;
            }
            sl_event_free(e);
        }
        pthread_mutex_lock(&l->mu);
        if (key) {
            note_locked(l, key, ftype);
            l->loaded++;
        }
        if (m->partition >= 0 && m->partition < l->n_parts && m->offset + 1 > l->pos[m->partition])
            l->pos[m->partition] = m->offset + 1;
        if (dp >= 0 && dp < l->n_parts && doff > l->maxled[dp])
            l->maxled[dp] = doff;
        if (m->partition >= 0 && m->partition < l->n_parts)
            l->clean[m->partition] = marker;
        size_t count = l->count;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        rd_kafka_message_destroy(m);
        if (key) {
            sl_metric_inc("sluice_sender_ledger_loaded_total", NULL, 1);
            sl_metric_set("sluice_sender_ledger_entries", NULL, (double)count);
        }
    }
    return NULL;
}

/* The loader's thread: loads the latest assignment's ledger partitions
 * and marks them ready, unless a newer assignment came meanwhile (that one
 * loads them again). */
static void *load_main(void *arg)
{
    snd_ledger *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!atomic_load(&l->stop)) {
        if (!l->req) {
            pthread_cond_wait(&l->lcv, &l->mu);
            continue;
        }
        int32_t *parts = l->req;
        size_t n = l->n_req;
        uint64_t gen = l->gen;
        l->req = NULL;
        pthread_mutex_unlock(&l->mu);
        snd_ledger_load(l, parts, n);
        pthread_mutex_lock(&l->mu);
        if (gen == l->gen && !atomic_load(&l->stop)) {
            for (size_t i = 0; i < n; i++)
                if (parts[i] >= 0 && parts[i] < l->n_parts)
                    l->ready[parts[i]] = true;
            sl_info("ledger %s: %zu partition(s) loaded; their dispatches go out", l->topic, n);
        }
        free(parts);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

void snd_ledger_assign(snd_ledger *l, const int32_t *partitions, size_t n)
{
    pthread_mutex_lock(&l->mu);
    l->gen++;
    for (int p = 0; p < l->n_parts; p++)
        l->ready[p] = false;
    free(l->req);
    l->req = xcalloc(n ? n : 1, sizeof *l->req);
    memcpy(l->req, partitions, n * sizeof *partitions);
    l->n_req = n;
    pthread_cond_broadcast(&l->lcv);
    pthread_mutex_unlock(&l->mu);
}

bool snd_ledger_ready(snd_ledger *l, int32_t partition)
{
    pthread_mutex_lock(&l->mu);
    /* A partition the ledger does not have is sent unchecked (logged by
     * the load). */
    bool r = partition < 0 || partition >= l->n_parts || l->ready[partition];
    pthread_mutex_unlock(&l->mu);
    return r;
}

int snd_ledger_start(snd_ledger *l, char **err)
{
    const sl_config *cfg = l->cfg;
    char *topic = sl_config_topic(cfg, "ledger");
    rd_kafka_conf_t *kc = sl_kafka_conf(cfg, "consumer");
    char errstr[512];
    /* Never joins a group nor commits: it assigns partitions itself. The
     * senders' group id lets it read their committed dispatch offsets. */
    char *gid = sl_config_group(cfg, SL_GROUP_SENDER);
    int bad = rd_kafka_conf_set(kc, "group.id", gid, errstr, sizeof errstr) != RD_KAFKA_CONF_OK;
    free(gid);
    if (bad ||
        rd_kafka_conf_set(kc, "enable.auto.commit", "false", errstr, sizeof errstr) ||
        rd_kafka_conf_set(kc, "auto.offset.reset", "earliest", errstr, sizeof errstr) ||
        rd_kafka_conf_set(kc, "fetch.wait.max.ms", "20", errstr, sizeof errstr))
        sl_panic("ledger follower: %s", errstr);
    l->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof errstr);
    if (!l->rk) {
        rd_kafka_conf_destroy(kc);
        *err = xasprintf("ledger follower: %s", errstr);
        free(topic);
        return SL_EKAFKA;
    }
    /* Up to 50 s for a cluster that is starting too, but no longer than
     * the next try once the daemon has been told to stop. */
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = sl_kafka_topic_metadata(l->rk, topic, sl_daemon_early_signal, &md);
    if (!md) {
        if (e == RD_KAFKA_RESP_ERR__TRANSPORT || e == RD_KAFKA_RESP_ERR__TIMED_OUT ||
            e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
            *err = xasprintf("ledger topic %s: cannot reach Kafka at %s: %s", topic,
                             cfg->kafka.bootstrap, rd_kafka_err2str(e));
        else
            *err = xasprintf("ledger topic %s: %s (create it with `sluice topics ensure`)", topic,
                             rd_kafka_err2str(e));
        free(topic);
        rd_kafka_destroy(l->rk);
        l->rk = NULL;
        return SL_EKAFKA;
    }
    int n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    l->n_parts = n;
    l->pos = xcalloc((size_t)n, sizeof *l->pos);
    l->maxled = xcalloc((size_t)n, sizeof *l->maxled);
    l->suspect = xcalloc((size_t)n, sizeof *l->suspect);
    l->clean = xcalloc((size_t)n, sizeof *l->clean);
    l->ready = xcalloc((size_t)n, sizeof *l->ready);
    for (int i = 0; i < n; i++)
        l->maxled[i] = l->suspect[i] = -1;
    /* An empty ledger partition had no owner that could have died in the
     * window. */
    for (int i = 0; i < n; i++)
        l->clean[i] = true;
    rd_kafka_conf_t *pc = sl_kafka_conf(cfg, "producer");
    if (rd_kafka_conf_set(pc, "acks", "all", errstr, sizeof errstr))
        sl_panic("ledger markers: %s", errstr);
    l->pk = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr);
    if (!l->pk) {
        rd_kafka_conf_destroy(pc);
        sl_warn("ledger markers: %s; hand-overs will look unclean", errstr);
    }
    l->since_ms = sl_now_ms() - cfg->sender.ledger_lookback_ms;
    rd_kafka_topic_partition_list_t *asg = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(asg, topic, i)->offset = l->since_ms;
    /* Start at the first record of the lookback where the broker can say
     * (real Kafka); otherwise (an error, or no answer: the dev broker) at
     * the start: the timestamps filter either way. */
    e = rd_kafka_offsets_for_times(l->rk, asg, 10000);
    for (int i = 0; i < n; i++) {
        if (e || asg->elems[i].err || asg->elems[i].offset < 0)
            asg->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        else
            l->pos[i] = asg->elems[i].offset;
    }
    e = rd_kafka_assign(l->rk, asg);
    rd_kafka_topic_partition_list_destroy(asg);
    l->topic = topic;
    if (e) {
        *err = xasprintf("ledger follower: assign %s: %s", topic, rd_kafka_err2str(e));
        return SL_EKAFKA;
    }
    if (pthread_create(&l->thread, NULL, follow_main, l) != 0)
        sl_panic("pthread_create: %s", strerror(errno));
    l->running = true;
    if (pthread_create(&l->loader, NULL, load_main, l) != 0)
        sl_panic("pthread_create: %s", strerror(errno));
    l->loader_running = true;
    return 0;
}

long snd_ledger_load(snd_ledger *l, const int32_t *partitions, size_t n)
{
    if (!n)
        return 0;
    if (!l->running) {
        sl_error("ledger: not followed; the dispatches of %zu partition(s) are sent unchecked", n);
        sl_metric_inc("sluice_sender_ledger_load_failures_total", NULL, 1);
        return SL_EKAFKA;
    }
    int64_t t0 = sl_mono_ms(), deadline = t0 + SND_LEDGER_LOAD_MS;
    int64_t *lo = xcalloc(n, sizeof *lo), *end = xcalloc(n, sizeof *end);
    size_t failed = 0;
    /* The follower fetches every partition, so its cached watermarks are
     * what the log held a moment ago; ask a broker (briefly) only when one
     * is missing: a partition whose leader just died answers nothing, and
     * its dispatches wait meanwhile. */
    bool cached = true;
    for (size_t i = 0; i < n; i++)
        if (rd_kafka_get_watermark_offsets(l->rk, l->topic, partitions[i], &lo[i], &end[i]) ||
            lo[i] < 0 || end[i] < 0)
            cached = false;
    rd_kafka_resp_err_t e =
        cached ? RD_KAFKA_RESP_ERR_NO_ERROR
               : sl_kafka_watermarks(l->rk, l->topic, partitions, n, lo, end, SND_LEDGER_QUERY_MS);
    for (size_t i = 0; i < n; i++) {
        if (partitions[i] < 0 || partitions[i] >= l->n_parts) {
            sl_error("ledger %s has no partition %d: its dispatches are sent unchecked "
                     "(the ledger needs the dispatch topic's partition count)",
                     l->topic, partitions[i]);
            failed++;
            end[i] = -1;
        } else if (lo[i] < 0 || end[i] < 0) {
            sl_error("ledger %s[%d]: cannot read its offsets: %s; its dispatches are checked "
                     "against what was read so far",
                     l->topic, partitions[i], rd_kafka_err2str(e));
            failed++;
            end[i] = -1;
        } else if (end[i] <= lo[i]) {
            end[i] = -1; /* empty: nothing to read */
        }
    }
    free(lo);
    /* The follower reads every partition; wait until it has reached, in
     * these, what the log held when they were assigned. */
    pthread_mutex_lock(&l->mu);
    long before = l->loaded;
    size_t left;
    for (;;) {
        left = 0;
        for (size_t i = 0; i < n; i++)
            if (end[i] >= 0 && l->pos[partitions[i]] < end[i])
                left++;
        if (!left || sl_mono_ms() >= deadline || atomic_load(&l->stop))
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
    long noted = l->loaded - before;
    size_t count = l->count;
    pthread_mutex_unlock(&l->mu);
    /* The possible duplicates: dispatches that a previous owner may have
     * sent without its ledger record landing, i.e. those not far above the
     * last one the ledger names (its in-flight window), and already in the
     * log now (what it could have fetched). */
    char *dtopic = sl_config_topic(l->cfg, "dispatch");
    rd_kafka_topic_partition_list_t *cl = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(cl, dtopic, partitions[i]);
    if (rd_kafka_committed(l->rk, cl, SND_LEDGER_QUERY_MS))
        for (int i = 0; i < cl->cnt; i++)
            cl->elems[i].offset = -1;
    int64_t *dend = xcalloc(n, sizeof *dend);
    sl_kafka_watermarks(l->rk, dtopic, partitions, n, NULL, dend, SND_LEDGER_QUERY_MS);
    for (size_t i = 0; i < n; i++) {
        int32_t p = partitions[i];
        if (p < 0 || p >= l->n_parts)
            continue;
        int64_t hi = dend[i];
        int64_t committed = cl->elems[i].offset >= 0 ? cl->elems[i].offset : 0;
        pthread_mutex_lock(&l->mu);
        /* After a clean hand-over (the last owner's marker is the last
         * record) nothing is suspect; otherwise the last owner's window:
         * from the committed offset to sender.max_inflight records past
         * the last dispatch the ledger names. */
        int64_t upto = -1;
        if (!l->clean[p]) {
            int64_t base = l->maxled[p] >= committed ? l->maxled[p] + 1 : committed;
            upto = base + (int64_t)l->cfg->sender.max_inflight;
        }
        l->suspect[p] = upto < hi ? upto : hi;
        pthread_mutex_unlock(&l->mu);
    }
    rd_kafka_topic_partition_list_destroy(cl);
    free(dtopic);
    free(dend);
    free(end);
    if (left) {
        sl_error("ledger %s: %zu partition(s) not read to the end within %d ms; their "
                 "dispatches are checked against what was read",
                 l->topic, left, SND_LEDGER_LOAD_MS);
        failed++;
    }
    if (failed)
        sl_metric_inc("sluice_sender_ledger_load_failures_total", NULL, 1);
    sl_metric_set("sluice_sender_ledger_entries", NULL, (double)count);
    sl_info("ledger %s: caught up on %zu partition(s) in %lld ms (%zu pairs held)", l->topic, n,
            (long long)(sl_mono_ms() - t0), count);
    return noted;
}
