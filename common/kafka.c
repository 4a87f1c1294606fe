/*
 * kafka - see kafka.h.
 *
 * Producer: delivery reports are drained on the owner's loop through
 * librdkafka's io-event pipe; every record keeps its own copy of key, value
 * and headers (struct pmsg) until it is acknowledged, so that a record can
 * be produced again after a timeout or after the producer is recreated on a
 * fatal idempotence error.
 *
 * Consumer: the consumer thread polls, registers each record with its
 * partition's tracker (a FIFO of sequence numbers in offset order) and
 * pushes it on a mutex-protected list; uv_async wakes the loop, which pops
 * and calls the record callback. sl_record_done() marks the record in its
 * partition's window (offsets.h), which says what offset is safe to store.
 */
#include "kafka.h"
#include "budget.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "offsets.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* topics and configuration                                            */

sl_topic_spec *sl_topics(const sl_config *cfg, size_t *n)
{
    static const struct {
        const char *suffix;
        bool compacted;
    } fixed[] = {{"jobs", false},         {"sited", false},     {"dispatch", false},
                 {"events", false},       {"suppressions", true}, {"templates", true},
                 {"dlq", false},          {"control", true},     {"state", true},
                 {"ledger", false},       {"idempotency", true}};
    size_t nf = sizeof fixed / sizeof fixed[0];
    size_t total = nf + cfg->retry.n_delays;
    sl_topic_spec *t = xcalloc(total, sizeof *t);
    size_t i = 0;
    for (; i < nf; i++) {
        t[i].name = sl_config_topic(cfg, fixed[i].suffix);
        t[i].partitions = cfg->kafka.partitions;
        t[i].compacted = fixed[i].compacted;
        t[i].max_message_bytes = sl_budget_topic_max(cfg);
        /* The ledger must outlive the longest uncommitted window, which
         * sender.ledger_lookback covers; twice that is the margin. */
        if (!strcmp(fixed[i].suffix, "ledger"))
            t[i].retention_ms = 2 * cfg->sender.ledger_lookback_ms;
        /* sluice-api's Idempotency-Key records: compacted (one per key)
         * and deleted once older than the TTL. */
        if (!strcmp(fixed[i].suffix, "idempotency"))
            t[i].retention_ms = cfg->api.idempotency_ttl_ms;
    }
    for (size_t d = 0; d < cfg->retry.n_delays; d++, i++) {
        char *suffix = sl_config_retry_suffix(cfg->retry.delays_ms[d]);
        t[i].name = sl_config_topic(cfg, suffix);
        free(suffix);
        t[i].partitions = cfg->kafka.partitions;
        t[i].max_message_bytes = sl_budget_topic_max(cfg);
    }
    *n = total;
    return t;
}

void sl_topics_free(sl_topic_spec *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}

static void conf_set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char errstr[512];
    if (rd_kafka_conf_set(c, k, v, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        sl_panic("kafka conf %s: %s", k, errstr);
}

static bool kafka_quiet; /* set once by a command-line tool before any client */

void sl_kafka_quiet_logs(bool quiet)
{
    kafka_quiet = quiet;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    sl_log(kafka_quiet  ? SL_LOG_DEBUG
           : level <= 3 ? SL_LOG_ERROR
           : level <= 4 ? SL_LOG_WARN
                        : SL_LOG_DEBUG,
           "kafka %s: %s", fac, buf);
}

/* On a connected plaintext socket: does a Kafka broker answer an
 * ApiVersions v0 request (the first request every client sends) with our
 * correlation id before deadline? Something else listening on the port
 * (or a proxy that accepts every connection) does not. */
static int probe_kafka(int fd, int64_t deadline)
{
    static const unsigned char req[] = {0,    0,    0,    10,  /* size */
                                        0,    18,   0,    0,   /* ApiVersions v0 */
                                        0x51, 0x55, 0x49, 0x43, /* correlation id */
                                        0xff, 0xff};            /* client id: null */
    size_t off = 0;
    unsigned char resp[8];
    while (off < sizeof req + sizeof resp) {
        int64_t left = deadline - sl_mono_ms();
        bool writing = off < sizeof req;
        struct pollfd pfd = {.fd = fd, .events = writing ? POLLOUT : POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) != 1)
            return -1;
        ssize_t n = writing ? send(fd, req + off, sizeof req - off, MSG_NOSIGNAL)
                            : recv(fd, resp + (off - sizeof req), sizeof resp - (off - sizeof req), 0);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return memcmp(resp + 4, req + 8, 4) == 0 ? 0 : -1;
}

/* One TCP connect to host:port before deadline (sl_mono_ms), then, when
 * plain, an ApiVersions round trip. 0, or -1 with why describing the
 * failure in lower case. */
static int probe_one(const char *host, const char *port, bool plain, int64_t deadline, char *why,
                     size_t whylen)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        snprintf(why, whylen, "cannot resolve %s (%s)", host, gai_strerror(g));
        return -1;
    }
    int rc = -1;
    snprintf(why, whylen, "no address");
    for (struct addrinfo *ai = res; ai && rc != 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            snprintf(why, whylen, "%s", strerror(errno));
            continue;
        }
        int err = 0;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                int64_t left = deadline - sl_mono_ms();
                int n = left > 0 ? poll(&pfd, 1, (int)left) : 0;
                socklen_t len = sizeof err;
                if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                    err = errno;
                else if (n <= 0)
                    err = ETIMEDOUT;
            }
        }
        if (err == 0 && plain && probe_kafka(fd, deadline) != 0)
            err = EPROTO;
        close(fd);
        if (err == 0)
            rc = 0;
        else if (err == EPROTO)
            snprintf(why, whylen, "it accepts connections but no Kafka broker answered");
        else if (err == ETIMEDOUT)
            snprintf(why, whylen, "no answer (timed out)");
        else {
            snprintf(why, whylen, "%s", strerror(err));
            why[0] = (char)(why[0] >= 'A' && why[0] <= 'Z' ? why[0] - 'A' + 'a' : why[0]);
        }
    }
    freeaddrinfo(res);
    return rc;
}

int sl_kafka_probe(const sl_config *cfg, int timeout_ms, char *why, size_t whylen)
{
    int64_t deadline = sl_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    /* Under TLS or SASL the first bytes are not a Kafka request: TCP only. */
    const char *proto = cfg->kafka.security_protocol;
    bool plain = !proto || !strcasecmp(proto, "plaintext");
    char *list = xstrdup(cfg->kafka.bootstrap ? cfg->kafka.bootstrap : "");
    char reason[256] = "no bootstrap server configured", last[300] = "";
    int rc = -1;
    char *save = NULL;
    for (char *tok = strtok_r(list, ", ", &save); tok && rc != 0;
         tok = strtok_r(NULL, ", ", &save)) {
        char *hp = strstr(tok, "://") ? strstr(tok, "://") + 3 : tok;
        snprintf(last, sizeof last, "%s", hp);
        char *host = hp, *port = NULL;
        if (*hp == '[') {
            char *end = strchr(hp, ']');
            if (end) {
                *end = 0;
                host = hp + 1;
                port = end[1] == ':' ? end + 2 : NULL;
            }
        } else {
            char *colon = strrchr(hp, ':');
            if (colon) {
                *colon = 0;
                port = colon + 1;
            }
        }
        rc = probe_one(host, port && *port ? port : "9092", plain, deadline, reason,
                       sizeof reason);
        if (rc != 0 && sl_mono_ms() >= deadline)
            break;
    }
    free(list);
    if (rc != 0)
        snprintf(why, whylen, "cannot reach Kafka at %s: %s", last[0] ? last : "(none)", reason);
    return rc;
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    /* Non-fatal errors are information: librdkafka recovers by itself. */
    if (err == RD_KAFKA_RESP_ERR__FATAL)
        sl_error("kafka fatal: %s", reason);
    else
        sl_debug("kafka: %s: %s", rd_kafka_err2name(err), reason);
}

