/*
 * addr - strict RFC 5321 syntax of the addresses a job carries.
 *
 * sched_addr_valid() accepts a Mailbox as common/mailbox.h defines it
 * (sl_mailbox_check()), address literals included: a Dot-string or
 * Quoted-string local part of at most 64 octets, "@", and a domain of LDH
 * labels (UTF-8 ones too, RFC 6531) or an address literal, 254 octets in
 * all. Control characters, spaces outside quotes and angle brackets are
 * refused: nothing that could split an SMTP command line reaches a
 * sender. sched_addr_domain() points at the
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
