/*
 * sched_addr - see sched_addr.h.
 */
#include "sched_addr.h"
#include "template.h" /* sl_utf8_valid(), the one UTF-8 check */

#include <string.h>

static bool is_atext(unsigned char c)
{
    if (c >= 0x80)
        return true; /* UTF-8, RFC 6531; control bytes are all below */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool is_letdig(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c >= 0x80;
}

/* Local part [s, e). */
static bool local_valid(const char *s, const char *e)
{
    if (e <= s || e - s > 64)
        return false;
    if (*s == '"') {
        if (e - s < 2 || e[-1] != '"')
            return false;
        for (const char *p = s + 1; p < e - 1; p++) {
            unsigned char c = (unsigned char)*p;
            if (c == '\\') {
                p++;
                if (p >= e - 1 || (unsigned char)*p < 32 || (unsigned char)*p > 126)
                    return false;
            } else if (c == '"' || (c < 32) || c == 127) {
                return false;
            }
        }
        return true;
    }
    bool prev_dot = true; /* no leading dot */
    for (const char *p = s; p < e; p++) {
        if (*p == '.') {
            if (prev_dot)
                return false;
            prev_dot = true;
        } else if (is_atext((unsigned char)*p)) {
            prev_dot = false;
        } else {
            return false;
        }
    }
    return !prev_dot;
}

static bool domain_valid(const char *d)
{
    size_t n = strlen(d);
    if (!n || n > 255)
        return false;
    if (d[0] == '[') {
        if (d[n - 1] != ']' || n < 3)
            return false;
        for (size_t i = 1; i < n - 1; i++) {
            unsigned char c = (unsigned char)d[i];
            if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\')
                return false;
        }
        return true;
    }
    size_t label = 0;
    char prev = '.';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (prev == '.' || prev == '-' || label > 63)
                return false;
            label = 0;
        } else if (c == '-') {
            if (prev == '.')
                return false;
            label++;
        } else if (is_letdig(c)) {
            label++;
        } else {
            return false;
        }
        prev = (char)c;
    }
    return prev != '.' && prev != '-' && label <= 63;
}

const char *sched_addr_domain(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    return at ? at + 1 : NULL;
}

bool sched_addr_valid(const char *addr)
{
    if (!addr)
        return false;
    size_t n = strlen(addr);
    if (n > 254)
        return false;
    const char *at = strrchr(addr, '@');
    if (!at)
        return false;
    /* Octets >= 0x80 pass as SMTPUTF8 only when they are UTF-8: anything
     * else would go out in RCPT TO as it is. */
    return local_valid(addr, at) && domain_valid(at + 1) && sl_utf8_valid(addr, n);
}
