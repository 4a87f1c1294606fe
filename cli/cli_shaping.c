/*
 * cli_shaping - `sluice shaping show`: the live shaping state of every
 * (site, source IP) pair a scheduler knows.
 *
 *   sluice shaping [-c FILE] show [--metrics HOST:PORT] [--json]
 *
 * The scheduler exposes its state as Prometheus gauges
 * (sluice_shape_rate_per_second{site,source},
 * sluice_shape_state{site,source,state} and, while a pair may not send,
 * sluice_shape_suspended_until_seconds{site,source,cause}); this command
 * fetches /metrics from HOST:PORT (default: metrics.listen of the config)
 * and prints one row per pair: SITE SOURCE STATE RATE DETAIL, DETAIL
 * saying why and until when a suspended or disabled pair waits
 * ("destination down until 2026-12-04T20:40:05Z"); --json prints one JSON
 * array of the rows, `[]` when there are none. Rate 0 means unlimited. With
 * several schedulers, ask each (each owns a share of the sites). A
 * command-line tool, so a plain blocking socket with a timeout is fine.
 */
#include "cli.h"
#include "config.h"
#include "util.h"

#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

typedef struct shp_row {
    char *site, *source, *state;
    char *cause;      /* of a suspension; NULL: none */
    double rate;
    double until;     /* Unix seconds */
} shp_row;

static void shaping_usage(FILE *f)
{
    fputs("usage: sluice shaping [-c FILE] show [--metrics HOST:PORT] [--json]\n", f);
}

/* GET /metrics; returns the body (caller frees) or NULL with a message. */
static char *shaping_fetch(const char *hostport)
{
    char *host = xstrdup(hostport);
    char *colon = strrchr(host, ':');
    if (!colon) {
        fprintf(stderr, "sluice shaping: '%s' is not HOST:PORT\n", hostport);
        free(host);
        return NULL;
    }
    *colon = 0;
    const char *port = colon + 1;
    if (!strcmp(host, "0.0.0.0") || !*host) {
        free(host);
        host = xstrdup("127.0.0.1");
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) {
        fprintf(stderr, "sluice shaping: %s: %s\n", hostport, gai_strerror(rc));
        free(host);
        return NULL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        fprintf(stderr, "sluice shaping: cannot connect to %s (is the scheduler running with "
                        "metrics.listen there?)\n", hostport);
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        free(host);
        return NULL;
    }
    freeaddrinfo(ai);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /metrics HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", hostport);
    free(host);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    sl_buf b = SL_BUF_INIT;
    char buf[8192];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        sl_buf_append(&b, buf, (size_t)r);
    close(fd);
    char *body = b.data ? strstr(b.data, "\r\n\r\n") : NULL;
    if (!body || strncmp(b.data, "HTTP/1.", 7) || strncmp(b.data + 9, "200", 3)) {
        fprintf(stderr, "sluice shaping: bad answer from %s\n", hostport);
        sl_buf_free(&b);
        return NULL;
    }
    char *out = xstrdup(body + 4);
    sl_buf_free(&b);
    return out;
}

/* The value of label `name` in a {a="x",b="y"} set; caller frees. */
static char *shaping_label(const char *labels, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof pat, "%s=\"", name);
    const char *p = labels;
    while ((p = strstr(p, pat))) {
        if (p == labels || p[-1] == ',' || p[-1] == '{') {
            p += strlen(pat);
            sl_buf v = SL_BUF_INIT;
            for (; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                sl_buf_putc(&v, *p);
            }
            return v.data ? sl_buf_steal(&v, NULL) : xstrdup("");
        }
        p++;
    }
    return NULL;
}

static shp_row *shaping_row(shp_row **rows, size_t *n, const char *site, const char *source)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*rows)[i].site, site) && !strcmp((*rows)[i].source, source))
            return &(*rows)[i];
    *rows = xrealloc(*rows, (*n + 1) * sizeof **rows);
    shp_row *r = &(*rows)[(*n)++];
    r->site = xstrdup(site);
    r->source = xstrdup(source);
    r->state = xstrdup("normal");
    r->cause = NULL;
    r->rate = 0;
    r->until = 0;
    return r;
}

static int shaping_cmp(const void *a, const void *b)
{
    const shp_row *x = a, *y = b;
    int c = strcmp(x->site, y->site);
    return c ? c : strcmp(x->source, y->source);
}

