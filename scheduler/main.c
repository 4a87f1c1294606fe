/*
 * sluice-scheduler - classify, shape and retry on one loop.
 *
 *   sluice-scheduler -c FILE [--stages classify,shape,retry]
 *
 * Each stage is its own consumer group (sluice-classify, sluice-shape,
 * sluice-retry); shape and classify also read the events topic for
 * feedback. Ready (/readyz) once every stage has its assignment and the
 * suppression list is loaded. SIGTERM/SIGINT drain: stop fetching, finish
 * or hand back what is in memory, commit, exit 0.
 */
#include "sched_classify.h"
#include "sched_control.h"
#include "cmdline.h"
#include "dns.h"
#include "sched_feedback.h"
#include "log.h"
#include "metrics.h"
#include "sched_retry.h"
#include "sched_ctx.h"
#include "sched_shape.h"
#include "sched_suppress.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* jemalloc (the programs link it) hands freed pages back to the system only
 * when some thread of the process allocates or frees, unless its background
 * threads do it: a scheduler that has just freed the state of 100,000 idle
 * sites (sched_shape.h) and is quiet would keep their pages resident
 * (bench/scheduler_idle.sh: 329 MB instead of 30 MB). jemalloc reads this at
 * start; sanitizer builds, which keep their own allocator, ignore it. */
const char *malloc_conf = "background_thread:true";

static struct {
    sched_ctx ctx;
    bool want_classify, want_shape, want_retry;
    sched_classify *classify;
    sched_retry *retry;
    sched_feedback *feedback;
    uv_timer_t ready_timer;
    uv_signal_t sigterm, sigint;
    int draining;       /* consumers still draining */
    bool ready;
} g;

static const sl_cmd_help help = {
    .prog = "sluice-scheduler",
    .synopsis = "-c FILE [--stages classify,shape,retry]",
    .about = "Classifies jobs by receiving site, shapes them per site and source IP and\n"
             "runs the retry topics; see docs/scheduler.md.\n",
    .options = "  -c, --config FILE     the configuration\n"
               "  -s, --stages LIST     run only these stages (default: all three)\n",
    .config = "  kafka.*               brokers, security, topic names, consumer timeouts\n"
              "  scheduler.max_buffered, scheduler.max_job_bytes, scheduler.default_pool,\n"
              "  scheduler.default_tenant\n"
              "  pools, sites, shaping, backoff, limits, retry.delays, retry.expiry, dns\n"
              "  metrics.listen, metrics.health_timeout\n",
};

static void die(const char *what, char *err)
{
    sl_fatal(1, "%s: %s", what, err ? err : "failed");
}

static void ready_cb(uv_timer_t *t)
{
    char *err = NULL;
    sched_ctx *ctx = &g.ctx;
    if (ctx->draining)
        return;
    /* classify starts only once every suppression is known, so no job
     * slips past an entry not yet read. */
    if (g.want_classify && !g.classify && sched_suppress_loaded(ctx->supp)) {
        g.classify = sched_classify_new(ctx, &err);
        if (!g.classify)
            die("classify", err);
    }
    bool ready = (!g.want_classify || (g.classify && sched_classify_ready(g.classify))) &&
                 (!g.want_shape || sched_shape_ready(ctx->shape)) &&
                 (!g.want_retry || sched_retry_ready(g.retry));
    sl_daemon_ready(&g.ready, ready, "scheduler");
    (void)t;
}

static void finish(void)
{
    sched_ctx *ctx = &g.ctx;
    if (sl_producer_flush(ctx->prod, 30000) != 0)
        sl_error("scheduler: %zu records unacknowledged at exit",
                 sl_producer_outstanding(ctx->prod));
    sched_classify_free(g.classify);
    sched_shape_free(ctx->shape);
    ctx->shape = NULL;
    sched_control_free(ctx->control);
    ctx->control = NULL;
    sched_retry_free(g.retry);
    sched_feedback_free(g.feedback);
    sched_suppress_free(ctx->supp);
    ctx->supp = NULL;
    if (ctx->dns)
        sl_dns_free(ctx->dns);
    sl_producer_free(ctx->prod);
    uv_close((uv_handle_t *)&g.ready_timer, NULL);
    uv_close((uv_handle_t *)&g.sigterm, NULL);
    uv_close((uv_handle_t *)&g.sigint, NULL);
}

static void drained_cb(void *arg)
{
    sl_info("scheduler: %s drained", (const char *)arg);
    if (--g.draining == 0)
        finish();
}

