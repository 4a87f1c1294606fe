/*
 * cli_queue - `sluice queue`: what waits where, like Postfix's qshape.
 *
 *   sluice queue [-c FILE] [--json]
 *
 * For each retry topic, the jobs after the retry stage's committed offset
 * (consumer group sluice-retry, read without joining it): the jobs parked
 * there and not yet handed back to the jobs topic. One row per (retry
 * topic, site): WAITING jobs, of which DEFERRED were tried at least once
 * (a sender deferred them) and PARKED never were (shaping parked them above
 * its memory bound), and when the next one is due. Jobs the scheduler holds
 * in memory are not on a topic: `sluice top` shows those per site.
 *
 * Exit status: 0 ok, 1 Kafka failure, 2 bad usage or configuration.
 * Single-threaded.
 */
#include "cli.h"
#include "config.h"
#include "reader.h"
#include "util.h"
#include "wire.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_GROUP "sluice-retry"
#define QUEUE_TIMEOUT_MS 15000

typedef struct queue_row {
    char *topic, *site;
    uint64_t waiting, deferred, parked;
    int64_t next_due_ms;
} queue_row;

static void queue_usage(FILE *f)
{
    fputs("usage: sluice queue [-c FILE] [--json]\n"
          "Jobs waiting on the retry topics, per topic and site: deferred by a sender\n"
          "or parked by shaping, and when the next one is due.\n",
          f);
}

static queue_row *queue_row_get(queue_row **rows, size_t *n, const char *topic, const char *site)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*rows)[i].topic, topic) && !strcmp((*rows)[i].site, site))
            return &(*rows)[i];
    *rows = xrealloc(*rows, (*n + 1) * sizeof **rows);
    queue_row *r = &(*rows)[(*n)++];
    memset(r, 0, sizeof *r);
    r->topic = xstrdup(topic);
    r->site = xstrdup(site);
    return r;
}

typedef struct queue_read {
    const char *topic;
    const int64_t *committed;
    int n_parts;
    queue_row **rows;
    size_t *n;
} queue_read;

/* One record of a retry topic: a job not yet handed back counts. */
static void queue_record(void *arg, const rd_kafka_message_t *m)
{
    queue_read *q = arg;
    sl_job *j = NULL;
    const char *why = NULL;
    if (m->partition < 0 || m->partition >= q->n_parts || m->offset < q->committed[m->partition] ||
        !m->payload || sl_job_decode(m->payload, m->len, &j, &why) != 0)
        return;
    queue_row *r = queue_row_get(q->rows, q->n, q->topic, j->site && *j->site ? j->site : "-");
    r->waiting++;
    if (j->attempt)
        r->deferred++;
    else
        r->parked++;
    if (j->not_before_ms && (!r->next_due_ms || j->not_before_ms < r->next_due_ms))
        r->next_due_ms = j->not_before_ms;
    sl_job_free(j);
}

/* Count the jobs after the committed offsets of one retry topic. */
static int queue_topic(const sl_config *cfg, const char *topic, queue_row **rows, size_t *n)
{
    int64_t *committed = NULL;
    int n_parts = 0;
    char *err = NULL;
    if (cli_committed(cfg, QUEUE_GROUP, topic, &committed, &n_parts, NULL, &err) != 0) {
        fprintf(stderr, "sluice queue: %s\n", err);
        free(err);
        return 1;
    }
    queue_read q = {topic, committed, n_parts, rows, n};
    int rc = cli_read_topic("queue", cfg, topic, QUEUE_TIMEOUT_MS, queue_record, &q);
    free(committed);
    return rc;
}

int cli_queue(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool json = false;
    int o, st = -1;
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &path, queue_usage, &st)) != -1)
        if (o == 'j')
            json = true;
    if (st >= 0)
        return st;
    if (optind != argc) {
        queue_usage(stderr);
        return 2;
    }
    sl_config *cfg;
    int rc = cli_open("queue", path, 0, &cfg);
    if (rc)
        return rc;
    queue_row *rows = NULL;
    size_t n = 0;
    for (size_t d = 0; d < cfg->retry.n_delays && rc == 0; d++) {
        char *suffix = sl_config_retry_suffix(cfg->retry.delays_ms[d]);
        char *topic = sl_config_topic(cfg, suffix);
        rc = queue_topic(cfg, topic, &rows, &n);
        free(topic);
        free(suffix);
    }
    sl_buf b = SL_BUF_INIT;
    if (rc == 0 && !json)
        sl_buf_printf(&b, "%-20s %-24s %8s %8s %8s  %s\n", "TOPIC", "SITE", "WAITING", "DEFERRED",
                      "PARKED", "NEXT DUE");
    uint64_t total = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char due[40] = "-";
        if (rows[i].next_due_ms)
            sl_fmt_time(rows[i].next_due_ms, due, sizeof due);
        total += rows[i].waiting;
        if (json) {
            sl_buf_puts(&b, "{\"topic\":");
            sl_buf_json_str(&b, rows[i].topic, strlen(rows[i].topic));
            sl_buf_puts(&b, ",\"site\":");
            sl_buf_json_str(&b, rows[i].site, strlen(rows[i].site));
            sl_buf_printf(&b,
                          ",\"waiting\":%llu,\"deferred\":%llu,\"parked\":%llu,"
                          "\"next_due_ms\":%lld}\n",
                          (unsigned long long)rows[i].waiting,
                          (unsigned long long)rows[i].deferred,
                          (unsigned long long)rows[i].parked, (long long)rows[i].next_due_ms);
        } else {
            sl_buf_printf(&b, "%-20s %-24s %8llu %8llu %8llu  %s\n", rows[i].topic, rows[i].site,
                          (unsigned long long)rows[i].waiting,
                          (unsigned long long)rows[i].deferred,
                          (unsigned long long)rows[i].parked, due);
        }
    }
    if (rc == 0 && !json)
        sl_buf_printf(&b, "%llu job(s) waiting on retry topics\n", (unsigned long long)total);
    if (b.len)
        fwrite(b.data, 1, b.len, stdout);
    sl_buf_free(&b);
    for (size_t i = 0; i < n; i++) {
        free(rows[i].topic);
        free(rows[i].site);
    }
    free(rows);
    sl_config_free(cfg);
    return rc;
}
