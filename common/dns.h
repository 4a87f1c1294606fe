/*
 * dns - the asynchronous resolver of sluice: MX and host address lookups
 * on a libuv loop, with a TTL cache.
 *
 * The scheduler's classify stage asks for a domain's MX set to roll it up
 * to a site; the sender asks for the MX set and then each MX host's
 * addresses. Both run c-ares from their loop: c-ares sockets are watched
 * with uv_poll_t, its retransmission deadlines with a uv_timer_t. Nothing
 * here ever blocks.
 *
 * sl_dns_new() creates a resolver for one loop. Servers come from
 * cfg->dns.servers ("ip" or "ip:port", "[v6]:port"), else the system
 * resolver (/etc/resolv.conf); timeout and tries from cfg->dns. The config
 * is read only during the call. On error returns NULL and sets *err to a
 * malloc'd message the caller frees.
 *
 * sl_dns_mx() looks up the MX set of a domain; sl_dns_addr() the A and
 * AAAA addresses of a host (IPv4 first); sl_dns_txt() the TXT records of
 * a name. Both return 0 when the lookup is
 * under way, or SL_EINVAL for an unusable name (empty, too long, an empty
 * or over-long label), in which case the callback never fires (libuv
 * convention). Otherwise the callback fires exactly once, on the loop
 * thread, never from inside the call that started it (even a cache hit is
 * delivered on a later loop iteration), so callers need not fear
 * re-entrancy. Names are compared lower-cased and without a trailing dot;
 * IDN is the caller's business (pass A-labels).
 *
 * Results: the result struct and everything it points to belong to the
 * resolver and are valid only during the callback; copy what you keep.
 * MX hosts are sorted by preference, equal preferences shuffled anew for
 * every callback (RFC 5321 5.1 load spreading). Host names are lower-cased
 * without the trailing dot.
 *
 * Status: OK; NXDOMAIN (the domain does not exist: a permanent failure);
 * NODATA (the name exists but has no record of that type: for MX the
 * caller falls back to the implicit MX, the domain itself); NULL_MX (RFC
 * 7505: the single MX "." - the domain accepts no mail); SERVFAIL (no
 * server gave a usable answer: each said SERVFAIL or REFUSED, or refused
 * the connection), TIMEOUT and TEMPFAIL (malformed reply, out of memory...)
 * are temporary: retry later; CANCELLED when the resolver is freed with the lookup
 * pending. sl_dns_status_temporary() says which are worth a retry.
 *
 * Cache: answers are kept for the smallest TTL in the answer (capped at a
 * day); NXDOMAIN and NODATA for the SOA minimum from the authority section
 * (RFC 2308, capped at an hour) or 60 s without one; temporary failures
 * are never cached. Concurrent lookups of one name share one query. The
 * cache holds at most sl_dns_set_cache_max() answers (default 10000),
 * dropping the least recently used.
 *
 * Metrics: sluice_dns_lookups_total{type="mx|addr|txt",result="<status>"} per
 * callback, sluice_dns_cache_hits_total{type} for answers served from the
 * cache or shared with a query already in flight, and
 * sluice_dns_queries_total{type="mx|a|aaaa|txt"} for queries sent.
 *
 * Threads: one resolver per loop; every function must be called on that
 * loop's thread.
 *
 * sl_dns_free() completes every pending lookup with SL_DNS_CANCELLED
 * (callbacks must not start new lookups on this resolver then), and closes
 * the libuv handles; the memory is released in their close callbacks, so
 * let the loop run once more (uv_run) before uv_loop_close(). Call it
 * before any uv_walk() that closes every handle of the loop.
 */
#ifndef SLUICE_DNS_H
#define SLUICE_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct sl_dns sl_dns;

