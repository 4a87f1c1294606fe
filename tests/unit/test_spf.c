/*
 * test_spf - the SPF evaluator of `sluice check-domain` (cli/spf.c): term
 * parsing, qualifiers, include and redirect, CIDR lengths, macros, and
 * RFC 7208's limits (10 lookup terms, 2 void lookups), against a zone
 * held in a table (the command's own DNS path is proven against dnsmasq
 * in tests/integration/test_check_domain.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "spf.h"
#include "util.h"

typedef struct rr {
    const char *name;
    const char *type; /* "TXT", "A", "AAAA", "MX", or "SERVFAIL" */
    const char *value;
} rr;

typedef struct zone {
    const rr *rrs;
    size_t n;
    int queries;
} zone;

static cli_spf_dns_status z_find(zone *z, const char *name, const char *type, char ***out,
                                 size_t *n)
{
    *out = NULL;
    *n = 0;
    z->queries++;
    for (size_t i = 0; i < z->n; i++) {
        if (strcasecmp(z->rrs[i].name, name))
            continue;
        if (!strcmp(z->rrs[i].type, "SERVFAIL"))
            return CLI_SPF_DNS_ERROR;
        if (strcmp(z->rrs[i].type, type))
            continue;
        *out = xrealloc(*out, (*n + 1) * sizeof **out);
        (*out)[(*n)++] = xstrdup(z->rrs[i].value);
    }
    return *n ? CLI_SPF_DNS_OK : CLI_SPF_DNS_NONE;
}

static cli_spf_dns_status z_txt(void *arg, const char *name, char ***out, size_t *n)
{
    return z_find(arg, name, "TXT", out, n);
}

static cli_spf_dns_status z_mx(void *arg, const char *name, char ***out, size_t *n)
{
    return z_find(arg, name, "MX", out, n);
}

static cli_spf_dns_status z_addr(void *arg, const char *name, int family, cli_spf_ip **out,
                                 size_t *n)
{
    char **v;
    size_t k;
    cli_spf_dns_status st = z_find(arg, name, family == AF_INET ? "A" : "AAAA", &v, &k);
    *out = xcalloc(k + 1, sizeof **out);
    *n = 0;
    for (size_t i = 0; i < k; i++) {
        assert_int_equal(cli_spf_ip_parse(v[i], &(*out)[(*n)++]), 0);
        free(v[i]);
    }
    free(v);
    return st;
}

static cli_spf_result run(const rr *rrs, size_t n, const char *domain, const char *ip,
                          int *lookups, char **reason)
{
    zone z = {rrs, n, 0};
    cli_spf_dns dns = {z_txt, z_mx, z_addr, &z};
    cli_spf_ip a;
    assert_int_equal(cli_spf_ip_parse(ip, &a), 0);
    cli_spf_out out;
    cli_spf_result r = cli_spf_check(&dns, domain, &a, "bounce@ex.test", "mta1.ex.test", &out);
    if (lookups)
        *lookups = out.lookups;
    if (reason)
        *reason = xstrdup(out.reason);
    cli_spf_out_free(&out);
    return r;
}

static const rr zone1[] = {
    {"ex.test", "TXT", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a:mta.ex.test/32 mx/30 "
                       "include:inc.test ~all"},
    {"ex.test", "TXT", "google-site-verification=abc"},
    {"ex.test", "MX", "mx.ex.test"},
    {"mx.ex.test", "A", "198.51.100.9"},
    {"mta.ex.test", "A", "203.0.113.7"},
    {"inc.test", "TXT", "v=spf1 ip4:10.1.0.0/16 -all"},
    {"strict.test", "TXT", "v=spf1 -ip4:192.0.2.1 +all"},
    {"redir.test", "TXT", "v=spf1 redirect=ex.test"},
    {"neutral.test", "TXT", "v=spf1 ip4:192.0.2.1"},
    {"macro.test", "TXT", "v=spf1 exists:%{i}.allow.test -all"},
    {"192.0.2.44.allow.test", "A", "127.0.0.2"},
    {"badmacro.test", "TXT", "v=spf1 exists:%{ir}.allow.test -all"},
};

