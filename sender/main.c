/*
 * sluice-sender - the SMTP delivery engine (thin main; the modules are in
 * worker.c, pool.c, session.c, outcome.c, tmplstore.c, message.c).
 *
 * Skeleton: parse the config, set up, consume the dispatch topic on the
 * main loop and hand each record to a worker loop by hash of its key, mark
 * records done on the main loop as the workers finish them, drain on
 * SIGTERM, exit 0.
 *
 * Drain: stop fetching; workers hand back dispatches that have not started
 * and finish the transactions under way within sender.drain_timeout; when
 * the consumer has nothing in flight it commits and closes. Dispatches that
 * were handed back are released undone (sl_record_release), so the offsets
 * committed stay below them and the next owner of the partition repeats
 * them; then the process exits 0.
 */
#include "cmdline.h"
#include "config.h"
#include "dkim.h"
#include "health.h"
#include "kafka.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "token.h"
#include "tls.h"
#include "tmplstore.h"
#include "trouble.h"
#include "worker.h"

#include <curl/curl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* As in the scheduler: jemalloc's background threads hand the pages of
 * freed per-destination state back while the sender is quiet, instead of
 * keeping them resident until it allocates again (bench/sender_idle.py). */
const char *malloc_conf = "background_thread:true";

typedef struct sender {
    sl_config *cfg;
    uv_loop_t *loop;
    sl_consumer *consumer;
    snd_worker **workers;
    int n_workers;
    uv_async_t done_async;
    pthread_mutex_t mu;
    sl_record *done_head;       /* under mu */
    sl_record *release_head;    /* under mu: handed back undone */
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    bool draining, drained, finished;
    snd_ledger *ledger;         /* NULL: sender.ledger is off */
    int32_t *assigned;          /* consumer thread: the partitions of the assignment */
    size_t n_assigned;
} sender;

static void on_record_done(void *arg, sl_record *rec)
{
    sender *s = arg;
    pthread_mutex_lock(&s->mu);
    rec->next__ = s->done_head;
    s->done_head = rec;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->done_async);
}

static void on_record_release(void *arg, sl_record *rec)
{
    sender *s = arg;
    pthread_mutex_lock(&s->mu);
    rec->next__ = s->release_head;
    s->release_head = rec;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->done_async);
}

static void on_done_async(uv_async_t *h)
{
    sender *s = h->data;
    pthread_mutex_lock(&s->mu);
    sl_record *r = s->done_head, *back = s->release_head;
    s->done_head = s->release_head = NULL;
    pthread_mutex_unlock(&s->mu);
    while (r) {
        sl_record *n = r->next__;
        sl_record_done(r);
        r = n;
    }
    while (back) {
        sl_record *n = back->next__;
        sl_record_release(back);
        back = n;
    }
}

static uint32_t hash_key(const void *p, size_t n)
{
    const unsigned char *k = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 16777619u;
    return h;
}

static void on_record(void *arg, sl_record *rec)
{
    sender *s = arg;
    uint32_t h = hash_key(rec->msg->key, rec->msg->key_len);
    snd_worker_submit(s->workers[h % (uint32_t)s->n_workers], rec);
}

/* Consumer thread, before any record of the new partitions is fetched:
 * their ledger partitions are read back on the ledger's loader, so that
 * what a previous owner finished is skipped, while the workers hold their
 * dispatches (ledger.h). The group's rebalance does not wait for it. */
static void on_assign(void *arg, const sl_assignment *a)
{
    sender *s = arg;
    const int32_t *partitions = a->partitions;
    size_t n = a->n;
    if (s->ledger)
        snd_ledger_assign(s->ledger, partitions, n);
    free(s->assigned);
    s->assigned = xcalloc(n ? n : 1, sizeof *s->assigned);
    memcpy(s->assigned, partitions, n * sizeof *partitions);
    s->n_assigned = n;
    for (int i = 0; i < s->n_workers; i++)
        snd_worker_hold(s->workers[i], false);
}

/* Consumer thread, when the group takes the partitions back (eager: all
 * of them): deliveries already on their way to the wire finish first, so
 * that their ledger records are acknowledged and their offsets stored
 * before the commit, and the next owner finds them done. Those still
 * waiting are handed back (worker.c checks sl_record_revoked()). Bounded:
 * a transaction stuck longer is the next owner's possible duplicate. */
