/* Unit tests for sender/ledger.c's lookup: pairs by job id and recipient,
 * final types, and the memory bound (oldest forgotten first). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "kafka.h"
#include "ledger.h"

#include <string.h>

static void test_pairs_and_bound(void **state)
{
    (void)state;
    sl_config cfg = {0};
    cfg.sender.ledger = true;
    cfg.sender.ledger_max_entries = 1000;
    snd_ledger *l = snd_ledger_new(&cfg);
    assert_non_null(l);
    snd_ledger_note(l, "job-1", "a@example.test", SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED);
    assert_true(snd_ledger_final(l, "job-1", "a@example.test"));
    /* The outcome is kept, for an event published again from it. */
    snd_ledger_note(l, "job-3", "c@example.test", SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED);
    assert_int_equal(snd_ledger_outcome(l, "job-3", "c@example.test"),
                     SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED);
    assert_int_equal(snd_ledger_outcome(l, "job-1", "a@example.test"), SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED);
    assert_int_equal(snd_ledger_outcome(l, "job-3", "a@example.test"),
                     SLUICE__V1__EVENT_TYPE__EVENT_UNKNOWN);
    /* By job id and recipient, not either alone. */
    assert_false(snd_ledger_final(l, "job-1", "b@example.test"));
    assert_false(snd_ledger_final(l, "job-2", "a@example.test"));
    assert_false(snd_ledger_final(l, "job-1\na@example.test", ""));
    /* Noting twice keeps one entry. */
    snd_ledger_note(l, "job-1", "a@example.test", SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED);
    assert_int_equal(snd_ledger_count(l), 2);
    /* Past the bound, the oldest go first. */
    char job[32];
    for (int i = 0; i < 1500; i++) {
        snprintf(job, sizeof job, "bulk-%d", i);
        snd_ledger_note(l, job, "r@example.test", SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED);
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

/* `sluice topics ensure` and the dev broker create the ledger like the
 * dispatch topic (same partition count), kept twice the lookback. */
static void test_ledger_topic(void **state)
{
    (void)state;
    static const char y[] = "kafka: { partitions: 6, topic_prefix: t. }\n"
                            "sender: { ledger_lookback: 45m }\n";
    sl_config *cfg = NULL;
    char *err = NULL;
    assert_int_equal(sl_config_parse("t.yaml", y, strlen(y), &cfg, &err), 0);
    size_t n = 0;
    sl_topic_spec *t = sl_topics(cfg, &n);
    const sl_topic_spec *ledger = NULL, *dispatch = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(t[i].name, "t.ledger"))
            ledger = &t[i];
        if (!strcmp(t[i].name, "t.dispatch"))
            dispatch = &t[i];
    }
    assert_non_null(ledger);
    assert_non_null(dispatch);
    assert_int_equal(ledger->partitions, dispatch->partitions);
    assert_false(ledger->compacted);
    assert_int_equal(ledger->retention_ms, 2 * 45 * 60 * 1000);
    assert_int_equal(dispatch->retention_ms, 0);
    sl_topics_free(t, n);
    sl_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pairs_and_bound),
                                       cmocka_unit_test(test_final_types),
                                       cmocka_unit_test(test_ledger_topic)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
