/* Unit tests of scheduler/sched_backoff: AIMD state machine and rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sched_backoff.h"

static const sl_backoff_rule halve = {(char *)"x", NULL, SL_BACKOFF_HALVE, 2.0, 10000, 0, 0};
static const sl_backoff_rule suspend = {(char *)"x", NULL, SL_BACKOFF_SUSPEND, 0, 0, 5000, 0};
static const sl_backoff_rule disable = {(char *)"x", NULL, SL_BACKOFF_DISABLE_IP, 0, 0, 9000, 0};

static void test_halve_to_floor(void **state)
{
    (void)state;
    sched_backoff b;
    sched_backoff_init(&b, 20);
    assert_true(sched_backoff_apply(&b, &halve, 0));
    assert_int_equal(b.state, SCHED_BO_THROTTLED);
    assert_true(b.rate == 10);
    sched_backoff_apply(&b, &halve, 1);
    sched_backoff_apply(&b, &halve, 2);
    assert_true(b.rate == 2.5);
    sched_backoff_apply(&b, &halve, 3);
    assert_true(b.rate == 2); /* the floor */
    assert_false(sched_backoff_apply(&b, &halve, 4));
    assert_true(sched_backoff_usable(&b));
}

static void test_additive_recovery(void **state)
{
    (void)state;
    sched_backoff b;
    sched_backoff_init(&b, 20);
    sched_backoff_apply(&b, &halve, 0); /* 10/s, recover_after 10 s */
    assert_false(sched_backoff_tick(&b, 9999));
    assert_true(b.rate == 10);
    assert_int_equal(sched_backoff_next_ms(&b), 10000);
    assert_true(sched_backoff_tick(&b, 10000));
    assert_true(b.rate == 12); /* + a tenth of 20 */
    assert_false(sched_backoff_tick(&b, 10500));
    assert_true(sched_backoff_tick(&b, 11000)); /* every max(1 s, 10 s / 10) */
    assert_true(b.rate == 14);
    sched_backoff_tick(&b, 60000);
    assert_int_equal(b.state, SCHED_BO_NORMAL);
    assert_true(b.rate == 20);
    assert_int_equal(sched_backoff_next_ms(&b), INT64_MAX);
}

static void test_halving_restarts_quiet_period(void **state)
{
    (void)state;
    sched_backoff b;
    sched_backoff_init(&b, 20);
    sched_backoff_apply(&b, &halve, 0);
    sched_backoff_apply(&b, &halve, 8000); /* 5/s */
    assert_false(sched_backoff_tick(&b, 12000));
    assert_true(b.rate == 5);
    assert_true(sched_backoff_tick(&b, 18000));
    assert_true(b.rate == 7);
}

static void test_suspend_and_disable(void **state)
{
    (void)state;
    sched_backoff b;
    sched_backoff_init(&b, 20);
    sched_backoff_apply(&b, &halve, 0);
    assert_true(sched_backoff_apply(&b, &suspend, 100));
    assert_false(sched_backoff_usable(&b));
    assert_int_equal(sched_backoff_next_ms(&b), 5100);
    assert_true(sched_backoff_apply(&b, &disable, 200));
    assert_int_equal(b.state, SCHED_BO_DISABLED);
    /* A shorter suspension never shortens a disable. */
    assert_false(sched_backoff_apply(&b, &suspend, 300));
    assert_false(sched_backoff_tick(&b, 9000));
    assert_true(sched_backoff_tick(&b, 9200));
    assert_true(sched_backoff_usable(&b));
    assert_int_equal(b.state, SCHED_BO_THROTTLED); /* back where it was */
    assert_true(b.rate == 10);
}

static void test_destination_down(void **state)
{
    (void)state;
    sched_backoff b;
    sched_backoff_init(&b, 20);
    /* A report for a time already past changes nothing. */
    assert_false(sched_backoff_down(&b, 100, 100));
    assert_true(sched_backoff_usable(&b));
    sched_backoff_apply(&b, &halve, 0);
    assert_true(sched_backoff_down(&b, 3000, 1000));
    assert_int_equal(b.state, SCHED_BO_SUSPENDED);
    assert_true(b.down);
    assert_false(sched_backoff_usable(&b));
    assert_int_equal(sched_backoff_next_ms(&b), 3000);
    /* An earlier probe time changes nothing; a later one extends. */
    assert_false(sched_backoff_down(&b, 2500, 1100));
    assert_false(sched_backoff_down(&b, 3000, 1100));
    assert_true(sched_backoff_down(&b, 4000, 1200));
    assert_int_equal(b.until_ms, 4000);
    /* A rule's longer suspension takes over the end, and the cause. */
    assert_true(sched_backoff_apply(&b, &suspend, 1300)); /* until 6300 */
    assert_false(b.down);
    assert_int_equal(b.until_ms, 6300);
    assert_true(sched_backoff_down(&b, 7000, 1400));
    assert_true(b.down);
    /* It ends at the probe time, back to the state it had. */
    assert_false(sched_backoff_tick(&b, 6999));
    assert_true(sched_backoff_tick(&b, 7000));
    assert_int_equal(b.state, SCHED_BO_THROTTLED);
    assert_false(b.down);
    assert_true(sched_backoff_usable(&b));
    /* DISABLED outranks it: a down report only ever lengthens it. */
    assert_true(sched_backoff_apply(&b, &disable, 8000)); /* until 17000 */
    assert_false(sched_backoff_down(&b, 9000, 8100));
    assert_int_equal(b.state, SCHED_BO_DISABLED);
    assert_true(sched_backoff_down(&b, 20000, 8200));
    assert_int_equal(b.state, SCHED_BO_DISABLED);
    assert_false(b.down);
    assert_int_equal(b.until_ms, 20000);
}

