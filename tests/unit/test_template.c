/* Unit tests for common/template: compile errors, rendering rules, the
 * message helpers. Table-driven where the cases are many.
 *
 * Tool mode, for tests/integration/test_dkim_verify.py:
 *   test_template render TEMPLATE_FILE NAME=VALUE... >message
 * renders a template file with the given variables onto stdout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "template.h"

typedef struct compile_case {
    const char *body;
    const char *err_has; /* NULL: must compile */
} compile_case;

static const compile_case compile_cases[] = {
    {"From: a@b\nSubject: hi {{ name }}\n\nHello {{name}}\n", NULL},
    {"From: a@b\r\n\r\nbody without placeholders", NULL},
    {"From: a@b\nSubject: only headers\n", NULL},
    {"from: a@b\n\n{{a.b-c_d9}}", NULL},
    {"Subject: x\n\nno from", "no From"},
    {"", "empty"},
    {"\nbody only", "no header fields"},
    {"Hello {{name}}, this is no header\n\nbody", "not a header field"},
    {" From: a@b\n\nx", "white space"},
    {"From: a@b\n\nHello {{name\n}}", "valid placeholder"},
    {"From: a@b\n\nHello {{}}", "valid placeholder"},
    {"From: a@b\n\nHello {{na me}}", "valid placeholder"},
    {"From: a@b\n\nHello {{name}", "valid placeholder"},
    {"From: a@b\n\nHello {{na$me}}", "line 3"},
    {"From: a@b\nX-{{h}}: v\n\nx", "field name"},
};

static void test_compile_table(void **state)
{
    for (size_t i = 0; i < sizeof(compile_cases) / sizeof(compile_cases[0]); i++) {
        const compile_case *c = &compile_cases[i];
        sl_tmpl *t = NULL;
        char *err = NULL;
        int rc = sl_tmpl_compile(c->body, strlen(c->body), &t, &err);
        if (!c->err_has) {
            if (rc != 0)
                fail_msg("case %zu: unexpected error: %s", i, err);
            assert_non_null(t);
            sl_tmpl_free(t);
        } else {
            if (rc != SL_ETEMPLATE)
                fail_msg("case %zu: compiled but should fail with '%s'", i, c->err_has);
            assert_null(t);
            assert_non_null(err);
            if (!strstr(err, c->err_has))
                fail_msg("case %zu: error '%s' lacks '%s'", i, err, c->err_has);
            free(err);
        }
    }
}

static void test_vars_and_sections(void **state)
{
    const char *body = "From: \"{{sender}}\" <news@example.net>\nSubject: {{ subject }} for "
                       "{{name}}\n\nDear {{name}},\n{{offer}}\n";
    sl_tmpl *t;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(body, strlen(body), &t, &err), 0);
    size_t n;
    const char *const *v = sl_tmpl_vars(t, &n);
    assert_int_equal(n, 4);
    assert_string_equal(v[0], "sender");
    assert_string_equal(v[1], "subject");
    assert_string_equal(v[2], "name");
    assert_string_equal(v[3], "offer");
    assert_true(sl_tmpl_var_in_header(t, 0));
    assert_false(sl_tmpl_var_in_body(t, 0));
    assert_true(sl_tmpl_var_in_header(t, 2));
    assert_true(sl_tmpl_var_in_body(t, 2));
    assert_false(sl_tmpl_var_in_header(t, 3));
    assert_true(sl_tmpl_var_in_body(t, 3));
    size_t tl;
    const char *text = sl_tmpl_text(t, &tl);
    assert_non_null(strstr(text, "Subject: {{ subject }} for {{name}}\r\n\r\nDear"));
    sl_tmpl_free(t);
}

typedef struct render_case {
    const char *body;
    const char *names[4];
    const char *values[4];
    const char *want;    /* exact output, or NULL */
    const char *err_has; /* expected error substring, or NULL */
} render_case;