rd_kafka_t *sl_kafka_assign_handle(const sl_config *cfg, const char *role, const char *group,
                                   char **err, ...)
{
    rd_kafka_conf_t *c = sl_kafka_conf(cfg, role);
    char *gid = sl_config_group(cfg, group);
    rd_kafka_conf_set(c, "group.id", gid, NULL, 0);
    free(gid);
    rd_kafka_conf_set(c, "enable.auto.commit", "false", NULL, 0);
    va_list ap;
    va_start(ap, err);
    for (const char *k; (k = va_arg(ap, const char *));)
        rd_kafka_conf_set(c, k, va_arg(ap, const char *), NULL, 0);
    va_end(ap);
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(c);
        *err = xasprintf("kafka: %s", errstr);
    }
    return rk;
}

rd_kafka_conf_t *sl_kafka_conf(const sl_config *cfg, const char *role)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char tmp[64];
    conf_set(c, "bootstrap.servers", cfg->kafka.bootstrap);
    if (cfg->kafka.client_id)
        conf_set(c, "client.id", cfg->kafka.client_id);
    else {
        snprintf(tmp, sizeof tmp, "sluice-%s", role);
        conf_set(c, "client.id", tmp);
    }
    if (cfg->kafka.security_protocol)
        conf_set(c, "security.protocol", cfg->kafka.security_protocol);
    if (cfg->kafka.sasl_mechanism)
        conf_set(c, "sasl.mechanism", cfg->kafka.sasl_mechanism);
    if (cfg->kafka.sasl_username)
        conf_set(c, "sasl.username", cfg->kafka.sasl_username);
    if (cfg->kafka.sasl_password)
        conf_set(c, "sasl.password", cfg->kafka.sasl_password);
    if (cfg->kafka.ssl_ca_location)
        conf_set(c, "ssl.ca.location", cfg->kafka.ssl_ca_location);
    conf_set(c, "log.connection.close", "false");
    rd_kafka_conf_set_log_cb(c, log_cb);
    rd_kafka_conf_set_error_cb(c, error_cb);
    return c;
}

/* ------------------------------------------------------------------ */
/* producer                                                            */

/* A record until its delivery report: one allocation, with the topic,
 * key and value in data[] (librdkafka is given them without a copy). */
typedef struct pmsg {
    sl_producer *p;
    const char *topic;
    const void *key;          /* NULL: no key */
    size_t klen;
    const void *val;          /* NULL: a tombstone */
    size_t vlen;
    rd_kafka_headers_t *hdrs; /* our copy; librdkafka gets a copy of it */
    sl_produce_cb cb;
    void *arg;
    int attempts;
    char data[];
} pmsg;

/* A topic handle, so that producing does not look the topic up by name
 * for every record. */
typedef struct ptopic {
    char *name;
    rd_kafka_topic_t *rkt;
} ptopic;

struct sl_producer {
    const sl_config *cfg;
    rd_kafka_t *rk;
    uv_loop_t *loop;
    uv_poll_t poll;
    int pipefd[2];
    size_t outstanding;
    bool recreate;     /* fatal error seen: recreate before the next produce */
    bool closing;      /* sl_producer_free(): purged records are dropped */
    pmsg **retry;      /* records to produce again (timeouts, purged) */
    size_t n_retry, cap_retry;
    ptopic *topics;    /* handles of rk's topics */
    size_t n_topics;
    int linger_ms;     /* -1: kafka.linger_ms */
};

static void producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

static rd_kafka_t *producer_create(sl_producer *p, char **err)
{
    rd_kafka_conf_t *c = sl_kafka_conf(p->cfg, "producer");
    if (p->linger_ms == 0) {
        /* The prompt producer (kafka.h): what counts is how soon the
         * partition leader has appended the record, since one still in
         * this process, or unread in the broker's socket, dies with it. A
         * broker reads a connection's next request only once it answered
         * the last, and an acks=all answer waits for the followers: acks=1
         * answers on the append. Not idempotent (which needs acks=all),
         * so a retry may repeat or reorder a record; a leader lost before
         * a follower copied it loses the record. Its users tolerate both. */
        conf_set(c, "enable.idempotence", "false");
        conf_set(c, "acks", "1");
        conf_set(c, "max.in.flight.requests.per.connection", "5");
        conf_set(c, "socket.nagle.disable", "true");
    } else {
        conf_set(c, "enable.idempotence", "true");
        conf_set(c, "acks", "all");
    }
    conf_set(c, "partitioner", "murmur2_random");
    char linger[16];
    int ms = p->linger_ms >= 0 ? p->linger_ms : p->cfg->kafka.linger_ms >= 0 ? p->cfg->kafka.linger_ms : 5;
    snprintf(linger, sizeof linger, "%d", ms);
    conf_set(c, "linger.ms", linger);
    conf_set(c, "message.timeout.ms", "30000");
    conf_set(c, "queue.buffering.max.messages", "1000000");
    conf_set(c, "compression.codec", "lz4");
    /* The size budget (budget.h): any record produced for a job the
     * contract accepts fits, whatever stage produces it. */
    char maxb[24];
    snprintf(maxb, sizeof maxb, "%llu", (unsigned long long)sl_budget_record_max(p->cfg));
    conf_set(c, "message.max.bytes", maxb);
    rd_kafka_conf_set_dr_msg_cb(c, producer_dr_cb);
    rd_kafka_conf_set_opaque(c, p);
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(c);
        *err = xasprintf("kafka producer: %s", errstr);
        return NULL;
    }
    /* c is now owned by rk */
    if (p->loop) {
        rd_kafka_queue_t *q = rd_kafka_queue_get_main(rk); /* a new reference */
        rd_kafka_queue_io_event_enable(q, p->pipefd[1], "1", 1);
        rd_kafka_queue_destroy(q);
    }
    return rk;
}

static rd_kafka_topic_t *topic_handle(sl_producer *p, const char *name)
{
    for (size_t i = 0; i < p->n_topics; i++)
        if (!strcmp(p->topics[i].name, name))
            return p->topics[i].rkt;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, name, NULL);
    if (!rkt)
        return NULL;
    p->topics = xrealloc(p->topics, (p->n_topics + 1) * sizeof *p->topics);
    p->topics[p->n_topics++] = (ptopic){xstrdup(name), rkt};
    return rkt;
}

/* Before rk is destroyed: it holds a reference for each handle. */
static void topics_clear(sl_producer *p)
{
    for (size_t i = 0; i < p->n_topics; i++) {
        rd_kafka_topic_destroy(p->topics[i].rkt);
        free(p->topics[i].name);
    }
    free(p->topics);
    p->topics = NULL;
    p->n_topics = 0;
}

static void pmsg_free(pmsg *m)
{
    if (m->hdrs)
        rd_kafka_headers_destroy(m->hdrs);
    free(m);
}

static void pmsg_finish(pmsg *m, int err)
{
    sl_producer *p = m->p;
    p->outstanding--;
    if (m->cb)
        m->cb(m->arg, err);
    pmsg_free(m);
}

