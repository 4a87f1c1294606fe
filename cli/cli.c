/*
 * cli - main() of the `sluice` command and its command table. Each
 * operations command lives in cli_<name>.c here (see cli.h); the publishing
 * commands (bulk, send, template) live with libsluice in producer/
 * (publish.h). This table is the one place that knows both.
 */
#include "cli.h"
#include "publish.h"
#include "cmdline.h"
#include "kafka.h"
#include "log.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

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
    {"campaign", cli_campaign, "campaign suspend|resume|cancel|show ID  hold, release or cancel a campaign"},
    {"site", cli_site, "site suspend|resume|purge|show NAME  hold, release or drop the jobs to a site"},
    {"queue", cli_queue, "queue  jobs waiting on the retry topics, per topic and site"},
    {"top", cli_top, "top [--once]  live per-site rates, backlog, backoff and reply codes"},
    {"shaping", cli_shaping, "shaping show  live shaping state per site and IP"},
    {"topics", cli_topics, "topics ensure|list  create the topics on a real Kafka"},
    {"capture", cli_capture, "capture --listen HOST:PORT --dir DIR  local capture SMTP server"},
    {"check-domain", cli_check_domain, "check-domain [--json] DOMAIN  SPF, DKIM, DMARC, PTR, MTA-STS, TLS-RPT of a sending domain"},
    {"config", cli_cfg, "config keys|check [-c FILE]  list the configuration keys, check a file"},
    {"tls-report", cli_tlsrpt, "tls-report --day YYYY-MM-DD [--org N] [--contact E]  RFC 8460 TLS report"},
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
