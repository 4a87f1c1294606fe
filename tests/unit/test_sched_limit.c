/* Unit tests of scheduler/sched_limit: which tenant / campaign limits apply
 * to a job, and which bucket each one counts in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "sched_limit.h"

/* l over a config (zeroed, in *cfg, which must outlive l) with the n limits lim. */
static void limits_init(sched_limits *l, sl_config *cfg, sl_limit *lim, size_t n)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->limits = lim;
    cfg->n_limits = n;
    sched_limits_init(l, cfg);
}

static void test_resolve_and_share(void **state)
{
    (void)state;
    sl_limit lim[] = {
        {(char *)"acme", NULL, 10, 1, 1},         /* acme, all campaigns together */
        {(char *)"acme", (char *)"*", 2, 1, 2},   /* each acme campaign */
        {(char *)"*", NULL, 100, 1, 3},           /* every tenant on its own */
        {NULL, (char *)"spring-*", 5, 1, 4},      /* spring campaigns, all tenants */
    };
    sl_config cfg;
    sched_limits l;
    limits_init(&l, &cfg, lim, 4);
    sched_bucket *a[SCHED_LIMITS_MAX], *b[SCHED_LIMITS_MAX], *c[SCHED_LIMITS_MAX],
        *d[SCHED_LIMITS_MAX];
    assert_int_equal(sched_limits_resolve(&l, "acme", "spring-1", a, SCHED_LIMITS_MAX, 0), 4);
    assert_int_equal(sched_limits_resolve(&l, "acme", "fall", b, SCHED_LIMITS_MAX, 0), 3);
    assert_ptr_equal(a[0], b[0]);     /* the tenant cap is shared */
    assert_ptr_not_equal(a[1], b[1]); /* per-campaign caps are not */
    assert_ptr_equal(a[2], b[2]);
    assert_int_equal(sched_limits_resolve(&l, "beta", "spring-1", c, SCHED_LIMITS_MAX, 0), 2);
    assert_ptr_not_equal(c[0], a[2]); /* "*" tenant: one bucket each */
    assert_ptr_equal(c[1], a[3]);     /* no tenant key: summed across tenants */
    assert_int_equal(sched_limits_resolve(&l, "beta", "x", d, 1, 0), 1); /* max honoured */
    sched_limits_free(&l);
}

static void test_take_waits_for_the_slowest(void **state)
{
    (void)state;
    sl_limit lim[] = {
        {(char *)"acme", NULL, 2, 1, 1},
        {(char *)"acme", (char *)"c1", 1, 1, 2},
    };
    sl_config cfg;
    sched_limits l;
    limits_init(&l, &cfg, lim, 2);
    sched_bucket *b[SCHED_LIMITS_MAX];
    size_t n = sched_limits_resolve(&l, "acme", "c1", b, SCHED_LIMITS_MAX, 1000);
    assert_int_equal(n, 2);
    assert_int_equal(sched_limits_available_at(b, n, 1000), 1000);
    assert_int_equal(sched_limits_take(b, n, 1000), 1000);
    /* The campaign's 1/s is the slower: the next token is a second away. */
    assert_int_equal(sched_limits_available_at(b, n, 1000), 2000);
    assert_int_equal(sched_limits_take(b, n, 1000), 2000);
    /* No limit applies: available at once. */
    assert_int_equal(sched_limits_resolve(&l, "beta", "c1", b, SCHED_LIMITS_MAX, 1000), 0);
    assert_int_equal(sched_limits_available_at(b, 0, 1000), 1000);
    sched_limits_free(&l);
}

/* Buckets go once nothing holds them, they have been idle long enough and
 * are full again; a held or recently used one stays. */
