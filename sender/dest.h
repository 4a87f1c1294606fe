/*
 * dest - the state of each destination a worker loop delivers to, in the
 * manner of Postfix's dead-host cache: a destination is (MX address, port,
 * source IP or SOCKS5 proxy), keyed by snd_dest_key().
 *
 * States:
 *   UP       - connections may be opened (every destination starts here).
 *   DOWN     - a connection failed before the session was established
 *              (connect refused or timed out, a greeting that was not 220,
 *              or the greeting never came): nothing connects until
 *              down_until. The backoff starts at backoff_initial_ms and
 *              doubles with every failed probe up to backoff_max_ms; each
 *              delay is drawn with jitter in [d/2, d] so that many
 *              destinations that failed together are not probed together.
 *   PROBING  - down_until passed and one connection (the probe) is under
 *              way; no other connection opens until it ends. Success makes
 *              the destination UP (and resets the backoff); failure makes it
 *              DOWN again with the next, longer backoff.
 *
 * snd_dest_may_connect() is what a pool asks before opening a connection:
 * true when UP, or when DOWN has expired (it becomes PROBING and the caller
 * owns the probe); false while DOWN or while another probe runs.
 * snd_dest_blocked() is what a delivery asks before it queues on a
 * destination: true only while DOWN and not yet due for its probe, with the
 * reply that marked it down (the real reason, for the DEFERRED event) and
 * the time of the next probe. snd_dest_failed() / snd_dest_ok() report how a
 * connection ended; a failure reported while already DOWN (the other
 * connections that were opening at the same time) changes nothing.
 *
 * snd_dest_hold() / snd_dest_unhold() count the deliveries queued on or
 * talking to a destination (snd_dest_held()), which the worker caps per
 * destination so that one stuck site cannot fill the sender's window.
 * snd_dest_done() counts a completed transaction; snd_dest_rate() is the
 * completions per second over the last 5 to 10 s, so the worker can tell
 * a destination that drains what it holds quickly from a stuck one.
 *
 * snd_dests_sweep() frees entries that are UP, hold nothing and have not
 * been used for idle_ms; a DOWN entry is kept while its backoff matters
 * (until idle_ms after down_until), so memory is bounded by the
 * destinations in use.
 *
 * Metrics: sluice_sender_destinations_down (gauge, per process, summed over
 * the workers) and sluice_sender_destination_state_changes_total{to}.
 * Memory: keys and replies are copied. Loop thread only (one table per
 * worker loop).
 */
#ifndef SLUICE_SND_DEST_H
#define SLUICE_SND_DEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

typedef enum { SND_DEST_UP = 0, SND_DEST_DOWN, SND_DEST_PROBING } snd_dest_state;

typedef struct snd_dest_opts {
    int64_t backoff_initial_ms;
    int64_t backoff_max_ms;
    int64_t idle_ms;
    uint64_t seed;          /* for the jitter; 0: a fixed seed */
} snd_dest_opts;

typedef struct snd_dests snd_dests;

snd_dests *snd_dests_new(const snd_dest_opts *o);
void snd_dests_free(snd_dests *ds);

/* "source|proxy|ip|port", malloc'd. source and proxy may be NULL. */
char *snd_dest_key(const char *source_ip, const char *socks5, const char *ip, unsigned port);

bool snd_dest_may_connect(snd_dests *ds, const char *key, int64_t now_ms);
/* *why (borrowed, valid until the next call on ds) and *until_ms are set
 * when it returns true. */
bool snd_dest_blocked(snd_dests *ds, const char *key, int64_t now_ms, const snd_result **why,
                      int64_t *until_ms);
void snd_dest_failed(snd_dests *ds, const char *key, const snd_result *why, int64_t now_ms);
void snd_dest_ok(snd_dests *ds, const char *key, int64_t now_ms);
/* A probe that ended without telling (the connection was aborted by a
 * drain, or a TLS fallback): the destination is DOWN again, due at once. */
void snd_dest_probe_abandoned(snd_dests *ds, const char *key, int64_t now_ms);

snd_dest_state snd_dest_state_of(snd_dests *ds, const char *key);
/* The reply that last marked it down (NULL when UP or unknown); borrowed. */
const snd_result *snd_dest_why(snd_dests *ds, const char *key);
int64_t snd_dest_down_until(snd_dests *ds, const char *key);

void snd_dest_hold(snd_dests *ds, const char *key, int64_t now_ms);
void snd_dest_unhold(snd_dests *ds, const char *key, int64_t now_ms);
size_t snd_dest_held(snd_dests *ds, const char *key);
void snd_dest_done(snd_dests *ds, const char *key, int64_t now_ms);
double snd_dest_rate(snd_dests *ds, const char *key, int64_t now_ms);

/* Entries known, and of them DOWN or PROBING. */
size_t snd_dests_count(const snd_dests *ds);
size_t snd_dests_down(const snd_dests *ds);
/* Free idle entries; returns how many were freed. */
size_t snd_dests_sweep(snd_dests *ds, int64_t now_ms);

#endif
