/*
 * cli_top - `sluice top`: a live full-screen view of the cluster, like top.
 *
 *   sluice top [-c FILE] [--once] [--window DURATION] [--interval DURATION]
 *
 * Reads the events topic from (now - window) by direct assignment (no
 * group, nothing committed) and redraws every interval (default 1 s) with ANSI escape
 * codes, no curses:
 *   - per site: delivered, deferred and bounced per second over the last
 *     window (default 10 s), by the events' own timestamps;
 *   - the dispatch backlog: consumer lag of group sluice-sender on the
 *     dispatch topic (high watermark minus committed offset, summed over
 *     partitions; a partition with no commit counts from its low mark);
 *   - backoff state: the latest SHAPING event per (site, source IP) and
 *     its rate;
 *   - the most frequent reply codes in the window.
 * --once reads to the end of every partition, prints one frame without
 * escape codes and exits 0 (for tests and scripts). Exit 1 on Kafka errors,
 * 2 on bad usage or configuration.
 *
 * Where to start: the offsets for (now - window) by timestamp; where Kafka
 * has none (or, like the dev broker's mock, does not answer by time) the
 * last TOP_TAIL records of the partition, filtered by timestamp. Either way
 * the start-up read is bounded.
 *
 * --window is 1s..1h (TOP_WINDOW_MAX_S); the start-up read is still at
 * most TOP_TAIL records per partition where Kafka cannot seek by time.
 *
 * Backoff is a state, not a rate: a site throttled an hour ago has no
 * SHAPING event in a 2-minute window. So top first reads the scheduler's
 * state topic (the latest SiteState per site) and lists every (site, IP)
 * not at its configured rate there; SHAPING events seen afterwards update
 * the list.
 *
 * In a terminal, `q` quits (as does Ctrl-C); the terminal is put back as
 * it was.
 *
 * Memory: per site and per reply code one ring of one-second buckets
 * (window + 3 seconds), so a long session holds only the window.
 */
#include "cli.h"
#include "config.h"
#include "kafka.h"
#include "map.h"
#include "reader.h"
#include "util.h"
#include "wire.h"
#include "sluice/v1/state.pb-c.h"

#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define TOP_TAIL 20000 /* records per partition read back at most */
#define TOP_WINDOW_MAX_S 3600 /* the longest --window: a ring slot per second */

enum { TOP_DELIVERED, TOP_DEFERRED, TOP_BOUNCED, TOP_N };

typedef struct top_row {
    char *key;                   /* site, or "250 2.0.0" for reply codes */
    size_t slots;                /* seconds the ring holds: the window and 2 */
    int64_t *sec;                /* [slots] which second a slot holds */
    uint32_t (*n)[TOP_N];        /* [slots] counts of that second */
    double sum[TOP_N];           /* computed per frame */
} top_row;

typedef struct top_table {
    top_row *rows;
    size_t n, cap;
    size_t slots; /* for each new row */
} top_table;

typedef struct top_backoff {
    char *site, *ip, *reason;
    double rate;
    int64_t at_ms;
} top_backoff;

typedef struct top_state {
    top_table sites, codes;
    top_backoff *bo;
    size_t n_bo, cap_bo;
    int64_t window_ms;
    uint64_t events_seen;
} top_state;

static volatile sig_atomic_t top_stop;

static void top_on_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

static top_row *top_table_get(top_table *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->rows[i].key, key))
            return &t->rows[i];
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->rows = xrealloc(t->rows, t->cap * sizeof *t->rows);
    }
    top_row *r = &t->rows[t->n++];
    memset(r, 0, sizeof *r);
    r->key = xstrdup(key);
    r->slots = t->slots;
    r->sec = xmalloc(r->slots * sizeof *r->sec);
    r->n = xcalloc(r->slots, sizeof *r->n);
    for (size_t i = 0; i < r->slots; i++)
        r->sec[i] = -1;
    return r;
}

static void top_row_add(top_row *r, int64_t ts_ms, int kind)
{
    int64_t s = ts_ms / 1000;
    size_t slot = (size_t)(s % (int64_t)r->slots);
    if (r->sec[slot] != s) {
        r->sec[slot] = s;
        memset(r->n[slot], 0, sizeof r->n[slot]);
    }
    r->n[slot][kind]++;
}

