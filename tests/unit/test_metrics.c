/* Unit tests of common/metrics: series dropped when the state they show is
 * freed, and a registry that grows and shrinks with its series. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "metrics.h"

static size_t count_lines(const char *name)
{
    sl_buf b = SL_BUF_INIT;
    sl_metrics_render(&b);
    size_t n = 0;
    for (const char *p = b.data; p && (p = strstr(p, name)); p++)
        if (p == b.data || p[-1] == '\n')
            n++;
    sl_buf_free(&b);
    return n;
}

static void test_drop_and_resize(void **state)
{
    (void)state;
    char l[64];
    for (int i = 0; i < 50000; i++) {
        snprintf(l, sizeof l, "site=\"s%d\"", i);
        sl_metric_set("sluice_test_gauge", l, i);
    }
    sl_series *kept = sl_metric_series("sluice_test_kept", NULL, SL_METRIC_COUNTER);
    sl_series_add(kept, 3);
    assert_true(sl_metric_get("sluice_test_gauge", "site=\"s49999\"") == 49999);
    assert_int_equal(count_lines("sluice_test_gauge{"), 50000);
    for (int i = 0; i < 50000; i++) {
        if (i == 7)
            continue;
        snprintf(l, sizeof l, "site=\"s%d\"", i);
        sl_metric_drop("sluice_test_gauge", l);
    }
    sl_metric_drop("sluice_test_gauge", "site=\"absent\"");
    assert_int_equal(count_lines("sluice_test_gauge{"), 1);
    assert_true(sl_metric_get("sluice_test_gauge", "site=\"s7\"") == 7);
    assert_true(sl_metric_get("sluice_test_gauge", "site=\"s8\"") == 0);
    /* A series still held stays valid across the table's resizing. */
    sl_series_add(kept, 1);
    assert_true(sl_metric_get("sluice_test_kept", NULL) == 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drop_and_resize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
