/* util: buffer, durations, rates, globs, the error table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util.h"

static void buf_grows_and_stays_terminated(void **state)
{
    (void)state;
    sl_buf b = SL_BUF_INIT;
    for (int i = 0; i < 1000; i++)
        sl_buf_printf(&b, "%d,", i);
    assert_int_equal(b.data[b.len], 0);
    assert_true(b.len > 3000);
    sl_buf_consume(&b, 2);
    assert_memory_equal(b.data, "1,2,", 4);
    size_t n;
    char *s = sl_buf_steal(&b, &n);
    assert_null(b.data);
    assert_int_equal(strlen(s), n);
    free(s);
}

static void json_escapes_controls(void **state)
{
    (void)state;
    sl_buf b = SL_BUF_INIT;
    sl_buf_json_str(&b, "a\"b\\\r\n\x01", 7);
    assert_string_equal(b.data, "\"a\\\"b\\\\\\r\\n\\u0001\"");
    sl_buf_free(&b);
}

static void json_keeps_utf8_and_replaces_invalid_bytes(void **state)
{
    (void)state;
    sl_buf b = SL_BUF_INIT;
    const char in[] = "caf\xc3\xa9 \xff \xe2\x82 \xed\xa0\x80 \xc0\xaf";
    sl_buf_json_str(&b, in, sizeof in - 1);
    assert_string_equal(b.data, "\"caf\xc3\xa9 \\ufffd \\ufffd\\ufffd \\ufffd\\ufffd\\ufffd "
                                "\\ufffd\\ufffd\"");
    sl_buf_free(&b);
}

static void parse_refuses_infinities(void **state)
{
    (void)state;
    int64_t ms;
    double r;
    /* Found by fuzz_config: these overflowed int64 or slipped past checks. */
    assert_int_equal(sl_parse_duration_ms("inf", &ms), SL_EPARSE);
    assert_int_equal(sl_parse_duration_ms("nan", &ms), SL_EPARSE);
    assert_int_equal(sl_parse_duration_ms("1e300d", &ms), SL_EPARSE);
    assert_int_equal(sl_parse_rate("inf/s", &r), SL_EPARSE);
    assert_int_equal(sl_parse_rate("nan/s", &r), SL_EPARSE);
}

static void durations(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t ms;
        int rc;
    } cases[] = {{"30s", 30000, 0},  {"5m", 300000, 0}, {"2h", 7200000, 0}, {"3d", 259200000, 0},
                 {"250ms", 250, 0},  {"10", 10000, 0},  {"1.5s", 1500, 0},  {"", 0, SL_EPARSE},
                 {"5x", 0, SL_EPARSE}, {"-1s", 0, SL_EPARSE}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = 0;
        assert_int_equal(sl_parse_duration_ms(cases[i].in, &ms), cases[i].rc);
        if (!cases[i].rc)
            assert_int_equal(ms, cases[i].ms);
    }
}

static void rates(void **state)
{
    (void)state;
    double r;
    assert_int_equal(sl_parse_rate("50/s", &r), 0);
    assert_true(r == 50.0);
    assert_int_equal(sl_parse_rate("3000/min", &r), 0);
    assert_true(r == 50.0);
    assert_int_equal(sl_parse_rate("3600/h", &r), 0);
    assert_true(r == 1.0);
    assert_int_equal(sl_parse_rate("50", &r), SL_EPARSE);
    assert_int_equal(sl_parse_rate("50/week", &r), SL_EPARSE);
}

static void globs(void **state)
{
    (void)state;
    assert_true(sl_glob_match("*.google.com", "aspmx.l.GOOGLE.com"));
    assert_false(sl_glob_match("*.google.com", "google.com"));
    assert_true(sl_glob_match("*", "anything"));
    assert_true(sl_glob_match("gmail.com", "GMAIL.COM"));
    assert_true(sl_glob_match("mx?.example.net", "mx1.example.net"));
    assert_false(sl_glob_match("*.test", "example.test.org"));
}

static void error_table(void **state)
{
    (void)state;
    assert_string_equal(sl_strerror(SL_ECONFIG), "invalid configuration");
    assert_string_equal(sl_errname(SL_ETIMEOUT), "SL_ETIMEOUT");
    assert_string_equal(sl_strerror(-2), "No such file or directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buf_grows_and_stays_terminated),
        cmocka_unit_test(json_escapes_controls),
        cmocka_unit_test(json_keeps_utf8_and_replaces_invalid_bytes),
        cmocka_unit_test(parse_refuses_infinities),
        cmocka_unit_test(durations),
        cmocka_unit_test(rates),
        cmocka_unit_test(globs),
        cmocka_unit_test(error_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
