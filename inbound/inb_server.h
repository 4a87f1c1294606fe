/*
 * inb_server - sluice-inbound on one libuv loop: the SMTP server (the one
 * engine, common/smtp_server.h, with its strict parsing) for the bounce and
 * feedback-loop domains, and what it makes of each mail it accepts.
 *
 * Policy, in the order a session meets it:
 *   - MAIL FROM: anything, the null sender first of all (bounces use it).
 *   - RCPT TO: only the domains of inbound.domains (when that is empty:
 *     verp.domain and those of verp.tenants) and of inbound.fbl; any other domain is 550 5.7.1: never a
 *     relay. In those domains only bounce+TOKEN, unsub+TOKEN and the
 *     inbound.fbl mailboxes exist (else 550 5.1.1). A token is not checked
 *     here: a forged one is accepted like a real one, so a forger learns
 *     nothing, and ignored at DATA.
 *   - DATA: the message is read (inb_report.h) and, per recipient:
 *       bounce+TOKEN: the VERP token (tenant, job id, recipient) opened with
 *         the key. A DSN or plain bounce whose entry (the token's recipient,
 *         else the first) says "failed" is a BOUNCED event, classified by the
 *         one policy (common/trouble.h: class, hard or soft) with stage
 *         "inbound"; "delayed" and "delivered" entries publish nothing (they
 *         are counted); an ARF report that reached a return path is a
 *         COMPLAINED event.
 *       unsub+TOKEN: the unsubscribe token; an UNSUBSCRIBED event with the
 *         tenant, recipient, campaign, job id and meta "list".
 *       an FBL mailbox: an ARF report of Feedback-Type abuse is a
 *         COMPLAINED event, mapped by the VERP return path it quotes
 *         (Original-Mail-From, else the original's Return-Path), else by the
 *         original's Message-ID (<job id@domain>, then without a tenant) and
 *         Original-Rcpt-To (else the original's To).
 *     A token that does not open (forged, or minted with another key) is
 *     ignored: counted in sluice_inbound_forged_total and logged once per
 *     interval; it never suppresses anything. The reply is 250 once Kafka
 *     has acknowledged every event of the message, 451 4.3.0 if any failed
 *     (the sending MTA retries: a duplicate at worst, never a loss).
 *
 * Ownership: the server borrows cfg, key and trouble (they outlive it) and
 * owns its SMTP server, its Kafka producer and the messages waiting for
 * Kafka. One loop thread.
 */
#ifndef SLUICE_INB_SERVER_H
#define SLUICE_INB_SERVER_H

#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "token.h"
#include "trouble.h"

typedef struct inb_server inb_server;

typedef struct inb_opts {
    const sl_config *cfg;
    const sl_token_key *key;
    const sl_trouble *trouble;
    const char *hostname; /* banner [gethostname()] */
} inb_opts;

typedef struct inb_stats {
    uint64_t messages; /* accepted (250) */
    uint64_t events;   /* events acknowledged by Kafka */
    uint64_t forged;   /* recipients whose token did not open */
} inb_stats;

/* NULL with *err (caller frees) when the Kafka producer cannot be made. */
inb_server *inb_server_new(uv_loop_t *loop, const inb_opts *o, char **err);
/* hostport "host:port"; 0 or a negative error (smtpd_server_listen()). */
int inb_server_listen(inb_server *s, const char *hostport, int *bound_port);
/* Stop listening, drop the sessions, flush Kafka (up to 10 s), then cb. */
void inb_server_close(inb_server *s, void (*cb)(inb_server *s, void *arg), void *arg);
void inb_server_free(inb_server *s);
void inb_server_stats(const inb_server *s, inb_stats *out);

#endif
