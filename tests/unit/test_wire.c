/* wire: version checks, fields appended and read in place, job ids, event
 * JSON, metrics rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "budget.h"
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

static sl_buf tiny_job(void)
{
    sl_job j = SLUICE__V1__JOB__INIT;
    j.version = SLUICE_WIRE_VERSION;
    j.job_id = "J1";
    j.tenant = "acme";
    j.domain = "Example.ORG";
    j.site = "old";
    j.priority = SLUICE__V1__PRIORITY__PRIORITY_TRANSACTIONAL;
    char *r[] = {"a@example.org"};
    j.recipients = r;
    j.n_recipients = 1;
    sl_buf b = SL_BUF_INIT;
    sl_pack(&j.base, &b);
    return b;
}

static void appended_fields_win(void **state)
{
    (void)state;
    sl_buf b = tiny_job();
    sl_wire_put_bytes(&b, SL_JOB_FIELD_DOMAIN, "example.org", 11);
    sl_wire_put_bytes(&b, SL_JOB_FIELD_SITE, "google", 6);
    sl_job *out = NULL;
    const char *why = NULL;
    assert_int_equal(sl_job_decode(b.data, b.len, &out, &why), 0);
    assert_string_equal(out->domain, "example.org");
    assert_string_equal(out->site, "google");
    assert_string_equal(out->job_id, "J1");
    sl_job_free(out);
    sl_job_fields f;
    assert_int_equal(sl_job_peek(b.data, b.len, &f, &why), 0);
    assert_int_equal(f.site.n, 6);
    assert_memory_equal(f.site.p, "google", 6);
    assert_int_equal(f.domain.n, 11);
    assert_memory_equal(f.domain.p, "example.org", 11);
    assert_int_equal(f.tenant.n, 4);
    assert_memory_equal(f.tenant.p, "acme", 4);
    assert_int_equal(f.campaign.n, 0);
    assert_int_equal(f.pool.n, 0);
    assert_int_equal(f.priority, SLUICE__V1__PRIORITY__PRIORITY_TRANSACTIONAL);
    sl_buf_free(&b);
}

/* sl_job_peek() refuses what sl_job_decode() refuses. */
static void peek_refuses_as_decode_does(void **state)
{
    (void)state;
    sl_buf b = tiny_job();
    sl_job_fields f;
    sl_job *out = NULL;
    const char *why = NULL;
    for (size_t cut = 1; cut < b.len; cut++) {
        int d = sl_job_decode(b.data, cut, &out, &why);
        sl_job_free(out);
        out = NULL;
        int p = sl_job_peek(b.data, cut, &f, &why);
        assert_int_equal(p != 0, d != 0);
    }
    /* The tenant (field 3, a string) as a varint. */
    sl_buf w = SL_BUF_INIT;
    sl_wire_put_varint(&w, 1, SLUICE_WIRE_VERSION);
    sl_wire_put_varint(&w, 3, 7);
    assert_int_not_equal(sl_job_decode(w.data, w.len, &out, &why), 0);
    assert_int_equal(sl_job_peek(w.data, w.len, &f, &why), SL_EPROTO);
    assert_string_equal(why, "malformed protobuf");
    /* A version from the future. */
    sl_buf_reset(&w);
    sl_wire_put_varint(&w, 1, SLUICE_WIRE_VERSION + 1);
    assert_int_equal(sl_job_peek(w.data, w.len, &f, &why), SL_EVERSION);
    /* An unknown field numbered above 2^29: protobuf-c keeps it, and so
     * peek reads past it (found by fuzzing). */
    sl_buf_reset(&w);
    sl_wire_put_varint(&w, 1, SLUICE_WIRE_VERSION);
    sl_wire_put_varint(&w, 0xe8400000u, 1);
    assert_int_equal(sl_job_decode(w.data, w.len, &out, &why), 0);
    sl_job_free(out);
    out = NULL;
    assert_int_equal(sl_job_peek(w.data, w.len, &f, &why), 0);
    /* Field number 0. */
    sl_buf_reset(&w);
    sl_wire_put_varint(&w, 1, SLUICE_WIRE_VERSION);
    sl_wire_put_varint(&w, 0, 1);
    assert_int_equal(sl_job_peek(w.data, w.len, &f, &why), SL_EPROTO);
    sl_buf_free(&w);
    sl_buf_free(&b);
}

