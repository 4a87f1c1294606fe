/*
 * mailbox - the one RFC 5321 / RFC 6531 mailbox validator in sluice.
 *
 * Mailbox = Local-part "@" Domain (RFC 5321 4.1.2). The local part is a
 * Dot-string or a Quoted-string of at most 64 octets; octets >= 0x80 are
 * allowed as UTF-8 (RFC 6531) and must be valid UTF-8. The domain is a
 * host name: labels of letters, digits and hyphens (and UTF-8 octets, a
 * U-label, unless SL_MBOX_ASCII), 1..63 octets each, no hyphen at either
 * end, no empty label, at most 255 octets. Flags make it stricter or
 * wider:
 *   SL_MBOX_LITERAL  the domain may be an address literal "[...]";
 *   SL_MBOX_ASCII    the domain is ASCII only (an A-label form);
 *   SL_MBOX_FQDN     two labels at least, and a top-level label that is
 *                    not all digits.
 * The whole mailbox is at most 254 octets.
 *
 * Each function returns 0 or SL_EADDRESS and, when why is not NULL, writes
 * the reason into why (wl octets): "local part starts with a dot", ...
 * sl_mailbox_check() checks a whole mailbox; sl_mailbox_split() refuses
 * control characters and angle brackets, finds
 * the local part (it ends at the first '@' outside quotes), sets
 * *local_len and checks it; sl_mailbox_local_check() checks a local part
 * [p, p+n); sl_mailbox_domain_check() a domain. Pure; any thread.
 */
#ifndef SLUICE_MAILBOX_H
#define SLUICE_MAILBOX_H

#include <stddef.h>

#define SL_MBOX_MAX 254

enum {
    SL_MBOX_LITERAL = 1 << 0,
    SL_MBOX_ASCII = 1 << 1,
    SL_MBOX_FQDN = 1 << 2,
};

/* Writes the reason (when why is not NULL) and returns SL_EADDRESS: for
 * callers that add checks of their own, with the same kind of message. */
int sl_mailbox_why(char *why, size_t wl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int sl_mailbox_check(const char *addr, unsigned flags, char *why, size_t wl);
int sl_mailbox_split(const char *addr, size_t *local_len, char *why, size_t wl);
int sl_mailbox_local_check(const char *p, size_t n, char *why, size_t wl);
int sl_mailbox_domain_check(const char *d, unsigned flags, char *why, size_t wl);

#endif
