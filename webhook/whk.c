/*
 * whk - see whk.h.
 *
 * Threads: the loop thread owns every sl_record and every item's refcount;
 * endpoint workers only read an item's JSON (immutable once queued) and
 * hand finished batches back through w->mu + the `done` async. An item is
 * freed only when its refcount drops to zero, i.e. after every worker has
 * handed it back, so no worker ever reads freed memory.
 */
#include "whk.h"

#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "wire.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WHK_BACKOFF_MIN_MS 500
#define WHK_BACKOFF_MAX_MS (5 * 60 * 1000)

typedef struct whk_item {
    sl_record *rec;
    char *json;
    size_t len;
    size_t refs;            /* endpoints that have not yet accepted it */
    struct whk_item *prev, *next; /* the live list (loop thread) */
} whk_item;

/* An item one worker finished, on its way back to the loop. Each worker
 * hands back its own node: the item itself is shared. */
typedef struct whk_done {
    whk_item *item;
    int ep;                 /* which endpoint finished it */
    long dead_status;       /* 0: accepted; else refused with this status: dead-letter it */
    unsigned attempts;
    struct whk_done *next;
} whk_done;

typedef struct whk_ep {
    struct whk *w;
    const sl_webhook_endpoint *conf;
    int index;
    char label[32];         /* endpoint="N" */
    char *secret;
    size_t secret_len;
    pthread_t thread;
    bool started;
    /* under w->mu */
    whk_item **q;           /* ring of queued items */
    size_t q_head, q_len, q_cap;
} whk_ep;

struct whk {
    const sl_config *cfg;
    uv_loop_t *loop;
    sl_consumer *cons;
    sl_producer *prod;      /* the DLQ: records that do not decode, dead letters */
    char *topic;
    bool replay;            /* consuming the DLQ (whk.h) */
    whk_ep *eps;
    size_t n_eps;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;          /* workers: exit when idle */
    bool abandon;           /* workers: exit now, abort requests */
    whk_done *done_head;    /* items a worker finished, for the loop */
    whk_done **done_tail;

    uv_async_t done_async;
    size_t pending;         /* loop thread: records not yet done */
    whk_item *live;         /* loop thread: items not yet done */
    bool stopped;
    bool drained;
    whk_drained_cb drained_cb;
    void *drained_arg;
};

void whk_sign(const void *key, size_t klen, long long ts, const void *body, size_t len,
              char out[72])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    sl_buf msg = SL_BUF_INIT;
    sl_buf_printf(&msg, "%lld.", ts);
    sl_buf_append(&msg, body, len);
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg.data, msg.len, md, &mdlen))
        sl_panic("HMAC-SHA256 failed");
    sl_buf_free(&msg);
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "sha256=", 7);
    for (unsigned i = 0; i < mdlen && i < 32; i++) {
        out[7 + 2 * i] = hex[md[i] >> 4];
        out[8 + 2 * i] = hex[md[i] & 15];
    }
    out[7 + 64] = 0;
}

bool whk_status_refuses(long status)
{
    return status >= 400 && status < 500 && status != 408 && status != 429;
}

int64_t whk_backoff_ms(unsigned failures)
{
    int64_t d = WHK_BACKOFF_MIN_MS;
    for (unsigned i = 1; i < failures && d < WHK_BACKOFF_MAX_MS; i++)
        d *= 2;
    return d < WHK_BACKOFF_MAX_MS ? d : WHK_BACKOFF_MAX_MS;
}

/* ---- worker threads ---- */

static size_t whk_discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* libcurl progress callback: abort the transfer when abandoning. */
static int whk_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    whk *w = arg;
    pthread_mutex_lock(&w->mu);
    bool a = w->abandon;
    pthread_mutex_unlock(&w->mu);
    return a ? 1 : 0;
}

