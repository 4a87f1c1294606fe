/* Unit tests for sender/dest.c: the destination state machine (up, down
 * with a jittered exponential backoff, one probe), the per-destination
 * hold count and the sweep of idle entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dest.h"

static snd_result refused(void)
{
    snd_result r = {0};
    snd_result_set(&r, 451, "4.4.1", "451 4.4.1 connect to 127.0.0.1:1 failed: connection refused");
    r.stage = SL_STAGE_CONNECT;
    r.cond = SL_COND_NETWORK;
    return r;
}

static void test_down_probe_up(void **state)
{
    (void)state;
    snd_dest_opts o = {.backoff_initial_ms = 1000, .backoff_max_ms = 8000, .idle_ms = 60000,
                       .seed = 42};
    snd_dests *ds = snd_dests_new(&o);
    char *k = snd_dest_key("127.0.0.1", NULL, "127.0.0.1", 1);
    assert_string_equal(k, "127.0.0.1||127.0.0.1|1");
    int64_t now = 1000000;
    /* Unknown: up, may connect, not blocked. */
    assert_true(snd_dest_may_connect(ds, k, now));
    assert_false(snd_dest_blocked(ds, k, now, NULL, NULL));
    assert_int_equal(snd_dest_state_of(ds, k), SND_DEST_UP);

    snd_result r = refused();
    snd_dest_failed(ds, k, &r, now);
    assert_int_equal(snd_dest_state_of(ds, k), SND_DEST_DOWN);
    assert_int_equal(snd_dests_down(ds), 1);
    const snd_result *why = NULL;
    int64_t until = 0;
    assert_true(snd_dest_blocked(ds, k, now, &why, &until));
    assert_non_null(why);
    assert_int_equal(why->reply.code, 451);
    assert_non_null(strstr(why->reply.raw, "connection refused"));
    /* First backoff: jitter within [initial/2, initial]. */
    assert_in_range(until - now, 500, 1000);
    assert_int_equal(snd_dest_down_until(ds, k), until);
    assert_false(snd_dest_may_connect(ds, k, now + 1));
    /* Failures of connections that were opening alongside change nothing. */
    snd_dest_failed(ds, k, &r, now + 2);
    assert_int_equal(snd_dest_down_until(ds, k), until);

    /* Due: exactly one probe. */
    assert_false(snd_dest_blocked(ds, k, until, NULL, NULL));
    assert_true(snd_dest_may_connect(ds, k, until));
    assert_int_equal(snd_dest_state_of(ds, k), SND_DEST_PROBING);
    assert_false(snd_dest_may_connect(ds, k, until));
    /* The probe fails: down again, for longer (2 s: [1000, 2000]). */
    snd_dest_failed(ds, k, &r, until);
    int64_t until2 = snd_dest_down_until(ds, k);
    assert_in_range(until2 - until, 1000, 2000);
    /* Failing probes double the backoff up to the maximum. */
    int64_t t = until2, last = 0;
    for (int i = 0; i < 10; i++) {
        assert_true(snd_dest_may_connect(ds, k, t));
        snd_dest_failed(ds, k, &r, t);
        int64_t u = snd_dest_down_until(ds, k);
        last = u - t;
        assert_in_range(last, 1, 8000);
        t = u;
    }
    /* At the cap: [max/2, max]. */
    assert_in_range(last, 4000, 8000);
    /* A probe that succeeds: up, the backoff starts over. */
    assert_true(snd_dest_may_connect(ds, k, t));
    snd_dest_ok(ds, k, t);
    assert_int_equal(snd_dest_state_of(ds, k), SND_DEST_UP);
    assert_int_equal(snd_dests_down(ds), 0);
    assert_null(snd_dest_why(ds, k));
    snd_dest_failed(ds, k, &r, t);
    assert_in_range(snd_dest_down_until(ds, k) - t, 500, 1000);
    snd_result_clear(&r);
    free(k);
    snd_dests_free(ds);
}

