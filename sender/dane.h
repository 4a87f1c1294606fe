/*
 * dane - DANE for SMTP (RFC 7672): DNSSEC-validated TLSA lookups of MX
 * hosts, with libunbound, off the sending path, and a cache shared by the
 * sender's worker threads.
 *
 * For an MX host H reached on port P, snd_dane_lookup() first asks for H's
 * A records: only when they are DNSSEC-secure (RFC 7672 2.2) does it ask
 * for the TLSA records of _P._tcp.H. The answer (snd_dane_answer) is one of
 *   NONE      no DANE: H's addresses or its TLSA RRset are insecure
 *             (unsigned), or there is no TLSA RRset; the site's policy
 *             applies;
 *   USABLE    secure TLSA records, at least one usable (DANE-TA(2) or
 *             DANE-EE(3), selector 0/1, matching type 0/1/2 with the
 *             right length): STARTTLS is mandatory and the certificate must
 *             match one of them (common/tls.h, sl_tls_dane);
 *   UNUSABLE  secure TLSA records, none usable (e.g. only PKIX-TA/PKIX-EE,
 *             RFC 7672 3.1.3): STARTTLS is mandatory, unauthenticated
 *             (Postfix's "encrypt" in the same case);
 *   FAILED    the lookup failed or was bogus (a validation failure, a
 *             SERVFAIL, a resolver error): this MX host must not be used,
 *             never in plain text; `why` says what went wrong.
 *
 * Threads: one snd_dane per worker loop, every call on that loop's thread;
 * its libunbound context resolves on a thread of its own and wakes the
 * loop through ub_fd() watched by a uv_poll_t. The snd_dane_cache is
 * shared by every worker and locked inside. Answers are immutable and
 * reference counted (atomically), so a cached answer may be held by many
 * threads' sessions at once.
 *
 * snd_dane_cache_new(max): at most max answers, each kept for the smallest
 * TTL of the records it rests on (capped at an hour); FAILED answers are
 * never cached. snd_dane_cache_free() drops the cache's references.
 *
 * snd_dane_new(): the resolver forwards to cfg->sender.dane_resolver
 * ("host:port") or to the servers of /etc/resolv.conf, and validates with
 * the trust anchor file cfg->sender.dane_trust_anchor or, by default,
 * /usr/share/dns/root.key (Debian's dns-root-data). Returns NULL and sets
 * *err (malloc'd) when either cannot be used.
 *
 * snd_dane_lookup() returns 0 when the answer will come, or SL_EINVAL for
 * an unusable name; the callback fires exactly once, on the loop thread,
 * never from inside the call (a cache hit comes on a later iteration). The
 * answer is borrowed for the callback: snd_dane_answer_ref() to keep it.
 * snd_dane_free() completes every pending lookup with FAILED "cancelled"
 * and closes its handles (let the loop run once more afterwards).
 *
 * Metrics: sluice_sender_dane_lookups_total{result="none|usable|unusable|
 * failed"} per answer, sluice_sender_dane_cache_hits_total.
 */
#ifndef SLUICE_SND_DANE_H
#define SLUICE_SND_DANE_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "tls.h"

typedef enum {
    SND_DANE_NONE = 0,
    SND_DANE_USABLE,
    SND_DANE_UNUSABLE,
    SND_DANE_FAILED,
} snd_dane_status;

typedef struct snd_dane_answer {
    atomic_int refs;
    snd_dane_status status;
    char *why;          /* NONE/UNUSABLE/FAILED: a short reason */
    char *qname;        /* "_25._tcp.mx.example.com" */
    sl_tlsa *recs;      /* the usable records (USABLE), n_recs of them */
    size_t n_recs;
    uint32_t ttl;
} snd_dane_answer;

typedef struct snd_dane_cache snd_dane_cache;
typedef struct snd_dane snd_dane;
typedef void (*snd_dane_cb)(const snd_dane_answer *a, void *arg);

const char *snd_dane_status_name(snd_dane_status s);
snd_dane_answer *snd_dane_answer_ref(const snd_dane_answer *a);
void snd_dane_answer_unref(const snd_dane_answer *a);
/* Whether a TLSA record is usable for SMTP (RFC 7672 3.1). */
bool snd_dane_tlsa_usable(const sl_tlsa *r);

snd_dane_cache *snd_dane_cache_new(uint32_t max);
void snd_dane_cache_free(snd_dane_cache *c);

snd_dane *snd_dane_new(uv_loop_t *loop, const sl_config *cfg, snd_dane_cache *cache, char **err);
int snd_dane_lookup(snd_dane *d, const char *host, uint16_t port, snd_dane_cb cb, void *arg);
void snd_dane_free(snd_dane *d);

#endif
