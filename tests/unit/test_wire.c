/* wire: version checks, job ids, event JSON, metrics rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metrics.h"
#include "wire.h"

static void job_round_trip(void **state)
{
    (void)state;
    sl_job j = SLUICE__V1__JOB__INIT;
    j.version = SLUICE_WIRE_VERSION;
    j.job_id = "J1";
    j.domain = "example.org";
    char *r[] = {"a@example.org"};
    j.recipients = r;
    j.n_recipients = 1;
    sl_buf b = SL_BUF_INIT;
    sl_pack(&j.base, &b);
    sl_job *out = NULL;
    const char *why = NULL;
    assert_int_equal(sl_job_decode(b.data, b.len, &out, &why), 0);
    assert_string_equal(out->job_id, "J1");
    assert_string_equal(out->recipients[0], "a@example.org");
    sl_job_free(out);
    sl_buf_free(&b);
}

static void versions_refused(void **state)
{
    (void)state;
    sl_buf b = SL_BUF_INIT;
    const char *why = NULL;
    sl_job *out = NULL;
    sl_job j = SLUICE__V1__JOB__INIT;
    j.job_id = "J";
    sl_pack(&j.base, &b); /* version 0: missing */
    assert_int_equal(sl_job_decode(b.data, b.len, &out, &why), SL_EVERSION);
    assert_string_equal(why, "missing wire version");
    j.version = SLUICE_WIRE_VERSION + 1;
    sl_pack(&j.base, &b);
    assert_int_equal(sl_job_decode(b.data, b.len, &out, &why), SL_EVERSION);
    assert_string_equal(why, "unsupported wire version");
    assert_int_equal(sl_job_decode("\xff\xff\xff", 3, &out, &why), SL_EPROTO);
    assert_string_equal(why, "malformed protobuf");
    sl_buf_free(&b);
}

static void field_number_zero_refused(void **state)
{
    (void)state;
    /* Found by fuzz_job_decode: version=1, then field 0 behind an overlong
     * tag (0x81 0x00) that protobuf-c accepts but never re-encodes. */
    static const unsigned char bad[] = {0x08, 0x01, 0x81, 0x00, 1, 2, 3, 4, 5, 6, 7, 8};
    sl_job *j = NULL;
    sl_event *e = NULL;
    const char *why = NULL;
    assert_int_equal(sl_job_decode(bad, sizeof bad, &j, &why), SL_EPROTO);
    assert_string_equal(why, "malformed protobuf");
    assert_int_equal(sl_event_decode(bad, sizeof bad, &e, &why), SL_EPROTO);
}

static void job_ids_unique_and_sortable(void **state)
{
    (void)state;
    char prev[27] = "", id[27];
    for (int i = 0; i < 10000; i++) {
        sl_job_id_new(id);
        assert_int_equal(strlen(id), 26);
        assert_true(strcmp(id, prev) > 0);
        memcpy(prev, id, 27);
    }
    char *mid = sl_message_id("ABC", "example.net");
    assert_string_equal(mid, "<ABC@example.net>");
    free(mid);
}

static void event_json(void **state)
{
    (void)state;
    sl_job j = SLUICE__V1__JOB__INIT;
    j.version = 1;
    j.job_id = "J2";
    j.tenant = "t1";
    char *r[] = {"x\"y@example.org"};
    j.recipients = r;
    j.n_recipients = 1;
    sl_event e;
    sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED, &j, "sender");
    e.smtp_code = 550;
    e.enhanced_code = "5.1.1";
    e.bounce_class = SLUICE__V1__BOUNCE_CLASS__BOUNCE_INVALID_RECIPIENT;
    e.bounce_hard = 1;
    sl_buf b = SL_BUF_INIT;
    sl_event_json(&e, &b);
    assert_non_null(strstr(b.data, "\"type\":\"BOUNCED\""));
    assert_non_null(strstr(b.data, "\"recipient\":\"x\\\"y@example.org\""));
    assert_non_null(strstr(b.data, "\"bounce_class\":\"invalid-recipient\""));
    assert_non_null(strstr(b.data, "\"smtp_code\":550"));
    assert_non_null(strstr(b.data, "\"stage\":\"sender\""));
    sl_buf_free(&b);
}

static void metrics_render(void **state)
{
    (void)state;
    sl_metric_help("sluice_test_total", SL_METRIC_COUNTER, "A test counter.");
    sl_metric_inc("sluice_test_total", "site=\"google\"", 2);
    sl_metric_inc("sluice_test_total", "site=\"google\"", 1);
    sl_metric_observe("sluice_test_seconds", NULL, 0.02);
    assert_true(sl_metric_get("sluice_test_total", "site=\"google\"") == 3);
    sl_buf b = SL_BUF_INIT;
    sl_metrics_render(&b);
    assert_non_null(strstr(b.data, "# HELP sluice_test_total A test counter."));
    assert_non_null(strstr(b.data, "# TYPE sluice_test_total counter"));
    assert_non_null(strstr(b.data, "sluice_test_total{site=\"google\"} 3\n"));
    assert_non_null(strstr(b.data, "sluice_test_seconds_bucket{le=\"0.025\"} 1\n"));
    assert_non_null(strstr(b.data, "sluice_test_seconds_bucket{le=\"0.01\"} 0\n"));
    assert_non_null(strstr(b.data, "sluice_test_seconds_count 1\n"));
    sl_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(job_round_trip),   cmocka_unit_test(versions_refused),
        cmocka_unit_test(field_number_zero_refused),
        cmocka_unit_test(job_ids_unique_and_sortable), cmocka_unit_test(event_json),
        cmocka_unit_test(metrics_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
