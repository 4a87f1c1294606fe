/*
 * cli_topics - `sluice topics ensure|list [-c FILE]`.
 *
 * ensure: creates every topic of sl_topics() that the cluster does not have,
 * through the Admin API (CreateTopics), compacted ones with
 * cleanup.policy=compact, every one with max.message.bytes from the size
 * budget (budget.h), replication factor kafka.replication_factor capped
 * at the number of brokers in the metadata. Idempotent: a topic that exists
 * (or that another process creates at the same time) is reported as
 * "exists"; one with fewer partitions than configured gets a warning and is
 * left alone - this command never deletes nor repartitions anything, since
 * adding partitions moves keys (domains, sites) to other partitions.
 * One line per topic on stdout: "created NAME (N partitions...)" or
 * "exists NAME (N partitions)".
 *
 * list: every configured topic with its partition count from metadata
 * ("missing" when absent), then other topics under the prefix, marked
 * "not configured" (e.g. retry topics of an older retry.delays).
 *
 * Exit status: 0 ok, 1 Kafka errors (unreachable, creation failed), 2 bad
 * usage or configuration.
 */
#include "cli.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPICS_TIMEOUT_MS 15000

static void topics_usage(FILE *f)
{
    fputs("usage: sluice topics ensure [-c FILE]   create missing sluice topics\n"
          "       sluice topics list [-c FILE]     show them with partition counts\n",
          f);
}

/* The partition count of topic in md, or -1 when the cluster lacks it. */
static int topics_partitions(const rd_kafka_metadata_t *md, const char *name)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, name))
            return md->topics[i].err ? -1 : md->topics[i].partition_cnt;
    return -1;
}

static int topics_list(const sl_topic_spec *t, size_t n, const rd_kafka_metadata_t *md,
                       const char *prefix)
{
    printf("%-36s %10s  %s\n", "TOPIC", "PARTITIONS", "POLICY");
    for (size_t i = 0; i < n; i++) {
        int p = topics_partitions(md, t[i].name);
        const char *policy = t[i].compacted ? "compact" : "delete";
        if (p < 0)
            printf("%-36s %10s  %s\n", t[i].name, "missing", policy);
        else if (p < t[i].partitions)
            printf("%-36s %10d  %s (configured %d)\n", t[i].name, p, policy, t[i].partitions);
        else
            printf("%-36s %10d  %s\n", t[i].name, p, policy);
    }
    size_t pl = strlen(prefix);
    for (int i = 0; i < md->topic_cnt; i++) {
        const char *name = md->topics[i].topic;
        if (md->topics[i].err || (pl && strncmp(name, prefix, pl)) || name[0] == '_')
            continue;
        bool known = false;
        for (size_t j = 0; j < n && !known; j++)
            known = !strcmp(t[j].name, name);
        if (!known && pl)
            printf("%-36s %10d  (not configured)\n", name, md->topics[i].partition_cnt);
    }
    return 0;
}

/* Create the topics of t[] marked in want[]; prints a line for each. */
static int topics_create(rd_kafka_t *rk, const sl_topic_spec *t, size_t n, const bool *want, int rf)
{
    size_t nnew = 0;
    rd_kafka_NewTopic_t **nt = xcalloc(n, sizeof *nt);
    char errstr[512];
    for (size_t i = 0; i < n; i++) {
        if (!want[i])
            continue;
        nt[nnew] = rd_kafka_NewTopic_new(t[i].name, t[i].partitions, rf, errstr, sizeof errstr);
        if (!nt[nnew])
            sl_panic("NewTopic %s: %s", t[i].name, errstr);
        /* Compacted with a retention: the newest record of each key,
         * and none older than the retention. */
        if (t[i].compacted &&
            rd_kafka_NewTopic_set_config(nt[nnew], "cleanup.policy",
                                         t[i].retention_ms > 0 ? "compact,delete" : "compact") != 0)
            sl_panic("NewTopic %s: cannot set cleanup.policy", t[i].name);
        /* The size budget: every record a stage produces for an accepted
         * job fits (budget.h). */
        char maxb[24];
        snprintf(maxb, sizeof maxb, "%llu", (unsigned long long)t[i].max_message_bytes);
        if (rd_kafka_NewTopic_set_config(nt[nnew], "max.message.bytes", maxb) != 0)
            sl_panic("NewTopic %s: cannot set max.message.bytes", t[i].name);
        /* The delivery ledger: kept as long as a new owner reads it back,
         * with a margin; short segments so that retention can act. */
        if (t[i].retention_ms > 0) {
            char ms[24];
            snprintf(ms, sizeof ms, "%lld", (long long)t[i].retention_ms);
            if (rd_kafka_NewTopic_set_config(nt[nnew], "retention.ms", ms) != 0 ||
                rd_kafka_NewTopic_set_config(nt[nnew], "segment.ms", ms) != 0)
                sl_panic("NewTopic %s: cannot set retention.ms", t[i].name);
        }
        nnew++;
    }
    int rc = 0;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, TOPICS_TIMEOUT_MS, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_request_timeout(opts, TOPICS_TIMEOUT_MS, errstr, sizeof errstr);
    rd_kafka_CreateTopics(rk, nt, nnew, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, TOPICS_TIMEOUT_MS + 5000);
    if (!ev) {
        fprintf(stderr, "sluice topics: CreateTopics timed out\n");
        rc = 1;
    } else if (rd_kafka_event_error(ev)) {
        /* librdkafka's mock cluster (sluice-devbroker) has no controller
         * and so cannot create topics; it creates the configured ones
         * itself when it starts. */
        fprintf(stderr,
                "sluice topics: CreateTopics: %s\n"
                "sluice topics: (sluice-devbroker cannot create topics through the Admin API; "
                "start it with the same -c file and it creates them itself)\n",
                rd_kafka_event_error_string(ev));
        rc = 1;
    } else {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t nres;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &nres);
        for (size_t i = 0; i < nres; i++) {
            const char *name = rd_kafka_topic_result_name(tr[i]);
            rd_kafka_resp_err_t err = rd_kafka_topic_result_error(tr[i]);
            int parts = 0;
            bool compacted = false;
            unsigned long long maxb = 0;
            for (size_t j = 0; j < n; j++)
                if (!strcmp(t[j].name, name)) {
                    parts = t[j].partitions;
                    compacted = t[j].compacted;
                    maxb = (unsigned long long)t[j].max_message_bytes;
                }
            if (!err) {
                printf("created %s (%d partitions, replication %d%s, max.message.bytes %llu)\n",
                       name, parts, rf, compacted ? ", compacted" : "", maxb);
            } else if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                /* Someone else created it between our metadata and now. */
                printf("exists %s\n", name);
            } else {
                const char *msg = rd_kafka_topic_result_error_string(tr[i]);
                fprintf(stderr, "sluice topics: create %s: %s\n", name,
                        msg ? msg : rd_kafka_err2str(err));
                rc = 1;
            }
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy_array(nt, nnew);
    free(nt);
    return rc;
}