static const render_case render_cases[] = {
    /* LF template becomes CRLF, values substituted, final CRLF added. */
    {"From: a@b\nSubject: Hi {{name}}\n\nDear {{ name }},\nbye",
     {"name"},
     {"Ann"},
     "From: a@b\r\nSubject: Hi Ann\r\n\r\nDear Ann,\r\nbye\r\n",
     NULL},
    /* Missing variable: an error naming it, never a blank. */
    {"From: a@b\n\nDear {{name}} {{last}}", {"name"}, {"Ann"}, NULL, "'last' is missing"},
    /* Header injection attempts. */
    {"From: a@b\nSubject: {{s}}\n\nx", {"s"}, {"hi\r\nBcc: evil@x"}, NULL, "carriage return"},
    {"From: a@b\nSubject: {{s}}\n\nx", {"s"}, {"hi\nBcc: evil@x"}, NULL, "line feed"},
    {"From: a@b\nSubject: {{s}}\n\nx", {"s"}, {"hi\x1b[0m"}, NULL, "control character"},
    {"From: a@b\nSubject: {{s}}\n\nx", {"s"}, {"bad \xff utf8"}, NULL, "not valid UTF-8"},
    /* Tabs are fine in headers. */
    {"From: a@b\nSubject: {{s}}\n\nx", {"s"}, {"a\tb"}, "From: a@b\r\nSubject: a\tb\r\n\r\nx\r\n", NULL},
    /* The same value is fine in the body, line ends normalised. */
    {"From: a@b\n\n{{s}}", {"s"}, {"l1\nl2\rl3\r\nl4"}, "From: a@b\r\n\r\nl1\r\nl2\r\nl3\r\nl4\r\n", NULL},
    /* Dot lines are left alone for the SMTP layer. */
    {"From: a@b\n\n{{s}}\n", {"s"}, {".\n..x"}, "From: a@b\r\n\r\n.\r\n..x\r\n", NULL},
    /* Non-ASCII in a header: encoded-word; in the body: as is. */
    {"From: a@b\nSubject: {{s}}\n\n{{s}}", {"s"}, {"Grüße"},
     "From: a@b\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\nGrüße\r\n", NULL},
    /* A quoted display name: re-quoted with escapes when ASCII... */
    {"From: \"{{n}}\" <a@b>\n\nx", {"n"}, {"Ann \"The\" B\\"},
     "From: \"Ann \\\"The\\\" B\\\\\" <a@b>\r\n\r\nx\r\n", NULL},
    /* ...bare encoded-word otherwise. */
    {"From: \"{{n}}\" <a@b>\n\nx", {"n"}, {"Zoë"}, "From: =?UTF-8?B?Wm/Dqw==?= <a@b>\r\n\r\nx\r\n",
     NULL},
    /* A NULL value counts as missing. */
    {"From: a@b\n\n{{s}}", {"s"}, {NULL}, NULL, "'s' is missing"},
    /* Placeholders in a continuation line are header placeholders. */
    {"From: a@b\nSubject: a\n {{s}}\n\nx", {"s"}, {"b\nc"}, NULL, "line feed"},
    /* The first duplicate name wins. */
    {"From: a@b\n\n{{s}}", {"s", "s"}, {"one", "two"}, "From: a@b\r\n\r\none\r\n", NULL},
};

static void test_render_table(void **state)
{
    for (size_t i = 0; i < sizeof(render_cases) / sizeof(render_cases[0]); i++) {
        const render_case *c = &render_cases[i];
        sl_tmpl *t;
        char *err = NULL;
        if (sl_tmpl_compile(c->body, strlen(c->body), &t, &err) != 0)
            fail_msg("case %zu: compile: %s", i, err);
        size_t n = 0;
        while (n < 4 && c->names[n])
            n++;
        sl_buf out = SL_BUF_INIT;
        int rc = sl_tmpl_render_arrays(t, c->names, c->values, n, &out, &err);
        if (c->err_has) {
            if (rc != SL_ETEMPLATE)
                fail_msg("case %zu: rendered '%s', wanted error '%s'", i, out.data, c->err_has);
            if (!strstr(err, c->err_has))
                fail_msg("case %zu: error '%s' lacks '%s'", i, err, c->err_has);
            free(err);
        } else {
            if (rc != 0)
                fail_msg("case %zu: error %s", i, err);
            if (strcmp(out.data, c->want) != 0)
                fail_msg("case %zu: got\n%s\nwant\n%s", i, out.data, c->want);
        }
        sl_buf_free(&out);
        sl_tmpl_free(t);
    }
}

static bool nul_lookup(void *ctx, const char *name, const char **v, size_t *n)
{
    *v = "a\0b";
    *n = 3;
    return true;
}

static void test_nul_in_body_value(void **state)
{
    const char *body = "From: a@b\n\n{{s}}";
    sl_tmpl *t;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(body, strlen(body), &t, &err), 0);
    /* A lookup that returns a length spanning a NUL. */
    sl_buf out = SL_BUF_INIT;
    assert_int_equal(sl_tmpl_render(t, nul_lookup, NULL, &out, &err), SL_ETEMPLATE);
    assert_non_null(strstr(err, "NUL"));
    free(err);
    sl_buf_free(&out);
    sl_tmpl_free(t);
}


