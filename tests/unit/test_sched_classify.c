/* Unit tests of scheduler/sched_classify: the job checks of the jobs-topic
 * contract (sched_classify_validate()) and the fields a producer must
 * leave empty (sched_classify_reset()). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "budget.h"
#include "sched_classify.h"

/* A decoded job as classify gets it (protobuf-c owned strings). */
static sl_job *job_with(const char *job_id, char **rcpts, size_t n)
{
    sl_job j = SLUICE__V1__JOB__INIT;
    j.version = SLUICE_WIRE_VERSION;
    j.job_id = (char *)job_id;
    j.domain = "example.org";
    j.recipients = rcpts;
    j.n_recipients = n;
    j.raw.data = (uint8_t *)"x\r\n";
    j.raw.len = 3;
    sl_buf b = SL_BUF_INIT;
    sl_pack(&j.base, &b);
    sl_job *out = NULL;
    const char *why = NULL;
    assert_int_equal(sl_job_decode(b.data, b.len, &out, &why), 0);
    sl_buf_free(&b);
    return out;
}

static void validate_table(void **state)
{
    (void)state;
    sl_config *cfg = sl_config_default();
    char long_id[300];
    memset(long_id, 'i', 256);
    long_id[256] = 0;
    char max_id[300];
    memset(max_id, 'i', 255);
    max_id[255] = 0;
    const struct {
        const char *id, *rcpt, *why;
    } cases[] = {
        {"ok-1", "a@example.org", NULL},
        {max_id, "a@example.org", NULL},
        {long_id, "a@example.org", "job id longer than 255 octets"},
        {"id\r\nX-Evil: 1", "a@example.org", "job id contains CR or LF"},
        {"id\x01", "a@example.org", "job id contains a space, a control character or non-ASCII"},
        {"id\x7f", "a@example.org", "job id contains a space, a control character or non-ASCII"},
        {"", "a@example.org", "no job id"},
        {"u8", "j\xc3\xb6rg@example.org", NULL},
        {"u8-bad", "j\xffrg@example.org", "invalid recipient address"},
        {"u8-cut", "j\xc3@example.org", "invalid recipient address"},
        {"other", "a@example.com", "recipient outside the job's domain"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *r[] = {(char *)cases[i].rcpt};
        sl_job *j = job_with(cases[i].id, r, 1);
        const char *why = sched_classify_validate(cfg, j);
        if (!cases[i].why ? why != NULL : !why || strcmp(why, cases[i].why))
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, why ? why : "(ok)",
                     cases[i].why ? cases[i].why : "(ok)");
        sl_job_free(j);
    }
    /* 100 recipients pass, 101 do not. */
    char *many[SL_BUDGET_JOB_RCPTS_MAX + 1];
    for (size_t i = 0; i <= SL_BUDGET_JOB_RCPTS_MAX; i++)
        many[i] = "m@example.org";
    sl_job *j = job_with("many", many, SL_BUDGET_JOB_RCPTS_MAX);
    assert_null(sched_classify_validate(cfg, j));
    sl_job_free(j);
    j = job_with("many", many, SL_BUDGET_JOB_RCPTS_MAX + 1);
    assert_string_equal(sched_classify_validate(cfg, j), "more than 100 recipients in one job");
    sl_job_free(j);
    sl_config_free(cfg);
}

static void reset_drops_what_the_scheduler_fills(void **state)
{
    (void)state;
    Sluice__V1__MxHost h = SLUICE__V1__MX_HOST__INIT, *hp[] = {&h};
    h.host = "mx.evil.example";
    h.preference = 10;
    char *r[] = {"a@example.org"};
    sl_job j = SLUICE__V1__JOB__INIT;
    j.version = SLUICE_WIRE_VERSION;
    j.job_id = "j";
    j.recipients = r;
    j.n_recipients = 1;
    j.site = "evil";
    j.mx = hp;
    j.n_mx = 1;
    j.null_mx = true;
    j.attempt = 4;
    j.not_before_ms = 123456789;
    sl_buf b = SL_BUF_INIT;
    sl_pack(&j.base, &b);
    for (int retried = 0; retried < 2; retried++) {
        sl_job *out = NULL;
        const char *why = NULL;
        assert_int_equal(sl_job_decode(b.data, b.len, &out, &why), 0);
        sched_classify_reset(out, retried);
        assert_int_equal(out->n_mx, 0);
        assert_false(out->null_mx);
        assert_string_equal(out->site, "");
        assert_int_equal(out->not_before_ms, 0);
        /* A retried job keeps its count; a producer's starts at 0. */
        assert_int_equal(out->attempt, retried ? 4 : 0);
        sl_job_free(out);
    }
    sl_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(validate_table),
        cmocka_unit_test(reset_drops_what_the_scheduler_fills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
