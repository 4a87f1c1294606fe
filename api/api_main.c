/*
 * sluice-api - the HTTPS API for services that do not speak Kafka (see
 * api.h and docs/api.md).
 *
 *   sluice-api -c sluice.yaml
 *   sluice-api --hash-key     (key on stdin, its SHA-256 for the keys file)
 *   sluice-api --new-key      (a new random key and its keys-file hash)
 *
 * Skeleton: parse config, load the keys file and TLS, create the libsluice
 * client, start the HTTP server, wait for SIGTERM/SIGINT (SIGHUP reloads
 * the keys file), then stop accepting, let the requests in progress
 * finish (libmicrohttpd joins its connection threads), flush Kafka, exit.
 * Bad config or usage exits 2.
 *
 * libmicrohttpd serves HTTP/1.1 with keep-alive and TLS (GnuTLS) in a
 * thread per connection, capped at api.max_connections.
 */
#include "api.h"
#include "api_idem.h"
#include "api_suppress.h"
#include "cmdline.h"
#include "health.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const sl_cmd_help help = {
    .prog = "sluice-api",
    .synopsis = "-c CONFIG\n"
                "       sluice-api --hash-key   (reads the key on stdin)\n"
                "       sluice-api --new-key",
    .about = "HTTPS API: POST /v1/messages publishes one job per recipient and answers\n"
             "202 only once Kafka has them; campaign and site control, suppressions;\n"
             "see docs/api.md.\n",
    .options = "  -c, --config FILE     the configuration\n"
               "      --hash-key        print the keys-file hash of the key on stdin\n"
               "      --new-key         print a new random key and its hash\n",
    .config = "  kafka.*               brokers, security, topic names\n"
              "  api.listen, api.cert, api.key, api.keys, api.allow_plain,\n"
              "  api.max_body, api.max_connections, api.ack_timeout\n"
              "  metrics.listen, metrics.health_timeout\n",
};

/* The keys table in use; swapped whole on SIGHUP. Readers hold keys_mu
 * for the request's duration, the swap takes it as a writer. */
static pthread_rwlock_t keys_mu = PTHREAD_RWLOCK_INITIALIZER;

void api_problem(api_reply *r, int status, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char detail[1024];
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    const char *title = status == 400   ? "Bad Request"
                        : status == 401 ? "Unauthorized"
                        : status == 403 ? "Forbidden"
                        : status == 404 ? "Not Found"
                        : status == 405 ? "Method Not Allowed"
                        : status == 413 ? "Content Too Large"
                        : status == 422 ? "Unprocessable Content"
                        : status == 429 ? "Too Many Requests"
                        : status == 503 ? "Service Unavailable"
                                        : "Error";
    json_decref(r->body);
    r->status = status;
    r->body = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", title, "status",
                        status, "detail", detail);
    if (field)
        json_object_set_new(r->body, "field", json_string(field));
}

typedef struct conn_req {
    sl_buf body;
    bool too_big;
} conn_req;

static api_ctx g;

