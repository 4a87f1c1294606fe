/*
 * whk - sluice-webhook: post every event of the events topic to HTTP(S)
 * endpoints, signed, in batches, at least once.
 *
 * whk_new() starts one worker thread per configured endpoint
 * (webhook.endpoints) and a consumer of the events topic in group
 * sluice-webhook. Each record is decoded on the loop thread and rendered
 * once as JSON (sl_event_json); the rendering is shared by every endpoint
 * and counted: the record is done (sl_record_done(), its offset may be
 * committed) only when every endpoint answered 2xx to a batch holding it.
 * A record that does not decode goes to the DLQ and is done when the DLQ
 * write is acknowledged.
 *
 * A worker takes up to batch_size queued events, POSTs them as a JSON
 * array with libcurl's easy interface (a worker thread may block; the loop
 * never does) and the headers
 *     X-Sluice-Timestamp: <unix seconds when this attempt was signed>
 *     X-Sluice-Signature: sha256=<hex HMAC-SHA256(timestamp "." body, secret)>
 * (each attempt is signed afresh, so a receiver can refuse a request
 * older than its tolerance: a captured request cannot be replayed later)
 * and retries the same batch with exponential backoff (0.5 s doubling, cap
 * 5 min) until it gets a 2xx. An endpoint that is down for an hour thus
 * holds its events in memory up to the consumer's max_inflight, after
 * which the consumer pauses: nothing is skipped, nothing is committed past
 * an event some endpoint has not accepted.
 *
 * A receiver that answers 4xx (other than 408 Request Timeout and 429 Too
 * Many Requests, which are retried like a 5xx) has refused the batch
 * itself, and retrying it forever would stop that endpoint for good. After
 * webhook.max_attempts such answers the batch is dead-lettered: each event
 * goes to the DLQ topic with its reason and the header webhook-endpoint=N,
 * is counted (sluice_webhook_dead_lettered_total) and logged, and is done
 * for that endpoint once the DLQ has it.
 *
 * Replay (whk_new with replay set, `sluice-webhook --replay`): consume the
 * DLQ in group sluice-webhook-replay and post each record that carries a
 * webhook-endpoint header to that endpoint only, the same way; every
 * other DLQ record is skipped. A replayed event refused again is
 * dead-lettered again.
 *
 * whk_stop() stops fetching and lets the workers finish what is in memory;
 * cb fires on the loop thread once every handed-out record is done.
 * whk_abandon() gives up on what is still queued (the drain deadline):
 * workers stop (aborting requests in progress) and the undone records are
 * handed back with sl_record_release(), so their offsets stay uncommitted
 * and the next sluice-webhook delivers them again; the stop callback then
 * fires as the consumer finishes draining.
 *
 * Metrics: sluice_webhook_events_total{endpoint}, sluice_webhook_requests_total
 * {endpoint,result}, sluice_webhook_request_seconds{endpoint},
 * sluice_webhook_queued{endpoint}, sluice_webhook_malformed_total,
 * sluice_webhook_dead_lettered_total{endpoint}. The endpoint
 * label is its index in webhook.endpoints (a URL may carry a token).
 *
 * Ownership: the whk borrows cfg and loop (both outlive it). One owner
 * thread: the loop's.
 */
#ifndef SLUICE_WHK_H
#define SLUICE_WHK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct whk whk;
typedef void (*whk_drained_cb)(void *arg);

/* What the daemon needs of a loaded config beyond the loader's checks: at
 * least one endpoint, every secret_file readable and not empty. Returns 0,
 * or -1 and *err (malloc'd). `--check` and whk_new() both use it. */
int whk_config_check(const sl_config *cfg, char **err);
/* NULL and *err (malloc'd) on failure: whk_config_check()'s reasons,
 * Kafka set-up errors. */
whk *whk_new(const sl_config *cfg, uv_loop_t *loop, bool replay, char **err);
bool whk_ready(const whk *w);
void whk_stop(whk *w, whk_drained_cb cb, void *arg);
void whk_abandon(whk *w);
size_t whk_pending(const whk *w);
/* After the drained callback. Joins the workers and closes the loop
 * handles; run the loop once more afterwards. */
void whk_free(whk *w);

/* "sha256=<64 hex>" of "<ts>.<body>" under key, into out[72]. */
void whk_sign(const void *key, size_t klen, long long ts, const void *body, size_t len,
              char out[72]);
/* Whether an HTTP status refuses the batch itself (dead-letter after
 * max_attempts) rather than a moment's trouble (retry until accepted). */
bool whk_status_refuses(long status);
/* Retry delay after `failures` consecutive failures (>= 1): 500 ms
 * doubling, capped at 5 minutes. */
int64_t whk_backoff_ms(unsigned failures);

#endif