static void signal_cb(uv_signal_t *h, int signum)
{
    sched_ctx *ctx = &g.ctx;
    (void)h;
    if (ctx->draining) {
        sl_warn("scheduler: signal %d again while draining", signum);
        return;
    }
    sl_info("scheduler: signal %d, draining", signum);
    ctx->draining = true;
    sl_http_set_ready(false);
    uv_timer_stop(&g.ready_timer);
    if (g.classify) {
        g.draining++;
        sched_classify_stop(g.classify, drained_cb, "classify");
    }
    if (ctx->shape) {
        g.draining++;
        sched_shape_stop(ctx->shape, drained_cb, "shape");
    }
    if (g.retry) {
        g.draining++;
        sched_retry_stop(g.retry, drained_cb, "retry");
    }
    if (g.feedback) {
        g.draining++;
        sched_feedback_stop(g.feedback, drained_cb, "feedback");
    }
    if (!g.draining)
        finish();
}

static int parse_stages(const char *s)
{
    char *copy = xstrdup(s), *save = NULL;
    g.want_classify = g.want_shape = g.want_retry = false;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "classify"))
            g.want_classify = true;
        else if (!strcmp(t, "shape"))
            g.want_shape = true;
        else if (!strcmp(t, "retry"))
            g.want_retry = true;
        else {
            fprintf(stderr, "sluice-scheduler: unknown stage '%s'\n", t);
            free(copy);
            return -1;
        }
    }
    free(copy);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cfg_path = NULL;
    g.want_classify = g.want_shape = g.want_retry = true;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"stages", required_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int o = sl_cmd_std(argc, argv, &help);
    if (o >= 0)
        return o;
    int ostatus = -1;
    while ((o = sl_cmd_opt_next(argc, argv, "c:s:h", opts, &help, &cfg_path, &ostatus)) != -1) {
        switch (o) {
        case 's':
            if (parse_stages(optarg))
                return 2;
            break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    /* -c is required, as the usage says: a scheduler on the built-in
     * configuration would shape with nobody's pools and sites. */
    if (!cfg_path && optind == argc)
        fputs("sluice-scheduler: -c FILE is required\n", stderr);
    sl_config *cfg = sl_daemon_start(&help, argc, optind, "scheduler", cfg_path, 1);
    /* Classify and shape produce a record for every job, spread over the
     * partitions of sited and dispatch: batches of 5 ms were a few records
     * each, and librdkafka's cost is per batch as much as per record.
     * 20 ms per hop took a third off its CPU per job (bench/scheduler.sh)
     * and stays far inside a transactional job's latency. */
    if (cfg->kafka.linger_ms < 0)
        cfg->kafka.linger_ms = 20;
    uv_loop_t *loop = uv_default_loop();
    char *err = NULL;

    sl_daemon_metrics(cfg);
    sl_producer *prod = sl_producer_new(cfg, loop, &err);
    if (!prod)
        die("producer", err);
    sched_ctx *ctx = &g.ctx;
    sched_ctx_init(ctx, cfg, loop, prod);

    if (g.want_classify) {
        ctx->dns = sl_dns_new(loop, cfg, &err);
        if (!ctx->dns)
            die("dns", err);
        ctx->supp = sched_suppress_new(ctx, &err);
        if (!ctx->supp)
            die("suppressions", err);
    }
    if (g.want_shape) {
        ctx->control = sched_control_new(ctx, &err);
        if (!ctx->control)
            die("control", err);
        ctx->shape = sched_shape_new(ctx, &err);
        if (!ctx->shape)
            die("shape", err);
    }
    if (g.want_retry) {
        g.retry = sched_retry_new(ctx, &err);
        if (!g.retry)
            die("retry", err);
    }
    if (g.want_shape || g.want_classify) {
        g.feedback = sched_feedback_new(ctx, &err);
        if (!g.feedback)
            die("feedback", err);
    }
    uv_timer_init(loop, &g.ready_timer);
    uv_timer_start(&g.ready_timer, ready_cb, 0, 100);
    sl_daemon_signals(loop, &g.sigterm, &g.sigint, signal_cb);
    sl_info("scheduler started (stages:%s%s%s)", g.want_classify ? " classify" : "",
            g.want_shape ? " shape" : "", g.want_retry ? " retry" : "");

    sl_daemon_run(loop, cfg, &ctx->draining, "scheduler");
    sched_ctx_free(ctx);
    sl_config_free(cfg);
    sl_info("scheduler stopped");
    return 0;
}
