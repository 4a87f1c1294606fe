/*
 * sluice-webhook - post every event to HTTP(S) endpoints, signed, at least
 * once (see whk.h).
 *
 *   sluice-webhook -c FILE [--check | --replay]
 *
 * --replay posts the events endpoints refused (dead letters in the DLQ,
 * see whk.h) again, each to the endpoint that refused it.
 *
 * --check loads and validates the configuration as the daemon would (the
 * loader's checks, then whk_config_check(): endpoints, secret files),
 * prints "ok FILE" and exits 0; exit 2 with the reason otherwise (file:line
 * for the loader's). The deploy checks use it to prove a ConfigMap's
 * sluice.yaml loads with the real loader.
 *
 * Ready (/readyz) once the consumer has its assignment. SIGTERM/SIGINT
 * drain: stop fetching, let the endpoints accept what is in memory, commit,
 * exit 0. If they do not within sender.drain_timeout, the rest is handed
 * back uncommitted (the next sluice-webhook posts it again) and it exits 0.
 */
#include "whk.h"

#include "cmdline.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    whk *w;
    const sl_config *cfg;
    uv_timer_t ready_timer, drain_timer;
    uv_signal_t sigterm, sigint;
    bool draining, ready, done;
} g;

static const sl_cmd_help help = {
    .prog = "sluice-webhook",
    .synopsis = "-c FILE [--check | --replay]",
    .about = "Posts every event to the configured HTTP(S) endpoints, signed, at least\n"
             "once; see docs/webhook.md.\n",
    .options = "  -c, --config FILE     the configuration\n"
               "      --check           validate the configuration, print \"ok FILE\", exit 0\n"
               "      --replay          post the dead letters in the DLQ again, each to the\n"
               "                        endpoint that refused it (group sluice-webhook-replay)\n",
    .config = "  kafka.*               brokers, security, topic names, consumer timeouts\n"
              "  webhook.endpoints[].url, .secret | .secret_file, .batch_size, .timeout\n"
              "  webhook.max_attempts\n"
              "  sender.drain_timeout, metrics.listen, metrics.health_timeout\n",
};

static void ready_cb(uv_timer_t *t)
{
    bool ready = !g.draining && whk_ready(g.w);
    sl_daemon_ready(&g.ready, ready, "webhook");
    (void)t;
}

static void close_all(void)
{
    uv_close((uv_handle_t *)&g.ready_timer, NULL);
    uv_close((uv_handle_t *)&g.drain_timer, NULL);
    uv_close((uv_handle_t *)&g.sigterm, NULL);
    uv_close((uv_handle_t *)&g.sigint, NULL);
}

static void drained_cb(void *arg)
{
    (void)arg;
    sl_info("webhook: drained");
    g.done = true;
    whk_free(g.w);
    g.w = NULL;
    close_all();
}

static void drain_timeout_cb(uv_timer_t *t)
{
    (void)t;
    sl_warn("webhook: drain timeout: %zu events not yet accepted by every endpoint; they stay "
            "uncommitted and the next sluice-webhook posts them again",
            whk_pending(g.w));
    /* Hands the rest back undone; drained_cb follows once the consumer
     * has committed what is done and left the group. */
    whk_abandon(g.w);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    (void)h;
    if (g.draining) {
        sl_warn("webhook: signal %d again while draining", signum);
        return;
    }
    sl_info("webhook: signal %d, draining", signum);
    g.draining = true;
    sl_http_set_ready(false);
    uv_timer_stop(&g.ready_timer);
    uv_timer_start(&g.drain_timer, drain_timeout_cb, (uint64_t)g.cfg->sender.drain_timeout_ms, 0);
    whk_stop(g.w, drained_cb, NULL);
}

int main(int argc, char **argv)
{
    const char *cfg_path = NULL;
    bool check = false, replay = false;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check", no_argument, NULL, 'k'},
                                         {"replay", no_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int o = sl_cmd_std(argc, argv, &help);
    if (o >= 0)
        return o;
    int ostatus = -1;
    while ((o = sl_cmd_opt_next(argc, argv, "c:h", opts, &help, &cfg_path, &ostatus)) != -1) {
        switch (o) {
        case 'k': check = true; break;
        case 'r': replay = true; break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    sl_config *cfg = sl_daemon_start(&help, argc, optind, "webhook", cfg_path, 1);
    /* What the daemon would refuse, --check refuses too, with exit 2. */
    char *why = NULL;
    if (whk_config_check(cfg, &why) != 0) {
        fprintf(stderr, "sluice-webhook: %s\n", why);
        free(why);
        sl_config_free(cfg);
        return 2;
    }
    if (check) {
        printf("ok %s\n", cfg_path);
        sl_config_free(cfg);
        return 0;
    }
    g.cfg = cfg;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        sl_fatal(1, "curl_global_init failed");
    uv_loop_t *loop = uv_default_loop();
    char *err = NULL;
    sl_daemon_metrics(cfg);
    g.w = whk_new(cfg, loop, replay, &err);
    if (!g.w)
        sl_fatal(1, "webhook: %s", err ? err : "failed");
    uv_timer_init(loop, &g.ready_timer);
    uv_timer_start(&g.ready_timer, ready_cb, 0, 100);
    uv_timer_init(loop, &g.drain_timer);
    sl_daemon_signals(loop, &g.sigterm, &g.sigint, signal_cb);

    sl_daemon_run(loop, cfg, &g.done, "webhook");
    curl_global_cleanup();
    sl_config_free(cfg);
    sl_info("webhook stopped");
    return 0;
}
