/*
 * sched_addr - see sched_addr.h. The grammar is common/mailbox.c's.
 */
#include "sched_addr.h"
#include "mailbox.h"

#include <string.h>

const char *sched_addr_domain(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    return at ? at + 1 : NULL;
}

bool sched_addr_valid(const char *addr)
{
    /* Address literals pass: the sender can deliver to them. */
    return addr && sl_mailbox_check(addr, SL_MBOX_LITERAL, NULL, 0) == 0;
}
