/* Unit tests for sender/message.c: dot-stuffing, From domain, 8-bit and
 * SMTPUTF8 detection, and building a raw job's message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "message.h"

static void test_dotstuff(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"a\r\n", "a\r\n.\r\n"},
        {".a\r\n", "..a\r\n.\r\n"},
        {"x\r\n.\r\ny\r\n", "x\r\n..\r\ny\r\n.\r\n"},
        {"no newline", "no newline\r\n.\r\n"},
        {"a\r\n..b\r\n", "a\r\n...b\r\n.\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_buf b = SL_BUF_INIT;
        snd_msg_dotstuff(cases[i].in, strlen(cases[i].in), &b);
        assert_string_equal(b.data, cases[i].out);
        sl_buf_free(&b);
    }
}

static void test_from_domain(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *dom;
    } cases[] = {
        {"From: A <a@Example.NET>\r\n\r\nx", "example.net"},
        {"Subject: s\r\nfrom: b@x.test\r\n\r\n", "x.test"},
        {"From: \"Q, R\"\r\n <q@fold.test>\r\n\r\n", "fold.test"},
        {"To: a@b\r\n\r\nFrom: c@d\r\n", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        int rc = snd_msg_from_domain(cases[i].msg, strlen(cases[i].msg), out, sizeof out);
        if (cases[i].dom) {
            assert_int_equal(rc, 0);
            assert_string_equal(out, cases[i].dom);
        } else {
            assert_int_equal(rc, SL_ENOTFOUND);
        }
    }
}

static void test_8bit_and_smtputf8(void **state)
{
    (void)state;
    const char *ascii = "From: a@b\r\n\r\nhello\r\n";
    const char *body8 = "From: a@b\r\n\r\nh\xc3\xa9llo\r\n";
    const char *hdr8 = "From: \xc3\xa9@b\r\n\r\nhello\r\n";
    char *r_ascii[] = {"x@y.test"};
    char *r_utf8[] = {"jos\xc3\xa9@y.test"};
    assert_false(snd_msg_has_8bit(ascii, strlen(ascii)));
    assert_true(snd_msg_has_8bit(body8, strlen(body8)));
    assert_false(snd_msg_needs_smtputf8("a@b", r_ascii, 1, body8, strlen(body8)));
    assert_true(snd_msg_needs_smtputf8("a@b", r_ascii, 1, hdr8, strlen(hdr8)));
    assert_true(snd_msg_needs_smtputf8("a@b", r_utf8, 1, ascii, strlen(ascii)));
}

static void test_build_raw(void **state)
{
    (void)state;
    sl_job job;
    sluice__v1__job__init(&job);
    job.job_id = "J1";
    job.mail_from = "b@bounce.test";
    const char *raw = "From: x@From.Test\nSubject: s\n\nbody\n";
    job.raw.data = (uint8_t *)raw;
    job.raw.len = strlen(raw);
    sl_buf out = SL_BUF_INIT;
    char *err = NULL;
    assert_int_equal(snd_msg_build(&job, NULL, 0, &out, &err), 0);
    assert_non_null(strstr(out.data, "Message-ID: <J1@from.test>\r\n"));
    assert_non_null(strstr(out.data, "Date: "));
    assert_non_null(strstr(out.data, "\r\n\r\nbody\r\n"));
    assert_null(strstr(out.data, "body\n\n"));
    /* A message that already has a Message-ID keeps it. */
    const char *raw2 = "Message-ID: <keep@x>\r\nFrom: x@y\r\n\r\nb\r\n";
    job.raw.data = (uint8_t *)raw2;
    job.raw.len = strlen(raw2);
    assert_int_equal(snd_msg_build(&job, NULL, 0, &out, &err), 0);
    assert_non_null(strstr(out.data, "<keep@x>"));
    assert_null(strstr(out.data, "<J1@"));
    /* No content at all is an error with a message. */
    job.raw.len = 0;
    assert_int_equal(snd_msg_build(&job, NULL, 0, &out, &err), SL_EINVAL);
    assert_non_null(err);
    free(err);
    sl_buf_free(&out);
}

/* A job id with CR/LF used to fail as "message has no header section"
 * (the Message-ID built from it broke the header); it is named now. */
static void test_build_bad_job_id(void **state)
{
    (void)state;
    sl_job job;
    sluice__v1__job__init(&job);
    job.job_id = "J1\r\nBcc: x@evil.test";
    const char *raw = "From: x@from.test\n\nbody\n";
    job.raw.data = (uint8_t *)raw;
    job.raw.len = strlen(raw);
    sl_buf out = SL_BUF_INIT;
    char *err = NULL;
    assert_int_equal(snd_msg_build(&job, NULL, 0, &out, &err), SL_EINVAL);
    assert_string_equal(err, "job id contains CR or LF");
    free(err);
    sl_buf_free(&out);
}

static void test_list_unsub(void **state)
{
    (void)state;
    static const char m[] = "From: a@example.net\r\nSubject: s\r\n\r\nList-Unsubscribe: body\r\n";
    sl_buf b = SL_BUF_INIT;
    sl_buf_append(&b, m, sizeof m - 1);
    assert_false(snd_msg_has_field(b.data, b.len, "List-Unsubscribe")); /* only in the body */
    assert_true(snd_msg_has_field(b.data, b.len, "subject"));
    assert_int_equal(snd_msg_list_unsub(&b, "https://u.example.net", "bounce.example.net", "tok1"),
                     0);
    static const char want[] = "List-Unsubscribe: <https://u.example.net/u/tok1>,\r\n"
                               " <mailto:unsub+tok1@bounce.example.net>\r\n"
                               "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
    assert_int_equal(b.len, sizeof want - 1 + sizeof m - 1);
    assert_memory_equal(b.data, want, sizeof want - 1);
    assert_memory_equal(b.data + sizeof want - 1, m, sizeof m - 1);
    /* Present already (the author's own link): left alone. */
    size_t len = b.len;
    assert_int_equal(snd_msg_list_unsub(&b, "https://x", NULL, "tok2"), 1);
    assert_int_equal(b.len, len);
    sl_buf_free(&b);
    /* No mailto domain: the https URI alone. */
    static const char m2[] = "From: a@example.net\r\n\r\nbody\r\n";
    sl_buf_append(&b, m2, sizeof m2 - 1);
    assert_int_equal(snd_msg_list_unsub(&b, "https://u.example.net", NULL, "t"), 0);
    static const char want2[] = "List-Unsubscribe: <https://u.example.net/u/t>\r\n"
                                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
    assert_memory_equal(b.data, want2, sizeof want2 - 1);
    sl_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dotstuff),
        cmocka_unit_test(test_from_domain),
        cmocka_unit_test(test_8bit_and_smtputf8),
        cmocka_unit_test(test_build_raw),
        cmocka_unit_test(test_build_bad_job_id),
        cmocka_unit_test(test_list_unsub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
