/*
 * message - see message.h.
 */
#include "message.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Length of the header section (up to and including the blank line), or
 * len when there is no blank line. */
static size_t header_len(const char *msg, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (msg[i] == '\n' && msg[i + 1] == '\n')
            return i + 2;
        if (i + 3 < len && msg[i] == '\r' && msg[i + 1] == '\n' && msg[i + 2] == '\r' &&
            msg[i + 3] == '\n')
            return i + 4;
    }
    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
        return 2;
    return len;
}

int snd_msg_from_domain(const char *msg, size_t len, char *out, size_t outsz)
{
    size_t hl = header_len(msg, len);
    size_t i = 0;
    while (i < hl) {
        size_t eol = i;
        while (eol < hl && msg[eol] != '\n')
            eol++;
        if (eol - i > 5 && !strncasecmp(msg + i, "from:", 5)) {
            /* Unfold: the value runs on while the next line starts with WSP. */
            size_t end = eol;
            while (end + 1 < hl && (msg[end + 1] == ' ' || msg[end + 1] == '\t')) {
                end++;
                while (end < hl && msg[end] != '\n')
                    end++;
            }
            const char *v = msg + i + 5, *ve = msg + end;
            const char *lt = memchr(v, '<', (size_t)(ve - v));
            const char *start = lt ? lt + 1 : v;
            const char *stop = start;
            while (stop < ve && *stop != '>' && *stop != ',' && !(lt == NULL && *stop == '\r'))
                stop++;
            const char *at = NULL;
            for (const char *q = start; q < stop; q++)
                if (*q == '@')
                    at = q;
            if (!at)
                return SL_ENOTFOUND;
            at++;
            size_t n = 0;
            while (at + n < stop && !isspace((unsigned char)at[n]) && at[n] != '>' && at[n] != ')')
                n++;
            if (n == 0 || n >= outsz)
                return SL_ENOTFOUND;
            memcpy(out, at, n);
            out[n] = 0;
            sl_lower(out);
            return 0;
        }
        i = eol + 1;
    }
    return SL_ENOTFOUND;
}

bool snd_msg_has_field(const char *msg, size_t len, const char *name)
{
    size_t hl = header_len(msg, len), nl = strlen(name);
    for (size_t i = 0; i < hl;) {
        if (i + nl < hl && msg[i + nl] == ':' && !strncasecmp(msg + i, name, nl))
            return true;
        while (i < hl && msg[i] != '\n')
            i++;
        i++;
    }
    return false;
}

int snd_msg_list_unsub(sl_buf *msg, const char *url_base, const char *mailto_domain,
                       const char *token)
{
    if (snd_msg_has_field(msg->data, msg->len, "List-Unsubscribe"))
        return 1;
    sl_buf h = SL_BUF_INIT;
    /* Folded before the mailto URI: a token is some 200 characters, and a
     * line stays well under 998 (RFC 5322 2.1.1). */
    sl_buf_printf(&h, "List-Unsubscribe: <%s/u/%s>", url_base, token);
    if (mailto_domain && *mailto_domain)
        sl_buf_printf(&h, ",\r\n <mailto:unsub+%s@%s>", token, mailto_domain);
    sl_buf_puts(&h, "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    sl_buf_append(&h, msg->data, msg->len);
    sl_buf_free(msg);
    *msg = h;
    return 0;
}

/* Append p with bare LF and bare CR turned into CRLF. */
static void append_crlf(sl_buf *out, const char *p, size_t n)
{
    sl_buf_reserve(out, n + n / 16 + 2);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\r') {
            sl_buf_append(out, "\r\n", 2);
            if (i + 1 < n && p[i + 1] == '\n')
                i++;
        } else if (c == '\n') {
            sl_buf_append(out, "\r\n", 2);
        } else {
            sl_buf_putc(out, c);
        }
    }
    if (out->len < 2 || out->data[out->len - 2] != '\r' || out->data[out->len - 1] != '\n')
        sl_buf_append(out, "\r\n", 2);
}

int snd_msg_build(const sl_job *job, const sl_tmpl *tmpl, int64_t now_ms, sl_buf *out, char **err)
{
    sl_buf_reset(out);
    /* Classify rejects these; a dispatch written by other means must not
     * fail further down as a confusing "no header section". */
    const char *bad_id = sl_job_id_check(job->job_id);
    if (bad_id) {
        *err = xstrdup(bad_id);
        return SL_EINVAL;
    }
    if (tmpl) {
        const char **names = xcalloc(job->n_vars + 1, sizeof *names);
        const char **values = xcalloc(job->n_vars + 1, sizeof *values);
        for (size_t i = 0; i < job->n_vars; i++) {
            names[i] = job->vars[i]->key;
            values[i] = job->vars[i]->value;
        }
        sl_buf tmp = SL_BUF_INIT;
        int rc = sl_tmpl_render_arrays(tmpl, names, values, job->n_vars, &tmp, err);
        free(names);
        free(values);
        if (rc < 0) {
            sl_buf_free(&tmp);
            return rc;
        }
        append_crlf(out, tmp.data, tmp.len);
        sl_buf_free(&tmp);
    } else {
        if (!job->raw.len) {
            *err = xstrdup("job has neither raw content nor a template");
            return SL_EINVAL;
        }
        append_crlf(out, (const char *)job->raw.data, job->raw.len);
    }
    char dom[256];
    const char *d = NULL;
    if (snd_msg_from_domain(out->data, out->len, dom, sizeof dom) == 0)
        d = dom;
    else if (job->mail_from && strchr(job->mail_from, '@'))
        d = strrchr(job->mail_from, '@') + 1;
    char *mid = sl_message_id(job->job_id, d);
    int rc = sl_msg_ensure_headers(out, mid, now_ms);
    free(mid);
    if (rc < 0) {
        *err = xstrdup("message has no header section");
        return SL_EINVAL;
    }
    return 0;
}

void snd_msg_dotstuff(const char *msg, size_t len, sl_buf *out)
{
    sl_buf_reserve(out, len + len / 64 + 8);
    bool bol = true;
    for (size_t i = 0; i < len; i++) {
        if (bol && msg[i] == '.')
            sl_buf_putc(out, '.');
        sl_buf_putc(out, msg[i]);
        bol = msg[i] == '\n';
    }
    if (len < 2 || msg[len - 2] != '\r' || msg[len - 1] != '\n')
        sl_buf_append(out, "\r\n", 2);
    sl_buf_append(out, ".\r\n", 3);
}

bool snd_msg_has_8bit(const char *msg, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)msg[i] >= 0x80)
            return true;
    return false;
}

static bool str_8bit(const char *s)
{
    return s && snd_msg_has_8bit(s, strlen(s));
}

bool snd_msg_needs_smtputf8(const char *mail_from, char *const *rcpts, size_t n_rcpts,
                            const char *msg, size_t len)
{
    if (str_8bit(mail_from))
        return true;
    for (size_t i = 0; i < n_rcpts; i++)
        if (str_8bit(rcpts[i]))
            return true;
    return snd_msg_has_8bit(msg, header_len(msg, len));
}
