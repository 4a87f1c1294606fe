/*
 * outcome - turning the results of one Dispatch into Kafka records, and
 * knowing when they are safe.
 *
 * snd_outcome_publish() publishes one Event per recipient to the events
 * topic (DELIVERED, DEFERRED, BOUNCED with class and hard flag, or EXPIRED),
 * and, when some recipients were deferred and the job has not expired, one
 * Job with just those recipients to the retry topic for this attempt:
 * delay cfg->retry.delays_ms[min(attempt, n-1)], topic
 * sl_config_topic(cfg, sl_config_retry_suffix(delay)), key the site,
 * attempt + 1 and not_before_ms = now + delay. A job whose next attempt
 * would fall after its expiry (job->expires_at_ms, else created_at_ms +
 * cfg->retry.expiry_ms) gets EXPIRED events instead and no retry record.
 * With info->ledger set, every final recipient (DELIVERED, BOUNCED,
 * EXPIRED) also gets a ledger record, produced just before its event on
 * info->ledger_producer (linger 0) so that both are on their way at once
 * and a crash after the 250 leaves the shortest window; it is noted in the
 * ledger's lookup once acknowledged, and done fires only after every
 * ledger record too. A ledger record may therefore land without its event
 * (a crash between the two acknowledgements): the sender that skips the
 * recipient later publishes the final event again (from_ledger).
 * Returns 0 and done(arg, err) fires later, on the producer's loop thread,
 * once every record was acknowledged (err 0) or one could never be (err <
 * 0: the caller must not lose the input); or returns a negative error when
 * nothing could be sent, and done never fires.
 *
 * Memory: everything is copied into the producer before the call returns.
 * Metrics: sluice_sender_{delivered,deferred,bounced,expired}_total{site,
 * source}, sluice_sender_replies_total{site,source,code} (all of a pair's
 * series dropped by snd_outcome_forget_pair()).
 */
#ifndef SLUICE_SND_OUTCOME_H
#define SLUICE_SND_OUTCOME_H

#include "kafka.h"
#include "ledger.h"
#include "session.h"
#include "wire.h"

typedef struct snd_rcpt_outcome {
    const char *rcpt;
    Sluice__V1__EventType type;     /* DELIVERED, DEFERRED or BOUNCED */
    const sl_reply *reply;          /* may be NULL (nothing was said); the event
                                       carries its code, enhanced code and raw text */
    Sluice__V1__BounceClass bounce_class;
    bool hard;
    bool possible_duplicate;
    const char *reason;             /* short, static */
    bool from_ledger;               /* skipped: the final event again, from the
                                       ledger's record (no new ledger record) */
} snd_rcpt_outcome;

typedef struct snd_outcome_info {
    const char *sender_id;
    const char *mx_host, *mx_ip;
    const char *tls_protocol, *tls_cipher;
    const char *tls_policy;         /* "opportunistic", "required", "verify", "disabled" */
    bool tls_verified;
    const char *tls_verify_result;  /* "ok", why not, or "" without TLS */
    const char *tls_failure;        /* why TLS failed or was not used, or "" */
    const char *message_id;
    int64_t queue_ms, smtp_ms;
    int worker;                     /* the worker loop's index, for the log */
    int64_t destination_down_until_ms; /* every MX down: their next probe (wall ms), else 0 */
    /* The delivery ledger (NULL: off), the producer of its records (NULL:
     * the events' producer; same loop) and the dispatch record's key and
     * place: every final recipient gets a ledger record (ledger.h), and
     * done fires after those too. */
    snd_ledger *ledger;
    sl_producer *ledger_producer;
    const void *key;
    size_t klen;
    int32_t partition;
    int64_t offset;
} snd_outcome_info;

typedef void (*snd_outcome_cb)(void *arg, int err);

int snd_outcome_publish(sl_producer *p, const sl_config *cfg, const sl_dispatch *d,
                        const snd_outcome_info *info, const snd_rcpt_outcome *r, size_t n,
                        snd_outcome_cb done, void *arg);

/* The delay and expiry decision alone (tests): the retry delay for an
 * attempt, and whether a retry at now + delay is past the job's expiry. */
int64_t snd_retry_delay(const sl_config *cfg, uint32_t attempt);

/* Drops the per-(site, source IP) series snd_outcome_publish() keeps, once
 * the worker forgot the pair (sender.idle_state_timeout): a sender that met
 * many sites keeps series only for those in use. Any thread. */
void snd_outcome_forget_pair(const char *site, const char *source_ip);
bool snd_retry_expired(const sl_config *cfg, const sl_job *job, int64_t now_ms, int64_t delay_ms);

#endif
