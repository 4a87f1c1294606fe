/*
 * test_kafka_fatal - sl_producer survives a fatal idempotent-producer error.
 *
 * librdkafka 2.0.2 raises fatal idempotence errors (out-of-order sequence
 * numbers after a broker restart; fixed upstream in 2.3.0). sl_producer
 * then builds a new producer and produces again every record not yet
 * acknowledged (common/kafka.c). Here librdkafka's own mock cluster (3
 * brokers, in this process) takes the records, rd_kafka_test_fatal_error()
 * raises the fatal error while records are queued and in flight, and the
 * topic is read back: every record is there (duplicates allowed, each
 * counted against the records not yet acknowledged at the error), every
 * callback fired once with success, and the producer was recreated.
 */
#include "config.h"
#include "kafka.h"
#include "metrics.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define N 4000 /* before the error */
#define LATE 10 /* after it */
#define TOPIC "fatal.jobs"

static int acked[N + LATE];
static int failed;

static void ack(void *arg, int err)
{
    intptr_t i = (intptr_t)arg;
    if (err)
        failed++;
    else
        acked[i]++;
}

/* Every record of TOPIC up to its high watermark: how many times each
 * value i was stored. */
static void read_back(const char *bootstrap, int *seen, int *total)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char errstr[256];
    assert_int_equal(rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(c, "group.id", "test-kafka-fatal", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof errstr);
    assert_non_null(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, TOPIC, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    int64_t lo = -1, hi = -1;
    int32_t p0 = 0;
    assert_int_equal(sl_kafka_watermarks(rk, TOPIC, &p0, 1, &lo, &hi, 10000), 0);
    assert_true(lo >= 0 && hi >= lo);
    *total = 0;
    for (int idle = 0; idle < 300 && *total < hi - lo;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            idle++; /* 30 s without a record: give up */
            continue;
        }
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        char buf[16] = {0};
        memcpy(buf, m->payload, m->len < sizeof buf - 1 ? m->len : sizeof buf - 1);
        int i = atoi(buf);
        assert_true(i >= 0 && i < N + LATE);
        seen[i]++;
        (*total)++;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static void test_fatal_error_recreates_and_resends(void **state)
{
    (void)state;
    /* The mock cluster lives in a handle of its own. */
    rd_kafka_conf_t *mc = rd_kafka_conf_new();
    char errstr[256];
    rd_kafka_conf_set(mc, "test.mock.num.brokers", "3", NULL, 0);
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, mc, errstr, sizeof errstr);
    assert_non_null(host);
    rd_kafka_mock_cluster_t *mock = rd_kafka_handle_mock_cluster(host);
    assert_non_null(mock);
    assert_int_equal(rd_kafka_mock_topic_create(mock, TOPIC, 1, 3), 0);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mock);

    /* A linger long enough that each half goes in few batches. */
    char yaml[512];
    int n = snprintf(yaml, sizeof yaml, "kafka:\n  bootstrap: \"%s\"\n  linger_ms: 200\n",
                     bootstrap);
    sl_config *cfg = NULL;
    char *err = NULL;
    assert_int_equal(sl_config_parse("test.yaml", yaml, (size_t)n, &cfg, &err), 0);
    sl_producer *p = sl_producer_new(cfg, NULL, &err);
    assert_non_null(p);
    double before = sl_metric_get("sluice_kafka_producer_recreated_total", NULL);

    /* Half the records acknowledged, the other half queued or in flight
     * when the fatal error strikes. */
    char val[16];
    for (int i = 0; i < N / 2; i++) {
        int len = snprintf(val, sizeof val, "%d", i);
        assert_int_equal(sl_producer_send(p, TOPIC, "k", 1, val, (size_t)len, NULL, 0, ack,
                                          (void *)(intptr_t)i),
                         0);
    }
    assert_int_equal(sl_producer_flush(p, 30000), 0);
    for (int i = N / 2; i < N; i++) {
        int len = snprintf(val, sizeof val, "%d", i);
        assert_int_equal(sl_producer_send(p, TOPIC, "k", 1, val, (size_t)len, NULL, 0, ack,
                                          (void *)(intptr_t)i),
                         0);
    }
    size_t unacked = sl_producer_outstanding(p);
    assert_int_equal(rd_kafka_test_fatal_error(sl_producer_handle(p),
                                               RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                               "a sequence error after a broker restart"),
                     0);
    /* Produced after the error: the old producer refuses it at once. */
    for (int i = N; i < N + LATE; i++) {
        int len = snprintf(val, sizeof val, "%d", i);
        assert_int_equal(sl_producer_send(p, TOPIC, "k", 1, val, (size_t)len, NULL, 0, ack,
                                          (void *)(intptr_t)i),
                         0);
    }
    assert_int_equal(sl_producer_flush(p, 60000), 0);
    assert_true(sl_metric_get("sluice_kafka_producer_recreated_total", NULL) >= before + 1);
    assert_int_equal(failed, 0);
    for (int i = 0; i < N + LATE; i++)
        if (acked[i] != 1)
            fail_msg("record %d acknowledged %d times", i, acked[i]);

    static int seen[N + LATE];
    int total = 0;
    read_back(bootstrap, seen, &total);
    int dups = 0;
    int lost = 0;
    for (int i = 0; i < N + LATE; i++) {
        if (!seen[i] && lost++ < 5)
            print_error("record %d lost\n", i);
        dups += seen[i] ? seen[i] - 1 : 0;
    }
    print_message("unacknowledged at the error %zu, stored twice %d, records %d\n", unacked, dups,
                  total);
    assert_int_equal(lost, 0);
    /* A record stored before the error but not yet acknowledged is sent
     * again: at most what was outstanding at the error. */
    assert_true(dups >= 0 && (size_t)dups <= unacked);
    print_message("unacknowledged at the error %zu, stored twice %d, records %d\n", unacked, dups,
                  total);

    sl_producer_free(p);
    sl_config_free(cfg);
    rd_kafka_destroy(host);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fatal_error_recreates_and_resends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