static int pmsg_produce(sl_producer *p, pmsg *m)
{
    rd_kafka_topic_t *rkt = topic_handle(p, m->topic);
    if (!rkt)
        return SL_EKAFKA;
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            p->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(m->key, m->klen),
            RD_KAFKA_V_VALUE((void *)m->val, m->vlen),
            /* No copy: m owns key and value until its delivery report. */
            RD_KAFKA_V_MSGFLAGS(0),
            RD_KAFKA_V_HEADERS(m->hdrs ? rd_kafka_headers_copy(m->hdrs) : NULL),
            RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
        if (!e)
            return 0;
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            /* Poll and retry, as librdkafka's examples do. */
            rd_kafka_poll(p->rk, 10);
            continue;
        }
        if (e == RD_KAFKA_RESP_ERR__FATAL)
            p->recreate = true;
        return e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? SL_ETOOBIG : SL_EKAFKA;
    }
}

static void retry_push(sl_producer *p, pmsg *m)
{
    if (p->n_retry == p->cap_retry) {
        p->cap_retry = p->cap_retry ? p->cap_retry * 2 : 64;
        p->retry = xrealloc(p->retry, p->cap_retry * sizeof *p->retry);
    }
    p->retry[p->n_retry++] = m;
}

static void producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    sl_producer *p = opaque;
    pmsg *pm = m->_private;
    if (p->closing) {
        pmsg_free(pm);
        return;
    }
    if (!m->err) {
        pmsg_finish(pm, 0);
        return;
    }
    switch (m->err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
        sl_error("kafka: record for %s refused: %s", pm->topic, rd_kafka_err2str(m->err));
        pmsg_finish(pm, SL_ETOOBIG);
        return;
    case RD_KAFKA_RESP_ERR__FATAL:
        p->recreate = true;
        break;
    default:
        break;
    }
    /* Timed out, purged, or any other transient failure: produce again. */
    pm->attempts++;
    if (pm->attempts == 1 || pm->attempts % 10 == 0)
        sl_warn("kafka: record for %s not acknowledged (%s), producing again (attempt %d)",
                pm->topic, rd_kafka_err2name(m->err), pm->attempts + 1);
    sl_metric_inc("sluice_kafka_produce_retries_total", NULL, 1);
    retry_push(p, pm);
}

static void producer_recreate(sl_producer *p)
{
    char errstr[512];
    rd_kafka_resp_err_t fe = rd_kafka_fatal_error(p->rk, errstr, sizeof errstr);
    sl_error("kafka producer fatal error (%s: %s): recreating it and re-sending %zu records",
             rd_kafka_err2name(fe), errstr, p->outstanding);
    sl_metric_inc("sluice_kafka_producer_recreated_total", NULL, 1);
    rd_kafka_t *old = p->rk;
    /* Purge what the old producer holds; its delivery reports (with
     * _PURGE_* errors) move every record onto the retry list. */
    rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(old, 0);
    while (rd_kafka_outq_len(old) > 0)
        rd_kafka_poll(old, 10);
    topics_clear(p);
    char *err = NULL;
    rd_kafka_t *rk = NULL;
    p->rk = NULL;
    while (!(rk = producer_create(p, &err))) {
        sl_error("%s; retrying", err);
        free(err);
        err = NULL;
        usleep(100000);
    }
    rd_kafka_destroy(old);
    p->rk = rk;
    p->recreate = false;
}

static void producer_retry_pending(sl_producer *p)
{
    if (p->recreate)
        producer_recreate(p);
    while (p->n_retry) {
        pmsg *m = p->retry[--p->n_retry];
        int rc = pmsg_produce(p, m);
        if (rc == SL_ETOOBIG) {
            pmsg_finish(m, rc);
        } else if (rc) {
            p->n_retry++;
            if (p->recreate)
                producer_recreate(p);
            else
                break;
        }
    }
}

static void producer_drain(sl_producer *p)
{
    int n;
    do {
        n = rd_kafka_poll(p->rk, 0);
    } while (n > 0);
    producer_retry_pending(p);
}

static void producer_poll_cb(uv_poll_t *h, int status, int events)
{
    (void)events;
    sl_producer *p = h->data;
    char buf[256];
    while (read(p->pipefd[0], buf, sizeof buf) > 0)
        ;
    (void)status;
    producer_drain(p);
}

static sl_producer *producer_new(const sl_config *cfg, uv_loop_t *loop, int linger_ms, char **err)
{
    sl_producer *p = xcalloc(1, sizeof *p);
    p->cfg = cfg;
    p->linger_ms = linger_ms;
    p->loop = loop;
    p->pipefd[0] = p->pipefd[1] = -1;
    if (loop) {
        if (uv_pipe(p->pipefd, UV_NONBLOCK_PIPE, UV_NONBLOCK_PIPE) != 0) {
            *err = xasprintf("kafka producer: pipe: %s", strerror(errno));
            free(p);
            return NULL;
        }
    }
    p->rk = producer_create(p, err);
    if (!p->rk) {
        if (loop) {
            close(p->pipefd[0]);
            close(p->pipefd[1]);
        }
        free(p);
        return NULL;
    }
    if (loop) {
        uv_poll_init(loop, &p->poll, p->pipefd[0]);
        p->poll.data = p;
        uv_poll_start(&p->poll, UV_READABLE, producer_poll_cb);
    }
    return p;
}

sl_producer *sl_producer_new(const sl_config *cfg, uv_loop_t *loop, char **err)
{
    return producer_new(cfg, loop, -1, err);
}

sl_producer *sl_producer_new_prompt(const sl_config *cfg, uv_loop_t *loop, char **err)
{
    return producer_new(cfg, loop, 0, err);
}

int sl_producer_send(sl_producer *p, const char *topic, const void *key, size_t klen,
                     const void *val, size_t vlen, const sl_header *hdrs, size_t nhdrs,
                     sl_produce_cb cb, void *arg)
{
    if (p->recreate)
        producer_recreate(p);
    size_t tlen = strlen(topic) + 1;
    if (!key)
        klen = 0;
    if (!val)
        vlen = 0;
    pmsg *m = xmalloc(sizeof *m + tlen + klen + vlen);
    memset(m, 0, sizeof *m);
    m->p = p;
    m->topic = memcpy(m->data, topic, tlen);
    if (key) {
        m->key = memcpy(m->data + tlen, key, klen);
        m->klen = klen;
    }
    if (val) {
        m->val = memcpy(m->data + tlen + klen, val, vlen);
        m->vlen = vlen;
    }
    if (nhdrs) {
        m->hdrs = rd_kafka_headers_new(nhdrs);
        for (size_t i = 0; i < nhdrs; i++)
            rd_kafka_header_add(m->hdrs, hdrs[i].name, -1, hdrs[i].value, -1);
    }
    m->cb = cb;
    m->arg = arg;
    int rc = pmsg_produce(p, m);
    if (rc == SL_EKAFKA && p->recreate) {
        producer_recreate(p);
        rc = pmsg_produce(p, m);
    }
    if (rc) {
        pmsg_free(m);
        return rc;
    }
    p->outstanding++;
    return 0;
}

void sl_producer_poll(sl_producer *p, int timeout_ms)
{
    rd_kafka_poll(p->rk, timeout_ms);
    producer_drain(p);
}

int sl_producer_flush(sl_producer *p, int timeout_ms)
{
    int64_t deadline = sl_mono_ms() + timeout_ms;
    while (p->outstanding > 0) {
        int64_t left = deadline - sl_mono_ms();
        if (left <= 0)
            return SL_ETIMEOUT;
        rd_kafka_poll(p->rk, left > 100 ? 100 : (int)left);
        producer_drain(p);
    }
    return 0;
}

size_t sl_producer_outstanding(const sl_producer *p)
{
    return p->outstanding;
}

rd_kafka_t *sl_producer_handle(sl_producer *p)
{
    return p->rk;
}

static void producer_close_cb(uv_handle_t *h)
{
    sl_producer *p = h->data;
    close(p->pipefd[0]);
    close(p->pipefd[1]);
    free(p);
}

