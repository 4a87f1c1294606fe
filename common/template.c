/*
 * template - compiled message templates; see template.h for the contract.
 *
 * Compilation turns the body into one CRLF-normalised text and a flat array
 * of segments: literal runs (offsets into the text) and variable
 * references (an index into the distinct variable names). Rendering walks
 * the segments once, after looking each distinct variable up once and
 * checking its value against the strictest context it is used in.
 */
#include "template.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <time.h>

#define TMPL_NAME_MAX 128
#define TMPL_STACK_VARS 32

typedef struct tmpl_seg {
    size_t off, len;   /* literal: the run of t->text */
    int32_t var;       /* -1: literal; else the variable index */
    uint8_t in_header; /* the reference is in the header section */
    uint8_t quoted;    /* "{{x}}" in a header: the quotes were taken out */
} tmpl_seg;

struct sl_tmpl {
    char *text;
    size_t text_len;
    tmpl_seg *segs;
    size_t n_segs, cap_segs;
    char **vars;
    uint8_t *var_hdr, *var_body;
    size_t n_vars, cap_vars;
};

static bool name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

static int fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char **err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        sl_buf b = SL_BUF_INIT;
        va_start(ap, fmt);
        sl_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        *err = sl_buf_steal(&b, NULL);
    }
    return SL_ETEMPLATE;
}

/* Copy with every bare CR, bare LF and CRLF turned into CRLF. */
static void append_crlf(sl_buf *out, const char *p, size_t n)
{
    sl_buf_reserve(out, n + n / 16 + 2);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c != '\r' && c != '\n')
            continue;
        sl_buf_append(out, p + run, i - run);
        sl_buf_append(out, "\r\n", 2);
        if (c == '\r' && i + 1 < n && p[i + 1] == '\n')
            i++;
        run = i + 1;
    }
    sl_buf_append(out, p + run, n - run);
}

static size_t line_of(const char *text, size_t off)
{
    size_t line = 1;
    for (size_t i = 0; i < off; i++)
        if (text[i] == '\n')
            line++;
    return line;
}

static void seg_push(sl_tmpl *t, tmpl_seg s)
{
    if (s.var < 0 && s.len == 0)
        return;
    if (t->n_segs == t->cap_segs) {
        t->cap_segs = t->cap_segs ? t->cap_segs * 2 : 16;
        t->segs = xrealloc(t->segs, t->cap_segs * sizeof(*t->segs));
    }
    t->segs[t->n_segs++] = s;
}

static int32_t var_intern(sl_tmpl *t, const char *name, size_t n, bool hdr)
{
    size_t i;
    for (i = 0; i < t->n_vars; i++)
        if (strlen(t->vars[i]) == n && memcmp(t->vars[i], name, n) == 0)
            break;
    if (i == t->n_vars) {
        if (t->n_vars == t->cap_vars) {
            t->cap_vars = t->cap_vars ? t->cap_vars * 2 : 8;
            t->vars = xrealloc(t->vars, t->cap_vars * sizeof(*t->vars));
            t->var_hdr = xrealloc(t->var_hdr, t->cap_vars);
            t->var_body = xrealloc(t->var_body, t->cap_vars);
        }
        t->vars[i] = xstrndup(name, n);
        t->var_hdr[i] = t->var_body[i] = 0;
        t->n_vars++;
    }
    if (hdr)
        t->var_hdr[i] = 1;
    else
        t->var_body[i] = 1;
    return (int32_t)i;
}

/* Where the header section ends: the offset just past the CRLF of the
 * last field (the blank line starts there), or the text length when the
 * message has no body. */
static size_t header_end(const char *s, size_t n)
{
    if (n >= 2 && s[0] == '\r' && s[1] == '\n')
        return 0;
    for (size_t i = 0; i + 3 < n; i++)
        if (s[i] == '\r' && s[i + 1] == '\n' && s[i + 2] == '\r' && s[i + 3] == '\n')
            return i + 2;
    return n;
}

