/* Unit tests for sender/mtasts.c: the MTA-STS policy parser (RFC 8461
 * 3.2) accepts what the RFC allows and rejects the rest with a reason,
 * the TXT record's id, and MX pattern matching (a wildcard is one label). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mtasts.h"

static void test_parse_good(void **state)
{
    (void)state;
    const char *t = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                    "mx: *.Example.NET\r\nmax_age: 604800\r\nx-ext: ignored\r\n";
    snd_sts_policy p;
    char *err = NULL;
    assert_int_equal(snd_sts_parse(t, strlen(t), &p, &err), 0);
    assert_int_equal(p.mode, SND_STS_ENFORCE);
    assert_int_equal(p.max_age_s, 604800);
    assert_int_equal(p.n_mx, 2);
    assert_string_equal(p.mx[1], "*.example.net");
    assert_true(snd_sts_mx_match(&p, "mail.example.com"));
    assert_true(snd_sts_mx_match(&p, "MAIL.example.com."));
    assert_true(snd_sts_mx_match(&p, "mx1.example.net"));
    assert_false(snd_sts_mx_match(&p, "example.net"));      /* no label for the * */
    assert_false(snd_sts_mx_match(&p, "a.b.example.net"));  /* two labels */
    assert_false(snd_sts_mx_match(&p, "xmail.example.com"));
    assert_false(snd_sts_mx_match(&p, "mail.example.com.evil.test"));
    snd_sts_policy c;
    snd_sts_policy_copy(&c, &p);
    assert_true(snd_sts_mx_match(&c, "mail.example.com"));
    snd_sts_policy_clear(&c);
    snd_sts_policy_clear(&p);

    /* LF line ends, white space around values, testing and none (no mx). */
    t = "version: STSv1\nmode:testing  \nmx:mx.a.test\nmax_age:86400\n";
    assert_int_equal(snd_sts_parse(t, strlen(t), &p, &err), 0);
    assert_int_equal(p.mode, SND_STS_TESTING);
    assert_int_equal(p.max_age_s, 86400);
    assert_string_equal(snd_sts_mode_name(p.mode), "testing");
    snd_sts_policy_clear(&p);
    t = "version: STSv1\nmode: none\nmax_age: 0";
    assert_int_equal(snd_sts_parse(t, strlen(t), &p, &err), 0);
    assert_int_equal(p.mode, SND_STS_NONE);
    assert_false(snd_sts_mx_match(&p, "anything.test"));
    snd_sts_policy_clear(&p);
}

static void test_parse_bad(void **state)
{
    (void)state;
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"", "no version"},
        {"mode: enforce\nversion: STSv1\nmx: a.test\nmax_age: 1\n", "first line"},
        {"version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", "not STSv1"},
        {"version: STSv1\nmode: enforcing\nmx: a.test\nmax_age: 1\n", "mode must be"},
        {"version: STSv1\nmode: enforce\nmode: testing\nmx: a.test\nmax_age: 1\n", "twice"},
        {"version: STSv1\nmode: enforce\nmx: a.test\n", "no max_age"},
        {"version: STSv1\nmx: a.test\nmax_age: 1\n", "no mode"},
        {"version: STSv1\nmode: enforce\nmax_age: 86400\n", "no mx"},
        {"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n", "digits"},
        {"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 12345678901\n", "digits"},
        {"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n", "exceeds"},
        {"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1d\n", "digits"},
        {"version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n", "mx is not"},
        {"version: STSv1\nmode: enforce\nmx: *.*.a.test\nmax_age: 1\n", "mx is not"},
        {"version: STSv1\nmode: enforce\nmx: a.test.\nmax_age: 1\n", "mx is not"},
        {"version: STSv1\nmode: enforce\nmx: a test\nmax_age: 1\n", "mx is not"},
        {"version: STSv1\nmode: enforce\nmx: foo*.a.test\nmax_age: 1\n", "mx is not"},
        {"version: STSv1\nmode: enforce\nmx a.test\nmax_age: 1\n", "not a \"key: value\""},
        {"version: STSv1\nmode: enforce\n\nmx: a.test\nmax_age: 1\n", "empty line"},
        {"<html>version: STSv1</html>\n", "bad key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snd_sts_policy p;
        char *err = NULL;
        int rc = snd_sts_parse(cases[i].text, strlen(cases[i].text), &p, &err);
        if (rc == 0)
            fail_msg("case %zu accepted: %s", i, cases[i].text);
        assert_non_null(err);
        if (!strstr(err, cases[i].why))
            fail_msg("case %zu: error \"%s\", want \"%s\"", i, err, cases[i].why);
        assert_null(p.mx);
        free(err);
    }
    /* A NUL byte inside the body. */
    snd_sts_policy p;
    char *err = NULL;
    assert_true(snd_sts_parse("version: STSv1\0x", 16, &p, &err) < 0);
    assert_non_null(strstr(err, "NUL"));
    free(err);
}

static void test_txt_id(void **state)
{
    (void)state;
    char id[33], *err = NULL;
    assert_int_equal(snd_sts_txt_id("v=STSv1; id=20160831085700Z;", id, &err), 0);
    assert_string_equal(id, "20160831085700Z");
    assert_int_equal(snd_sts_txt_id("v=STSv1;id=abc", id, &err), 0);
    assert_string_equal(id, "abc");
    assert_int_equal(snd_sts_txt_id("v=STSv1; ext=1; id=x9 ;", id, &err), 0);
    assert_string_equal(id, "x9");
    static const char *bad[] = {
        "v=STSv1;", "v=STSv1; id=;", "v=STSv1; id=a-b;", "v=STSv10; id=1",
        "id=1; v=STSv1", "v=STSv1; id=123456789012345678901234567890123",
        "v=STSv1; id=1; id=2", "v=STSv1 id=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = NULL;
        if (snd_sts_txt_id(bad[i], id, &err) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(err);
        free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_txt_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
