/*
 * wire - encoding, decoding and validation of the protobuf contract
 * (proto/sluice/v1), job ids, Message-IDs, and publishing events and DLQ
 * records.
 *
 * Decoders check the version field: a record whose version is 0 or newer
 * than SLUICE_WIRE_VERSION is refused with SL_EVERSION, a record that does
 * not parse with SL_EPROTO; *why then gets a static reason suitable for the
 * DLQ header. Decoded messages are owned by the caller and freed with the
 * matching protobuf-c free_unpacked (sl_job_free() etc.).
 *
 * Event and DLQ helpers serialise and hand the record to the producer;
 * the callback fires as sl_producer_send() says.
 */
#ifndef SLUICE_WIRE_H
#define SLUICE_WIRE_H

#include "sluice/v1/common.pb-c.h"
#include "sluice/v1/job.pb-c.h"
#include "sluice/v1/dispatch.pb-c.h"
#include "sluice/v1/event.pb-c.h"
#include "sluice/v1/suppression.pb-c.h"
#include "sluice/v1/template.pb-c.h"
#include "sluice/v1/control.pb-c.h"

#include "config.h"
#include "kafka.h"
#include "util.h"

#define SLUICE_WIRE_VERSION 1

typedef Sluice__V1__Job sl_job;
typedef Sluice__V1__Dispatch sl_dispatch;
typedef Sluice__V1__Event sl_event;
typedef Sluice__V1__Suppression sl_suppression;
typedef Sluice__V1__Template sl_template_msg;
typedef Sluice__V1__Control sl_control;

int sl_job_decode(const void *p, size_t n, sl_job **out, const char **why);
int sl_dispatch_decode(const void *p, size_t n, sl_dispatch **out, const char **why);
int sl_event_decode(const void *p, size_t n, sl_event **out, const char **why);
int sl_suppression_decode(const void *p, size_t n, sl_suppression **out, const char **why);
int sl_template_decode(const void *p, size_t n, sl_template_msg **out, const char **why);
int sl_control_decode(const void *p, size_t n, sl_control **out, const char **why);
void sl_control_free(sl_control *c);
/* The control topic's key of a campaign ("campaign/TENANT/ID") or a site
 * ("site/NAME"); tenant is ignored for a site. Caller frees. */
char *sl_control_key(bool site, const char *tenant, const char *target);
/* The key a Control record goes under: sl_control_key()'s, or for a purge
 * "purge/site/NAME". Caller frees. */
char *sl_control_record_key(const sl_control *c);
void sl_job_free(sl_job *j);
/* The fields of an encoded Job that shape routes it by, read in place
 * without decoding the rest: each span points into the record (not
 * NUL-terminated; empty when the field is absent, the last one when it
 * is repeated, as decoding would have it). It refuses what sl_job_decode()
 * refuses of the record's structure (every tag, length and varint in
 * bounds, field 0, the fields it reads with their declared wire types, the
 * version), not the other fields' wire types or what nested messages
 * hold, which whoever decodes the whole job checks. Returns 0, SL_EPROTO
 * or SL_EVERSION with *why as decoders do. */
typedef struct sl_span {
    const char *p;
    size_t n;
} sl_span;
typedef struct sl_job_fields {
    sl_span tenant, campaign, pool, domain, site;
    int32_t priority;
    int64_t created_at_ms, expires_at_ms;
} sl_job_fields;
int sl_job_peek(const void *p, size_t n, sl_job_fields *out, const char **why);
/* protobuf strings may hold NUL, C strings may not: decoding cuts a string
 * at its first NUL, so "a@x.com\0b" would become "a@x.com" unnoticed.
 * sl_job_nul_field() reads an encoded Job in place and names the first
 * string field holding a NUL ("recipients", "vars", ...; inside map
 * entries and MX hosts too), or returns NULL. The raw message (bytes) is
 * not a string and is not looked at. Run it on what sl_job_decode()
 * accepted. */
const char *sl_job_nul_field(const void *p, size_t n);
void sl_dispatch_free(sl_dispatch *d);
void sl_event_free(sl_event *e);
void sl_suppression_free(sl_suppression *s);
void sl_template_free(sl_template_msg *t);