static int check_headers(const char *s, size_t hend, char **err)
{
    bool from = false;
    size_t line = 1;
    if (hend == 0)
        return fail(err, "line 1: the template has no header fields (it must start with "
                         "headers such as From and Subject, then a blank line, then the body)");
    for (size_t i = 0; i < hend; line++) {
        const char *eol = memchr(s + i, '\r', hend - i);
        size_t end = eol ? (size_t)(eol - s) : hend;
        if (s[i] == ' ' || s[i] == '\t') {
            if (line == 1)
                return fail(err, "line 1: the first header field starts with white space");
        } else {
            size_t j = i;
            while (j < end && s[j] != ':' && (unsigned char)s[j] > 32 && (unsigned char)s[j] < 127)
                j++;
            if (j == i || j == end || s[j] != ':')
                return fail(err,
                            "line %zu: not a header field (a template is header fields, a blank "
                            "line, then the body)",
                            line);
            for (size_t k = i; k + 1 < j; k++)
                if (s[k] == '{' && s[k + 1] == '{')
                    return fail(err, "line %zu: a placeholder cannot be part of a field name",
                                line);
            if (j - i == 4 && strncasecmp(s + i, "from", 4) == 0)
                from = true;
        }
        i = end + 2;
    }
    if (!from)
        return fail(err, "the template has no From header field");
    return 0;
}

int sl_tmpl_compile(const char *body, size_t len, sl_tmpl **out, char **err)
{
    if (err)
        *err = NULL;
    *out = NULL;
    sl_buf b = SL_BUF_INIT;
    append_crlf(&b, body, len);
    if (b.len > 0 && (b.len < 2 || memcmp(b.data + b.len - 2, "\r\n", 2) != 0))
        sl_buf_append(&b, "\r\n", 2);
    if (b.len == 0) {
        sl_buf_free(&b);
        return fail(err, "the template is empty");
    }
    if (memchr(b.data, '\0', b.len)) {
        size_t line = line_of(b.data, (size_t)((char *)memchr(b.data, '\0', b.len) - b.data));
        sl_buf_free(&b);
        return fail(err, "line %zu: NUL byte in the template", line);
    }
    const char *s = b.data;
    size_t n = b.len;
    size_t hend = header_end(s, n);
    int rc = check_headers(s, hend, err);
    if (rc < 0) {
        sl_buf_free(&b);
        return rc;
    }

    sl_tmpl *t = xcalloc(1, sizeof(*t));
    size_t lit = 0; /* start of the pending literal */
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '{' || s[i + 1] != '{')
            continue;
        size_t j = i + 2;
        while (j < n && s[j] == ' ')
            j++;
        size_t name = j;
        while (j < n && name_char((unsigned char)s[j]))
            j++;
        size_t name_len = j - name;
        while (j < n && s[j] == ' ')
            j++;
        if (name_len == 0 || j + 1 >= n || s[j] != '}' || s[j + 1] != '}') {
            rc = fail(err,
                      "line %zu: \"{{\" does not open a valid placeholder {{name}} (names are "
                      "letters, digits, '_', '.', '-')",
                      line_of(s, i));
            goto bad;
        }
        if (name_len > TMPL_NAME_MAX) {
            rc = fail(err, "line %zu: placeholder name longer than %d", line_of(s, i),
                      TMPL_NAME_MAX);
            goto bad;
        }
        size_t after = j + 2;
        bool hdr = i < hend;
        bool quoted = hdr && i > lit && s[i - 1] == '"' && after < n && s[after] == '"';
        tmpl_seg l = {lit, i - lit - (quoted ? 1 : 0), -1, 0, 0};
        seg_push(t, l);
        tmpl_seg v = {0, 0, var_intern(t, s + name, name_len, hdr), hdr, quoted};
        seg_push(t, v);
        lit = after + (quoted ? 1 : 0);
        i = lit - 1;
    }
    tmpl_seg tail = {lit, n - lit, -1, 0, 0};
    seg_push(t, tail);
    t->text = sl_buf_steal(&b, &t->text_len);
    *out = t;
    return 0;