/* Decode one "=?UTF-8?B?...?=" run (with folding) back to bytes. */
static size_t b64val(char c)
{
    const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = strchr(t, c);
    return p ? (size_t)(p - t) : 0;
}

static void decode_words(const char *s, sl_buf *out)
{
    while ((s = strstr(s, "=?UTF-8?B?")) != NULL) {
        s += 10;
        const char *e = strstr(s, "?=");
        assert_non_null(e);
        for (const char *p = s; p + 3 < e + 1 && p < e; p += 4) {
            uint32_t v = (uint32_t)(b64val(p[0]) << 18 | b64val(p[1]) << 12 | b64val(p[2]) << 6 |
                                    b64val(p[3]));
            sl_buf_putc(out, (char)(v >> 16));
            if (p[2] != '=')
                sl_buf_putc(out, (char)(v >> 8));
            if (p[3] != '=')
                sl_buf_putc(out, (char)v);
        }
        s = e + 2;
    }
}

static void test_rfc2047_long(void **state)
{
    /* 60 two-byte and three-byte characters: must split into several words,
     * each <= 75 octets, never inside a character, and decode back. */
    sl_buf in = SL_BUF_INIT;
    for (int i = 0; i < 30; i++)
        sl_buf_puts(&in, "é€");
    assert_true(sl_utf8_valid(in.data, in.len));
    sl_buf enc = SL_BUF_INIT;
    sl_rfc2047_encode(&enc, in.data, in.len);
    assert_non_null(strstr(enc.data, "?=\r\n =?UTF-8?B?"));
    const char *p = enc.data;
    while (*p) {
        const char *e = strstr(p, "\r\n ");
        size_t wl = e ? (size_t)(e - p) : strlen(p);
        assert_true(wl <= 75);
        p += wl + (e ? 3 : 0);
    }
    sl_buf dec = SL_BUF_INIT;
    decode_words(enc.data, &dec);
    assert_int_equal(dec.len, in.len);
    assert_memory_equal(dec.data, in.data, in.len);
    sl_buf_free(&in);
    sl_buf_free(&enc);
    sl_buf_free(&dec);
}

