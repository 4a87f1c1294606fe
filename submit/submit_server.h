/*
 * submit_server - sluice-submit: the SMTP submission relay on one libuv
 * loop, between the strict SMTP engine (smtp_server.h) and libsluice.
 *
 * Policy, in the order a session meets it:
 *   - AUTH PLAIN/LOGIN only over TLS (the engine offers it only there);
 *     MAIL before AUTH is 530 5.7.0: never an open relay. Passwords are
 *     checked against the users file (submit_users.h) in the libuv thread
 *     pool, so one slow argon2 hash never stalls other sessions, at most
 *     submit.auth_workers at once with submit.auth_queue waiting (an AUTH
 *     beyond them gets 454 4.7.0 at once: each check holds 64 MiB and a
 *     core, so a crowd of guessers must not multiply them); an unknown
 *     user is checked against a dummy hash so timing does not tell names
 *     apart. A failure answers 535 5.7.8 after auth_fail_delay_ms; the
 *     auth_max_failures-th failure in a session, or any AUTH from an IP
 *     with auth_ip_failures failures in auth_ip_window_ms, answers 421 and
 *     closes. Passwords are never logged and are wiped after use.
 *   - MAIL FROM: a valid address whose domain is in the user's domains
 *     (else 550 5.7.1); the null sender is refused; a user over its rate
 *     gets 451 4.7.1 here already.
 *   - RCPT TO: a valid address (else 553 5.1.3); the engine caps the count
 *     (452 4.5.3).
 *   - SIZE: sub_server_size_limit(); a MAIL with a larger SIZE= and a
 *     larger message are 552 5.3.4 (the engine enforces both).
 *   - DATA: the engine rejects bare CR/LF/NUL and oversize messages. Then
 *     the From header's domains must be allowed (unless the user has
 *     check_from=no), else 550 5.7.1; the rate token is taken (451 4.7.1);
 *     a Received header is prepended and the message (raw bytes, CRLF) is
 *     published as one Job per recipient domain (tenant and pool from the
 *     user). The reply is "250 2.0.0 Ok: queued as ID..." with every job
 *     id, sent only once Kafka acknowledged every job. When a job fails or
 *     ack_timeout_ms passes first, the answer is 451 4.3.0: the client
 *     retries, so a job acknowledged later is at worst a duplicate, never a
 *     loss. A permanent (5xx) answer is given only when nothing was handed
 *     to Kafka.
 *
 * Ownership: the server borrows cfg, users and tls_ctx (they must outlive
 * it; sub_server_set_users() swaps the table, and the old one may be freed
 * once the call returns). It owns its libsluice client, SMTP server, timers
 * and the transactions waiting for Kafka.
 *
 * sub_server_close() stops listening, drops sessions, waits for every
 * answer still owed (at most ack_timeout_ms), flushes the client for up to
 * flush_ms and calls cb; then sub_server_free(). One loop thread.
 */
#ifndef SLUICE_SUBMIT_SERVER_H
#define SLUICE_SUBMIT_SERVER_H

#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "submit_users.h"

#include <stddef.h>

typedef struct sub_server sub_server;

/* Zero means the default in brackets. */
typedef struct sub_opts {
    const sl_config *cfg;        /* kafka + submit sections */
    const sub_users *users;
    SSL_CTX *tls_ctx;            /* NULL: no TLS (then nobody can AUTH) */
    const char *hostname;        /* banner, Received [gethostname()] */
    int64_t ack_timeout_ms;      /* Kafka acknowledgement wait [30000] */
    unsigned auth_max_failures;  /* per session, then 421 [3] */
    unsigned auth_ip_failures;   /* per IP in the window, then 421 [10] */
    int64_t auth_ip_window_ms;   /* [300000] */
    int64_t auth_fail_delay_ms;  /* delay of a 535; negative: none [1000] */
    int64_t flush_ms;            /* flush on close [5000] */
} sub_opts;

typedef struct sub_stats {
    uint64_t accepted;       /* messages answered 250 */
    uint64_t jobs;           /* jobs acknowledged */
    uint64_t kafka_timeouts; /* messages answered 451 for Kafka */
    uint64_t auth_ok, auth_failed;
    uint64_t auth_busy; /* AUTH answered 454: no worker free, queue full */
    uint64_t rate_limited;
    uint64_t policy_rejected; /* 550 5.7.1 for domains */
    uint64_t too_big;         /* 552 5.3.4 after Kafka refused a job's size */
} sub_stats;

/* The largest message sluice-submit takes, the SIZE it announces: the
 * configured submit.max_message_size, capped by the size budget so that
 * the message, its Received field and its envelope make a job within
 * scheduler.max_job_bytes (budget.h). Larger declared SIZE= is 552 5.3.4
 * at MAIL, a larger message 552 5.3.4 after DATA: never accepted, then
 * lost on the way. */
size_t sub_server_size_limit(const sl_config *cfg);

/* NULL with *err (caller frees) when the Kafka client cannot be made. */
sub_server *sub_server_new(uv_loop_t *loop, const sub_opts *o, char **err);
/* spec: "host:port [plain|starttls|tls]". Returns 0 or a negative error. */
int sub_server_listen(sub_server *s, const char *spec, int *bound_port);
void sub_server_set_users(sub_server *s, const sub_users *users);
void sub_server_close(sub_server *s, void (*cb)(sub_server *s, void *arg), void *arg);
void sub_server_free(sub_server *s);
void sub_server_stats(const sub_server *s, sub_stats *out);

#endif