/* One POST; returns the HTTP status, or 0 with errbuf set. */
static long whk_post(whk_ep *ep, CURL *h, const sl_buf *body, char *errbuf)
{
    char sig[72], hdr_sig[96], hdr_ts[64];
    long long ts = (long long)time(NULL);
    whk_sign(ep->secret, ep->secret_len, ts, body->data, body->len, sig);
    snprintf(hdr_sig, sizeof hdr_sig, "X-Sluice-Signature: %s", sig);
    snprintf(hdr_ts, sizeof hdr_ts, "X-Sluice-Timestamp: %lld", ts);
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, hdr_ts);
    hdrs = curl_slist_append(hdrs, hdr_sig);
    hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(h, CURLOPT_URL, ep->conf->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)ep->conf->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)ep->conf->timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice-webhook/1");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, whk_discard);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, whk_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, ep->w);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    /* libcurl ignores the CA environment variables the curl tool and
     * OpenSSL honour; pass them on so a private CA can be trusted. */
    const char *ca = getenv("CURL_CA_BUNDLE");
    if (!ca || !*ca)
        ca = getenv("SSL_CERT_FILE");
    if (ca && *ca)
        curl_easy_setopt(h, CURLOPT_CAINFO, ca);
    errbuf[0] = 0;
    double t0 = (double)sl_mono_ms();
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else if (!errbuf[0])
        snprintf(errbuf, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
    sl_metric_observe("sluice_webhook_request_seconds", ep->label,
                      ((double)sl_mono_ms() - t0) / 1000.0);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    return status;
}

/* Wait up to ms on the condition variable; false when abandoning. */
static bool whk_sleep(whk *w, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    int r = 0;
    while (!w->abandon && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    bool go_on = !w->abandon;
    pthread_mutex_unlock(&w->mu);
    return go_on;
}

static void *whk_worker(void *arg)
{
    whk_ep *ep = arg;
    whk *w = ep->w;
    CURL *h = curl_easy_init();
    if (!h)
        sl_panic("curl_easy_init failed");
    size_t max = ep->conf->batch_size;
    whk_item **batch = xcalloc(max, sizeof *batch);
    sl_buf body = SL_BUF_INIT;
    char errbuf[CURL_ERROR_SIZE];
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!ep->q_len && !w->stopping && !w->abandon)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->abandon || (!ep->q_len && w->stopping)) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        size_t n = 0;
        while (n < max && ep->q_len) {
            batch[n++] = ep->q[ep->q_head];
            ep->q_head = (ep->q_head + 1) % ep->q_cap;
            ep->q_len--;
        }
        size_t left = ep->q_len;
        pthread_mutex_unlock(&w->mu);
        sl_metric_set("sluice_webhook_queued", ep->label, (double)(left + n));

        sl_buf_reset(&body);
        sl_buf_putc(&body, '[');
        for (size_t i = 0; i < n; i++) {
            if (i)
                sl_buf_putc(&body, ',');
            sl_buf_append(&body, batch[i]->json, batch[i]->len);
        }
        sl_buf_putc(&body, ']');

        unsigned failures = 0, refusals = 0;
        long refused = 0;
        bool ok = false;
        for (;;) {
            long status = whk_post(ep, h, &body, errbuf);
            if (status >= 200 && status < 300) {
                ok = true;
                char l[64];
                snprintf(l, sizeof l, "%s,result=\"ok\"", ep->label);
                sl_metric_inc("sluice_webhook_requests_total", l, 1);
                sl_metric_inc("sluice_webhook_events_total", ep->label, (double)n);
                if (failures)
                    sl_info("webhook %d: endpoint accepts again after %u failures", ep->index,
                            failures);
                break;
            }
            failures++;
            char l[64];
            snprintf(l, sizeof l, "%s,result=\"error\"", ep->label);
            sl_metric_inc("sluice_webhook_requests_total", l, 1);
            if (whk_status_refuses(status) && ++refusals >= w->cfg->webhook.max_attempts) {
                refused = status;
                sl_metric_inc("sluice_webhook_dead_lettered_total", ep->label, (double)n);
                sl_error("webhook %d: HTTP %ld %u times for a batch of %zu events: the "
                         "endpoint refuses it; dead-lettering them (replay with "
                         "sluice-webhook --replay)",
                         ep->index, status, refusals, n);
                break;
            }
            int64_t delay = whk_backoff_ms(failures);
            /* Log the first failure and then only every 10th, so an hour
             * of outage is a handful of lines, not thousands. */
            if (failures == 1 || failures % 10 == 0) {
                if (status)
                    sl_warn("webhook %d: HTTP %ld for a batch of %zu events (failure %u); "
                            "retrying in %lld ms",
                            ep->index, status, n, failures, (long long)delay);
                else
                    sl_warn("webhook %d: %s (failure %u); retrying in %lld ms", ep->index, errbuf,
                            failures, (long long)delay);
            }
            if (!whk_sleep(w, delay))
                break;
        }
        if (!ok && !refused)
            break; /* abandoning: these items are never done; Kafka repeats them */
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < n; i++) {
            whk_done *node = xcalloc(1, sizeof *node);
            node->item = batch[i];
            node->ep = ep->index;
            node->dead_status = refused;
            node->attempts = refusals;
            node->next = NULL;
            *w->done_tail = node;
            w->done_tail = &node->next;
        }
        pthread_mutex_unlock(&w->mu);
        uv_async_send(&w->done_async);
    }
    sl_buf_free(&body);
    free(batch);
    curl_easy_cleanup(h);
    return NULL;
}