/* Table-driven: address, domain, result, and a word the reason holds. */
static void test_results(void **state)
{
    (void)state;
    static const struct {
        const char *domain, *ip;
        cli_spf_result want;
        const char *reason;
    } cases[] = {
        {"ex.test", "192.0.2.200", CLI_SPF_PASS, "ip4:192.0.2.0/24"},
        {"ex.test", "2001:db8:1::5", CLI_SPF_PASS, "ip6:"},
        {"ex.test", "203.0.113.7", CLI_SPF_PASS, "a:mta.ex.test"},
        {"ex.test", "198.51.100.10", CLI_SPF_PASS, "mx/30"},   /* the /30 holds .8-.11 */
        {"ex.test", "198.51.100.12", CLI_SPF_SOFTFAIL, "~all"}, /* outside mx/30 */
        {"ex.test", "10.1.200.3", CLI_SPF_PASS, "include:inc.test"},
        {"ex.test", "203.0.113.8", CLI_SPF_SOFTFAIL, "~all"},
        {"strict.test", "192.0.2.1", CLI_SPF_FAIL, "-ip4"},
        {"strict.test", "192.0.2.2", CLI_SPF_PASS, "+all"},
        {"redir.test", "192.0.2.9", CLI_SPF_PASS, "ex.test"},
        {"neutral.test", "192.0.2.2", CLI_SPF_NEUTRAL, "nothing matched"},
        {"macro.test", "192.0.2.44", CLI_SPF_PASS, "exists"},
        {"macro.test", "192.0.2.45", CLI_SPF_FAIL, "-all"},
        {"badmacro.test", "192.0.2.44", CLI_SPF_PERMERROR, "macro"},
        {"none.test", "192.0.2.1", CLI_SPF_NONE, "no SPF record"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *reason = NULL;
        cli_spf_result r =
            run(zone1, sizeof zone1 / sizeof zone1[0], cases[i].domain, cases[i].ip, NULL, &reason);
        if (r != cases[i].want || !strstr(reason, cases[i].reason))
            fail_msg("%s %s: %s (%s), want %s (%s)", cases[i].domain, cases[i].ip,
                     cli_spf_result_name(r), reason, cli_spf_result_name(cases[i].want),
                     cases[i].reason);
        free(reason);
    }
}

/* Malformed records and terms are permerrors, as receivers treat them. */
static void test_parse_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "v=spf1 ip4:192.0.2.300 -all", "v=spf1 ip4:192.0.2.0/33 -all", "v=spf1 ip6:zz::1 -all",
        "v=spf1 a/40 -all",            "v=spf1 frob:ex.test -all",     "v=spf1 include -all",
        "v=spf1 all:x",                "v=spf1 redirect=a.test redirect=b.test",
        "v=spf1 ip4:10.0.0.0/8//64",   "v=spf1 a: -all",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rr z[] = {{"bad.test", "TXT", bad[i]}};
        cli_spf_result r = run(z, 1, "bad.test", "192.0.2.1", NULL, NULL);
        if (r != CLI_SPF_PERMERROR)
            fail_msg("'%s' gave %s, want permerror", bad[i], cli_spf_result_name(r));
    }
    /* Two v=spf1 records: permerror; "v=spf10" is not an SPF record. */
    rr two[] = {{"two.test", "TXT", "v=spf1 +all"}, {"two.test", "TXT", "v=spf1 -all"}};
    assert_int_equal(run(two, 2, "two.test", "192.0.2.1", NULL, NULL), CLI_SPF_PERMERROR);
    rr ten[] = {{"ten.test", "TXT", "v=spf10 +all"}};
    assert_int_equal(run(ten, 1, "ten.test", "192.0.2.1", NULL, NULL), CLI_SPF_NONE);
    /* A failed lookup is a temperror, not a verdict. */
    rr sf[] = {{"sf.test", "TXT", "v=spf1 include:down.test -all"}, {"down.test", "SERVFAIL", ""}};
    assert_int_equal(run(sf, 2, "sf.test", "192.0.2.1", NULL, NULL), CLI_SPF_TEMPERROR);
    /* An include without a record is a permerror (RFC 7208 5.2). */
    rr ni[] = {{"ni.test", "TXT", "v=spf1 include:nothing.test -all"}};
    assert_int_equal(run(ni, 1, "ni.test", "192.0.2.1", NULL, NULL), CLI_SPF_PERMERROR);
}

/* A chain of includes: d0 includes d1 ... ; the address is authorised by
 * the last one. n includes are n lookups. */
