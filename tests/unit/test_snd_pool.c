/* Unit tests for sender/pool.c's pacer: never before send_at, and an
 * overdue backlog leaves at the carried rate, not in a burst. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pool.h"

static void test_pacer(void **state)
{
    (void)state;
    snd_pacer *p = snd_pacer_new();
    int64_t now = 100000;
    /* Future send_at: honoured exactly. */
    assert_int_equal(snd_pacer_slot(p, "ip/a", now + 500, 10, now), now + 500);
    /* Behind (send_at long past) at 4/s: 250 ms apart from now on. */
    assert_int_equal(snd_pacer_slot(p, "ip/b", 1, 4, now), now);
    assert_int_equal(snd_pacer_slot(p, "ip/b", 1, 4, now), now + 250);
    assert_int_equal(snd_pacer_slot(p, "ip/b", 1, 4, now), now + 500);
    /* Another pair is independent. */
    assert_int_equal(snd_pacer_slot(p, "ip/c", 1, 4, now), now);
    /* Rate 0: no pacing, only send_at. */
    assert_int_equal(snd_pacer_slot(p, "ip/d", 1, 0, now), now);
    assert_int_equal(snd_pacer_slot(p, "ip/d", 1, 0, now), now);
    /* After a quiet spell the pair starts at now again, not in the past. */
    assert_int_equal(snd_pacer_slot(p, "ip/b", 1, 4, now + 10000), now + 10000);
    snd_pacer_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pacer)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
