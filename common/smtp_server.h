/*
 * smtp_server - the server side of SMTP on a libuv loop, shared by
 * sluice-submit, the test sink and `sluice capture`.
 *
 * The engine owns the protocol; the program supplies hooks that decide.
 * It parses strictly, because it faces the network:
 *   - command lines end in CRLF only; a bare CR or LF gets
 *     "500 5.5.2 Bare LF/CR not allowed" and the connection is closed
 *     (a peer that frames lines differently from us is how SMTP smuggling
 *     starts); command lines are at most 512 octets with CRLF;
 *   - in DATA only CRLF.CRLF ends the message; lines are at most 1000
 *     octets with CRLF; a bare CR, bare LF or NUL anywhere in the message
 *     rejects it (550 5.6.0) once its end arrives: it is never handed on;
 *     leading dots are unstuffed; the size limit is enforced on the SIZE
 *     parameter and on the bytes received (552 5.3.4);
 *   - at most max_rcpt recipients (452 4.5.3); PIPELINING: commands are
 *     processed in order and replies are sent in one batch when the input
 *     runs dry or a reply must wait; bytes pipelined after STARTTLS are
 *     discarded (CVE-2011-0411); an idle timeout (421 4.4.2) and a limit of
 *     connections per client IP (421 4.7.0); every reply after the greeting
 *     carries an enhanced status code;
 *   - resources: while more than 64 KiB of replies wait for a client that
 *     does not read them, its input is neither processed nor read (so a
 *     pipelining client cannot make replies pile up in memory); a command
 *     line (or a TLS handshake and the line after it) must arrive whole
 *     within command_timeout_ms of its first octet and a message within
 *     data_timeout_ms of the 354 (421 4.4.2: the idle
 *     timer restarts on every octet, so alone it cannot stop a client that
 *     trickles); a client that does not take its final reply within an
 *     idle timeout is disconnected.
 *
 * Hooks and replies. Each hook asks a question that the program answers
 * by calling smtpd_reply() exactly once, either before the hook returns or
 * later from the same loop (sluice-submit answers DATA only once Kafka has
 * acknowledged). While an answer is outstanding the session reads no more
 * commands. smtpd_reply_after() answers after a delay (a uv timer). A NULL
 * hook means "accept". The reply text starts with the enhanced code
 * ("2.1.5 Ok"); the engine formats "<code> <text>\r\n". A 421 reply from
 * any hook is sent and the connection closed.
 *   on_connect  a client connected (peer IP in the envelope); 2xx sends
 *               the banner, anything else is sent instead and closes.
 *   on_mail     MAIL FROM passed the checks; 2xx starts the transaction.
 *   on_rcpt     RCPT TO passed the checks; 2xx adds the recipient.
 *   on_data     the message ended cleanly; msg/len (dot-unstuffed, CRLF
 *               line ends, no Received header added) stay valid until the
 *               reply is given; 2xx counts as accepted.
 *   on_auth     AUTH PLAIN/LOGIN decoded; 235 authenticates the session.
 *               AUTH is offered only over TLS and only with this hook.
 *   on_quit     the client sent QUIT; a notice, called just before the
 *               engine answers 221 and closes (no reply is expected).
 *   on_close    the connection is gone (called once, never with a reply
 *               outstanding from the engine's side). A hook whose answer is
 *               still outstanding must still call smtpd_reply() (it is then
 *               discarded); the session handle stays valid until then.
 *
 * Memory: the server owns its sessions; strings in an smtpd_envelope are
 * owned by the session and valid until the transaction ends (RSET, MAIL
 * after a reply to DATA, close). Hooks must not keep them.
 *
 * Threads: a server and its sessions belong to the thread running its loop.
 */
#ifndef SLUICE_SMTP_SERVER_H
#define SLUICE_SMTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

typedef struct smtpd_server smtpd_server;
typedef struct smtpd_session smtpd_session;

typedef enum {
    SMTPD_PLAIN = 0, /* no TLS on this listener */
    SMTPD_STARTTLS,  /* offer STARTTLS (needs config.tls_ctx) */
    SMTPD_TLS        /* implicit TLS from the first byte (port 465) */
} smtpd_tls_mode;

typedef struct smtpd_envelope {
    const char *helo;  /* EHLO/HELO argument, NULL before it */
    bool esmtp;        /* EHLO rather than HELO */
    const char *from;  /* reverse path without <>, "" for the null sender */
    const char **rcpt; /* accepted recipients, without <> */
    size_t nrcpt;
    int64_t size_declared;   /* SIZE=, or -1 */
    bool body_8bit;          /* BODY=8BITMIME */
    bool smtputf8;           /* SMTPUTF8 given with MAIL */
    bool tls;                /* the session is under TLS */
    const char *tls_version; /* "" without TLS */
    const char *tls_cipher;
    const char *auth_user; /* NULL unless authenticated */
    const char *peer;      /* "ip:port" ("[ip6]:port") of the client */
    const char *peer_ip;   /* the client IP alone */
    const char *local;     /* "ip:port" the client connected to */
} smtpd_envelope;