static int topics_ensure(rd_kafka_t *rk, const sl_config *cfg, const sl_topic_spec *t, size_t n,
                         const rd_kafka_metadata_t *md)
{
    int rf = cfg->kafka.replication_factor > 0 ? cfg->kafka.replication_factor : 3;
    bool capped = md->broker_cnt > 0 && rf > md->broker_cnt;
    if (capped)
        rf = md->broker_cnt;
    bool *want = xcalloc(n, sizeof *want);
    size_t nwant = 0;
    for (size_t i = 0; i < n; i++) {
        int p = topics_partitions(md, t[i].name);
        if (p < 0) {
            want[i] = true;
            nwant++;
            continue;
        }
        printf("exists %s (%d partitions)\n", t[i].name, p);
        if (p < t[i].partitions)
            fprintf(stderr,
                    "sluice topics: warning: %s has %d partitions, configured %d; "
                    "left as is (adding partitions moves keys between consumers)\n",
                    t[i].name, p, t[i].partitions);
    }
    if (nwant && capped)
        fprintf(stderr,
                "sluice topics: warning: replication factor %d capped at the %d broker(s) "
                "of the cluster\n",
                cfg->kafka.replication_factor, rf);
    int rc = nwant ? topics_create(rk, t, n, want, rf) : 0;
    free(want);
    return rc;
}

int cli_topics(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int st = -1;
    /* 0 makes glibc re-initialise getopt (main may have used it); its
     * default argument permutation accepts "ensure -c F" and "-c F ensure". */
    optind = 0;
    while (cli_opt_next(argc, argv, "c:h", opts, &path, topics_usage, &st) != -1)
        ;
    if (st >= 0)
        return st;
    if (optind != argc - 1 || (strcmp(argv[optind], "ensure") && strcmp(argv[optind], "list"))) {
        topics_usage(stderr);
        return 2;
    }
    bool ensure = !strcmp(argv[optind], "ensure");

    sl_config *cfg;
    int rc = cli_open("topics", path, 0, &cfg);
    if (rc)
        return rc;
    size_t n;
    sl_topic_spec *t = sl_topics(cfg, &n);

    char errstr[512];
    rd_kafka_conf_t *conf = sl_kafka_conf(cfg, "admin");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    rc = 1;
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "sluice topics: kafka: %s\n", errstr);
        goto out;
    }
    conf = NULL; /* now owned by rk */

    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 1, NULL, &md, TOPICS_TIMEOUT_MS);
    if (kerr) {
        fprintf(stderr, "sluice topics: metadata from %s: %s\n", cfg->kafka.bootstrap,
                rd_kafka_err2str(kerr));
    } else {
        rc = ensure ? topics_ensure(rk, cfg, t, n, md)
                    : topics_list(t, n, md, cfg->kafka.topic_prefix ? cfg->kafka.topic_prefix : "");
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
out:
    sl_topics_free(t, n);
    sl_config_free(cfg);
    return rc;
}