/* Sum the buckets inside (now - window, now]. */
static void top_row_sum(top_row *r, int64_t now_ms, int64_t window_ms)
{
    int64_t hi = now_ms / 1000, lo = (now_ms - window_ms) / 1000;
    memset(r->sum, 0, sizeof r->sum);
    for (size_t i = 0; i < r->slots; i++)
        if (r->sec[i] > lo && r->sec[i] <= hi)
            for (int k = 0; k < TOP_N; k++)
                r->sum[k] += r->n[i][k];
}

static void top_table_free(top_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->rows[i].key);
        free(t->rows[i].sec);
        free(t->rows[i].n);
    }
    free(t->rows);
}

/* Record the backoff state of (site, ip) as of ts, unless a newer one is
 * known. reason: "throttled: ...", as SHAPING events say it. */
static void top_note_backoff(top_state *st, const char *site, const char *ip, double rate,
                             const char *reason, int64_t ts)
{
    top_backoff *b = NULL;
    for (size_t i = 0; i < st->n_bo && !b; i++)
        if (!strcmp(st->bo[i].site, site) && !strcmp(st->bo[i].ip, ip))
            b = &st->bo[i];
    if (!b) {
        if (st->n_bo == st->cap_bo) {
            st->cap_bo = st->cap_bo ? st->cap_bo * 2 : 8;
            st->bo = xrealloc(st->bo, st->cap_bo * sizeof *st->bo);
        }
        b = &st->bo[st->n_bo++];
        memset(b, 0, sizeof *b);
        b->site = xstrdup(site);
        b->ip = xstrdup(ip);
    } else if (ts < b->at_ms) {
        return; /* an older state arriving late from another partition */
    }
    free(b->reason);
    b->reason = xstrdup(reason && *reason ? reason : "-");
    b->rate = rate;
    b->at_ms = ts;
}

static void top_note_shaping(top_state *st, const sl_event *e, int64_t ts)
{
    top_note_backoff(st, e->site && *e->site ? e->site : "-",
                     e->source_ip && *e->source_ip ? e->source_ip : "-", e->rate_per_sec,
                     e->reason, ts);
}

static int top_state_pairs(void *arg, const char *site, void *val)
{
    static const char *const names[] = {"normal", "throttled", "suspended", "disabled"};
    top_state *st = arg;
    Sluice__V1__SiteState *ss = val;
    if (!ss)
        return 0;
    for (size_t i = 0; i < ss->n_pairs; i++) {
        const Sluice__V1__PairState *p = ss->pairs[i];
        if (p->state <= 0 || p->state > 3)
            continue;
        char reason[128];
        if (p->until_ms > 0 && p->state >= 2) {
            char at[40];
            sl_fmt_time(p->until_ms, at, sizeof at);
            snprintf(reason, sizeof reason, "%s until %s%s", names[p->state], at,
                     p->down ? " (destination down)" : "");
        } else {
            snprintf(reason, sizeof reason, "%s (scheduler state)", names[p->state]);
        }
        top_note_backoff(st, site, p->source_ip && *p->source_ip ? p->source_ip : "-", p->rate,
                         reason, ss->updated_at_ms);
    }
    sluice__v1__site_state__free_unpacked(ss, NULL);
    return 0;
}

/* The latest SiteState of every site on the state topic; pairs not in the
 * normal state become backoff rows. Bounded to a few seconds: without the
 * state topic top still shows what SHAPING events say. */
static void top_load_state(top_state *st, const sl_config *cfg)
{
    char *topic = sl_config_topic(cfg, "state");
    char *err = NULL;
    sl_reader *r = sl_reader_new(cfg, topic, 0, &err);
    free(topic);
    if (!r) {
        free(err);
        return;
    }
    sl_map latest;
    sl_map_init(&latest);
    int64_t deadline = sl_mono_ms() + 5000;
    while (!top_stop && !sl_reader_at_end(r) && sl_mono_ms() < deadline) {
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m)
            continue;
        if (m->key && m->key_len) {
            char *site = xstrndup(m->key, m->key_len);
            Sluice__V1__SiteState *ss =
                m->payload ? sluice__v1__site_state__unpack(NULL, m->len, m->payload) : NULL;
            /* A tombstone or an undecodable record forgets the site. */
            Sluice__V1__SiteState *old =
                ss ? sl_map_put(&latest, site, ss) : sl_map_del(&latest, site);
            if (old)
                sluice__v1__site_state__free_unpacked(old, NULL);
            free(site);
        }
        rd_kafka_message_destroy(m);
    }
    sl_reader_free(r);
    sl_map_each(&latest, top_state_pairs, st);
    sl_map_free(&latest);
}

