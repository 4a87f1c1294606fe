/*
 * cli_bulk - `sluice bulk`: publish a campaign, one job per recipient.
 *
 *   sluice bulk [-c FILE] --template ID --recipients FILE --from ADDRESS
 *               [--format csv|jsonl] [--campaign C] [--tenant T] [--pool P]
 *               [--priority transactional|normal|bulk] [--expire DURATION]
 *               [--list NAME]
 *               [--vars-check on|off] [--accepted-events on|off]
 *               [--show-rejects N] [--allow-partial] [--progress|--no-progress]
 *               [--json]
 *
 * --list NAME puts meta list=NAME on every job: the mailing list a
 * recipient leaves through the one-click unsubscribe link.
 *
 * Recipients: CSV with a header row (libcsv; the `email` column is the
 * recipient, every column is a variable), or JSON lines (jansson)
 * {"email": "...", "vars": {"name": "..."}} (values may be strings, numbers
 * or booleans). The format follows the file name (.jsonl/.ndjson/.json are
 * JSON lines) unless --format says. FILE may be "-" for stdin.
 *
 * Each job carries the template id and the recipient's variables, not a
 * body: the sender renders. With --vars-check on (the default) the template
 * is fetched from the templates topic first; a job then carries exactly the
 * variables the template references, a CSV lacking a column the template
 * needs is refused whole (exit 2), and a JSON line lacking one is rejected
 * with its line number. With off, every column/var is sent as it is.
 *
 * Memory is constant in the number of rows: the file is streamed line by
 * line, and above BULK_MAX_OUTSTANDING unacknowledged jobs it serves
 * delivery reports before reading on. On a terminal, stderr shows a
 * progress line (rows, rate, ETA from the share of the file read).
 *
 * At the end it prints a summary: published (acknowledged by Kafka),
 * failed (Kafka refused), rejected (line, reason; the first --show-rejects,
 * default 20, listed), bytes of job records, elapsed time and jobs/s; with
 * --json one JSON object on stdout instead. Every input row is published,
 * rejected with its line and reason, or the command fails: a stray quote
 * rejects its row and parsing resumes at the next line. Exit status: 0 when
 * every row was published and acknowledged; 1 when any row was rejected
 * (unless --allow-partial), nothing was published, or Kafka failed or did
 * not acknowledge some jobs; 2 on bad usage, configuration, template, sender
 * address, CSV header or a quoted field never closed.
 */
#include "publish.h"
#include "sluice.h"
#include "config.h"
#include "libsluice_int.h"
#include "wire.h"
#include "util.h"

#include <csv.h>
#include <jansson.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define BULK_MAX_OUTSTANDING 200000
#define BULK_FLUSH_TIMEOUT_MS 120000
#define BULK_MAX_LINE (1024 * 1024)
/* Strict: a quote inside an unquoted field, or text after a closing quote,
 * is an error rather than the start of a field that runs on to the next
 * quote in the file. */
#define BULK_CSV_OPTS (CSV_APPEND_NULL | CSV_STRICT | CSV_STRICT_FINI)

typedef struct bulk_reject {
    uint64_t line;
    char *reason;
} bulk_reject;

typedef struct bulk {
    sluice_client *c;
    sluice_message m; /* the shared fields; to/vars set per row */
    bool vars_check;
    const char *const *tvars; /* the template's variables (vars_check) */
    size_t n_tvars;

    /* CSV state */
    struct csv_parser csv;
    bool header_done;
    char **cols; /* header names */
    size_t n_cols;
    ssize_t email_col;
    ssize_t *tvar_col; /* template variable i -> column */
    sl_buf row;        /* the fields of the current row, NUL separated */
    size_t *field_off;
    size_t n_fields, cap_fields;
    bool row_bad;
    const char *row_why;
    uint64_t line, row_line; /* current line; first line of the current row */
    sluice_kv *kv;
    size_t cap_kv;

    /* counters */
    uint64_t rows, sent, acked, failed, rejected, bytes;
    size_t show_rejects;
    bulk_reject *rejects; /* the first show_rejects */
    size_t n_rejects;
    char first_fail[256];

    /* progress */
    bool progress;
    uint64_t file_size, file_pos;
    int64_t t0, last_progress;
} bulk;

