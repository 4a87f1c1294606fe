/*
 * cmdline - see cmdline.h.
 */
#include "cmdline.h"
#include "config.h"
#include "health.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "reader.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#ifndef SLUICE_VERSION
#error "SLUICE_VERSION is defined by common/CMakeLists.txt from the project version"
#endif

/* The two options every program has are added here, so that no help text
 * can forget them. */
static const char std_options[] = "  -h, --help            print this help on stdout and exit 0\n"
                                  "      --version         print the version on stdout and exit 0\n";

const char *sl_version(void)
{
    return SLUICE_VERSION;
}

void sl_cmd_version(const char *prog, FILE *f)
{
    fprintf(f, "%s %s\n", prog, SLUICE_VERSION);
}

void sl_cmd_usage(const sl_cmd_help *h, FILE *f)
{
    fprintf(f, "usage: %s %s\n", h->prog, h->synopsis);
    if (h->about)
        fprintf(f, "\n%s", h->about);
    fputs("\noptions:\n", f);
    if (h->options)
        fputs(h->options, f);
    fputs(std_options, f);
    if (h->config) {
        fputs("\nconfiguration keys read (docs/configuration.md; SLUICE_* environment\n"
              "variables override some of them):\n",
              f);
        fputs(h->config, f);
    }
}

int sl_cmd_std(int argc, char **argv, const sl_cmd_help *h)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "--help")) {
            sl_cmd_usage(h, stdout);
            return fflush(stdout) ? 1 : 0;
        }
        if (!strcmp(argv[i], "--version")) {
            sl_cmd_version(h->prog, stdout);
            return fflush(stdout) ? 1 : 0;
        }
    }
    return -1;
}

/* A SIGTERM or SIGINT that comes while a daemon starts (reading its
 * topics can take seconds on a real cluster) is kept here until
 * sl_daemon_signals(): a rolling update that stops a daemon just started
 * must make it drain, not kill it. */
static volatile sig_atomic_t early_signal;

static void on_early_signal(int signum)
{
    early_signal = signum;
}

int sl_daemon_early_signal(void)
{
    return early_signal;
}

sl_config *sl_daemon_start(const sl_cmd_help *h, int argc, int first_arg,
                           const char *role, const char *path, int cfg_required)
{
    if (first_arg < argc || (cfg_required && !path)) {
        sl_cmd_usage(h, stderr);
        exit(2);
    }
    sl_log_init(role, SL_LOG_INFO);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction early = {.sa_handler = on_early_signal, .sa_flags = SA_RESTART};
    sigemptyset(&early.sa_mask);
    sigaction(SIGTERM, &early, NULL);
    sigaction(SIGINT, &early, NULL);
    return sl_config_load_or_exit(path);
}

void sl_daemon_metrics(const sl_config *cfg)
{
    if (!cfg->metrics.listen)
        return;
    int port = 0;
    char *err = NULL;
    if (sl_http_start(cfg->metrics.listen, &port, &err) != 0)
        sl_fatal(1, "metrics: %s", err ? err : "failed");
    sl_info("metrics on %s (port %d)", cfg->metrics.listen, port);
}

void sl_daemon_ready(bool *shown, bool ready, const char *role)
{
    if (ready == *shown)
        return;
    *shown = ready;
    sl_http_set_ready(ready);
    if (ready)
        sl_info("%s ready", role);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void sl_daemon_run(uv_loop_t *loop, const sl_config *cfg, const bool *done, const char *role)
{
    sl_beat *beat = sl_health_loop(loop, "main loop", cfg->metrics.health_timeout_ms);
    uv_run(loop, UV_RUN_DEFAULT);
    if (!*done)
        sl_fatal(1, "%s: exited event loop unexpectedly", role);
    sl_health_loop_stop(beat);
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

void sl_daemon_signals(uv_loop_t *loop, uv_signal_t *term, uv_signal_t *intr, uv_signal_cb cb)
{
    uv_signal_init(loop, term);
    uv_signal_start(term, cb, SIGTERM);
    uv_signal_init(loop, intr);
    uv_signal_start(intr, cb, SIGINT);
    if (early_signal)
        cb(early_signal == SIGINT ? intr : term, early_signal);
}

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

int cli_open(const char *cmd, const char *path, long long timeout_ms, sl_config **cfg)
{
    *cfg = cli_config(cmd, path);
    if (!*cfg)
        return 2;
    if (cli_kafka_check(cmd, *cfg, timeout_ms)) {
        sl_config_free(*cfg);
        *cfg = NULL;
        return 1;
    }
    return 0;
}

int cli_open_reader(const char *cmd, const char *path, long long timeout_ms, const char *suffix,
                    int64_t since_ms, sl_config **cfg, char **topic, sl_reader **r)
{
    *topic = NULL;
    *r = NULL;
    int rc = cli_open(cmd, path, timeout_ms, cfg);
    if (rc)
        return rc;
    char *err = NULL;
    *topic = sl_config_topic(*cfg, suffix);
    *r = sl_reader_new(*cfg, *topic, since_ms, &err);
    if (*r)
        return 0;
    fprintf(stderr, "sluice %s: %s\n", cmd, err ? err : "cannot read");
    free(err);
    free(*topic);
    *topic = NULL;
    sl_config_free(*cfg);
    *cfg = NULL;
    return 1;
}

/* One option step; the help is usage's, else h's. */
static int opt_step(int argc, char **argv, const char *shortopts, const struct option *opts,
                    const char **path, void (*usage)(FILE *), const sl_cmd_help *h, int *status)
{
    int o;
    while ((o = getopt_long(argc, argv, shortopts, opts, NULL)) == 'c')
        *path = optarg;
    if (o == 'h' || o == '?' || o == ':') {
        FILE *f = o == 'h' ? stdout : stderr;
        if (usage)
            usage(f);
        else
            sl_cmd_usage(h, f);
        *status = o == 'h' ? 0 : 2;
        return -1;
    }
    return o;
}

int cli_opt_next(int argc, char **argv, const char *shortopts, const struct option *opts,
                 const char **path, void (*usage)(FILE *), int *status)
{
    return opt_step(argc, argv, shortopts, opts, path, usage, NULL, status);
}

int sl_cmd_opt_next(int argc, char **argv, const char *shortopts, const struct option *opts,
                    const sl_cmd_help *h, const char **path, int *status)
{
    return opt_step(argc, argv, shortopts, opts, path, NULL, h, status);
}

int cli_read_topic(const char *cmd, const sl_config *cfg, const char *topic,
                   long long timeout_ms, sl_reader_fn fn, void *arg)
{
    char *err = NULL;
    sl_reader *r = sl_reader_new(cfg, topic, 0, &err);
    if (!r) {
        fprintf(stderr, "sluice %s: %s: %s\n", cmd, topic, err ? err : "cannot read");
        free(err);
        return 1;
    }
    int rc = sl_reader_each(r, timeout_ms, NULL, fn, arg);
    sl_reader_free(r);
    if (rc == 0)
        return 0;
    fprintf(stderr, "sluice %s: %s: not read to its end within %llds\n", cmd, topic,
            (timeout_ms + 999) / 1000);
    return 1;
}

int cli_read_file(const char *path, size_t max, sl_buf *out)
{
    return strcmp(path, "-") ? sl_read_file(path, max, out) : sl_read_fp(stdin, max, out);
}