bad:
    sl_buf_free(&b);
    sl_tmpl_free(t);
    return rc;
}

void sl_tmpl_free(sl_tmpl *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_vars; i++)
        free(t->vars[i]);
    free(t->vars);
    free(t->var_hdr);
    free(t->var_body);
    free(t->segs);
    free(t->text);
    free(t);
}

const char *const *sl_tmpl_vars(const sl_tmpl *t, size_t *n)
{
    *n = t->n_vars;
    return (const char *const *)t->vars;
}

bool sl_tmpl_var_in_header(const sl_tmpl *t, size_t i)
{
    return i < t->n_vars && t->var_hdr[i];
}

bool sl_tmpl_var_in_body(const sl_tmpl *t, size_t i)
{
    return i < t->n_vars && t->var_body[i];
}

const char *sl_tmpl_text(const sl_tmpl *t, size_t *len)
{
    *len = t->text_len;
    return t->text;
}

bool sl_utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_append(sl_buf *out, const unsigned char *p, size_t n)
{
    sl_buf_reserve(out, (n + 2) / 3 * 4);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char q[4] = {b64tab[(v >> 18) & 63], b64tab[(v >> 12) & 63],
                     i + 1 < n ? b64tab[(v >> 6) & 63] : '=', i + 2 < n ? b64tab[v & 63] : '='};
        sl_buf_append(out, q, 4);
    }
}

void sl_rfc2047_encode(sl_buf *out, const char *p, size_t n)
{
    /* 75 octets minus "=?UTF-8?B?" and "?=" leave 63 for base64: 45 input
     * octets at most, cut back to a character boundary. */
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    bool first = true;
    while (i < n || first) {
        size_t take = n - i > 45 ? 45 : n - i;
        if (i + take < n)
            while (take > 0 && (s[i + take] & 0xC0) == 0x80)
                take--;
        if (take == 0 && i < n)
            take = 1; /* invalid input; never loop forever */
        if (!first)
            sl_buf_append(out, "\r\n ", 3);
        sl_buf_append(out, "=?UTF-8?B?", 10);
        b64_append(out, s + i, take);
        sl_buf_append(out, "?=", 2);
        i += take;
        first = false;
    }
}

/* What a value may hold in the header section: 0 plain ASCII, 1 UTF-8 to
 * encode, or a negative code for a forbidden byte / invalid UTF-8. */
static int header_value_kind(const char *v, size_t n, size_t *bad)
{
    bool ascii = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 32 && c != '\t') || c == 127) {
            *bad = i;
            return -1;
        }
        if (c >= 128)
            ascii = false;
    }
    if (ascii)
        return 0;
    if (!sl_utf8_valid(v, n))
        return -2;
    return 1;
}

typedef struct tmpl_val {
    const char *p;
    size_t n;
    int8_t kind; /* header_value_kind() when used in a header */
} tmpl_val;

