/* Unit tests for common/log.c's repeated-condition logging: a condition is
 * printed once, then summarised once per interval with its count; a quiet
 * key is forgotten; too many keys at once are counted together, so the
 * volume stays bounded whatever the traffic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

static int64_t fake_now;
static int64_t fake_clock(void)
{
    return fake_now;
}

/* Runs fn with stderr going to a file; returns what was written. */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/sluice-test-log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *out = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, out, (size_t)n, 0), n);
    close(fd);
    return out;
}

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void burst(void)
{
    fake_now = 1000000;
    /* 12,345 refusals within one interval (the first printed in full, the
     * other 12,344 counted), then the flush after it. */
    for (int i = 0; i < 12345; i++)
        sl_log_every(SL_LOG_INFO, "refused|127.0.0.1:1", "127.0.0.1:1 connection refused");
    fake_now += 10000;
    sl_log_every_flush();
    /* A second interval with 3 more, summarised by the next call itself. */
    for (int i = 0; i < 3; i++)
        sl_log_every(SL_LOG_INFO, "refused|127.0.0.1:1", "127.0.0.1:1 connection refused");
    fake_now += 10000;
    sl_log_every(SL_LOG_INFO, "other", "another condition");
    /* A quiet interval: the key is forgotten, the next occurrence prints. */
    fake_now += 20000;
    sl_log_every_flush();
    sl_log_every(SL_LOG_INFO, "refused|127.0.0.1:1", "127.0.0.1:1 connection refused");
}

static void test_summary(void **state)
{
    (void)state;
    char *out = capture(burst);
    assert_int_equal(count_lines(out, "\n"), 5);
    assert_non_null(strstr(out, "127.0.0.1:1 connection refused (x12,344 in the last 10 s)"));
    assert_non_null(strstr(out, "127.0.0.1:1 connection refused (x3 in the last 10 s)"));
    assert_int_equal(count_lines(out, "another condition"), 1);
    /* First occurrence, two summaries, and the full line again later. */
    assert_int_equal(count_lines(out, "connection refused"), 4);
    free(out);
}

static void many_keys(void)
{
    fake_now = 5000000;
    char key[64];
    for (int round = 0; round < 20; round++)
        for (int i = 0; i < 10000; i++) {
            snprintf(key, sizeof key, "dest-%d", i);
            sl_log_every(SL_LOG_WARN, key, "destination %d refused", i);
        }
    fake_now += 10000;
    sl_log_every_flush();
}

static void test_bounded(void **state)
{
    (void)state;
    char *out = capture(many_keys);
    /* 200,000 lines of 10,000 conditions: each tracked key once plus its
     * summary, and one summary for all the rest. */
    int lines = count_lines(out, "\n");
    assert_true(lines <= 2 * SL_LOG_EVERY_KEYS + 1);
    assert_non_null(strstr(out, "too many distinct repeated conditions"));
    free(out);
}

int main(void)
{
    sl_log_init("test", SL_LOG_INFO);
    sl_log_every_clock(fake_clock);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