static volatile sig_atomic_t bulk_stop;

static void bulk_on_signal(int sig)
{
    (void)sig;
    bulk_stop = 1;
}

static void bulk_usage(FILE *f)
{
    fputs("usage: sluice bulk [-c FILE] --template ID --recipients FILE --from ADDRESS\n"
          "                   [--format csv|jsonl] [--campaign C] [--tenant T] [--pool P]\n"
          "                   [--priority transactional|normal|bulk] [--expire DURATION]\n"
          "                   [--list NAME]\n"
          "                   [--vars-check on|off] [--accepted-events on|off]\n"
          "                   [--show-rejects N] [--allow-partial] [--progress|--no-progress]\n"
          "                   [--json]\n"
          "CSV: a header row, an `email` column, other columns are template variables.\n"
          "JSON lines: {\"email\": \"a@example.com\", \"vars\": {\"name\": \"A\"}}\n",
          f);
}

static void bulk_reject_row(bulk *b, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void bulk_reject_row(bulk *b, uint64_t line, const char *fmt, ...)
{
    b->rejected++;
    if (b->n_rejects >= b->show_rejects)
        return;
    va_list ap;
    va_start(ap, fmt);
    sl_buf s = SL_BUF_INIT;
    sl_buf_vprintf(&s, fmt, ap);
    va_end(ap);
    b->rejects[b->n_rejects].line = line;
    b->rejects[b->n_rejects].reason = sl_buf_steal(&s, NULL);
    b->n_rejects++;
}

static void bulk_result(void *arg, const sluice_job_result *r)
{
    bulk *b = arg;
    if (r->err == 0) {
        b->acked++;
        b->bytes += r->bytes;
    } else {
        if (!b->failed)
            snprintf(b->first_fail, sizeof b->first_fail, "job %s to %s: %s", r->job_id,
                     r->n_recipients ? r->recipients[0] : "?", sluice_strerror(r->err));
        b->failed++;
    }
}

static void bulk_progress(bulk *b, bool final)
{
    int64_t now = sl_mono_ms();
    if (!b->progress || (!final && now - b->last_progress < 200))
        return;
    b->last_progress = now;
    double secs = (double)(now - b->t0) / 1000.0;
    double rate = secs > 0 ? (double)b->sent / secs : 0;
    char eta[32] = "--:--";
    double frac = b->file_size ? (double)b->file_pos / (double)b->file_size : 0;
    if (frac > 0.001 && frac <= 1.0 && secs > 0.5) {
        long left = (long)(secs / frac - secs);
        snprintf(eta, sizeof eta, "%ld:%02ld", left / 60, left % 60);
    }
    char bar[21];
    int fill = (int)(frac * 20);
    for (int i = 0; i < 20; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[20] = 0;
    if (b->file_size)
        fprintf(stderr, "\r[%s] %3.0f%%  ", bar, frac * 100);
    else
        fputc('\r', stderr); /* a pipe: no size, so no share or ETA */
    fprintf(stderr, "%llu sent  %llu acked  %llu rejected  %.0f jobs/s",
            (unsigned long long)b->sent, (unsigned long long)b->acked,
            (unsigned long long)b->rejected, rate);
    if (b->file_size)
        fprintf(stderr, "  ETA %s", final ? "0:00" : eta);
    fputs("  ", stderr);
    if (final)
        fputc('\n', stderr);
}

/* Back-pressure: never hold more than BULK_MAX_OUTSTANDING jobs. */
static void bulk_throttle(bulk *b)
{
    if ((b->sent & 1023) == 0)
        sluice_poll(b->c, 0);
    while (sluice_outstanding(b->c) > BULK_MAX_OUTSTANDING)
        sluice_poll(b->c, 5);
    if ((b->sent & 4095) == 0)
        bulk_progress(b, false);
}

static void bulk_send(bulk *b, uint64_t line, const char *email, const sluice_kv *kv, size_t n)
{
    const char *to[1] = {email};
    b->m.to = to;
    b->m.n_to = 1;
    b->m.vars = kv;
    b->m.n_vars = n;
    int rc = sluice_send(b->c, &b->m, bulk_result, b);
    if (rc < 0) {
        bulk_reject_row(b, line, "%s", sluice_errmsg(b->c));
        return;
    }
    b->sent++;
    bulk_throttle(b);
}

static void bulk_kv_reserve(bulk *b, size_t n)
{
    if (n > b->cap_kv) {
        b->cap_kv = n + 8;
        b->kv = xrealloc(b->kv, b->cap_kv * sizeof *b->kv);
    }
}

/* ---- CSV ---- */

static void bulk_csv_field(void *data, size_t len, void *arg)
{
    bulk *b = arg;
    if (b->n_fields == b->cap_fields) {
        b->cap_fields = b->cap_fields ? b->cap_fields * 2 : 16;
        b->field_off = xrealloc(b->field_off, b->cap_fields * sizeof *b->field_off);
    }
    b->field_off[b->n_fields++] = b->row.len;
    if (data && memchr(data, 0, len)) {
        b->row_bad = true;
        b->row_why = "a field contains a NUL byte";
    }
    if (len)
        sl_buf_append(&b->row, data, len);
    sl_buf_putc(&b->row, 0);
}

static const char *bulk_field(const bulk *b, size_t i)
{
    return b->row.data + b->field_off[i];
}

static int bulk_csv_header(bulk *b)
{
    b->n_cols = b->n_fields;
    b->cols = xcalloc(b->n_cols, sizeof *b->cols);
    b->email_col = -1;
    for (size_t i = 0; i < b->n_cols; i++) {
        b->cols[i] = xstrdup(bulk_field(b, i));
        /* Tolerate a UTF-8 byte order mark and spaces around names. */
        char *s = b->cols[i];
        if (i == 0 && !strncmp(s, "\xef\xbb\xbf", 3))
            memmove(s, s + 3, strlen(s) - 2);
        size_t l = strlen(s);
        while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
            s[--l] = 0;
        size_t lead = strspn(s, " \t");
        memmove(s, s + lead, l - lead + 1);
        if (!strcasecmp(s, "email") && b->email_col < 0)
            b->email_col = (ssize_t)i;
    }
    if (b->email_col < 0) {
        fprintf(stderr, "sluice bulk: the CSV header has no 'email' column\n");
        return SL_EINVAL;
    }
    if (b->vars_check) {
        b->tvar_col = xcalloc(b->n_tvars ? b->n_tvars : 1, sizeof *b->tvar_col);
        for (size_t v = 0; v < b->n_tvars; v++) {
            b->tvar_col[v] = -1;
            for (size_t i = 0; i < b->n_cols; i++)
                if (!strcmp(b->cols[i], b->tvars[v])) {
                    b->tvar_col[v] = (ssize_t)i;
                    break;
                }
            if (b->tvar_col[v] < 0) {
                fprintf(stderr,
                        "sluice bulk: the template needs variable '%s' but the CSV has no such "
                        "column\n",
                        b->tvars[v]);
                return SL_EINVAL;
            }
        }
    }
    b->header_done = true;
    return 0;
}

static int bulk_csv_row_status;

static void bulk_csv_row(int term, void *arg)
{
    (void)term;
    bulk *b = arg;
    uint64_t line = b->row_line;
    b->row_line = b->line + 1;
    if (!b->header_done) {
        if (bulk_csv_header(b) != 0)
            bulk_csv_row_status = SL_EINVAL;
        goto reset;
    }
    b->rows++;
    if (b->row_bad) {
        bulk_reject_row(b, line, "%s", b->row_why);
        goto reset;
    }
    if (b->n_fields != b->n_cols) {
        if (b->n_fields == 1 && !bulk_field(b, 0)[0])
            goto reset; /* a blank line */
        bulk_reject_row(b, line, "%zu fields, the header has %zu", b->n_fields, b->n_cols);
        goto reset;
    }
    const char *email = bulk_field(b, (size_t)b->email_col);
    size_t n = 0;
    if (b->vars_check) {
        bulk_kv_reserve(b, b->n_tvars);
        for (size_t v = 0; v < b->n_tvars; v++) {
            b->kv[n].key = b->tvars[v];
            b->kv[n++].value = bulk_field(b, (size_t)b->tvar_col[v]);
        }
    } else {
        bulk_kv_reserve(b, b->n_cols);
        for (size_t i = 0; i < b->n_cols; i++) {
            b->kv[n].key = b->cols[i];
            b->kv[n++].value = bulk_field(b, i);
        }
    }
    bulk_send(b, line, email, b->kv, n);
reset:
    b->n_fields = 0;
    b->row_bad = false;
    sl_buf_reset(&b->row);
}

/* ---- JSON lines ---- */

static void bulk_json_line(bulk *b, const char *text, size_t len)
{
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    if (i == len)
        return; /* blank line */
    b->rows++;
    json_error_t jerr;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o || !json_is_object(o)) {
        bulk_reject_row(b, b->line, "not a JSON object%s%s", o ? "" : ": ", o ? "" : jerr.text);
        json_decref(o);
        return;
    }
    json_t *email = json_object_get(o, "email");
    json_t *vars = json_object_get(o, "vars");
    if (!json_is_string(email)) {
        bulk_reject_row(b, b->line, "no \"email\" string");
        json_decref(o);
        return;
    }
    if (vars && !json_is_object(vars)) {
        bulk_reject_row(b, b->line, "\"vars\" is not an object");
        json_decref(o);
        return;
    }
    size_t nv = vars ? json_object_size(vars) : 0;
    bulk_kv_reserve(b, (b->vars_check ? b->n_tvars : nv) + 1);
    /* Values as strings; numbers and booleans are written out. */
    char numbuf[64][32];
    size_t n = 0, nnum = 0;
    const char *key;
    json_t *val;
    bool bad = false;
    json_object_foreach(vars, key, val)
    {
        const char *s = NULL;
        if (json_is_string(val)) {
            s = json_string_value(val);
            if (strlen(s) != json_string_length(val)) {
                bulk_reject_row(b, b->line, "variable %s contains a NUL byte", key);
                bad = true;
                break;
            }
        } else if (json_is_integer(val) && nnum < 64) {
            snprintf(numbuf[nnum], 32, "%lld", (long long)json_integer_value(val));
            s = numbuf[nnum++];
        } else if (json_is_real(val) && nnum < 64) {
            snprintf(numbuf[nnum], 32, "%.17g", json_real_value(val));
            s = numbuf[nnum++];
        } else if (json_is_boolean(val)) {
            s = json_is_true(val) ? "true" : "false";
        } else {
            bulk_reject_row(b, b->line, "variable %s is not a string, number or boolean", key);
            bad = true;
            break;
        }
        if (b->vars_check) {
            /* Keep only what the template uses, in its order below. */
            continue;
        }
        b->kv[n].key = key;
        b->kv[n++].value = s;
    }
    if (!bad && b->vars_check) {
        for (size_t v = 0; v < b->n_tvars && !bad; v++) {
            json_t *x = vars ? json_object_get(vars, b->tvars[v]) : NULL;
            if (!x && !strcmp(b->tvars[v], "email"))
                x = email;
            if (!x) {
                bulk_reject_row(b, b->line, "missing variable '%s' the template needs",
                                b->tvars[v]);
                bad = true;
                break;
            }
            const char *s;
            if (json_is_string(x)) {
                s = json_string_value(x);
            } else if (json_is_integer(x) && nnum < 64) {
                snprintf(numbuf[nnum], 32, "%lld", (long long)json_integer_value(x));
                s = numbuf[nnum++];
            } else if (json_is_real(x) && nnum < 64) {
                snprintf(numbuf[nnum], 32, "%.17g", json_real_value(x));
                s = numbuf[nnum++];
            } else if (json_is_boolean(x)) {
                s = json_is_true(x) ? "true" : "false";
            } else {
                bulk_reject_row(b, b->line, "variable %s: unsupported value", b->tvars[v]);
                bad = true;
                break;
            }
            b->kv[n].key = b->tvars[v];
            b->kv[n++].value = s;
        }
    }
    if (!bad)
        bulk_send(b, b->line, json_string_value(email), b->kv, n);
    json_decref(o);
}

/* ---- main ---- */

static bool bulk_onoff(const char *s, bool *out)
{
    if (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "true"))
        *out = true;
    else if (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "false"))
        *out = false;
    else
        return false;
    return true;
}

