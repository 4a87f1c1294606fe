/*
 * cli_committed - a consumer group's committed offsets, read without
 * joining the group: what `sluice dlq` and `sluice queue` count from (see
 * cli_committed() in cli.h).
 */
#include "cli.h"
#include "config.h"
#include "kafka.h"
#include "util.h"

int cli_committed(const sl_config *cfg, const char *group, const char *topic,
                  int64_t **offsets, int *n_parts, rd_kafka_t **rkp, char **err)
{
    rd_kafka_t *rk = sl_kafka_assign_handle(cfg, "cli", group, err, NULL);
    if (!rk)
        return -1;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    int rc = -1;
    if (e || md->topic_cnt != 1 || md->topics[0].err) {
        *err = xasprintf("kafka: metadata for %s: %s", topic,
                         rd_kafka_err2str(e ? e : md->topics[0].err));
        goto out;
    }
    int n = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, i);
    e = rd_kafka_committed(rk, l, 10000);
    if (e) {
        *err = xasprintf("kafka: committed offsets of %s: %s", group, rd_kafka_err2str(e));
    } else {
        *offsets = xcalloc(n ? (size_t)n : 1, sizeof **offsets);
        for (int i = 0; i < n; i++)
            (*offsets)[i] = l->elems[i].offset >= 0 ? l->elems[i].offset : 0;
        *n_parts = n;
        rc = 0;
    }
    rd_kafka_topic_partition_list_destroy(l);
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rc == 0 && rkp) {
        *rkp = rk;
    } else {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    return rc;
}
