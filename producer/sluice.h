/*
 * sluice.h - libsluice, the C client library that publishes mail to a
 * sluice cluster.
 *
 * A sluice_client owns one idempotent Kafka producer (acks=all, murmur2
 * partitioner, so any Kafka client in any language lands a domain on the
 * same partition). sluice_send() validates a message, splits its
 * recipients by domain (at most SLUICE_MAX_RCPTS_PER_JOB per job) and
 * publishes one Job per group on the jobs topic, keyed by the recipient
 * domain (lower-case A-label).
 *
 *   sluice_client *c = sluice_client_new("sluice.yaml", &err);
 *   sluice_message m = SLUICE_MESSAGE_INIT;
 *   m.from = "news@example.net"; m.to = rcpts; m.n_to = 2;
 *   m.raw = text; m.raw_len = strlen(text);
 *   if (sluice_send(c, &m, on_result, ctx) < 0)
 *       fprintf(stderr, "%s\n", sluice_errmsg(c));
 *   sluice_flush(c, 30000);      // callbacks fire in here
 *   sluice_client_free(c);
 *
 * Durability: a job is durable only when its result callback reports
 * err == 0, which happens only after Kafka acknowledged the record to all
 * in-sync replicas. The library never reports success on a guess: a
 * record that timed out is produced again (the idempotent producer makes
 * the repeat harmless) and reported when it is finally acknowledged, or
 * with an error when it can never be (record too large).
 *
 * Validation (all before anything is published; on failure nothing of the
 * message is published and sluice_send() returns a negative code with a
 * precise message in sluice_errmsg()):
 *   - addresses: RFC 5321 Mailbox: local part a dot-atom (UTF-8 allowed,
 *     RFC 6531) or a quoted string, at most 64 octets; domain a host name
 *     of LDH labels (at most 63 octets each, 255 in all) with at least two
 *     labels; an IDN domain is converted to its A-label (IDNA 2008);
 *     domains are lower-cased; the whole address at most 254 octets.
 *     Address literals ("[192.0.2.1]") are refused.
 *   - no CR, LF or NUL in any string field (from, recipients, tenant,
 *     campaign, pool, template id, variable names, meta). Variable values
 *     may hold line breaks (a template body may want them; the renderer
 *     refuses them in header fields) but no NUL.
 *   - exactly one of raw (an RFC 5322 message, no NUL) and template_id.
 *   - sizes: at most SLUICE_MAX_RCPTS recipients per call, and the encoded
 *     job at most the configured scheduler.max_job_bytes (1 MiB when 0 or
 *     unset), else SLUICE_ETOOBIG at once with nothing published. The
 *     client's message.max.bytes and the topics' max.message.bytes leave
 *     room for what the scheduler adds (the size budget), so a job taken
 *     here is never refused by Kafka further on.
 * Duplicate recipients in one call are sent once.
 *
 * Ownership: sluice_send() copies everything it needs from the message;
 * the caller may free or reuse it as soon as the call returns. Strings in
 * a sluice_job_result are valid only during the callback.
 *
 * Threads: a client belongs to one thread at a time; it is not thread
 * safe. Result callbacks run inside sluice_send(), sluice_poll() and
 * sluice_flush() on the calling thread; a callback may call sluice_send()
 * but must not free the client. Different clients are independent.
 *
 * Errors: functions return 0 or a negative SLUICE_E* code; sluice_strerror()
 * names a code, sluice_errmsg() gives the detail of the last failure on a
 * client (e.g. "recipient 2 \"bob@exa mple.com\": domain: invalid character
 * ' ' at offset 3"), valid until the next call on that client.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes (the same numbers as sluice's internal error table). */
#define SLUICE_OK 0
#define SLUICE_EINVAL (-3001) /* invalid argument or message field */
#define SLUICE_ENOMEM (-3002)
#define SLUICE_ETOOBIG (-3007)  /* message or record too large */
#define SLUICE_EKAFKA (-3009)   /* Kafka refused or is unreachable */
#define SLUICE_ETIMEOUT (-3012) /* flush did not finish in time */
#define SLUICE_ECONFIG (-3013)  /* configuration file invalid */
#define SLUICE_EADDRESS (-3014) /* an address is not a valid RFC 5321 mailbox */

#define SLUICE_MAX_RCPTS 10000       /* recipients per sluice_send() */
#define SLUICE_MAX_RCPTS_PER_JOB 100 /* RFC 5321 4.5.3.1.8 minimum */
#define SLUICE_ADDRESS_MAX 254

typedef struct sluice_client sluice_client;
struct sl_config;

typedef enum {
    SLUICE_PRIORITY_BULK = 0,
    SLUICE_PRIORITY_NORMAL = 1,
    SLUICE_PRIORITY_TRANSACTIONAL = 2
} sluice_priority;

typedef struct sluice_kv {
    const char *key;
    const char *value;
} sluice_kv;

