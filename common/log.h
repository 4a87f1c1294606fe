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
 *
 * Repeated conditions: sl_log_every() logs a condition that may recur at
 * any rate (a destination that refuses, a reconnect that fails) once, then
 * counts its repeats and prints one summary line per interval ("<message>
 * (x12,345 in the last 10 s)"). Conditions are told apart by `key`; a key
 * quiet for a whole interval is forgotten, so its next occurrence is
 * printed in full again. At most SL_LOG_EVERY_KEYS keys are tracked at a
 * time; past that, lines are counted into one summary of their own, so the
 * volume stays bounded whatever the traffic and however many conditions
 * there are. Summaries are printed by the next sl_log_every() call after
 * the interval, or by sl_log_every_flush(), which a daemon calls from a
 * timer so that a condition that stops still gets its last count out.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>
#include <stdint.h>

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

#define SL_LOG_EVERY_KEYS 256

void sl_log_every(sl_log_level level, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Print the summaries whose interval is over; any thread. */
void sl_log_every_flush(void);
/* The summary interval (default 10 s; tests shorten it), and the clock it
 * is measured with (default sl_mono_ms; unit tests pass their own). */
void sl_log_every_interval(int64_t ms);
void sl_log_every_clock(int64_t (*now_ms)(void));

#define sl_debug(...) do { if (sl_log_enabled(SL_LOG_DEBUG)) sl_log(SL_LOG_DEBUG, __VA_ARGS__); } while (0)
#define sl_info(...) sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_warn(...) sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_error(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

#endif
