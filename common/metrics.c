/*
 * metrics - see metrics.h. A mutex-protected open hash of series; render
 * sorts by name so each metric family is contiguous in the output.
 */
#include "metrics.h"
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
    uint64_t buckets[N_BUCKETS];
    struct sl_series *next;
} series;

typedef struct help {
    char *name;
    char *text;
    sl_metric_type type;
    struct help *next;
} help;

#define TABLE_SIZE 1024
static series *table[TABLE_SIZE];
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
static series *get(const char *name, const char *labels, sl_metric_type type)
{
    uint32_t h = hash2(name, labels) % TABLE_SIZE;
    for (series *s = table[h]; s; s = s->next)
        if (!strcmp(s->name, name) && !strcmp(s->labels, labels ? labels : ""))
            return s;
    series *s = xcalloc(1, sizeof *s);
    s->name = xstrdup(name);
    s->labels = xstrdup(labels ? labels : "");
    s->type = type;
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
    s->sum += v;
    s->count++;
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (v <= bucket_bounds[i])
            s->buckets[i]++;
    pthread_mutex_unlock(&mu);
}

double sl_metric_get(const char *name, const char *labels)
{
    double v = 0;
    pthread_mutex_lock(&mu);
    uint32_t h = hash2(name, labels) % TABLE_SIZE;
    for (series *s = table[h]; s; s = s->next)
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
    for (size_t i = 0; i < TABLE_SIZE; i++)
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

typedef struct http_conn {
    uv_tcp_t tcp;
    http_parser parser;
    sl_buf url;
    bool responded;
} http_conn;

void sl_http_set_ready(bool r)
{
    atomic_store(&ready, r);
}

static void conn_close_cb(uv_handle_t *h)
{
    http_conn *c = h->data;
    sl_buf_free(&c->url);
    free(c);
}

static void write_cb(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    uv_close((uv_handle_t *)w->handle, conn_close_cb);
    free(w);
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
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
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
            uv_close((uv_handle_t *)s, conn_close_cb);
        return;
    }
    http_parser_execute(&c->parser, &settings, b->base, (size_t)n);
    if (!c->responded && c->parser.http_errno != HPE_OK &&
        c->parser.http_errno != HPE_CB_message_complete)
        uv_close((uv_handle_t *)s, conn_close_cb);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    http_conn *c = xcalloc(1, sizeof *c);
    uv_tcp_init(&http_loop, &c->tcp);
    c->tcp.data = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
        return;
    }
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
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof host) {
        *err = xasprintf("metrics listen '%s': expected HOST:PORT", listen);
        return SL_EINVAL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    int port = atoi(colon + 1);
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)) {
        *err = xasprintf("metrics listen '%s': bad address", listen);
        return SL_EINVAL;
    }
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
        *port_out = ntohs(((struct sockaddr_in *)&name)->sin_port);
    }
    pthread_create(&http_thread, NULL, http_main, NULL);
    pthread_detach(http_thread);
    return 0;
}