static void bulk_summary(const bulk *b, bool json, double secs, uint64_t unacked)
{
    double rate = secs > 0 ? (double)b->acked / secs : 0;
    if (json) {
        sl_buf s = SL_BUF_INIT;
        sl_buf_printf(&s,
                      "{\"rows\":%llu,\"published\":%llu,\"failed\":%llu,\"unacknowledged\":%llu,"
                      "\"rejected\":%llu,\"bytes\":%llu,\"seconds\":%.3f,\"jobs_per_sec\":%.0f,"
                      "\"rejects\":[",
                      (unsigned long long)b->rows, (unsigned long long)b->acked,
                      (unsigned long long)b->failed, (unsigned long long)unacked,
                      (unsigned long long)b->rejected, (unsigned long long)b->bytes, secs, rate);
        for (size_t i = 0; i < b->n_rejects; i++) {
            sl_buf_printf(&s, "%s{\"line\":%llu,\"reason\":", i ? "," : "",
                          (unsigned long long)b->rejects[i].line);
            sl_buf_json_str(&s, b->rejects[i].reason, strlen(b->rejects[i].reason));
            sl_buf_putc(&s, '}');
        }
        sl_buf_puts(&s, "]}\n");
        fputs(s.data, stdout);
        sl_buf_free(&s);
        return;
    }
    printf("published %llu jobs (acknowledged by Kafka), %llu bytes, in %.2fs: %.0f jobs/s\n",
           (unsigned long long)b->acked, (unsigned long long)b->bytes, secs, rate);
    if (b->failed || unacked)
        printf("failed    %llu jobs refused by Kafka, %llu not acknowledged%s%s\n",
               (unsigned long long)b->failed, (unsigned long long)unacked,
               b->failed ? "; first: " : "", b->failed ? b->first_fail : "");
    printf("rejected  %llu rows\n", (unsigned long long)b->rejected);
    for (size_t i = 0; i < b->n_rejects; i++)
        printf("  line %llu: %s\n", (unsigned long long)b->rejects[i].line, b->rejects[i].reason);
    if (b->rejected > b->n_rejects)
        printf("  ... and %llu more\n", (unsigned long long)(b->rejected - b->n_rejects));
}

