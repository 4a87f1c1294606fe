/*
 * pool - connection pools per (site, source IP, MX address) and the pacing
 * of (site, source IP) pairs, for one worker loop.
 *
 * snd_pools_new() takes the worker's destination table (dest.h), which
 * it consults and updates: a pool opens no connection to a destination that
 * is down (only its one probe when due). A connection that fails before it
 * is established at the connect or greeting stage, while other connections
 * of the pool work or are still opening, caps the pool at the connections
 * it has for a minute (a receiver that limits connections per client);
 * when it was the pool's last, it marks the destination down and completes
 * every queued transaction at once with that failure. A session that gets
 * as far as the greeting marks the destination up.
 *
 * snd_pools_submit() queues a transaction of the site for the destination
 * described by the target (source IP or SOCKS5 proxy, MX address and
 * port). Idle connections of that pool take it at once; otherwise a new
 * connection is opened while the (site, source) has fewer than max_conn
 * (from the Dispatch) across all the site's MX addresses. When they are
 * all in use elsewhere, an idle one of another MX address is closed to
 * make room, or the transaction waits for a busy one to end. Dispatches
 * of a (source IP, site) pair all reach one worker (keyed `ip/site`), so
 * the cap holds for the sender. A connection
 * carries at most max_msgs transactions, then QUITs; idle connections QUIT
 * after target->timeouts.idle. The done callback fires exactly once per
 * submitted transaction - inside submit when the destination is down and
 * no connection may be opened, so the caller must make submit its last
 * action on the txn - with the
 * per-recipient results in the txn. When a pool's last connection fails
 * before it was established (connect refused, greeting not 220, TLS
 * required but unavailable), every queued transaction completes with
 * txn->session_failed and txn->session_reply set, so the caller can move on
 * to the next MX. A failed opportunistic TLS handshake makes the pool try
 * again in plain text, and keep to plain text for that destination for the
 * time set with snd_pools_set_tls_fallback() (default 1 h; the sender sets
 * sender.tls_fallback_expiry), with the handshake's failure in each
 * transaction's tls_note; then connections try STARTTLS again. A pool in
 * that fallback is not swept before it ends. Under `verify` pools are per
 * MX host name as well, since the certificate must name it.
 *
 * snd_pools_sweep() frees pools without connections or queue that have not
 * been used for idle_ms; snd_pacer_sweep() frees pacing entries whose last
 * slot is idle_ms in the past (memory bounded by the destinations in use),
 * calling forget(arg, key) for each (NULL: nothing), so the caller can let
 * go of what it keeps per pair too.
 *
 * snd_pacer_slot() returns when a message of the (site, source IP) pair
 * keyed `key` may go: never before send_at_ms and, at rate_per_sec > 0, at
 * least 1/rate after the previous one of that pair, so a backlog leaves at
 * the carried rate instead of a burst. It books the slot it returns.
 *
 * Memory: targets are copied; txns belong to the caller. Loop thread only.
 * Metrics: sluice_sender_connections_open{source}, and
 * sluice_sender_connections_total{source,result}.
 */
#ifndef SLUICE_SND_POOL_H
#define SLUICE_SND_POOL_H

#include <stdint.h>
#include <uv.h>

#include "dest.h"
#include "session.h"

typedef struct snd_pools snd_pools;
typedef void (*snd_txn_cb)(snd_txn *t);

snd_pools *snd_pools_new(uv_loop_t *loop, snd_dests *dests);
/* How long a failed opportunistic handshake means plain text (ms > 0). */
void snd_pools_set_tls_fallback(snd_pools *ps, int64_t ms);
void snd_pools_submit(snd_pools *ps, const char *site, const snd_target *tg, uint32_t max_conn,
                      uint32_t max_msgs, snd_txn *t, snd_txn_cb done);
/* Connections open (or opening) now. */
size_t snd_pools_connections(const snd_pools *ps);
/* QUIT every idle connection (shutdown); busy ones QUIT when done. */
void snd_pools_quit_idle(snd_pools *ps);
size_t snd_pools_count(const snd_pools *ps);
size_t snd_pools_sweep(snd_pools *ps, int64_t idle_ms, int64_t now_ms);
/* Only once snd_pools_connections() is 0. */
void snd_pools_free(snd_pools *ps);

typedef struct snd_pacer snd_pacer;
snd_pacer *snd_pacer_new(void);
int64_t snd_pacer_slot(snd_pacer *p, const char *key, int64_t send_at_ms, double rate_per_sec,
                       int64_t now_ms);
size_t snd_pacer_sweep(snd_pacer *p, int64_t idle_ms, int64_t now_ms,
                       void (*forget)(void *arg, const char *key), void *arg);
size_t snd_pacer_count(const snd_pacer *p);
void snd_pacer_free(snd_pacer *p);

#endif