void sl_producer_free(sl_producer *p)
{
    if (!p)
        return;
    if (p->outstanding)
        sl_warn("kafka producer closed with %zu records unacknowledged", p->outstanding);
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    /* Purged records come back as delivery reports; free them untouched. */
    p->closing = true;
    while (rd_kafka_outq_len(p->rk) > 0)
        rd_kafka_poll(p->rk, 10);
    topics_clear(p);
    rd_kafka_destroy(p->rk);
    for (size_t i = 0; i < p->n_retry; i++)
        pmsg_free(p->retry[i]);
    free(p->retry);
    if (p->loop)
        uv_close((uv_handle_t *)&p->poll, producer_close_cb);
    else
        free(p);
}

/* ------------------------------------------------------------------ */
/* consumer                                                            */

/* How long backpressure may hold the consumer thread out of its poll loop
 * before it pauses its partitions instead (well below librdkafka's default
 * max.poll.interval.ms of 5 minutes). */
#define SL_HOLD_MS 30000

/* One assigned partition's in-flight records, in offset order. */
typedef struct sl_part {
    char *topic;
    int32_t partition;
    int refs;           /* the assignment + every record in flight */
    bool revoked;
    bool paused;        /* as last applied to librdkafka */
    int64_t committed;  /* at assignment; RD_KAFKA_OFFSET_INVALID: none */
    sl_offsets window;  /* records in flight, in offset order */
    int64_t store;      /* offset to store at the next stores_flush(); -1: none */
    struct sl_part *store_next;
    struct sl_consumer *c;
    struct sl_part *next;
} sl_part;

struct sl_consumer {
    const sl_config *cfg;
    rd_kafka_t *rk;
    uv_loop_t *loop;
    uv_async_t async;
    uv_check_t check;            /* stores_flush() once per loop iteration */
    int closing;                 /* handles not yet closed by sl_consumer_free() */
    pthread_t thread;
    pthread_mutex_t mu;
    sl_consumer_opts o;
    char **topics;


    /* under mu */
    sl_part *parts;
    sl_part *stores;             /* parts with an offset to store (each holds a ref) */
    sl_record *q_head, *q_tail;
    size_t inflight;             /* queued + handed out, not done */
    bool stopping;
    bool thread_done;
    bool assigned;
    char **paused_topics;        /* requested by the loop */
    size_t n_paused;
    bool pause_dirty;
    size_t wake_at;              /* inflight count that should end a wait early */
    pthread_cond_t cv;           /* signalled at wake_at, on stop and pause requests */

    /* o.start_group's committed offsets at creation; NULL: none. Read
     * only after creation (the consumer thread's rebalance callback). */
    rd_kafka_topic_partition_list_t *start_offsets;

    /* o.mark_group: its own handle (never subscribed), the offsets
     * finished since the start (under mu; dirty when they moved) and when
     * the consumer thread last committed them. */
    char *mark_group; /* a copy: o.mark_group points here */
    rd_kafka_t *mark_rk;
    rd_kafka_topic_partition_list_t *mark;
    bool mark_dirty;
    int64_t mark_at;

    /* consumer thread only */
    bool paused_all;
    sl_beat *beat;               /* polling is happening (health.h) */

    sl_drained_cb drained_cb;
    void *drained_arg;
    bool drained_fired;
};

static sl_part *part_find(sl_consumer *c, const char *topic, int32_t partition)
{
    for (sl_part *p = c->parts; p; p = p->next)
        if (p->partition == partition && !strcmp(p->topic, topic))
            return p;
    return NULL;
}

static void part_unref(sl_part *p)
{
    if (--p->refs > 0)
        return;
    free(p->topic);
    sl_offsets_free(&p->window);
    free(p);
}

/* Under mu: hand librdkafka the offsets the loop advanced since the last
 * call, in one call (storing each as it advanced cost a list and a lock
 * round trip per record). Under mu, so that two flushes never store an
 * older offset after a newer one. */