static int render_vals(const sl_tmpl *t, tmpl_val *vals, sl_buf *out, char **err)
{
    size_t need = t->text_len;
    for (size_t i = 0; i < t->n_vars; i++) {
        tmpl_val *v = &vals[i];
        if (t->var_body[i] && memchr(v->p, '\0', v->n))
            return fail(err, "variable '%s' contains a NUL byte", t->vars[i]);
        if (t->var_hdr[i]) {
            size_t bad = 0;
            int k = header_value_kind(v->p, v->n, &bad);
            if (k == -1) {
                unsigned char c = (unsigned char)v->p[bad];
                return fail(err,
                            "variable '%s' is used in a header and contains %s (0x%02x); "
                            "refusing (header injection)",
                            t->vars[i],
                            c == '\r'   ? "a carriage return"
                            : c == '\n' ? "a line feed"
                            : c == 0    ? "a NUL byte"
                                        : "a control character",
                            c);
            }
            if (k == -2)
                return fail(err, "variable '%s' is used in a header and is not valid UTF-8",
                            t->vars[i]);
            v->kind = (int8_t)k;
        }
        need += v->n + v->n / 2 + 16;
    }
    sl_buf_reserve(out, need);
    for (size_t i = 0; i < t->n_segs; i++) {
        const tmpl_seg *s = &t->segs[i];
        if (s->var < 0) {
            sl_buf_append(out, t->text + s->off, s->len);
            continue;
        }
        const tmpl_val *v = &vals[s->var];
        if (!s->in_header) {
            append_crlf(out, v->p, v->n);
        } else if (v->kind == 1) {
            sl_rfc2047_encode(out, v->p, v->n);
        } else if (s->quoted) {
            sl_buf_putc(out, '"');
            size_t run = 0;
            for (size_t j = 0; j < v->n; j++) {
                if (v->p[j] == '"' || v->p[j] == '\\') {
                    sl_buf_append(out, v->p + run, j - run);
                    sl_buf_putc(out, '\\');
                    run = j;
                }
            }
            sl_buf_append(out, v->p + run, v->n - run);
            sl_buf_putc(out, '"');
        } else {
            sl_buf_append(out, v->p, v->n);
        }
    }
    if (out->len < 2 || memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
        sl_buf_append(out, "\r\n", 2);
    return 0;
}

static int fold_long_lines(sl_buf *out, size_t start, char **err);

int sl_tmpl_render(const sl_tmpl *t, sl_tmpl_lookup_fn lookup, void *ctx, sl_buf *out,
                   char **err)
{
    size_t start = out->len;
    tmpl_val stack[TMPL_STACK_VARS];
    tmpl_val *vals = t->n_vars <= TMPL_STACK_VARS ? stack : xmalloc(t->n_vars * sizeof(*vals));
    int rc = 0;
    if (err)
        *err = NULL;
    for (size_t i = 0; i < t->n_vars; i++) {
        vals[i].kind = 0;
        if (!lookup(ctx, t->vars[i], &vals[i].p, &vals[i].n)) {
            rc = fail(err, "variable '%s' is missing for this recipient", t->vars[i]);
            goto out;
        }
    }
    rc = render_vals(t, vals, out, err);
    if (rc == 0)
        rc = fold_long_lines(out, start, err);
out:
    if (vals != stack)
        free(vals);
    return rc;
}

typedef struct arrays_ctx {
    const char *const *names, *const *values;
    size_t n;
} arrays_ctx;

static bool arrays_lookup(void *ctx, const char *name, const char **value, size_t *len)
{
    arrays_ctx *a = ctx;
    for (size_t i = 0; i < a->n; i++) {
        if (a->names[i] && a->values[i] && strcmp(a->names[i], name) == 0) {
            *value = a->values[i];
            *len = strlen(a->values[i]);
            return true;
        }
    }
    return false;
}

int sl_tmpl_render_arrays(const sl_tmpl *t, const char *const *names, const char *const *values,
                          size_t n, sl_buf *out, char **err)
{
    arrays_ctx a = {names, values, n};
    return sl_tmpl_render(t, arrays_lookup, &a, out, err);
}

/* --- message helpers ---------------------------------------------------- */

void sl_rfc5322_date(int64_t ms, char out[40])
{
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *mons[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
             mons[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Whether the header section [s, s+hend) has a field named name. */
static bool has_field(const char *s, size_t hend, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < hend;) {
        if (hend - i > nl && strncasecmp(s + i, name, nl) == 0) {
            size_t j = i + nl;
            while (j < hend && (s[j] == ' ' || s[j] == '\t'))
                j++;
            if (j < hend && s[j] == ':')
                return true;
        }
        const char *nlp = memchr(s + i, '\n', hend - i);
        if (!nlp)
            break;
        i = (size_t)(nlp - s) + 1;
    }
    return false;
}

int sl_msg_ensure_headers(sl_buf *msg, const char *message_id, int64_t date_ms)
{
    if (!msg->data || msg->len == 0 || !message_id || strpbrk(message_id, "\r\n"))
        return SL_EINVAL;
    const char *s = msg->data;
    size_t n = msg->len, hend = n;
    if (s[0] == '\r' || s[0] == '\n')
        return SL_EINVAL;
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] == '\n' && (s[i + 1] == '\n' || (s[i + 1] == '\r' && i + 2 < n && s[i + 2] == '\n'))) {
            hend = i + 1;
            break;
        }
    }
    bool need_id = !has_field(s, hend, "Message-ID");
    bool need_date = !has_field(s, hend, "Date");
    if (!need_id && !need_date)
        return 0;
    sl_buf b = SL_BUF_INIT;
    sl_buf_reserve(&b, n + strlen(message_id) + 64);
    if (need_id) {
        if (message_id[0] == '<')
            sl_buf_printf(&b, "Message-ID: %s\r\n", message_id);
        else
            sl_buf_printf(&b, "Message-ID: <%s>\r\n", message_id);
    }
    if (need_date) {
        char d[40];
        sl_rfc5322_date(date_ms, d);
        sl_buf_printf(&b, "Date: %s\r\n", d);
    }
    sl_buf_append(&b, msg->data, msg->len);
    sl_buf_free(msg);
    *msg = b;
    return 0;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 32 || *s == 127)
            return true;
    return false;
}