static void test_idle(void **state)
{
    (void)state;
    sched_backoff b;
    sched_backoff_init(&b, 20);
    assert_true(sched_backoff_idle(&b));
    sched_backoff_apply(&b, &halve, 0);
    assert_false(sched_backoff_idle(&b)); /* a halved rate not yet recovered */
    sched_backoff_tick(&b, 1000000);
    assert_true(sched_backoff_idle(&b));
    sched_backoff_down(&b, 1005000, 1000000);
    assert_false(sched_backoff_idle(&b)); /* an active suspension */
    sched_backoff_tick(&b, 1005000);
    assert_true(sched_backoff_idle(&b));
}

static void test_unlimited_base(void **state)
{
    (void)state;
    sched_backoff b;
    sched_backoff_init(&b, 0);
    sched_backoff_apply(&b, &halve, 0);
    assert_true(b.rate == SCHED_BO_UNLIMITED_START / 2);
    sched_backoff_tick(&b, 10000000);
    assert_int_equal(b.state, SCHED_BO_NORMAL);
    assert_true(b.rate == 0);
}

static void test_rules_match(void **state)
{
    (void)state;
    sl_backoff_rule user[] = {
        {(char *)"^421 4\\.7\\.0 .*slow down", (char *)"goo*", SL_BACKOFF_SUSPEND, 0, 0, 60000, 3},
    };
    sl_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.backoff = user;
    cfg.n_backoff = 1;
    sched_backoff_rules r;
    char *err = NULL;
    assert_int_equal(sched_backoff_rules_init(&r, &cfg, &err), 0);
    const struct {
        const char *site;
        unsigned code;
        const char *enh, *text;
        int want; /* index in r.rules, -1 none */
    } cases[] = {
        {"google", 421, "4.7.0", "please slow down", 0},
        {"yahoo", 421, "4.7.0", "please slow down", -1}, /* site glob */
        {"google", 421, "4.7.28", "421-4.7.28 unusual rate\r\n421 4.7.28 of mail", 1},
        {"x", 451, "4.7.650", "451 4.7.650 The mail server [1.2.3.4] has been temporarily rate "
                              "limited", 3},
        {"yahoo", 421, "4.7.0", "421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred",
         4},
        {"google", 550, "5.1.1", "no such user", -1},
        {"google", 421, "4.7.0", "TLS required", -1},
        /* Bounces: Microsoft's banned-IP reply disables the IP, on the
         * named site or an unconfigured outlook rollup, nowhere else. */
        {"microsoft", 550, "5.7.606",
         "550 5.7.606 Access denied, banned sending IP [1.2.3.4]. To request removal", 5},
        {"microsoft", 550, "", "550 Access denied, banned sending IP [1.2.3.4]", 5},
        {"x-com.mail.protection.outlook.com", 550, "5.7.606", "Access denied", 6},
        {"google", 550, "5.7.606", "Access denied, banned sending IP", -1},
        {"microsoft", 550, "5.7.6060", "something else", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const sl_backoff_rule *hit =
            sched_backoff_match(&r, cases[i].site, cases[i].code, cases[i].enh, cases[i].text);
        if (cases[i].want < 0)
            assert_null(hit);
        else
            assert_ptr_equal(hit, &r.rules[cases[i].want]);
    }
    assert_int_equal(r.rules[5].action, SL_BACKOFF_DISABLE_IP);
    assert_true(r.rules[5].duration_ms >= 3600000);
    sched_backoff_rules_free(&r);

    user[0].match = (char *)"([unclosed";
    assert_int_not_equal(sched_backoff_rules_init(&r, &cfg, &err), 0);
    assert_non_null(strstr(err, ":3:"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_halve_to_floor),       cmocka_unit_test(test_additive_recovery),
        cmocka_unit_test(test_halving_restarts_quiet_period),
        cmocka_unit_test(test_suspend_and_disable), cmocka_unit_test(test_unlimited_base),
        cmocka_unit_test(test_rules_match),         cmocka_unit_test(test_destination_down),
        cmocka_unit_test(test_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
