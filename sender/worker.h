/*
 * worker - one delivery thread of the sender: a libuv loop of its own with
 * its own Kafka producer, DNS resolver, connection pools and pacer.
 *
 * The daemon's consumer (on the main loop) hands every dispatch record to
 * the worker chosen by a hash of its key (source IP + "/" + site), so one
 * (IP, site) pair always lives on one loop and its connection caps and
 * pacing are exact. snd_worker_submit() may be called from any thread.
 *
 * For each record the worker decodes the Dispatch (a malformed one goes to
 * the DLQ with the reason), waits for its slot (never before send_at_ms;
 * when behind, paced at rate_per_sec per (site, source IP)), builds the
 * message (raw, or a template from the store; Message-ID and Date ensured;
 * DKIM-signed when the From domain has keys), finds the destination (the
 * Dispatch's route, a configured route, the job's MX list, or an MX lookup;
 * implicit MX; null MX bounces at once; a temporary DNS failure defers and
 * never falls back to A records; with MX hosts, the domain's MTA-STS policy
 * from shared->mtasts: enforce keeps the matching hosts and verifies their
 * certificates, testing reports), and delivers through the pools, trying
 * the next MX host when sl_trouble_decide() says NEXT_MX. Just before its
 * first transaction, every recipient whose (job id, recipient) the
 * delivery ledger (ledger.h) holds as final is skipped: counted, logged,
 * no event. Every outcome is
 * published through outcome.h and, once Kafka acknowledged all of it, the
 * record goes back to the owner through shared->record_done (called on the
 * worker thread; the owner must pass it to its own loop); a record handed
 * back undone goes through shared->record_release the same way.
 *
 * snd_worker_drain() (any thread) stops starting new transactions: records
 * that wait for their slot are handed back - left undone, so the consumer
 * commits below them and another sender repeats them - while transactions
 * under way finish. snd_worker_busy() counts deliveries not yet handed
 * back or done. snd_worker_stop() ends the thread (after drain), flushing
 * the producer.
 */
#ifndef SLUICE_SND_WORKER_H
#define SLUICE_SND_WORKER_H

#include <openssl/ssl.h>

#include "config.h"
#include "dane.h"
#include "dkim.h"
#include "kafka.h"
#include "ledger.h"
#include "mtasts.h"
#include "token.h"
#include "tmplstore.h"
#include "trouble.h"

typedef struct snd_shared {
    const sl_config *cfg;
    const sl_trouble *trouble;
    const sl_dkim_keyring *dkim;    /* NULL: no signing */
    snd_tmplstore *templates;
    SSL_CTX *tls_ctx;
    snd_mtasts *mtasts;             /* NULL: MTA-STS off (sender.mta_sts) */
    const sl_token_key *verp_key;   /* NULL: VERP off (no verp.domain nor verp.tenants) */
    const char *sender_id;
    snd_ledger *ledger;             /* NULL: the delivery ledger is off */
    snd_dane_cache *dane_cache;     /* NULL: DANE is off (sender.dane) */
    const sl_token_key *unsub_key;  /* NULL: no List-Unsubscribe (unsubscribe.url unset) */
    void (*record_done)(void *arg, sl_record *rec);
    void (*record_release)(void *arg, sl_record *rec); /* handed back undone */
    void *record_done_arg;
} snd_shared;

typedef struct snd_worker snd_worker;

snd_worker *snd_worker_start(const snd_shared *sh, int index, char **err);
void snd_worker_submit(snd_worker *w, sl_record *rec);
void snd_worker_drain(snd_worker *w);
/* Deliveries in progress (not counting the ones handed back by a drain). */
size_t snd_worker_busy(snd_worker *w);
/* Deliveries past their last check (slot, revocation, ledger) and not yet
 * handed back or done: they will reach the wire. Any thread. */
size_t snd_worker_sending(snd_worker *w);
/* While held (the group is taking partitions back), deliveries that reach
 * their slot are handed back undone instead of sent. Any thread. */
void snd_worker_hold(snd_worker *w, bool hold);
void snd_worker_stop(snd_worker *w);

#endif
