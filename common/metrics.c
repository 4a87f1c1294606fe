/*
 * metrics - see metrics.h. A mutex-protected open hash of series; render
 * sorts by name so each metric family is contiguous in the output.
 */
#include "metrics.h"
#include "hostport.h"
#include "health.h"
#include "log.h"

#include <http_parser.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const double bucket_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,     2.5,  5,     10,   30,  60};
#define N_BUCKETS (sizeof bucket_bounds / sizeof bucket_bounds[0])

typedef struct sl_series {
    char *name;
    char *labels;
    sl_metric_type type;
    double value;
    double sum;
    uint64_t count;
    uint64_t *buckets; /* histograms only: N_BUCKETS */
    struct sl_series *next;
} series;

typedef struct help {
    char *name;
    char *text;
    sl_metric_type type;
    struct help *next;
} help;

/* The table grows with the series and shrinks again when they are dropped
 * (a scheduler that saw 100,000 sites and forgot them). */
#define TABLE_MIN 1024
static series **table;
static size_t n_slots;
static help *helps;
static size_t n_series;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static uint32_t hash2(const char *a, const char *b)
{
    uint32_t h = 2166136261u;
    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ '{') * 16777619u;
    for (; b && *b; b++)
        h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

/* Under mu. */
static void rehash(size_t n)
{
    series **t = xcalloc(n, sizeof *t);
    for (size_t i = 0; i < n_slots; i++)
        for (series *s = table[i], *next; s; s = next) {
            next = s->next;
            uint32_t h = hash2(s->name, s->labels) % n;
            s->next = t[h];
            t[h] = s;
        }
    free(table);
    table = t;
    n_slots = n;
}

/* Under mu. */
static series *get(const char *name, const char *labels, sl_metric_type type)
{
    if (!table)
        rehash(TABLE_MIN);
    uint32_t h = hash2(name, labels) % n_slots;
    for (series *s = table[h]; s; s = s->next)
        if (!strcmp(s->name, name) && !strcmp(s->labels, labels ? labels : ""))
            return s;
    if (n_series >= n_slots * 2) {
        rehash(n_slots * 4);
        h = hash2(name, labels) % n_slots;
    }
    series *s = xcalloc(1, sizeof *s);
    s->name = xstrdup(name);
    s->labels = xstrdup(labels ? labels : "");
    s->type = type;
    if (type == SL_METRIC_HISTOGRAM)
        s->buckets = xcalloc(N_BUCKETS, sizeof *s->buckets);
    s->next = table[h];
    table[h] = s;
    n_series++;
    return s;
}

void sl_metric_help(const char *name, sl_metric_type type, const char *text)
{
    pthread_mutex_lock(&mu);
    for (help *h = helps; h; h = h->next)
        if (!strcmp(h->name, name)) {
            pthread_mutex_unlock(&mu);
            return;
        }
    help *h = xcalloc(1, sizeof *h);
    h->name = xstrdup(name);
    h->text = xstrdup(text);
    h->type = type;
    h->next = helps;
    helps = h;
    pthread_mutex_unlock(&mu);
}

void sl_metric_inc(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&mu);
    get(name, labels, SL_METRIC_COUNTER)->value += v;
    pthread_mutex_unlock(&mu);
}

void sl_metric_set(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&mu);
    get(name, labels, SL_METRIC_GAUGE)->value = v;
    pthread_mutex_unlock(&mu);
}

void sl_metric_add(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&mu);
    get(name, labels, SL_METRIC_GAUGE)->value += v;
    pthread_mutex_unlock(&mu);
}

sl_series *sl_metric_series(const char *name, const char *labels, sl_metric_type type)
{
    pthread_mutex_lock(&mu);
    series *s = get(name, labels, type);
    pthread_mutex_unlock(&mu);
    return s;
}

void sl_series_add(sl_series *s, double v)
{
    pthread_mutex_lock(&mu);
    s->value += v;
    pthread_mutex_unlock(&mu);
}

void sl_series_set(sl_series *s, double v)
{
    pthread_mutex_lock(&mu);
    s->value = v;
    pthread_mutex_unlock(&mu);
}

void sl_metric_observe(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&mu);
    series *s = get(name, labels, SL_METRIC_HISTOGRAM);
    if (s->type != SL_METRIC_HISTOGRAM)
        goto out; /* the name is a counter or gauge elsewhere: a bug, not a crash */
    s->sum += v;
    s->count++;
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (v <= bucket_bounds[i])
            s->buckets[i]++;
out:
    pthread_mutex_unlock(&mu);
}