static cli_spf_result chain(int n, int *lookups, char **reason)
{
    rr *z = xcalloc((size_t)n + 1, sizeof *z);
    char **names = xcalloc((size_t)n + 1, sizeof *names);
    for (int i = 0; i <= n; i++) {
        z[i].name = names[i] = xasprintf("d%d.test", i);
        z[i].type = "TXT";
        z[i].value = i < n ? xasprintf("v=spf1 include:d%d.test -all", i + 1)
                           : xstrdup("v=spf1 ip4:192.0.2.1 -all");
    }
    cli_spf_result r = run(z, (size_t)n + 1, "d0.test", "192.0.2.1", lookups, reason);
    for (int i = 0; i <= n; i++) {
        free(names[i]);
        free((char *)z[i].value);
    }
    free(names);
    free(z);
    return r;
}

static void test_lookup_limit(void **state)
{
    (void)state;
    int lookups;
    char *reason;
    assert_int_equal(chain(10, &lookups, &reason), CLI_SPF_PASS);
    assert_int_equal(lookups, 10);
    free(reason);
    assert_int_equal(chain(11, &lookups, &reason), CLI_SPF_PERMERROR);
    assert_non_null(strstr(reason, "more than 10 DNS lookups"));
    free(reason);
    /* ip4, ip6 and all cost nothing; a, mx, exists, ptr and redirect do. */
    rr z[] = {{"many.test", "TXT",
               "v=spf1 ip4:10.0.0.1 ip4:10.0.0.2 ip4:10.0.0.3 ip4:10.0.0.4 ip4:10.0.0.5 "
               "ip4:10.0.0.6 ip4:10.0.0.7 ip4:10.0.0.8 ip4:10.0.0.9 ip4:10.0.0.10 ip4:10.0.0.11 "
               "ip6:::1 a mx ptr exists:e.many.test redirect=r.many.test"},
              {"many.test", "A", "10.9.9.9"},
              {"many.test", "MX", "mx.many.test"},
              {"mx.many.test", "A", "10.9.9.8"},
              {"e.many.test", "A", "10.9.9.7"},
              {"r.many.test", "TXT", "v=spf1 -all"}};
    assert_int_equal(run(z, 6, "many.test", "10.0.0.11", &lookups, NULL), CLI_SPF_PASS);
    assert_int_equal(lookups, 0);
    assert_int_equal(run(z, 6, "many.test", "192.0.2.1", &lookups, NULL), CLI_SPF_PASS);
    assert_int_equal(lookups, 4); /* exists matched: a, mx, ptr, exists */
    /* A loop of redirects stops at the limit instead of recursing forever. */
    rr loop[] = {{"l1.test", "TXT", "v=spf1 redirect=l2.test"},
                 {"l2.test", "TXT", "v=spf1 redirect=l1.test"}};
    assert_int_equal(run(loop, 2, "l1.test", "192.0.2.1", &lookups, NULL), CLI_SPF_PERMERROR);
    assert_true(lookups <= 11);
    /* Three lookups that find nothing: permerror (RFC 7208 4.6.4). */
    rr voids[] = {{"v.test", "TXT", "v=spf1 a:n1.test a:n2.test a:n3.test ip4:192.0.2.1 -all"}};
    assert_int_equal(run(voids, 1, "v.test", "192.0.2.1", NULL, NULL), CLI_SPF_PERMERROR);
    rr two_voids[] = {{"v.test", "TXT", "v=spf1 a:n1.test a:n2.test ip4:192.0.2.1 -all"}};
    assert_int_equal(run(two_voids, 1, "v.test", "192.0.2.1", NULL, NULL), CLI_SPF_PASS);
    /* More than 10 MX hosts behind one mx: permerror. */
    rr mx[13];
    char *names[11];
    mx[0] = (rr){"m.test", "TXT", "v=spf1 mx -all"};
    for (int i = 0; i < 11; i++) {
        names[i] = xasprintf("mx%d.m.test", i);
        mx[i + 1] = (rr){"m.test", "MX", names[i]};
    }
    assert_int_equal(run(mx, 12, "m.test", "192.0.2.1", NULL, NULL), CLI_SPF_PERMERROR);
    for (int i = 0; i < 11; i++)
        free(names[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_lookup_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