typedef struct sluice_message {
    const char *from;      /* envelope sender (bounce address) */
    const char *const *to; /* recipients */
    size_t n_to;
    const void *raw; /* RFC 5322 message, or NULL */
    size_t raw_len;
    const char *template_id; /* or a template and its variables */
    const sluice_kv *vars;
    size_t n_vars;
    const char *tenant;   /* optional (NULL or "") */
    const char *campaign; /* optional */
    const char *pool;     /* optional: the tenant's/default pool */
    sluice_priority priority;
    const sluice_kv *meta; /* opaque, copied into every event */
    size_t n_meta;
    int64_t expires_at_ms; /* absolute (ms since epoch); 0: default */
    /* Optional: the job id to publish under instead of a fresh one, for a
     * caller that must republish a job identically (an idempotent retry):
     * printable ASCII, at most 64 octets, and only for a message of one
     * recipient (one job). The caller answers for its uniqueness. */
    const char *job_id;
    /* Transactional mail (a receipt, a password reset): no one-click
     * List-Unsubscribe fields (Job.transactional). 0, the default: bulk. */
    int transactional;
} sluice_message;

#define SLUICE_MESSAGE_INIT                                                                        \
    {                                                                                              \
        0                                                                                          \
    }

/* The outcome of one job (one recipient domain of one sluice_send()). */
typedef struct sluice_job_result {
    const char *job_id;            /* 26 characters, time-sortable */
    const char *domain;            /* A-label */
    const char *const *recipients; /* normalised (A-label domain) */
    size_t n_recipients;
    int err;      /* 0: durable in Kafka; else SLUICE_E* */
    size_t bytes; /* encoded size of the job record */
} sluice_job_result;

typedef void (*sluice_result_cb)(void *arg, const sluice_job_result *r);

/* Create a client from a YAML config file (NULL: the built-in dev config;
 * SLUICE_* environment overrides apply). On failure returns NULL and sets
 * *err to a malloc'd message the caller frees. */
sluice_client *sluice_client_new(const char *config_path, char **err);
/* The same from a loaded config, which the client borrows: it must outlive
 * the client. */
sluice_client *sluice_client_new_from_config(const struct sl_config *cfg, char **err);
/* Whether every acknowledged job also publishes one ACCEPTED event per
 * recipient on the events topic (stage "producer"), so that analytics and
 * `sluice events` see a message from the moment it is durable. On by
 * default; costs one more record per recipient. */
void sluice_client_set_accepted_events(sluice_client *c, bool on);
/* Frees the client. Unacknowledged jobs are lost and their callbacks never
 * fire: call sluice_flush() first. */
void sluice_client_free(sluice_client *c);

/* Validate and publish. Returns 0 when the message passed validation: then
 * cb fires exactly once per job (possibly already inside this call, e.g.
 * with SLUICE_EKAFKA when the producer refused the record at once). Returns
 * a negative code when the message was refused: then nothing was published
 * and cb never fires. cb may be NULL (fire and forget; sluice_flush() still
 * waits for the acknowledgements). */
int sluice_send(sluice_client *c, const sluice_message *msg, sluice_result_cb cb, void *arg);
/* Serve delivery reports for up to timeout_ms (0: only what is ready). */
void sluice_poll(sluice_client *c, int timeout_ms);
/* Wait until every job is acknowledged or failed. 0 or SLUICE_ETIMEOUT. */
int sluice_flush(sluice_client *c, int timeout_ms);
/* Jobs handed to the producer and not yet reported. */
size_t sluice_outstanding(const sluice_client *c);

/* The message of an error code, e.g. "invalid address". */
const char *sluice_strerror(int err);
/* The detail of the last failure on this client ("" if none). */
const char *sluice_errmsg(const sluice_client *c);

/* Check one mailbox and write its normalised form (domain lower-cased
 * A-label) into out (SLUICE_ADDRESS_MAX + 1 bytes). Returns 0, or
 * SLUICE_EADDRESS with the reason written into why (whylen bytes, may be
 * NULL), e.g. "domain label \"-x\" starts with a hyphen". */
int sluice_address_normalize(const char *addr, char out[SLUICE_ADDRESS_MAX + 1], char *why,
                             size_t whylen);

/* Check one sender-domain pattern and write its normalised form into out
 * (SLUICE_ADDRESS_MAX + 1 bytes): a glob ('*' or '?' in it, such as
 * "*.example.com") lower-cased as written, any other name checked and
 * converted to its lower-case A-label the way sluice_address_normalize()
 * converts an address's domain. The one form of the domain lists of
 * sluice-api's keys and sluice-submit's users. Returns 0, or
 * SLUICE_EADDRESS with the reason in why ("empty domain", "domain too
 * long", or the address check's). */
int sluice_domain_pattern_normalize(const char *pattern, char out[SLUICE_ADDRESS_MAX + 1],
                                    char *why, size_t whylen);

#ifdef __cplusplus
}
#endif

#endif