static enum MHD_Result send_reply(struct MHD_Connection *con, api_reply *r)
{
    bool is_html = r->html != NULL;
    char *text = is_html ? r->html : r->body ? json_dumps(r->body, JSON_COMPACT) : xstrdup("");
    r->html = NULL; /* now owned by the response */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    /* The charset is said although JSON is always UTF-8: clients that
     * guess the encoding of a body without one (Python's requests) read a
     * detail quoting non-ASCII input as a multibyte charset whose second
     * octet can swallow the backslash before a quote. */
    const char *ctype = "application/json; charset=utf-8";
    if (r->status >= 400)
        ctype = "application/problem+json; charset=utf-8";
    if (is_html)
        ctype = "text/html; charset=utf-8";
    MHD_add_response_header(resp, "Content-Type", ctype);
    if (r->allow)
        MHD_add_response_header(resp, "Allow", r->allow);
    if (r->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    if (r->status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"sluice\"");
    enum MHD_Result ret = MHD_queue_response(con, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    char labels[32];
    snprintf(labels, sizeof labels, "code=\"%d\"", r->status);
    sl_metric_inc("sluice_api_requests_total", labels, 1);
    json_decref(r->body);
    r->body = NULL;
    return ret;
}

/* Splits "/v1/KIND/NAME[/ACTION]" into its parts (pointers into buf). */
static int split_path(char *buf, const char **kind, const char **name, const char **action)
{
    if (strncmp(buf, "/v1/", 4) != 0)
        return -1;
    char *p = buf + 4;
    *kind = p;
    *name = *action = NULL;
    char *s = strchr(p, '/');
    if (!s)
        return 0;
    *s = 0;
    *name = s + 1;
    s = strrchr(s + 1, '/');
    if (s && strcmp(*kind, "suppressions") != 0) {
        *s = 0;
        *action = s + 1;
    }
    return 0;
}

static void route(struct MHD_Connection *con, const char *url, const char *method, conn_req *cr,
                  api_reply *r)
{
    if (cr->too_big) {
        api_problem(r, 413, NULL, "the body exceeds api.max_body (%llu octets)",
                    (unsigned long long)g.cfg->api.max_body);
        return;
    }
    /* One-click unsubscribe: outside /v1, no API key (the token is the
     * credential; one that does not open, "/" in it or none, is 404). */
    if (!strncmp(url, "/u/", 3)) {
        api_unsub(&g, method, url + 3, cr->body.data ? cr->body.data : "", r);
        return;
    }
    char path[1024];
    const char *kind, *name, *action;
    if (strlen(url) >= sizeof path || (snprintf(path, sizeof path, "%s", url),
                                       split_path(path, &kind, &name, &action) != 0)) {
        api_problem(r, 404, NULL, "no such resource");
        return;
    }
    const char *auth = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        api_problem(r, 401, NULL, "an API key is required: Authorization: Bearer KEY");
        return;
    }
    pthread_rwlock_rdlock(&keys_mu);
    api_key *key = api_keys_find(g.keys, auth + 7);
    if (!key) {
        pthread_rwlock_unlock(&keys_mu);
        sl_metric_inc("sluice_api_auth_failures_total", NULL, 1);
        api_problem(r, 401, NULL, "unknown API key");
        return;
    }
    const char *body = cr->body.data ? cr->body.data : "";
    bool post = !strcmp(method, "POST");
    if (!strcmp(kind, "messages") && !name) {
        if (!post) {
            api_problem(r, 405, NULL, "/v1/messages: only POST");
        } else {
            const char *idem =
                MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Idempotency-Key");
            if (idem && (!*idem || strlen(idem) > 255)) {
                api_problem(r, 400, "Idempotency-Key", "Idempotency-Key: 1 to 255 characters");
            } else {
                int64_t t0 = sl_mono_ms();
                api_messages_post(&g, key, body, cr->body.len, idem, r);
                sl_metric_observe("sluice_api_message_request_seconds", NULL,
                                  (double)(sl_mono_ms() - t0) / 1000.0);
            }
        }
    } else if ((!strcmp(kind, "campaigns") || !strcmp(kind, "sites")) && name && action) {
        if (!post)
            api_problem(r, 405, NULL, "only POST");
        else
            api_control_post(&g, key, kind[0] == 's', name, action, body, cr->body.len, r);
    } else if (!strcmp(kind, "shaping") && !name) {
        if (strcmp(method, "GET"))
            api_problem(r, 405, NULL, "/v1/shaping: only GET");
        else
            api_shaping_get(&g, key, r);
    } else if (!strcmp(kind, "campaigns") && name && *name && !action) {
        if (strcmp(method, "GET"))
            api_problem(r, 405, NULL, "/v1/campaigns/ID: only GET");
        else
            api_campaign_get(&g, key, name, r);
    } else if (!strcmp(kind, "suppressions") && !name) {
        if (!post)
            api_problem(r, 405, NULL, "/v1/suppressions: only POST (an import)");
        else
            api_suppressions_import(&g, key, body, cr->body.len, r);
    } else if (!strcmp(kind, "suppressions") && name && *name) {
        api_suppression(&g, key, method, name, body, cr->body.len, r);
    } else {
        api_problem(r, 404, NULL, "no such resource: %s", url);
    }
    pthread_rwlock_unlock(&keys_mu);
    if (r->status == 202 && r->body && json_object_get(r->body, "accepted")) {
        sl_metric_inc("sluice_api_recipients_accepted_total", NULL,
                      (double)json_integer_value(json_object_get(r->body, "accepted")));
        sl_metric_inc("sluice_api_recipients_rejected_total", NULL,
                      (double)json_integer_value(json_object_get(r->body, "rejected")));
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    conn_req *cr = *con_cls;
    if (!cr) {
        *con_cls = xcalloc(1, sizeof *cr);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (cr->body.len + *upload_data_size > g.cfg->api.max_body)
            cr->too_big = true; /* keep reading, answer 413 at the end */
        else
            sl_buf_append(&cr->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    sl_buf_putc(&cr->body, 0);
    cr->body.len--;
    api_reply r = {0};
    route(con, url, method, cr, &r);
    return send_reply(con, &r);
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    conn_req *cr = *con_cls;
    if (cr) {
        sl_buf_free(&cr->body);
        free(cr);
        *con_cls = NULL;
    }
}

static char *read_file(const char *path, const char *what)
{
    sl_buf b = SL_BUF_INIT;
    int rc = sl_read_file(path, SIZE_MAX, &b);
    if (rc)
        sl_fatal(2, "api.%s: %s: %s", what, path, sl_strerror(rc));
    return b.data ? sl_buf_steal(&b, NULL) : xstrdup("");
}

static int hash_key(void)
{
    char line[1024];
    if (!fgets(line, sizeof line, stdin)) {
        fputs("sluice-api: no key on stdin\n", stderr);
        return 2;
    }
    line[strcspn(line, "\r\n")] = 0;
    if (!*line) {
        fputs("sluice-api: empty key\n", stderr);
        return 2;
    }
    char hex[65];
    api_key_hash_hex(line, strlen(line), hex);
    printf("%s\n", hex);
    return 0;
}

static int new_key(void)
{
    unsigned char r[32];
    if (getrandom(r, sizeof r, 0) != sizeof r)
        sl_panic("getrandom failed");
    char key[70] = "sk_";
    for (int i = 0; i < 32; i++)
        snprintf(key + 3 + 2 * i, 3, "%02x", r[i]);
    char hex[65];
    api_key_hash_hex(key, strlen(key), hex);
    printf("key:  %s\nhash: %s\n", key, hex);
    return 0;
}

static int parse_listen(const char *hp, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *colon = strrchr(hp, ':');
    if (!colon)
        return -1;
    char host[256];
    size_t hl = (size_t)(colon - hp);
    if (hl >= sizeof host)
        return -1;
    memcpy(host, hp, hl);
    host[hl] = 0;
    char *h = host;
    if (*h == '[' && hl > 1 && h[hl - 1] == ']') {
        h[hl - 1] = 0;
        h++;
    }
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(*h ? h : NULL, colon + 1, &hints, &ai) != 0 || !ai)
        return -1;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    sl_warn("api: http: %s", msg);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"hash-key", no_argument, NULL, 'H'},
                                         {"new-key", no_argument, NULL, 'N'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL;
    int c = sl_cmd_std(argc, argv, &help);
    if (c >= 0)
        return c;
    int ostatus = -1;
    while ((c = sl_cmd_opt_next(argc, argv, "c:h", opts, &help, &cfg_path, &ostatus)) != -1) {
        switch (c) {
        case 'H':
            return hash_key();
        case 'N':
            return new_key();
        }
    }
    if (ostatus >= 0)
        return ostatus;
    sl_config *cfg = sl_daemon_start(&help, argc, optind, "api", cfg_path, 1);
    g.cfg = cfg;
    if (!cfg->api.keys)
        sl_fatal(2, "%s: key 'api.keys' is required: every request needs an API key", cfg_path);
    if (!cfg->api.cert && !cfg->api.allow_plain)
        sl_fatal(2, "%s: api.cert and api.key are required (api.allow_plain: true serves plain "
                    "HTTP, for tests and loopback only)",
                 cfg_path);
    const char *listen = cfg->api.listen ? cfg->api.listen : "0.0.0.0:8443";
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen(listen, &ss, &sslen) != 0)
        sl_fatal(2, "%s: key 'api.listen': '%s' is not host:port with a numeric host", cfg_path,
                 listen);
    char *err = NULL;
    if (api_keys_load(cfg->api.keys, &g.keys, &err) != 0)
        sl_fatal(2, "%s", err);
    /* Every client waits for its jobs' acknowledgement: batch for 1 ms. */
    if (cfg->kafka.linger_ms < 0)
        cfg->kafka.linger_ms = 1;
    g.client = sluice_client_new_from_config(cfg, &err);
    if (!g.client)
        sl_fatal(1, "api: kafka: %s", err);
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.acked, NULL);
    g.prod = sl_producer_new(cfg, NULL, &err);
    if (!g.prod)
        sl_fatal(1, "api: kafka: %s", err);
    pthread_mutex_init(&g.prod_mu, NULL);
    g.supp = api_suppress_new(cfg, &err);
    if (!g.supp)
        sl_fatal(1, "api: kafka: %s", err);
    api_suppress_drain(g.supp);
    g.idem = api_idem_new(cfg, &err);
    if (!g.idem)
        sl_fatal(1, "api: kafka: %s (sluice topics ensure creates the idempotency topic)", err);
    api_idem_drain(g.idem);
    /* Static: the connection threads borrow it until exit. */
    static sl_token_key unsub_key;
    if (cfg->unsubscribe.url && !cfg->tokens.secret_file)
        sl_fatal(2, "%s: key 'unsubscribe.url': needs tokens.secret_file (the key that signs "
                    "the links)", cfg_path);
    if (cfg->tokens.secret_file) {
        sl_buf why = SL_BUF_INIT;
        if (sl_token_key_load(cfg->tokens.secret_file, &unsub_key, &why) < 0)
            sl_fatal(2, "%s: tokens.secret_file: %s", cfg_path, (const char *)why.data);
        sl_buf_free(&why);
        g.unsub_key = &unsub_key;
    }
    sl_metric_help("sluice_api_unsubscribes_total", SL_METRIC_COUNTER,
                   "POST /u/TOKEN: UNSUBSCRIBED events published, and bad tokens refused");

    sl_metric_help("sluice_api_requests_total", SL_METRIC_COUNTER,
                   "HTTP requests answered, by status code");
    sl_metric_help("sluice_api_auth_failures_total", SL_METRIC_COUNTER,
                   "Requests with an unknown API key");
    sl_metric_help("sluice_api_recipients_accepted_total", SL_METRIC_COUNTER,
                   "Recipients whose job Kafka acknowledged");
    sl_metric_help("sluice_api_recipients_rejected_total", SL_METRIC_COUNTER,
                   "Recipients refused one by one (bad address, bad substitutions)");
    sl_metric_help("sluice_api_control_total", SL_METRIC_COUNTER,
                   "Control records published, by scope and action");
    sl_metric_help("sluice_api_idempotent_replays_total", SL_METRIC_COUNTER,
                   "Requests whose Idempotency-Key was used before: answered again (same) or "
                   "refused 422 (conflict: another body)");
    sl_metric_help("sluice_api_message_request_seconds", SL_METRIC_HISTOGRAM,
                   "Time to answer POST /v1/messages, Kafka acknowledgement included");
    if (cfg->metrics.listen) {
        int mport = 0;
        if (sl_http_start(cfg->metrics.listen, &mport, &err) < 0)
            sl_fatal(1, "api: metrics on %s: %s", cfg->metrics.listen, err);
        sl_info("api: metrics on %s (port %d)", cfg->metrics.listen, mport);
    }

    /* Block the signals before libmicrohttpd starts its threads, so they
     * all inherit the mask and sigwait() below gets them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    char *cert = NULL, *pkey = NULL;
    if (cfg->api.cert) {
        flags |= MHD_USE_TLS;
        cert = read_file(cfg->api.cert, "cert");
        pkey = read_file(cfg->api.key, "key");
    } else {
        sl_warn("api: serving plain HTTP on %s (api.allow_plain): keys cross the wire in clear",
                listen);
    }
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, pkey},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->api.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_ARRAY,
        cert ? tls_opts : &tls_opts[2], MHD_OPTION_END);
    if (!d)
        sl_fatal(1, "api: cannot serve on %s (address in use, or a bad certificate or key)",
                 listen);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    sl_info("api: listening on %s (port %u, %s), %zu keys, ready", listen,
            di ? (unsigned)di->port : 0u, cert ? "https" : "http", g.keys->n);
    sl_http_set_ready(true);

    /* The main thread serves Kafka's delivery reports every 100 ms, so
     * that the jobs of a request that gave up waiting (503) and the
     * ACCEPTED events are completed even when no other request polls, and
     * beats for /healthz: a request stuck holding the client's lock stops
     * the beat. */
    sl_beat *beat = sl_health_register("api kafka poll", cfg->metrics.health_timeout_ms);
    const struct timespec tick = {0, 100 * 1000 * 1000};
    for (;;) {
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &tick);
        if (sig < 0) {
            pthread_mutex_lock(&g.mu);
            sluice_poll(g.client, 0);
            pthread_mutex_unlock(&g.mu);
            pthread_mutex_lock(&g.prod_mu);
            sl_producer_poll(g.prod, 0);
            pthread_mutex_unlock(&g.prod_mu);
            api_suppress_drain(g.supp);
            api_idem_drain(g.idem);
            sl_health_beat(beat);
            continue;
        }
        if (sig == SIGHUP) {
            api_keys *nk = NULL;
            if (api_keys_load(cfg->api.keys, &nk, &err) != 0) {
                sl_error("api: keys file not reloaded, keeping the old one: %s", err);
                free(err);
                continue;
            }
            pthread_rwlock_wrlock(&keys_mu);
            api_keys *old = g.keys;
            g.keys = nk;
            pthread_rwlock_unlock(&keys_mu);
            api_keys_free(old);
            sl_info("api: reloaded %zu keys", nk->n);
            continue;
        }
        sl_info("api: %s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    sl_health_unregister(beat);
    sl_http_set_ready(false);
    MHD_stop_daemon(d); /* joins every connection thread */
    if (sluice_flush(g.client, 30000) != 0)
        sl_warn("api: %zu jobs not acknowledged at exit", sluice_outstanding(g.client));
    sluice_client_free(g.client);
    sl_producer_flush(g.prod, 30000);
    sl_producer_free(g.prod);
    api_suppress_free(g.supp);
    api_idem_free(g.idem);
    api_keys_free(g.keys);
    free(cert);
    free(pkey);
    sl_config_free(cfg);
    sl_info("api: stopped");
    return 0;
}