typedef enum {
    SL_DNS_OK = 0,
    SL_DNS_NXDOMAIN,
    SL_DNS_NODATA,
    SL_DNS_NULL_MX,
    SL_DNS_SERVFAIL,
    SL_DNS_TIMEOUT,
    SL_DNS_TEMPFAIL,
    SL_DNS_CANCELLED,
} sl_dns_status;

typedef struct sl_dns_mx_host {
    const char *host;
    uint16_t preference;
} sl_dns_mx_host;

typedef struct sl_dns_mx_result {
    sl_dns_status status;
    const char *domain;          /* the name asked for, normalised */
    const sl_dns_mx_host *hosts; /* n_hosts entries when status is OK */
    size_t n_hosts;
    uint32_t ttl; /* seconds left in the cache; 0 for failures */
    bool cached;  /* served from the cache */
} sl_dns_mx_result;

typedef struct sl_dns_ip {
    int family; /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } addr;
    char text[46]; /* INET6_ADDRSTRLEN: "192.0.2.1", "2001:db8::1" */
} sl_dns_ip;

typedef struct sl_dns_addr_result {
    sl_dns_status status;   /* OK when there is at least one address */
    const char *host;       /* the name asked for, normalised */
    const sl_dns_ip *addrs; /* IPv4 first, then IPv6 */
    size_t n_addrs;
    uint32_t ttl;
    bool cached;
} sl_dns_addr_result;

/* TXT records of a name, each record's character strings joined (RFC
 * 7208 3.3); order as the server gave them. */
typedef struct sl_dns_txt_result {
    sl_dns_status status;    /* OK when there is at least one record */
    const char *name;        /* the name asked for, normalised */
    const char *const *txt;  /* n_txt NUL-terminated records */
    size_t n_txt;
    uint32_t ttl;
    bool cached;
} sl_dns_txt_result;

typedef void (*sl_dns_mx_cb)(const sl_dns_mx_result *res, void *arg);
typedef void (*sl_dns_txt_cb)(const sl_dns_txt_result *res, void *arg);
typedef void (*sl_dns_addr_cb)(const sl_dns_addr_result *res, void *arg);

sl_dns *sl_dns_new(uv_loop_t *loop, const sl_config *cfg, char **err);
void sl_dns_free(sl_dns *dns);

int sl_dns_mx(sl_dns *dns, const char *domain, sl_dns_mx_cb cb, void *arg);
int sl_dns_addr(sl_dns *dns, const char *host, sl_dns_addr_cb cb, void *arg);
/* TXT records (MTA-STS's _mta-sts.DOMAIN); same rules as sl_dns_mx(). */
int sl_dns_txt(sl_dns *dns, const char *name, sl_dns_txt_cb cb, void *arg);

/* Whether to ask for AAAA records at all (default true); off for senders
 * without IPv6 connectivity. Affects lookups started afterwards. */
void sl_dns_set_ipv6(sl_dns *dns, bool enable);
/* Bound the cache (answers kept); at least 1. */
void sl_dns_set_cache_max(sl_dns *dns, size_t max);
/* Drop every cached answer (lookups in flight are unaffected). */
void sl_dns_cache_clear(sl_dns *dns);
/* Answers in the cache now (tests, metrics). */
size_t sl_dns_cache_size(const sl_dns *dns);

/* "ok", "nxdomain", "nodata", "null_mx", "servfail", "timeout",
 * "tempfail", "cancelled". */
const char *sl_dns_status_name(sl_dns_status status);
/* SERVFAIL, TIMEOUT, TEMPFAIL, CANCELLED: try again later. */
bool sl_dns_status_temporary(sl_dns_status status);

/* The TXT records of a DNS answer, each record's character strings joined
 * (RFC 7208 3.3, RFC 8461 3.1): appended to *out (*n of them; malloc'd
 * strings in a malloc'd array the caller frees). ARES_SUCCESS or c-ares's
 * parse error (ARES_ENODATA: no TXT record). Any thread. */
int sl_dns_parse_txt(const unsigned char *abuf, int alen, char ***out, size_t *n);

#endif
