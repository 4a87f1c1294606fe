/*
 * test_submit_msg - the From header domains sluice-submit checks (display
 * names, comments, quoted '@', folding, groups, several mailboxes; none,
 * two From fields and no domain are errors) and the Received header it
 * adds (content, folding, no client text that breaks the header).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "submit_msg.h"
#include "util.h"

static void test_from_domains(void **state)
{
    (void)state;
    static const struct {
        const char *msg;
        int rc;
        const char *want; /* domains joined by ' ' */
    } cases[] = {
        {"From: a@Example.NET\r\n\r\nbody\r\n", 0, "example.net"},
        {"from:a@example.net\r\n\r\n", 0, "example.net"},
        {"Subject: x\r\nFrom: \"Alice\" <alice@example.net>\r\n\r\n", 0, "example.net"},
        {"From: \"bank@evil.example\" <alice@example.net>\r\n\r\n", 0, "example.net"},
        {"From: Alice (at evil.example @x) <alice@example.net> (c)\r\n\r\n", 0, "example.net"},
        {"From: Alice\r\n <alice@example.net>\r\nTo: b@c.d\r\n\r\n", 0, "example.net"},
        {"From: a@example.net, \"B, C\" <b@other.example>\r\n\r\n", 0,
         "example.net other.example"},
        {"From: Team: a@example.net, b@example.org;\r\n\r\n", 0, "example.net example.org"},
        {"From: \"x@y\"@example.net\r\n\r\n", 0, "example.net"},
        {"From: a@example.net.\r\n\r\n", 0, "example.net"},
        {"From: a@bücher.de\r\n\r\n", 0, "xn--bcher-kva.de"},
        {"From : a@example.net\r\n\r\n", 0, "example.net"},
        /* A From in the body is not a header. */
        {"Subject: x\r\n\r\nFrom: a@example.net\r\n", SL_ENOTFOUND, NULL},
        {"Subject: x\r\n\r\n", SL_ENOTFOUND, NULL},
        {"X-From: a@example.net\r\n\r\n", SL_ENOTFOUND, NULL},
        {"From: a@example.net\r\nFrom: b@evil.example\r\n\r\n", SL_EEXISTS, NULL},
        {"From: alice\r\n\r\n", SL_EPARSE, NULL},
        {"From: Alice <alice>\r\n\r\n", SL_EPARSE, NULL},
        {"From: <alice@example.net\r\n\r\n", SL_EPARSE, NULL},
        {"From: a@\r\n\r\n", SL_EPARSE, NULL},
        {"From: \r\n\r\n", SL_EPARSE, NULL},
        {"From: a@exa mple.net\r\n\r\n", SL_EPARSE, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char **d = NULL;
        size_t n = 0;
        int rc = sub_msg_from_domains(cases[i].msg, strlen(cases[i].msg), &d, &n);
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d want %d", i, rc, cases[i].rc);
        if (rc)
            continue;
        sl_buf b = SL_BUF_INIT;
        for (size_t k = 0; k < n; k++) {
            if (k)
                sl_buf_putc(&b, ' ');
            sl_buf_puts(&b, d[k]);
        }
        if (strcmp(b.data, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\" want \"%s\"", i, b.data, cases[i].want);
        sl_buf_free(&b);
        sub_strv_free(d, n);
    }
}

static void test_received(void **state)
{
    (void)state;
    sub_received r = {.helo = "client.example",
                      .peer_ip = "192.0.2.7",
                      .by = "submit.example.net",
                      .tls = true,
                      .auth = true,
                      .esmtp = true,
                      .tls_version = "TLSv1.3",
                      .tls_cipher = "TLS_AES_256_GCM_SHA384",
                      .id = "01HZY3K6Q8R0S9T1V2W3X4Y5Z6",
                      .rcpt = "bob@example.com",
                      .now_ms = 1700000000000LL};
    sl_buf b = SL_BUF_INIT;
    sub_msg_received(&b, &r);
    assert_string_equal(b.data,
                        "Received: from client.example ([192.0.2.7]) by submit.example.net\r\n"
                        "\t(sluice-submit) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
                        "\twith ESMTPSA id 01HZY3K6Q8R0S9T1V2W3X4Y5Z6 for <bob@example.com>;\r\n"
                        "\tTue, 14 Nov 2023 22:13:20 +0000\r\n");
    sl_buf_reset(&b);

    /* Client-supplied text cannot break out of the field. */
    sub_received r2 = {.helo = "evil\r\nBcc: x@y (z);", .peer_ip = "::1", .now_ms = 0};
    sub_msg_received(&b, &r2);
    assert_string_equal(b.data, "Received: from evil__Bcc:_x@y__z__ ([::1]) by localhost (sluice-submit) with\r\n"
                                "\tSMTP; Thu, 01 Jan 1970 00:00:00 +0000\r\n");
    /* Every line stays short. */
    for (char *p = b.data, *e; (e = strstr(p, "\r\n")); p = e + 2)
        assert_true(e - p <= 78);
    sl_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_domains),
        cmocka_unit_test(test_received),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
