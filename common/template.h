/*
 * template - compiled message templates and the small message builders.
 *
 * A template body is an RFC 5322 message (header fields, a blank line, the
 * body; MIME multipart allowed) with {{name}} placeholders anywhere after
 * the field names. Names are [A-Za-z0-9_.-]+, at most 128 bytes, with
 * optional spaces inside the braces: "{{ first_name }}".
 *
 * sl_tmpl_compile() validates a body once (the CLI uses it to refuse a bad
 * template before publishing it, the sender to build its cache): line ends
 * are normalised to CRLF, the header section must be well formed and carry
 * a From field, every "{{" must open a valid placeholder, and a placeholder
 * may not be part of a field name. On failure it returns SL_ETEMPLATE and
 * sets *err to a malloc'd message ("line 3: ...") the caller frees.
 *
 * sl_tmpl_render() writes one recipient's message into out (appended; the
 * caller resets it). Rules, checked per value:
 *   - a variable the recipient lacks is an error naming it, never a blank;
 *   - in the header section a value with CR, LF, NUL or any other control
 *     character except TAB is an error (no header injection); non-ASCII
 *     values must be UTF-8 and are written as RFC 2047 encoded-words
 *     (=?UTF-8?B?...?= words, folded between words); ASCII values as they are.
 *     A placeholder that is the whole of a quoted string ("{{name}}" in a
 *     From display name) is re-quoted for ASCII values and becomes bare
 *     encoded-words otherwise, since encoded-words are not decoded inside
 *     quotes;
 *   - in the body values go in as they are, except that bare CR and bare
 *     LF become CRLF and NUL is refused. Lines starting with "." are left
 *     alone: the SMTP layer dot-stuffs;
 *   - no line may exceed 998 octets (RFC 5322 section 2.1.1): a leaf MIME
 *     part (or a non-multipart body) that has a longer line and a
 *     7bit/8bit/binary or no transfer encoding is re-encoded as
 *     quoted-printable, with Content-Transfer-Encoding replaced (and
 *     MIME-Version added to the message when missing); a header line that
 *     long is folded before white space, and is an error when it has none.
 * The output always uses CRLF and ends with CRLF. On error it returns
 * SL_ETEMPLATE with *err set (caller frees) and out holds garbage.
 *
 * The compiled template is immutable: any number of threads may render
 * from one sl_tmpl at once. Rendering allocates nothing beyond growing
 * `out` (and a scratch array when a template has more than 32 variables).
 *
 * sl_msg_ensure_headers() prepends Message-ID and Date when a message lacks
 * them, so every delivered copy carries a Message-ID unique to its job.
 * sl_msg_build_simple() builds the plain-text message of `sluice send`.
 * sl_rfc2047_encode() is exported for other header writers.
 */
#ifndef SLUICE_TEMPLATE_H
#define SLUICE_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct sl_tmpl sl_tmpl;

int sl_tmpl_compile(const char *body, size_t len, sl_tmpl **out, char **err);
void sl_tmpl_free(sl_tmpl *t);

/* The distinct variable names in order of first appearance; the array and
 * strings belong to the template. */
const char *const *sl_tmpl_vars(const sl_tmpl *t, size_t *n);
/* Whether variable i appears in the header section / in the body. */
bool sl_tmpl_var_in_header(const sl_tmpl *t, size_t i);
bool sl_tmpl_var_in_body(const sl_tmpl *t, size_t i);
/* The normalised (CRLF) template text, placeholders included. */
const char *sl_tmpl_text(const sl_tmpl *t, size_t *len);

/* Lookup: return true and point *value and *len at the value (which must stay
 * valid until render returns), or false when the recipient has no such
 * variable. */
typedef bool (*sl_tmpl_lookup_fn)(void *ctx, const char *name, const char **value, size_t *len);

int sl_tmpl_render(const sl_tmpl *t, sl_tmpl_lookup_fn lookup, void *ctx, sl_buf *out,
                   char **err);
/* The same with parallel arrays of NUL-terminated names and values (the
 * shape of a protobuf-c map); duplicates: the first wins. */
int sl_tmpl_render_arrays(const sl_tmpl *t, const char *const *names, const char *const *values,
                          size_t n, sl_buf *out, char **err);

/* Prepend "Message-ID: <id>" and "Date: <date_ms as RFC 5322, UTC>" for
 * whichever of the two the header section lacks. message_id may be given
 * with or without angle brackets. Returns 0, or SL_EINVAL when msg has no
 * header section or message_id holds CR/LF. */
int sl_msg_ensure_headers(sl_buf *msg, const char *message_id, int64_t date_ms);

/* Build a text/plain message: From, To (comma separated), Subject (RFC 2047
 * when not ASCII), Date (now), MIME-Version, Content-Type text/plain;
 * charset=utf-8 and Content-Transfer-Encoding 7bit, 8bit, or
 * quoted-printable when a line exceeds 998 octets. The body's line ends
 * are normalised to CRLF. No Message-ID: the sender adds one per job.
 * Appends to out. Returns 0, or SL_EINVAL with *err (caller frees) when a
 * header value holds a control character or the subject is not UTF-8. */
int sl_msg_build_simple(const char *from, const char *const *to, size_t n_to,
                        const char *subject, const char *body, size_t body_len, sl_buf *out,
                        char **err);

/* Append p as RFC 2047 B encoded-words in UTF-8, each at most 75 octets,
 * joined by "\r\n " (folding whitespace), never splitting a character.
 * p must be valid UTF-8 (sl_utf8_valid()). */
void sl_rfc2047_encode(sl_buf *out, const char *p, size_t n);
bool sl_utf8_valid(const char *p, size_t n);
/* RFC 5322 date-time in UTC: "Tue, 01 Jul 2025 12:00:00 +0000". out[40]. */
void sl_rfc5322_date(int64_t ms, char out[40]);

#endif
