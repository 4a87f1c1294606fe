/*
 * test_stats_count - the counting behind `sluice stats`: every outcome
 * type, bounce classes, repeats dropped, latency percentiles, JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "stats_count.h"

typedef struct {
    Sluice__V1__EventType type;
    const char *job, *rcpt, *site;
    uint32_t attempt;
    int64_t created, ts;
    Sluice__V1__BounceClass cls;
    bool hard;
} ev_case;

#define T(x) SLUICE__V1__EVENT_TYPE__EVENT_##x
#define B(x) SLUICE__V1__BOUNCE_CLASS__BOUNCE_##x

static const ev_case events[] = {
    {T(ACCEPTED), "j1", "a@x.example", "", 0, 1000, 1000, 0, false},
    {T(ACCEPTED), "j2", "b@x.example", "", 0, 1000, 1000, 0, false},
    {T(ACCEPTED), "j3", "c@y.example", "", 0, 1000, 1000, 0, false},
    {T(ACCEPTED), "j4", "d@y.example", "", 0, 1000, 1000, 0, false},
    {T(ACCEPTED), "j5", "e@y.example", "", 0, 1000, 1000, 0, false},
    {T(DEFERRED), "j1", "a@x.example", "google", 0, 1000, 2000, 0, false},
    {T(DELIVERED), "j1", "a@x.example", "google", 1, 1000, 4000, 0, false},
    {T(DELIVERED), "j1", "a@x.example", "google", 1, 1000, 4000, 0, false}, /* repeat */
    {T(DELIVERED), "j2", "b@x.example", "google", 0, 1000, 1100, 0, false},
    {T(BOUNCED), "j3", "c@y.example", "microsoft", 0, 1000, 1500, B(INVALID_RECIPIENT), true},
    {T(BOUNCED), "j4", "d@y.example", "microsoft", 0, 1000, 1500, B(MAILBOX_FULL), false},
    {T(BOUNCED), "j4", "d@y.example", "microsoft", 1, 1000, 9500, B(INVALID_RECIPIENT), true},
    {T(SUPPRESSED), "j6", "f@y.example", "", 0, 1000, 1001, 0, false},
    {T(EXPIRED), "j5", "e@y.example", "microsoft", 3, 1000, 90000, 0, false},
    {T(REJECTED), "j7", "g@z.example", "", 0, 1000, 1001, 0, false},
    {T(COMPLAINED), "j2", "b@x.example", "google", 0, 1000, 86400000, 0, false},
    {T(COMPLAINED), "j2", "b@x.example", "google", 0, 1000, 86400000, 0, false}, /* repeat */
    {T(UNSUBSCRIBED), "j1", "a@x.example", "google", 0, 1000, 90000000, 0, false},
    {T(UNSUBSCRIBED), "j1", "a@x.example", "google", 0, 1000, 90000000, 0, false}, /* repeat */
};

static void feed(sluice_stats *st, bool by_site)
{
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        const ev_case *c = &events[i];
        sl_event e = SLUICE__V1__EVENT__INIT;
        e.version = 1;
        e.type = c->type;
        e.job_id = (char *)c->job;
        e.recipient = (char *)c->rcpt;
        e.site = (char *)c->site;
        e.attempt = c->attempt;
        e.created_at_ms = c->created;
        e.timestamp_ms = c->ts;
        e.bounce_class = c->cls;
        e.bounce_hard = c->hard;
        if (sluice__stats_seen(st, &e)) {
            st->duplicates++;
            continue;
        }
        sluice__stats_add(&st->total, &e);
        if (by_site)
            sluice__stats_add(sluice__stats_group(st, c->site), &e);
    }
    sluice__stats_finish(st);
}

