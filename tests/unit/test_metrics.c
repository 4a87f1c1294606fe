/* Unit tests of common/metrics: series dropped when the state they show is
 * freed, and a registry that grows and shrinks with its series. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* The metrics listener takes every form config validation accepts: an IPv6
 * literal, a name, port 0 for any free port. It starts once per process, so
 * each form runs in a child. */
static void test_listen_forms(void **state)
{
    (void)state;
    static const char *const forms[] = {"127.0.0.1:0", "[::1]:0", "localhost:0"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int port = 0;
            char *err = NULL;
            int rc = sl_http_start(forms[i], &port, &err);
            if (rc != 0)
                fprintf(stderr, "%s\n", err);
            _exit(rc == 0 && port > 0 ? 0 : 1);
        }
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("metrics listener refused '%s'", forms[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drop_and_resize),
        cmocka_unit_test(test_listen_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
