/*
 * smtp_reply - the SMTP reply type and its strict parser; see smtp_reply.h.
 */
#include "smtp_reply.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sl_reply_free(sl_reply *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->raw);
    r->text = NULL;
    r->raw = NULL;
    r->text_len = 0;
}

void sl_reply_copy(sl_reply *dst, const sl_reply *src)
{
    if (dst == src)
        return;
    sl_reply_free(dst);
    *dst = *src;
    dst->text = src->text ? xstrndup(src->text, src->text_len) : NULL;
    dst->raw = src->raw ? xstrdup(src->raw) : NULL;
}

/* The raw form of buf[0..len): every line with its code, CRs before the
 * LFs dropped, "\n" between lines. */
static char *raw_of(const char *buf, size_t len)
{
    sl_buf b = SL_BUF_INIT;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - buf) : len;
        size_t le = e > i && buf[e - 1] == '\r' ? e - 1 : e;
        if (b.len)
            sl_buf_putc(&b, '\n');
        sl_buf_append(&b, buf + i, le - i);
        i = e + 1;
    }
    return b.data ? sl_buf_steal(&b, NULL) : xstrdup("");
}

/* Length of a leading "C.S.D" enhanced code whose class is cls, followed by
 * a space or the end; 0 when there is none. */
static size_t enh_len(const char *p, size_t n, char cls)
{
    if (n < 5 || p[0] != cls || p[1] != '.')
        return 0;
    size_t i = 2, d = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9' && d < 3)
        i++, d++;
    if (d == 0 || i >= n || p[i] != '.')
        return 0;
    i++;
    d = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9' && d < 3)
        i++, d++;
    if (d == 0 || (i < n && p[i] != ' '))
        return 0;
    return i;
}

int sl_reply_parse(const char *buf, size_t len, sl_reply *out, size_t *used)
{
    memset(out, 0, sizeof(*out));
    *used = 0;
    sl_buf text = SL_BUF_INIT;
    size_t i = 0;
    int code = 0, lines = 0;
    for (;;) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl) {
            sl_buf_free(&text);
            /* Too long a line is malformed, not merely incomplete. A CR at
             * the very end may be the first half of the CRLF, which does
             * not count towards the line. */
            size_t partial = len - i;
            if (partial > 0 && buf[len - 1] == '\r')
                partial--;
            return partial > SL_REPLY_MAX_LINE ? SL_EPARSE : SL_EAGAIN;
        }
        size_t end = (size_t)(nl - buf);
        size_t le = (end > i && buf[end - 1] == '\r') ? end - 1 : end;
        const char *l = buf + i;
        size_t ll = le - i;
        if (ll > SL_REPLY_MAX_LINE || ll < 3 || memchr(l, '\0', ll) || ++lines > SL_REPLY_MAX_LINES)
            goto bad;
        if (l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '5' || l[2] < '0' || l[2] > '9')
            goto bad;
        int c = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
        if (code && c != code)
            goto bad;
        code = c;
        bool more = false;
        size_t t = 3;
        if (ll > 3) {
            if (l[3] == '-')
                more = true;
            else if (l[3] != ' ')
                goto bad;
            t = 4;
        }
        size_t el = enh_len(l + t, ll - t, l[0]);
        if (el) {
            if (lines == 1)
                snprintf(out->enh, sizeof(out->enh), "%.*s", (int)el, l + t);
            t += el;
            if (t < ll)
                t++; /* the space after the code */
        }
        if (lines > 1)
            sl_buf_putc(&text, '\n');
        sl_buf_append(&text, l + t, ll - t);
        i = end + 1;
        if (!more)
            break;
    }
    out->code = code;
    out->lines = lines;
    if (!text.data)
        sl_buf_append(&text, "", 0);
    out->text = sl_buf_steal(&text, &out->text_len);
    out->raw = raw_of(buf, i);
    *used = i;
    return 0;
bad:
    sl_buf_free(&text);
    memset(out, 0, sizeof(*out));
    return SL_EPARSE;
}

void sl_reply_of(int code, const char *enh, const char *text, sl_reply *out)
{
    const char *t = text ? text : "";
    size_t n = strlen(t);
    /* Verbatim server text: every line carries the code. */
    if (n >= 3 && t[0] == '0' + code / 100 % 10 && t[1] == '0' + code / 10 % 10 &&
        t[2] == '0' + code % 10) {
        sl_buf b = SL_BUF_INIT;
        sl_buf_append(&b, t, n);
        sl_buf_append(&b, "\r\n", 2);
        size_t used;
        int rc = sl_reply_parse(b.data, b.len, out, &used);
        sl_buf_free(&b);
        if (rc == 0 && used == n + 2 && out->code == code) {
            if (!out->enh[0] && enh)
                snprintf(out->enh, sizeof(out->enh), "%s", enh);
            free(out->raw);
            out->raw = xstrdup(t);
            return;
        }
        sl_reply_free(out);
    }
    memset(out, 0, sizeof(*out));
    out->code = code;
    snprintf(out->enh, sizeof(out->enh), "%s", enh ? enh : "");
    size_t el = strlen(out->enh);
    if (el && n >= el && !strncmp(t, out->enh, el) && (t[el] == ' ' || !t[el])) {
        t += el + (t[el] == ' ');
        n -= (size_t)(t - (text ? text : ""));
    }
    out->text = xstrndup(t, n);
    out->text_len = n;
    out->raw = xstrdup(text ? text : "");
    out->lines = 1;
    for (size_t i = 0; i < n; i++)
        out->lines += t[i] == '\n';
}

void sl_reply_rule_text(const sl_reply *r, sl_buf *b)
{
    sl_buf_printf(b, "%d %s%s", r->code, r->enh, r->enh[0] ? " " : "");
    for (size_t i = 0; i < r->text_len; i++)
        sl_buf_putc(b, r->text[i] == '\n' ? ' ' : r->text[i]);
}
