/*
 * cli_events - `sluice events`: print the events topic.
 *
 *   sluice events [-c FILE] [--follow] [--json] [--campaign C] [--tenant T]
 *                 [--job ID[,ID]] [--recipient ADDR] [--type T[,T]]
 *                 [--since T] [--count N] [--timeout DURATION] [--jobs]
 *
 * Reads every partition from the beginning (or from --since) without a
 * consumer group (common/reader), prints each matching event as one JSON
 * object per line (--json, sl_event_json(): the field names of event.proto)
 * or one human line, and exits when it reached the end of every partition,
 * unless --follow. --follow without --since starts at the end: only what
 * happens from then on (it says so on stderr once it is reading). Output is
 * in time order (each event's timestamp; a job's created_at): a one-shot
 * read holds the matching events until the end and sorts them; a follower
 * sorts what arrived together (whenever the topic is quiet for 100 ms).
 * --count N stops after N matching events, counted in reading order;
 * --timeout stops after that long. Filters combine with AND; --type takes names as printed
 * (DELIVERED, BOUNCED, ...; case-insensitive, "EVENT_" prefix optional).
 * --since takes a duration back from now ("10m"), milliseconds since the
 * epoch, or an ISO date "2026-05-01" / "2026-05-01T12:00:00Z".
 *
 * --jobs reads the jobs topic instead and prints each Job as JSON with its
 * Kafka key and partition: for tests and for operators checking what a
 * producer published (filters: --campaign, --tenant, --job).
 *
 * Exit status: 0 normally; 1 when --count N was not reached before
 * --timeout, or on Kafka errors; 2 on bad usage or configuration. A record
 * that does not decode is reported on stderr and skipped.
 */
#include "cli.h"
#include "config.h"
#include "reader.h"
#include "wire.h"
#include "util.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static volatile sig_atomic_t events_stop;

static void events_on_signal(int sig)
{
    (void)sig;
    events_stop = 1;
}

static void events_usage(FILE *f)
{
    fputs("usage: sluice events [-c FILE] [--follow] [--json] [--campaign C] [--tenant T]\n"
          "                     [--job ID[,ID]] [--recipient ADDR] [--type TYPE[,TYPE]]\n"
          "                     [--since T] [--count N] [--timeout DURATION] [--jobs]\n"
          "TYPE:",
          f);
    /* From the wire's own names, so a new event type is never missing here. */
    for (int t = 1; strcmp(sl_event_type_name((Sluice__V1__EventType)t), "UNKNOWN"); t++)
        fprintf(f, " %s", sl_event_type_name((Sluice__V1__EventType)t));
    fputs("\nT: a duration back from now (10m), epoch milliseconds, or 2026-05-01[T12:00:00Z]\n",
          f);
}

/* --since: "10m" back from now, epoch ms, or an ISO 8601 UTC date. */
static int events_parse_since(const char *s, int64_t *out)
{
    int64_t d;
    struct tm tm = {0};
    int y, mo, da, h = 0, mi = 0, se = 0, used = 0;
    size_t n = strlen(s);
    if ((sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &da, &used) == 3 && (size_t)used == n) ||
        (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &da, &h, &mi, &se, &used) == 6 &&
         ((size_t)used == n || ((size_t)used == n - 1 && s[used] == 'Z')))) {
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = da;
        tm.tm_hour = h;
        tm.tm_min = mi;
        tm.tm_sec = se;
        *out = (int64_t)timegm(&tm) * 1000;
        return 0;
    }
    char *e;
    long long v = strtoll(s, &e, 10);
    if (*s && !*e && v > 100000000000LL) { /* epoch ms, not seconds */
        *out = v;
        return 0;
    }
    if (sl_parse_duration_ms(s, &d) == 0 && d >= 0) {
        *out = sl_now_ms() - d;
        return 0;
    }
    return SL_EPARSE;
}

static int events_type_from_name(const char *s, Sluice__V1__EventType *out)
{
    if (!strncasecmp(s, "EVENT_", 6))
        s += 6;
    for (int t = 1; strcmp(sl_event_type_name((Sluice__V1__EventType)t), "UNKNOWN"); t++)
        if (!strcasecmp(s, sl_event_type_name((Sluice__V1__EventType)t))) {
            *out = (Sluice__V1__EventType)t;
            return 0;
        }
    return SL_EINVAL;
}

typedef struct events_filter {
    const char *campaign, *tenant, *recipient;
    char **jobs;
    size_t n_jobs;
    uint32_t types; /* bit per EventType; 0: all */
    int64_t since_ms;
} events_filter;

static bool events_job_match(const events_filter *f, const char *job_id)
{
    if (!f->n_jobs)
        return true;
    for (size_t i = 0; i < f->n_jobs; i++)
        if (job_id && !strcmp(f->jobs[i], job_id))
            return true;
    return false;
}

