/*
 * fuzz_template - libFuzzer harness for common/template: sl_tmpl_compile()
 * on any body, then sl_tmpl_render() with fuzzed variable values.
 *
 * Input: the template body up to the first "\0\0", then the values
 * separated by 0x01: value i is given to the i-th variable of the
 * template (sl_tmpl_vars order); variables beyond the last value are
 * missing, which render must report as an error.
 *
 * Invariants:
 *   - compile returns 0 with a template, or SL_ETEMPLATE with a message;
 *   - a successful render uses CRLF only, ends in CRLF and holds no NUL;
 *   - no header injection: the rendered header section has exactly as
 *     many fields (lines not starting with space or tab, before the first
 *     empty line) as the same template rendered with every value "x" -
 *     a value can add folded continuation lines, never a field and never
 *     the end of the header section;
 *   - sl_tmpl_render_arrays() with the same values (when none holds a NUL)
 *     gives the same result and the same bytes.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"
#include "util.h"

#define FAIL(...)                                                                          \
    do {                                                                                   \
        fprintf(stderr, "fuzz_template: invariant: " __VA_ARGS__);                        \
        fputc('\n', stderr);                                                               \
        abort();                                                                           \
    } while (0)

#define MAX_VALUES 64

typedef struct vals {
    const char *const *names;
    size_t nnames;
    const char *v[MAX_VALUES];
    size_t len[MAX_VALUES];
    size_t n;
    bool all_x; /* the baseline: every variable is "x" */
} vals;

static bool lookup(void *ctx, const char *name, const char **value, size_t *len)
{
    vals *v = ctx;
    for (size_t i = 0; i < v->nnames; i++) {
        if (strcmp(v->names[i], name) != 0)
            continue;
        if (v->all_x) {
            *value = "x";
            *len = 1;
            return true;
        }
        if (i >= v->n)
            return false;
        *value = v->v[i];
        *len = v->len[i];
        return true;
    }
    FAIL("lookup of '%s', which is not one of the template's variables", name);
}

/* Fields in the header section; checks CRLF framing of the whole output. */
static size_t header_fields(const char *p, size_t n)
{
    if (n < 2 || p[n - 2] != '\r' || p[n - 1] != '\n')
        FAIL("rendered message does not end in CRLF");
    if (memchr(p, 0, n))
        FAIL("NUL in a rendered message");
    size_t fields = 0;
    bool in_header = true, line_start = true;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
            FAIL("bare CR at %zu in a rendered message", i);
        if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
            FAIL("bare LF at %zu in a rendered message", i);
        if (line_start && in_header) {
            if (p[i] == '\r')
                in_header = false; /* the empty line */
            else if (p[i] != ' ' && p[i] != '\t')
                fields++;
        }
        line_start = p[i] == '\n';
    }
    return fields;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t tlen = size;
    for (size_t i = 0; i + 1 < size; i++)
        if (in[i] == 0 && in[i + 1] == 0) {
            tlen = i;
            break;
        }
    sl_tmpl *t = NULL;
    char *err = NULL;
    int rc = sl_tmpl_compile(in, tlen, &t, &err);
    if (rc != 0) {
        if (rc != SL_ETEMPLATE || !err || t)
            FAIL("compile returned %d, err %p, tmpl %p", rc, (void *)err, (void *)t);
        free(err);
        return 0;
    }
    if (!t || err)
        FAIL("compile succeeded with no template or with a message");

    vals v = {0};
    v.names = sl_tmpl_vars(t, &v.nnames);
    for (size_t i = 0; i < v.nnames; i++) {
        (void)sl_tmpl_var_in_header(t, i);
        (void)sl_tmpl_var_in_body(t, i);
    }
    size_t text_len;
    const char *text = sl_tmpl_text(t, &text_len);
    if (!text || memchr(text, 0, text_len))
        FAIL("normalised text missing or holding a NUL");

    /* The values. */
    size_t off = tlen + 2;
    while (off <= size && v.n < MAX_VALUES) {
        const char *e = memchr(in + off, 0x01, size - off);
        size_t l = e ? (size_t)(e - (in + off)) : size - off;
        v.v[v.n] = in + off;
        v.len[v.n] = l;
        v.n++;
        off += l + 1;
    }

    sl_buf base = SL_BUF_INIT, out = SL_BUF_INIT;
    v.all_x = true;
    rc = sl_tmpl_render(t, lookup, &v, &base, &err);
    if (rc != 0)
        FAIL("render with every value \"x\" failed: %s", err ? err : "(no message)");
    size_t base_fields = header_fields(base.data, base.len);

    v.all_x = false;
    err = NULL;
    rc = sl_tmpl_render(t, lookup, &v, &out, &err);
    if (rc == 0) {
        if (err)
            FAIL("render succeeded with a message");
        size_t f = header_fields(out.data, out.len);
        if (f != base_fields)
            FAIL("header injection: %zu header fields, %zu with plain values\n%s", f,
                 base_fields, out.data);
    } else {
        if (rc != SL_ETEMPLATE || !err)
            FAIL("render returned %d without a message", rc);
        free(err);
        err = NULL;
    }

    /* The arrays entry point agrees, when the values are C strings. */
    bool cstrings = true;
    for (size_t i = 0; i < v.n; i++)
        if (memchr(v.v[i], 0, v.len[i]))
            cstrings = false;
    if (cstrings) {
        size_t n = v.n < v.nnames ? v.n : v.nnames;
        char **names = xcalloc(n + 1, sizeof(char *));
        char **values = xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            names[i] = xstrdup(v.names[i]);
            values[i] = xstrndup(v.v[i], v.len[i]);
        }
        sl_buf out2 = SL_BUF_INIT;
        int rc2 = sl_tmpl_render_arrays(t, (const char *const *)names,
                                        (const char *const *)values, n, &out2, &err);
        if ((rc2 == 0) != (rc == 0))
            FAIL("render and render_arrays disagree: %d vs %d", rc, rc2);
        if (rc2 == 0 && (out.len != out2.len || memcmp(out.data, out2.data, out.len) != 0))
            FAIL("render and render_arrays wrote different messages");
        free(err);
        sl_buf_free(&out2);
        for (size_t i = 0; i < n; i++) {
            free(names[i]);
            free(values[i]);
        }
        free(names);
        free(values);
    }
    sl_buf_free(&base);
    sl_buf_free(&out);
    sl_tmpl_free(t);
    return 0;
}
