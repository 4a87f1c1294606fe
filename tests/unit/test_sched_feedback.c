/* Unit tests of scheduler/sched_feedback: which events suppress a recipient
 * and which are counted. No loop and no broker: the suppression list is in
 * memory, and the producer only queues (nothing is ever acknowledged). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kafka.h"
#include "metrics.h"
#include "sched_ctx.h"
#include "sched_feedback.h"
#include "sched_suppress.h"

static const char yaml[] = "kafka: { bootstrap: \"127.0.0.1:1\" }\n"
                           "scheduler: { default_tenant: dflt }\n";

typedef struct fx {
    sl_config *cfg;
    sl_producer *prod;
    sched_ctx ctx;
    sched_feedback *f;
} fx;

static int setup(void **state)
{
    fx *x = calloc(1, sizeof *x);
    char *err = NULL;
    assert_int_equal(sl_config_parse("t.yaml", yaml, strlen(yaml), &x->cfg, &err), 0);
    x->prod = sl_producer_new(x->cfg, NULL, &err);
    assert_non_null(x->prod);
    sched_ctx_init(&x->ctx, x->cfg, NULL, x->prod);
    x->ctx.supp = sched_suppress_new(&x->ctx, &err);
    assert_non_null(x->ctx.supp);
    x->f = sched_feedback_new(&x->ctx, &err);
    assert_non_null(x->f);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fx *x = *state;
    sched_feedback_free(x->f);
    sched_suppress_free(x->ctx.supp);
    sched_ctx_free(&x->ctx);
    sl_producer_free(x->prod);
    sl_config_free(x->cfg);
    free(x);
    return 0;
}

static sl_event ev(Sluice__V1__EventType type, const char *tenant, const char *rcpt)
{
    sl_event e = SLUICE__V1__EVENT__INIT;
    e.type = type;
    e.tenant = (char *)tenant;
    e.recipient = (char *)rcpt;
    e.site = (char *)"microsoft";
    e.job_id = (char *)"j1";
    return e;
}

static void test_complaint_suppresses(void **state)
{
    fx *x = *state;
    double before = sl_metric_get("sluice_complaints_total", "site=\"microsoft\"");
    sl_event e = ev(SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED, "acme", "Angry@Example.com");
    sched_feedback_event(x->f, &e, NULL);
    assert_true(sched_suppress_has(x->ctx.supp, "acme", "angry@example.com"));
    assert_false(sched_suppress_has(x->ctx.supp, "other", "angry@example.com"));
    assert_true(sl_metric_get("sluice_complaints_total", "site=\"microsoft\"") == before + 1);
    /* A repeated report counts again but adds nothing new. */
    double added = sl_metric_get("sluice_suppressions_added_total", "reason=\"complaint\"");
    sched_feedback_event(x->f, &e, NULL);
    assert_true(sl_metric_get("sluice_complaints_total", "site=\"microsoft\"") == before + 2);
    assert_true(sl_metric_get("sluice_suppressions_added_total", "reason=\"complaint\"") ==
                added);
    /* No tenant: the default tenant's list. */
    e = ev(SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED, "", "b@example.com");
    sched_feedback_event(x->f, &e, NULL);
    assert_true(sched_suppress_has(x->ctx.supp, "dflt", "b@example.com"));
}

static void test_unsubscribe_suppresses(void **state)
{
    fx *x = *state;
    double before = sl_metric_get("sluice_unsubscribes_total", NULL);
    double added = sl_metric_get("sluice_suppressions_added_total", "reason=\"unsubscribe\"");
    sl_event e = ev(SLUICE__V1__EVENT_TYPE__EVENT_UNSUBSCRIBED, "acme", "Leaving@Example.com");
    sched_feedback_event(x->f, &e, NULL);
    assert_true(sched_suppress_has(x->ctx.supp, "acme", "leaving@example.com"));
    assert_false(sched_suppress_has(x->ctx.supp, "other", "leaving@example.com"));
    assert_true(sl_metric_get("sluice_unsubscribes_total", NULL) == before + 1);
    assert_true(sl_metric_get("sluice_suppressions_added_total", "reason=\"unsubscribe\"") ==
                added + 1);
}

static void test_only_hard_invalid_bounces_and_complaints(void **state)
{
    fx *x = *state;
    const struct {
        Sluice__V1__EventType type;
        Sluice__V1__BounceClass cls;
        bool hard;
        bool suppressed;
    } cases[] = {
        {SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED, SLUICE__V1__BOUNCE_CLASS__BOUNCE_INVALID_RECIPIENT,
         true, true},
        {SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED, SLUICE__V1__BOUNCE_CLASS__BOUNCE_INVALID_RECIPIENT,
         false, false},
        {SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED, SLUICE__V1__BOUNCE_CLASS__BOUNCE_MAILBOX_FULL, true,
         false},
        {SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED, SLUICE__V1__BOUNCE_CLASS__BOUNCE_NONE, false,
         false},
        {SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED, SLUICE__V1__BOUNCE_CLASS__BOUNCE_NONE, false,
         false},
        {SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED, SLUICE__V1__BOUNCE_CLASS__BOUNCE_NONE, false,
         true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rcpt[64];
        snprintf(rcpt, sizeof rcpt, "r%zu@example.com", i);
        sl_event e = ev(cases[i].type, "t", rcpt);
        e.bounce_class = cases[i].cls;
        e.bounce_hard = cases[i].hard;
        sched_feedback_event(x->f, &e, NULL);
        assert_int_equal(sched_suppress_has(x->ctx.supp, "t", rcpt), cases[i].suppressed);
    }
}

static void test_event_name(void **state)
{
    (void)state;
    assert_string_equal(sl_event_type_name(SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED),
                        "COMPLAINED");
    sl_event e = ev(SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED, "acme", "a@example.com");
    sl_buf b = SL_BUF_INIT;
    sl_event_json(&e, &b);
    assert_non_null(strstr(b.data, "\"type\":\"COMPLAINED\""));
    sl_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_complaint_suppresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsubscribe_suppresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_hard_invalid_bounces_and_complaints, setup,
                                        teardown),
        cmocka_unit_test(test_event_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
