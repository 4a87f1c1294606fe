/*
 * test_submit_limits - the per-user token bucket (burst of a minute's
 * worth, refill over time, users independent, 0 unlimited) and the per-IP
 * AUTH failure window (counts, expiry, the size cap).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "submit_limits.h"

static void test_rate(void **state)
{
    (void)state;
    sub_rate *r = sub_rate_new();
    int64_t t = 1000;
    for (int i = 0; i < 3; i++)
        assert_true(sub_rate_take(r, "carol", 3, t));
    assert_false(sub_rate_check(r, "carol", 3, t));
    assert_false(sub_rate_take(r, "carol", 3, t));
    assert_true(sub_rate_take(r, "alice", 3, t)); /* users are independent */
    assert_false(sub_rate_take(r, "carol", 3, t + 19000)); /* 0.95 token */
    assert_true(sub_rate_check(r, "carol", 3, t + 20000));
    assert_true(sub_rate_take(r, "carol", 3, t + 20000));
    assert_false(sub_rate_take(r, "carol", 3, t + 20001));
    /* An hour idle refills only to the burst. */
    t += 3600 * 1000;
    for (int i = 0; i < 3; i++)
        assert_true(sub_rate_take(r, "carol", 3, t));
    assert_false(sub_rate_take(r, "carol", 3, t));
    for (int i = 0; i < 1000; i++)
        assert_true(sub_rate_take(r, "dave", 0, t));
    sub_rate_free(r);
}

static void test_fails(void **state)
{
    (void)state;
    sub_fails *f = sub_fails_new(60000, 4);
    assert_int_equal(sub_fails_count(f, "192.0.2.1", 0), 0);
    assert_int_equal(sub_fails_note(f, "192.0.2.1", 0), 1);
    assert_int_equal(sub_fails_note(f, "192.0.2.1", 1000), 2);
    assert_int_equal(sub_fails_note(f, "192.0.2.2", 1000), 1);
    assert_int_equal(sub_fails_count(f, "192.0.2.1", 59999), 2);
    assert_int_equal(sub_fails_count(f, "192.0.2.1", 60000), 0); /* window over */
    assert_int_equal(sub_fails_note(f, "192.0.2.1", 60001), 1);
    /* At most 4 IPs: the oldest goes first. */
    char ip[32];
    for (int i = 3; i <= 6; i++) {
        snprintf(ip, sizeof ip, "192.0.2.%d", i);
        assert_int_equal(sub_fails_note(f, ip, 60002), 1);
    }
    assert_int_equal(sub_fails_count(f, "192.0.2.6", 60002), 1);
    assert_int_equal(sub_fails_count(f, "192.0.2.3", 60002), 1);
    assert_int_equal(sub_fails_count(f, "192.0.2.2", 60002), 0);
    sub_fails_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate),
        cmocka_unit_test(test_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
