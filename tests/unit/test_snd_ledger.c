/* Unit tests for sender/ledger.c's lookup: pairs by job id and recipient,
 * final types, and the memory bound (oldest forgotten first). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "ledger.h"

static void test_pairs_and_bound(void **state)
{
    (void)state;
    sl_config cfg = {0};
    cfg.sender.ledger = true;
    cfg.sender.ledger_max_entries = 1000;
    snd_ledger *l = snd_ledger_new(&cfg);
    assert_non_null(l);
    snd_ledger_note(l, "job-1", "a@example.test");
    assert_true(snd_ledger_final(l, "job-1", "a@example.test"));
    /* By job id and recipient, not either alone. */
    assert_false(snd_ledger_final(l, "job-1", "b@example.test"));
    assert_false(snd_ledger_final(l, "job-2", "a@example.test"));
    assert_false(snd_ledger_final(l, "job-1\na@example.test", ""));
    /* Noting twice keeps one entry. */
    snd_ledger_note(l, "job-1", "a@example.test");
    assert_int_equal(snd_ledger_count(l), 1);
    /* Past the bound, the oldest go first. */
    char job[32];
    for (int i = 0; i < 1500; i++) {
        snprintf(job, sizeof job, "bulk-%d", i);
        snd_ledger_note(l, job, "r@example.test");
    }
    assert_int_equal(snd_ledger_count(l), 1000);
    assert_false(snd_ledger_final(l, "job-1", "a@example.test"));
    assert_false(snd_ledger_final(l, "bulk-499", "r@example.test"));
    assert_true(snd_ledger_final(l, "bulk-500", "r@example.test"));
    assert_true(snd_ledger_final(l, "bulk-1499", "r@example.test"));
    snd_ledger_free(l);

    cfg.sender.ledger = false;
    assert_null(snd_ledger_new(&cfg));
}

static void test_final_types(void **state)
{
    (void)state;
    assert_true(snd_ledger_is_final(SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED));
    assert_true(snd_ledger_is_final(SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED));
    assert_true(snd_ledger_is_final(SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED));
    assert_false(snd_ledger_is_final(SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED));
    assert_false(snd_ledger_is_final(SLUICE__V1__EVENT_TYPE__EVENT_SHAPING));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pairs_and_bound),
                                       cmocka_unit_test(test_final_types)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
