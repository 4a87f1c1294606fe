/* offsets: the stored offset never passes a record still in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "offsets.h"

static void in_order(void **state)
{
    (void)state;
    sl_offsets o;
    sl_offsets_init(&o);
    uint64_t a = sl_offsets_push(&o, 10), b = sl_offsets_push(&o, 11);
    assert_int_equal(sl_offsets_done(&o, a), 11);
    assert_int_equal(sl_offsets_done(&o, b), 12);
    assert_int_equal(sl_offsets_inflight(&o), 0);
    sl_offsets_free(&o);
}

static void out_of_order_holds_at_lowest(void **state)
{
    (void)state;
    sl_offsets o;
    sl_offsets_init(&o);
    uint64_t s[5];
    for (int i = 0; i < 5; i++)
        s[i] = sl_offsets_push(&o, 100 + i);
    /* Later records finishing first must not move the store position. */
    assert_int_equal(sl_offsets_done(&o, s[3]), -1);
    assert_int_equal(sl_offsets_done(&o, s[1]), -1);
    assert_int_equal(sl_offsets_done(&o, s[0]), 102); /* 101 done too, 102 still out */
    assert_int_equal(sl_offsets_done(&o, s[2]), 104); /* 103 done: next is 104 */
    assert_int_equal(sl_offsets_done(&o, s[4]), 105);
    sl_offsets_free(&o);
}

static void gaps_in_offsets(void **state)
{
    (void)state;
    /* Compacted topics and transactions leave gaps between offsets. */
    sl_offsets o;
    sl_offsets_init(&o);
    uint64_t a = sl_offsets_push(&o, 5), b = sl_offsets_push(&o, 9);
    assert_int_equal(sl_offsets_done(&o, b), -1);
    assert_int_equal(sl_offsets_done(&o, a), 10);
    sl_offsets_free(&o);
}

static void grows_and_wraps(void **state)
{
    (void)state;
    sl_offsets o;
    sl_offsets_init(&o);
    int64_t next = 0;
    uint64_t seqs[1000];
    /* Interleave pushes and completions so the ring wraps and grows. */
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 1000; i++)
            seqs[i] = sl_offsets_push(&o, next + i);
        for (int i = 999; i >= 1; i--)
            assert_int_equal(sl_offsets_done(&o, seqs[i]), -1);
        assert_int_equal(sl_offsets_done(&o, seqs[0]), next + 1000);
        next += 1000;
    }
    assert_int_equal(sl_offsets_inflight(&o), 0);
    sl_offsets_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(in_order),
        cmocka_unit_test(out_of_order_holds_at_lowest),
        cmocka_unit_test(gaps_in_offsets),
        cmocka_unit_test(grows_and_wraps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