int cli_bulk(int argc, char **argv)
{
    enum {
        O_TEMPLATE = 256,
        O_RCPTS,
        O_FROM,
        O_FORMAT,
        O_CAMPAIGN,
        O_TENANT,
        O_POOL,
        O_PRIORITY,
        O_EXPIRE,
        O_VARS_CHECK,
        O_ACCEPTED,
        O_SHOW,
        O_PROGRESS,
        O_NO_PROGRESS,
        O_JSON,
        O_ALLOW_PARTIAL,
        O_LIST
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"template", required_argument, NULL, O_TEMPLATE},
        {"recipients", required_argument, NULL, O_RCPTS},
        {"from", required_argument, NULL, O_FROM},
        {"format", required_argument, NULL, O_FORMAT},
        {"campaign", required_argument, NULL, O_CAMPAIGN},
        {"tenant", required_argument, NULL, O_TENANT},
        {"pool", required_argument, NULL, O_POOL},
        {"priority", required_argument, NULL, O_PRIORITY},
        {"expire", required_argument, NULL, O_EXPIRE},
        {"vars-check", required_argument, NULL, O_VARS_CHECK},
        {"accepted-events", required_argument, NULL, O_ACCEPTED},
        {"show-rejects", required_argument, NULL, O_SHOW},
        {"progress", no_argument, NULL, O_PROGRESS},
        {"no-progress", no_argument, NULL, O_NO_PROGRESS},
        {"json", no_argument, NULL, O_JSON},
        {"allow-partial", no_argument, NULL, O_ALLOW_PARTIAL},
        {"list", required_argument, NULL, O_LIST},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bulk b = {0};
    const char *path = getenv("SLUICE_CONFIG");
    const char *rcpt_path = NULL, *format = NULL;
    bool json = false, accepted_events = true, allow_partial = false;
    int progress = -1; /* -1: when stderr is a terminal */
    int64_t expire_ms = 0;
    int rc = 2, o, ostatus = -1;
    sl_config *cfg = NULL;
    sl_template_msg *tmpl = NULL;
    FILE *in = NULL;
    char *err = NULL, *linebuf = NULL;
    size_t linecap = 0;

    b.vars_check = true;
    b.show_rejects = 20;
    b.m.priority = SLUICE_PRIORITY_BULK;
    sluice_kv list = {"list", NULL};
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &path, bulk_usage, &ostatus)) != -1) {
        switch (o) {
        case O_TEMPLATE:
            b.m.template_id = optarg;
            break;
        case O_RCPTS:
            rcpt_path = optarg;
            break;
        case O_FROM:
            b.m.from = optarg;
            break;
        case O_FORMAT:
            format = optarg;
            break;
        case O_CAMPAIGN:
            b.m.campaign = optarg;
            break;
        case O_TENANT:
            b.m.tenant = optarg;
            break;
        case O_POOL:
            b.m.pool = optarg;
            break;
        case O_JSON:
            json = true;
            break;
        case O_ALLOW_PARTIAL:
            allow_partial = true;
            break;
        case O_LIST:
            list.value = optarg;
            b.m.meta = &list;
            b.m.n_meta = 1;
            break;
        case O_PROGRESS:
            progress = 1;
            break;
        case O_NO_PROGRESS:
            progress = 0;
            break;
        case O_PRIORITY:
            if (sluice__priority_parse(optarg, &b.m.priority) != 0) {
                fprintf(stderr,
                        "sluice bulk: --priority: '%s' is not transactional, normal or bulk\n",
                        optarg);
                goto out;
            }
            break;
        case O_EXPIRE:
            if (sl_parse_duration_ms(optarg, &expire_ms) != 0 || expire_ms <= 0) {
                fprintf(stderr, "sluice bulk: --expire: '%s' is not a duration\n", optarg);
                goto out;
            }
            break;
        case O_VARS_CHECK:
        case O_ACCEPTED:
            if (!bulk_onoff(optarg, o == O_VARS_CHECK ? &b.vars_check : &accepted_events)) {
                fprintf(stderr, "sluice bulk: --%s takes on or off\n",
                        o == O_VARS_CHECK ? "vars-check" : "accepted-events");
                goto out;
            }
            break;
        case O_SHOW: {
            char *e;
            long v = strtol(optarg, &e, 10);
            if (*e || v < 0 || v > 100000) {
                fprintf(stderr, "sluice bulk: --show-rejects: '%s' is not a count\n", optarg);
                goto out;
            }
            b.show_rejects = (size_t)v;
            break;
        }
        }
    }
    if (ostatus >= 0) {
        rc = ostatus;
        goto out;
    }
    if (optind != argc) {
        fprintf(stderr, "sluice bulk: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    if (!b.m.template_id || !rcpt_path || !b.m.from) {
        fprintf(stderr, "sluice bulk: --template, --recipients and --from are required\n");
        bulk_usage(stderr);
        goto out;
    }
    if (!sluice__template_id_ok(b.m.template_id)) {
        fprintf(stderr, "sluice bulk: --template: '%s' is not a valid template id\n",
                b.m.template_id);
        goto out;
    }
    bool jsonl;
    if (format) {
        if (!strcmp(format, "csv"))
            jsonl = false;
        else if (!strcmp(format, "jsonl") || !strcmp(format, "json"))
            jsonl = true;
        else {
            fprintf(stderr, "sluice bulk: --format: '%s' is not csv or jsonl\n", format);
            goto out;
        }
    } else {
        const char *dot = strrchr(rcpt_path, '.');
        jsonl = dot && (!strcasecmp(dot, ".jsonl") || !strcasecmp(dot, ".ndjson") ||
                        !strcasecmp(dot, ".json"));
    }
    char fromcheck[SLUICE_ADDRESS_MAX + 1], why[200];
    if (sluice_address_normalize(b.m.from, fromcheck, why, sizeof why) != 0) {
        fprintf(stderr, "sluice bulk: --from \"%s\": %s\n", b.m.from, why);
        goto out;
    }

    /* The recipients file first: a typo in its name needs no Kafka. */
    in = strcmp(rcpt_path, "-") ? fopen(rcpt_path, "rb") : stdin;
    if (!in) {
        fprintf(stderr, "sluice bulk: %s: %s\n", rcpt_path, strerror(errno));
        goto out;
    }
    int orc = cli_open("bulk", path, 0, &cfg);
    if (orc) {
        rc = orc;
        goto out;
    }
    if (b.vars_check) {
        int trc = sluice__template_fetch(cfg, b.m.template_id, &tmpl, &err);
        if (trc == SL_ENOTFOUND) {
            fprintf(stderr,
                    "sluice bulk: template '%s' is not stored (sluice template put %s FILE), "
                    "or pass --vars-check off\n",
                    b.m.template_id, b.m.template_id);
            goto out;
        }
        if (trc) {
            fprintf(stderr, "sluice bulk: fetching template '%s': %s\n", b.m.template_id,
                    err ? err : sl_strerror(trc));
            rc = 1;
            goto out;
        }
        b.tvars = (const char *const *)tmpl->variables;
        b.n_tvars = tmpl->n_variables;
    }

    struct stat st;
    if (fstat(fileno(in), &st) == 0 && S_ISREG(st.st_mode))
        b.file_size = (uint64_t)st.st_size;
    b.progress = progress < 0 ? isatty(2) : progress;

    b.c = sluice_client_new_from_config(cfg, &err);
    if (!b.c) {
        fprintf(stderr, "sluice bulk: %s\n", err ? err : "cannot create the client");
        rc = 1;
        goto out;
    }
    sluice_client_set_accepted_events(b.c, accepted_events);
    if (expire_ms)
        b.m.expires_at_ms = sl_now_ms() + expire_ms;
    b.rejects = xcalloc(b.show_rejects ? b.show_rejects : 1, sizeof *b.rejects);
    if (!jsonl && csv_init(&b.csv, BULK_CSV_OPTS) != 0) {
        fprintf(stderr, "sluice bulk: cannot initialise the CSV parser\n");
        goto out;
    }
    struct sigaction sa = {0};
    sa.sa_handler = bulk_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    b.t0 = sl_mono_ms();
    b.row_line = 1;
    ssize_t len;
    bool parse_failed = false;
    while (!bulk_stop && (len = getline(&linebuf, &linecap, in)) > 0) {
        b.line++;
        b.file_pos += (uint64_t)len;
        if (len > BULK_MAX_LINE) {
            bulk_reject_row(&b, b.line, "line longer than %d octets", BULK_MAX_LINE);
            continue;
        }
        if (jsonl) {
            bulk_json_line(&b, linebuf, (size_t)len);
            continue;
        }
        if (csv_parse(&b.csv, linebuf, (size_t)len, bulk_csv_field, bulk_csv_row, &b) !=
            (size_t)len) {
            if (!b.header_done) {
                fprintf(stderr, "sluice bulk: %s: line %llu: the header row: %s\n", rcpt_path,
                        (unsigned long long)b.line, csv_strerror(csv_error(&b.csv)));
                parse_failed = true;
                break;
            }
            /* A quote where the strict grammar allows none: this row is
             * rejected and parsing resumes at the next line, so one stray
             * quote cannot swallow the rows after it. */
            b.rows++;
            bulk_reject_row(&b, b.line, "a stray '\"' (quote a field that contains quotes, "
                                        "and double the quotes inside it)");
            csv_free(&b.csv);
            if (csv_init(&b.csv, BULK_CSV_OPTS) != 0) {
                fprintf(stderr, "sluice bulk: cannot initialise the CSV parser\n");
                parse_failed = true;
                break;
            }
            b.n_fields = 0;
            b.row_bad = false;
            sl_buf_reset(&b.row);
            b.row_line = b.line + 1;
            continue;
        }
        if (bulk_csv_row_status)
            break;
    }
    if (!jsonl) {
        if (!parse_failed && !bulk_csv_row_status &&
            csv_fini(&b.csv, bulk_csv_field, bulk_csv_row, &b) != 0) {
            /* A quoted field opened and never closed took in the rest of
             * the file: nothing from its first line on was published. */
            fprintf(stderr,
                    "sluice bulk: %s: line %llu: a quoted field opened here is never closed; "
                    "the rows from line %llu on were not published\n",
                    rcpt_path, (unsigned long long)b.row_line, (unsigned long long)b.row_line);
            parse_failed = true;
        }
        csv_free(&b.csv);
        if (bulk_csv_row_status) {
            rc = 2;
            goto drain;
        }
        if (!b.header_done) {
            fprintf(stderr, "sluice bulk: %s: no header row\n", rcpt_path);
            rc = 2;
            goto drain;
        }
    }
    rc = parse_failed ? 2 : 0;
drain:;
    int frc = sluice_flush(b.c, BULK_FLUSH_TIMEOUT_MS);
    uint64_t unacked = frc ? sluice_outstanding(b.c) : 0;
    double secs = (double)(sl_mono_ms() - b.t0) / 1000.0;
    bulk_progress(&b, true);
    if (rc == 0 || b.sent)
        bulk_summary(&b, json, secs, unacked);
    if (rc == 0 && (b.failed || unacked || bulk_stop))
        rc = 1;
    if (rc == 0 && b.rejected && !allow_partial) {
        fprintf(stderr,
                "sluice bulk: %llu of %llu rows rejected (listed above); pass --allow-partial "
                "to accept that\n",
                (unsigned long long)b.rejected, (unsigned long long)b.rows);
        rc = 1;
    }
    if (rc == 0 && b.acked == 0) {
        fprintf(stderr, "sluice bulk: %s: nothing was published\n", rcpt_path);
        rc = 1;
    }
out:
    if (in && in != stdin)
        fclose(in);
    free(linebuf);
    sluice_client_free(b.c);
    if (tmpl)
        sl_template_free(tmpl);
    sl_config_free(cfg);
    free(err);
    for (size_t i = 0; i < b.n_cols; i++)
        free(b.cols[i]);
    free(b.cols);
    free(b.tvar_col);
    free(b.field_off);
    free(b.kv);
    sl_buf_free(&b.row);
    for (size_t i = 0; i < b.n_rejects; i++)
        free(b.rejects[i].reason);
    free(b.rejects);
    return rc;
}