void sl_metric_drop(const char *name, const char *labels)
{
    pthread_mutex_lock(&mu);
    if (table) {
        series **pp = &table[hash2(name, labels) % n_slots];
        for (; *pp; pp = &(*pp)->next)
            if (!strcmp((*pp)->name, name) && !strcmp((*pp)->labels, labels ? labels : "")) {
                series *s = *pp;
                *pp = s->next;
                free(s->name);
                free(s->labels);
                free(s->buckets);
                free(s);
                n_series--;
                break;
            }
        if (n_slots > TABLE_MIN && n_series < n_slots / 8)
            rehash(n_slots / 4 > TABLE_MIN ? n_slots / 4 : TABLE_MIN);
    }
    pthread_mutex_unlock(&mu);
}

double sl_metric_get(const char *name, const char *labels)
{
    double v = 0;
    pthread_mutex_lock(&mu);
    uint32_t h = table ? hash2(name, labels) % n_slots : 0;
    for (series *s = table ? table[h] : NULL; s; s = s->next)
        if (!strcmp(s->name, name) && !strcmp(s->labels, labels ? labels : ""))
            v = s->type == SL_METRIC_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&mu);
    return v;
}

static int cmp_series(const void *a, const void *b)
{
    const series *x = *(series *const *)a, *y = *(series *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

static const char *type_name(sl_metric_type t)
{
    return t == SL_METRIC_COUNTER ? "counter" : t == SL_METRIC_GAUGE ? "gauge" : "histogram";
}

static void render_labels(sl_buf *out, const char *labels, const char *extra)
{
    if (!*labels && !extra)
        return;
    sl_buf_putc(out, '{');
    sl_buf_puts(out, labels);
    if (extra) {
        if (*labels)
            sl_buf_putc(out, ',');
        sl_buf_puts(out, extra);
    }
    sl_buf_putc(out, '}');
}

void sl_metrics_render(sl_buf *out)
{
    pthread_mutex_lock(&mu);
    series **all = xcalloc(n_series ? n_series : 1, sizeof *all);
    size_t n = 0;
    for (size_t i = 0; i < n_slots; i++)
        for (series *s = table[i]; s; s = s->next)
            all[n++] = s;
    qsort(all, n, sizeof *all, cmp_series);
    const char *last = "";
    for (size_t i = 0; i < n; i++) {
        series *s = all[i];
        if (strcmp(last, s->name)) {
            last = s->name;
            for (help *h = helps; h; h = h->next)
                if (!strcmp(h->name, s->name))
                    sl_buf_printf(out, "# HELP %s %s\n", s->name, h->text);
            sl_buf_printf(out, "# TYPE %s %s\n", s->name, type_name(s->type));
        }
        if (s->type != SL_METRIC_HISTOGRAM) {
            sl_buf_puts(out, s->name);
            render_labels(out, s->labels, NULL);
            sl_buf_printf(out, " %.17g\n", s->value);
            continue;
        }
        char le[48];
        for (size_t b = 0; b < N_BUCKETS; b++) {
            snprintf(le, sizeof le, "le=\"%g\"", bucket_bounds[b]);
            sl_buf_printf(out, "%s_bucket", s->name);
            render_labels(out, s->labels, le);
            sl_buf_printf(out, " %llu\n", (unsigned long long)s->buckets[b]);
        }
        sl_buf_printf(out, "%s_bucket", s->name);
        render_labels(out, s->labels, "le=\"+Inf\"");
        sl_buf_printf(out, " %llu\n", (unsigned long long)s->count);
        sl_buf_printf(out, "%s_sum", s->name);
        render_labels(out, s->labels, NULL);
        sl_buf_printf(out, " %.17g\n%s_count", s->sum, s->name);
        render_labels(out, s->labels, NULL);
        sl_buf_printf(out, " %llu\n", (unsigned long long)s->count);
    }
    free(all);
    pthread_mutex_unlock(&mu);
}

/* ---- HTTP ---- */

static atomic_bool ready;
static uv_loop_t http_loop;
static uv_tcp_t http_server;
static pthread_t http_thread;

/*
 * Connections are few and short: a scraper or a health check sends one
 * request and reads one answer. Each must send its whole request within
 * HTTP_REQUEST_MS of connecting, and at most HTTP_MAX_CONNS are open at
 * once: a new connection beyond them closes the oldest. Idle connections
 * can then neither use up the process's descriptors (which the daemon's
 * own sessions need) nor lock a health check out.
 */
#define HTTP_MAX_CONNS 64
#define HTTP_REQUEST_MS 10000

typedef struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    int handles; /* open libuv handles; freed at 0 */
    bool closing;
    http_parser parser;
    sl_buf url;
    bool responded;
    struct http_conn *prev, *next; /* open connections, oldest first */
} http_conn;

static http_conn *conns_head, *conns_tail; /* the HTTP thread's only */
static size_t n_conns;

void sl_http_set_ready(bool r)
{
    atomic_store(&ready, r);
}

static void conn_close_cb(uv_handle_t *h)
{
    http_conn *c = h->data;
    if (--c->handles > 0)
        return;
    sl_buf_free(&c->url);
    free(c);
}

static void conn_close(http_conn *c, const char *dropped)
{
    if (c->closing)
        return;
    c->closing = true;
    if (dropped)
        sl_metric_inc("sluice_metrics_connections_dropped_total", dropped, 1);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        conns_tail = c->prev;
    n_conns--;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

static void write_cb(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    conn_close(w->handle->data, NULL);
    free(w);
}

static void conn_timer_cb(uv_timer_t *t)
{
    conn_close(t->data, "reason=\"timeout\"");
}

static void respond(http_conn *c, int code, const char *ctype, sl_buf *body)
{
    sl_buf out = SL_BUF_INIT;
    sl_buf_printf(&out,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\n\r\n",
                  code, code == 200 ? "OK" : code == 404 ? "Not Found" : "Service Unavailable",
                  ctype, body->len);
    sl_buf_append(&out, body->data, body->len);
    uv_write_t *w = xmalloc(sizeof *w);
    size_t len;
    char *data = sl_buf_steal(&out, &len);
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    c->responded = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, write_cb)) {
        free(data);
        free(w);
        conn_close(c, NULL);
    }
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;
    sl_buf_append(&c->url, at, len);
    return 0;
}