/* ---- loop thread ---- */

static void whk_maybe_drained(whk *w)
{
    if (w->stopped && w->drained && !w->pending && w->drained_cb) {
        whk_drained_cb cb = w->drained_cb;
        w->drained_cb = NULL;
        cb(w->drained_arg);
    }
}

static void whk_item_unlink(whk *w, whk_item *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        w->live = it->next;
    if (it->next)
        it->next->prev = it->prev;
}

static void whk_item_release(whk *w, whk_item *it)
{
    SL_ASSERT(it->refs > 0);
    if (--it->refs)
        return;
    sl_record_done(it->rec);
    whk_item_unlink(w, it);
    free(it->json);
    free(it);
    w->pending--;
}

typedef struct whk_dead_ctx {
    whk *w;
    whk_item *item;
} whk_dead_ctx;

/* The DLQ has a dead letter: the endpoint is done with the item. */
static void whk_dead_done(void *arg, int err)
{
    whk_dead_ctx *d = arg;
    whk *w = d->w;
    if (err)
        sl_panic("webhook: DLQ write of a dead letter failed for good: %s", sl_strerror(err));
    whk_item_release(w, d->item);
    free(d);
    whk_maybe_drained(w);
}

static void whk_dead_letter(whk *w, const whk_done *n)
{
    sl_record *rec = n->item->rec;
    rd_kafka_message_t *m = rec->msg;
    char reason[160], idx[16];
    snprintf(reason, sizeof reason, "webhook endpoint %d refused it: HTTP %ld, %u times", n->ep,
             n->dead_status, n->attempts);
    snprintf(idx, sizeof idx, "%d", n->ep);
    const sl_header extra[] = {{"webhook-endpoint", idx}};
    whk_dead_ctx *d = xmalloc(sizeof *d);
    d->w = w;
    d->item = n->item;
    int r = sl_dlq_publish_hdrs(w->prod, w->cfg, m->payload, m->len, reason, rec->topic,
                                rec->partition, rec->offset, extra, 1, whk_dead_done, d);
    if (r != 0)
        sl_panic("webhook: cannot write to the DLQ: %s", sl_strerror(r));
}