/* Serialise any protobuf-c message into b (reset first). */
void sl_pack(const ProtobufCMessage *m, sl_buf *b);

/* Append one field to b as protobuf encodes it: length-delimited (string,
 * bytes, message), varint (integers, enums, bools; a negative int64 as its
 * two's complement) or 64-bit (double). Protobuf reads fields in any
 * order, and of a scalar or string field given twice the last one: so a
 * field appended to a message's encoding sets it without decoding and
 * encoding the message again, and a message can be put together from
 * parts encoded at different times. */
void sl_wire_put_bytes(sl_buf *b, uint32_t field, const void *v, size_t len);
void sl_wire_put_varint(sl_buf *b, uint32_t field, uint64_t v);
void sl_wire_put_double(sl_buf *b, uint32_t field, double v);
/* Field numbers for them (proto/sluice/v1). */
#define SL_JOB_FIELD_DOMAIN 9
#define SL_JOB_FIELD_SITE 18
#define SL_DISPATCH_FIELD_JOB 2
#define SL_DISPATCH_FIELD_POOL 4
#define SL_DISPATCH_FIELD_SEND_AT 7
#define SL_DISPATCH_FIELD_RATE 8
#define SL_DISPATCH_FIELD_ROUTE 12
#define SL_DISPATCH_FIELD_REPEAT 14
/* A new job id: 26 characters, time-sortable (48-bit ms clock, 80 random
 * bits, Crockford base32, like a ULID). Writes into out[27]. Thread safe. */
void sl_job_id_new(char out[27]);
/* Whether a job id from a producer can be used: 1..SL_BUDGET_JOB_ID_MAX bytes of
 * printable ASCII. It becomes part of the Message-ID header and of log
 * lines, so CR, LF or any other control character must never get in.
 * NULL when valid, else the reason for the REJECTED event. */
const char *sl_job_id_check(const char *id);
/* "<JOBID.ATTEMPTLESS@domain>": stable across retries of one job, so a
 * repeat is recognisable at the receiver. Caller frees. */
char *sl_message_id(const char *job_id, const char *domain);

const char *sl_event_type_name(Sluice__V1__EventType t);     /* "DELIVERED" */
const char *sl_bounce_class_name(Sluice__V1__BounceClass c); /* "invalid-recipient" */
int sl_bounce_class_from_name(const char *name, Sluice__V1__BounceClass *out);

/* Fill e from job (ids, tenant, campaign, recipient [0], domain, site,
 * attempt, created, meta) with type, stage and timestamp now. The event
 * borrows job's strings: keep job alive until it is packed. */
void sl_event_from_job(sl_event *e, Sluice__V1__EventType type, const sl_job *job,
                       const char *stage);
/* Publish to the events topic keyed by job id. */
int sl_event_publish(sl_producer *p, const sl_config *cfg, const sl_event *e, sl_produce_cb cb,
                     void *arg);
/* Publish raw bytes to the DLQ with headers "reason", "source-topic",
 * "source-partition", "source-offset". It takes any record: a copy over
 * sl_budget_dlq_copy_max() is cut to it, with headers "truncated: true" and
 * "original-length" (and the counter sluice_dlq_truncated_total); a reason
 * over SL_BUDGET_REASON_MAX octets is cut too. */
int sl_dlq_publish(sl_producer *p, const sl_config *cfg, const void *raw, size_t len,
                   const char *reason, const char *topic, int32_t partition, int64_t offset,
                   sl_produce_cb cb, void *arg);
/* The same with up to 4 more headers (e.g. which webhook endpoint
 * rejected the record, so that a replay can post it there again). */
int sl_dlq_publish_hdrs(sl_producer *p, const sl_config *cfg, const void *raw, size_t len,
                        const char *reason, const char *topic, int32_t partition, int64_t offset,
                        const sl_header *extra, size_t n_extra, sl_produce_cb cb, void *arg);

/* Render one event as a JSON object (field names as in event.proto, enum
 * names as strings) appended to b. */
void sl_event_json(const sl_event *e, sl_buf *b);

#endif
