/* Unit tests of scheduler/sched_pick: weighted IP choice and warm-up caps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sched_pick.h"

static void test_weights_share(void **state)
{
    (void)state;
    sched_pick_cand c[3] = {{3, 0, true}, {1, 0, true}, {0, 0, true}};
    int n[3] = {0};
    for (int i = 0; i < 500; i++)
        n[sched_pick(c, 3)]++;
    assert_int_equal(n[0], 300);
    assert_int_equal(n[1], 100);
    assert_int_equal(n[2], 100); /* weight 0 counts as 1 */
}

static void test_smooth_interleaving(void **state)
{
    (void)state;
    /* 2:1 gives a b a, a b a ... never a a b b. */
    sched_pick_cand c[2] = {{2, 0, true}, {1, 0, true}};
    int seq[6];
    for (int i = 0; i < 6; i++)
        seq[i] = sched_pick(c, 2);
    int want[6] = {0, 1, 0, 0, 1, 0};
    for (int i = 0; i < 6; i++)
        assert_int_equal(seq[i], want[i]);
}

static void test_ineligible_skipped(void **state)
{
    (void)state;
    sched_pick_cand c[2] = {{5, 0, false}, {1, 0, true}};
    for (int i = 0; i < 5; i++)
        assert_int_equal(sched_pick(c, 2), 1);
    c[1].eligible = false;
    assert_int_equal(sched_pick(c, 2), -1);
}

static void test_warmup_caps(void **state)
{
    (void)state;
    uint32_t days[] = {200, 500, 1000};
    sl_warmup w = {.start_day = 20000, .per_day = days, .n_per_day = 3};
    const struct {
        int64_t day;
        uint32_t cap;
    } cases[] = {
        {19999, 0}, {20000, 200}, {20001, 500}, {20002, 1000}, {20003, SCHED_NO_CAP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(sched_warmup_cap(&w, cases[i].day), cases[i].cap);
    assert_int_equal(sched_warmup_cap(NULL, 5), SCHED_NO_CAP);
}

static void test_day_of(void **state)
{
    (void)state;
    assert_int_equal(sched_day_of(0), 0);
    assert_int_equal(sched_day_of(86399999), 0);
    assert_int_equal(sched_day_of(86400000), 1);
    assert_int_equal(sched_day_of(-1), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weights_share),     cmocka_unit_test(test_smooth_interleaving),
        cmocka_unit_test(test_ineligible_skipped), cmocka_unit_test(test_warmup_caps),
        cmocka_unit_test(test_day_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
