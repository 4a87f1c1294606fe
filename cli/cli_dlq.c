/*
 * cli_dlq - `sluice dlq`: read and handle the dead-letter topic.
 *
 *   sluice dlq list   [-c FILE] [--all] [--reason TEXT] [--source TEXT] [--json]
 *   sluice dlq show   [-c FILE] P:OFFSET
 *   sluice dlq replay [-c FILE] [--reason TEXT] [--source TEXT] (--all-pending | P:OFFSET...)
 *   sluice dlq drop   [-c FILE] (--all-pending | P:OFFSET...)
 *
 * A DLQ record is the raw bytes of what a component could not handle plus
 * the headers sl_dlq_publish() writes (reason, source-topic,
 * source-partition, source-offset, truncated). Kafka cannot delete single
 * records, so "handled" is a cursor: the consumer group sluice-dlq's
 * committed offset per partition. `drop P:O` moves partition P's cursor
 * past O (every earlier record of P counts as handled too); `list` shows
 * the records after the cursors (--all: every record still in the topic).
 *
 * `replay` publishes a record again where it can be handled: a Job that
 * came from the jobs topic or a retry topic goes back to the jobs topic,
 * keyed by its recipient domain as producers key it, so the scheduler
 * classifies it afresh. A truncated copy, or a record that is not a Job,
 * is refused with its reason. A replayed record is dropped (the cursor
 * moves past it) when Kafka acknowledged every copy and no record before it
 * in its partition stays pending; otherwise it stays listed, and is said so.
 *
 * Exit status: 0 ok; 1 Kafka failed, a named record does not exist, or a
 * record could not be replayed; 2 bad usage or configuration.
 * Single-threaded; one reader, one producer at most.
 */
#include "cli.h"
#include "config.h"
#include "kafka.h"
#include "reader.h"
#include "util.h"
#include "wire.h"

#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DLQ_GROUP "sluice-dlq"
#define DLQ_TIMEOUT_MS 10000
#define DLQ_MAX_PARTS 1024

typedef struct dlq_pos {
    int32_t partition;
    int64_t offset;
    bool seen;
} dlq_pos;

typedef struct dlq {
    const sl_config *cfg;
    char *topic, *jobs_topic, *retry_prefix;
    const char *reason, *source;
    bool all, json;
    dlq_pos *pos; /* named records */
    size_t n_pos;
    bool all_pending;
    int64_t cursor[DLQ_MAX_PARTS]; /* committed: first unhandled offset */
    int64_t drop_to[DLQ_MAX_PARTS]; /* new cursor to commit, or -1 */
    bool kept[DLQ_MAX_PARTS];       /* replay: a pending record stays before */
    int n_parts;
    rd_kafka_t *group; /* for the committed offsets */
    sl_producer *prod;
    int replayed, refused, failed, pending;
} dlq;

static void dlq_usage(FILE *f)
{
    fputs("usage: sluice dlq list   [-c FILE] [--all] [--reason TEXT] [--source TEXT] [--json]\n"
          "       sluice dlq show   [-c FILE] P:OFFSET\n"
          "       sluice dlq replay [-c FILE] [--reason TEXT] [--source TEXT]\n"
          "                         (--all-pending | P:OFFSET...)\n"
          "       sluice dlq drop   [-c FILE] (--all-pending | P:OFFSET...)\n"
          "list shows the records not yet dropped (--all: every one); replay publishes\n"
          "a Job again to the jobs topic; drop marks records handled.\n",
          f);
}

static const char *dlq_header(const rd_kafka_message_t *m, const char *name, char *buf,
                              size_t cap)
{
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t n;
    buf[0] = 0;
    if (rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, &n))
        return buf;
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, v, n);
    buf[n] = 0;
    return buf;
}

static int dlq_parse_pos(const char *s, dlq_pos *p)
{
    char *e;
    long part = strtol(s, &e, 10);
    if (e == s || *e != ':' || part < 0 || part >= DLQ_MAX_PARTS)
        return -1;
    const char *o = e + 1;
    long long off = strtoll(o, &e, 10);
    if (e == o || *e || off < 0)
        return -1;
    p->partition = (int32_t)part;
    p->offset = off;
    return 0;
}

/* The committed cursors of the sluice-dlq group, per partition. */
static int dlq_open_group(dlq *d, char **err)
{
    int64_t *off = NULL;
    if (cli_committed(d->cfg, DLQ_GROUP, d->topic, &off, &d->n_parts, &d->group, err) != 0)
        return -1;
    if (d->n_parts > DLQ_MAX_PARTS)
        d->n_parts = DLQ_MAX_PARTS;
    for (int i = 0; i < d->n_parts; i++) {
        d->cursor[i] = off[i];
        d->drop_to[i] = -1;
    }
    free(off);
    return 0;
}