static bool is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 128)
            return false;
    return true;
}

/* An address header value: "Name <a@b>" gets an encoded display name when
 * it is not ASCII; anything else goes as it is. */
static void put_address(sl_buf *out, const char *v)
{
    size_t n = strlen(v);
    const char *lt = strrchr(v, '<');
    if (is_ascii(v, n) || !lt || lt == v) {
        sl_buf_append(out, v, n);
        return;
    }
    size_t dn = (size_t)(lt - v);
    while (dn > 0 && v[dn - 1] == ' ')
        dn--;
    const char *d = v;
    if (dn >= 2 && d[0] == '"' && d[dn - 1] == '"') {
        d++;
        dn -= 2;
    }
    sl_rfc2047_encode(out, d, dn);
    sl_buf_putc(out, ' ');
    sl_buf_puts(out, lt);
}

static void append_qp(sl_buf *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r' && i + 1 < n && p[i + 1] == '\n') {
            sl_buf_append(out, "\r\n", 2);
            i++;
            col = 0;
            continue;
        }
        bool eol_ws = (c == ' ' || c == '\t') && (i + 1 == n || p[i + 1] == '\r');
        bool lit = !eol_ws && ((c >= 33 && c <= 126 && c != '=') || c == ' ' || c == '\t') &&
                   !(col == 0 && c == '.');
        size_t w = lit ? 1 : 3;
        if (col + w > 75) {
            sl_buf_append(out, "=\r\n", 3);
            col = 0;
        }
        if (lit) {
            sl_buf_putc(out, (char)c);
        } else {
            char e[3] = {'=', hex[c >> 4], hex[c & 15]};
            sl_buf_append(out, e, 3);
        }
        col += w;
    }
}

/* ---- lines over 998 octets (RFC 5322 section 2.1.1) ----
 *
 * A long variable value can make a rendered line longer than receivers
 * accept. Every leaf MIME part (or the whole message when it is not
 * multipart) that has such a line and a 7bit/8bit/binary (or no) transfer
 * encoding is re-encoded as quoted-printable, its Content-Transfer-Encoding
 * replaced; MIME-Version is added to the message when missing, and
 * Content-Type text/plain; charset=utf-8 to a part that has none and
 * carries 8-bit text. Everything else is copied byte for byte. This runs
 * before the sender signs, so the DKIM signature covers the encoded form.
 * A header line that long is folded (CRLF inserted before white space,
 * which unfolding removes again); one without white space to fold at is an
 * error: encoded-words are not allowed in every field. */
#define SL_LINE_MAX 998
#define FOLD_MAX_DEPTH 8

static bool has_long_line(const char *p, size_t n)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
            col = 0;
            i++;
        } else if (++col > SL_LINE_MAX) {
            return true;
        }
    }
    return false;
}

/* The unfolded value of the first field called name in the header section
 * [h, h+hn), into v (reset first); false when there is none. */
