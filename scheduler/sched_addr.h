/*
 * addr - strict RFC 5321 syntax of the addresses a job carries.
 *
 * sched_addr_valid() accepts a Mailbox (RFC 5321 4.1.2): a Dot-string or
 * Quoted-string local part of at most 64 octets, "@", and a domain of
 * LDH labels (or an address literal in brackets) of at most 255 octets,
 * 254 in all. UTF-8 octets are accepted in the local part and labels
 * (SMTPUTF8, RFC 6531), when the whole address is valid UTF-8. Control characters (CR, LF, NUL, ...), spaces
 * outside quotes and angle brackets are refused: nothing that could split
 * an SMTP command line reaches a sender. sched_addr_domain() points at the
 * domain part (after the last '@'), or NULL.
 *
 * Pure; unit tested in tests/unit/test_sched_addr.c.
 */
#ifndef SLUICE_SCHED_ADDR_H
#define SLUICE_SCHED_ADDR_H

#include <stdbool.h>

bool sched_addr_valid(const char *addr);
const char *sched_addr_domain(const char *addr);

#endif