static void stores_flush(sl_consumer *c)
{
    if (!c->stores)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (sl_part *p = c->stores, *n; p; p = n) {
        n = p->store_next;
        if (!p->revoked)
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = p->store;
        if (c->mark) {
            rd_kafka_topic_partition_t *tp =
                rd_kafka_topic_partition_list_find(c->mark, p->topic, p->partition);
            if (!tp)
                tp = rd_kafka_topic_partition_list_add(c->mark, p->topic, p->partition);
            tp->offset = p->store;
            c->mark_dirty = true;
        }
        p->store = -1;
        p->store_next = NULL;
        part_unref(p);
    }
    c->stores = NULL;
    /* Fails harmlessly for a partition revoked meanwhile. */
    if (l->cnt)
        rd_kafka_offsets_store(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Consumer thread: commit the finished offsets to o.mark_group, at most
 * every commit interval (final: at once, everything stored first). */
static void mark_commit(sl_consumer *c, bool final)
{
    if (!c->mark_rk)
        return;
    int64_t t = sl_mono_ms();
    if (!final && t - c->mark_at < c->cfg->kafka.commit_interval_ms)
        return;
    c->mark_at = t;
    rd_kafka_poll(c->mark_rk, 0); /* its own errors and logs */
    pthread_mutex_lock(&c->mu);
    if (final)
        stores_flush(c);
    rd_kafka_topic_partition_list_t *l = c->mark_dirty ? rd_kafka_topic_partition_list_copy(c->mark)
                                                       : NULL;
    c->mark_dirty = false;
    pthread_mutex_unlock(&c->mu);
    if (!l)
        return;
    rd_kafka_resp_err_t e = rd_kafka_commit(c->mark_rk, l, 0 /* sync */);
    if (e) {
        sl_warn("kafka: offsets of %s not committed: %s", c->o.mark_group, rd_kafka_err2str(e));
        pthread_mutex_lock(&c->mu);
        c->mark_dirty = true;
        pthread_mutex_unlock(&c->mu);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void consumer_commit(sl_consumer *c, const char *why)
{
    if (c->o.no_commit)
        return;
    pthread_mutex_lock(&c->mu);
    stores_flush(c);
    pthread_mutex_unlock(&c->mu);
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, NULL, 0 /* sync */);
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        sl_warn("kafka commit (%s) failed: %s", why, rd_kafka_err2str(e));
}

/* Consumer thread, on assignment: a logical start (the beginning, the end)
 * made a number, where the broker says; what it does not say stays
 * logical. */
static void start_numbers(sl_consumer *c, rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (tp->offset >= 0)
            continue;
        int64_t at = -1;
        bool end = tp->offset == RD_KAFKA_OFFSET_END;
        if (!sl_kafka_watermarks(c->rk, tp->topic, &tp->partition, 1, end ? NULL : &at,
                                 end ? &at : NULL, 10000))
            tp->offset = at;
    }
}

/* Consumer thread, on assignment: commit where each partition the group
 * had no offset for (committed[i] SL_OFFSET_NONE) starts, before any
 * record of it is read. A
 * later owner then finds an offset, and knows an owner came before it:
 * one that may have handed on records without committing (killed, or
 * revoked with all it had read still in flight). */
static void commit_start(sl_consumer *c, const rd_kafka_topic_partition_list_t *parts,
                         const int64_t *committed)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
        if (committed[i] == SL_OFFSET_NONE && parts->elems[i].offset >= 0)
            rd_kafka_topic_partition_list_add(l, parts->elems[i].topic,
                                              parts->elems[i].partition)->offset =
                parts->elems[i].offset;
    if (l->cnt) {
        rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, l, 0 /* sync */);
        if (e)
            sl_warn("kafka: the start of %d newly owned partitions not committed (%s): a "
                    "later owner will take them for new", l->cnt, rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Consumer thread, on assignment: where each partition starts is finished
 * already (start_numbers() made a logical start a number), so the mark
 * covers a partition before its first record is done. */
static void mark_start(sl_consumer *c, rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (tp->offset < 0)
            continue; /* unknown: marked once a record is done */
        pthread_mutex_lock(&c->mu);
        rd_kafka_topic_partition_t *m =
            rd_kafka_topic_partition_list_find(c->mark, tp->topic, tp->partition);
        if (!m)
            m = rd_kafka_topic_partition_list_add(c->mark, tp->topic, tp->partition);
        m->offset = tp->offset;
        c->mark_dirty = true;
        pthread_mutex_unlock(&c->mu);
    }
}

/* Consumer thread, from inside rd_kafka_consumer_poll(). */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    sl_consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* Where a group has no committed offset, start at the beginning:
         * auto.offset.reset is "error" so that an offset fallen off the log
         * is reported, never silently skipped. */
        rd_kafka_resp_err_t e = rd_kafka_committed(rk, parts, 30000);
        if (e)
            sl_warn("kafka: fetching committed offsets failed: %s", rd_kafka_err2str(e));
        size_t np = parts->cnt ? (size_t)parts->cnt : 1;
        int32_t *nums = xcalloc(np, sizeof *nums);
        int64_t *committed = xcalloc(np, sizeof *committed);
        bool any_none = false;
        pthread_mutex_lock(&c->mu);
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &parts->elems[i];
            nums[i] = tp->partition;
            committed[i] = tp->offset >= 0      ? tp->offset
                           : e || tp->err       ? SL_OFFSET_UNKNOWN
                                                : SL_OFFSET_NONE;
            any_none |= committed[i] == SL_OFFSET_NONE;
            sl_part *p = xcalloc(1, sizeof *p);
            p->topic = xstrdup(tp->topic);
            p->partition = tp->partition;
            p->refs = 1;
            p->c = c;
            sl_offsets_init(&p->window);
            p->store = -1;
            p->committed = tp->offset;
            p->next = c->parts;
            c->parts = p;
            if (tp->offset < 0 && c->start_offsets) {
                rd_kafka_topic_partition_t *so =
                    rd_kafka_topic_partition_list_find(c->start_offsets, tp->topic, tp->partition);
                if (so)
                    tp->offset = so->offset; /* its first where it has none */
            }
            if (tp->offset < 0)
                tp->offset = c->o.from_end ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
        }
        c->assigned = true;
        pthread_mutex_unlock(&c->mu);
        if (c->mark || (any_none && !c->o.no_commit))
            start_numbers(c, parts);
        if (any_none && !c->o.no_commit)
            commit_start(c, parts, committed);
        if (c->mark)
            mark_start(c, parts);
        sl_info("kafka: assigned %d partitions", parts->cnt);
        if (c->o.on_assign) {
            sl_assignment a = {.partitions = nums, .committed = committed,
                               .n = (size_t)parts->cnt, .rk = rk};
            c->o.on_assign(c->o.arg, &a);
        }
        free(nums);
        free(committed);
        rd_kafka_assign(rk, parts);
        c->paused_all = false;
        c->pause_dirty = true;
    } else {
        /* Eager revoke: commit what is stored; records still in flight will
         * be repeated by the next owner (at least once). */
        if (c->o.on_revoke)
            c->o.on_revoke(c->o.arg);
        consumer_commit(c, "revoke");
        pthread_mutex_lock(&c->mu);
        sl_part *p = c->parts;
        c->parts = NULL;
        /* Leave nothing paused behind: a later assignment of the same
         * partition must start fetching. */
        rd_kafka_topic_partition_list_t *resume = rd_kafka_topic_partition_list_new(8);
        for (sl_part *q = p; q; q = q->next)
            if (q->paused)
                rd_kafka_topic_partition_list_add(resume, q->topic, q->partition);
        if (resume->cnt)
            rd_kafka_resume_partitions(rk, resume);
        rd_kafka_topic_partition_list_destroy(resume);
        while (p) {
            sl_part *n = p->next;
            p->revoked = true;
            part_unref(p);
            p = n;
        }
        pthread_mutex_unlock(&c->mu);
        sl_info("kafka: revoked %d partitions", parts->cnt);
        rd_kafka_assign(rk, NULL);
    }
}

static void retention_alarm(sl_consumer *c, rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    int64_t lo = 0;
    if (sl_kafka_watermarks(c->rk, topic, &m->partition, 1, &lo, NULL, 10000))
        lo = RD_KAFKA_OFFSET_BEGINNING; /* unknown: the log's start, wherever it is */
    pthread_mutex_lock(&c->mu);
    sl_part *p = part_find(c, topic, m->partition);
    int64_t from = p && p->committed >= 0 ? p->committed : m->offset;
    /* The partition now starts at lo: a later re-assignment must neither
     * go back to the lost offset nor count the same loss twice. */
    if (p && lo > from)
        p->committed = lo;
    pthread_mutex_unlock(&c->mu);
    int64_t lost = lo > from && from >= 0 ? lo - from : 0;
    sl_error("RETENTION ALARM: %s[%d]: committed offset %lld fell off the log (oldest now %lld): "
             "%lld records were lost before this consumer read them; continuing from %lld",
             topic, m->partition, (long long)from, (long long)lo, (long long)lost, (long long)lo);
    char labels[256];
    snprintf(labels, sizeof labels, "topic=\"%s\",partition=\"%d\"", topic, m->partition);
    sl_metric_inc("sluice_kafka_offsets_lost_total", labels, (double)lost);
    /* A seek does not restart a fetcher stopped by auto.offset.reset=error;
     * assigning again does. Every other partition resumes where the
     * application stands, so nothing in flight is fetched twice. */
    rd_kafka_topic_partition_list_t *asg = NULL;
    if (rd_kafka_assignment(c->rk, &asg) || !asg) {
        sl_error("kafka: cannot read the assignment to resume %s[%d]", topic, m->partition);
        return;
    }
    rd_kafka_position(c->rk, asg);
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < asg->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &asg->elems[i];
        if (tp->partition == m->partition && !strcmp(tp->topic, topic)) {
            tp->offset = lo;
            continue;
        }
        if (tp->offset >= 0)
            continue;
        /* Nothing consumed there yet: start where the assignment did. */
        sl_part *q = part_find(c, tp->topic, tp->partition);
        tp->offset = q && q->committed >= 0 ? q->committed
                     : c->o.from_end        ? RD_KAFKA_OFFSET_END
                                            : RD_KAFKA_OFFSET_BEGINNING;
    }
    /* librdkafka starts the re-assigned partitions unpaused. */
    for (sl_part *q = c->parts; q; q = q->next)
        q->paused = false;
    c->pause_dirty = true;
    pthread_mutex_unlock(&c->mu);
    rd_kafka_resp_err_t e = rd_kafka_assign(c->rk, asg);
    if (e)
        sl_error("kafka: resuming %s[%d] at %lld failed: %s", topic, m->partition, (long long)lo,
                 rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(asg);
}

/* Consumer thread. Pauses and resumes only the partitions whose wanted
 * state changed: resuming a partition that was never paused restarts its
 * fetcher at the application position, which re-delivers records already
 * queued (seen as duplicates right after an assignment). */
