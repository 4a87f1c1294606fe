/* Unit tests for what the sender's session keeps of a reply: it parses
 * each reply once with sl_reply_parse() (common/smtp_reply.c), and events
 * carry the raw form the parser keeps beside the parsed lines. */
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
        sl_reply r = {0};
        size_t used = 0;
        assert_int_equal(sl_reply_parse(ok[i].in, strlen(ok[i].in), &r, &used), 0);
        assert_int_equal(used, strlen(ok[i].in));
        assert_int_equal(r.code, ok[i].code);
        assert_string_equal(r.enh, ok[i].enh);
        assert_string_equal(r.raw, ok[i].text);
        sl_reply_free(&r);
    }
    static const char *bad[] = {"25 x\r\n", "abc\r\n", "250-a\r\n251 b\r\n", "150 x\r\n",
                                "250xok\r\n", "290 x\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_reply r = {0};
        size_t used;
        assert_int_equal(sl_reply_parse(bad[i], strlen(bad[i]), &r, &used), SL_EPARSE);
        assert_null(r.raw);
        sl_reply_free(&r);
    }
    /* An unfinished reply is read later, and what follows a reply stays. */
    sl_reply r = {0};
    size_t used;
    assert_int_equal(sl_reply_parse("250-a\r\n250", 10, &r, &used), SL_EAGAIN);
    assert_null(r.raw);
    assert_int_equal(sl_reply_parse("250 a\r\n354 b\r\n", 14, &r, &used), 0);
    assert_int_equal(used, 7);
    assert_string_equal(r.raw, "250 a");
    sl_reply_free(&r);
}

/* A result the sender makes itself (a refusal it decided, a failure it
 * saw) is the same one reply type: parsed from its text, the text kept
 * as given, and copies are deep. */
static void test_result_set_copy(void **state)
{
    (void)state;
    snd_result a = {0}, b = {0};
    snd_result_set(&a, 552, "5.3.4", "552 5.3.4 message of 9 bytes exceeds the server's SIZE 8");
    assert_int_equal(a.reply.code, 552);
    assert_string_equal(a.reply.enh, "5.3.4");
    assert_string_equal(a.reply.text, "message of 9 bytes exceeds the server's SIZE 8");
    assert_string_equal(a.reply.raw, "552 5.3.4 message of 9 bytes exceeds the server's SIZE 8");
    assert_int_equal(a.stage, SL_STAGE_MAIL);
    assert_int_equal(a.cond, SL_COND_REPLY);
    a.stage = SL_STAGE_CONNECT;
    a.cond = SL_COND_NETWORK;
    snd_result_copy(&b, &a);
    snd_result_clear(&a);
    assert_int_equal(b.reply.code, 552);
    assert_string_equal(b.reply.raw, "552 5.3.4 message of 9 bytes exceeds the server's SIZE 8");
    assert_string_equal(b.reply.text, "message of 9 bytes exceeds the server's SIZE 8");
    assert_int_equal(b.stage, SL_STAGE_CONNECT);
    assert_int_equal(b.cond, SL_COND_NETWORK);
    /* A plain text sluice wrote keeps its form; the code is not in it. */
    snd_result_set(&b, 451, "4.4.2", "connection closed");
    assert_string_equal(b.reply.raw, "connection closed");
    assert_string_equal(b.reply.text, "connection closed");
    assert_string_equal(b.reply.enh, "4.4.2");
    snd_result_clear(&b);
    assert_null(b.reply.raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_reply_parse),
                                       cmocka_unit_test(test_result_set_copy)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