static int on_complete(http_parser *p)
{
    http_conn *c = p->data;
    sl_buf body = SL_BUF_INIT;
    const char *u = c->url.data ? c->url.data : "";
    if (!strcmp(u, "/metrics")) {
        sl_metrics_render(&body);
        respond(c, 200, "text/plain; version=0.0.4", &body);
    } else if (!strcmp(u, "/healthz")) {
        /* Not "this thread answers": the daemon's own threads beat (health.h). */
        bool ok = sl_health_report(&body);
        respond(c, ok ? 200 : 503, "text/plain", &body);
    } else if (!strcmp(u, "/readyz")) {
        bool r = atomic_load(&ready);
        sl_buf_puts(&body, r ? "ready\n" : "not ready\n");
        respond(c, r ? 200 : 503, "text/plain", &body);
    } else {
        sl_buf_puts(&body, "not found\n");
        respond(c, 404, "text/plain", &body);
    }
    sl_buf_free(&body);
    return 1;
}

static http_parser_settings settings = {.on_url = on_url, .on_message_complete = on_complete};

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)h;
    (void)s;
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    http_conn *c = s->data;
    if (n < 0) {
        if (!c->responded)
            conn_close(c, NULL);
        return;
    }
    http_parser_execute(&c->parser, &settings, b->base, (size_t)n);
    if (!c->responded && c->parser.http_errno != HPE_OK &&
        c->parser.http_errno != HPE_CB_message_complete)
        conn_close(c, NULL);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    if (n_conns >= HTTP_MAX_CONNS)
        conn_close(conns_head, "reason=\"cap\"");
    http_conn *c = xcalloc(1, sizeof *c);
    uv_tcp_init(&http_loop, &c->tcp);
    uv_timer_init(&http_loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->prev = conns_tail;
    if (conns_tail)
        conns_tail->next = c;
    else
        conns_head = c;
    conns_tail = c;
    n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        conn_close(c, NULL);
        return;
    }
    uv_timer_start(&c->timer, conn_timer_cb, HTTP_REQUEST_MS, 0);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void *http_main(void *arg)
{
    (void)arg;
    uv_run(&http_loop, UV_RUN_DEFAULT);
    sl_error("metrics http loop exited");
    return NULL;
}

int sl_http_start(const char *listen, int *port_out, char **err)
{
    struct sockaddr_storage ss;
    if (sl_hostport_addr(listen, SL_HP_LISTEN | SL_HP_RESOLVE, &ss) < 0) {
        *err = xasprintf("metrics listen '%s': not host:port, or the host is unknown", listen);
        return SL_EINVAL;
    }
    sl_metric_help("sluice_metrics_connections_dropped_total", SL_METRIC_COUNTER,
                   "Connections to the metrics listener closed unanswered, by reason");
    uv_loop_init(&http_loop);
    uv_tcp_init(&http_loop, &http_server);
    int rc = uv_tcp_bind(&http_server, (struct sockaddr *)&ss, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&http_server, 128, on_connection);
    if (rc) {
        *err = xasprintf("metrics listen '%s': %s", listen, uv_strerror(rc));
        return rc;
    }
    if (port_out) {
        struct sockaddr_storage name;
        int len = sizeof name;
        uv_tcp_getsockname(&http_server, (struct sockaddr *)&name, &len);
        *port_out = name.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&name)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&name)->sin_port);
    }
    pthread_create(&http_thread, NULL, http_main, NULL);
    pthread_detach(http_thread);
    return 0;
}