static void apply_pauses(sl_consumer *c)
{
    rd_kafka_topic_partition_list_t *pause = rd_kafka_topic_partition_list_new(8);
    rd_kafka_topic_partition_list_t *resume = rd_kafka_topic_partition_list_new(8);
    pthread_mutex_lock(&c->mu);
    for (sl_part *p = c->parts; p; p = p->next) {
        bool want = c->paused_all;
        for (size_t k = 0; !want && k < c->n_paused; k++)
            if (!strcmp(c->paused_topics[k], p->topic))
                want = true;
        if (want == p->paused)
            continue;
        p->paused = want;
        rd_kafka_topic_partition_list_add(want ? pause : resume, p->topic, p->partition);
    }
    c->pause_dirty = false;
    pthread_mutex_unlock(&c->mu);
    if (pause->cnt)
        rd_kafka_pause_partitions(c->rk, pause);
    if (resume->cnt)
        rd_kafka_resume_partitions(c->rk, resume);
    rd_kafka_topic_partition_list_destroy(pause);
    rd_kafka_topic_partition_list_destroy(resume);
}

static void *consumer_thread(void *arg)
{
    sl_consumer *c = arg;
    uint32_t max = c->o.max_inflight ? c->o.max_inflight : 10000;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool stopping = c->stopping;
        size_t inflight = c->inflight;
        bool dirty = c->pause_dirty;
        pthread_mutex_unlock(&c->mu);
        if (stopping && !c->paused_all) {
            c->paused_all = true;
            dirty = true;
        } else if (!stopping && !c->paused_all && inflight >= max) {
            /* Backpressure. First just stop polling: pausing partitions
             * makes librdkafka drop what it prefetched and fetch it again
             * on resume, which cut throughput fourfold. Only a hold longer
             * than SL_HOLD_MS pauses them, so that this thread polls again
             * and rebalances and max.poll.interval.ms are served. */
            pthread_mutex_lock(&c->mu);
            c->wake_at = max / 2;
            int64_t until = sl_mono_ms() + SL_HOLD_MS;
            while (!c->stopping && !c->pause_dirty && c->inflight > max / 2 &&
                   sl_mono_ms() < until) {
                sl_health_beat(c->beat); /* a deliberate wait, bounded by SL_HOLD_MS */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += 1;
                pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            }
            bool still = !c->stopping && c->inflight > max / 2 && sl_mono_ms() >= until;
            if (!still)
                c->wake_at = SIZE_MAX;
            pthread_mutex_unlock(&c->mu);
            if (!still)
                continue;
            c->paused_all = true;
            dirty = true;
        } else if (!stopping && c->paused_all && inflight <= max / 2) {
            c->paused_all = false;
            dirty = true;
            pthread_mutex_lock(&c->mu);
            c->wake_at = SIZE_MAX;
            pthread_mutex_unlock(&c->mu);
        }
        if (dirty)
            apply_pauses(c);
        if (stopping && inflight == 0)
            break;
        sl_health_beat(c->beat);
        mark_commit(c, false);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 100);
        if (!m)
            continue;
        if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET)
                retention_alarm(c, m);
            else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                sl_warn("kafka consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        const char *topic = rd_kafka_topic_name(m->rkt);
        pthread_mutex_lock(&c->mu);
        sl_part *p = part_find(c, topic, m->partition);
        if (!p) {
            /* Not (or no longer) ours: the next owner reads it. */
            pthread_mutex_unlock(&c->mu);
            rd_kafka_message_destroy(m);
            continue;
        }
        sl_record *r = xcalloc(1, sizeof *r);
        r->msg = m;
        r->topic = p->topic;
        r->partition = m->partition;
        r->offset = m->offset;
        r->part__ = p;
        p->refs++;
        r->seq__ = sl_offsets_push(&p->window, m->offset);
        if (c->q_tail)
            c->q_tail->next__ = r;
        else
            c->q_head = r;
        c->q_tail = r;
        c->inflight++;
        pthread_mutex_unlock(&c->mu);
        uv_async_send(&c->async);
    }
    /* Drained: commit what is stored, leave the group. */
    sl_health_unregister(c->beat);
    consumer_commit(c, "stop");
    mark_commit(c, true);
    rd_kafka_consumer_close(c->rk);
    pthread_mutex_lock(&c->mu);
    c->thread_done = true;
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->async);
    return NULL;
}

static void consumer_check_cb(uv_check_t *h)
{
    sl_consumer *c = h->data;
    pthread_mutex_lock(&c->mu);
    stores_flush(c);
    pthread_mutex_unlock(&c->mu);
}

static void consumer_async_cb(uv_async_t *h)
{
    sl_consumer *c = h->data;
    pthread_mutex_lock(&c->mu);
    sl_record *r = c->q_head;
    c->q_head = c->q_tail = NULL;
    bool done = c->thread_done;
    pthread_mutex_unlock(&c->mu);
    while (r) {
        sl_record *n = r->next__;
        r->next__ = NULL;
        c->o.on_record(c->o.arg, r);
        r = n;
    }
    if (done && !c->drained_fired) {
        c->drained_fired = true;
        pthread_join(c->thread, NULL);
        if (c->drained_cb)
            c->drained_cb(c->drained_arg);
    }
}

/* The offsets `group` has committed for every partition of the topics
 * (the first offset of one it has none for; with raw, a negative offset),
 * asked with a handle of that group id that never joins it; NULL when the
 * group has none at all or they cannot be had (logged). */
static rd_kafka_topic_partition_list_t *group_offsets(const sl_config *cfg, rd_kafka_t *rk,
                                                      const char *group, const char **topics,
                                                      size_t n_topics, bool raw)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < n_topics; i++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topics[i], NULL);
        const rd_kafka_metadata_t *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
        rd_kafka_topic_destroy(rkt);
        if (e || md->topic_cnt != 1 || md->topics[0].err) {
            sl_warn("kafka: partitions of %s unknown (%s): %s's offsets not used", topics[i],
                    rd_kafka_err2str(e ? e : md->topics[0].err), group);
            if (md)
                rd_kafka_metadata_destroy(md);
            continue;
        }
        for (int k = 0; k < md->topics[0].partition_cnt; k++)
            rd_kafka_topic_partition_list_add(l, topics[i], md->topics[0].partitions[k].id);
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_conf_t *kc = sl_kafka_conf(cfg, "consumer");
    char *gid = sl_config_group(cfg, group);
    conf_set(kc, "group.id", gid);
    free(gid);
    conf_set(kc, "enable.auto.commit", "false");
    char errstr[512];
    rd_kafka_t *g = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof errstr);
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__FAIL;
    if (!g)
        rd_kafka_conf_destroy(kc);
    else
        e = rd_kafka_committed(g, l, 10000);
    if (e) {
        sl_warn("kafka: offsets of group %s not read: %s", group,
                g ? rd_kafka_err2str(e) : errstr);
        rd_kafka_topic_partition_list_destroy(l);
        l = NULL;
    }
    if (g)
        rd_kafka_destroy(g); /* never subscribed: nothing to close */
    /* A group that exists has read nothing of a partition it holds no
     * offset for: start there at the beginning, as the group will. A group
     * with no offset at all is new (a new fleet): nothing to pick up. */
    bool any = false;
    for (int i = 0; l && i < l->cnt; i++)
        any = any || (!l->elems[i].err && l->elems[i].offset >= 0);
    if (l && !any) {
        rd_kafka_topic_partition_list_destroy(l);
        l = NULL;
    }
    for (int i = 0; l && !raw && i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        if (tp->offset >= 0 && !tp->err)
            continue;
        /* Its first offset, as a number: a logical BEGINNING is resolved
         * through auto.offset.reset, which is "error" here. */
        int64_t lo = 0;
        if (sl_kafka_watermarks(rk, tp->topic, &tp->partition, 1, &lo, NULL, 10000))
            lo = RD_KAFKA_OFFSET_END; /* unknown: nothing picked up there */
        tp->offset = lo;
        tp->err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    return l;
}

