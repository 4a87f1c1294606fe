/*
 * api_mime - the MIME builder of inline messages (see api_mime.h).
 */
#include "api_mime.h"
#include "template.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t')
            return true;
        else if (*s == 0x7f)
            return true;
    return false;
}

/* A header value: ASCII as is, UTF-8 with a placeholder as is (RFC 6532),
 * other UTF-8 as encoded-words. */
static int put_value(sl_buf *out, const char *field, const char *v, char *why, size_t whylen)
{
    if (has_ctl(v)) {
        snprintf(why, whylen, "%s: control characters (CR, LF...) are not allowed", field);
        return -1;
    }
    if (!sl_utf8_valid(v, strlen(v))) {
        snprintf(why, whylen, "%s: not UTF-8", field);
        return -1;
    }
    if (is_ascii(v) || strstr(v, "{{"))
        sl_buf_puts(out, v);
    else
        sl_rfc2047_encode(out, v, strlen(v));
    return 0;
}

static const char *const reserved[] = {
    "from",       "to",       "cc",       "bcc",  "subject",          "mime-version",
    "message-id", "date",     "received", "return-path", "dkim-signature", "sender"};

static int check_header_name(const char *n, char *why, size_t whylen, size_t i)
{
    if (!*n || strlen(n) > 76) {
        snprintf(why, whylen, "headers[%zu].name: 1-76 characters", i);
        return -1;
    }
    for (const char *p = n; *p; p++)
        if (*p <= 32 || *p >= 127 || *p == ':') {
            snprintf(why, whylen, "headers[%zu].name: '%s' is not a header field name", i, n);
            return -1;
        }
    bool bad = !strncasecmp(n, "content-", 8);
    for (size_t k = 0; !bad && k < sizeof reserved / sizeof reserved[0]; k++)
        bad = !strcasecmp(n, reserved[k]);
    if (bad) {
        snprintf(why, whylen, "headers[%zu].name: '%s' is set by sluice, not by extra headers", i,
                 n);
        return -1;
    }
    return 0;
}

static void put_body(sl_buf *out, const char *type, const char *body)
{
    sl_buf_printf(out, "Content-Type: %s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n",
                  type, is_ascii(body) ? "7bit" : "8bit");
    /* Line ends become CRLF here; the renderer normalises again after
     * substitution. */
    for (const char *p = body; *p; p++) {
        if (*p == '\r' && p[1] == '\n')
            continue;
        if (*p == '\n' || *p == '\r')
            sl_buf_puts(out, "\r\n");
        else
            sl_buf_putc(out, *p);
    }
    sl_buf_puts(out, "\r\n");
}

/* Decode base64 (white space ignored) to validate it and re-encode it in
 * lines of 76. */
static int put_base64(sl_buf *out, const char *b64, char *why, size_t whylen, size_t i)
{
    sl_buf clean = SL_BUF_INIT;
    for (const char *p = b64; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            sl_buf_putc(&clean, *p);
    int rc = 0;
    if (clean.len % 4) {
        rc = -1;
    } else if (clean.len) {
        for (size_t k = 0; k < clean.len && !rc; k++) {
            char c = clean.data[k];
            bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '+' || c == '/' || (c == '=' && k >= clean.len - 2);
            if (!ok)
                rc = -1;
        }
        if (!rc && clean.data[clean.len - 2] == '=' && clean.data[clean.len - 1] != '=')
            rc = -1;
    }
    if (rc) {
        snprintf(why, whylen, "attachments[%zu].content: not base64", i);
        sl_buf_free(&clean);
        return -1;
    }
    for (size_t k = 0; k < clean.len; k += 76) {
        size_t n = clean.len - k < 76 ? clean.len - k : 76;
        sl_buf_append(out, clean.data + k, n);
        sl_buf_puts(out, "\r\n");
    }
    sl_buf_free(&clean);
    return 0;
}

static int put_filename(sl_buf *out, const char *f, char *why, size_t whylen, size_t i)
{
    if (!*f || has_ctl(f) || !sl_utf8_valid(f, strlen(f)) || strlen(f) > 255) {
        snprintf(why, whylen, "attachments[%zu].filename: 1-255 octets of UTF-8 text", i);
        return -1;
    }
    if (is_ascii(f)) {
        sl_buf_puts(out, "; filename=\"");
        for (const char *p = f; *p; p++) {
            if (*p == '"' || *p == '\\')
                sl_buf_putc(out, '\\');
            sl_buf_putc(out, *p);
        }
        sl_buf_putc(out, '"');
        return 0;
    }
    /* RFC 2231: filename*=UTF-8''percent-encoded. */
    sl_buf_puts(out, ";\r\n filename*=UTF-8''");
    for (const unsigned char *p = (const unsigned char *)f; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("!#$&+-.^_`|~", *p))
            sl_buf_putc(out, (char)*p);
        else
            sl_buf_printf(out, "%%%02X", *p);
    }
    return 0;
}