static void test_utf8_valid(void **state)
{
    assert_true(sl_utf8_valid("plain", 5));
    assert_true(sl_utf8_valid("\xf0\x9f\x98\x80", 4));
    assert_false(sl_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(sl_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(sl_utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(sl_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
}

static void test_ensure_headers(void **state)
{
    sl_buf m = SL_BUF_INIT;
    sl_buf_puts(&m, "From: a@b\r\nSubject: x\r\n\r\nDate: not a header\r\n");
    assert_int_equal(sl_msg_ensure_headers(&m, "JOB1@example.net", 0), 0);
    assert_string_equal(m.data, "Message-ID: <JOB1@example.net>\r\nDate: Thu, 01 Jan 1970 "
                                "00:00:00 +0000\r\nFrom: a@b\r\nSubject: x\r\n\r\nDate: not a "
                                "header\r\n");
    /* Idempotent: both present now. */
    size_t len = m.len;
    assert_int_equal(sl_msg_ensure_headers(&m, "<other@x>", 1000), 0);
    assert_int_equal(m.len, len);
    sl_buf_reset(&m);
    sl_buf_puts(&m, "From: a@b\r\nmessage-id : <keep@x>\r\n\r\nbody\r\n");
    assert_int_equal(sl_msg_ensure_headers(&m, "<new@x>", 1751371200123), 0);
    assert_string_equal(m.data, "Date: Tue, 01 Jul 2025 12:00:00 +0000\r\nFrom: a@b\r\nmessage-id "
                                ": <keep@x>\r\n\r\nbody\r\n");
    assert_int_equal(sl_msg_ensure_headers(&m, "<a\r\nb@x>", 0), SL_EINVAL);
    sl_buf_reset(&m);
    sl_buf_puts(&m, "\r\nbody only\r\n");
    assert_int_equal(sl_msg_ensure_headers(&m, "<a@x>", 0), SL_EINVAL);
    sl_buf_free(&m);
}

static void test_build_simple(void **state)
{
    const char *to[] = {"x@example.org", "Jörg <j@example.org>"};
    sl_buf out = SL_BUF_INIT;
    char *err = NULL;
    const char *body = "line1\nline2\n";
    assert_int_equal(sl_msg_build_simple("Sluice <s@example.net>", to, 2, "Grüße", body,
                                         strlen(body), &out, &err),
                     0);
    assert_true(strncmp(out.data, "From: Sluice <s@example.net>\r\n", 30) == 0);
    assert_non_null(strstr(out.data, "\r\nTo: x@example.org,\r\n =?UTF-8?B?SsO2cmc=?= "
                                     "<j@example.org>\r\n"));
    assert_non_null(strstr(out.data, "\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"));
    assert_non_null(strstr(out.data, "\r\nDate: "));
    assert_non_null(strstr(out.data, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(out.data, "Content-Type: text/plain; charset=utf-8\r\n"));
    assert_non_null(strstr(out.data, "Content-Transfer-Encoding: 7bit\r\n\r\nline1\r\nline2\r\n"));
    assert_null(strstr(out.data, "Message-ID"));

    /* Non-ASCII body: 8bit. */
    sl_buf_reset(&out);
    assert_int_equal(sl_msg_build_simple("s@e", to, 1, "s", "für", 4, &out, &err), 0);
    assert_non_null(strstr(out.data, "Content-Transfer-Encoding: 8bit\r\n\r\nfür\r\n"));

    /* A 2000-octet line: quoted-printable with short lines. */
    sl_buf_reset(&out);
    char *longb = malloc(2001);
    memset(longb, 'a', 2000);
    longb[0] = '.';
    longb[1999] = '=';
    longb[2000] = 0;
    assert_int_equal(sl_msg_build_simple("s@e", to, 1, "s", longb, 2000, &out, &err), 0);
    assert_non_null(strstr(out.data, "Content-Transfer-Encoding: quoted-printable\r\n"));
    assert_non_null(strstr(out.data, "\r\n\r\n=2Eaaa"));
    assert_non_null(strstr(out.data, "=3D\r\n"));
    const char *p = strstr(out.data, "\r\n\r\n") + 4;
    while (*p) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        assert_true(e - p <= 76);
        p = e + 2;
    }
    free(longb);

    /* Injection through the subject or an address. */
    sl_buf_reset(&out);
    assert_int_equal(sl_msg_build_simple("s@e", to, 1, "a\r\nBcc: x", "b", 1, &out, &err),
                     SL_EINVAL);
    free(err);
    const char *badto[] = {"x@y\r\nBcc: z@w"};
    assert_int_equal(sl_msg_build_simple("s@e", badto, 1, "s", "b", 1, &out, &err), SL_EINVAL);
    free(err);
    sl_buf_free(&out);
}

static void test_many_vars(void **state)
{
    /* More than the on-stack variable slots. */
    sl_buf body = SL_BUF_INIT;
    sl_buf_puts(&body, "From: a@b\n\n");
    const char *names[40], *values[40];
    char nbuf[40][16];
    for (int i = 0; i < 40; i++) {
        snprintf(nbuf[i], sizeof(nbuf[i]), "v%d", i);
        names[i] = nbuf[i];
        values[i] = nbuf[i] + 1;
        sl_buf_printf(&body, "{{v%d}},", i);
    }
    sl_tmpl *t;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(body.data, body.len, &t, &err), 0);
    sl_buf out = SL_BUF_INIT;
    assert_int_equal(sl_tmpl_render_arrays(t, names, values, 40, &out, &err), 0);
    assert_non_null(strstr(out.data, "\r\n\r\n0,1,2,"));
    assert_non_null(strstr(out.data, ",39,\r\n"));
    assert_int_equal(sl_tmpl_render_arrays(t, names, values, 39, &out, &err), SL_ETEMPLATE);
    assert_non_null(strstr(err, "'v39'"));
    free(err);
    sl_buf_free(&out);
    sl_buf_free(&body);
    sl_tmpl_free(t);
}

/* Every line of [p, p+n) at most 998 octets before its CRLF. */
static bool lines_ok(const char *p, size_t n)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
            col = 0;
            i++;
        } else if (++col > 998) {
            return false;
        }
    }
    return true;
}

/* Quoted-printable decoding of [p, p+n), enough for the tests: soft breaks
 * and =XX escapes. */