static void test_idle_buckets_are_freed(void **state)
{
    (void)state;
    sl_limit lim[] = {{(char *)"*", NULL, 1, 1, 1}}; /* each tenant: 1/s, burst 1 */
    sl_config cfg;
    sched_limits l;
    limits_init(&l, &cfg, lim, 1);
    sched_bucket *a[1], *a2[1], *b[1];
    sched_limits_resolve(&l, "acme", "", a, 1, 0);
    sched_limits_resolve(&l, "acme", "", a2, 1, 0); /* a second flow of acme */
    sched_limits_resolve(&l, "beta", "", b, 1, 0);
    assert_int_equal(sched_limits_count(&l), 2);
    sched_limits_take(a, 1, 0);
    sched_limits_take(a, 1, 0); /* one reserved ahead: full again at 2000 */
    sched_limits_release(&l, a, 1, 100);
    sched_limits_release(&l, b, 1, 100);
    assert_int_equal(sched_limits_sweep(&l, 100000, 1000), 1); /* beta; acme is held */
    assert_int_equal(sched_limits_count(&l), 1);
    sched_limits_release(&l, a2, 1, 1500);
    assert_int_equal(sched_limits_sweep(&l, 2000, 1000), 0); /* released 500 ms ago */
    assert_int_equal(sched_limits_sweep(&l, 2499, 1000), 0);
    assert_int_equal(sched_limits_sweep(&l, 2500, 1000), 1);
    assert_int_equal(sched_limits_count(&l), 0);
    /* A tenant that comes back gets a new, full bucket. */
    assert_int_equal(sched_limits_resolve(&l, "acme", "", a, 1, 3000), 1);
    assert_int_equal(sched_limits_take(a, 1, 3000), 3000);
    sched_limits_free(&l);
}

/* Buckets named for the state topic and restored from it: a restored one
 * that no flow holds yet is there for the next resolve, and an unknown
 * limit index is refused. */
static void test_key_find_restore(void **state)
{
    (void)state;
    sl_limit lim[] = {{(char *)"*", NULL, 1, 2, 2}}; /* each tenant: 1/s, burst 2 */
    sl_config cfg;
    sched_limits l;
    limits_init(&l, &cfg, lim, 1);
    assert_null(sched_limits_find(&l, 0, "acme", ""));
    assert_false(sched_limits_restore(&l, 1, "acme", "", 0, 1000, 1000));
    assert_true(sched_limits_restore(&l, 0, "acme", "", -1, 1000, 1000));
    sched_bucket *b = sched_limits_find(&l, 0, "acme", "");
    assert_non_null(b);
    uint32_t i;
    const char *t, *c;
    sched_limits_key(b, &i, &t, &c);
    assert_int_equal(i, 0);
    assert_string_equal(t, "acme");
    assert_string_equal(c, "");
    sched_bucket *a[1];
    assert_int_equal(sched_limits_resolve(&l, "acme", "x", a, 1, 1000), 1);
    assert_ptr_equal(a[0], b);
    assert_int_equal(sched_limits_take(a, 1, 1000), 3000); /* after the debt */
    sched_limits_release(&l, a, 1, 1000);
    sched_limits_free(&l);
}

/* A scheduler that owns a quarter of the sited partitions allows a
 * quarter of each cap (and of its burst, at least 1); existing buckets
 * follow a new share, keeping at most their new depth. */
static void test_share_of_the_cluster(void **state)
{
    (void)state;
    sl_limit lim[] = {
        {(char *)"acme", NULL, 20, 0, 1},  /* burst: one second */
        {(char *)"tiny", NULL, 2, 0, 2},
    };
    sl_config cfg;
    sched_limits l;
    limits_init(&l, &cfg, lim, 2);
    sched_bucket *a[SCHED_LIMITS_MAX], *t[SCHED_LIMITS_MAX];
    assert_int_equal(sched_limits_resolve(&l, "acme", "", a, SCHED_LIMITS_MAX, 0), 1);
    assert_true(a[0]->rate == 20 && a[0]->tokens == 20);
    sched_limits_set_share(&l, 0.25, 0);
    assert_true(a[0]->rate == 5 && a[0]->burst == 5 && a[0]->tokens == 5);
    /* A bucket made now has the share from the start; depth at least 1. */
    assert_int_equal(sched_limits_resolve(&l, "tiny", "", t, SCHED_LIMITS_MAX, 0), 1);
    assert_true(t[0]->rate == 0.5 && t[0]->burst == 1);
    /* 5 at once, then one every 200 ms. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(sched_limits_take(a, 1, 0), 0);
    assert_int_equal(sched_limits_take(a, 1, 0), 200);
    /* Nonsense leaves it; a bigger share raises the rate, not the tokens. */
    sched_limits_set_share(&l, 0, 0);
    assert_true(a[0]->rate == 5);
    sched_limits_set_share(&l, 2, 0);
    assert_true(a[0]->rate == 20 && a[0]->burst == 20 && a[0]->tokens == -1);
    sched_limits_release(&l, a, 1, 0);
    sched_limits_release(&l, t, 1, 0);
    sched_limits_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_and_share),
        cmocka_unit_test(test_take_waits_for_the_slowest),
        cmocka_unit_test(test_idle_buckets_are_freed),
        cmocka_unit_test(test_key_find_restore),
        cmocka_unit_test(test_share_of_the_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
