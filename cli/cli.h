/*
 * cli - the operations commands of `sluice` (cli_<name>.c each; main() and
 * the command table are in cli.c). A command has the signature below:
 * argv[0] is the command name, the return value is the exit status (0 ok,
 * 1 failure, 2 bad usage or config). Every command takes -c FILE; the
 * helpers the commands share (cli_config, cli_read_file) are in cmdline.h.
 */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include "cmdline.h"

int cli_dev(int argc, char **argv);        /* sluice dev [--demo N] */
int cli_topics(int argc, char **argv);     /* sluice topics ensure|list */
int cli_capture(int argc, char **argv);    /* sluice capture --listen A --dir D */
int cli_events(int argc, char **argv);     /* sluice events [--follow] [--json] */
int cli_stats(int argc, char **argv);      /* sluice stats [--by site] */
int cli_suppress(int argc, char **argv);   /* sluice suppress add|remove|list|import */
int cli_shaping(int argc, char **argv);    /* sluice shaping show */
int cli_top(int argc, char **argv);        /* sluice top: live per-site view */
int cli_dlq(int argc, char **argv);        /* sluice dlq list|show|replay|drop */
int cli_queue(int argc, char **argv);      /* sluice queue: what waits on retry topics */
int cli_cfg(int argc, char **argv);        /* sluice config keys|check */
int cli_campaign(int argc, char **argv);   /* sluice campaign suspend|resume|cancel|show */
int cli_site(int argc, char **argv);       /* sluice site suspend|resume|show */
int cli_check_domain(int argc, char **argv); /* sluice check-domain DOMAIN */
int cli_tlsrpt(int argc, char **argv);     /* sluice tls-report --day D: RFC 8460 JSON */

#include <stdint.h>
#include <librdkafka/rdkafka.h>

/* The committed offset of consumer group `group` for each partition of
 * topic (0 where none), without joining the group: *offsets is allocated
 * (caller frees), *n_parts set. Returns 0, or -1 with *err. When rkp is
 * given, the consumer handle used is left there for commits (caller closes
 * and destroys it); otherwise it is destroyed. */
int cli_committed(const struct sl_config *cfg, const char *group, const char *topic,
                  int64_t **offsets, int *n_parts, rd_kafka_t **rkp, char **err);

#endif