static bool field_value(const char *h, size_t hn, const char *name, sl_buf *v)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < hn;) {
        const char *eol = memchr(h + i, '\n', hn - i);
        size_t end = eol ? (size_t)(eol - h) + 1 : hn;
        size_t j = i + nl;
        if (end - i > nl && strncasecmp(h + i, name, nl) == 0) {
            while (j < end && (h[j] == ' ' || h[j] == '\t'))
                j++;
            if (j < end && h[j] == ':') {
                sl_buf_reset(v);
                for (size_t k = j + 1;;) {
                    const char *e = memchr(h + k, '\n', hn - k);
                    size_t le = e ? (size_t)(e - h) : hn;
                    size_t ce = le > k && h[le - 1] == '\r' ? le - 1 : le;
                    sl_buf_append(v, h + k, ce - k);
                    k = e ? le + 1 : hn;
                    if (k >= hn || (h[k] != ' ' && h[k] != '\t'))
                        break;
                }
                sl_buf_putc(v, 0);
                v->len--;
                return true;
            }
        }
        i = end;
    }
    return false;
}

/* Copy the header section [h, h+hn) but for the fields called name. */
static void copy_fields_except(const char *h, size_t hn, const char *name, sl_buf *out)
{
    size_t nl = strlen(name);
    bool skip = false;
    for (size_t i = 0; i < hn;) {
        const char *eol = memchr(h + i, '\n', hn - i);
        size_t end = eol ? (size_t)(eol - h) + 1 : hn;
        if (h[i] != ' ' && h[i] != '\t') {
            size_t j = i + nl;
            skip = end - i > nl && strncasecmp(h + i, name, nl) == 0;
            while (skip && j < end && (h[j] == ' ' || h[j] == '\t'))
                j++;
            skip = skip && j < end && h[j] == ':';
        }
        if (!skip)
            sl_buf_append(out, h + i, end - i);
        i = end;
    }
}

/* The boundary parameter of a Content-Type value, into b[201]. */
static bool ct_boundary(const char *ct, char b[201])
{
    for (const char *p = ct; (p = strchr(p, ';')); ) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, "boundary", 8))
            continue;
        const char *q = p + 8;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q != '=')
            continue;
        q++;
        while (*q == ' ' || *q == '\t')
            q++;
        size_t n = 0;
        if (*q == '"') {
            q++;
            while (q[n] && q[n] != '"')
                n++;
        } else {
            while (q[n] && q[n] != ';' && q[n] != ' ' && q[n] != '\t')
                n++;
        }
        if (n == 0 || n > 200)
            return false;
        memcpy(b, q, n);
        b[n] = 0;
        return true;
    }
    return false;
}

/* Whether a delimiter line "--boundary" starts at p[i] (at a line start). */
static bool is_delimiter(const char *p, size_t n, size_t i, const char *b, size_t bl)
{
    if (n - i < bl + 2 || p[i] != '-' || p[i + 1] != '-' || memcmp(p + i + 2, b, bl))
        return false;
    size_t k = i + 2 + bl;
    return k == n || p[k] == '\r' || p[k] == '-' || p[k] == ' ' || p[k] == '\t';
}

static void fold_entity(const char *p, size_t n, bool top, int depth, sl_buf *out);

/* The body of a multipart entity: preamble and epilogue as they are, each
 * part through fold_entity(). Anything malformed is copied unchanged. */
