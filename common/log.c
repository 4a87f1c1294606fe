/*
 * log - see log.h.
 */
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_component = "sluice";
static sl_log_level log_level = SL_LOG_INFO;
static int log_json = -1;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

static int level_from_name(const char *s, sl_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, level_names[i])) {
            *out = (sl_log_level)i;
            return 0;
        }
    return SL_EINVAL;
}

void sl_log_init(const char *component, sl_log_level level)
{
    log_component = component;
    log_level = level;
    const char *e = getenv("SLUICE_LOG_LEVEL");
    if (e)
        level_from_name(e, &log_level);
    e = getenv("SLUICE_LOG_FORMAT");
    if (e && !strcmp(e, "json"))
        log_json = 1;
    else if (e && !strcmp(e, "text"))
        log_json = 0;
    else
        log_json = !isatty(STDERR_FILENO);
}

void sl_log_set_level(sl_log_level level)
{
    log_level = level;
}

bool sl_log_enabled(sl_log_level level)
{
    return level >= log_level;
}

static void vlog(sl_log_level level, const char *job_id, const char *fmt, va_list ap)
{
    if (level < log_level)
        return;
    if (log_json < 0)
        log_json = !isatty(STDERR_FILENO);
    sl_buf msg = SL_BUF_INIT, line = SL_BUF_INIT;
    sl_buf_vprintf(&msg, fmt, ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    char ts[40];
    if (log_json) {
        gmtime_r(&tv.tv_sec, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        sl_buf_printf(&line, "{\"ts\":\"%s.%03dZ\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":",
                      ts, (int)(tv.tv_usec / 1000), level_names[level], log_component);
        sl_buf_json_str(&line, msg.data, msg.len);
        if (job_id) {
            sl_buf_puts(&line, ",\"job_id\":");
            sl_buf_json_str(&line, job_id, strlen(job_id));
        }
        sl_buf_puts(&line, "}\n");
    } else {
        localtime_r(&tv.tv_sec, &tm);
        strftime(ts, sizeof ts, "%H:%M:%S", &tm);
        sl_buf_printf(&line, "%s %s %s: %s%s%s\n", ts, log_component, level_names[level],
                      job_id ? "[" : "", job_id ? job_id : "", job_id ? "] " : "");
        /* The message goes after the prefix; rebuild to keep order. */
        line.len -= 1;
        sl_buf_append(&line, msg.data, msg.len);
        sl_buf_putc(&line, '\n');
    }
    ssize_t w = write(STDERR_FILENO, line.data, line.len);
    (void)w;
    sl_buf_free(&msg);
    sl_buf_free(&line);
}

void sl_log(sl_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

void sl_log_job(sl_log_level level, const char *job_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, job_id, fmt, ap);
    va_end(ap);
}

void sl_fatal(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(SL_LOG_ERROR, NULL, fmt, ap);
    va_end(ap);
    exit(status);
}

/* ---- repeated conditions ---- */

typedef struct every_ent {
    char *key;          /* NULL: free slot */
    char *last;         /* the latest message of the key */
    sl_log_level level;
    int64_t window_start;
    uint64_t count;     /* occurrences not yet printed in this window */
} every_ent;

static pthread_mutex_t every_mu = PTHREAD_MUTEX_INITIALIZER;
static every_ent every_tab[SL_LOG_EVERY_KEYS];
static every_ent every_overflow; /* keys that found the table full */
static int64_t every_interval_ms = 10000;
static int64_t every_last_sweep;
static int64_t (*every_now)(void) = sl_mono_ms;

void sl_log_every_clock(int64_t (*now_ms)(void))
{
    pthread_mutex_lock(&every_mu);
    every_now = now_ms ? now_ms : sl_mono_ms;
    pthread_mutex_unlock(&every_mu);
}

void sl_log_every_interval(int64_t ms)
{
    pthread_mutex_lock(&every_mu);
    every_interval_ms = ms > 0 ? ms : 10000;
    pthread_mutex_unlock(&every_mu);
}

static void group_digits(uint64_t n, char *out, size_t cap)
{
    char raw[32];
    int len = snprintf(raw, sizeof raw, "%llu", (unsigned long long)n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < cap; i++) {
        if (i && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = raw[i];
    }
    out[o] = '\0';
}

static void log_plain(sl_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void log_plain(sl_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

/* Under every_mu: print the summary of a window that is over, and forget
 * the key when nothing happened in it. */
static void every_close_window(every_ent *e, int64_t now)
{
    if (!e->key || now - e->window_start < every_interval_ms)
        return;
    if (e->count == 0) {
        free(e->key);
        free(e->last);
        memset(e, 0, sizeof *e);
        return;
    }
    char n[40];
    group_digits(e->count, n, sizeof n);
    long long secs = (long long)((now - e->window_start + 500) / 1000);
    log_plain(e->level, "%s (x%s in the last %lld s)", e->last, n, secs ? secs : 1);
    e->count = 0;
    e->window_start = now;
}

static void every_sweep(int64_t now)
{
    if (now - every_last_sweep < 1000 && every_last_sweep)
        return;
    every_last_sweep = now;
    for (size_t i = 0; i < SL_LOG_EVERY_KEYS; i++)
        every_close_window(&every_tab[i], now);
    every_close_window(&every_overflow, now);
}

void sl_log_every_flush(void)
{
    pthread_mutex_lock(&every_mu);
    every_last_sweep = 0;
    every_sweep(every_now());
    pthread_mutex_unlock(&every_mu);
}

static size_t every_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

void sl_log_every(sl_log_level level, const char *key, const char *fmt, ...)
{
    if (level < log_level)
        return;
    sl_buf msg = SL_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&every_mu);
    int64_t now = every_now();
    every_sweep(now);
    /* Open addressing over a small fixed table: bounded memory. */
    size_t h = every_hash(key) % SL_LOG_EVERY_KEYS;
    every_ent *e = NULL, *free_slot = NULL;
    for (size_t i = 0; i < SL_LOG_EVERY_KEYS; i++) {
        every_ent *c = &every_tab[(h + i) % SL_LOG_EVERY_KEYS];
        if (!c->key) {
            if (!free_slot)
                free_slot = c;
            continue;
        }
        if (!strcmp(c->key, key)) {
            e = c;
            break;
        }
    }
    if (!e && free_slot) {
        /* First occurrence: printed in full, and the window opens. */
        free_slot->key = xstrdup(key);
        free_slot->last = sl_buf_steal(&msg, NULL);
        free_slot->level = level;
        free_slot->window_start = now;
        free_slot->count = 0;
        log_plain(level, "%s", free_slot->last);
    } else if (e) {
        free(e->last);
        e->last = sl_buf_steal(&msg, NULL);
        e->count++;
    } else {
        /* Too many distinct conditions at once: count them together. */
        e = &every_overflow;
        if (!e->key) {
            e->key = xstrdup("-");
            e->level = SL_LOG_WARN;
            e->window_start = now;
        }
        free(e->last);
        e->last = xasprintf("lines of too many distinct repeated conditions suppressed, "
                            "the latest: %.*s", (int)(msg.len > 300 ? 300 : msg.len),
                            msg.data ? msg.data : "");
        e->count++;
    }
    pthread_mutex_unlock(&every_mu);
    sl_buf_free(&msg);
}
