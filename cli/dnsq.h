/*
 * dnsq - blocking DNS questions for a command of `sluice` that asks a few
 * and waits for each answer (check-domain): TXT, MX, A/AAAA and PTR
 * through c-ares, the library every role uses (common/dns.c is the
 * asynchronous, cached resolver of the daemons; a command that asks a
 * dozen questions once needs neither its loop nor its cache).
 *
 * cli_dnsq_new() takes the servers as common/dns.c does: cfg->dns.servers
 * ("ip", "ip:port", "[v6]:port"), or, when servers is given, that one
 * server instead; none: the system resolver. Timeout and tries from
 * cfg->dns. Returns NULL with *err (caller frees) when c-ares cannot start
 * or a server is malformed.
 *
 * Each lookup blocks until c-ares answers or gives up. It fills a malloc'd
 * array the caller frees (cli_dnsq_strv_free for strings) and returns
 * CLI_SPF_DNS_OK, NONE (NXDOMAIN or no record of the type) or ERROR
 * (timeout, SERVFAIL...; *last_error of the handle says which). TXT
 * records come with their character-strings joined (RFC 7208 3.3, RFC
 * 6376 3.6.2.2); names are returned lower-cased without the final dot.
 * cli_dnsq_spf() wires the handle into the SPF evaluator.
 *
 * Main thread; one handle per command.
 */
#ifndef SLUICE_DNSQ_H
#define SLUICE_DNSQ_H

#include "config.h"
#include "spf.h"

typedef struct cli_dnsq cli_dnsq;

cli_dnsq *cli_dnsq_new(const sl_config *cfg, const char *server, char **err);
void cli_dnsq_free(cli_dnsq *q);
cli_spf_dns_status cli_dnsq_txt(cli_dnsq *q, const char *name, char ***out, size_t *n);
cli_spf_dns_status cli_dnsq_mx(cli_dnsq *q, const char *name, char ***out, size_t *n);
cli_spf_dns_status cli_dnsq_addr(cli_dnsq *q, const char *name, int family, cli_spf_ip **out,
                                 size_t *n);
/* The PTR names of an address. */
cli_spf_dns_status cli_dnsq_ptr(cli_dnsq *q, const cli_spf_ip *ip, char ***out, size_t *n);
/* What the last failed lookup met ("timeout", "server failure"...). */
const char *cli_dnsq_error(const cli_dnsq *q);
cli_spf_dns cli_dnsq_spf(cli_dnsq *q);
void cli_dnsq_strv_free(char **v, size_t n);

#endif