#define SND_REVOKE_WAIT_MS 10000

static void on_revoke(void *arg)
{
    sender *s = arg;
    int64_t until = sl_mono_ms() + SND_REVOKE_WAIT_MS;
    size_t n = 0;
    for (int i = 0; i < s->n_workers; i++)
        snd_worker_hold(s->workers[i], true);
    for (;;) {
        n = 0;
        for (int i = 0; i < s->n_workers; i++)
            n += snd_worker_sending(s->workers[i]);
        if (n == 0 || sl_mono_ms() >= until)
            break;
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (n)
        sl_warn("revoke: %zu deliveries still under way after %d ms; the next owner may "
                "repeat them", n, SND_REVOKE_WAIT_MS);
    else if (s->ledger) {
        /* Not a partition whose ledger is still loading: the last owner's
         * window there (ledger.h, snd_ledger_suspect) is not over. */
        size_t k = 0;
        for (size_t i = 0; i < s->n_assigned; i++)
            if (snd_ledger_ready(s->ledger, s->assigned[i]))
                s->assigned[k++] = s->assigned[i];
        snd_ledger_handover(s->ledger, s->assigned, k);
    }
    s->n_assigned = 0;
}

static void finish(sender *s, const char *how)
{
    if (s->finished)
        return;
    s->finished = true;
    sl_info("sender stopping: %s", how);
    for (int i = 0; i < s->n_workers; i++)
        snd_worker_stop(s->workers[i]);
    on_done_async(&s->done_async);
    uv_stop(s->loop);
}

static void on_drained(void *arg)
{
    sender *s = arg;
    s->drained = true;
    finish(s, "drained, offsets committed");
}

static void on_drain_timeout(uv_timer_t *t)
{
    sender *s = t->data;
    sl_warn("drain timeout: transactions still under way are abandoned and will be repeated");
    finish(s, "drain timeout");
}

static void on_signal(uv_signal_t *h, int signum)
{
    sender *s = h->data;
    if (s->draining) {
        if (signum == SIGINT)
            finish(s, "second interrupt");
        return;
    }
    s->draining = true;
    sl_info("signal %d: draining (at most %lld ms)", signum,
            (long long)s->cfg->sender.drain_timeout_ms);
    sl_http_set_ready(false);
    sl_consumer_stop(s->consumer, on_drained, s);
    for (int i = 0; i < s->n_workers; i++)
        snd_worker_drain(s->workers[i]);
    uv_timer_start(&s->drain_timer, on_drain_timeout, (uint64_t)s->cfg->sender.drain_timeout_ms, 0);
}

static const sl_cmd_help help = {
    .prog = "sluice-sender",
    .synopsis = "[-c FILE]",
    .about = "Consumes the dispatch topic and delivers each message over SMTP, publishing\n"
             "every outcome to the events topic; see docs/sender.md.\n",
    .options = "  -c, --config FILE     the configuration (default: the built-in one)\n",
    .config = "  kafka.*               brokers, security, topic names, consumer timeouts\n"
              "  sender.workers, sender.max_inflight, sender.drain_timeout, sender.instance_id\n"
              "  sender.ledger, sender.ledger_lookback, sender.ledger_max_entries\n"
              "  sender.tls_ca_file, sender.dane, sender.dane_resolver, sender.dane_trust_anchor\n"
              "  pools, routes, shaping (tls, timeouts), dns, dkim, bounce_rules\n"
              "  verp.domain, tokens.secret_file (VERP return paths)\n"
              "  metrics.listen, metrics.health_timeout\n",
};

int main(int argc, char **argv)
{
    const char *path = NULL;
    int rc = sl_cmd_std(argc, argv, &help);
    if (rc >= 0)
        return rc;
    int ostatus = -1;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    while (sl_cmd_opt_next(argc, argv, "c:h", opts, &help, &path, &ostatus) != -1)
        ;
    if (ostatus >= 0)
        return ostatus;
    sender s = {0};
    s.cfg = sl_daemon_start(&help, argc, optind, "sender", path, 0);
    const sl_config *cfg = s.cfg;
    char *err = NULL;

    if (cfg->metrics.listen) {
        int port = 0;
        if (sl_http_start(cfg->metrics.listen, &port, &err) < 0)
            sl_fatal(1, "metrics on %s: %s", cfg->metrics.listen, err);
        sl_info("metrics on port %d", port);
    }
    sl_trouble *trouble = NULL;
    if (sl_trouble_new(cfg, &trouble, &err) < 0)
        sl_fatal(2, "%s: %s", cfg->path, err);
    sl_dkim_keyring *dkim = NULL;
    if (cfg->n_dkim && sl_dkim_keyring_load(cfg, &dkim, &err) < 0)
        sl_fatal(2, "%s: %s", cfg->path, err);
    /* The token key (tokens.secret_file) seals the VERP return paths and
     * the one-click unsubscribe links; a sender without it would hand out
     * tokens nobody can open. Static: the workers borrow it for the life
     * of the process. */
    static sl_token_key token_key;
    bool verp = cfg->verp.domain || cfg->verp.n_tenants;
    if (verp || cfg->unsubscribe.url) {
        sl_buf why = SL_BUF_INIT;
        if (!cfg->tokens.secret_file)
            sl_fatal(2, "%s: key '%s' needs tokens.secret_file (the key that signs the %s)",
                     cfg->path,
                     cfg->unsubscribe.url ? "unsubscribe.url"
                     : cfg->verp.domain   ? "verp.domain"
                                          : "verp.tenants",
                     cfg->unsubscribe.url ? "links" : "return paths");
        if (sl_token_key_load(cfg->tokens.secret_file, &token_key, &why) < 0)
            sl_fatal(2, "%s: key 'tokens.secret_file': %s", cfg->path, (const char *)why.data);
        sl_buf_free(&why);
    }
    if (verp)
        sl_info("VERP on: return paths bounce+TOKEN@%s (%zu tenants with their own), one "
                "transaction per recipient",
                cfg->verp.domain ? cfg->verp.domain : "(none)", cfg->verp.n_tenants);
    SSL_CTX *tls = sl_tls_client_ctx(cfg->sender.tls_ca_file, &err);
    if (!tls)
        sl_fatal(cfg->sender.tls_ca_file ? 2 : 1, "TLS: %s", err);
    /* DANE: one TLSA cache for every worker; a resolver or trust anchor
     * that cannot be used is a configuration error, found here. */
    snd_dane_cache *dane_cache = NULL;
    if (cfg->sender.dane) {
        snd_dane *probe = snd_dane_new(uv_default_loop(), cfg, NULL, &err);
        if (!probe)
            sl_fatal(2, "%s: %s", cfg->path, err);
        snd_dane_free(probe);
        dane_cache = snd_dane_cache_new(10000);
    }
    snd_tmplstore *templates = snd_tmplstore_start(cfg);
    snd_mtasts *mtasts = NULL;
    if (cfg->sender.mta_sts) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            sl_fatal(1, "curl_global_init failed");
        mtasts = snd_mtasts_new(cfg, &err);
        if (!mtasts)
            sl_fatal(1, "MTA-STS: %s", err);
    }

    s.loop = uv_default_loop();
    pthread_mutex_init(&s.mu, NULL);
    uv_async_init(s.loop, &s.done_async, on_done_async);
    s.done_async.data = &s;

    s.n_workers = cfg->sender.workers;
    if (s.n_workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s.n_workers = n > 0 ? (int)n : 1;
    }
    s.ledger = snd_ledger_new(cfg);
    if (s.ledger && snd_ledger_start(s.ledger, &err) < 0) {
        if (sl_daemon_early_signal()) { /* told to stop before it could start */
            sl_info("signal %d while starting (%s): stopped", sl_daemon_early_signal(), err);
            /* Nothing was consumed or produced and the template reader's
             * thread runs: end at once, without the teardown (or, under
             * ASan, the leak report) of a process that never ran. */
            fflush(NULL);
            _exit(0);
        }
        sl_fatal(1, "%s", err);
    }
    snd_shared sh = {
        .cfg = cfg,
        .dane_cache = dane_cache,
        .trouble = trouble,
        .dkim = dkim,
        .templates = templates,
        .tls_ctx = tls,
        .mtasts = mtasts,
        .verp_key = verp ? &token_key : NULL,
        .sender_id = cfg->sender.instance_id,
        .ledger = s.ledger,
        .unsub_key = cfg->unsubscribe.url ? &token_key : NULL,
        .record_done = on_record_done,
        .record_release = on_record_release,
        .record_done_arg = &s,
    };
    s.workers = xcalloc((size_t)s.n_workers, sizeof *s.workers);
    for (int i = 0; i < s.n_workers; i++) {
        s.workers[i] = snd_worker_start(&sh, i, &err);
        if (!s.workers[i])
            sl_fatal(1, "worker %d: %s", i, err);
    }

    char *topic = sl_config_topic(cfg, "dispatch");
    const char *topics[] = {topic};
    sl_consumer_opts co = {
        .group = SL_GROUP_SENDER,
        .topics = topics,
        .n_topics = 1,
        .max_inflight = cfg->sender.max_inflight,
        .on_record = on_record,
        .arg = &s,
        .on_assign = on_assign,
        .on_revoke = on_revoke,
    };
    s.consumer = sl_consumer_new(cfg, s.loop, &co, &err);
    if (!s.consumer)
        sl_fatal(1, "consumer: %s", err);

    uv_timer_init(s.loop, &s.drain_timer);
    s.drain_timer.data = &s;
    s.sigterm.data = s.sigint.data = &s;
    sl_daemon_signals(s.loop, &s.sigterm, &s.sigint, on_signal);

    sl_metric_help("sluice_sender_attempts_total", SL_METRIC_COUNTER, "Delivery attempts started");
    sl_metric_help("sluice_sender_delivered_total", SL_METRIC_COUNTER, "Recipients delivered");
    sl_metric_help("sluice_sender_deferred_total", SL_METRIC_COUNTER, "Recipients deferred");
    sl_metric_help("sluice_sender_bounced_total", SL_METRIC_COUNTER, "Recipients bounced");
    sl_metric_help("sluice_sender_connections_open", SL_METRIC_GAUGE, "SMTP connections open");
    sl_metric_help("sluice_sender_destinations_down", SL_METRIC_GAUGE,
                   "Destinations (MX address, port, source IP) down or being probed");
    sl_metric_help("sluice_sender_destination_state_changes_total", SL_METRIC_COUNTER,
                   "Destination state changes, by the state entered");
    sl_metric_help("sluice_sender_destination_skips_total", SL_METRIC_COUNTER,
                   "Deliveries that moved on or were deferred without connecting");
    sl_metric_help("sluice_sender_destinations_known", SL_METRIC_GAUGE,
                   "Destination entries held, per worker");
    sl_metric_help("sluice_sender_queue_wait_seconds", SL_METRIC_HISTOGRAM,
                   "From send_at to the start of the SMTP transaction");
    sl_http_set_ready(true);
    sl_info("sender %s: %d workers consuming %s, delivery ledger %s", cfg->sender.instance_id,
            s.n_workers, topic, s.ledger ? "on" : "off");

    sl_beat *beat = sl_health_loop(s.loop, "main loop", cfg->metrics.health_timeout_ms);
    uv_run(s.loop, UV_RUN_DEFAULT);
    if (!s.finished)
        sl_fatal(1, "exited event loop");
    sl_health_loop_stop(beat);

    if (s.drained)
        sl_consumer_free(s.consumer);
    /* Otherwise the consumer still holds handed-back records: it is left to
     * the process exit, which is what makes them repeat elsewhere. */
    if (!snd_tmplstore_stop(templates)) {
        /* Its reader still uses the config: leave everything to the exit.
         * The offsets are committed (or handed back) already. */
        fflush(NULL);
        _exit(0);
    }
    SSL_CTX_free(tls);
    snd_mtasts_free(mtasts); /* the workers are stopped */
    if (dkim)
        sl_dkim_keyring_free(dkim);
    sl_trouble_free(trouble);
    free(topic);
    free(s.workers);
    if (!s.drained) {
        fflush(NULL);
        _exit(0);
    }
    uv_close((uv_handle_t *)&s.done_async, NULL);
    uv_close((uv_handle_t *)&s.sigterm, NULL);
    uv_close((uv_handle_t *)&s.sigint, NULL);
    uv_close((uv_handle_t *)&s.drain_timer, NULL);
    uv_run(s.loop, UV_RUN_DEFAULT);
    snd_ledger_free(s.ledger);
    snd_dane_cache_free(dane_cache);
    free(s.assigned);
    sl_config_free(s.cfg);
    return 0;
}