static void test_jitter_spreads(void **state)
{
    (void)state;
    snd_dest_opts o = {.backoff_initial_ms = 10000, .backoff_max_ms = 10000, .idle_ms = 60000,
                       .seed = 7};
    snd_dests *ds = snd_dests_new(&o);
    snd_result r = refused();
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 50; i++) {
        char *k = snd_dest_key("127.0.0.1", NULL, "10.0.0.1", (unsigned)(1000 + i));
        snd_dest_failed(ds, k, &r, 0);
        int64_t u = snd_dest_down_until(ds, k);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        free(k);
    }
    /* Destinations that failed together are not all probed together. */
    assert_true(lo >= 5000 && hi <= 10000);
    assert_true(hi - lo > 1000);
    snd_result_clear(&r);
    snd_dests_free(ds);
}

static void test_hold_and_sweep(void **state)
{
    (void)state;
    snd_dest_opts o = {.backoff_initial_ms = 1000, .backoff_max_ms = 2000, .idle_ms = 5000};
    snd_dests *ds = snd_dests_new(&o);
    /* Many destinations: the table grows and finds them all. */
    char *keys[300];
    for (int i = 0; i < 300; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.0.%d.%d", i / 256, i % 256);
        keys[i] = snd_dest_key("127.0.0.1", NULL, ip, 25);
        snd_dest_hold(ds, keys[i], 0);
    }
    assert_int_equal(snd_dests_count(ds), 300);
    snd_dest_hold(ds, keys[7], 0);
    assert_int_equal(snd_dest_held(ds, keys[7]), 2);
    /* Held entries survive any quiet period. */
    assert_int_equal(snd_dests_sweep(ds, 100000), 0);
    for (int i = 0; i < 300; i++)
        snd_dest_unhold(ds, keys[i], 1000);
    assert_int_equal(snd_dest_held(ds, keys[7]), 1);
    snd_result r = refused();
    snd_dest_failed(ds, keys[1], &r, 1000);
    /* Not idle long enough yet. */
    assert_int_equal(snd_dests_sweep(ds, 5999), 0);
    /* Idle past idle_ms: freed, except the one still held. */
    assert_int_equal(snd_dests_sweep(ds, 6000 + 2000), 299);
    assert_int_equal(snd_dests_count(ds), 1);
    assert_int_equal(snd_dests_down(ds), 0);
    assert_int_equal(snd_dest_held(ds, keys[7]), 1);
    /* A forgotten destination is simply up again. */
    assert_int_equal(snd_dest_state_of(ds, keys[1]), SND_DEST_UP);
    snd_dest_unhold(ds, keys[7], 9000);
    assert_int_equal(snd_dests_sweep(ds, 14000), 1);
    assert_int_equal(snd_dests_count(ds), 0);
    for (int i = 0; i < 300; i++)
        free(keys[i]);
    snd_result_clear(&r);
    snd_dests_free(ds);
}

static void test_rate(void **state)
{
    (void)state;
    snd_dest_opts o = {.backoff_initial_ms = 1000, .backoff_max_ms = 2000, .idle_ms = 60000};
    snd_dests *ds = snd_dests_new(&o);
    const char *k = "127.0.0.1||127.0.0.1|25";
    /* Unknown or silent: no rate. */
    assert_true(snd_dest_rate(ds, k, 0) == 0);
    snd_dest_hold(ds, k, 0);
    assert_true(snd_dest_rate(ds, k, 1000) == 0);
    /* 100 completions in the first second: 100 per (5 + 1) s. */
    for (int i = 0; i < 100; i++)
        snd_dest_done(ds, k, 1000);
    double r = snd_dest_rate(ds, k, 1000);
    assert_true(r > 15 && r < 20);
    /* In the next bucket they still count (100 per 6 s), then age out. */
    r = snd_dest_rate(ds, k, 6000);
    assert_true(r > 15 && r < 20);
    assert_true(snd_dest_rate(ds, k, 11000) == 0);
    assert_true(snd_dest_rate(ds, k, 20000) == 0);
    snd_dest_unhold(ds, k, 20000);
    snd_dests_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_down_probe_up),
        cmocka_unit_test(test_jitter_spreads),
        cmocka_unit_test(test_hold_and_sweep),
        cmocka_unit_test(test_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
