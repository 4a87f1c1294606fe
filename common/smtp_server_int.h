/*
 * smtp_server_int - what the two halves of the SMTP server engine share;
 * no other module includes it.
 *
 * smtp_server.c owns the sessions' lifetime: the state machine's one
 * entry (smtpd__enter_state), replies and output, questions to the
 * program (hooks), the transport (libuv, TLS) and the server.
 * smtp_server_cmd.c owns the protocol: it turns buffered input into
 * commands, the message body and replies (smtpd__session_process).
 *
 * Threads and memory: as smtp_server.h, everything belongs to the thread
 * running the server's loop; a session and its buffers are the server's.
 */
#ifndef SLUICE_SMTP_SERVER_INT_H
#define SLUICE_SMTP_SERVER_INT_H

#include "smtp_server.h"
#include "tls.h"
#include "util.h"

#define SMTPD_LINE_MAX 512    /* command line incl. CRLF (RFC 5321 4.5.3.1.4) */
#define SMTPD_TEXT_MAX 1000   /* text line incl. CRLF (RFC 5321 4.5.3.1.6) */
#define SMTPD_PATH_MAX 256    /* path incl. <> (RFC 5321 4.5.3.1.3) */
#define SMTPD_READ_HIGH 65536 /* stop reading while a question waits */
/* Stop processing input, and reading, while this much output is queued
 * for a client that does not read its replies; resume once it is half
 * drained. Without it a client pipelining commands makes replies pile up
 * in memory without bound. */
#define SMTPD_OUT_HIGH 65536
#define SMTPD_OUT_LOW (SMTPD_OUT_HIGH / 2)

typedef enum {
    S_INIT,       /* connected, on_connect not answered yet */
    S_CONNECTED,  /* banner sent, waiting for EHLO/HELO */
    S_HELO,       /* greeted, no transaction */
    S_MAIL,       /* MAIL accepted, no recipient yet */
    S_RCPT,       /* at least one recipient */
    S_DATA,       /* reading the message */
    S_AUTH_PLAIN, /* waiting for the PLAIN response */
    S_AUTH_USER,  /* LOGIN: waiting for the user name */
    S_AUTH_PASS,  /* LOGIN: waiting for the password */
    S_CLOSING,    /* final smtpd__reply queued; close once written */
    S_CLOSED
} smtpd_state;

/* The states by name, for log lines. */
extern const char *const smtpd__state_names[];

typedef enum { Q_NONE, Q_CONNECT, Q_MAIL, Q_RCPT, Q_DATA, Q_AUTH } smtpd_question;

typedef struct smtpd_listener {
    uv_tcp_t tcp;
    smtpd_server *srv;
    smtpd_tls_mode mode;
    struct smtpd_listener *next;
} smtpd_listener;

typedef struct ip_count {
    char ip[48];
    unsigned n;
    struct ip_count *next;
} ip_count;

struct smtpd_server {
    uv_loop_t *loop;
    smtpd_config cfg;
    char *hostname;
    smtpd_hooks hooks;
    smtpd_listener *listeners;
    smtpd_session *sessions; /* open (not yet closed) sessions */
    size_t nsessions;        /* allocated, closed or not */
    ip_count *ips;
    smtpd_stats stats;
    int closing_handles;
    bool closing;
    void (*close_cb)(smtpd_server *, void *);
    void *close_arg;
    char rbuf[65536]; /* one loop thread: reads never overlap */
};

struct smtpd_session {
    smtpd_server *srv;
    smtpd_tls_mode mode;
    uv_tcp_t tcp;
    uv_timer_t idle;
    uv_timer_t delay;
    uv_timer_t deadline; /* the command line or DATA phase under way */
    int handles_open;
    int refs;
    bool detached;
    bool processing;
    bool reading;
    bool delay_armed;
    bool deadline_armed;
    bool out_blocked; /* input waits until the client reads its replies */
    smtpd_state state;
    smtpd_state auth_return;
    smtpd_question q;
    char *q_arg; /* the address asked about */
    int delay_code;
    char *delay_text;
    unsigned errors;
    bool skip_line; /* discarding the rest of an overlong command line */
    int writes_pending;
    size_t write_bytes; /* octets handed to uv_write and not yet written */

    sl_tls *tls;
    sl_buf in;   /* plaintext input not yet processed */
    sl_buf out;  /* replies not yet flushed */
    sl_buf dout; /* detached sessions: what was "sent" */

    /* the envelope and the strings it points into */
    smtpd_envelope env;
    char *helo, *from, *auth_user, *login_user;
    char **rcpt;
    size_t rcpt_cap;
    char peer[72], peer_ip[48], local[72];
    ip_count *ipc;

    /* DATA parsing */
    sl_buf msg;
    size_t line_len; /* octets of the current line consumed so far */
    size_t data_bytes;
    bool bad_newline, bad_nul, long_line, too_big;

    void *user;
    smtpd_session *next, *prev;
};

/* smtp_server.c */
void smtpd__enter_state(smtpd_session *s, smtpd_state st);
/* Point the envelope at the session's current strings. */
void smtpd__env_sync(smtpd_session *s);
/* End the transaction: forget the sender, recipients and message. */
void smtpd__trx_reset(smtpd_session *s);
/* Queue "<code> <text>" (text starts with the enhanced code). */
void smtpd__reply(smtpd_session *s, int code, const char *text);
/* A reply to a bad command: counts towards max_errors, then 421. */
void smtpd__reply_error(smtpd_session *s, int code, const char *text);
void smtpd__session_flush(smtpd_session *s);
/* Ask the program a question (a hook); arg (owned, may be NULL) is kept
 * until it is answered. */
void smtpd__ask(smtpd_session *s, smtpd_question q, char *arg);
void smtpd__session_read_start(smtpd_session *s);
void smtpd__session_close(smtpd_session *s);

/* smtp_server_cmd.c */
/* Octets arrived: arm the command deadline when they start a line. */
void smtpd__deadline_read(smtpd_session *s);
/* Turn buffered input into commands and replies until a question is
 * outstanding, the input runs dry or the client stops reading. */
void smtpd__session_process(smtpd_session *s);

#endif
