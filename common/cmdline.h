/*
 * cmdline - what every sluice program answers to --help and --version.
 *
 * Each program describes itself once in an sl_cmd_help (its synopsis, its
 * options and the configuration keys it reads) and calls sl_cmd_std()
 * before its own option parsing; `-h` in its getopt loop prints the same
 * text with sl_cmd_usage(). Help and version go to standard output with
 * exit 0, as GNU and BSD tools do, so `prog --help | less` works; a usage
 * error prints the help on standard error and exits 2.
 *
 * The strings are the caller's (static, in practice); nothing here
 * allocates. Main thread, before anything else starts.
 *
 * cli_config(), cli_kafka_check(), cli_open(), cli_opt_next(),
 * cli_read_topic() and cli_read_file() are shared by the commands of
 * `sluice`, the publishing ones (producer/) and the operations ones (cli/).
 */
#ifndef SLUICE_CMDLINE_H
#define SLUICE_CMDLINE_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "reader.h"

struct sl_buf;
struct sl_config;
struct uv_loop_s;
struct uv_signal_s;

typedef struct sl_cmd_help {
    const char *prog;     /* "sluice-sender" */
    const char *synopsis; /* after "usage: PROG ", may hold further lines */
    const char *about;    /* what the program does, one short paragraph */
    const char *options;  /* one line per option, indented two spaces */
    const char *config;   /* the config keys read, one line each; NULL: none */
} sl_cmd_help;

/* The version of this build ("0.1.0"). */
const char *sl_version(void);
/* Prints "PROG VERSION" on f. */
void sl_cmd_version(const char *prog, FILE *f);
/* Prints the whole help text on f. */
void sl_cmd_usage(const sl_cmd_help *h, FILE *f);
/* Looks for --help or --version among the arguments before "--": prints
 * the answer on stdout and returns 0 (the exit status); otherwise returns
 * -1 and the caller parses its options as usual. */
int sl_cmd_std(int argc, char **argv, const sl_cmd_help *h);

/* The start-up every daemon shares, once its own options are parsed
 * (argv[first_arg..argc) are what getopt left over: pass optind): a leftover argument, or no
 * config file where the daemon needs one (cfg_required), prints the help
 * on stderr and exits 2. Otherwise it sets up the log for role ("api"),
 * ignores SIGPIPE (a peer that hangs up is an error on that write, never
 * the end of the daemon) and returns the config at path (NULL: the
 * built-in default), exiting 2 with the reason when it is bad
 * (sl_config_load_or_exit()). The caller owns the config. */
struct sl_config *sl_daemon_start(const sl_cmd_help *h, int argc, int first_arg,
                                  const char *role, const char *path, int cfg_required);
/* Starts the metrics server when cfg has metrics.listen and logs its port;
 * exits 1 ("metrics: REASON") when it cannot listen. Main thread. */
void sl_daemon_metrics(const struct sl_config *cfg);
/* Publishes readiness (/readyz, sl_http_set_ready()) when it differs from
 * *shown, the last one published, and logs "ROLE ready" when the daemon
 * becomes ready. Main thread. */
void sl_daemon_ready(bool *shown, bool ready, const char *role);
/* Runs a daemon's main loop, its heartbeat ("main loop") bounded by
 * metrics.health_timeout, until it has nothing left to do; exits 1
 * ("ROLE: exited event loop unexpectedly") unless *done was set by then.
 * Then closes every handle still open on the loop, lets their close
 * callbacks run and closes the loop. Main thread, once. */
void sl_daemon_run(struct uv_loop_s *loop, const struct sl_config *cfg, const bool *done,
                   const char *role);
/* Starts the handles term and intr on loop, calling cb on SIGTERM and on
 * SIGINT: how a daemon learns to drain. A signal that came after
 * sl_daemon_start() and before this call is handed to cb now. Main thread.
 * sl_daemon_early_signal() is that signal (0: none), for a daemon whose
 * start-up fails after it was told to stop. */
int sl_daemon_early_signal(void);
void sl_daemon_signals(struct uv_loop_s *loop, struct uv_signal_s *term, struct uv_signal_s *intr,
                       void (*cb)(struct uv_signal_s *, int));

/* The config in path, else in $SLUICE_CONFIG, else the built-in default. A
 * bad file is reported as "sluice CMD: file:line: ..." on stderr and NULL
 * is returned: the command exits 2. The caller frees it (sl_config_free). */
struct sl_config *cli_config(const char *cmd, const char *path);
/* Fail fast when Kafka is not there: a connection to the bootstrap and one
 * Kafka request within timeout_ms (<= 0: CLI_CONNECT_TIMEOUT_MS, and never
 * more than that). Returns 0, or prints "sluice CMD: cannot reach Kafka at
 * HOST:PORT: REASON" on stderr and returns 1 (the command exits 1). Every
 * command that talks to Kafka calls it right after cli_config(). */
#define CLI_CONNECT_TIMEOUT_MS 5000
int cli_kafka_check(const char *cmd, const struct sl_config *cfg, long long timeout_ms);
/* cli_config() then cli_kafka_check(): 0 with *cfg set (the caller frees
 * it), or the exit status with *cfg NULL and the reason printed: 2 for a
 * bad config, 1 when Kafka is not there. */
int cli_open(const char *cmd, const char *path, long long timeout_ms, struct sl_config **cfg);
/* cli_open(), then a reader of the topic with that suffix
 * (sl_config_topic), from since_ms (reader.h). 0 with *cfg, *topic (its
 * full name) and *r set, the caller freeing all three; or the exit status
 * (2 bad config, 1 no Kafka or no reader) with all three NULL and the
 * reason printed as "sluice CMD: ...". */
struct sl_reader;
int cli_open_reader(const char *cmd, const char *path, long long timeout_ms, const char *suffix,
                    int64_t since_ms, struct sl_config **cfg, char **topic, struct sl_reader **r);
/* One step of a command's option loop: getopt_long(argc, argv, shortopts,
 * opts). It takes -c FILE itself (*path = FILE) and returns every other
 * option for the caller's switch; -1 when the options end. -h prints the
 * help (usage) on stdout and an unknown option or a missing argument on
 * stderr; both end the loop with -1 and set *status to the exit status (0
 * or 2), which the caller set to -1 before the loop and returns when it
 * is no longer -1. The caller resets optind as getopt requires. */
int cli_opt_next(int argc, char **argv, const char *shortopts, const struct option *opts,
                 const char **path, void (*usage)(FILE *), int *status);
/* The same step for a daemon, whose help is its sl_cmd_help. */
int sl_cmd_opt_next(int argc, char **argv, const char *shortopts, const struct option *opts,
                    const sl_cmd_help *h, const char **path, int *status);
/* Read topic from its beginning to its end (the end it had when reading
 * began) with common/reader, handing fn every record (fn does not destroy
 * it). Returns 0 once the end is reached; 1 after printing "sluice CMD:
 * ..." on stderr when the topic cannot be read, or "sluice CMD: TOPIC: not
 * read to its end within N s" when timeout_ms passed first (what fn saw
 * until then was seen: partial results are the caller's to drop or show).
 * The loop is sl_reader_each()'s. */
int cli_read_topic(const char *cmd, const struct sl_config *cfg, const char *topic,
                   long long timeout_ms, sl_reader_fn fn, void *arg);
/* Append the whole of path ("-": stdin), at most max octets, to out.
 * Returns 0, -errno, or SL_ETOOBIG when the file is larger. */
int cli_read_file(const char *path, size_t max, struct sl_buf *out);

#endif
