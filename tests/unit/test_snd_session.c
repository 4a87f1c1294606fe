/* Unit tests for sender/session.c's reply reading (common/smtp_reply.c
 * parses; the session keeps the verbatim text). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "session.h"
#include "util.h"

static void test_reply_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int code;
        const char *enh, *text;
    } ok[] = {
        {"250 2.0.0 Ok\r\n", 250, "2.0.0", "250 2.0.0 Ok"},
        {"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n", 250, "", "250-mx.test\n250-PIPELINING\n250 SIZE 100"},
        {"550 5.1.1 No such user\n", 550, "5.1.1", "550 5.1.1 No such user"},
        {"421\r\n", 421, "", "421"},
        {"451 4.7.650 rate\r\n", 451, "4.7.650", "451 4.7.650 rate"},
        {"250 2.0 not enh\r\n", 250, "", "250 2.0 not enh"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        snd_reply r = {0};
        size_t used = 0;
        assert_int_equal(snd_reply_read(ok[i].in, strlen(ok[i].in), &r, &used), 0);
        assert_int_equal(used, strlen(ok[i].in));
        assert_int_equal(r.code, ok[i].code);
        assert_string_equal(r.enh, ok[i].enh);
        assert_string_equal(r.text, ok[i].text);
        snd_reply_clear(&r);
    }
    static const char *bad[] = {"25 x\r\n", "abc\r\n", "250-a\r\n251 b\r\n", "150 x\r\n",
                                "250xok\r\n", "290 x\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snd_reply r = {0};
        size_t used;
        assert_int_equal(snd_reply_read(bad[i], strlen(bad[i]), &r, &used), SL_EPARSE);
        snd_reply_clear(&r);
    }
    /* An unfinished reply is read later, and what follows a reply stays. */
    snd_reply r = {0};
    size_t used;
    assert_int_equal(snd_reply_read("250-a\r\n250", 10, &r, &used), SL_EAGAIN);
    assert_int_equal(snd_reply_read("250 a\r\n354 b\r\n", 14, &r, &used), 0);
    assert_int_equal(used, 7);
    assert_string_equal(r.text, "250 a");
    snd_reply_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_reply_parse)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
