/*
 * sluice-inbound - receives the mail that comes back: asynchronous bounces
 * (DSN) to the VERP return paths, feedback-loop reports (ARF) and mailto
 * unsubscribes, for the bounce and feedback-loop domains only, and turns
 * them into events. A thin main() over inb_server (see inb_server.h and
 * docs/inbound.md).
 *
 *   sluice-inbound -c sluice.yaml [--hostname NAME]
 *
 * Skeleton: parse config, load the token key, listen, run the loop;
 * SIGTERM/SIGINT drain (stop listening, flush Kafka) and exit 0. Bad config
 * (no domain to serve, no readable token key) exits 2.
 */
#include "cmdline.h"
#include "config.h"
#include "inb_report.h"
#include "inb_server.h"
#include "log.h"
#include "metrics.h"
#include "token.h"
#include "trouble.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sl_cmd_help help = {
    .prog = "sluice-inbound",
    .synopsis = "-c CONFIG [--hostname NAME]",
    .about = "Receives bounces (DSN), feedback-loop reports (ARF) and mailto unsubscribes\n"
             "for the bounce and FBL domains only, and publishes BOUNCED, COMPLAINED and\n"
             "UNSUBSCRIBED events; see docs/inbound.md.\n",
    .options = "  -c, --config FILE     the configuration\n"
               "      --hostname NAME   the name in the greeting\n",
    .config = "  kafka.*               brokers, security, topic names\n"
              "  inbound.listen, inbound.domains, inbound.fbl, inbound.max_message_size\n"
              "  verp.domain, tokens.secret_file, bounce_rules\n"
              "  metrics.listen, metrics.health_timeout\n",
};

static struct {
    sl_config *cfg; /* here, not on the stack: reachable when sl_fatal() exits */
    inb_server *srv;
    uv_signal_t sigterm, sigint;
    bool done;
} g;

static void closed_cb(inb_server *srv, void *arg)
{
    (void)srv;
    (void)arg;
    g.done = true;
    uv_close((uv_handle_t *)&g.sigterm, NULL);
    uv_close((uv_handle_t *)&g.sigint, NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    (void)h;
    static bool stopping;
    if (stopping)
        return;
    stopping = true;
    sl_info("inbound: %s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    inb_server_close(g.srv, closed_cb, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"hostname", required_argument, NULL, 'H'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL, *hostname = NULL;
    int c = sl_cmd_std(argc, argv, &help);
    if (c >= 0)
        return c;
    int ostatus = -1;
    while ((c = sl_cmd_opt_next(argc, argv, "c:h", opts, &help, &cfg_path, &ostatus)) != -1)
        if (c == 'H')
            hostname = optarg;
    if (ostatus >= 0)
        return ostatus;
    sl_config *cfg = g.cfg = sl_daemon_start(&help, argc, optind, "inbound", cfg_path, 1);
    if (!cfg->inbound.n_domains && !cfg->verp.domain && !cfg->verp.n_tenants &&
        !cfg->inbound.n_fbl)
        sl_fatal(2, "%s: sluice-inbound needs a domain to serve: inbound.domains, verp.domain "
                    "or inbound.fbl",
                 cfg->path);
    for (size_t i = 0; i < cfg->inbound.n_fbl; i++)
        if (!strchr(cfg->inbound.fbl[i], '@'))
            sl_fatal(2, "%s: key 'inbound.fbl[%zu]': '%s' is not an address (fbl@domain)",
                     cfg->path, i, cfg->inbound.fbl[i]);
    if (!cfg->tokens.secret_file)
        sl_fatal(2, "%s: sluice-inbound needs tokens.secret_file (the key that opens the "
                    "VERP and unsubscribe tokens)",
                 cfg->path);
    static sl_token_key key;
    sl_buf why = SL_BUF_INIT;
    if (sl_token_key_load(cfg->tokens.secret_file, &key, &why) < 0)
        sl_fatal(2, "%s: key 'tokens.secret_file': %s", cfg->path, why.data);
    sl_trouble *trouble = NULL;
    char *err = NULL;
    if (sl_trouble_new(cfg, &trouble, &err) < 0)
        sl_fatal(2, "%s: %s", cfg->path, err);
    inb_report_init();

    uv_loop_t *loop = uv_default_loop();
    sl_daemon_metrics(cfg);
    inb_opts o = {.cfg = cfg, .key = &key, .trouble = trouble, .hostname = hostname};
    g.srv = inb_server_new(loop, &o, &err);
    if (!g.srv)
        sl_fatal(1, "inbound: kafka: %s", err);
    static const char *const dflt_listen[] = {"0.0.0.0:25"};
    const char *const *listen = (const char *const *)cfg->inbound.listen;
    size_t n_listen = cfg->inbound.n_listen;
    if (!n_listen) {
        listen = dflt_listen;
        n_listen = 1;
    }
    for (size_t i = 0; i < n_listen; i++) {
        int port = 0;
        int rc = inb_server_listen(g.srv, listen[i], &port);
        if (rc != 0)
            sl_fatal(1, "inbound: cannot listen on %s: %s", listen[i],
                     rc > -3000 ? uv_strerror(rc) : sl_strerror(rc));
        sl_info("inbound: listening on %s (port %d)", listen[i], port);
    }
    sl_http_set_ready(true);
    sl_info("inbound: ready");
    sl_daemon_signals(loop, &g.sigterm, &g.sigint, signal_cb);
    sl_daemon_run(loop, cfg, &g.done, "inbound");
    inb_stats st;
    inb_server_stats(g.srv, &st);
    sl_info("inbound: stopped: %llu mails accepted, %llu events, %llu forged tokens",
            (unsigned long long)st.messages, (unsigned long long)st.events,
            (unsigned long long)st.forged);
    inb_server_free(g.srv);
    sl_trouble_free(trouble);
    sl_config_free(cfg);
    return 0;
}
