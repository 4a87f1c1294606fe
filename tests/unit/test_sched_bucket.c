/* Unit tests of scheduler/sched_bucket: reservation token bucket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sched_bucket.h"

static void test_burst_then_rate(void **state)
{
    (void)state;
    sched_bucket b;
    sched_bucket_init(&b, 5, 5, 1000);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sched_bucket_take(&b, 1000), 1000);
    /* Then one every 200 ms, reserved ahead. */
    assert_int_equal(sched_bucket_take(&b, 1000), 1200);
    assert_int_equal(sched_bucket_take(&b, 1000), 1400);
    assert_int_equal(sched_bucket_available_at(&b, 1000), 1600);
    /* Time passing pays the debt back. */
    assert_int_equal(sched_bucket_available_at(&b, 1600), 1600);
}

static void test_refill_capped_at_burst(void **state)
{
    (void)state;
    sched_bucket b;
    sched_bucket_init(&b, 1, 2, 0);
    sched_bucket_take(&b, 0);
    sched_bucket_take(&b, 0);
    /* An hour idle earns only the burst. */
    assert_int_equal(sched_bucket_take(&b, 3600000), 3600000);
    assert_int_equal(sched_bucket_take(&b, 3600000), 3600000);
    assert_int_equal(sched_bucket_take(&b, 3600000), 3601000);
}

static void test_unlimited(void **state)
{
    (void)state;
    sched_bucket b;
    sched_bucket_init(&b, 0, 0, 10);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sched_bucket_take(&b, 10), 10);
}

static void test_set_rate_halves_and_caps_burst(void **state)
{
    (void)state;
    sched_bucket b;
    sched_bucket_init(&b, 10, 10, 0);
    sched_bucket_set_rate(&b, 2, 2, 0);
    assert_int_equal(sched_bucket_take(&b, 0), 0);
    assert_int_equal(sched_bucket_take(&b, 0), 0);
    assert_int_equal(sched_bucket_take(&b, 0), 500);
    sched_bucket_refund(&b);
    assert_int_equal(sched_bucket_available_at(&b, 0), 500);
}

static void test_default_burst(void **state)
{
    (void)state;
    sched_bucket b;
    sched_bucket_init(&b, 0.5, 0, 0);
    assert_true(b.burst >= 1.0);
    assert_int_equal(sched_bucket_take(&b, 0), 0);
    assert_int_equal(sched_bucket_take(&b, 0), 2000);
}

/* Shape frees an idle pair only when its bucket is as a new one would be. */
static void test_full_again_once_refilled(void **state)
{
    (void)state;
    sched_bucket b;
    sched_bucket_init(&b, 2, 4, 0);
    assert_true(sched_bucket_full(&b, 0));
    for (int i = 0; i < 6; i++)
        sched_bucket_take(&b, 0); /* two reserved ahead: tokens -2 */
    assert_false(sched_bucket_full(&b, 2000));  /* back to 2 */
    assert_false(sched_bucket_full(&b, 2999));
    assert_true(sched_bucket_full(&b, 3000));   /* 4 of 4 */
    sched_bucket_init(&b, 0, 0, 0);             /* unlimited */
    sched_bucket_take(&b, 0);
    assert_true(sched_bucket_full(&b, 0));
}

/* A rate too small to give a token within int64 milliseconds must never
 * wrap into "available now". */
static void test_tiny_rate_never_free(void **state)
{
    (void)state;
    sched_bucket b;
    sched_bucket_init(&b, 1e-300, 1, 1000);
    assert_int_equal(sched_bucket_take(&b, 1000), 1000); /* the burst */
    int64_t at = sched_bucket_take(&b, 1000);
    assert_true(at > 1000 + 86400000LL * 365);
    at = sched_bucket_take(&b, 1000);
    assert_true(at > 1000 + 86400000LL * 365);
}

/* A bucket read back from the state topic: the lower level at now wins,
 * refilled from the time it was written; a full bucket takes the debt. */
static void test_restore_keeps_the_lower_level(void **state)
{
    (void)state;
    sched_bucket b;
    sched_bucket_init(&b, 1, 3, 10000); /* 1/s, burst 3: full */
    /* Written at 9000 with one send reserved ahead (-1): at 10000, 0. */
    sched_bucket_restore(&b, -1, 9000, 10000);
    assert_int_equal(sched_bucket_take(&b, 10000), 11000);
    /* A higher level changes nothing. */
    sched_bucket_restore(&b, 3, 10000, 10000);
    assert_int_equal(sched_bucket_available_at(&b, 10000), 12000);
    /* Another host's clock ahead of ours counts as now. */
    sched_bucket_restore(&b, -2, 99999, 10000);
    assert_int_equal(sched_bucket_available_at(&b, 10000), 13000);
    /* Long ago: refilled to the burst at most, so no change. */
    sched_bucket_restore(&b, -5, 0, 10000);
    assert_int_equal(sched_bucket_available_at(&b, 10000), 13000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_refill_capped_at_burst),
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_set_rate_halves_and_caps_burst),
        cmocka_unit_test(test_default_burst),
        cmocka_unit_test(test_full_again_once_refilled),
        cmocka_unit_test(test_tiny_rate_never_free),
        cmocka_unit_test(test_restore_keeps_the_lower_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
