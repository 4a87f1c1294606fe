/*
 * test_api_mime - the MIME builder of sluice-api's inline messages: the
 * structure for each mix of bodies and attachments, encoded headers and
 * file names, base64 re-wrapped and checked, refused extra headers naming
 * the field, and that the output compiles as a template whose {{names}}
 * are the caller's. Also the keys file of sluice-api.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "api_keys.h"
#include "api_mime.h"
#include "template.h"
#include "util.h"

static char *build(const api_mime *m, char *why, size_t whylen)
{
    sl_buf b = SL_BUF_INIT;
    if (api_mime_build(m, &b, why, whylen) != 0) {
        sl_buf_free(&b);
        return NULL;
    }
    sl_buf_putc(&b, 0);
    return sl_buf_steal(&b, NULL);
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_text_only(void **state)
{
    (void)state;
    api_mime m = {.from = "a@example.net", .subject = "Hi {{name}}", .text = "line1\nline2"};
    char why[256];
    char *s = build(&m, why, sizeof why);
    assert_non_null(s);
    assert_non_null(strstr(s, "From: <a@example.net>\r\nTo: {{sluice.to}}\r\nSubject: Hi "
                              "{{name}}\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(s, "Content-Type: text/plain; charset=utf-8\r\n"
                              "Content-Transfer-Encoding: 7bit\r\n\r\nline1\r\nline2\r\n"));
    assert_null(strstr(s, "multipart"));
    for (const char *p = s; (p = strchr(p, '\n')); p++)
        assert_true(p > s && p[-1] == '\r'); /* no bare LF */
    sl_tmpl *t = NULL;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(s, strlen(s), &t, &err), 0);
    size_t n;
    const char *const *vars = sl_tmpl_vars(t, &n);
    assert_int_equal(n, 2);
    assert_string_equal(vars[0], API_MIME_TO_VAR);
    assert_string_equal(vars[1], "name");
    sl_tmpl_free(t);
    free(s);
}

static void test_alternative_and_attachments(void **state)
{
    (void)state;
    char b64[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(b64, "QUJD"); /* 160 characters: two lines of 76 and one of 8 */
    api_attachment att[] = {{"r.pdf", "application/pdf", b64},
                            {"Grüße.txt", NULL, "SGVsbG8=\n"}};
    api_mime m = {.from = "a@example.net",
                  .from_name = "Café",
                  .subject = "Grüße",
                  .text = "t",
                  .html = "<p>ü</p>",
                  .att = att,
                  .n_att = 2};
    char why[256];
    char *s = build(&m, why, sizeof why);
    assert_non_null(s);
    assert_non_null(strstr(s, "Subject: =?UTF-8?B?"));
    assert_non_null(strstr(s, "From: =?UTF-8?B?"));
    assert_non_null(strstr(s, "Content-Type: multipart/mixed;\r\n boundary=\"=_sluice_"));
    assert_non_null(strstr(s, "Content-Type: multipart/alternative;\r\n boundary=\"=_sluice_"));
    /* alternative: text before html; html is not ASCII: 8bit */
    assert_true(strstr(s, "text/plain") < strstr(s, "text/html"));
    assert_non_null(strstr(s, "text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit"));
    assert_non_null(strstr(s, "Content-Disposition: attachment; filename=\"r.pdf\""));
    assert_non_null(strstr(s, "filename*=UTF-8''Gr%C3%BC%C3%9Fe.txt"));
    assert_non_null(strstr(s, "Content-Type: application/octet-stream\r\n"));
    assert_non_null(strstr(s, "\r\nSGVsbG8=\r\n"));
    /* the base64 re-wrapped at 76 */
    char line[80];
    memset(line, 0, sizeof line);
    memcpy(line, b64, 76);
    assert_non_null(strstr(s, line));
    assert_int_equal(count(s, "--=_sluice_"), 2 + 3 + 2); /* alt 2+close, mixed 3+close */
    for (const char *p = s; *p;) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        assert_true(e - p <= 78);
        p = e + 2;
    }
    sl_tmpl *t = NULL;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(s, strlen(s), &t, &err), 0);
    sl_tmpl_free(t);
    free(s);
}