static void qp_decode(const char *p, size_t n, sl_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '=' && i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
            i += 2;
        } else if (p[i] == '=' && i + 2 < n) {
            char hex[3] = {p[i + 1], p[i + 2], 0};
            sl_buf_putc(out, (char)strtol(hex, NULL, 16));
            i += 2;
        } else {
            sl_buf_putc(out, p[i]);
        }
    }
}

static char *long_value(size_t n)
{
    char *v = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        v[i] = "abcdefghij=. "[i % 13];
    v[n] = 0;
    return v;
}

/* A long variable value used to produce a body line over 998 octets, which
 * receivers refuse (RFC 5322 section 2.1.1): the part is re-encoded as
 * quoted-printable, its old transfer encoding replaced, and decoding gives
 * the value back. */
static void test_long_line_single_part(void **state)
{
    (void)state;
    const char *src = "From: a@b\nSubject: s\nContent-Transfer-Encoding: 8bit\n\n"
                      "Hi {{name}}\n.line two\n";
    sl_tmpl *t = NULL;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(src, strlen(src), &t, &err), 0);
    char *v = long_value(3000);
    const char *names[] = {"name"}, *values[] = {v};
    sl_buf out = SL_BUF_INIT;
    sl_buf_puts(&out, "PRE"); /* render appends: what was there stays */
    assert_int_equal(sl_tmpl_render_arrays(t, names, values, 1, &out, &err), 0);
    assert_memory_equal(out.data, "PRE", 3);
    sl_buf_putc(&out, 0);
    const char *m = out.data + 3;
    assert_true(lines_ok(m, strlen(m)));
    assert_non_null(strstr(m, "Content-Transfer-Encoding: quoted-printable\r\n"));
    assert_null(strstr(m, "8bit"));
    assert_non_null(strstr(m, "MIME-Version: 1.0\r\n"));
    const char *body = strstr(m, "\r\n\r\n") + 4;
    sl_buf dec = SL_BUF_INIT;
    qp_decode(body, strlen(body), &dec);
    sl_buf want = SL_BUF_INIT;
    sl_buf_printf(&want, "Hi %s\r\n.line two\r\n", v);
    assert_int_equal(dec.len, want.len);
    assert_memory_equal(dec.data, want.data, want.len);
    /* A short value leaves the message exactly as rendered before. */
    values[0] = "Bob";
    sl_buf_reset(&out);
    assert_int_equal(sl_tmpl_render_arrays(t, names, values, 1, &out, &err), 0);
    sl_buf_putc(&out, 0);
    assert_string_equal(out.data, "From: a@b\r\nSubject: s\r\nContent-Transfer-Encoding: 8bit"
                                  "\r\n\r\nHi Bob\r\n.line two\r\n");
    sl_buf_free(&dec);
    sl_buf_free(&want);
    sl_buf_free(&out);
    free(v);
    sl_tmpl_free(t);
}

static void test_long_line_multipart(void **state)
{
    (void)state;
    const char *src = "From: a@b\nMIME-Version: 1.0\n"
                      "Content-Type: multipart/alternative; boundary=\"b1\"\n\n"
                      "preamble\n"
                      "--b1\nContent-Type: text/plain; charset=utf-8\n\nText {{name}}\n"
                      "--b1\nContent-Type: text/html\n\n<p>short</p>\n"
                      "--b1--\nepilogue\n";
    sl_tmpl *t = NULL;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(src, strlen(src), &t, &err), 0);
    char *v = long_value(2500);
    const char *names[] = {"name"}, *values[] = {v};
    sl_buf out = SL_BUF_INIT;
    assert_int_equal(sl_tmpl_render_arrays(t, names, values, 1, &out, &err), 0);
    sl_buf_putc(&out, 0);
    const char *m = out.data;
    assert_true(lines_ok(m, strlen(m)));
    /* Only the long part changed; structure, preamble and epilogue kept. */
    assert_non_null(strstr(m, "\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; "
                              "charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
                              "\r\n\r\nText abcdefghij=3D. abc"));
    assert_non_null(strstr(m, "\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>short</p>\r\n"
                              "--b1--\r\nepilogue\r\n"));
    const char *first = strstr(m, "MIME-Version");
    assert_null(strstr(first + 1, "MIME-Version"));
    sl_buf_free(&out);
    free(v);
    sl_tmpl_free(t);
}

/* Remove every CRLF followed by white space (RFC 5322 unfolding). */
static void unfold(const char *p, size_t n, sl_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 2 < n && p[i + 1] == '\n' && (p[i + 2] == ' ' || p[i + 2] == '\t'))
            i++;
        else
            sl_buf_putc(out, p[i]);
    }
}