static int dlq_commit(dlq *d)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(d->n_parts);
    int n = 0;
    for (int i = 0; i < d->n_parts; i++)
        if (d->drop_to[i] > d->cursor[i]) {
            rd_kafka_topic_partition_list_add(l, d->topic, i)->offset = d->drop_to[i];
            n++;
        }
    rd_kafka_resp_err_t e = n ? rd_kafka_commit(d->group, l, 0) : RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        fprintf(stderr, "sluice dlq: recording what was dropped: %s\n", rd_kafka_err2str(e));
        return 1;
    }
    return 0;
}

static bool dlq_is_job_source(const dlq *d, const char *src)
{
    return !strcmp(src, d->jobs_topic) ||
           !strncmp(src, d->retry_prefix, strlen(d->retry_prefix));
}

static dlq_pos *dlq_named(dlq *d, const rd_kafka_message_t *m)
{
    for (size_t i = 0; i < d->n_pos; i++)
        if (d->pos[i].partition == m->partition && d->pos[i].offset == m->offset)
            return &d->pos[i];
    return NULL;
}

static void dlq_line(const dlq *d, const rd_kafka_message_t *m, sl_buf *b)
{
    char reason[1024], src[256], soff[32], spart[16], trunc[8];
    dlq_header(m, "reason", reason, sizeof reason);
    dlq_header(m, "source-topic", src, sizeof src);
    dlq_header(m, "source-partition", spart, sizeof spart);
    dlq_header(m, "source-offset", soff, sizeof soff);
    dlq_header(m, "truncated", trunc, sizeof trunc);
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    sl_job *j = NULL;
    const char *why = NULL;
    if (!(dlq_is_job_source(d, src) && m->payload &&
          sl_job_decode(m->payload, m->len, &j, &why) == 0))
        j = NULL;
    const char *job_id = j && j->job_id ? j->job_id : "";
    const char *rcpt = j && j->n_recipients ? j->recipients[0] : "";
    if (d->json) {
        sl_buf_printf(b, "{\"partition\":%d,\"offset\":%lld,\"timestamp_ms\":%lld,\"reason\":",
                      (int)m->partition, (long long)m->offset, (long long)ts);
        sl_buf_json_str(b, reason, strlen(reason));
        sl_buf_puts(b, ",\"source_topic\":");
        sl_buf_json_str(b, src, strlen(src));
        sl_buf_printf(b, ",\"source_partition\":%s,\"source_offset\":%s,\"bytes\":%zu",
                      spart[0] ? spart : "-1", soff[0] ? soff : "-1", m->len);
        sl_buf_printf(b, ",\"truncated\":%s,\"job_id\":", trunc[0] ? "true" : "false");
        sl_buf_json_str(b, job_id, strlen(job_id));
        sl_buf_puts(b, ",\"recipient\":");
        sl_buf_json_str(b, rcpt, strlen(rcpt));
        sl_buf_puts(b, ",\"campaign\":");
        const char *camp = j && j->campaign ? j->campaign : "";
        sl_buf_json_str(b, camp, strlen(camp));
        sl_buf_puts(b, "}\n");
    } else {
        char when[32] = "-";
        time_t t = (time_t)(ts / 1000);
        struct tm tm;
        if (ts > 0 && gmtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        sl_buf_printf(b, "%d:%lld  %s  %s[%s]@%s", (int)m->partition, (long long)m->offset,
                      when, src[0] ? src : "-", spart, soff);
        if (j)
            sl_buf_printf(b, "  job %s %s", job_id, rcpt);
        sl_buf_puts(b, "  \"");
        for (const char *p = reason; *p; p++) {
            if (*p == '"' || *p == '\\')
                sl_buf_putc(b, '\\');
            sl_buf_putc(b, isprint((unsigned char)*p) ? *p : ' ');
        }
        sl_buf_puts(b, trunc[0] ? "\" (truncated)\n" : "\"\n");
    }
    if (j)
        sl_job_free(j);
}

static void dlq_show(const dlq *d, const rd_kafka_message_t *m)
{
    sl_buf b = SL_BUF_INIT;
    sl_buf_printf(&b, "record     %d:%lld (%zu bytes)\n", (int)m->partition,
                  (long long)m->offset, m->len);
    rd_kafka_headers_t *h = NULL;
    if (!rd_kafka_message_headers(m, &h)) {
        const char *name;
        const void *v;
        size_t n;
        for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &v, &n); i++)
            sl_buf_printf(&b, "%-16s %.*s\n", name, (int)n, v ? (const char *)v : "");
    }
    char src[256];
    dlq_header(m, "source-topic", src, sizeof src);
    sl_job *j = NULL;
    const char *why = NULL;
    if (dlq_is_job_source(d, src) && m->payload &&
        sl_job_decode(m->payload, m->len, &j, &why) == 0) {
        sl_buf_printf(&b, "job        %s\n", j->job_id ? j->job_id : "");
        for (size_t i = 0; i < j->n_recipients; i++)
            sl_buf_printf(&b, "recipient  %s\n", j->recipients[i]);
        sl_buf_printf(&b, "tenant     %s\ncampaign   %s\ntemplate   %s\n",
                      j->tenant ? j->tenant : "", j->campaign ? j->campaign : "",
                      j->template_id ? j->template_id : "");
        sl_job_free(j);
    } else {
        sl_buf_printf(&b, "payload    not a Job%s%s\n", why ? ": " : "", why ? why : "");
    }
    fwrite(b.data, 1, b.len, stdout);
    sl_buf_free(&b);
}

