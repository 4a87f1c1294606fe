/* Unit tests of scheduler/sched_control: which control record is in force
 * for which job, what the newest record of a key does to the one before,
 * and what is refused. No loop and no broker: records are applied as the
 * reader would hand them over. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sched_control.h"
#include "sched_ctx.h"
#include "wire.h"

static sched_ctx ctx; /* loop NULL: in memory only */

/* Apply a Control as the topic would carry it, under key (NULL: its own). */
static bool put_at(sched_control *c, int scope, const char *tenant, const char *target,
                   int action, const char *key, int64_t at_ms)
{
    sl_control m = SLUICE__V1__CONTROL__INIT;
    m.version = SLUICE_WIRE_VERSION;
    m.scope = (Sluice__V1__ControlScope)scope;
    m.tenant = (char *)tenant;
    m.target = (char *)target;
    m.action = (Sluice__V1__ControlAction)action;
    m.origin = "cli";
    m.reason = "wrong list";
    m.at_ms = at_ms;
    sl_buf b = SL_BUF_INIT;
    sl_pack(&m.base, &b);
    char *own = sl_control_record_key(&m);
    bool changed = sched_control_apply(c, key ? key : own, b.data, b.len);
    free(own);
    sl_buf_free(&b);
    return changed;
}

static bool put(sched_control *c, int scope, const char *tenant, const char *target, int action,
                const char *key)
{
    return put_at(c, scope, tenant, target, action, key, 1000);
}

#define CAMP SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_CAMPAIGN
#define SITE SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_SITE
#define SUSPEND SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_SUSPEND
#define RESUME SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_RESUME
#define CANCEL SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_CANCEL
#define PURGE SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_PURGE

static void test_campaign_lifecycle(void **state)
{
    (void)state;
    char *err = NULL;
    sched_control *c = sched_control_new(&ctx, &err);
    assert_non_null(c);
    assert_true(sched_control_loaded(c));
    assert_int_equal(sched_control_job(c, "acme", "spring", "google", 0, NULL), SCHED_CONTROL_GO);
    assert_true(put(c, CAMP, "acme", "spring", SUSPEND, NULL));
    const char *why = NULL;
    assert_int_equal(sched_control_job(c, "acme", "spring", "google", 0, &why), SCHED_CONTROL_HOLD);
    assert_string_equal(why, "campaign acme/spring suspended (cli: wrong list)");
    /* Another tenant's campaign of the same name, and no campaign, go. */
    assert_int_equal(sched_control_job(c, "other", "spring", "google", 0, NULL), SCHED_CONTROL_GO);
    assert_int_equal(sched_control_job(c, "acme", "", "google", 0, NULL), SCHED_CONTROL_GO);
    /* The same again changes nothing. */
    assert_false(put(c, CAMP, "acme", "spring", SUSPEND, NULL));
    assert_true(put(c, CAMP, "acme", "spring", RESUME, NULL));
    assert_int_equal(sched_control_job(c, "acme", "spring", "google", 0, NULL), SCHED_CONTROL_GO);
    assert_true(put(c, CAMP, "acme", "spring", CANCEL, NULL));
    assert_int_equal(sched_control_job(c, "acme", "spring", "google", 0, &why),
                     SCHED_CONTROL_CANCEL);
    assert_string_equal(why, "campaign acme/spring cancelled (cli: wrong list)");
    /* A tombstone lifts it too. */
    assert_true(sched_control_apply(c, "campaign/acme/spring", NULL, 0));
    assert_int_equal(sched_control_count(c), 0);
    sched_control_free(c);
}

static void test_site_and_precedence(void **state)
{
    (void)state;
    char *err = NULL;
    sched_control *c = sched_control_new(&ctx, &err);
    assert_true(put(c, SITE, "ops", "google", SUSPEND, NULL));
    /* Every tenant's jobs to the site are held, other sites are not. */
    assert_int_equal(sched_control_job(c, "acme", "", "google", 0, NULL), SCHED_CONTROL_HOLD);
    assert_int_equal(sched_control_job(c, "x", "y", "google", 0, NULL), SCHED_CONTROL_HOLD);
    assert_int_equal(sched_control_job(c, "acme", "", "yahoo", 0, NULL), SCHED_CONTROL_GO);
    /* A cancelled campaign is cancelled even on a suspended site. */
    assert_true(put(c, CAMP, "acme", "spring", CANCEL, NULL));
    assert_int_equal(sched_control_job(c, "acme", "spring", "google", 0, NULL),
                     SCHED_CONTROL_CANCEL);
    assert_int_equal(sched_control_count(c), 2);
    sched_control_free(c);
}

static void test_refused(void **state)
{
    (void)state;
    char *err = NULL;
    sched_control *c = sched_control_new(&ctx, &err);
    /* A site cannot be cancelled. */
    assert_false(put(c, SITE, "ops", "google", CANCEL, NULL));
    /* A record under another key than its own: compaction would keep the
     * wrong one, so it is ignored. */
    assert_false(put(c, CAMP, "acme", "spring", SUSPEND, "campaign/acme/autumn"));
    assert_false(put(c, CAMP, "acme", "", SUSPEND, NULL));
    assert_false(sched_control_apply(c, "site/google", "\xff\xff garbage", 10));
    assert_int_equal(sched_control_count(c), 0);
    assert_int_equal(sched_control_job(c, "acme", "spring", "google", 0, NULL), SCHED_CONTROL_GO);
    sched_control_free(c);
}

static void test_site_purge(void **state)
{
    (void)state;
    char *err = NULL;
    sched_control *c = sched_control_new(&ctx, &err);
    assert_true(put_at(c, SITE, "ops", "google", PURGE, NULL, 5000));
    const char *why = NULL;
    /* What was created before the purge is cancelled, later jobs go. */
    assert_int_equal(sched_control_job(c, "acme", "x", "google", 4999, &why),
                     SCHED_CONTROL_CANCEL);
    assert_string_equal(why, "site google purged (cli: wrong list)");
    assert_int_equal(sched_control_job(c, "acme", "x", "google", 5000, NULL), SCHED_CONTROL_GO);
    assert_int_equal(sched_control_job(c, "acme", "x", "yahoo", 1, NULL), SCHED_CONTROL_GO);
    /* A suspension of the site is another key: both stand. */
    assert_true(put(c, SITE, "ops", "google", SUSPEND, NULL));
    assert_true(put(c, SITE, "ops", "google", RESUME, NULL));
    assert_int_equal(sched_control_job(c, "acme", "x", "google", 4999, NULL),
                     SCHED_CONTROL_CANCEL);
    /* A later purge moves the line; a campaign cannot be purged. */
    assert_true(put_at(c, SITE, "ops", "google", PURGE, NULL, 9000));
    assert_int_equal(sched_control_job(c, "acme", "x", "google", 8000, NULL),
                     SCHED_CONTROL_CANCEL);
    assert_false(put(c, CAMP, "acme", "spring", PURGE, NULL));
    assert_int_equal(sched_control_count(c), 1);
    sched_control_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_campaign_lifecycle),
        cmocka_unit_test(test_site_and_precedence),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_site_purge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