int cli_shaping(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"metrics", required_argument, NULL, 'm'},
        {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *metrics = NULL;
    bool json = false;
    int o, ostatus = -1;
    optind = 0;
    while ((o = cli_opt_next(argc, argv, "c:m:jh", opts, &path, shaping_usage, &ostatus)) != -1) {
        switch (o) {
        case 'm': metrics = optarg; break;
        case 'j': json = true; break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    if (optind != argc - 1 || strcmp(argv[optind], "show")) {
        shaping_usage(stderr);
        return 2;
    }
    sl_config *cfg = NULL;
    if (!metrics) {
        if (!(cfg = cli_config("shaping", path)))
            return 2;
        metrics = cfg->metrics.listen;
        if (!metrics) {
            fprintf(stderr, "sluice shaping: no metrics.listen in the config; use --metrics\n");
            sl_config_free(cfg);
            return 2;
        }
    }
    char *body = shaping_fetch(metrics);
    if (!body) {
        sl_config_free(cfg);
        return 1;
    }
    shp_row *rows = NULL;
    size_t n = 0;
    char *save = NULL;
    for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        bool is_rate = !strncmp(line, "sluice_shape_rate_per_second{", 29);
        bool is_state = !strncmp(line, "sluice_shape_state{", 19);
        bool is_until = !strncmp(line, "sluice_shape_suspended_until_seconds{", 37);
        if (!is_rate && !is_state && !is_until)
            continue;
        char *close = strrchr(line, '}');
        if (!close)
            continue;
        double v = strtod(close + 1, NULL);
        char *site = shaping_label(line, "site"), *source = shaping_label(line, "source");
        if (site && source) {
            if (is_rate) {
                shaping_row(&rows, &n, site, source)->rate = v;
            } else if (is_until) {
                shp_row *r = shaping_row(&rows, &n, site, source);
                free(r->cause);
                r->cause = shaping_label(line, "cause");
                r->until = v;
            } else if (v == 1) {
                char *st = shaping_label(line, "state");
                shp_row *r = shaping_row(&rows, &n, site, source);
                if (st) {
                    free(r->state);
                    r->state = st;
                }
            }
        }
        free(site);
        free(source);
    }
    free(body);
    if (n) /* rows is NULL when the scheduler knows no pair */
        qsort(rows, n, sizeof *rows, shaping_cmp);
    if (!json)
        printf("%-32s %-16s %-10s %-10s %s\n", "SITE", "SOURCE", "STATE", "RATE", "DETAIL");
    else
        fputs(n ? "[\n" : "[", stdout);
    for (size_t i = 0; i < n; i++) {
        char detail[128] = "";
        bool held = strcmp(rows[i].state, "suspended") == 0 || strcmp(rows[i].state, "disabled") == 0;
        if (held && rows[i].cause && rows[i].until > 0) {
            char at[40];
            sl_fmt_time((int64_t)(rows[i].until * 1000), at, sizeof at);
            snprintf(detail, sizeof detail, "%s until %s",
                     !strcmp(rows[i].cause, "destination-down") ? "destination down"
                                                                : "backoff rule",
                     at);
        }
        if (json) {
            sl_buf b = SL_BUF_INIT;
            sl_buf_puts(&b, "{\"site\":");
            sl_buf_json_str(&b, rows[i].site, strlen(rows[i].site));
            sl_buf_puts(&b, ",\"source\":");
            sl_buf_json_str(&b, rows[i].source, strlen(rows[i].source));
            sl_buf_puts(&b, ",\"state\":");
            sl_buf_json_str(&b, rows[i].state, strlen(rows[i].state));
            sl_buf_printf(&b, ",\"rate_per_sec\":%g", rows[i].rate);
            if (held && rows[i].cause) {
                sl_buf_puts(&b, ",\"cause\":");
                sl_buf_json_str(&b, rows[i].cause, strlen(rows[i].cause));
                sl_buf_printf(&b, ",\"until_ms\":%lld", (long long)(rows[i].until * 1000));
            }
            sl_buf_putc(&b, '}');
            printf("%s%s\n", b.data, i + 1 < n ? "," : "");
            sl_buf_free(&b);
        } else {
            char rate[32];
            if (rows[i].rate > 0)
                snprintf(rate, sizeof rate, "%g/s", rows[i].rate);
            else
                snprintf(rate, sizeof rate, "unlimited");
            printf("%-32s %-16s %-10s %-10s %s\n", rows[i].site, rows[i].source, rows[i].state,
                   rate, detail);
        }
        free(rows[i].site);
        free(rows[i].source);
        free(rows[i].state);
        free(rows[i].cause);
    }
    free(rows);
    if (json)
        puts("]");
    sl_config_free(cfg);
    return 0;
}
