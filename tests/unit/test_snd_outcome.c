/* Unit tests for sender/outcome.c's retry delay and expiry decisions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "outcome.h"

static void test_retry_delay_and_expiry(void **state)
{
    (void)state;
    sl_config cfg = {0};
    int64_t delays[] = {60000, 300000, 1800000};
    cfg.retry.delays_ms = delays;
    cfg.retry.n_delays = 3;
    cfg.retry.expiry_ms = 3600000;
    static const struct {
        uint32_t attempt;
        int64_t delay;
    } d[] = {{0, 60000}, {1, 300000}, {2, 1800000}, {3, 1800000}, {50, 1800000}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        assert_int_equal(snd_retry_delay(&cfg, d[i].attempt), d[i].delay);

    sl_job job;
    sluice__v1__job__init(&job);
    job.created_at_ms = 1000000;
    /* Within the default expiry (created + 1h). */
    assert_false(snd_retry_expired(&cfg, &job, 1000000, 60000));
    /* The next attempt would fall after it. */
    assert_true(snd_retry_expired(&cfg, &job, 1000000 + 3600000 - 30000, 60000));
    /* An explicit expiry wins over the default. */
    job.expires_at_ms = 1000000 + 120000;
    assert_true(snd_retry_expired(&cfg, &job, 1000000 + 90000, 60000));
    assert_false(snd_retry_expired(&cfg, &job, 1000000, 60000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_retry_delay_and_expiry)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