/* o.mark_group: lower the start offsets to where the group stands (what
 * the last incarnation had finished), and open the handle that commits
 * this one's (without it, logged, nothing is committed there). */
static void mark_open(sl_consumer *c)
{
    rd_kafka_topic_partition_list_t *m =
        group_offsets(c->cfg, c->rk, c->o.mark_group, c->o.topics, c->o.n_topics, true);
    int lowered = 0;
    for (int i = 0; m && i < m->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &m->elems[i];
        if (tp->err || tp->offset < 0)
            continue;
        if (!c->start_offsets)
            c->start_offsets = rd_kafka_topic_partition_list_new(m->cnt);
        rd_kafka_topic_partition_t *so =
            rd_kafka_topic_partition_list_find(c->start_offsets, tp->topic, tp->partition);
        if (!so) {
            so = rd_kafka_topic_partition_list_add(c->start_offsets, tp->topic, tp->partition);
            so->offset = RD_KAFKA_OFFSET_END;
        }
        /* A concrete offset, else END: the lower one wins. */
        if (so->offset < 0 || so->offset > tp->offset) {
            so->offset = tp->offset;
            lowered++;
        }
    }
    if (lowered)
        sl_info("kafka: %d partitions start where %s stands, before %s", lowered,
                c->o.mark_group, c->o.start_group ? c->o.start_group : "their end");
    if (m)
        rd_kafka_topic_partition_list_destroy(m);
    char *err = NULL;
    c->mark_rk = sl_kafka_assign_handle(c->cfg, "consumer", c->o.mark_group, &err, NULL);
    if (!c->mark_rk) {
        sl_error("group %s: %s", c->o.mark_group, err);
        free(err);
        return;
    }
    c->mark = rd_kafka_topic_partition_list_new(8);
}

sl_consumer *sl_consumer_new(const sl_config *cfg, uv_loop_t *loop, const sl_consumer_opts *o,
                             char **err)
{
    sl_consumer *c = xcalloc(1, sizeof *c);
    c->cfg = cfg;
    c->loop = loop;
    c->o = *o;
    rd_kafka_conf_t *kc = sl_kafka_conf(cfg, "consumer");
    char tmp[32];
    char *gid = sl_config_group(cfg, o->group);
    conf_set(kc, "group.id", gid);
    conf_set(kc, "enable.auto.commit", o->no_commit ? "false" : "true");
    conf_set(kc, "enable.auto.offset.store", "false");
    snprintf(tmp, sizeof tmp, "%d", cfg->kafka.commit_interval_ms);
    conf_set(kc, "auto.commit.interval.ms", tmp);
    conf_set(kc, "auto.offset.reset", "error");
    conf_set(kc, "partition.assignment.strategy", "range,roundrobin");
    snprintf(tmp, sizeof tmp, "%d", cfg->kafka.session_timeout_ms);
    conf_set(kc, "session.timeout.ms", tmp);
    snprintf(tmp, sizeof tmp, "%d", cfg->kafka.heartbeat_interval_ms);
    conf_set(kc, "heartbeat.interval.ms", tmp);
    conf_set(kc, "enable.partition.eof", "false");
    if (cfg->kafka.static_membership && !o->no_commit) {
        /* A static member (KIP-345) that restarts within the session
         * timeout gets its partitions back without a rebalance: the other
         * members go on undisturbed. */
        char *id = xasprintf("%s-%s", cfg->sender.instance_id, gid);
        conf_set(kc, "group.instance.id", id);
        free(id);
    }
    free(gid);
    conf_set(kc, "queued.max.messages.kbytes", "16384");
    /* A record as large as the budget allows must be fetchable: librdkafka
     * returns one batch over the per-partition fetch size anyway, but not
     * one over fetch.max.bytes (50 MB by default). */
    uint64_t tmax = sl_budget_topic_max(cfg);
    if (tmax > 50000000) {
        snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)tmax);
        conf_set(kc, "fetch.max.bytes", tmp);
        snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)(tmax + 1024 * 1024));
        conf_set(kc, "receive.message.max.bytes", tmp);
    }
    rd_kafka_conf_set_rebalance_cb(kc, rebalance_cb);
    rd_kafka_conf_set_opaque(kc, c);
    char errstr[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof errstr);
    if (!c->rk) {
        rd_kafka_conf_destroy(kc);
        *err = xasprintf("kafka consumer: %s", errstr);
        free(c);
        return NULL;
    }
    /* kc is now owned by rk */
    rd_kafka_poll_set_consumer(c->rk);
    if (o->start_group)
        c->start_offsets = group_offsets(cfg, c->rk, o->start_group, o->topics, o->n_topics, false);
    if (o->mark_group) {
        c->mark_group = xstrdup(o->mark_group);
        c->o.mark_group = c->mark_group;
        mark_open(c);
    }
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)o->n_topics);
    c->topics = xcalloc(o->n_topics, sizeof *c->topics);
    for (size_t i = 0; i < o->n_topics; i++) {
        c->topics[i] = xstrdup(o->topics[i]);
        rd_kafka_topic_partition_list_add(subs, o->topics[i], RD_KAFKA_PARTITION_UA);
    }
    c->o.topics = (const char **)c->topics;
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        *err = xasprintf("kafka subscribe: %s", rd_kafka_err2str(e));
        rd_kafka_destroy(c->rk);
        for (size_t i = 0; i < o->n_topics; i++)
            free(c->topics[i]);
        free(c->topics);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->wake_at = SIZE_MAX;
    char *beat_name = xasprintf("consumer %s", o->group);
    c->beat = sl_health_register(beat_name, cfg->metrics.health_timeout_ms);
    free(beat_name);
    uv_async_init(loop, &c->async, consumer_async_cb);
    c->async.data = c;
    uv_check_init(loop, &c->check);
    c->check.data = c;
    uv_check_start(&c->check, consumer_check_cb);
    if (pthread_create(&c->thread, NULL, consumer_thread, c) != 0)
        sl_panic("pthread_create: %s", strerror(errno));
    return c;
}

/* The record at seq of p is finished (done) or handed back: advance the
 * stored offset when done, drop the in-flight count and p's reference. */
static void place_finish(sl_part *p, uint64_t seq, bool done)
{
    sl_consumer *c = p->c;
    pthread_mutex_lock(&c->mu);
    if (done && !p->revoked) {
        int64_t store = sl_offsets_done(&p->window, seq);
        if (store >= 0) {
            if (p->store < 0) {
                p->store_next = c->stores;
                c->stores = p;
                p->refs++;
            }
            p->store = store;
        }
    }
    c->inflight--;
    bool wake = c->inflight == c->wake_at || (c->stopping && c->inflight == 0);
    if (wake)
        pthread_cond_signal(&c->cv);
    part_unref(p);
    pthread_mutex_unlock(&c->mu);
    if (wake)
        rd_kafka_yield(c->rk);
}

static void record_finish(sl_record *rec, bool done)
{
    place_finish(rec->part__, rec->seq__, done);
    if (rec->msg)
        rd_kafka_message_destroy(rec->msg);
    free(rec);
}

void sl_record_done(sl_record *rec)
{
    record_finish(rec, true);
}

void sl_record_release(sl_record *rec)
{
    /* Left in the window undone: the stored offset can never pass it. */
    record_finish(rec, false);
}

void sl_record_to_mark(sl_record *rec, sl_mark *mark)
{
    mark->part__ = rec->part__;
    mark->seq__ = rec->seq__;
    if (rec->msg)
        rd_kafka_message_destroy(rec->msg);
    free(rec);
}

