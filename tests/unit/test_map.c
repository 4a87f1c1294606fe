/* Unit tests of common/map: the string-keyed hash table, and its
 * shrinking after many deletions (shape forgetting idle sites). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "map.h"

static void test_put_get_del_shrink(void **state)
{
    (void)state;
    sl_map m;
    sl_map_init(&m);
    char k[32];
    for (intptr_t i = 0; i < 10000; i++) {
        snprintf(k, sizeof k, "site%ld", (long)i);
        assert_null(sl_map_put(&m, k, (void *)(i + 1)));
    }
    assert_int_equal(m.count, 10000);
    size_t grown = m.n_slots;
    assert_true(grown >= 8192);
    for (intptr_t i = 0; i < 10000; i += 2) {
        snprintf(k, sizeof k, "site%ld", (long)i);
        assert_ptr_equal(sl_map_del(&m, k), (void *)(i + 1));
    }
    sl_map_shrink(&m); /* half left: nothing to gain */
    assert_int_equal(m.n_slots, grown);
    for (intptr_t i = 1; i < 9990; i += 2) {
        snprintf(k, sizeof k, "site%ld", (long)i);
        sl_map_del(&m, k);
    }
    sl_map_shrink(&m);
    assert_int_equal(m.count, 5);
    assert_true(m.n_slots <= 16); /* 5 entries: at most 4 slots each */
    /* What is left is still found, and the map grows again. */
    for (intptr_t i = 9991; i < 10000; i += 2) {
        snprintf(k, sizeof k, "site%ld", (long)i);
        assert_ptr_equal(sl_map_get(&m, k), (void *)(i + 1));
    }
    assert_null(sl_map_get(&m, "site0"));
    for (intptr_t i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "again%ld", (long)i);
        sl_map_put(&m, k, (void *)1);
    }
    assert_int_equal(m.count, 1005);
    assert_true(m.n_slots >= 1024);
    sl_map_free(&m);
}

static bool drop_odd(void *arg, void *val)
{
    (void)arg;
    return ((intptr_t)val & 1) != 0;
}

/* Sweeping deletes exactly what the predicate drops and shrinks after. */
static void test_sweep(void **state)
{
    (void)state;
    sl_map m;
    sl_map_init(&m);
    char k[32];
    for (intptr_t i = 1; i <= 1000; i++) {
        snprintf(k, sizeof k, "k%ld", (long)i);
        sl_map_put(&m, k, (void *)i);
    }
    size_t slots = m.n_slots;
    assert_int_equal(sl_map_sweep(&m, drop_odd, NULL), 500);
    assert_int_equal(m.count, 500);
    assert_null(sl_map_get(&m, "k1"));
    assert_true(sl_map_get(&m, "k2") == (void *)2);
    assert_int_equal(sl_map_sweep(&m, drop_odd, NULL), 0);
    for (intptr_t i = 2; i <= 1000; i += 2) {
        snprintf(k, sizeof k, "k%ld", (long)i);
        if (i > 20)
            sl_map_del(&m, k);
    }
    assert_int_equal(sl_map_sweep(&m, drop_odd, NULL), 0);
    assert_true(m.n_slots == slots); /* nothing swept: no shrink */
    sl_map_put(&m, "k1", (void *)1);
    assert_int_equal(sl_map_sweep(&m, drop_odd, NULL), 1);
    assert_true(m.n_slots < slots);
    assert_true(sl_map_get(&m, "k20") == (void *)20);
    sl_map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del_shrink),
        cmocka_unit_test(test_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