static void test_totals(void **state)
{
    (void)state;
    sluice_stats st;
    sluice__stats_init(&st);
    feed(&st, false);
    const sluice_stats_group *t = &st.total;
    assert_int_equal(st.duplicates, 3);
    assert_int_equal(t->accepted, 5);
    assert_int_equal(t->delivered, 2);
    assert_int_equal(t->deferred, 1);
    assert_int_equal(t->bounced, 3);
    assert_int_equal(t->hard, 2);
    assert_int_equal(t->soft, 1);
    assert_int_equal(t->by_class[B(INVALID_RECIPIENT)], 2);
    assert_int_equal(t->by_class[B(MAILBOX_FULL)], 1);
    assert_int_equal(t->suppressed, 1);
    assert_int_equal(t->expired, 1);
    assert_int_equal(t->rejected, 1);
    assert_int_equal(t->complained, 1);
    assert_int_equal(t->unsubscribed, 1);
    /* Latencies of the two deliveries: 100 ms and 3000 ms. */
    assert_int_equal(t->n_lat, 2);
    assert_int_equal(sluice__stats_pct(t->lat, t->n_lat, 50), 100);
    assert_int_equal(sluice__stats_pct(t->lat, t->n_lat, 99), 3000);
    assert_int_equal(st.n, 0);
    sluice__stats_free(&st);
}

static void test_groups_and_json(void **state)
{
    (void)state;
    sluice_stats st;
    sluice__stats_init(&st);
    feed(&st, true);
    /* "-" (no site yet), google, microsoft. */
    assert_int_equal(st.n, 3);
    const sluice_stats_group *google = sluice__stats_group(&st, "google");
    const sluice_stats_group *ms = sluice__stats_group(&st, "microsoft");
    const sluice_stats_group *none = sluice__stats_group(&st, "");
    assert_int_equal(st.n, 3); /* lookups found, did not add */
    assert_int_equal(google->delivered, 2);
    assert_int_equal(google->deferred, 1);
    assert_int_equal(ms->bounced, 3);
    assert_int_equal(ms->expired, 1);
    assert_int_equal(none->accepted, 5);
    assert_int_equal(none->suppressed, 1);
    sl_buf b = SL_BUF_INIT;
    sluice__stats_group_json(ms, &b);
    assert_non_null(strstr(b.data, "\"group\":\"microsoft\""));
    assert_non_null(strstr(b.data, "\"bounced\":3,\"bounced_hard\":2,\"bounced_soft\":1"));
    assert_non_null(strstr(b.data, "\"invalid-recipient\":2"));
    assert_non_null(strstr(b.data, "\"latency_ms\":null"));
    sl_buf_reset(&b);
    sluice__stats_group_json(google, &b);
    assert_non_null(strstr(b.data, "\"rejected\":0,\"complained\":1,\"unsubscribed\":1,"));
    assert_non_null(strstr(b.data, "\"latency_ms\":{\"count\":2,\"p50\":100,\"p90\":3000"));
    sl_buf_free(&b);
    sluice__stats_free(&st);
}

static void test_percentiles(void **state)
{
    (void)state;
    int64_t v[100];
    for (int i = 0; i < 100; i++)
        v[i] = i + 1;
    assert_int_equal(sluice__stats_pct(v, 100, 50), 50);
    assert_int_equal(sluice__stats_pct(v, 100, 90), 90);
    assert_int_equal(sluice__stats_pct(v, 100, 99), 99);
    assert_int_equal(sluice__stats_pct(v, 100, 100), 100);
    assert_int_equal(sluice__stats_pct(v, 1, 99), 1);
    assert_int_equal(sluice__stats_pct(v, 0, 50), -1);
}

/* Many distinct outcomes: the seen-set grows and never loses one. */
static void test_seen_grows(void **state)
{
    (void)state;
    sluice_stats st;
    sluice__stats_init(&st);
    char job[32];
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 50000; i++) {
            snprintf(job, sizeof job, "job%d", i);
            sl_event e = SLUICE__V1__EVENT__INIT;
            e.type = T(DELIVERED);
            e.job_id = job;
            e.recipient = "r@x.example";
            assert_int_equal(sluice__stats_seen(&st, &e), pass == 1);
        }
    sluice__stats_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_totals),
        cmocka_unit_test(test_groups_and_json),
        cmocka_unit_test(test_percentiles),
        cmocka_unit_test(test_seen_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