static void dlq_replayed(void *arg, int err)
{
    dlq *d = arg;
    d->pending--;
    if (err)
        d->failed++;
}

/* Replay one record; returns true when it was handed to Kafka. */
static bool dlq_replay_one(dlq *d, const rd_kafka_message_t *m)
{
    char src[256], trunc[8];
    dlq_header(m, "source-topic", src, sizeof src);
    dlq_header(m, "truncated", trunc, sizeof trunc);
    const char *why = NULL;
    sl_job *j = NULL;
    char hook[8];
    if (trunc[0])
        why = "a truncated copy";
    else if (dlq_header(m, "webhook-endpoint", hook, sizeof hook)[0])
        why = "an event a webhook endpoint refused: sluice-webhook --replay sends those";
    else if (!dlq_is_job_source(d, src))
        why = "not a Job from the jobs or a retry topic";
    else if (!m->payload || sl_job_decode(m->payload, m->len, &j, &why) != 0)
        ;
    else if (!j->n_recipients || !strchr(j->recipients[0], '@'))
        why = "the Job has no recipient";
    if (why) {
        fprintf(stderr, "sluice dlq: %d:%lld not replayed: %s\n", (int)m->partition,
                (long long)m->offset, why);
        if (j)
            sl_job_free(j);
        d->refused++;
        return false;
    }
    const char *dom = strrchr(j->recipients[0], '@') + 1;
    d->pending++;
    int rc = sl_producer_send(d->prod, d->jobs_topic, dom, strlen(dom), m->payload, m->len,
                              NULL, 0, dlq_replayed, d);
    sl_job_free(j);
    if (rc < 0) {
        d->pending--;
        d->failed++;
        fprintf(stderr, "sluice dlq: %d:%lld not replayed: %s\n", (int)m->partition,
                (long long)m->offset, sl_strerror(rc));
        return false;
    }
    printf("replayed %d:%lld to %s\n", (int)m->partition, (long long)m->offset,
           d->jobs_topic);
    d->replayed++;
    return true;
}

static bool dlq_filter(const dlq *d, const rd_kafka_message_t *m)
{
    char buf[1024];
    if (d->reason && !strstr(dlq_header(m, "reason", buf, sizeof buf), d->reason))
        return false;
    if (d->source && !strstr(dlq_header(m, "source-topic", buf, sizeof buf), d->source))
        return false;
    return true;
}