static void whk_done_cb(uv_async_t *a)
{
    whk *w = a->data;
    pthread_mutex_lock(&w->mu);
    whk_done *n = w->done_head;
    w->done_head = NULL;
    w->done_tail = &w->done_head;
    pthread_mutex_unlock(&w->mu);
    while (n) {
        whk_done *next = n->next;
        if (n->dead_status)
            whk_dead_letter(w, n);
        else
            whk_item_release(w, n->item);
        free(n);
        n = next;
    }
    whk_maybe_drained(w);
}

static void whk_ep_push(whk *w, whk_ep *ep, whk_item *it)
{
    if (ep->q_len == ep->q_cap) {
        size_t cap = ep->q_cap ? ep->q_cap * 2 : 256;
        whk_item **q = xcalloc(cap, sizeof *q);
        for (size_t i = 0; i < ep->q_len; i++)
            q[i] = ep->q[(ep->q_head + i) % ep->q_cap];
        free(ep->q);
        ep->q = q;
        ep->q_head = 0;
        ep->q_cap = cap;
    }
    ep->q[(ep->q_head + ep->q_len) % ep->q_cap] = it;
    ep->q_len++;
    (void)w;
}

static void whk_dlq_cb(void *arg, int err)
{
    sl_record *rec = arg;
    if (err)
        sl_panic("webhook: DLQ write failed for good: %s", sl_strerror(err));
    /* The loop thread: sl_producer callbacks run there. */
    sl_record_done(rec);
}

typedef struct whk_dlq_ctx {
    whk *w;
    sl_record *rec;
} whk_dlq_ctx;

static void whk_dlq_done(void *arg, int err)
{
    whk_dlq_ctx *d = arg;
    whk *w = d->w;
    whk_dlq_cb(d->rec, err);
    free(d);
    w->pending--;
    whk_maybe_drained(w);
}

/* Replay: the endpoint a DLQ record was refused by, or -1 when it is not
 * a webhook dead letter (or names an endpoint no longer configured). */
static int whk_replay_target(whk *w, rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *v = NULL;
    size_t vlen = 0;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, "webhook-endpoint", &v, &vlen) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !v || !vlen || vlen > 9)
        return -1;
    char idx[10];
    memcpy(idx, v, vlen);
    idx[vlen] = 0;
    char *end;
    long i = strtol(idx, &end, 10);
    if (*end || i < 0 || (size_t)i >= w->n_eps) {
        sl_warn("webhook replay: offset %lld names endpoint '%s', which is not configured; "
                "skipped",
                (long long)m->offset, idx);
        return -1;
    }
    return (int)i;
}

static void whk_on_record(void *arg, sl_record *rec)
{
    whk *w = arg;
    rd_kafka_message_t *m = rec->msg;
    int target = -1; /* every endpoint */
    if (w->replay && (target = whk_replay_target(w, m)) < 0) {
        sl_record_done(rec); /* not a webhook dead letter */
        return;
    }
    w->pending++;
    sl_event *e = NULL;
    const char *why = NULL;
    if (!m->payload || sl_event_decode(m->payload, m->len, &e, &why) != 0) {
        if (!why)
            why = "empty record";
        sl_metric_inc("sluice_webhook_malformed_total", NULL, 1);
        sl_warn("webhook: %s[%d] offset %lld: %s; sent to the DLQ", rec->topic,
                (int)rec->partition, (long long)rec->offset, why);
        whk_dlq_ctx *d = xmalloc(sizeof *d);
        d->w = w;
        d->rec = rec;
        int r = sl_dlq_publish(w->prod, w->cfg, m->payload, m->len, why, rec->topic,
                               rec->partition, rec->offset, whk_dlq_done, d);
        if (r != 0)
            sl_panic("webhook: cannot write to the DLQ: %s", sl_strerror(r));
        return;
    }
    whk_item *it = xcalloc(1, sizeof *it);
    sl_buf b = SL_BUF_INIT;
    sl_event_json(e, &b);
    sl_event_free(e);
    it->json = sl_buf_steal(&b, &it->len);
    it->rec = rec;
    it->refs = target >= 0 ? 1 : w->n_eps;
    it->next = w->live;
    if (w->live)
        w->live->prev = it;
    w->live = it;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_eps; i++)
        if (target < 0 || (size_t)target == i)
            whk_ep_push(w, &w->eps[i], it);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void whk_consumer_drained(void *arg)
{
    whk *w = arg;
    w->drained = true;
    whk_maybe_drained(w);
}