/* A long header value with white space is folded; unfolding gives it back. */
static void test_long_header_folded(void **state)
{
    (void)state;
    const char *src = "From: a@b\nSubject: Re: {{name}}\nX-After: 1\n\nbody\n";
    sl_tmpl *t = NULL;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(src, strlen(src), &t, &err), 0);
    char *v = long_value(2600); /* a space every 13 octets */
    const char *names[] = {"name"}, *values[] = {v};
    sl_buf out = SL_BUF_INIT;
    assert_int_equal(sl_tmpl_render_arrays(t, names, values, 1, &out, &err), 0);
    assert_true(lines_ok(out.data, out.len));
    sl_buf un = SL_BUF_INIT, want = SL_BUF_INIT;
    unfold(out.data, out.len, &un);
    sl_buf_printf(&want, "From: a@b\r\nSubject: Re: %s\r\nX-After: 1\r\n\r\nbody\r\n", v);
    assert_int_equal(un.len, want.len);
    assert_memory_equal(un.data, want.data, want.len);
    /* No line of only white space, which would end the header section. */
    sl_buf_putc(&out, 0);
    assert_null(strstr(out.data, "\r\n \r\n"));
    assert_int_equal(strstr(out.data, "\r\n\r\n") - out.data, (long)(out.len - 1 - 10));
    sl_buf_free(&un);
    sl_buf_free(&want);
    sl_buf_free(&out);
    free(v);
    sl_tmpl_free(t);
}

/* A header line without white space to fold at: a clear error, not a
 * message receivers refuse. */
static void test_long_header_line(void **state)
{
    (void)state;
    const char *src = "From: a@b\nX-Ref: {{name}}\n\nbody\n";
    sl_tmpl *t = NULL;
    char *err = NULL;
    assert_int_equal(sl_tmpl_compile(src, strlen(src), &t, &err), 0);
    char *v = long_value(1200);
    for (char *p = v; *p; p++)
        if (*p == ' ')
            *p = '_';
    const char *names[] = {"name"}, *values[] = {v};
    sl_buf out = SL_BUF_INIT;
    assert_int_equal(sl_tmpl_render_arrays(t, names, values, 1, &out, &err), SL_ETEMPLATE);
    assert_non_null(strstr(err, "header line is longer than 998 octets"));
    assert_non_null(strstr(err, "no white space to fold at"));
    free(err);
    sl_buf_free(&out);
    free(v);
    sl_tmpl_free(t);
}

static int render_tool(int argc, char **argv)
{
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 2;
    }
    sl_buf src = SL_BUF_INIT;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        sl_buf_append(&src, tmp, n);
    fclose(f);
    sl_tmpl *t = NULL;
    char *err = NULL;
    if (sl_tmpl_compile(src.data, src.len, &t, &err) != 0) {
        fprintf(stderr, "compile: %s\n", err);
        return 1;
    }
    size_t nv = (size_t)(argc - 3);
    const char **names = calloc(nv + 1, sizeof *names), **values = calloc(nv + 1, sizeof *values);
    for (size_t i = 0; i < nv; i++) {
        char *eq = strchr(argv[3 + i], '=');
        if (!eq) {
            fprintf(stderr, "expected NAME=VALUE: %s\n", argv[3 + i]);
            return 2;
        }
        *eq = 0;
        names[i] = argv[3 + i];
        values[i] = eq + 1;
    }
    sl_buf out = SL_BUF_INIT;
    if (sl_tmpl_render_arrays(t, names, values, nv, &out, &err) != 0) {
        fprintf(stderr, "render: %s\n", err);
        return 1;
    }
    fwrite(out.data, 1, out.len, stdout);
    free(names);
    free(values);
    sl_buf_free(&out);
    sl_buf_free(&src);
    sl_tmpl_free(t);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "render") == 0)
        return render_tool(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_table),   cmocka_unit_test(test_vars_and_sections),
        cmocka_unit_test(test_render_table),    cmocka_unit_test(test_nul_in_body_value),
        cmocka_unit_test(test_rfc2047_long),    cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_ensure_headers),  cmocka_unit_test(test_build_simple),
        cmocka_unit_test(test_many_vars),
        cmocka_unit_test(test_long_line_single_part),
        cmocka_unit_test(test_long_line_multipart),
        cmocka_unit_test(test_long_header_folded),
        cmocka_unit_test(test_long_header_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
