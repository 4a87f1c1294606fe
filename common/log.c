/*
 * log - see log.h.
 */
#include "log.h"
#include "util.h"

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