static char *whk_read_secret(const char *path, size_t *len, char **err)
{
    sl_buf b = SL_BUF_INIT;
    int rc = sl_read_file(path, SIZE_MAX, &b);
    if (rc) {
        sl_buf_free(&b);
        *err = xasprintf("webhook secret_file %s: %s", path, sl_strerror(rc));
        return NULL;
    }
    /* A Secret written by hand usually ends in a newline that is not
     * part of the key. */
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.data[--b.len] = 0;
    if (!b.len) {
        sl_buf_free(&b);
        *err = xasprintf("webhook secret_file %s is empty", path);
        return NULL;
    }
    return sl_buf_steal(&b, len);
}

int whk_config_check(const sl_config *cfg, char **err)
{
    if (!cfg->webhook.n_endpoints) {
        *err = xasprintf("%s: webhook.endpoints is empty: nothing to post to", cfg->path);
        return -1;
    }
    for (size_t i = 0; i < cfg->webhook.n_endpoints; i++) {
        const char *file = cfg->webhook.endpoints[i].secret_file;
        if (cfg->webhook.endpoints[i].secret || !file)
            continue;
        size_t len;
        char *secret = whk_read_secret(file, &len, err);
        if (!secret)
            return -1;
        free(secret);
    }
    return 0;
}

whk *whk_new(const sl_config *cfg, uv_loop_t *loop, bool replay, char **err)
{
    if (whk_config_check(cfg, err) != 0)
        return NULL;
    whk *w = xcalloc(1, sizeof *w);
    w->cfg = cfg;
    w->loop = loop;
    w->replay = replay;
    w->done_tail = &w->done_head;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->n_eps = cfg->webhook.n_endpoints;
    w->eps = xcalloc(w->n_eps, sizeof *w->eps);
    for (size_t i = 0; i < w->n_eps; i++) {
        whk_ep *ep = &w->eps[i];
        ep->w = w;
        ep->conf = &cfg->webhook.endpoints[i];
        ep->index = (int)i;
        snprintf(ep->label, sizeof ep->label, "endpoint=\"%zu\"", i);
        if (ep->conf->secret) {
            ep->secret = xstrdup(ep->conf->secret);
            ep->secret_len = strlen(ep->secret);
        } else if (!(ep->secret = whk_read_secret(ep->conf->secret_file, &ep->secret_len, err))) {
            goto fail;
        }
    }
    sl_metric_help("sluice_webhook_events_total", SL_METRIC_COUNTER,
                   "Events an endpoint accepted (2xx), by endpoint index.");
    sl_metric_help("sluice_webhook_requests_total", SL_METRIC_COUNTER,
                   "Webhook POSTs by endpoint index and result (ok, error).");
    sl_metric_help("sluice_webhook_request_seconds", SL_METRIC_HISTOGRAM,
                   "Duration of one webhook POST.");
    sl_metric_help("sluice_webhook_queued", SL_METRIC_GAUGE,
                   "Events waiting for an endpoint, by endpoint index.");
    sl_metric_help("sluice_webhook_malformed_total", SL_METRIC_COUNTER,
                   "Records of the events topic that did not decode (sent to the DLQ).");
    sl_metric_help("sluice_webhook_dead_lettered_total", SL_METRIC_COUNTER,
                   "Events an endpoint refused (4xx but 408/429) webhook.max_attempts times, "
                   "sent to the DLQ for replay, by endpoint index.");
    w->prod = sl_producer_new(cfg, loop, err);
    if (!w->prod)
        goto fail;
    uv_async_init(loop, &w->done_async, whk_done_cb);
    w->done_async.data = w;
    w->topic = sl_config_topic(cfg, replay ? "dlq" : "events");
    const char *topics[] = {w->topic};
    sl_consumer_opts o = {
        .group = replay ? "sluice-webhook-replay" : "sluice-webhook",
        .topics = topics,
        .n_topics = 1,
        .on_record = whk_on_record,
        .arg = w,
    };
    w->cons = sl_consumer_new(cfg, loop, &o, err);
    if (!w->cons) {
        /* Failing at start-up: the daemon exits, so the handle and w are
         * left to the process exit rather than freed under libuv. */
        sl_producer_free(w->prod);
        return NULL;
    }
    for (size_t i = 0; i < w->n_eps; i++) {
        if (pthread_create(&w->eps[i].thread, NULL, whk_worker, &w->eps[i]) != 0)
            sl_panic("pthread_create: %s", strerror(errno));
        w->eps[i].started = true;
    }
    sl_info("webhook: posting %s to %zu endpoint%s", w->topic, w->n_eps, w->n_eps == 1 ? "" : "s");
    return w;
fail:
    for (size_t i = 0; i < w->n_eps; i++)
        free(w->eps[i].secret);
    free(w->eps);
    free(w->topic);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
    return NULL;
}