typedef struct smtpd_hooks {
    void *arg;
    void (*on_connect)(void *arg, smtpd_session *s);
    void (*on_mail)(void *arg, smtpd_session *s, const char *from);
    void (*on_rcpt)(void *arg, smtpd_session *s, const char *rcpt);
    void (*on_data)(void *arg, smtpd_session *s, const char *msg, size_t len);
    void (*on_auth)(void *arg, smtpd_session *s, const char *user, const char *pass);
    void (*on_quit)(void *arg, smtpd_session *s);
    void (*on_close)(void *arg, smtpd_session *s);
} smtpd_hooks;

/* Zero means the default given in brackets; booleans default to false. */
typedef struct smtpd_config {
    const char *hostname;     /* banner and EHLO name [gethostname()] */
    size_t max_message_size;  /* SIZE limit in octets [35 MiB] */
    unsigned max_rcpt;        /* recipients per message [100] */
    unsigned max_conn;        /* connections in all [1000] */
    unsigned max_conn_per_ip; /* connections per client IP [20] */
    unsigned max_errors;      /* bad commands before 421 [10] */
    uint64_t idle_timeout_ms; /* idle time before 421 4.4.2 [300000] */
    uint64_t command_timeout_ms; /* a command line, from its first octet [60000] */
    uint64_t data_timeout_ms;    /* the message, from the 354 [600000] */
    bool no_pipelining;       /* do not advertise PIPELINING */
    bool no_smtputf8;         /* do not advertise or accept SMTPUTF8 */
    bool require_tls;         /* MAIL/AUTH only after TLS (530 5.7.0) */
    bool require_auth;        /* MAIL only after AUTH (530 5.7.0) */
    SSL_CTX *tls_ctx;         /* server context, not owned; NULL: no TLS */
} smtpd_config;

typedef struct smtpd_stats {
    uint64_t connections; /* accepted since start */
    uint64_t active;      /* open now */
    uint64_t refused;     /* refused by limits or on_connect */
    uint64_t messages;    /* messages whose DATA got a 2xx */
    uint64_t rejected;    /* messages whose DATA got another reply */
} smtpd_stats;

/* The config is copied (hostname too); tls_ctx is referenced, not owned,
 * and must outlive the server. Never returns NULL. */
smtpd_server *smtpd_server_new(uv_loop_t *loop, const smtpd_config *cfg, const smtpd_hooks *hooks);
/* Listen on "host:port" ("[::1]:port"; port 0 picks one). *bound_port (if
 * not NULL) receives the port. Returns 0, SL_EADDRESS, SL_EINVAL (TLS mode
 * without tls_ctx) or a negated errno (uv error). */
int smtpd_server_listen(smtpd_server *srv, const char *hostport, smtpd_tls_mode mode,
                        int *bound_port);
/* Stop listening and drop every session (on_close is called for each);
 * cb runs once every handle is closed, then the caller frees the server
 * with smtpd_server_free(). */
void smtpd_server_close(smtpd_server *srv, void (*cb)(smtpd_server *srv, void *arg), void *arg);
void smtpd_server_free(smtpd_server *srv);
void smtpd_server_stats(smtpd_server *srv, smtpd_stats *out);

/* Answer the outstanding question. text begins with the enhanced code and
 * must not contain CR or LF (they are replaced by spaces). Panics if no
 * question is outstanding. */
void smtpd_reply(smtpd_session *s, int code, const char *text);
/* The same, sent delay_ms from now. */
void smtpd_reply_after(smtpd_session *s, uint64_t delay_ms, int code, const char *text);
/* Close the connection now, without a reply (fault injection). An
 * outstanding question must still be answered with smtpd_reply(). */
void smtpd_session_drop(smtpd_session *s);

const smtpd_envelope *smtpd_session_envelope(smtpd_session *s);
smtpd_server *smtpd_session_server(smtpd_session *s);
/* One pointer of the program's own per session; NULL at first. */
void smtpd_session_set_data(smtpd_session *s, void *data);
void *smtpd_session_data(smtpd_session *s);
/* True once the connection is gone (replies are then discarded). */
bool smtpd_session_closed(smtpd_session *s);

/*
 * The line machinery underneath, exposed for unit tests: feed raw bytes
 * of one connection (as if read from the socket, plaintext) to a session
 * that is not attached to a socket, and collect what it would send.
 * smtpd_session_new_detached() builds such a session (peer "127.0.0.1:1");
 * it sends its banner (via on_connect) into the output at once.
 * smtpd_session_feed() processes bytes and returns 0, or SL_ECLOSED once the
 * session has closed. smtpd_session_output() returns and clears what the
 * session has written so far, NUL terminated, its length in *len if len is
 * not NULL (ciphertext may hold NULs); the caller frees it.
 */
smtpd_session *smtpd_session_new_detached(smtpd_server *srv);
int smtpd_session_feed(smtpd_session *s, const void *data, size_t n);
char *smtpd_session_output(smtpd_session *s, size_t *len);
void smtpd_session_free_detached(smtpd_session *s);

#endif
