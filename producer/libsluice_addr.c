/*
 * libsluice_addr - RFC 5321 mailbox validation and normalisation for
 * libsluice (see sluice.h, sluice_address_normalize()).
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
#include "template.h"
#include "util.h"

#include <idn2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *why, size_t wl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t wl, const char *fmt, ...)
{
    if (why && wl) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, wl, fmt, ap);
        va_end(ap);
    }
    return SLUICE_EADDRESS;
}

static bool is_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* A printable rendering of byte c for messages. */
static const char *show(unsigned char c, char buf[8])
{
    if (c >= 0x21 && c < 0x7f && c != '\'')
        snprintf(buf, 8, "'%c'", c);
    else if (c == ' ')
        snprintf(buf, 8, "space");
    else
        snprintf(buf, 8, "0x%02X", c);
    return buf;
}

/* Dot-string = Atom *("." Atom); bytes >= 0x80 are UTF-8 (RFC 6531). */
static int check_dot_atom(const char *p, size_t n, char *why, size_t wl)
{
    char b[8];
    if (n == 0)
        return fail(why, wl, "empty local part");
    if (p[0] == '.')
        return fail(why, wl, "local part starts with a dot");
    if (p[n - 1] == '.')
        return fail(why, wl, "local part ends with a dot");
    bool utf8 = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '.') {
            if (p[i + 1] == '.')
                return fail(why, wl, "local part has two consecutive dots");
            continue;
        }
        if (c >= 0x80) {
            utf8 = true;
            continue;
        }
        if (!is_atext(c))
            return fail(why, wl, "local part: character %s at offset %zu is not allowed unquoted",
                        show(c, b), i);
    }
    if (utf8 && !sl_utf8_valid(p, n))
        return fail(why, wl, "local part is not valid UTF-8");
    return 0;
}

/* Parse a Quoted-string at p; on success *end points past the closing
 * quote. */
static int check_quoted(const char *p, const char **end, char *why, size_t wl)
{
    char b[8];
    const char *s = p + 1;
    bool utf8 = false;
    for (;; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == 0)
            return fail(why, wl, "unterminated quoted local part");
        if (c == '"')
            break;
        if (c == '\\') {
            unsigned char d = (unsigned char)s[1];
            if (d < 32 || d > 126)
                return fail(why, wl, "quoted local part: bad escaped character %s", show(d, b));
            s++;
            continue;
        }
        if (c >= 0x80) {
            utf8 = true;
            continue;
        }
        if (c < 32 || c == 127)
            return fail(why, wl, "quoted local part: control character %s", show(c, b));
    }
    if (utf8 && !sl_utf8_valid(p, (size_t)(s - p)))
        return fail(why, wl, "local part is not valid UTF-8");
    *end = s + 1;
    return 0;
}

/* An A-label host name: LDH labels, 1..63 octets, no leading/trailing
 * hyphen, two labels at least, a TLD that is not all digits. d is
 * lower-case already. */
static int check_hostname(const char *d, bool *has_alabel, char *why, size_t wl)
{
    *has_alabel = false;
    char b[8];
    size_t n = strlen(d);
    if (n == 0)
        return fail(why, wl, "empty domain");
    if (n > 255)
        return fail(why, wl, "domain longer than 255 octets");
    if (d[n - 1] == '.')
        return fail(why, wl, "domain ends with a dot");
    size_t labels = 0;
    const char *lab = d;
    while (lab) {
        const char *dot = strchr(lab, '.');
        size_t ln = dot ? (size_t)(dot - lab) : strlen(lab);
        if (ln == 0)
            return fail(why, wl, "domain has an empty label");
        if (ln > 63)
            return fail(why, wl, "domain label \"%.*s...\" longer than 63 octets", 20, lab);
        for (size_t i = 0; i < ln; i++) {
            unsigned char c = (unsigned char)lab[i];
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
                return fail(why, wl, "domain: character %s is not allowed in a host name",
                            show(c, b));
        }
        if (lab[0] == '-')
            return fail(why, wl, "domain label \"%.*s\" starts with a hyphen", (int)ln, lab);
        if (lab[ln - 1] == '-')
            return fail(why, wl, "domain label \"%.*s\" ends with a hyphen", (int)ln, lab);
        labels++;
        if (ln >= 4 && !memcmp(lab, "xn--", 4))
            *has_alabel = true;
        if (!dot) {
            bool digits = true;
            for (size_t i = 0; i < ln; i++)
                if (lab[i] < '0' || lab[i] > '9')
                    digits = false;
            if (digits)
                return fail(why, wl, "domain: top-level label \"%.*s\" is all digits", (int)ln,
                            lab);
        }
        lab = dot ? dot + 1 : NULL;
    }
    if (labels < 2)
        return fail(why, wl, "domain \"%s\" is not fully qualified", d);
    return 0;
}

int sluice_address_normalize(const char *addr, char out[SLUICE_ADDRESS_MAX + 1], char *why,
                             size_t whylen)
{
    char b[8];
    if (!addr || !*addr)
        return fail(why, whylen, "empty address");
    for (const unsigned char *s = (const unsigned char *)addr; *s; s++) {
        if (*s == '\r' || *s == '\n')
            return fail(why, whylen, "address contains a line break");
        if (*s < 32 || *s == 127)
            return fail(why, whylen, "address contains control character %s", show(*s, b));
    }
    if (addr[0] == '<' || strchr(addr, '>'))
        return fail(why, whylen, "give the bare address, without angle brackets or a name");

    /* Split local part and domain. */
    const char *at;
    if (addr[0] == '"') {
        const char *end = NULL;
        int rc = check_quoted(addr, &end, why, whylen);
        if (rc)
            return rc;
        if (*end != '@')
            return fail(why, whylen, "expected '@' after the quoted local part");
        at = end;
    } else {
        at = strchr(addr, '@');
        if (!at)
            return fail(why, whylen, "missing '@'");
        int rc = check_dot_atom(addr, (size_t)(at - addr), why, whylen);
        if (rc)
            return rc;
    }
    size_t local_len = (size_t)(at - addr);
    if (local_len > 64)
        return fail(why, whylen, "local part longer than 64 octets (%zu)", local_len);

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
    bool alabel;
    int rc = check_hostname(ascii, &alabel, why, whylen);
    if (rc)
        return rc;
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
