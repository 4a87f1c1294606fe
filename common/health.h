/*
 * health - liveness of the threads that do a daemon's work, for /healthz.
 *
 * The metrics server runs on a thread of its own, so its answering says
 * nothing about the daemon: a main loop blocked in a callback, or a Kafka
 * consumer thread that stopped polling, left /healthz at 200 and a
 * Kubernetes liveness probe blind. Instead, every thread that must keep
 * going registers a heartbeat and beats as it goes round; /healthz answers
 * 503, naming the heartbeat, once one is older than its bound.
 *
 * sl_health_register() creates a heartbeat (name copied; bound_ms > 0);
 * the registry owns it for the life of the process. sl_health_beat() is a
 * lock-free store, cheap enough for every poll. sl_health_unregister()
 * retires one whose thread ended on purpose (a consumer that drained).
 * sl_health_loop() beats for a libuv loop from a repeating, unreferenced
 * timer on it (it never keeps the loop alive); call it from the loop's
 * thread before uv_run(), and sl_health_loop_stop() when the loop
 * returned. sl_health_report() appends one line per
 * heartbeat to out and says whether all are fresh (metrics.c's /healthz).
 * Every function is thread safe.
 *
 * Test hook: with SLUICE_DEBUG_STALL_FILE=PATH in the environment, a
 * sl_health_beat() on a heartbeat whose name starts with the content of
 * PATH (first line) blocks its thread for as long as PATH exists. That is
 * how tests stall a main loop or a consumer thread for real while the
 * metrics thread keeps answering; without the variable it costs nothing.
 */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "util.h"

/* The bound when metrics.health_timeout is not set. */
#define SL_HEALTH_TIMEOUT_MS 60000

typedef struct sl_beat sl_beat;

sl_beat *sl_health_register(const char *name, int64_t bound_ms);
void sl_health_beat(sl_beat *b);
void sl_health_unregister(sl_beat *b);
sl_beat *sl_health_loop(uv_loop_t *loop, const char *name, int64_t bound_ms);
/* Retires a loop's heartbeat and closes its timer (unless a shutdown walk
 * already did); on the loop's thread, after uv_run() returned. */
void sl_health_loop_stop(sl_beat *b);
bool sl_health_report(sl_buf *out);

#endif