static bool valid_type(const char *t)
{
    const char *slash = strchr(t, '/');
    if (!slash || slash == t || !slash[1] || strchr(slash + 1, '/'))
        return false;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("/!#$&-^_.+", *p)))
            return false;
    return true;
}

static void new_boundary(char out[40], const api_mime *m)
{
    for (;;) {
        unsigned char r[12];
        if (getrandom(r, sizeof r, 0) != sizeof r)
            sl_panic("getrandom failed");
        int n = snprintf(out, 40, "=_sluice_");
        for (int i = 0; i < 12; i++)
            n += snprintf(out + n, 40 - (size_t)n, "%02x", r[i]);
        /* "=_" never occurs in base64 or in a header the builder writes;
         * the bodies are the caller's, so look. */
        if ((!m->text || !strstr(m->text, out)) && (!m->html || !strstr(m->html, out)))
            return;
    }
}

static void put_alternative_or_single(sl_buf *out, const api_mime *m)
{
    if (m->text && m->html) {
        char b[40];
        new_boundary(b, m);
        sl_buf_printf(out, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n\r\n", b);
        sl_buf_printf(out, "--%s\r\n", b);
        put_body(out, "text/plain", m->text);
        sl_buf_printf(out, "--%s\r\n", b);
        put_body(out, "text/html", m->html);
        sl_buf_printf(out, "--%s--\r\n", b);
    } else if (m->text) {
        put_body(out, "text/plain", m->text);
    } else {
        put_body(out, "text/html", m->html);
    }
}

int api_mime_build(const api_mime *m, sl_buf *out, char *why, size_t whylen)
{
    if (!m->text && !m->html) {
        snprintf(why, whylen, "content: text or html (or both) is required");
        return -1;
    }
    if ((m->text && !sl_utf8_valid(m->text, strlen(m->text))) ||
        (m->html && !sl_utf8_valid(m->html, strlen(m->html)))) {
        snprintf(why, whylen, "content.%s: not UTF-8",
                 m->text && !sl_utf8_valid(m->text, strlen(m->text)) ? "text" : "html");
        return -1;
    }
    sl_buf_puts(out, "From: ");
    if (m->from_name && *m->from_name) {
        if (put_value(out, "content.from_name", m->from_name, why, whylen))
            return -1;
        sl_buf_putc(out, ' ');
    }
    if (has_ctl(m->from)) {
        snprintf(why, whylen, "sender: control characters are not allowed");
        return -1;
    }
    sl_buf_printf(out, "<%s>\r\nTo: {{" API_MIME_TO_VAR "}}\r\nSubject: ", m->from);
    if (put_value(out, "content.subject", m->subject ? m->subject : "", why, whylen))
        return -1;
    sl_buf_puts(out, "\r\nMIME-Version: 1.0\r\n");
    for (size_t i = 0; i < m->n_headers; i++) {
        if (check_header_name(m->headers[i].name, why, whylen, i))
            return -1;
        char field[64];
        snprintf(field, sizeof field, "headers[%zu].value", i);
        sl_buf_printf(out, "%s: ", m->headers[i].name);
        if (put_value(out, field, m->headers[i].value, why, whylen))
            return -1;
        sl_buf_puts(out, "\r\n");
    }
    if (!m->n_att) {
        put_alternative_or_single(out, m);
        return 0;
    }
    char b[40];
    new_boundary(b, m);
    sl_buf_printf(out, "Content-Type: multipart/mixed;\r\n boundary=\"%s\"\r\n\r\n--%s\r\n", b, b);
    put_alternative_or_single(out, m);
    for (size_t i = 0; i < m->n_att; i++) {
        const api_attachment *a = &m->att[i];
        const char *type = a->content_type ? a->content_type : "application/octet-stream";
        if (!valid_type(type)) {
            snprintf(why, whylen, "attachments[%zu].content_type: '%s' is not type/subtype", i,
                     type);
            return -1;
        }
        sl_buf_printf(out, "--%s\r\nContent-Type: %s\r\nContent-Transfer-Encoding: base64\r\n"
                           "Content-Disposition: attachment",
                      b, type);
        if (put_filename(out, a->filename ? a->filename : "", why, whylen, i))
            return -1;
        sl_buf_puts(out, "\r\n\r\n");
        if (put_base64(out, a->content_b64 ? a->content_b64 : "", why, whylen, i))
            return -1;
    }
    sl_buf_printf(out, "--%s--\r\n", b);
    return 0;
}
