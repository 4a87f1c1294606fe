/*
 * cli - the `sluice` command line. cli.c holds main() and the command
 * table; each command lives in its own cli_<name>.c and has the signature
 * below: argv[0] is the command name, the return value is the exit status
 * (0 ok, 1 failure, 2 bad usage or config). Every command takes -c FILE.
 */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

int cli_send(int argc, char **argv);       /* sluice send --from A --to B,C ... */
int cli_dev(int argc, char **argv);        /* sluice dev [--demo N] */
int cli_topics(int argc, char **argv);     /* sluice topics ensure|list */
int cli_capture(int argc, char **argv);    /* sluice capture --listen A --dir D */
int cli_template(int argc, char **argv);   /* sluice template put ID FILE */
int cli_bulk(int argc, char **argv);       /* sluice bulk --template ID --recipients F */
int cli_events(int argc, char **argv);     /* sluice events [--follow] [--json] */
int cli_stats(int argc, char **argv);      /* sluice stats [--by site] */
int cli_suppress(int argc, char **argv);   /* sluice suppress add|remove|list|import */
int cli_shaping(int argc, char **argv);    /* sluice shaping show */
int cli_top(int argc, char **argv);        /* sluice top: live per-site view */
int cli_dlq(int argc, char **argv);        /* sluice dlq list|show|replay|drop */
int cli_queue(int argc, char **argv);      /* sluice queue: what waits on retry topics */

#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

struct sl_buf;
struct sl_config;

/* Shared by the commands (cli.c). */

/* The config in path, else in $SLUICE_CONFIG, else the built-in default. A bad
 * file is reported as "sluice CMD: file:line: ..." on stderr and NULL is
 * returned: the command exits 2. The caller frees it (sl_config_free). */
struct sl_config *cli_config(const char *cmd, const char *path);
/* Fail fast when Kafka is not there: a TCP connection to the bootstrap
 * within timeout_ms (<= 0: CLI_CONNECT_TIMEOUT_MS, and never more than
 * that). Returns 0, or prints "sluice CMD: cannot reach Kafka at HOST:PORT:
 * REASON" on stderr and returns 1 (the command exits 1). Every command that
 * talks to Kafka calls it right after cli_config(). */
#define CLI_CONNECT_TIMEOUT_MS 5000
int cli_kafka_check(const char *cmd, const struct sl_config *cfg, long long timeout_ms);
/* The committed offset of consumer group `group` for each partition of
 * topic (0 where none), without joining the group: *offsets is allocated
 * (caller frees), *n_parts set. Returns 0, or -1 with *err. When rkp is
 * given, the consumer handle used is left there for commits (caller closes
 * and destroys it); otherwise it is destroyed. */
int cli_committed(const struct sl_config *cfg, const char *group, const char *topic,
                  int64_t **offsets, int *n_parts, rd_kafka_t **rkp, char **err);
/* Append the whole of path ("-": stdin), at most max octets, to out.
 * Returns 0, -errno, or SL_ETOOBIG when the file is larger. */
int cli_read_file(const char *path, size_t max, struct sl_buf *out);

#endif
