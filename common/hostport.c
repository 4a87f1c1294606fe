/*
 * hostport - the one parser of "host:port"; see hostport.h.
 */
#include "hostport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* Decimal digits only (no sign, no blanks), at most 65535. */
static int parse_port(const char *s, unsigned flags, uint16_t *port)
{
    unsigned long v = 0;
    size_t n = 0;
    for (; s[n]; n++) {
        if (s[n] < '0' || s[n] > '9')
            return SL_EADDRESS;
        v = v * 10 + (unsigned long)(s[n] - '0');
        if (v > 65535)
            return SL_EADDRESS;
    }
    if (n == 0 || v > 65535 || (v == 0 && !(flags & SL_HP_ANY_PORT)))
        return SL_EADDRESS;
    *port = (uint16_t)v;
    return 0;
}

int sl_hostport_parse(const char *s, unsigned flags, uint16_t dflt, char **host, uint16_t *port)
{
    const char *h = s, *portstr = NULL;
    size_t hl;
    const char *first = strchr(s, ':'), *last = strrchr(s, ':');
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close)
            return SL_EADDRESS;
        h = s + 1;
        hl = (size_t)(close - h);
        if (close[1] == ':')
            portstr = close + 2;
        else if (close[1])
            return SL_EADDRESS;
    } else if (first && first != last) {
        /* Several colons and no brackets: only a bare IPv6 literal, which
         * cannot carry a port. */
        struct in6_addr a6;
        if (inet_pton(AF_INET6, s, &a6) != 1)
            return SL_EADDRESS;
        hl = strlen(s);
    } else if (first) {
        hl = (size_t)(first - s);
        portstr = first + 1;
    } else {
        hl = strlen(s);
    }
    if (hl == 0)
        return SL_EADDRESS;
    for (size_t i = 0; i < hl; i++)
        if (h[i] == ' ' || h[i] == '\t' || h[i] == '/' || h[i] == '[' || h[i] == ']')
            return SL_EADDRESS;
    if (portstr) {
        if (parse_port(portstr, flags, port) < 0)
            return SL_EADDRESS;
    } else {
        if (flags & SL_HP_NEED_PORT)
            return SL_EADDRESS;
        *port = dflt;
    }
    if (host)
        *host = xstrndup(h, hl);
    return 0;
}

static bool literal(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        return true;
    }
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        return true;
    }
    memset(ss, 0, sizeof(*ss));
    return false;
}

int sl_hostport_addr(const char *s, unsigned flags, struct sockaddr_storage *ss)
{
    char *host = NULL;
    uint16_t port;
    memset(ss, 0, sizeof(*ss));
    if (sl_hostport_parse(s, flags | SL_HP_NEED_PORT, 0, &host, &port) < 0)
        return SL_EADDRESS;
    const char *h = host;
    if (!strcmp(h, "*"))
        h = "0.0.0.0";
    else if (!strcasecmp(h, "localhost"))
        h = "127.0.0.1";
    int rc = SL_EADDRESS;
    if (literal(h, port, ss)) {
        rc = 0;
    } else if (flags & SL_HP_RESOLVE) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
        if (getaddrinfo(h, NULL, &hints, &res) == 0 && res && res->ai_addrlen <= sizeof(*ss)) {
            memcpy(ss, res->ai_addr, res->ai_addrlen);
            if (ss->ss_family == AF_INET)
                ((struct sockaddr_in *)ss)->sin_port = htons(port);
            else
                ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
            rc = 0;
        }
        if (res)
            freeaddrinfo(res);
    }
    free(host);
    return rc;
}
