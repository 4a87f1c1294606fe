/*
 * smtp_reply - the one home of an SMTP reply in sluice: its type and its
 * parser. The sender parses what a server says with it; delivery-error
 * classification (common/trouble.c), outcomes and the scheduler's backoff
 * rules all read an sl_reply.
 *
 * sl_reply_parse() parses one complete SMTP reply (RFC 5321 4.2, possibly
 * multi-line) from the front of a buffer, strictly: every line must be
 * three digits 2xx-5xx, all the same, then '-' (more follow), ' ' or the
 * line end; lines end in CRLF (a bare LF is tolerated); no NUL; at most
 * SL_REPLY_MAX_LINES lines of SL_REPLY_MAX_LINE octets. An enhanced status
 * code (RFC 3463) whose class matches the reply's is split out of the first
 * line and stripped from the others. It returns 0 and sets *used to the
 * octets consumed, SL_EAGAIN when the buffer ends inside the reply (read
 * more), or SL_EPARSE for a malformed reply. The reply's text (the lines'
 * texts joined by "\n") and its raw form (what the server said, every
 * line with its code, CRs dropped, "\n" between lines: what events and
 * logs carry) are malloc'd and owned by the sl_reply: sl_reply_free()
 * releases them.
 *
 * sl_reply_of() rebuilds a reply from the code, enhanced code and text an
 * event or a session carries, where the text may still hold each line's
 * "421-" / "421 " prefix and the repeated enhanced code (what the server
 * said, verbatim) or be a plain text sluice wrote itself: a text that
 * parses as a reply with that code is parsed with sl_reply_parse(), any
 * other is taken as one text. Its raw form is the text as given. *out
 * owns its strings (sl_reply_free()).
 *
 * sl_reply_copy() makes dst a deep copy of src (dst's old strings are
 * released; dst starts zeroed or as a reply).
 *
 * sl_reply_rule_text() renders the reply as rules see it: "CODE ENH TEXT"
 * ("CODE TEXT" without an enhanced code), lines joined by spaces, appended
 * to *b. Bounce rules and backoff rules both match this one form.
 *
 * All functions are pure; any thread may call them.
 */
#ifndef SLUICE_SMTP_REPLY_H
#define SLUICE_SMTP_REPLY_H

#include <stddef.h>

#include "util.h"

#define SL_REPLY_MAX_LINES 64
#define SL_REPLY_MAX_LINE 2048

typedef struct sl_reply {
    int code;     /* 200..599 */
    char enh[16]; /* "5.1.1", or "" */
    char *text;   /* the lines' texts joined by "\n"; owned */
    size_t text_len;
    int lines;
    char *raw;    /* as said: each line with its code, "\n" between; owned */
} sl_reply;

int sl_reply_parse(const char *buf, size_t len, sl_reply *out, size_t *used);
void sl_reply_of(int code, const char *enh, const char *text, sl_reply *out);
void sl_reply_copy(sl_reply *dst, const sl_reply *src);
void sl_reply_rule_text(const sl_reply *r, sl_buf *b);
void sl_reply_free(sl_reply *r);

#endif
