/*
 * reader - see reader.h.
 */
#include "reader.h"
#include "kafka.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct sl_reader {
    rd_kafka_t *rk;
    int n_parts;
    bool *eof;   /* the partition was read to its end */
    int n_eof;
    int64_t *hw; /* its high watermark at open; -1: not known (EOF decides) */
};

static void mark_end(sl_reader *r, int32_t p)
{
    if (p >= 0 && p < r->n_parts && !r->eof[p]) {
        r->eof[p] = true;
        r->n_eof++;
    }
}

sl_reader *sl_reader_new(const sl_config *cfg, const char *topic, int64_t since_ms, char **err)
{
    /* A reader reaches the end of a quiet topic: do not let each empty
     * fetch wait the default half second. Nothing is ever committed under
     * its group id. */
    rd_kafka_t *rk = sl_kafka_assign_handle(cfg, "reader", "sluice-reader", err,
                                            "enable.partition.eof", "true", "auto.offset.reset",
                                            "earliest", "fetch.wait.max.ms", "20", NULL);
    if (!rk)
        return NULL;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = sl_kafka_topic_metadata(rk, topic, NULL, &md);
    if (!md) {
        *err = xasprintf("kafka: metadata for %s: %s (is Kafka at %s up?)", topic,
                         rd_kafka_err2str(e), cfg->kafka.bootstrap);
        rd_kafka_destroy(rk);
        return NULL;
    }
    int n = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id)->offset =
            since_ms > 0 ? since_ms : RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    /* "The end" is where each partition was at open: a topic written all
     * the time (the state topic, every 100 ms) may never show every
     * partition at EOF at once, and a reader waiting for that never ends. */
    int64_t *hw = xcalloc((size_t)n, sizeof *hw); /* by partition: they are 0..n-1 */
    e = sl_kafka_watermarks(rk, topic, NULL, (size_t)n, NULL, hw, 10000);
    /* Reading from the end starts at those high watermarks, not at
     * OFFSET_END: that one is resolved when the first fetch starts, and
     * would skip what is produced until then. */
    if (e && since_ms == SL_READER_END) {
        *err = xasprintf("kafka: end of %s: %s", topic, rd_kafka_err2str(e));
        free(hw);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy(rk);
        return NULL;
    }
    for (int i = 0; since_ms == SL_READER_END && i < n; i++)
        l->elems[i].offset = hw[l->elems[i].partition];
    if (since_ms > 0) {
        e = rd_kafka_offsets_for_times(rk, l, 10000);
        if (e)
            sl_warn("kafka: offsets for time: %s; reading from the beginning", rd_kafka_err2str(e));
        for (int i = 0; i < n; i++)
            if (e || l->elems[i].offset < 0)
                l->elems[i].offset = e ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
    }
    e = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        *err = xasprintf("kafka: assign %s: %s", topic, rd_kafka_err2str(e));
        free(hw);
        rd_kafka_destroy(rk);
        return NULL;
    }
    sl_reader *r = xcalloc(1, sizeof *r);
    r->rk = rk;
    r->n_parts = n;
    r->eof = xcalloc((size_t)n, sizeof *r->eof);
    r->hw = hw;
    return r;
}

rd_kafka_message_t *sl_reader_next(sl_reader *r, int timeout_ms)
{
    int64_t deadline = sl_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - sl_mono_ms();
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, left > 0 ? (int)left : 0);
        if (!m)
            return NULL;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            mark_end(r, m->partition);
            rd_kafka_message_destroy(m);
        } else if (m->err) {
            sl_warn("kafka: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
        } else {
            if (m->partition >= 0 && m->partition < r->n_parts && r->hw[m->partition] >= 0 &&
                m->offset + 1 >= r->hw[m->partition])
                mark_end(r, m->partition);
            return m;
        }
        if (sl_mono_ms() >= deadline)
            return NULL;
    }
}

bool sl_reader_at_end(const sl_reader *r)
{
    return r->n_eof == r->n_parts;
}

void sl_reader_free(sl_reader *r)
{
    if (!r)
        return;
    rd_kafka_consumer_close(r->rk);
    rd_kafka_destroy(r->rk);
    free(r->eof);
    free(r->hw);
    free(r);
}

int sl_reader_partitions(const sl_reader *r)
{
    return r->n_parts;
}

rd_kafka_t *sl_reader_handle(sl_reader *r)
{
    return r->rk;
}

int sl_reader_each(sl_reader *r, int64_t timeout_ms, const atomic_bool *cancel, sl_reader_fn fn,
                   void *arg)
{
    int64_t deadline = sl_mono_ms() + timeout_ms;
    while (!sl_reader_at_end(r)) {
        if (cancel && atomic_load(cancel))
            return SL_ECLOSED;
        if (sl_mono_ms() >= deadline)
            return SL_ETIMEOUT;
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m)
            continue;
        fn(arg, m);
        rd_kafka_message_destroy(m);
    }
    return 0;
}