static void test_refusals(void **state)
{
    (void)state;
    char why[256];
    api_mime none = {.from = "a@example.net", .subject = "x"};
    assert_null(build(&none, why, sizeof why));
    assert_non_null(strstr(why, "text or html"));

    api_header bad[] = {{"Content-Type", "text/evil"}};
    api_mime m = {.from = "a@example.net", .text = "t", .headers = bad, .n_headers = 1};
    assert_null(build(&m, why, sizeof why));
    assert_non_null(strstr(why, "headers[0].name"));

    api_header inj[] = {{"X-Ok", "a\r\nBcc: victim@example.com"}};
    m.headers = inj;
    assert_null(build(&m, why, sizeof why));
    assert_non_null(strstr(why, "headers[0].value"));

    api_header sp[] = {{"X Bad", "v"}};
    m.headers = sp;
    assert_null(build(&m, why, sizeof why));

    m.n_headers = 0;
    api_attachment a[] = {{"f", NULL, "not base64!"}};
    m.att = a;
    m.n_att = 1;
    assert_null(build(&m, why, sizeof why));
    assert_string_equal(why, "attachments[0].content: not base64");
    api_attachment a2[] = {{"f", "nosubtype", "QUJD"}};
    m.att = a2;
    assert_null(build(&m, why, sizeof why));
    assert_non_null(strstr(why, "attachments[0].content_type"));
    api_attachment a3[] = {{"f", NULL, "QQ=A"}};
    m.att = a3;
    assert_null(build(&m, why, sizeof why));
}

static void test_keys(void **state)
{
    (void)state;
    char h[65];
    api_key_hash_hex("secret", 6, h);
    assert_string_equal(h, "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b");
    char *text = xasprintf("# keys\n\n%s tenant=acme domains=example.net,*.Example.ORG rate=60\n",
                           h);
    api_keys *k = NULL;
    char *err = NULL;
    assert_int_equal(api_keys_parse("keys", text, strlen(text), &k, &err), 0);
    assert_int_equal(k->n, 1);
    assert_null(api_keys_find(k, "secreT"));
    api_key *key = api_keys_find(k, "secret");
    assert_non_null(key);
    assert_string_equal(key->tenant, "acme");
    assert_true(api_key_domain_allowed(key, "example.net"));
    assert_true(api_key_domain_allowed(key, "mail.example.org"));
    assert_false(api_key_domain_allowed(key, "example.com"));
    /* 60 per minute: a burst of 60, then one a second */
    assert_int_equal(api_key_take(k, key, 60, 1000), 0);
    assert_int_equal(api_key_take(k, key, 1, 1000), 2);
    assert_int_equal(api_key_take(k, key, 1, 2001), 0);
    api_keys_free(k);
    free(text);

    static const char *const bad[] = {"abc tenant=x\n", "%s\n", "%s tenant=x colour=red\n",
                                      "%s tenant=x\n%s tenant=y\n", "%s tenant=x rate=fast\n"};
    static const char *const want[] = {"keys:1: 'abc", "keys:1: tenant=NAME is required",
                                       "keys:1: unknown field 'colour'",
                                       "keys:2: the same key as line 1", "keys:1: rate 'fast'"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *t = xasprintf(bad[i], h, h);
        err = NULL;
        assert_int_not_equal(api_keys_parse("keys", t, strlen(t), &k, &err), 0);
        assert_non_null(err);
        if (strncmp(err, want[i], strlen(want[i])) != 0)
            fail_msg("case %zu: got '%s', want '%s...'", i, err, want[i]);
        free(err);
        free(t);
    }

    /* A NUL byte is refused: the keys after it, and the restrictions of
     * the line it cuts, must not vanish without a word. */
    char *t = xasprintf("%s tenant=x domains=a.example\n%s tenant=y\n", h, h);
    size_t tl = strlen(t);
    t[64 + 1 + 8] = 0; /* after "tenant=x", before its domains */
    err = NULL;
    assert_int_equal(api_keys_parse("keys", t, tl, &k, &err), SL_ECONFIG);
    assert_non_null(err);
    assert_string_equal(err, "keys:1: the file contains a NUL byte");
    free(err);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_only),
        cmocka_unit_test(test_alternative_and_attachments),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