static void fold_multipart(const char *p, size_t n, const char *b, int depth, sl_buf *out)
{
    size_t bl = strlen(b), d = SIZE_MAX;
    if (is_delimiter(p, n, 0, b, bl))
        d = 0;
    for (size_t i = 0; d == SIZE_MAX && i + 2 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && is_delimiter(p, n, i + 2, b, bl))
            d = i + 2;
    if (d == SIZE_MAX) {
        sl_buf_append(out, p, n);
        return;
    }
    sl_buf_append(out, p, d); /* preamble */
    while (d < n) {
        const char *eol = memchr(p + d, '\n', n - d);
        size_t s = eol ? (size_t)(eol - p) + 1 : n;
        sl_buf_append(out, p + d, s - d); /* the delimiter line */
        if (n - d >= bl + 4 && p[d + 2 + bl] == '-' && p[d + 3 + bl] == '-') {
            sl_buf_append(out, p + s, n - s); /* close delimiter: the epilogue */
            return;
        }
        size_t e = SIZE_MAX;
        for (size_t i = s; i + 2 < n; i++)
            if (p[i] == '\r' && p[i + 1] == '\n' && is_delimiter(p, n, i + 2, b, bl)) {
                e = i;
                break;
            }
        if (e == SIZE_MAX) {
            sl_buf_append(out, p + s, n - s);
            return;
        }
        fold_entity(p + s, e - s, false, depth + 1, out);
        sl_buf_append(out, "\r\n", 2);
        d = e + 2;
    }
}

static bool cte_is_identity(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strcspn(v, " \t;(");
    return (n == 4 && !strncasecmp(v, "7bit", 4)) || (n == 4 && !strncasecmp(v, "8bit", 4)) ||
           (n == 6 && !strncasecmp(v, "binary", 6));
}