static bool events_match(const events_filter *f, const sl_event *e)
{
    if (f->types && !(f->types & (1u << e->type)))
        return false;
    if (f->campaign && strcmp(f->campaign, e->campaign ? e->campaign : ""))
        return false;
    if (f->tenant && strcmp(f->tenant, e->tenant ? e->tenant : ""))
        return false;
    if (f->recipient && strcasecmp(f->recipient, e->recipient ? e->recipient : ""))
        return false;
    if (f->since_ms && e->timestamp_ms && e->timestamp_ms < f->since_ms)
        return false;
    return events_job_match(f, e->job_id);
}

static const char *nz(const char *s)
{
    return s && *s ? s : "-";
}

static void events_human(const sl_event *e, sl_buf *b)
{
    char ts[32] = "-";
    if (e->timestamp_ms) {
        time_t t = (time_t)(e->timestamp_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        sl_buf_printf(b, "%s.%03dZ ", ts, (int)(e->timestamp_ms % 1000));
    } else {
        sl_buf_puts(b, "- ");
    }
    sl_buf_printf(b, "%-10s %s %s", sl_event_type_name(e->type), nz(e->job_id), nz(e->recipient));
    if (e->site && *e->site)
        sl_buf_printf(b, " site=%s", e->site);
    if (e->source_ip && *e->source_ip)
        sl_buf_printf(b, " ip=%s", e->source_ip);
    if (e->attempt)
        sl_buf_printf(b, " attempt=%u", e->attempt);
    if (e->bounce_class)
        sl_buf_printf(b, " class=%s%s", sl_bounce_class_name(e->bounce_class),
                      e->bounce_hard ? "(hard)" : "(soft)");
    if (e->type == SLUICE__V1__EVENT_TYPE__EVENT_SHAPING)
        sl_buf_printf(b, " rate=%g/s", e->rate_per_sec);
    if (e->smtp_code) {
        sl_buf_printf(b, " %u", e->smtp_code);
        if (e->enhanced_code && *e->enhanced_code)
            sl_buf_printf(b, " %s", e->enhanced_code);
    }
    const char *text = e->reply && *e->reply ? e->reply : e->reason;
    if (text && *text) {
        /* The first line only: replies can be multi-line. */
        size_t n = strcspn(text, "\r\n");
        sl_buf_puts(b, " \"");
        for (size_t i = 0; i < n; i++) {
            if (text[i] == '"' || text[i] == '\\')
                sl_buf_putc(b, '\\');
            sl_buf_putc(b, text[i]);
        }
        sl_buf_putc(b, '"');
    }
    sl_buf_putc(b, '\n');
}

/* Lines waiting to be printed in time order; seq keeps reading order
 * among equal times. */
typedef struct events_line {
    int64_t ts;
    size_t seq;
    char *text; /* owned */
    size_t len;
} events_line;

typedef struct events_pending {
    events_line *v;
    size_t n, cap, seq;
} events_pending;

static void events_pending_add(events_pending *p, int64_t ts, const char *text, size_t len)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->v = xrealloc(p->v, p->cap * sizeof *p->v);
    }
    events_line *l = &p->v[p->n++];
    l->ts = ts;
    l->seq = p->seq++;
    l->text = xmalloc(len);
    memcpy(l->text, text, len);
    l->len = len;
}

