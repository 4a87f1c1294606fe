/*
 * session - one SMTP client connection of the sender: a named state
 * machine (enum snd_state, one enter_state(), one read callback) in the
 * manner of OpenSMTPD's mta_session.c.
 *
 * snd_session_new() connects to target->ip:port (binding target->source_ip,
 * or through the SOCKS5 proxy target->socks5), reads the greeting, sends
 * EHLO (HELO when EHLO is refused), STARTTLS according to target->tls (TLS
 * over memory BIOs, common/tls.h; bytes that arrive with the 220 to
 * STARTTLS are discarded), EHLO again, and reports on_ready. Under `verify`
 * the certificate must chain to the trust store of target->tls_ctx and
 * name target->mx_host (sl_tls_verify), else the session ends with
 * SL_COND_TLS and "certificate verify failed: ..."; under the other
 * policies the result is only reported in txn->tls_verified/tls_verify.
 * With target->dane USABLE (DANE, sender/dane.h) the certificate is
 * checked against its TLSA records instead (sl_tls_dane). The owner (the
 * pool) then hands it one transaction at a time with snd_session_send().
 *
 * A transaction is MAIL FROM, RCPT TO for each recipient, DATA, the
 * dot-stuffed message and the final dot. With PIPELINING offered the
 * commands up to DATA go in one write (RFC 2920); on a reused connection
 * RSET goes first. SIZE= is given when the server announced SIZE, and a
 * message larger than the announced limit is refused locally (552 5.3.4);
 * BODY=8BITMIME when the body has 8-bit bytes and the server offers it;
 * SMTPUTF8 when the envelope needs it - a server without SMTPUTF8 gets no
 * commands and the recipients get 550 5.6.7 (synthesised, marked local).
 *
 * Results are per recipient (txn->results[i]): the RCPT reply when it was
 * refused, else the DATA or final-dot reply. When the connection fails or
 * times out in the middle, recipients not yet answered get a synthesised
 * 4xx reply (marked local) and, when the final dot had been sent without an
 * answer, txn->possible_duplicate is set. Timeouts are RFC 5321 4.5.3.2's
 * from target->timeouts, per state.
 *
 * Callbacks (loop thread): on_ready - idle and able to take a transaction;
 * on_txn_done - the transaction given to snd_session_send() is finished
 * (the txn belongs to the caller again); on_closed - the session is gone:
 * `why` says why when it ended abnormally (NULL for a clean QUIT), and
 * `established` whether it ever reached on_ready. A transaction still held
 * at that point gets on_txn_done first. After on_closed returns the session
 * frees itself.
 *
 * Memory: the target strings are copied. The txn and its strings (mail
 * from, recipients, message bytes) are owned by the caller and must stay
 * valid until on_txn_done; results are allocated by the session and freed by
 * snd_txn_reset().
 */
#ifndef SLUICE_SND_SESSION_H
#define SLUICE_SND_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "dane.h"
#include "trouble.h"

/* What became of a recipient or a session: the reply (said by the server,
 * or synthesised by sluice for a failure it saw itself: refused, timed
 * out, TLS, a local refusal), and where it happened, for
 * sl_trouble_decide(). The reply is the one reply type (common/
 * smtp_reply.h), parsed once when it arrived; owned. */
typedef struct snd_result {
    sl_reply reply;         /* code 0: none yet */
    sl_smtp_stage stage;
    sl_smtp_cond cond;      /* REPLY, or the network/timeout/TLS condition */
} snd_result;

/* A synthesised result at stage MAIL, condition REPLY (the caller may
 * change both): the reply is rebuilt from code, enh and text with
 * sl_reply_of(). */
void snd_result_set(snd_result *r, int code, const char *enh, const char *text);
void snd_result_copy(snd_result *dst, const snd_result *src);
void snd_result_clear(snd_result *r);

typedef struct snd_txn {
    const char *mail_from;
    char *const *rcpts;
    size_t n_rcpts;
    const char *msg;            /* unstuffed, CRLF, ends with CRLF */
    size_t msg_len;
    bool smtputf8;              /* the envelope or headers need SMTPUTF8 */
    bool body_8bit;

    /* results */
    snd_result *results;         /* n_rcpts */
    bool possible_duplicate;
    bool session_failed;        /* failed before any transaction command */
    snd_result session_reply;    /* when session_failed */
    char tls_protocol[16];
    char tls_cipher[64];
    bool tls_verified;          /* the certificate chained to the trust store
                                   and named the MX host */
    char tls_verify[80];        /* "ok" or why not; "" without TLS */
    char tls_note[256];         /* why a session allowed TLS went without it */
    int64_t smtp_ms;
    void *arg;
} snd_txn;

void snd_txn_reset(snd_txn *t);

typedef struct snd_target {
    const char *mx_host;        /* name, for SNI and events */
    const char *ip;             /* literal to connect to */
    uint16_t port;
    const char *source_ip;      /* NULL or "": do not bind */
    const char *ehlo;
    const char *socks5;         /* "host:port" or NULL */
    sl_tls_policy tls;
    sl_timeouts timeouts;
    SSL_CTX *tls_ctx;           /* referenced, not owned */
    const char *tls_note;       /* why tls is DISABLED here though the policy
                                   allowed it (the pool's plain-text
                                   fallback), for txn->tls_note; may be NULL */
    const snd_dane_answer *dane; /* NULL, or the MX host's secure TLSA answer
                                   (USABLE: the certificate must match a
                                   record; UNUSABLE: TLS without checks);
                                   tls is then VERIFY or REQUIRED. The
                                   session takes its own reference. */
} snd_target;

typedef struct snd_session snd_session;

typedef struct snd_session_cbs {
    void *arg;
    void (*on_ready)(void *arg, snd_session *s);
    void (*on_txn_done)(void *arg, snd_session *s, snd_txn *t);
    void (*on_closed)(void *arg, snd_session *s, const snd_result *why, bool established);
} snd_session_cbs;

snd_session *snd_session_new(uv_loop_t *loop, const snd_target *target,
                             const snd_session_cbs *cbs);
/* Start a transaction; only between on_ready and on_txn_done. */
void snd_session_send(snd_session *s, snd_txn *t);
/* QUIT politely (idle) or abort (busy); on_closed follows. */
void snd_session_quit(snd_session *s);
/* Transactions started on this connection. */
unsigned snd_session_txns(const snd_session *s);
/* True while the session can take a transaction: established, idle, and
 * not closing (a 421 or an idle timeout closes it before on_closed runs). */
bool snd_session_can_send(const snd_session *s);
/* The TLS handshake failed (the pool then retries in plain text when the
 * policy allows it). */
bool snd_session_tls_failed(const snd_session *s);
void *snd_session_data(const snd_session *s);
void snd_session_set_data(snd_session *s, void *data);

#endif