static void fold_entity(const char *p, size_t n, bool top, int depth, sl_buf *out)
{
    size_t hend = header_end(p, n);
    if (hend + 2 > n) { /* no body */
        sl_buf_append(out, p, n);
        return;
    }
    size_t bstart = hend + 2;
    const char *body = p + bstart;
    size_t bn = n - bstart;
    sl_buf ct = SL_BUF_INIT, cte = SL_BUF_INIT;
    bool has_ct = field_value(p, hend, "Content-Type", &ct);
    bool has_cte = field_value(p, hend, "Content-Transfer-Encoding", &cte);
    char boundary[201];
    const char *t = has_ct ? ct.data + strspn(ct.data, " \t") : "";
    if (has_ct && depth < FOLD_MAX_DEPTH && !strncasecmp(t, "multipart/", 10) &&
        ct_boundary(ct.data, boundary)) {
        sl_buf_append(out, p, bstart);
        fold_multipart(body, bn, boundary, depth, out);
    } else if (!has_long_line(body, bn) || (has_cte && !cte_is_identity(cte.data))) {
        sl_buf_append(out, p, n);
    } else {
        copy_fields_except(p, hend, "Content-Transfer-Encoding", out);
        if (top && !has_field(p, hend, "MIME-Version"))
            sl_buf_puts(out, "MIME-Version: 1.0\r\n");
        if (!has_ct && !is_ascii(body, bn))
            sl_buf_puts(out, "Content-Type: text/plain; charset=utf-8\r\n");
        sl_buf_puts(out, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        append_qp(out, body, bn);
    }
    sl_buf_free(&ct);
    sl_buf_free(&cte);
}

/* Copy the header section [h, h+hn), folding every line over 998 octets
 * before white space. Returns false when a line has no white space to
 * fold at in its first 998 octets. */
static bool fold_header_lines(const char *h, size_t hn, sl_buf *out)
{
    size_t ls = 0;     /* start of the current output line, in h */
    size_t ws = 0;     /* white space to fold at: after text on the line; 0: none */
    bool text = false; /* the line has an octet other than white space */
    for (size_t i = 0; i < hn; i++) {
        if (h[i] == '\r' && i + 1 < hn && h[i + 1] == '\n') {
            sl_buf_append(out, h + ls, i + 2 - ls);
            ls = i + 2;
            ws = 0;
            text = false;
            i++;
            continue;
        }
        bool sp = h[i] == ' ' || h[i] == '\t';
        if (sp && text)
            ws = i;
        text |= !sp;
        if (i - ls + 1 > SL_LINE_MAX) {
            if (!ws)
                return false;
            sl_buf_append(out, h + ls, ws - ls);
            sl_buf_append(out, "\r\n", 2);
            ls = ws; /* the white space starts the continuation line */
            ws = 0;
            text = false;
            for (size_t k = ls; k <= i; k++) {
                bool ksp = h[k] == ' ' || h[k] == '\t';
                if (ksp && text)
                    ws = k;
                text |= !ksp;
            }
        }
    }
    sl_buf_append(out, h + ls, hn - ls);
    return true;
}

static int fold_long_lines(sl_buf *out, size_t start, char **err)
{
    const char *m = out->data + start;
    size_t n = out->len - start;
    if (!has_long_line(m, n))
        return 0;
    size_t hend = header_end(m, n);
    sl_buf folded = SL_BUF_INIT;
    if (!fold_header_lines(m, hend, &folded)) {
        sl_buf_free(&folded);
        return fail(err, "a header line is longer than %d octets after rendering and has no "
                         "white space to fold at (RFC 5322 section 2.1.1): a variable value "
                         "in it is too long",
                    SL_LINE_MAX);
    }
    sl_buf hdr = folded;
    folded = (sl_buf)SL_BUF_INIT;
    sl_buf_append(&hdr, m + hend, n - hend);
    fold_entity(hdr.data, hdr.len, true, 0, &folded);
    sl_buf_free(&hdr);
    out->len = start;
    sl_buf_append(out, folded.data, folded.len);
    sl_buf_free(&folded);
    return 0;
}

int sl_msg_build_simple(const char *from, const char *const *to, size_t n_to,
                        const char *subject, const char *body, size_t body_len, sl_buf *out,
                        char **err)
{
    if (err)
        *err = NULL;
    if (!from || has_ctl(from) || !sl_utf8_valid(from, strlen(from))) {
        if (err)
            *err = xstrdup("From contains a control character or invalid UTF-8");
        return SL_EINVAL;
    }
    if (n_to == 0) {
        if (err)
            *err = xstrdup("no recipient");
        return SL_EINVAL;
    }
    for (size_t i = 0; i < n_to; i++) {
        if (!to[i] || has_ctl(to[i]) || !sl_utf8_valid(to[i], strlen(to[i]))) {
            if (err)
                *err = xasprintf("To address %zu contains a control character or invalid UTF-8",
                                 i + 1);
            return SL_EINVAL;
        }
    }
    if (!subject)
        subject = "";
    size_t sn = strlen(subject);
    if (!sl_utf8_valid(subject, sn) || header_value_kind(subject, sn, &(size_t){0}) < 0) {
        if (err)
            *err = xstrdup("Subject contains a control character or invalid UTF-8");
        return SL_EINVAL;
    }
    if (body_len && memchr(body, '\0', body_len)) {
        if (err)
            *err = xstrdup("the body contains a NUL byte");
        return SL_EINVAL;
    }

    sl_buf nb = SL_BUF_INIT;
    append_crlf(&nb, body ? body : "", body_len);
    if (nb.len < 2 || memcmp(nb.data + nb.len - 2, "\r\n", 2) != 0)
        sl_buf_append(&nb, "\r\n", 2);
    bool long_line = false;
    size_t col = 0;
    for (size_t i = 0; i < nb.len; i++) {
        if (nb.data[i] == '\n')
            col = 0;
        else if (++col > 998)
            long_line = true;
    }
    const char *cte = long_line ? "quoted-printable" : is_ascii(nb.data, nb.len) ? "7bit" : "8bit";

    char date[40];
    sl_rfc5322_date(sl_now_ms(), date);
    sl_buf_puts(out, "From: ");
    put_address(out, from);
    sl_buf_puts(out, "\r\nTo: ");
    for (size_t i = 0; i < n_to; i++) {
        if (i)
            sl_buf_puts(out, ",\r\n ");
        put_address(out, to[i]);
    }
    sl_buf_puts(out, "\r\nSubject: ");
    if (is_ascii(subject, sn))
        sl_buf_append(out, subject, sn);
    else
        sl_rfc2047_encode(out, subject, sn);
    sl_buf_printf(out,
                  "\r\nDate: %s\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: %s\r\n\r\n",
                  date, cte);
    if (long_line)
        append_qp(out, nb.data, nb.len);
    else
        sl_buf_append(out, nb.data, nb.len);
    sl_buf_free(&nb);
    return 0;
}
