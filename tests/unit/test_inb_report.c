/* Unit tests for inbound/inb_report: DSN, ARF and plain bounces in the
 * shapes real receivers send (the .eml files of tests/data/inbound), read with GMime,
 * and their replies classified by the one policy (common/trouble.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "inb_report.h"
#include "trouble.h"
#include "util.h"
#include "wire.h"

static char *slurp(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/inbound/%s", SLUICE_TEST_DATA, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    sl_buf b = SL_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sl_buf_append(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return sl_buf_steal(&b, NULL);
}

static const struct {
    const char *file;
    inb_report_kind kind;
    const char *final_rcpt, *action, *status;
    int code;
    const char *enh;
    const char *cls; /* the policy's class */
    int hard;
    const char *message_id, *return_path;
} dsn_cases[] = {
    {"dsn-postfix.eml", INB_REPORT_DSN, "nobody@example.org", "failed", "5.1.1", 550, "5.1.1",
     "invalid-recipient", 1, "01JEXAMPLE0000000000000000@example.net",
     "bounce+abcdef@bounce.example.net"},
    {"dsn-exim.eml", INB_REPORT_DSN, "ghost@example.com", "failed", "5.0.0", 550, "5.0.0",
     "invalid-recipient", 1, /* the corpus's Exim wording */ "01JEXAMPLE0000000000000001@example.net",
     "bounce+abcdef@bounce.example.net"},
    {"dsn-o365.eml", INB_REPORT_DSN, "nosuchuser@contoso.com", "failed", "5.1.10", 550, "5.1.10",
     "invalid-recipient", 1, "01JEXAMPLE0000000000000002@example.net",
     "bounce+abcdef@bounce.example.net"},
    {"dsn-gmail.eml", INB_REPORT_DSN, "doesnotexist9876@gmail.com", "failed", "5.1.1", 550, "5.1.1",
     "invalid-recipient", 1, "01JEXAMPLE0000000000000003@example.net",
     "bounce+abcdef@bounce.example.net"},
    {"dsn-delayed.eml", INB_REPORT_DSN, "slow@example.org", "delayed", "4.4.1", 450, "4.4.1",
     NULL, 0, "", ""},
    {"bounce-qmail.eml", INB_REPORT_PLAIN, "", "failed", "5.1.1", 550, "5.1.1",
     "invalid-recipient", 1, "", ""},
};

static void test_dsn_shapes(void **state)
{
    (void)state;
    sl_config *cfg = sl_config_default();
    sl_trouble *t = NULL;
    char *err = NULL;
    assert_int_equal(sl_trouble_new(cfg, &t, &err), 0);
    for (size_t i = 0; i < sizeof dsn_cases / sizeof dsn_cases[0]; i++) {
        size_t len;
        char *msg = slurp(dsn_cases[i].file, &len);
        inb_report r;
        inb_report_parse(msg, len, &r);
        print_message("%s\n", dsn_cases[i].file);
        assert_int_equal(r.kind, dsn_cases[i].kind);
        assert_int_equal(r.n_rcpts, 1);
        assert_string_equal(r.rcpts[0].final_recipient, dsn_cases[i].final_rcpt);
        assert_string_equal(r.rcpts[0].action, dsn_cases[i].action);
        assert_string_equal(r.rcpts[0].status, dsn_cases[i].status);
        assert_string_equal(r.orig_message_id, dsn_cases[i].message_id);
        assert_string_equal(r.orig_return_path, dsn_cases[i].return_path);
        sl_reply rep = {0};
        inb_report_reply(&r.rcpts[0], &rep);
        assert_int_equal(rep.code, dsn_cases[i].code);
        assert_string_equal(rep.enh, dsn_cases[i].enh);
        if (dsn_cases[i].cls) {
            bool hard = false;
            int rule = -1;
            Sluice__V1__BounceClass c = sl_trouble_classify(t, &rep, &hard, &rule);
            assert_string_equal(sl_bounce_class_name(c), dsn_cases[i].cls);
            assert_int_equal(hard, dsn_cases[i].hard);
        }
        sl_reply_free(&rep);
        inb_report_free(&r);
        free(msg);
    }
    sl_trouble_free(t);
    sl_config_free(cfg);
}

/* A multi-line Gmail reply quoted in a folded Diagnostic-Code keeps all its
 * words: the policy reads the whole text. */
static void test_gmail_diagnostic_whole(void **state)
{
    (void)state;
    size_t len;
    char *msg = slurp("dsn-gmail.eml", &len);
    inb_report r;
    inb_report_parse(msg, len, &r);
    assert_non_null(strstr(r.rcpts[0].diagnostic, "does not exist"));
    assert_non_null(strstr(r.rcpts[0].diagnostic, "NoSuchUser"));
    inb_report_free(&r);
    free(msg);
}

static void test_arf_shapes(void **state)
{
    (void)state;
    size_t len;
    char *msg = slurp("arf-yahoo.eml", &len);
    inb_report r;
    inb_report_parse(msg, len, &r);
    assert_int_equal(r.kind, INB_REPORT_ARF);
    assert_string_equal(r.feedback_type, "abuse");
    assert_string_equal(r.user_agent, "Yahoo!-Mail-Feedback/2.0");
    assert_string_equal(r.original_mail_from, "bounce+abcdef@bounce.example.net");
    assert_string_equal(r.original_rcpt_to, "reader@yahoo.com");
    assert_string_equal(r.source_ip, "198.51.100.7");
    assert_string_equal(r.orig_return_path, "bounce+abcdef@bounce.example.net");
    assert_string_equal(r.orig_message_id, "01JEXAMPLE0000000000000004@example.net");
    assert_int_equal(r.n_rcpts, 0);
    inb_report_free(&r);
    free(msg);

    /* Microsoft JMRP: no Original-Rcpt-To, To redacted; the recipient is in
     * X-HmXmrOriginalRecipient, the job in the Message-ID. */
    msg = slurp("arf-microsoft.eml", &len);
    inb_report_parse(msg, len, &r);
    assert_int_equal(r.kind, INB_REPORT_ARF);
    assert_string_equal(r.feedback_type, "abuse");
    assert_string_equal(r.user_agent, "Hotmail FBL");
    assert_string_equal(r.original_mail_from, "");
    assert_string_equal(r.original_rcpt_to, "");
    assert_string_equal(r.orig_to, "reader@outlook.com");
    assert_string_equal(r.orig_message_id, "01JEXAMPLE0000000000000005@example.net");
    inb_report_free(&r);
    free(msg);
}

static void test_not_reports(void **state)
{
    (void)state;
    size_t len;
    char *msg = slurp("autoreply.eml", &len);
    inb_report r;
    inb_report_parse(msg, len, &r);
    assert_int_equal(r.kind, INB_REPORT_OTHER); /* "555 1234" is not a reply */
    assert_int_equal(r.n_rcpts, 0);
    inb_report_free(&r);
    free(msg);
    static const char *const junk[] = {"", "\r\n\r\n", "garbage without headers",
                                       "Content-Type: multipart/report; report-type=delivery-status;"
                                       " boundary=x\r\n\r\n--x\r\nContent-Type: message/"
                                       "delivery-status\r\n\r\n\r\n\r\nAction\r\n--x"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        inb_report_parse(junk[i], strlen(junk[i]), &r);
        assert_int_equal(r.n_rcpts, 0);
        inb_report_free(&r);
    }
}

int main(void)
{
    inb_report_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dsn_shapes),
        cmocka_unit_test(test_gmail_diagnostic_whole),
        cmocka_unit_test(test_arf_shapes),
        cmocka_unit_test(test_not_reports),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
