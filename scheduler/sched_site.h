/*
 * site - MX rollup: which receiving provider (site) a domain belongs to.
 *
 * sched_sites indexes the config's `domains` and `mx` patterns once, so a
 * lookup costs a hash probe for the whole name and one for each of its
 * ".suffix" tails, however many sites are configured. Literal patterns
 * ("gmail.com") and "*.suffix" patterns are indexed; any other shape
 * ("mx?.example.*") is matched in turn. Patterns match without regard to
 * case, and the first configured site (then pattern) that matches wins,
 * as if every pattern were tried in order.
 *
 * sched_site_by_domain(): the first site one of whose `domains` patterns
 * matches the recipient domain (no DNS needed), or NULL; the name is the
 * config's.
 * sched_site_by_mx(): the first site one of whose `mx` patterns matches
 * the domain's MX hosts (tried in preference order), otherwise the sorted,
 * de-duplicated, lower-case MX host list joined by ","; with no MX hosts
 * (implicit MX) the domain itself. Returns a malloc'd string the caller
 * frees.
 *
 * The index borrows cfg, which must outlive it. Pure over the config; unit
 * tested in tests/unit/test_sched_site.c.
 */
#ifndef SLUICE_SCHED_SITE_H
#define SLUICE_SCHED_SITE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct sched_mx {
    const char *host;
    uint32_t preference;
} sched_mx;

typedef struct sched_sites sched_sites;

sched_sites *sched_sites_new(const sl_config *cfg);
void sched_sites_free(sched_sites *s);
const char *sched_site_by_domain(const sched_sites *s, const char *domain);
char *sched_site_by_mx(const sched_sites *s, const char *domain, const sched_mx *mx, size_t n);

#endif