bool whk_ready(const whk *w)
{
    return sl_consumer_assigned(w->cons);
}

size_t whk_pending(const whk *w)
{
    return w->pending;
}

void whk_stop(whk *w, whk_drained_cb cb, void *arg)
{
    if (w->stopped)
        return;
    w->stopped = true;
    w->drained_cb = cb;
    w->drained_arg = arg;
    sl_consumer_stop(w->cons, whk_consumer_drained, w);
}

static void whk_join(whk *w, bool abandon)
{
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    if (abandon)
        w->abandon = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < w->n_eps; i++)
        if (w->eps[i].started) {
            pthread_join(w->eps[i].thread, NULL);
            w->eps[i].started = false;
        }
}

void whk_abandon(whk *w)
{
    whk_join(w, true);
    /* Batches finished before the workers stopped are done; hand the rest
     * back undone so their offsets stay uncommitted and the consumer can
     * still drain, commit what is done and leave the group cleanly. Dead
     * letters on their way to the DLQ are waited for first: their
     * callbacks hold items the loop below would free. */
    whk_done_cb(&w->done_async);
    if (sl_producer_flush(w->prod, 10000) != 0)
        sl_fatal(1, "webhook: dead letters unacknowledged by the DLQ at the drain deadline; "
                    "exiting without a commit, the next sluice-webhook posts them again");
    size_t n = 0;
    while (w->live) {
        whk_item *it = w->live;
        whk_item_unlink(w, it);
        sl_record_release(it->rec);
        free(it->json);
        free(it);
        w->pending--;
        n++;
    }
    for (size_t i = 0; i < w->n_eps; i++)
        w->eps[i].q_len = 0;
    if (n)
        sl_warn("webhook: %zu events handed back undone; the next sluice-webhook posts them", n);
    whk_maybe_drained(w);
}

static void whk_close_cb(uv_handle_t *h)
{
    whk *w = h->data;
    for (size_t i = 0; i < w->n_eps; i++) {
        free(w->eps[i].secret);
        free(w->eps[i].q);
    }
    free(w->eps);
    free(w->topic);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void whk_free(whk *w)
{
    if (!w)
        return;
    whk_join(w, false);
    sl_consumer_free(w->cons);
    if (sl_producer_flush(w->prod, 10000) != 0)
        sl_error("webhook: %zu DLQ records unacknowledged at exit",
                 sl_producer_outstanding(w->prod));
    sl_producer_free(w->prod);
    /* w holds the async handle: free it in the close callback. */
    uv_close((uv_handle_t *)&w->done_async, whk_close_cb);
}