void sl_mark_done(sl_mark *mark)
{
    place_finish(mark->part__, mark->seq__, true);
    mark->part__ = NULL;
}

void sl_mark_release(sl_mark *mark)
{
    place_finish(mark->part__, mark->seq__, false);
    mark->part__ = NULL;
}

static bool part_revoked(sl_part *p)
{
    pthread_mutex_lock(&p->c->mu);
    bool r = p->revoked;
    pthread_mutex_unlock(&p->c->mu);
    return r;
}

bool sl_mark_revoked(const sl_mark *mark)
{
    return part_revoked(mark->part__);
}

const char *sl_mark_topic(const sl_mark *mark, int32_t *partition)
{
    *partition = mark->part__->partition;
    return mark->part__->topic;
}

bool sl_record_revoked(const sl_record *rec)
{
    return part_revoked(rec->part__);
}

void sl_consumer_pause_topic(sl_consumer *c, const char *topic, bool pause)
{
    pthread_mutex_lock(&c->mu);
    size_t k;
    for (k = 0; k < c->n_paused; k++)
        if (!strcmp(c->paused_topics[k], topic))
            break;
    if (pause && k == c->n_paused) {
        c->paused_topics = xrealloc(c->paused_topics, (c->n_paused + 1) * sizeof(char *));
        c->paused_topics[c->n_paused++] = xstrdup(topic);
        c->pause_dirty = true;
    } else if (!pause && k < c->n_paused) {
        free(c->paused_topics[k]);
        c->paused_topics[k] = c->paused_topics[--c->n_paused];
        c->pause_dirty = true;
    }
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    rd_kafka_yield(c->rk); /* apply it now, not after the poll's timeout */
}

void sl_consumer_stop(sl_consumer *c, sl_drained_cb cb, void *arg)
{
    pthread_mutex_lock(&c->mu);
    bool already = c->stopping;
    c->stopping = true;
    if (!already) {
        c->drained_cb = cb;
        c->drained_arg = arg;
    }
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    rd_kafka_yield(c->rk);
}

size_t sl_consumer_inflight(const sl_consumer *c)
{
    sl_consumer *m = (sl_consumer *)c;
    pthread_mutex_lock(&m->mu);
    size_t n = m->inflight;
    pthread_mutex_unlock(&m->mu);
    return n;
}

bool sl_consumer_assigned(const sl_consumer *c)
{
    sl_consumer *m = (sl_consumer *)c;
    pthread_mutex_lock(&m->mu);
    bool a = m->assigned;
    pthread_mutex_unlock(&m->mu);
    return a;
}

static void consumer_close_cb(uv_handle_t *h)
{
    sl_consumer *c = h->data;
    if (--c->closing > 0)
        return;
    for (size_t i = 0; i < c->o.n_topics; i++)
        free(c->topics[i]);
    free(c->topics);
    for (size_t i = 0; i < c->n_paused; i++)
        free(c->paused_topics[i]);
    free(c->paused_topics);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

void sl_consumer_free(sl_consumer *c)
{
    if (!c)
        return;
    SL_ASSERT(c->drained_fired);
    sl_part *p = c->parts;
    while (p) {
        sl_part *n = p->next;
        part_unref(p);
        p = n;
    }
    c->parts = NULL;
    for (p = c->stores; p; p = c->stores) {
        c->stores = p->store_next;
        part_unref(p);
    }
    rd_kafka_destroy(c->rk);
    if (c->start_offsets)
        rd_kafka_topic_partition_list_destroy(c->start_offsets);
    if (c->mark_rk)
        rd_kafka_destroy(c->mark_rk);
    if (c->mark)
        rd_kafka_topic_partition_list_destroy(c->mark);
    free(c->mark_group);
    c->closing = 2;
    uv_close((uv_handle_t *)&c->async, consumer_close_cb);
    uv_close((uv_handle_t *)&c->check, consumer_close_cb);
}

rd_kafka_resp_err_t sl_kafka_topic_metadata(rd_kafka_t *rk, const char *topic,
                                            int (*stop)(void), const rd_kafka_metadata_t **md)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    *md = NULL;
    for (int tries = 0; tries < 10 && (tries == 0 || !stop || !stop()); tries++) {
        int64_t t0 = sl_mono_ms();
        e = rd_kafka_metadata(rk, 0, rkt, md, 5000);
        if (!e && (*md)->topic_cnt == 1 && !(*md)->topics[0].err &&
            (*md)->topics[0].partition_cnt > 0)
            break;
        if (!e) {
            e = (*md)->topic_cnt ? (*md)->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
            rd_kafka_metadata_destroy(*md);
            *md = NULL;
        }
        /* A broker that answers at once that it does not know the topic
         * may simply not have heard of its creation yet (real Kafka
         * spreads new topics to the brokers in a moment): ask again after
         * a pause, not ten times in the same millisecond. */
        if (sl_mono_ms() - t0 < 500)
            usleep(500 * 1000);
    }
    rd_kafka_topic_destroy(rkt);
    return *md ? RD_KAFKA_RESP_ERR_NO_ERROR : e;
}

/* One ListOffsets round for which (RD_KAFKA_OFFSET_BEGINNING or _END) of
 * the partitions, tried again after a metadata refresh until deadline:
 * a try that went to a leader that just died answers nothing, and only
 * fresh metadata names the new one. */
static rd_kafka_resp_err_t list_offsets(rd_kafka_t *rk, const char *topic, const int32_t *parts,
                                        size_t n, int64_t which, int64_t *out, int64_t deadline)
{
    for (;;) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
        for (size_t i = 0; i < n; i++)
            rd_kafka_topic_partition_list_add(l, topic, parts ? parts[i] : (int32_t)i)->offset =
                which;
        /* Half of what is left: a try sent to a dead leader leaves time
         * for one more once the metadata names the new leader. */
        int64_t left = deadline - sl_mono_ms();
        int64_t try_ms = left >= 1000 ? left / 2 : left;
        rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, l, try_ms > 0 ? (int)try_ms : 1);
        /* Keep every answer; one partition's error asks them all again. */
        bool answered = !e;
        for (size_t i = 0; answered && i < n; i++) {
            const rd_kafka_topic_partition_t *tp = &l->elems[i];
            if (!tp->err && tp->offset >= 0)
                out[i] = tp->offset;
            else if (!e)
                e = tp->err ? tp->err : RD_KAFKA_RESP_ERR__FAIL;
        }
        rd_kafka_topic_partition_list_destroy(l);
        left = deadline - sl_mono_ms();
        if (!e || left <= 0)
            return e;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        const rd_kafka_metadata_t *md = NULL;
        if (rkt && rd_kafka_metadata(rk, 0, rkt, &md, (int)left) == RD_KAFKA_RESP_ERR_NO_ERROR)
            rd_kafka_metadata_destroy(md);
        if (rkt)
            rd_kafka_topic_destroy(rkt);
    }
}

rd_kafka_resp_err_t sl_kafka_watermarks(rd_kafka_t *rk, const char *topic, const int32_t *parts,
                                        size_t n, int64_t *lo, int64_t *hi, int timeout_ms)
{
    int64_t deadline = sl_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    rd_kafka_resp_err_t first = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int k = 0; k < 2; k++) {
        int64_t *out = k ? hi : lo;
        if (!out)
            continue;
        for (size_t i = 0; i < n; i++)
            out[i] = -1;
        rd_kafka_resp_err_t e =
            n ? list_offsets(rk, topic, parts, n, k ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING,
                             out, deadline)
              : RD_KAFKA_RESP_ERR_NO_ERROR;
        if (e && !first)
            first = e;
    }
    return first;
}
