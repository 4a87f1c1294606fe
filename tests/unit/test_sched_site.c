/* Unit tests of scheduler/sched_site (MX rollup) and sl_map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "map.h"
#include "sched_site.h"
#include "util.h"

static const char *YAML = "kafka: { bootstrap: 127.0.0.1:9092 }\n"
                          "sites:\n"
                          "  google: { mx: [\"*.google.com\", \"*.googlemail.com\"],"
                          " domains: [gmail.com, googlemail.com] }\n"
                          "  microsoft: { mx: [\"*.protection.outlook.com\"],"
                          " domains: [outlook.com, \"*.hotmail.com\"] }\n";

static void test_rollup(void **state)
{
    (void)state;
    sl_config *cfg = NULL;
    char *err = NULL;
    if (sl_config_parse("test", YAML, strlen(YAML), &cfg, &err) != 0)
        fail_msg("config: %s", err);
    sched_sites *x = sched_sites_new(cfg);
    assert_string_equal(sched_site_by_domain(x, "gmail.com"), "google");
    assert_string_equal(sched_site_by_domain(x, "GMail.COM"), "google");
    assert_string_equal(sched_site_by_domain(x, "uk.hotmail.com"), "microsoft");
    assert_null(sched_site_by_domain(x, "hotmail.com"));
    assert_null(sched_site_by_domain(x, "example.com"));

    sched_mx g[] = {{"alt1.aspmx.l.google.com", 20}, {"aspmx.l.google.com", 10}};
    char *s = sched_site_by_mx(x, "corp.example", g, 2);
    assert_string_equal(s, "google");
    free(s);

    sched_mx m[] = {{"corp-com.mail.protection.outlook.com.", 0}};
    s = sched_site_by_mx(x, "corp.com", m, 1);
    assert_string_equal(s, "microsoft");
    free(s);

    /* Unmatched: sorted, de-duplicated, lower-case, no trailing dot. */
    sched_mx u[] = {{"MX2.Example.net.", 20}, {"mx1.example.net", 10}, {"mx2.example.net", 30}};
    s = sched_site_by_mx(x, "example.org", u, 3);
    assert_string_equal(s, "mx1.example.net,mx2.example.net");
    free(s);

    /* Implicit MX: the domain itself. */
    s = sched_site_by_mx(x, "Example.ORG", NULL, 0);
    assert_string_equal(s, "example.org");
    free(s);
    sched_sites_free(x);
    sl_config_free(cfg);
}

/* The index answers as trying every pattern in config order would: the
 * first site, then the first of its patterns, that sl_glob_match()es. */
static const char *scan(const sl_config *cfg, const char *domain)
{
    for (size_t i = 0; i < cfg->n_sites; i++)
        for (size_t k = 0; k < cfg->sites[i].n_domains; k++)
            if (sl_glob_match(cfg->sites[i].domains[k], domain))
                return cfg->sites[i].name;
    return NULL;
}

static void test_index_order(void **state)
{
    (void)state;
    static const char *yaml =
        "kafka: { bootstrap: 127.0.0.1:9092 }\n"
        "sites:\n"
        "  a: { domains: [\"*.deep.example\", \"mx?.other.example\"] }\n"
        "  b: { domains: [\"*.example\", \"exact.deep.example\", \"*\"] }\n"
        "  c: { domains: [\"x.deep.example\", \"*ample\", \"*.\", \"*.Deep.Example\"] }\n";
    sl_config *cfg = NULL;
    char *err = NULL;
    if (sl_config_parse("test", yaml, strlen(yaml), &cfg, &err) != 0)
        fail_msg("config: %s", err);
    sched_sites *x = sched_sites_new(cfg);
    static const char *names[] = {
        "x.deep.example", "deep.example", "exact.deep.example", "a.b.deep.example",
        "mx1.other.example", "MX2.OTHER.EXAMPLE", "mx12.other.example", "other.example",
        "example", "sample", "trailing.", "", ".", "..", "a..deep.example",
        "X.DEEP.EXAMPLE", "unrelated.test",
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *want = scan(cfg, names[i]), *got = sched_site_by_domain(x, names[i]);
        if (!want || !got ? want != got : strcmp(want, got))
            fail_msg("%s: index says %s, the scan %s", names[i], got ? got : "none",
                     want ? want : "none");
    }
    assert_string_equal(sched_site_by_domain(x, "mx1.other.example"), "a");
    assert_string_equal(sched_site_by_domain(x, "exact.deep.example"), "a");
    assert_string_equal(sched_site_by_domain(x, "unrelated.test"), "b");
    sched_sites_free(x);
    sl_config_free(cfg);
}

static void test_map(void **state)
{
    (void)state;
    sl_map m;
    sl_map_init(&m);
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_null(sl_map_put(&m, key, (void *)(intptr_t)(i + 1)));
    }
    assert_int_equal(m.count, 1000);
    assert_int_equal((intptr_t)sl_map_get(&m, "k500"), 501);
    assert_int_equal((intptr_t)sl_map_put(&m, "k500", (void *)7), 501);
    assert_int_equal((intptr_t)sl_map_del(&m, "k500"), 7);
    assert_null(sl_map_get(&m, "k500"));
    assert_null(sl_map_del(&m, "k500"));
    assert_int_equal(m.count, 999);
    sl_map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rollup),
        cmocka_unit_test(test_index_order),
        cmocka_unit_test(test_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