static void top_note(top_state *st, const rd_kafka_message_t *m)
{
    sl_event *e = NULL;
    const char *why;
    if (!m->payload || sl_event_decode(m->payload, m->len, &e, &why) != 0)
        return;
    int64_t ts = e->timestamp_ms;
    if (!ts) {
        rd_kafka_timestamp_type_t tt;
        ts = rd_kafka_message_timestamp(m, &tt);
    }
    if (ts < sl_now_ms() - st->window_ms - 1000) {
        sl_event_free(e); /* read back from the tail, older than the window */
        return;
    }
    st->events_seen++;
    int kind = -1;
    switch (e->type) {
    case SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED: kind = TOP_DELIVERED; break;
    case SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED: kind = TOP_DEFERRED; break;
    case SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED: kind = TOP_BOUNCED; break;
    case SLUICE__V1__EVENT_TYPE__EVENT_SHAPING: top_note_shaping(st, e, ts); break;
    default: break;
    }
    if (kind >= 0) {
        top_row_add(top_table_get(&st->sites, e->site && *e->site ? e->site : "(none)"), ts,
                    kind);
        if (e->smtp_code) {
            char code[48];
            snprintf(code, sizeof code, "%u %s", e->smtp_code,
                     e->enhanced_code && *e->enhanced_code ? e->enhanced_code : "");
            top_row_add(top_table_get(&st->codes, code), ts, kind);
        }
    }
    sl_event_free(e);
}

/* ---- reading the events topic ---- */

typedef struct top_reader {
    rd_kafka_t *rk;
    int n_parts;
    bool *eof;
    int n_eof;
} top_reader;

static int top_reader_open(top_reader *r, const sl_config *cfg, const char *topic,
                           int64_t since_ms, char **err)
{
    /* Nothing is committed under the group id. */
    r->rk = sl_kafka_assign_handle(cfg, "top", "sluice-top", err, "enable.partition.eof", "true",
                                   "auto.offset.reset", "latest", NULL);
    if (!r->rk)
        return SL_EKAFKA;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(r->rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(r->rk, 0, t, &md, 10000);
    rd_kafka_topic_destroy(t);
    if (e || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0) {
        *err = xasprintf("kafka: metadata for %s: %s (is Kafka at %s up?)", topic,
                         rd_kafka_err2str(e ? e : md->topics[0].err), cfg->kafka.bootstrap);
        if (md)
            rd_kafka_metadata_destroy(md);
        return SL_EKAFKA;
    }
    r->n_parts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    r->eof = xcalloc((size_t)r->n_parts, sizeof *r->eof);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(r->n_parts);
    for (int i = 0; i < r->n_parts; i++)
        rd_kafka_topic_partition_list_add(l, topic, i)->offset = since_ms;
    if (rd_kafka_offsets_for_times(r->rk, l, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < r->n_parts; i++)
            l->elems[i].offset = -1;
    int64_t *lo = xcalloc((size_t)r->n_parts, sizeof *lo);
    int64_t *hi = xcalloc((size_t)r->n_parts, sizeof *hi);
    sl_kafka_watermarks(r->rk, topic, NULL, (size_t)r->n_parts, lo, hi, 10000);
    for (int i = 0; i < r->n_parts; i++) {
        if (lo[i] < 0 || hi[i] < 0)
            continue; /* leave it to librdkafka */
        if (l->elems[i].offset < 0)
            l->elems[i].offset = hi[i] - TOP_TAIL > lo[i] ? hi[i] - TOP_TAIL : lo[i];
        if (l->elems[i].offset >= hi[i]) {
            r->eof[i] = true;
            r->n_eof++;
        }
    }
    free(lo);
    free(hi);
    e = rd_kafka_assign(r->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        *err = xasprintf("kafka: assign %s: %s", topic, rd_kafka_err2str(e));
        return SL_EKAFKA;
    }
    return 0;
}

static rd_kafka_message_t *top_reader_next(top_reader *r, int timeout_ms)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, timeout_ms);
    if (!m)
        return NULL;
    bool in = m->partition >= 0 && m->partition < r->n_parts;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        if (in && !r->eof[m->partition]) {
            r->eof[m->partition] = true;
            r->n_eof++;
        }
    } else if (!m->err) {
        if (in && r->eof[m->partition]) {
            r->eof[m->partition] = false;
            r->n_eof--;
        }
        return m;
    }
    rd_kafka_message_destroy(m);
    return NULL;
}