static int events_line_cmp(const void *a, const void *b)
{
    const events_line *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Prints what is pending in time order and empties it. Returns false when
 * stdout is gone (the reader of a pipe went away). */
static bool events_pending_flush(events_pending *p)
{
    if (p->n) /* v is NULL until the first line */
        qsort(p->v, p->n, sizeof *p->v, events_line_cmp);
    bool ok = true;
    for (size_t i = 0; i < p->n; i++) {
        if (ok && fwrite(p->v[i].text, 1, p->v[i].len, stdout) != p->v[i].len)
            ok = false;
        free(p->v[i].text);
    }
    p->n = 0;
    return ok;
}

/* A Job as JSON, with where it sits in Kafka. */
static void events_job_json(const sl_job *j, const rd_kafka_message_t *m, sl_buf *b)
{
    sl_buf_puts(b, "{\"key\":");
    sl_buf_json_str(b, m->key ? (const char *)m->key : "", m->key ? m->key_len : 0);
    sl_buf_printf(b,
                  ",\"partition\":%d,\"offset\":%lld,\"version\":%u,\"job_id\":", (int)m->partition,
                  (long long)m->offset, j->version);
#define S(name, v)                                                                                 \
    do {                                                                                           \
        sl_buf_puts(b, ",\"" name "\":");                                                          \
        sl_buf_json_str(b, (v) ? (v) : "", (v) ? strlen(v) : 0);                                   \
    } while (0)
    sl_buf_json_str(b, j->job_id ? j->job_id : "", j->job_id ? strlen(j->job_id) : 0);
    S("tenant", j->tenant);
    S("campaign", j->campaign);
    S("pool", j->pool);
    static const char *const prio[] = {"bulk", "normal", "transactional"};
    sl_buf_printf(b, ",\"priority\":\"%s\"", (unsigned)j->priority < 3 ? prio[j->priority] : "?");
    if (j->transactional)
        sl_buf_puts(b, ",\"transactional\":true");
    S("mail_from", j->mail_from);
    S("domain", j->domain);
    sl_buf_puts(b, ",\"recipients\":[");
    for (size_t i = 0; i < j->n_recipients; i++) {
        if (i)
            sl_buf_putc(b, ',');
        sl_buf_json_str(b, j->recipients[i], strlen(j->recipients[i]));
    }
    sl_buf_putc(b, ']');
    if (j->raw.len) {
        sl_buf_printf(b, ",\"raw_bytes\":%zu,\"raw\":", j->raw.len);
        sl_buf_json_str(b, (const char *)j->raw.data, j->raw.len);
    }
    if (j->template_id && *j->template_id) {
        S("template_id", j->template_id);
        sl_buf_puts(b, ",\"vars\":{");
        for (size_t i = 0; i < j->n_vars; i++) {
            if (i)
                sl_buf_putc(b, ',');
            sl_buf_json_str(b, j->vars[i]->key, strlen(j->vars[i]->key));
            sl_buf_putc(b, ':');
            sl_buf_json_str(b, j->vars[i]->value, strlen(j->vars[i]->value));
        }
        sl_buf_putc(b, '}');
    }
    if (j->n_meta) {
        sl_buf_puts(b, ",\"meta\":{");
        for (size_t i = 0; i < j->n_meta; i++) {
            if (i)
                sl_buf_putc(b, ',');
            sl_buf_json_str(b, j->meta[i]->key, strlen(j->meta[i]->key));
            sl_buf_putc(b, ':');
            sl_buf_json_str(b, j->meta[i]->value, strlen(j->meta[i]->value));
        }
        sl_buf_putc(b, '}');
    }
    sl_buf_printf(b, ",\"attempt\":%u,\"created_at_ms\":%lld,\"expires_at_ms\":%lld}\n", j->attempt,
                  (long long)j->created_at_ms, (long long)j->expires_at_ms);
#undef S
}

int cli_events(int argc, char **argv)
{
    enum {
        O_FOLLOW = 256,
        O_JSON,
        O_CAMPAIGN,
        O_TENANT,
        O_JOB,
        O_RCPT,
        O_TYPE,
        O_SINCE,
        O_COUNT,
        O_TIMEOUT,
        O_JOBS
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"follow", no_argument, NULL, 'f'},
        {"json", no_argument, NULL, O_JSON},
        {"campaign", required_argument, NULL, O_CAMPAIGN},
        {"tenant", required_argument, NULL, O_TENANT},
        {"job", required_argument, NULL, O_JOB},
        {"recipient", required_argument, NULL, O_RCPT},
        {"type", required_argument, NULL, O_TYPE},
        {"since", required_argument, NULL, O_SINCE},
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"jobs", no_argument, NULL, O_JOBS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("SLUICE_CONFIG");
    events_filter f = {0};
    bool follow = false, json = false, jobs = false;
    long long count = 0;
    int64_t timeout_ms = 0;
    int o, rc = 2, ostatus = -1;
    char *jobs_arg = NULL;

    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:fn:h", opts, &path, events_usage, &ostatus)) != -1) {
        switch (o) {
        case 'f':
            follow = true;
            break;
        case O_JSON:
            json = true;
            break;
        case O_CAMPAIGN:
            f.campaign = optarg;
            break;
        case O_TENANT:
            f.tenant = optarg;
            break;
        case O_RCPT:
            f.recipient = optarg;
            break;
        case O_JOBS:
            jobs = true;
            break;
        case O_JOB:
            free(jobs_arg);
            jobs_arg = xstrdup(optarg);
            break;
        case O_TYPE: {
            char *copy = xstrdup(optarg), *save = NULL;
            for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
                Sluice__V1__EventType ty;
                if (events_type_from_name(t, &ty) != 0) {
                    fprintf(stderr, "sluice events: --type: unknown event type '%s'\n", t);
                    free(copy);
                    goto out;
                }
                f.types |= 1u << ty;
            }
            free(copy);
            break;
        }
        case O_SINCE:
            if (events_parse_since(optarg, &f.since_ms) != 0) {
                fprintf(stderr, "sluice events: --since: cannot parse '%s'\n", optarg);
                goto out;
            }
            break;
        case 'n': {
            char *e;
            count = strtoll(optarg, &e, 10);
            if (*e || count <= 0) {
                fprintf(stderr, "sluice events: --count: '%s' is not a positive number\n", optarg);
                goto out;
            }
            break;
        }
        case O_TIMEOUT:
            if (sl_parse_duration_ms(optarg, &timeout_ms) != 0 || timeout_ms <= 0) {
                fprintf(stderr, "sluice events: --timeout: '%s' is not a duration\n", optarg);
                goto out;
            }
            break;
        }
    }
    if (ostatus >= 0) {
        rc = ostatus;
        goto out;
    }
    if (optind != argc) {
        fprintf(stderr, "sluice events: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    if (jobs_arg) {
        size_t cap = 0;
        char *save = NULL;
        for (char *t = strtok_r(jobs_arg, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            if (f.n_jobs == cap) {
                cap = cap ? cap * 2 : 8;
                f.jobs = xrealloc(f.jobs, cap * sizeof *f.jobs);
            }
            f.jobs[f.n_jobs++] = t;
        }
    }

    sl_config *cfg = NULL;
    char *topic;
    sl_reader *r;
    /* --since filters on each event's own timestamp rather than seeking by
     * time: the dev broker does not answer timestamp offset lookups, and a
     * seek would also drop events whose record time precedes their stamp. */
    int orc = cli_open_reader("events", path, timeout_ms, jobs ? "jobs" : "events",
                              follow && !f.since_ms ? SL_READER_END : 0, &cfg, &topic, &r);
    if (orc) {
        rc = orc;
        goto out;
    }
    /* Followers want each line as it comes; a one-shot dump wants speed. */
    if (follow) {
        setvbuf(stdout, NULL, _IOLBF, 0);
        fprintf(stderr, "sluice events: following %s from %s; Ctrl-C stops\n", topic,
                f.since_ms ? "--since" : "its end");
    }
    events_pending pend = {0};
    struct sigaction sa = {0};
    sa.sa_handler = events_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int64_t deadline = timeout_ms ? sl_mono_ms() + timeout_ms : 0;
    long long matched = 0;
    sl_buf b = SL_BUF_INIT;
    rc = 0;
    while (!events_stop) {
        if (count && matched >= count)
            break;
        if (deadline && sl_mono_ms() >= deadline) {
            if (count)
                rc = 1;
            break;
        }
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m) {
            if (!follow && sl_reader_at_end(r))
                break;
            /* A quiet moment: print what arrived together, in order. */
            if (follow && !events_pending_flush(&pend))
                break;
            continue;
        }
        int64_t ts = 0;
        const char *why = NULL;
        sl_buf_reset(&b);
        if (jobs) {
            sl_job *j = NULL;
            if (sl_job_decode(m->payload, m->len, &j, &why) != 0) {
                fprintf(stderr, "sluice events: %s [%d] offset %lld: %s\n", topic,
                        (int)m->partition, (long long)m->offset, why);
            } else {
                if ((!f.campaign || !strcmp(f.campaign, j->campaign ? j->campaign : "")) &&
                    (!f.tenant || !strcmp(f.tenant, j->tenant ? j->tenant : "")) &&
                    events_job_match(&f, j->job_id)) {
                    events_job_json(j, m, &b);
                    ts = j->created_at_ms;
                    matched++;
                }
                sl_job_free(j);
            }
        } else {
            sl_event *e = NULL;
            if (!m->payload) {
                /* no value: nothing to print */
            } else if (sl_event_decode(m->payload, m->len, &e, &why) != 0) {
                fprintf(stderr, "sluice events: %s [%d] offset %lld: %s\n", topic,
                        (int)m->partition, (long long)m->offset, why);
            } else {
                if (events_match(&f, e)) {
                    if (json) {
                        sl_event_json(e, &b);
                        sl_buf_putc(&b, '\n');
                    } else {
                        events_human(e, &b);
                    }
                    ts = e->timestamp_ms;
                    matched++;
                }
                sl_event_free(e);
            }
        }
        rd_kafka_message_destroy(m);
        if (b.len)
            events_pending_add(&pend, ts, b.data, b.len);
        /* A follower reading a long backlog (--since) prints as it goes. */
        if (follow && pend.n >= 10000 && !events_pending_flush(&pend))
            break;
    }
    events_pending_flush(&pend);
    free(pend.v);
    if (count && matched < count && !events_stop && !deadline && follow)
        rc = 1;
    fflush(stdout);
    sl_buf_free(&b);
    sl_reader_free(r);
    free(topic);
    sl_config_free(cfg);
out:
    free(jobs_arg);
    free(f.jobs);
    return rc;
}
