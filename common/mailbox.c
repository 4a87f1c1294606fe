/*
 * mailbox - the mailbox validator; see mailbox.h.
 */
#include "mailbox.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "template.h" /* sl_utf8_valid(), the one UTF-8 check */
#include "util.h"

#define fail sl_mailbox_why

int sl_mailbox_why(char *why, size_t wl, const char *fmt, ...)
{
    if (why && wl) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, wl, fmt, ap);
        va_end(ap);
    }
    return SL_EADDRESS;
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
            if (i + 1 < n && p[i + 1] == '.')
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

/* A Quoted-string starting at p[0] == '"' within p[0..n) (or up to a NUL
 * when n is SIZE_MAX); *len gets its length with both quotes. */
static int check_quoted(const char *p, size_t n, size_t *len, char *why, size_t wl)
{
    char b[8];
    size_t i = 1;
    bool utf8 = false;
    for (;; i++) {
        unsigned char c = i < n ? (unsigned char)p[i] : 0;
        if (c == 0)
            return fail(why, wl, "unterminated quoted local part");
        if (c == '"')
            break;
        if (c == '\\') {
            unsigned char d = i + 1 < n ? (unsigned char)p[i + 1] : 0;
            if (d < 32 || d > 126)
                return fail(why, wl, "quoted local part: bad escaped character %s", show(d, b));
            i++;
            continue;
        }
        if (c >= 0x80) {
            utf8 = true;
            continue;
        }
        if (c < 32 || c == 127)
            return fail(why, wl, "quoted local part: control character %s", show(c, b));
    }
    if (utf8 && !sl_utf8_valid(p, i))
        return fail(why, wl, "local part is not valid UTF-8");
    *len = i + 1;
    return 0;
}

int sl_mailbox_local_check(const char *p, size_t n, char *why, size_t wl)
{
    int rc;
    if (n && p[0] == '"') {
        size_t len;
        rc = check_quoted(p, n, &len, why, wl);
        if (rc == 0 && len != n)
            rc = fail(why, wl, "expected '@' after the quoted local part");
    } else {
        rc = check_dot_atom(p, n, why, wl);
    }
    if (rc == 0 && n > 64)
        rc = fail(why, wl, "local part longer than 64 octets (%zu)", n);
    return rc;
}

int sl_mailbox_split(const char *addr, size_t *local_len, char *why, size_t wl)
{
    char b[8];
    for (const unsigned char *s = (const unsigned char *)addr; *s; s++) {
        if (*s == '\r' || *s == '\n')
            return fail(why, wl, "address contains a line break");
        if (*s < 32 || *s == 127)
            return fail(why, wl, "address contains control character %s", show(*s, b));
    }
    if (addr[0] == '<' || strchr(addr, '>'))
        return fail(why, wl, "give the bare address, without angle brackets or a name");
    /* The local part ends at the first '@' outside quotes. */
    size_t ll;
    if (addr[0] == '"') {
        int rc = check_quoted(addr, SIZE_MAX, &ll, why, wl);
        if (rc)
            return rc;
        if (addr[ll] != '@')
            return fail(why, wl, "expected '@' after the quoted local part");
    } else {
        const char *at = strchr(addr, '@');
        if (!at)
            return fail(why, wl, "missing '@'");
        ll = (size_t)(at - addr);
    }
    *local_len = ll;
    return sl_mailbox_local_check(addr, ll, why, wl);
}

static bool is_ldh(unsigned char c, unsigned flags)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || (c >= 0x80 && !(flags & SL_MBOX_ASCII));
}

static int check_literal(const char *d, size_t n, char *why, size_t wl)
{
    if (n < 3 || d[n - 1] != ']')
        return fail(why, wl, "unterminated address literal");
    for (size_t i = 1; i < n - 1; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\')
            return fail(why, wl, "address literal: character 0x%02X is not allowed", c);
    }
    return 0;
}

int sl_mailbox_domain_check(const char *d, unsigned flags, char *why, size_t wl)
{
    char b[8];
    size_t n = strlen(d);
    if (n == 0)
        return fail(why, wl, "empty domain");
    if (n > 255)
        return fail(why, wl, "domain longer than 255 octets");
    if (d[0] == '[') {
        if (!(flags & SL_MBOX_LITERAL))
            return fail(why, wl, "address literals are not accepted; use a domain name");
        return check_literal(d, n, why, wl);
    }
    if (d[n - 1] == '.')
        return fail(why, wl, "domain ends with a dot");
    size_t labels = 0;
    bool utf8 = false;
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
            if (!is_ldh(c, flags))
                return fail(why, wl, "domain: character %s is not allowed in a host name",
                            show(c, b));
            utf8 |= c >= 0x80;
        }
        if (lab[0] == '-')
            return fail(why, wl, "domain label \"%.*s\" starts with a hyphen", (int)ln, lab);
        if (lab[ln - 1] == '-')
            return fail(why, wl, "domain label \"%.*s\" ends with a hyphen", (int)ln, lab);
        labels++;
        if (!dot && (flags & SL_MBOX_FQDN)) {
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
    if (labels < 2 && (flags & SL_MBOX_FQDN))
        return fail(why, wl, "domain \"%s\" is not fully qualified", d);
    if (utf8 && !sl_utf8_valid(d, n))
        return fail(why, wl, "domain is not valid UTF-8");
    return 0;
}

int sl_mailbox_check(const char *addr, unsigned flags, char *why, size_t wl)
{
    if (!addr || !*addr)
        return fail(why, wl, "empty address");
    size_t n = strlen(addr);
    if (n > SL_MBOX_MAX)
        return fail(why, wl, "address longer than %d octets (%zu)", SL_MBOX_MAX, n);
    size_t ll;
    int rc = sl_mailbox_split(addr, &ll, why, wl);
    if (rc)
        return rc;
    if (strchr(addr + ll + 1, '@'))
        return fail(why, wl, "more than one '@' outside quotes");
    return sl_mailbox_domain_check(addr + ll + 1, flags, why, wl);
}