int cli_dlq(int argc, char **argv)
{
    enum { O_ALL = 256, O_REASON, O_SOURCE, O_JSON, O_ALL_PENDING };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"all", no_argument, NULL, O_ALL},
        {"all-pending", no_argument, NULL, O_ALL_PENDING},
        {"reason", required_argument, NULL, O_REASON},
        {"source", required_argument, NULL, O_SOURCE},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    dlq d = {0};
    const char *path = getenv("SLUICE_CONFIG");
    int o, st = -1;
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &path, dlq_usage, &st)) != -1) {
        switch (o) {
        case O_ALL: d.all = true; break;
        case O_ALL_PENDING: d.all_pending = true; break;
        case O_REASON: d.reason = optarg; break;
        case O_SOURCE: d.source = optarg; break;
        case O_JSON: d.json = true; break;
        }
    }
    if (st >= 0)
        return st;
    if (optind >= argc) {
        dlq_usage(stderr);
        return 2;
    }
    const char *sub = argv[optind++];
    bool list = !strcmp(sub, "list"), show = !strcmp(sub, "show"),
         replay = !strcmp(sub, "replay"), drop = !strcmp(sub, "drop");
    if (!list && !show && !replay && !drop) {
        fprintf(stderr, "sluice dlq: unknown subcommand '%s'\n", sub);
        dlq_usage(stderr);
        return 2;
    }
    size_t n_args = (size_t)(argc - optind);
    if ((list && n_args) || (show && (n_args != 1 || d.all_pending)) ||
        ((replay || drop) && (n_args ? d.all_pending : !d.all_pending))) {
        dlq_usage(stderr);
        return 2;
    }
    d.pos = xcalloc(n_args ? n_args : 1, sizeof *d.pos);
    for (size_t i = 0; i < n_args; i++)
        if (dlq_parse_pos(argv[optind + (int)i], &d.pos[d.n_pos++]) != 0) {
            fprintf(stderr, "sluice dlq: '%s' is not PARTITION:OFFSET (as `dlq list` shows)\n",
                    argv[optind + (int)i]);
            free(d.pos);
            return 2;
        }
    sl_config *cfg;
    int rc = cli_open("dlq", path, 0, &cfg);
    if (rc) {
        free(d.pos);
        return rc;
    }
    rc = 1;
    char *err = NULL;
    sl_reader *r = NULL;
    d.cfg = cfg;
    d.topic = sl_config_topic(cfg, "dlq");
    d.jobs_topic = sl_config_topic(cfg, "jobs");
    d.retry_prefix = sl_config_topic(cfg, "retry.");
    if (dlq_open_group(&d, &err) != 0 || !(r = sl_reader_new(cfg, d.topic, 0, &err))) {
        fprintf(stderr, "sluice dlq: %s\n", err ? err : "cannot read the DLQ");
        goto out;
    }
    if (replay && !(d.prod = sl_producer_new(cfg, NULL, &err))) {
        fprintf(stderr, "sluice dlq: %s\n", err ? err : "cannot create the producer");
        goto out;
    }
    sl_buf b = SL_BUF_INIT;
    int64_t deadline = sl_mono_ms() + DLQ_TIMEOUT_MS;
    size_t pending_seen = 0;
    rc = 0;
    for (;;) {
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m) {
            if (sl_reader_at_end(r))
                break;
            if (sl_mono_ms() >= deadline) {
                fprintf(stderr, "sluice dlq: %s: not read to its end within %d s\n", d.topic,
                        DLQ_TIMEOUT_MS / 1000);
                rc = 1;
                break;
            }
            continue;
        }
        deadline = sl_mono_ms() + DLQ_TIMEOUT_MS;
        int p = m->partition;
        bool handled = p >= 0 && p < d.n_parts && m->offset < d.cursor[p];
        dlq_pos *named = dlq_named(&d, m);
        if (named)
            named->seen = true;
        sl_buf_reset(&b);
        if (list && (d.all || !handled) && dlq_filter(&d, m)) {
            dlq_line(&d, m, &b);
            fwrite(b.data, 1, b.len, stdout);
        } else if (show && named) {
            dlq_show(&d, m);
        } else if (replay && (named || (d.all_pending && !handled && dlq_filter(&d, m)))) {
            if (dlq_replay_one(&d, m) && p < d.n_parts) {
                if (!d.kept[p] && !handled)
                    d.drop_to[p] = m->offset + 1;
                else if (d.kept[p])
                    printf("  %d:%lld stays listed: an earlier record of partition %d is still "
                           "pending\n",
                           p, (long long)m->offset, p);
            } else if (!handled && p < d.n_parts) {
                d.kept[p] = true;
            }
        } else if (replay && !handled && p < d.n_parts) {
            d.kept[p] = true;
        } else if (drop && p < d.n_parts && (named || (d.all_pending && !handled))) {
            d.drop_to[p] = m->offset + 1 > d.drop_to[p] ? m->offset + 1 : d.drop_to[p];
            pending_seen++;
        }
        rd_kafka_message_destroy(m);
    }
    sl_buf_free(&b);
    for (size_t i = 0; i < d.n_pos; i++)
        if (!d.pos[i].seen) {
            fprintf(stderr, "sluice dlq: no record %d:%lld in %s\n", d.pos[i].partition,
                    (long long)d.pos[i].offset, d.topic);
            rc = 1;
        }
    if (replay) {
        if (sl_producer_flush(d.prod, DLQ_TIMEOUT_MS) != 0 || d.pending)
            d.failed += d.pending;
        if (d.failed) {
            fprintf(stderr, "sluice dlq: %d record(s) not acknowledged by Kafka; nothing dropped\n",
                    d.failed);
            rc = 1;
        } else if (rc == 0 && dlq_commit(&d) != 0) {
            rc = 1;
        }
        printf("replayed %d, refused %d\n", d.replayed, d.refused);
        if (d.refused)
            rc = 1;
    }
    if (drop && rc == 0) {
        if (dlq_commit(&d) != 0)
            rc = 1;
        else
            printf("dropped %zu record(s)\n", d.n_pos ? d.n_pos : pending_seen);
    }
out:
    if (d.prod)
        sl_producer_free(d.prod);
    sl_reader_free(r);
    if (d.group) {
        rd_kafka_consumer_close(d.group);
        rd_kafka_destroy(d.group);
    }
    free(err);
    free(d.topic);
    free(d.jobs_topic);
    free(d.retry_prefix);
    free(d.pos);
    sl_config_free(cfg);
    return rc;
}
