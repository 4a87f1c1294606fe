/*
 * api_idem - the Idempotency-Key records that every sluice-api instance
 * shares, so that a retried POST /v1/messages is answered with the same
 * job ids and publishes nothing again whichever instance takes it, and
 * after a restart.
 *
 * Topic: the compacted idempotency topic (sl_config_topic(cfg,
 * "idempotency"), kept api.idempotency_ttl). Key "TENANT/IDEMPOTENCY-KEY";
 * value a JSON object {"v":1, "tenant", "key", "sha256" (hex, of the
 * request body), "recipients" (their number), "errors" (each distinct
 * error once), "rejected" ([[index, index into errors], ...]: the
 * recipients refused one by one), "at_ms"}. The job ids
 * are not stored: they are derived from (tenant, key, body, index), see
 * api_messages.c.
 *
 * A group-less reader of the whole topic fills an in-memory map, kept
 * following it: api_idem_drain() (the main thread, every tick) reads what
 * has arrived. api_idem_sync() reads, before a request is decided, the
 * key's partition up to its end as it is at the call (one watermark query
 * to the broker), so that a record Kafka acknowledged before the request
 * arrived is seen, whichever instance wrote it. api_idem_put() records a
 * request this instance answered (at once, before the topic brings it
 * back). A record older than api.idempotency_ttl is forgotten.
 *
 * Memory: a record of every key within the TTL (about 200 octets plus
 * the rejected recipients' errors). The module copies what it is given;
 * api_idem_get() returns a new reference the caller releases.
 *
 * Threads: api_idem_sync(), api_idem_get() and api_idem_put() from any
 * thread; api_idem_drain() from one (it skips a turn while a sync reads).
 */
#ifndef SLUICE_API_IDEM_H
#define SLUICE_API_IDEM_H

#include <jansson.h>
#include <stdbool.h>

#include "config.h"

typedef struct api_idem api_idem;

/* NULL and *err (caller frees) when the topic cannot be read. */
api_idem *api_idem_new(const sl_config *cfg, char **err);
void api_idem_drain(api_idem *s);
/* Reads the partition of (tenant, key) up to its end as it is now.
 * 0, or SL_ETIMEOUT / SL_EKAFKA when that could not be done within
 * timeout_ms (the caller cannot tell whether the key was used). */
int api_idem_sync(api_idem *s, const char *tenant, const char *key, int timeout_ms);
/* The record of (tenant, key), a new reference, or NULL. */
json_t *api_idem_get(api_idem *s, const char *tenant, const char *key);
/* Remembers rec (borrowed) as the record of its "tenant" and "key". */
void api_idem_put(api_idem *s, json_t *rec);
/* The topic key of (tenant, key). Caller frees. */
char *api_idem_key(const char *tenant, const char *key);
void api_idem_free(api_idem *s);

#endif
