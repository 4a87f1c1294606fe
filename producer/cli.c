/*
 * cli - main() of the `sluice` command and its command table. Each command
 * lives in cli_<name>.c (see cli.h).
 */
#include "cli.h"
#include "cmdline.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sl_config *cli_config(const char *cmd, const char *path)
{
    /* One place for SLUICE_CONFIG, so that no command can forget it. */
    if (!path && getenv("SLUICE_CONFIG") && *getenv("SLUICE_CONFIG"))
        path = getenv("SLUICE_CONFIG");
    if (!path)
        return sl_config_default();
    sl_config *cfg = NULL;
    char *err = NULL;
    if (sl_config_load(path, &cfg, &err) != 0) {
        fprintf(stderr, "sluice %s: %s\n", cmd, err ? err : "invalid configuration");
        free(err);
        return NULL;
    }
    return cfg;
}

int cli_kafka_check(const char *cmd, const sl_config *cfg, long long timeout_ms)
{
    if (timeout_ms <= 0 || timeout_ms > CLI_CONNECT_TIMEOUT_MS)
        timeout_ms = CLI_CONNECT_TIMEOUT_MS;
    char why[512];
    if (sl_kafka_probe(cfg, (int)timeout_ms, why, sizeof why) == 0)
        return 0;
    fprintf(stderr, "sluice %s: %s\n", cmd, why);
    return 1;
}

int cli_committed(const sl_config *cfg, const char *group, const char *topic,
                  int64_t **offsets, int *n_parts, rd_kafka_t **rkp, char **err)
{
    rd_kafka_conf_t *c = sl_kafka_conf(cfg, "cli");
    char errstr[512];
    rd_kafka_conf_set(c, "group.id", group, NULL, 0);
    rd_kafka_conf_set(c, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(c);
        *err = xasprintf("kafka: %s", errstr);
        return -1;
    }
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

int cli_read_file(const char *path, size_t max, sl_buf *out)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f)
        return -errno;
    char buf[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (out->len + n > max) {
            rc = SL_ETOOBIG;
            break;
        }
        sl_buf_append(out, buf, n);
    }
    if (!rc && ferror(f))
        rc = -EIO;
    if (f != stdin)
        fclose(f);
    return rc;
}

typedef struct cli_cmd {
    const char *name;
    int (*fn)(int, char **);
    const char *usage;
} cli_cmd;

static const cli_cmd commands[] = {
    {"dev", cli_dev, "dev [-c FILE] [--demo N] [--json] [--route HOST:PORT]  run everything locally"},
    {"send", cli_send, "send --from A --to B[,C] --subject S --body-file F  send one message"},
    {"bulk", cli_bulk, "bulk --template ID --recipients FILE --from A  send a campaign"},
    {"template", cli_template, "template put|get|delete|list  manage the stored templates"},
    {"events", cli_events, "events [--follow] [--json] [--campaign C] [--since T]  print events"},
    {"stats", cli_stats, "stats [--campaign C] [--by site|pool|tenant|campaign]  delivery statistics"},
    {"suppress", cli_suppress, "suppress add|remove|list|import  manage suppressions"},
    {"dlq", cli_dlq, "dlq list|show|replay|drop  read and handle the dead-letter topic"},
    {"queue", cli_queue, "queue  jobs waiting on the retry topics, per topic and site"},
    {"top", cli_top, "top [--once]  live per-site rates, backlog, backoff and reply codes"},
    {"shaping", cli_shaping, "shaping show  live shaping state per site and IP"},
    {"topics", cli_topics, "topics ensure|list  create the topics on a real Kafka"},
    {"capture", cli_capture, "capture --listen HOST:PORT --dir DIR  local capture SMTP server"},
};

static void usage(FILE *f)
{
    fputs("usage: sluice COMMAND [-c FILE] [options]\n\ncommands:\n", f);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %s\n", commands[i].usage);
    fputs("\noptions:\n"
          "  -h, --help            print this help on stdout and exit 0\n"
          "      --version         print the version on stdout and exit 0\n"
          "\nEvery command takes -c FILE, the configuration (default: the built-in one),\n"
          "and reads its kafka.* keys; `sluice COMMAND --help` describes a command's\n"
          "options and the other keys it reads.\n",
          f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        sl_cmd_version("sluice", stdout);
        return 0;
    }
    /* Human lines on a terminal; JSON when a program reads stderr. -v or
     * --verbose (anywhere) shows debug lines, librdkafka's among them;
     * without it a command says what failed in one line of its own. */
    bool verbose = false, rest = false;
    int n = 1;
    for (int i = 1; i < argc; i++) {
        if (!rest && !strcmp(argv[i], "--"))
            rest = true;
        if (!rest && (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")))
            verbose = true;
        else
            argv[n++] = argv[i];
    }
    argc = n;
    argv[argc] = NULL;
    sl_log_init("sluice", verbose ? SL_LOG_DEBUG : SL_LOG_WARN);
    sl_kafka_quiet_logs(!verbose);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
