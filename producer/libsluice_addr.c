/*
 * libsluice_addr - RFC 5321 mailbox validation and normalisation for
 * libsluice (see sluice.h, sluice_address_normalize()), and the
 * normalisation of sender-domain patterns (sluice_domain_pattern_normalize()).
 *
 * Mailbox = Local-part "@" Domain (RFC 5321 4.1.2), with RFC 6531 UTF-8 in
 * the local part. The domain is converted to its A-label with libidn2
 * (IDNA 2008, UTS #46 non-transitional mapping, so "Bücher.DE" becomes
 * "xn--bcher-kva.de") and lower-cased: the domain is the Kafka key of the
 * job, so two spellings of one domain must give one key. The local part is
 * kept as written: it is case sensitive on the receiving side.
 *
 * Pure functions, no allocation that outlives a call; any thread.
 */
#include "sluice.h"
#include "mailbox.h"
#include "template.h"
#include "util.h"

#include <idn2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SLUICE_EADDRESS == SL_EADDRESS, "libsluice reports the common address error");
#define fail sl_mailbox_why

int sluice_address_normalize(const char *addr, char out[SLUICE_ADDRESS_MAX + 1], char *why,
                             size_t whylen)
{
    if (!addr || !*addr)
        return fail(why, whylen, "empty address");
    size_t local_len;
    int rc = sl_mailbox_split(addr, &local_len, why, whylen);
    if (rc)
        return SLUICE_EADDRESS;
    const char *at = addr + local_len;

    const char *dom = at + 1;
    if (!*dom)
        return fail(why, whylen, "empty domain");
    if (dom[0] == '[')
        return fail(why, whylen, "address literals are not accepted; use a domain name");
    if (strchr(dom, '@'))
        return fail(why, whylen, "more than one '@' outside quotes");
    if (strlen(dom) > 255)
        return fail(why, whylen, "domain longer than 255 octets");

    char ascii[256];
    bool non_ascii = false;
    for (const unsigned char *s = (const unsigned char *)dom; *s; s++)
        if (*s >= 0x80)
            non_ascii = true;
    if (non_ascii) {
        if (!sl_utf8_valid(dom, strlen(dom)))
            return fail(why, whylen, "domain is not valid UTF-8");
        char *a = NULL;
        int rc = idn2_to_ascii_8z(dom, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
        if (rc != IDN2_OK)
            return fail(why, whylen, "domain is not a valid IDN: %s", idn2_strerror(rc));
        if (strlen(a) > 255) {
            idn2_free(a);
            return fail(why, whylen, "domain longer than 255 octets as an A-label");
        }
        strcpy(ascii, a);
        idn2_free(a);
    } else {
        strcpy(ascii, dom);
    }
    sl_lower(ascii);
    if (sl_mailbox_domain_check(ascii, SL_MBOX_ASCII | SL_MBOX_FQDN, why, whylen))
        return SLUICE_EADDRESS;
    bool alabel = false;
    for (const char *l = ascii; l; l = strchr(l, '.'), l = l ? l + 1 : NULL)
        if (!strncmp(l, "xn--", 4))
            alabel = true;
    /* An ASCII domain that already holds A-labels must be valid IDNA too:
     * "xn--zz" is not a domain anyone can receive mail at. */
    if (!non_ascii && alabel) {
        char *u = NULL;
        int urc = idn2_to_unicode_8z8z(ascii, &u, 0);
        idn2_free(u);
        if (urc != IDN2_OK)
            return fail(why, whylen, "domain has an invalid A-label: %s", idn2_strerror(urc));
    }
    size_t total = local_len + 1 + strlen(ascii);
    if (total > SLUICE_ADDRESS_MAX)
        return fail(why, whylen, "address longer than %d octets (%zu)", SLUICE_ADDRESS_MAX, total);
    memcpy(out, addr, local_len + 1);
    strcpy(out + local_len + 1, ascii);
    return 0;
}

int sluice_domain_pattern_normalize(const char *pattern, char out[SLUICE_ADDRESS_MAX + 1],
                                    char *why, size_t whylen)
{
    if (!pattern || !*pattern)
        return fail(why, whylen, "empty domain");
    if (strchr(pattern, '*') || strchr(pattern, '?')) {
        if (strlen(pattern) > SLUICE_ADDRESS_MAX)
            return fail(why, whylen, "domain too long");
        strcpy(out, pattern);
        sl_lower(out);
        return 0;
    }
    char addr[SLUICE_ADDRESS_MAX + 2];
    char norm[SLUICE_ADDRESS_MAX + 1];
    if ((size_t)snprintf(addr, sizeof addr, "x@%s", pattern) >= sizeof addr)
        return fail(why, whylen, "domain too long");
    int rc = sluice_address_normalize(addr, norm, why, whylen);
    if (rc != 0)
        return rc;
    strcpy(out, strchr(norm, '@') + 1);
    return 0;
}
