/*
 * spf - the SPF evaluator behind `sluice check-domain`: RFC 7208's
 * check_host() for one source address and one domain, so an operator
 * learns whether every IP of a pool is authorised by the domain's record.
 *
 * Lookups go through a cli_spf_dns the caller supplies (the command's
 * c-ares resolver; a table in the unit test), so this file holds the
 * grammar and the rules only. Evaluated: the qualifiers + - ~ ?, the
 * mechanisms all, include, a, mx, ip4, ip6, exists, ptr (counted, never
 * matching: RFC 7208 5.5 says not to use it), the modifiers redirect= and
 * exp= (ignored), the macros %{d} %{i} %{o} %{h} %{s} %{l} %% %_ %- (no
 * transformers: a macro with one is a permerror here). RFC 7208 4.6.4:
 * more than 10 terms that cause DNS lookups (include, a, mx, ptr, exists,
 * redirect), more than 10 MX hosts behind one mx, or more than 2 lookups
 * that find nothing ("void lookups") is a permerror.
 *
 * cli_spf_check() returns the result; out->lookups is the number of
 * lookup-causing terms met, out->reason (caller frees with
 * cli_spf_out_free()) says what decided it: "matched ip4:192.0.2.0/24 in
 * example.net", "more than 10 DNS lookups", "2 SPF records at example.net".
 *
 * Main thread; nothing is kept between calls.
 */
#ifndef SLUICE_SPF_H
#define SLUICE_SPF_H

#include <stddef.h>

typedef enum {
    CLI_SPF_NONE = 0, /* no SPF record */
    CLI_SPF_NEUTRAL,
    CLI_SPF_PASS,
    CLI_SPF_FAIL,
    CLI_SPF_SOFTFAIL,
    CLI_SPF_TEMPERROR,
    CLI_SPF_PERMERROR,
} cli_spf_result;

typedef struct cli_spf_ip {
    int family;           /* AF_INET or AF_INET6 */
    unsigned char a[16];  /* network order; 4 octets for AF_INET */
} cli_spf_ip;

/* Lookup status: OK with answers, NONE (NXDOMAIN or no record of the
 * type: a void lookup), ERROR (timeout, SERVFAIL: a temperror). */
typedef enum { CLI_SPF_DNS_OK = 0, CLI_SPF_DNS_NONE, CLI_SPF_DNS_ERROR } cli_spf_dns_status;

/* Each function fills a malloc'd array the evaluator frees: txt and mx
 * give strings (TXT character-strings of one record already joined; MX
 * host names), addr gives addresses of the family asked for. */
typedef struct cli_spf_dns {
    cli_spf_dns_status (*txt)(void *arg, const char *name, char ***out, size_t *n);
    cli_spf_dns_status (*mx)(void *arg, const char *name, char ***out, size_t *n);
    cli_spf_dns_status (*addr)(void *arg, const char *name, int family, cli_spf_ip **out,
                               size_t *n);
    void *arg;
} cli_spf_dns;

typedef struct cli_spf_out {
    int lookups;
    char *reason;
} cli_spf_out;

/* Parse "192.0.2.1" or "2001:db8::1"; 0 or -1. */
int cli_spf_ip_parse(const char *text, cli_spf_ip *ip);
/* The record of domain as check_host() would find it: 0 with *record
 * (caller frees) when exactly one TXT record starts with "v=spf1";
 * otherwise -1 with *res the result that gives (NONE, PERMERROR for
 * several, TEMPERROR) and *reason (caller frees). */
int cli_spf_record(const cli_spf_dns *dns, const char *domain, char **record,
                   cli_spf_result *res, char **reason);
cli_spf_result cli_spf_check(const cli_spf_dns *dns, const char *domain, const cli_spf_ip *ip,
                             const char *sender, const char *helo, cli_spf_out *out);
void cli_spf_out_free(cli_spf_out *out);
/* "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror". */
const char *cli_spf_result_name(cli_spf_result r);

#endif
