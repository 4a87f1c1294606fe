/*
 * site - MX rollup: which receiving provider (site) a domain belongs to.
 *
 * sched_site_by_domain(): the first configured site one of whose `domains`
 * patterns matches the recipient domain (no DNS needed), or NULL.
 * sched_site_by_mx(): the first configured site one of whose `mx` patterns
 * matches the domain's MX hosts (tried in preference order), otherwise the
 * sorted, de-duplicated, lower-case MX host list joined by ","; with no MX
 * hosts (implicit MX) the domain itself. Returns a malloc'd string the
 * caller frees.
 *
 * Pure over the config; unit tested in tests/unit/test_sched_site.c.
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

const char *sched_site_by_domain(const sl_config *cfg, const char *domain);
char *sched_site_by_mx(const sl_config *cfg, const char *domain, const sched_mx *mx, size_t n);

#endif
