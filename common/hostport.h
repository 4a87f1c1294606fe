/*
 * hostport - the one parser of "host:port" in sluice.
 *
 * Forms: "host:port", "[v6]:port", "ip4:port"; when the port is optional
 * also "host" and a bare IPv6 literal ("::1"), which then get the default
 * port. A host is an IP literal or a name; it never holds blanks, '/', '['
 * or ']'. A port is 1..65535 in decimal digits only; 0 ("any free port")
 * only with SL_HP_ANY_PORT, which a listener passes.
 *
 * sl_hostport_parse() checks the grammar and splits; it never resolves, so
 * config validation and every listener and client agree on what is valid.
 * sl_hostport_addr() parses and turns the result into a socket address:
 * IP literals as they are, "localhost" as 127.0.0.1, "*" as 0.0.0.0 (any
 * address), and other names through the system resolver only with
 * SL_HP_RESOLVE. Resolving blocks: pass it at start-up (a listener's bind),
 * never from a loop callback.
 *
 * Both are pure functions of their arguments; any thread may call them.
 */
#ifndef SLUICE_HOSTPORT_H
#define SLUICE_HOSTPORT_H

#include <stdint.h>
#include <sys/socket.h>

enum {
    SL_HP_NEED_PORT = 1 << 0, /* the port is required */
    SL_HP_ANY_PORT = 1 << 1,  /* port 0 ("any free port") is allowed */
    SL_HP_RESOLVE = 1 << 2,   /* sl_hostport_addr may resolve names (blocks) */
    SL_HP_LISTEN = SL_HP_NEED_PORT | SL_HP_ANY_PORT, /* what a listen key takes */
};

/* Parse s. On success *port is set (dflt when the port is absent and
 * optional) and, when host is not NULL, *host is a malloc'd copy of the
 * host without brackets, owned by the caller. Returns 0 or SL_EADDRESS. */
int sl_hostport_parse(const char *s, unsigned flags, uint16_t dflt, char **host, uint16_t *port);

/* Parse s (port required) and fill *ss (zeroed first). Returns 0,
 * SL_EADDRESS for a malformed string or an unknown host. */
int sl_hostport_addr(const char *s, unsigned flags, struct sockaddr_storage *ss);

#endif
