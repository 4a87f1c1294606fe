/*
 * submit_msg - what sluice-submit reads from and adds to a message.
 *
 * sub_msg_from_domains() finds the From header field in the header section
 * of msg (CRLF line ends, as the SMTP engine hands it over), unfolds it,
 * drops comments and display names, and returns the domain of every
 * mailbox in it, lower-cased, as a malloc'd array of malloc'd strings the
 * caller frees with sub_strv_free(). Returns 0; SL_ENOTFOUND when there is
 * no From field; SL_EEXISTS when there is more than one (a second From is
 * how a sender hides the address a filter did not check); SL_EPARSE when a
 * mailbox has no domain.
 *
 * sub_msg_received() appends one Received header field (RFC 5321 4.4,
 * with ESMTPSA/ESMTPS/ESMTPA per RFC 3848) to b, folded below 78 columns,
 * CRLF terminated: who connected (HELO name, IP), which host took it, the
 * TLS version and cipher, the queue id, the recipient when there is just
 * one, and the date (RFC 5322, UTC). Strings come from the envelope; any
 * may be NULL.
 */
#ifndef SLUICE_SUBMIT_MSG_H
#define SLUICE_SUBMIT_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

int sub_msg_from_domains(const char *msg, size_t len, char ***out, size_t *n);
void sub_strv_free(char **v, size_t n);

typedef struct sub_received {
    const char *helo;
    const char *peer_ip;
    const char *by;          /* our host name */
    bool tls, auth, esmtp;
    const char *tls_version; /* "TLSv1.3" */
    const char *tls_cipher;
    const char *id;          /* queue id */
    const char *rcpt;        /* the single recipient, or NULL */
    int64_t now_ms;          /* wall clock */
} sub_received;

void sub_msg_received(sl_buf *b, const sub_received *r);

#endif