/* A Dispatch put together from parts reads as the one encoded whole. */
static void dispatch_from_parts(void **state)
{
    (void)state;
    sl_buf job = tiny_job();
    sl_dispatch whole = SLUICE__V1__DISPATCH__INIT;
    whole.version = SLUICE_WIRE_VERSION;
    whole.site = "google";
    whole.source_ip = "192.0.2.1";
    whole.max_connections = 5;
    sl_buf b = SL_BUF_INIT;
    sl_pack(&whole.base, &b);
    sl_wire_put_bytes(&b, SL_DISPATCH_FIELD_POOL, "bulk", 4);
    sl_wire_put_bytes(&b, SL_DISPATCH_FIELD_ROUTE, "[::1]:25", 8);
    sl_wire_put_varint(&b, SL_DISPATCH_FIELD_SEND_AT, (uint64_t)1795400000123LL);
    sl_wire_put_double(&b, SL_DISPATCH_FIELD_RATE, 12.5);
    sl_wire_put_bytes(&b, SL_DISPATCH_FIELD_JOB, job.data, job.len);
    sl_dispatch *d = NULL;
    const char *why = NULL;
    assert_int_equal(sl_dispatch_decode(b.data, b.len, &d, &why), 0);
    assert_string_equal(d->site, "google");
    assert_string_equal(d->source_ip, "192.0.2.1");
    assert_int_equal(d->max_connections, 5);
    assert_string_equal(d->pool, "bulk");
    assert_string_equal(d->route, "[::1]:25");
    assert_int_equal(d->send_at_ms, 1795400000123LL);
    assert_true(d->rate_per_sec == 12.5);
    assert_string_equal(d->job->job_id, "J1");
    assert_string_equal(d->job->site, "old");
    sl_dispatch_free(d);
    sl_buf_free(&b);
    sl_buf_free(&job);
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

/* A NUL anywhere in a string field is found on the encoded job, inside map
 * entries and MX hosts too; NULs in raw (bytes) are not strings. */
static void nul_fields_found(void **state)
{
    (void)state;
    char *r_ok[] = {"a@example.org"};
    char rcpt_nul[] = "a@example.org\0b";
    const struct {
        const char *what;
        const char *want;
    } cases[] = {{"none", NULL},       {"rcpt", "recipients"}, {"id", "job_id"},
                 {"var", "vars"},       {"meta", "meta"},       {"mx", "mx"},
                 {"raw", NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_job j = SLUICE__V1__JOB__INIT;
        j.version = SLUICE_WIRE_VERSION;
        j.job_id = "J1";
        j.recipients = r_ok;
        j.n_recipients = 1;
        sl_buf b = SL_BUF_INIT;
        sl_pack(&j.base, &b);
        /* Append the field with a NUL by hand: protobuf-c would stop at it. */
        const char *w = cases[i].what;
        if (!strcmp(w, "rcpt"))
            sl_wire_put_bytes(&b, 8, rcpt_nul, sizeof rcpt_nul - 1);
        else if (!strcmp(w, "id"))
            sl_wire_put_bytes(&b, 2, "J\0x", 3);
        else if (!strcmp(w, "var") || !strcmp(w, "meta") || !strcmp(w, "mx")) {
            sl_buf e = SL_BUF_INIT;
            sl_wire_put_bytes(&e, 1, "k", 1);
            sl_wire_put_bytes(&e, 2, "v\0w", 3);
            if (!strcmp(w, "mx")) {
                sl_buf_reset(&e);
                sl_wire_put_bytes(&e, 1, "mx\0.evil", 8);
                sl_wire_put_varint(&e, 2, 10);
            }
            sl_wire_put_bytes(&b, !strcmp(w, "var") ? 12 : !strcmp(w, "meta") ? 17 : 19, e.data,
                              e.len);
            sl_buf_free(&e);
        } else if (!strcmp(w, "raw"))
            sl_wire_put_bytes(&b, 10, "a\0b", 3);
        const char *got = sl_job_nul_field(b.data, b.len);
        if (cases[i].want ? !got || strcmp(got, cases[i].want) : got != NULL)
            fail_msg("%s: got %s", w, got ? got : "(none)");
        sl_buf_free(&b);
    }
}

/* The budget's figures for the default, as docs/reliability.md states them. */
static void size_budget(void **state)
{
    (void)state;
    sl_config *cfg = sl_config_default();
    assert_int_equal(sl_budget_job_max(cfg), 1048576);
    assert_int_equal(sl_budget_message_max(cfg), 1015808);
    assert_int_equal(sl_budget_record_max(cfg), 1130496);
    assert_int_equal(sl_budget_topic_max(cfg), 1134592);
    assert_int_equal(sl_budget_dlq_copy_max(cfg), 1114112);
    cfg->scheduler.max_job_bytes = 0; /* the default, never unlimited */
    assert_int_equal(sl_budget_job_max(cfg), 1048576);
    cfg->scheduler.max_job_bytes = 4ull << 30;
    assert_int_equal(sl_budget_job_max(cfg), SL_BUDGET_JOB_CEILING);
    sl_config_free(cfg);
}

static void job_id_check(void **state)
{
    (void)state;
    static const struct {
        const char *id;
        const char *why; /* NULL: valid */
    } cases[] = {
        {"01JABCDEFGHJKMNPQRSTVWXYZ0", NULL},
        {"order-42.a_b:c", NULL},
        {"", "no job id"},
        {"a\r\nb", "job id contains CR or LF"},
        {"a\nb", "job id contains CR or LF"},
        {"a\rb", "job id contains CR or LF"},
        {"a b", "job id contains a space, a control character or non-ASCII"},
        {"a\tb", "job id contains a space, a control character or non-ASCII"},
        {"caf\xc3\xa9", "job id contains a space, a control character or non-ASCII"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = sl_job_id_check(cases[i].id);
        if (cases[i].why)
            assert_string_equal(got, cases[i].why);
        else
            assert_null(got);
    }
    assert_string_equal(sl_job_id_check(NULL), "no job id");
    char longid[SL_BUDGET_JOB_ID_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    assert_non_null(sl_job_id_check(longid));
    longid[SL_BUDGET_JOB_ID_MAX] = 0;
    assert_null(sl_job_id_check(longid));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(job_round_trip),   cmocka_unit_test(appended_fields_win),
        cmocka_unit_test(peek_refuses_as_decode_does), cmocka_unit_test(dispatch_from_parts),
        cmocka_unit_test(versions_refused),
        cmocka_unit_test(field_number_zero_refused),
        cmocka_unit_test(job_ids_unique_and_sortable), cmocka_unit_test(event_json),
        cmocka_unit_test(metrics_render), cmocka_unit_test(nul_fields_found),
        cmocka_unit_test(size_budget), cmocka_unit_test(job_id_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
