/*
 * api - what the modules of sluice-api share (internal header).
 *
 * api_main.c runs the daemon: config, the libmicrohttpd server (one
 * thread per connection, so a request may block on Kafka's
 * acknowledgement without holding up others), authentication and routing.
 * api_messages.c answers POST /v1/messages; api_control.c the campaign
 * and site control, GET /v1/campaigns/ID, GET /v1/shaping and the
 * suppression endpoints; api_suppress.c keeps the suppression lists that
 * POST /v1/messages checks recipients against; api_unsub.c serves the
 * unauthenticated one-click unsubscribe links /u/TOKEN (RFC 8058).
 *
 * One sluice_client publishes for every connection thread; libsluice is
 * not thread safe, so every call on it (send, poll) and every result
 * callback runs under api_ctx.mu. A request waits for its jobs by polling
 * the client without blocking and then waiting on api_ctx.acked (at most
 * 1 ms, the lock released), so that other requests publish and poll in
 * between, and the main thread polls
 * every 100 ms; whichever thread polls runs the callbacks of every
 * request, which is why callbacks only touch state under the lock.
 */
#ifndef SLUICE_API_H
#define SLUICE_API_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "api_keys.h"
#include "config.h"
#include "sluice.h"
#include "token.h"
#include "util.h"

typedef struct api_ctx {
    const sl_config *cfg;
    api_keys *keys;
    sluice_client *client; /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t acked;  /* broadcast when a request's last job is answered */
    struct sl_producer *prod; /* control and suppression records; under prod_mu */
    struct api_suppress *supp; /* the suppression lists (api_suppress.h); its own lock */
    struct api_idem *idem;     /* the Idempotency-Key records (api_idem.h); its own locks */
    pthread_mutex_t prod_mu;
    const sl_token_key *unsub_key; /* NULL: /u/TOKEN is 404 (no tokens.secret_file) */
} api_ctx;

/* An answer: HTTP status, JSON body (owned; NULL: none), and Retry-After
 * seconds when > 0. html (owned), when set, is sent instead of body as
 * text/html; allow, when set, is the Allow header of a 405. */
typedef struct api_reply {
    int status;
    json_t *body;
    int retry_after;
    char *html;
    const char *allow;
} api_reply;

/* RFC 9457 problem details naming the offending field (may be NULL). */
void api_problem(api_reply *r, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Publish one record (val NULL: a tombstone) to the topic of suffix on
 * api_ctx.prod and wait for its acknowledgement, at most api.ack_timeout.
 * Returns 0, or a negative error. Any thread (takes prod_mu). */
int api_publish(api_ctx *a, const char *suffix, const char *key, const sl_buf *val);

/* POST /v1/messages. body is the request body (NUL-terminated), idem the
 * Idempotency-Key header or NULL. Fills r. Connection thread. */
void api_messages_post(api_ctx *a, api_key *key, const char *body, size_t len, const char *idem,
                       api_reply *r);

/* POST /v1/campaigns/{id}/{suspend|resume|cancel} (site false) or
 * /v1/sites/{name}/{suspend|resume} (site true): one Control record on
 * the control topic, answered 202 once Kafka has it. */
void api_control_post(api_ctx *a, api_key *key, bool site, const char *target,
                      const char *action, const char *body, size_t len, api_reply *r);
/* GET /v1/campaigns/{id}: the key's tenant's campaign, its control state
 * and its events counted (control.h: reads the control and events topics). */
void api_campaign_get(api_ctx *a, api_key *key, const char *campaign, api_reply *r);
/* GET /v1/shaping (admin keys): every site's shaping state as its owning
 * scheduler last wrote it to the state topic (read to its end). */
void api_shaping_get(api_ctx *a, api_key *key, api_reply *r);
/* GET, PUT (body: optional {"reason": "..."}) and DELETE of
 * /v1/suppressions/{address} for the key's tenant. */
void api_suppression(api_ctx *a, api_key *key, const char *method, const char *address,
                     const char *body, size_t len, api_reply *r);
/* POST /v1/suppressions: {"addresses": [...], "reason": "..."}, every
 * address checked before any is published. */
void api_suppressions_import(api_ctx *a, api_key *key, const char *body, size_t len,
                             api_reply *r);

/* Publish one record (value NULL: a tombstone) to the topic of suffix
 * ("control", "events"...) and wait for its acknowledgement, at most
 * api.ack_timeout: 0, SL_ETIMEOUT or Kafka's error. Takes prod_mu. */
int api_publish(api_ctx *a, const char *suffix, const char *key, const sl_buf *val);

/* GET or POST of /u/TOKEN, unauthenticated (api_unsub.c); body is the
 * NUL-terminated request body. Fills r with an HTML answer. */
void api_unsub(api_ctx *a, const char *method, const char *token, const char *body,
               api_reply *r);

#endif
