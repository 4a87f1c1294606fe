/*
 * log - the one logger of every sluice process.
 *
 * On a terminal it prints human lines ("12:00:01 sender info: ..."); when
 * stderr is not a terminal (Kubernetes, tests) it prints one JSON object per
 * line: {"ts":"...","level":"info","component":"sender","msg":"...",
 * "job_id":"..."}. Every line about a job carries its id through
 * sl_log_job(). Thread safe: each line is formatted then written with one
 * write(2). Never log secrets: config values marked secret are never passed
 * here.
 *
 * sl_fatal() logs and exits with the given status (2 for bad config);
 * sl_panic() (util.h) is for broken invariants.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>

typedef enum { SL_LOG_DEBUG = 0, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR } sl_log_level;

/* component: a static string ("sender"); level: minimum printed. The
 * SLUICE_LOG_LEVEL (debug|info|warn|error) and SLUICE_LOG_FORMAT
 * (json|text) environment variables override. */
void sl_log_init(const char *component, sl_log_level level);
void sl_log_set_level(sl_log_level level);
bool sl_log_enabled(sl_log_level level);

void sl_log(sl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl_log_job(sl_log_level level, const char *job_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sl_fatal(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

#define sl_debug(...) do { if (sl_log_enabled(SL_LOG_DEBUG)) sl_log(SL_LOG_DEBUG, __VA_ARGS__); } while (0)
#define sl_info(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_warn(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_error(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

#endif
