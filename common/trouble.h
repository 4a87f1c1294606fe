/*
 * trouble - the one place that decides delivery-error policy (like
 * Postfix's smtp_trouble.c): given what happened at which stage of an SMTP
 * session, whether it is success, a deferral (of one recipient, of the
 * message, or of everything on the connection), a reason to try the next
 * MX host, or a bounce, and with which bounce class, hard or soft.
 *
 * Replies are sl_reply (common/smtp_reply.h), parsed there.
 *
 * One classification policy, in this order: the operator's rules
 * (cfg->bounce_rules, POSIX extended regexes, case-insensitive, matched
 * against "CODE ENH TEXT", or "CODE TEXT" when the reply has no enhanced
 * code, with all the lines of a multi-line reply joined by spaces), then
 * the built-in table of real replies (enhanced codes and the large
 * receivers' wordings, in trouble.c), then the catch-all: "unknown", soft.
 * sl_trouble_new() compiles them once. A 4xx is never hard. An invalid regex
 * is SL_ECONFIG with *err (caller frees). The sl_trouble is immutable:
 * every thread may call sl_trouble_decide() on it at once.
 *
 * The policy (r = reply, by stage):
 *   - connect, greeting, ehlo, starttls/tls: network errors, timeouts,
 *     malformed replies and any 4xx/5xx are NEXT_MX, scope connection; a
 *     5xx there means bounce (soft, classified) if no MX is left,
 *     otherwise defer (v->last_mx_action).
 *   - 421 at any stage: every job on the connection is deferred and the
 *     connection closed (NEXT_MX before MAIL FROM).
 *   - mail: 4xx defers the message, 5xx bounces it. rcpt: per recipient.
 *     data (the 354 wait) and dot: per message.
 *   - network error or timeout from MAIL on: defer everything on the
 *     connection; after the final dot the message may have been accepted,
 *     so it is deferred with possible_duplicate.
 *   - rset and quit failures affect no job; the connection is closed.
 *   - null MX (RFC 7505, found by DNS): bounce the message, hard, bad-domain.
 */
#ifndef SLUICE_TROUBLE_H
#define SLUICE_TROUBLE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "smtp_reply.h"
#include "wire.h"

typedef enum {
    SL_STAGE_CONNECT = 0,
    SL_STAGE_GREETING,
    SL_STAGE_EHLO,     /* EHLO or the HELO fallback */
    SL_STAGE_STARTTLS, /* the STARTTLS command and the TLS handshake */
    SL_STAGE_MAIL,
    SL_STAGE_RCPT,
    SL_STAGE_DATA, /* DATA and its 354, and sending the content */
    SL_STAGE_DOT,  /* waiting for the reply to the final "." */
    SL_STAGE_RSET,
    SL_STAGE_QUIT,
} sl_smtp_stage;

typedef enum {
    SL_COND_REPLY = 0, /* a reply arrived: see r */
    SL_COND_TIMEOUT,
    SL_COND_NETWORK,   /* refused, reset, closed by the peer */
    SL_COND_TLS,       /* handshake or certificate failure */
    SL_COND_PROTOCOL,  /* a malformed reply (sl_reply_parse() said SL_EPARSE) */
    SL_COND_NULL_MX,   /* the domain publishes a null MX */
} sl_smtp_cond;

typedef enum {
    SL_ACT_OK = 0,  /* go on */
    SL_ACT_DEFER,   /* temporary: the affected jobs go to a retry topic */
    SL_ACT_BOUNCE,  /* permanent: BOUNCED event, no retry */
    SL_ACT_NEXT_MX, /* this host failed before a transaction: try the next */
} sl_trouble_action;

typedef enum {
    SL_SCOPE_NONE = 0,   /* no job is affected */
    SL_SCOPE_RECIPIENT,  /* this recipient only */
    SL_SCOPE_MESSAGE,    /* every recipient of the current message */
    SL_SCOPE_CONNECTION, /* every job on the connection; close it */
} sl_trouble_scope;

typedef struct sl_trouble_verdict {
    sl_trouble_action action;
    sl_trouble_scope scope;
    sl_trouble_action last_mx_action;  /* NEXT_MX with no MX left: DEFER or BOUNCE */
    bool close;                        /* QUIT (if still possible) and close */
    bool possible_duplicate;           /* the message may have been delivered */
    bool hard;                         /* bounce: the address is bad, suppress it */
    Sluice__V1__BounceClass bounce_class; /* also set on deferrals, for events */
    int rule;                          /* cfg->bounce_rules index matched, or -1 */
    const char *reason;                /* static, short: "recipient rejected" */
} sl_trouble_verdict;

typedef struct sl_trouble sl_trouble;

int sl_trouble_new(const sl_config *cfg, sl_trouble **out, char **err);
void sl_trouble_free(sl_trouble *t);

/* r may be NULL unless cond is SL_COND_REPLY. */
void sl_trouble_decide(const sl_trouble *t, sl_smtp_stage stage, sl_smtp_cond cond,
                       const sl_reply *r, sl_trouble_verdict *v);
/* Only the classification of a reply: class, hard (never for 4xx), and
 * the rule index (-1 for the built-in table or none). */
Sluice__V1__BounceClass sl_trouble_classify(const sl_trouble *t, const sl_reply *r, bool *hard,
                                            int *rule);

const char *sl_smtp_stage_name(sl_smtp_stage s); /* "rcpt" */
const char *sl_trouble_action_name(sl_trouble_action a); /* "defer" */

#endif
