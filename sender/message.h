/*
 * message - the bytes the sender puts after DATA, and the facts about them
 * the session needs.
 *
 * snd_msg_build() produces one job's message: the raw bytes of the job, or
 * its template rendered with the job's variables (the caller looks the
 * compiled template up; NULL when the job is raw); line ends normalised to
 * CRLF; Message-ID (sl_message_id(job id, From domain)) and Date added when
 * absent. On failure returns SL_ETEMPLATE / SL_EINVAL with *err set
 * (malloc'd, caller frees). out is reset first; the caller owns it.
 *
 * snd_msg_dotstuff() appends msg to out with every line that starts with
 * "." doubled (RFC 5321 4.5.2), a CRLF added if the message does not end
 * with one, and the terminating ".\r\n".
 *
 * snd_msg_has_8bit() says whether any byte is >= 0x80 (8BITMIME wanted);
 * snd_msg_needs_smtputf8() whether the envelope (sender or a recipient) is
 * not ASCII or a header field of the message is (RFC 6531/6532).
 *
 * snd_msg_from_domain() copies the lower-cased domain of the From header
 * field's first address into out (0 or SL_ENOTFOUND).
 *
 * snd_msg_has_field() says whether the header section has a field of that
 * name (case-insensitive).
 *
 * snd_msg_list_unsub() puts List-Unsubscribe (the one-click URL
 * <url_base>/u/TOKEN and, when mailto_domain is set, the address
 * unsub+TOKEN@mailto_domain) and List-Unsubscribe-Post: List-Unsubscribe=
 * One-Click (RFC 8058) at the top of msg's header section, where DKIM
 * signing (dkim.c signs both when present) finds them. A message that has
 * a List-Unsubscribe field already is left as it is and 1 returned (its
 * author chose the link); else 0.
 *
 * Pure functions; any thread.
 */
#ifndef SLUICE_SND_MESSAGE_H
#define SLUICE_SND_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "template.h"
#include "util.h"
#include "wire.h"

int snd_msg_build(const sl_job *job, const sl_tmpl *tmpl, int64_t now_ms, sl_buf *out,
                  char **err);
void snd_msg_dotstuff(const char *msg, size_t len, sl_buf *out);
bool snd_msg_has_8bit(const char *msg, size_t len);
bool snd_msg_needs_smtputf8(const char *mail_from, char *const *rcpts, size_t n_rcpts,
                            const char *msg, size_t len);
int snd_msg_from_domain(const char *msg, size_t len, char *out, size_t outsz);
bool snd_msg_has_field(const char *msg, size_t len, const char *name);
int snd_msg_list_unsub(sl_buf *msg, const char *url_base, const char *mailto_domain,
                       const char *token);

#endif