static void top_reader_close(top_reader *r)
{
    if (r->rk) {
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    free(r->eof);
}

/* ---- backlog: consumer lag of sluice-sender on the dispatch topic ---- */

typedef struct top_lag {
    rd_kafka_t *rk;
    char *topic;
} top_lag;

static int top_lag_open(top_lag *l, const sl_config *cfg, char **err)
{
    /* The group id lets rd_kafka_committed() ask the sender group's
     * coordinator; the handle never subscribes, so it never joins. */
    l->rk = sl_kafka_assign_handle(cfg, "top", SL_GROUP_SENDER, err, NULL);
    if (!l->rk)
        return SL_EKAFKA;
    l->topic = sl_config_topic(cfg, "dispatch");
    return 0;
}

/* Total lag, or -1 when it cannot be known right now. Blocking (up to a
 * few seconds on a sick cluster): fine for a CLI. */
static int64_t top_lag_get(top_lag *l, int *n_parts)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(l->rk, l->topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(l->rk, 0, t, &md, 3000);
    rd_kafka_topic_destroy(t);
    if (e || !md || md->topic_cnt != 1 || md->topics[0].err) {
        if (md)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    int np = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(np);
    for (int i = 0; i < np; i++)
        rd_kafka_topic_partition_list_add(parts, l->topic, i);
    int64_t lag = -1;
    int64_t *lo = xcalloc((size_t)np, sizeof *lo), *hi = xcalloc((size_t)np, sizeof *hi);
    if (rd_kafka_committed(l->rk, parts, 3000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        !sl_kafka_watermarks(l->rk, l->topic, NULL, (size_t)np, lo, hi, 3000)) {
        lag = 0;
        for (int i = 0; i < np; i++) {
            int64_t c = parts->elems[i].offset;
            int64_t from = c >= 0 ? c : lo[i];
            if (hi[i] > from)
                lag += hi[i] - from;
        }
    }
    free(lo);
    free(hi);
    rd_kafka_topic_partition_list_destroy(parts);
    *n_parts = np;
    return lag;
}

static void top_lag_close(top_lag *l)
{
    if (l->rk)
        rd_kafka_destroy(l->rk);
    free(l->topic);
}

/* ---- rendering ---- */

static int top_cmp_site(const void *a, const void *b)
{
    const top_row *x = a, *y = b;
    double tx = x->sum[0] + x->sum[1] + x->sum[2], ty = y->sum[0] + y->sum[1] + y->sum[2];
    if (tx != ty)
        return tx < ty ? 1 : -1;
    return strcmp(x->key, y->key);
}

static void top_render(top_state *st, int64_t lag, int n_parts, bool ansi, int rows, sl_buf *b)
{
    int64_t now = sl_now_ms();
    double secs = (double)st->window_ms / 1000.0;
    char ts[32];
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%SZ", &tm);
    if (ansi)
        sl_buf_puts(b, "\033[H\033[2J\033[1m");
    sl_buf_printf(b, "sluice top  %s  window %.0fs  ", ts, secs);
    if (lag >= 0)
        sl_buf_printf(b, "backlog %lld (sluice-sender lag over %d partitions)", (long long)lag,
                      n_parts);
    else
        sl_buf_puts(b, "backlog ? (dispatch lag unavailable)");
    sl_buf_puts(b, ansi ? "\033[0m\n\n" : "\n\n");

    for (size_t i = 0; i < st->sites.n; i++)
        top_row_sum(&st->sites.rows[i], now, st->window_ms);
    for (size_t i = 0; i < st->codes.n; i++)
        top_row_sum(&st->codes.rows[i], now, st->window_ms);
    top_row *sites = xmalloc((st->sites.n + 1) * sizeof *sites);
    if (st->sites.n) /* rows is NULL while no site was seen */
        memcpy(sites, st->sites.rows, st->sites.n * sizeof *sites);
    qsort(sites, st->sites.n, sizeof *sites, top_cmp_site);
    top_row *codes = xmalloc((st->codes.n + 1) * sizeof *codes);
    if (st->codes.n)
        memcpy(codes, st->codes.rows, st->codes.n * sizeof *codes);
    qsort(codes, st->codes.n, sizeof *codes, top_cmp_site);

    /* Room: header 2 + site header 1 + codes block ~8 + backoff ~6. */
    int site_rows = rows > 24 ? rows - 18 : 6;
    double tot[TOP_N] = {0};
    sl_buf_printf(b, "%s%-32s %10s %10s %10s%s\n", ansi ? "\033[7m" : "", "SITE", "DELIVERED/s",
                  "DEFERRED/s", "BOUNCED/s", ansi ? "\033[0m" : "");
    int shown = 0;
    for (size_t i = 0; i < st->sites.n; i++) {
        top_row *r = &sites[i];
        for (int k = 0; k < TOP_N; k++)
            tot[k] += r->sum[k];
        if (r->sum[0] + r->sum[1] + r->sum[2] == 0 || shown >= site_rows)
            continue;
        sl_buf_printf(b, "%-32.32s %11.1f %10.1f %10.1f\n", r->key, r->sum[0] / secs,
                      r->sum[1] / secs, r->sum[2] / secs);
        shown++;
    }
    if (!shown)
        sl_buf_puts(b, "(no deliveries in the window)\n");
    sl_buf_printf(b, "%-32s %11.1f %10.1f %10.1f\n\n", "TOTAL", tot[0] / secs, tot[1] / secs,
                  tot[2] / secs);

    sl_buf_printf(b, "%s%-20s %8s %s\n", ansi ? "\033[7m" : "", "REPLY CODE", "COUNT",
                  ansi ? "\033[0m" : "");
    shown = 0;
    for (size_t i = 0; i < st->codes.n && shown < 5; i++) {
        double n = codes[i].sum[0] + codes[i].sum[1] + codes[i].sum[2];
        if (n > 0) {
            sl_buf_printf(b, "%-20s %8.0f\n", codes[i].key, n);
            shown++;
        }
    }
    if (!shown)
        sl_buf_puts(b, "(none)\n");

    sl_buf_printf(b, "\n%s%-24s %-16s %10s  %s%s\n", ansi ? "\033[7m" : "", "BACKOFF SITE",
                  "SOURCE IP", "RATE/s", "STATE", ansi ? "\033[0m" : "");
    if (!st->n_bo)
        sl_buf_puts(b, "(no backoff seen)\n");
    for (size_t i = 0; i < st->n_bo && i < 5; i++) {
        top_backoff *bo = &st->bo[st->n_bo - 1 - i]; /* newest first */
        sl_buf_printf(b, "%-24.24s %-16.16s %10.1f  %s (%llds ago)\n", bo->site, bo->ip, bo->rate,
                      bo->reason, (long long)((now - bo->at_ms) / 1000));
    }
    free(sites);
    free(codes);
}

/* A key pressed in the terminal: true for q. */
static bool top_key_quit(void)
{
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    char c;
    while (poll(&pfd, 1, 0) == 1 && read(STDIN_FILENO, &c, 1) == 1)
        if (c == 'q' || c == 'Q')
            return true;
    return false;
}

static void top_usage(FILE *f)
{
    fputs("usage: sluice top [-c FILE] [--once] [--window DURATION] [--interval DURATION]\n"
          "  --window D    rates over the last D, 1s..1h (default 10s)\n"
          "  --interval D  redraw every D (default 1s)\n"
          "  --once        print one frame as plain text and exit\n"
          "In a terminal, q or Ctrl-C quits.\n",
          f);
}

int cli_top(int argc, char **argv)
{
    enum { O_ONCE = 256, O_WINDOW, O_INTERVAL };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"once", no_argument, NULL, O_ONCE},
        {"window", required_argument, NULL, O_WINDOW},
        {"interval", required_argument, NULL, O_INTERVAL}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *path = getenv("SLUICE_CONFIG");
    bool once = false;
    int64_t window_ms = 10000, interval_ms = 1000;
    int o, ostatus = -1;
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &path, top_usage, &ostatus)) != -1) {
        switch (o) {
        case O_ONCE: once = true; break;
        case O_WINDOW:
            if (sl_parse_duration_ms(optarg, &window_ms) || window_ms < 1000 ||
                window_ms > TOP_WINDOW_MAX_S * 1000LL) {
                fprintf(stderr, "sluice top: --window: '%s' is not a duration of 1s..1h\n",
                        optarg);
                return 2;
            }
            break;
        case O_INTERVAL:
            if (sl_parse_duration_ms(optarg, &interval_ms) || interval_ms < 100) {
                fprintf(stderr, "sluice top: --interval: '%s' is not a duration >= 100ms\n",
                        optarg);
                return 2;
            }
            break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    if (optind != argc) {
        top_usage(stderr);
        return 2;
    }
    sl_config *cfg = NULL;
    char *err = NULL;
    int orc = cli_open("top", path, 0, &cfg);
    if (orc)
        return orc;
    int rc = 1;
    char *topic = sl_config_topic(cfg, "events");
    top_lag lag = {0};
    top_reader rd = {0}, *r = &rd;
    if (top_reader_open(r, cfg, topic, sl_now_ms() - window_ms, &err) != 0 ||
        top_lag_open(&lag, cfg, &err) != 0) {
        fprintf(stderr, "sluice top: %s\n", err ? err : "cannot read the events topic");
        free(err);
        goto out;
    }
    struct sigaction sa = {0};
    sa.sa_handler = top_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    top_state st = {.window_ms = window_ms};
    st.sites.slots = st.codes.slots = (size_t)(window_ms / 1000) + 3;
    top_load_state(&st, cfg);
    bool ansi = !once && isatty(STDOUT_FILENO);
    if (ansi)
        fputs("\033[?25l", stdout); /* hide the cursor while we redraw */
    /* Keys without Enter and without echo, while top runs. */
    struct termios saved;
    bool keys = ansi && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (keys) {
        struct termios raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    sl_buf b = SL_BUF_INIT;
    int64_t next = sl_mono_ms() + (once ? 0 : interval_ms);
    rc = 0;
    while (!top_stop) {
        if (once) {
            /* Everything up to now, then one frame. The deadline guards
             * against a cluster that never reports the end. */
            int64_t deadline = sl_mono_ms() + 30000;
            while (!top_stop && r->n_eof < r->n_parts && sl_mono_ms() < deadline) {
                rd_kafka_message_t *m = top_reader_next(r, 100);
                if (m) {
                    top_note(&st, m);
                    rd_kafka_message_destroy(m);
                }
            }
        } else {
            while (!top_stop && sl_mono_ms() < next) {
                if (keys && top_key_quit()) {
                    top_stop = 1;
                    break;
                }
                rd_kafka_message_t *m = top_reader_next(r, 50);
                if (m) {
                    top_note(&st, m);
                    rd_kafka_message_destroy(m);
                }
            }
            next += interval_ms;
        }
        int np = 0;
        int64_t l = top_lag_get(&lag, &np);
        int rows = 24;
        struct winsize ws;
        if (ansi && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
            rows = ws.ws_row;
        sl_buf_reset(&b);
        top_render(&st, l, np, ansi, rows, &b);
        if (fwrite(b.data, 1, b.len, stdout) != b.len || fflush(stdout) != 0)
            break;
        if (once)
            break;
    }
    if (keys)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (ansi)
        fputs("\033[?25h\n", stdout);
    sl_buf_free(&b);
    top_table_free(&st.sites);
    top_table_free(&st.codes);
    for (size_t i = 0; i < st.n_bo; i++) {
        free(st.bo[i].site);
        free(st.bo[i].ip);
        free(st.bo[i].reason);
    }
    free(st.bo);
out:
    top_lag_close(&lag);
    top_reader_close(r);
    free(topic);
    sl_config_free(cfg);
    return rc;
}
