/*
 * inb_report - see inb_report.h.
 *
 * GMime parses the MIME structure and every header block: the body of a
 * message/delivery-status part is a sequence of header blocks separated by
 * blank lines (RFC 3464 section 2.1), each handed to GMime's parser as the
 * header of an empty message, so folding, comments and encoded words are
 * GMime's business.
 */
#include "inb_report.h"
#include "util.h"

#include <ctype.h>
#include <gmime/gmime.h>
#include <regex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static regex_t reply_re;

void inb_report_init(void)
{
    g_mime_init();
    /* A quoted SMTP reply: a code, then an optional enhanced code. */
    if (regcomp(&reply_re, "(^|[^0-9])([45][0-9][0-9])[- ](#?([45]\\.[0-9]{1,3}\\.[0-9]{1,3}))?",
                REG_EXTENDED) != 0)
        sl_panic("inb_report: reply regex");
}

const char *inb_report_kind_name(inb_report_kind k)
{
    switch (k) {
    case INB_REPORT_DSN: return "dsn";
    case INB_REPORT_ARF: return "arf";
    case INB_REPORT_PLAIN: return "plain";
    default: return "other";
    }
}

/* A copy of s without leading and trailing white space ("" for NULL). */
static char *trimmed(const char *s)
{
    if (!s)
        return xstrdup("");
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return xstrndup(s, n);
}

/* "rfc822; a@b" -> "a@b"; "<a@b>" -> "a@b". */
static char *typed_value(const char *s)
{
    char *v = trimmed(s);
    const char *semi = strchr(v, ';');
    const char *p = v;
    if (semi) {
        /* The address type is an atom: only strip it when it looks like one. */
        bool atom = semi > v;
        for (const char *q = v; q < semi && atom; q++)
            atom = isalnum((unsigned char)*q) || *q == '-';
        if (atom)
            p = semi + 1;
    }
    while (isspace((unsigned char)*p))
        p++;
    size_t n = strlen(p);
    if (n >= 2 && p[0] == '<' && p[n - 1] == '>') {
        p++;
        n -= 2;
    }
    char *out = xstrndup(p, n);
    free(v);
    return out;
}

static char *lowered(char *s)
{
    sl_lower(s);
    return s;
}

/* The decoded content of a leaf part, NUL-terminated. */
static char *part_text(GMimeObject *obj, size_t *len)
{
    *len = 0;
    if (!GMIME_IS_PART(obj))
        return xstrdup("");
    GMimeDataWrapper *w = g_mime_part_get_content(GMIME_PART(obj));
    if (!w)
        return xstrdup("");
    GMimeStream *mem = g_mime_stream_mem_new();
    g_mime_data_wrapper_write_to_stream(w, mem);
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
    char *out = xstrndup((const char *)ba->data, ba->len);
    *len = ba->len;
    g_object_unref(mem);
    return out;
}

/* GMime's reading of a header block (or a whole message: its header). */
static GMimeMessage *parse_message(const char *p, size_t n)
{
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(p, n);
    GMimeParser *parser = g_mime_parser_new_with_stream(s);
    GMimeMessage *m = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    g_object_unref(s);
    return m;
}

static const char *hdr(GMimeMessage *m, const char *name)
{
    return m ? g_mime_object_get_header(GMIME_OBJECT(m), name) : NULL;
}

/* The blocks of a delivery-status body: [p, end) split at blank lines. */
static const char *next_block(const char *p, const char *end, size_t *n)
{
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    const char *q = p;
    while (q < end) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        if (!nl) {
            q = end;
            break;
        }
        const char *next = nl + 1;
        if (next < end && (*next == '\n' || (*next == '\r' && next + 1 < end && next[1] == '\n'))) {
            q = next;
            break;
        }
        q = next;
    }
    *n = (size_t)(q - p);
    return p;
}

static void parse_delivery_status(inb_report *r, const char *body, size_t len)
{
    const char *end = body + len, *p = body;
    size_t n;
    bool first = true;
    while (p < end) {
        const char *b = next_block(p, end, &n);
        p = b + n;
        if (!n)
            break;
        /* The block plus a blank line: a header with an empty body. */
        char *blk = xasprintf("%.*s\n\n", (int)n, b);
        GMimeMessage *m = parse_message(blk, strlen(blk));
        free(blk);
        if (first) {
            first = false; /* the per-message fields (Reporting-MTA...) */
            if (m && !hdr(m, "Final-Recipient") && !hdr(m, "Action")) {
                g_object_unref(m);
                continue;
            }
        }
        if (m && (hdr(m, "Final-Recipient") || hdr(m, "Action"))) {
            r->rcpts = xrealloc(r->rcpts, (r->n_rcpts + 1) * sizeof *r->rcpts);
            inb_dsn_rcpt *e = &r->rcpts[r->n_rcpts++];
            e->final_recipient = typed_value(hdr(m, "Final-Recipient"));
            e->original_recipient = typed_value(hdr(m, "Original-Recipient"));
            e->action = lowered(trimmed(hdr(m, "Action")));
            e->status = trimmed(hdr(m, "Status"));
            e->diagnostic = typed_value(hdr(m, "Diagnostic-Code"));
            e->remote_mta = typed_value(hdr(m, "Remote-MTA"));
        }
        if (m)
            g_object_unref(m);
    }
}

static void take_original_headers(inb_report *r, GMimeMessage *m)
{
    if (!m)
        return;
    if (!*r->orig_message_id && hdr(m, "Message-ID")) {
        free(r->orig_message_id);
        r->orig_message_id = typed_value(hdr(m, "Message-ID"));
    }
    if (!*r->orig_return_path && hdr(m, "Return-Path")) {
        free(r->orig_return_path);
        r->orig_return_path = typed_value(hdr(m, "Return-Path"));
    }
    /* Microsoft's JMRP redacts To but names the recipient in this field. */
    const char *hm = hdr(m, "X-HmXmrOriginalRecipient");
    if (!*r->orig_to && hm) {
        free(r->orig_to);
        r->orig_to = typed_value(hm);
    }
    if (!*r->orig_to && hdr(m, "To")) {
        InternetAddressList *l = internet_address_list_parse(NULL, hdr(m, "To"));
        if (l && internet_address_list_length(l) > 0) {
            InternetAddress *a = internet_address_list_get_address(l, 0);
            if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
                free(r->orig_to);
                r->orig_to = xstrdup(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)));
            }
        }
        if (l)
            g_object_unref(l);
    }
}

static void parse_feedback_report(inb_report *r, const char *body, size_t len)
{
    size_t n;
    const char *b = next_block(body, body + len, &n);
    char *blk = xasprintf("%.*s\n\n", (int)n, b);
    GMimeMessage *m = parse_message(blk, strlen(blk));
    free(blk);
    if (!m)
        return;
    free(r->feedback_type);
    r->feedback_type = lowered(trimmed(hdr(m, "Feedback-Type")));
    free(r->original_mail_from);
    r->original_mail_from = typed_value(hdr(m, "Original-Mail-From"));
    free(r->original_rcpt_to);
    r->original_rcpt_to = typed_value(hdr(m, "Original-Rcpt-To"));
    free(r->source_ip);
    r->source_ip = trimmed(hdr(m, "Source-IP"));
    free(r->user_agent);
    r->user_agent = trimmed(hdr(m, "User-Agent"));
    g_object_unref(m);
}

static bool is_type(GMimeObject *o, const char *type, const char *sub)
{
    GMimeContentType *ct = g_mime_object_get_content_type(o);
    return ct && g_mime_content_type_is_type(ct, type, sub);
}

/* The parts of a multipart/report after its first (human-readable) one. */
static void parse_report_parts(inb_report *r, GMimeMultipart *mp)
{
    int n = g_mime_multipart_get_count(mp);
    for (int i = 1; i < n; i++) {
        GMimeObject *part = g_mime_multipart_get_part(mp, i);
        if (GMIME_IS_MESSAGE_PART(part)) { /* message/rfc822, message/global */
            take_original_headers(r, g_mime_message_part_get_message(GMIME_MESSAGE_PART(part)));
            continue;
        }
        size_t len;
        char *text = part_text(part, &len);
        if (r->kind == INB_REPORT_DSN && (is_type(part, "message", "delivery-status") ||
                                          is_type(part, "message", "global-delivery-status")))
            parse_delivery_status(r, text, len);
        else if (r->kind == INB_REPORT_ARF && is_type(part, "message", "feedback-report"))
            parse_feedback_report(r, text, len);
        else if (is_type(part, "text", "rfc822-headers") ||
                 is_type(part, "message", "global-headers") ||
                 is_type(part, "message", "rfc822")) {
            /* A header block; a message/rfc822 GMime left as a leaf too. */
            char *blk = xasprintf("%s\n\n", text);
            GMimeMessage *m = parse_message(blk, strlen(blk));
            free(blk);
            take_original_headers(r, m);
            if (m)
                g_object_unref(m);
        }
        free(text);
    }
}

/* The first multipart/report in the tree (a forwarded report may be
 * wrapped in a multipart/mixed). */
static GMimeMultipart *find_report(GMimeObject *o, int depth)
{
    if (!o || depth > 8 || !GMIME_IS_MULTIPART(o))
        return NULL;
    if (is_type(o, "multipart", "report"))
        return GMIME_MULTIPART(o);
    GMimeMultipart *mp = GMIME_MULTIPART(o);
    int n = g_mime_multipart_get_count(mp);
    for (int i = 0; i < n; i++) {
        GMimeMultipart *r = find_report(g_mime_multipart_get_part(mp, i), depth + 1);
        if (r)
            return r;
    }
    return NULL;
}

/* The first text/plain leaf. */
static GMimeObject *find_text(GMimeObject *o, int depth)
{
    if (!o || depth > 8)
        return NULL;
    if (GMIME_IS_MULTIPART(o)) {
        GMimeMultipart *mp = GMIME_MULTIPART(o);
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n; i++) {
            GMimeObject *t = find_text(g_mime_multipart_get_part(mp, i), depth + 1);
            if (t)
                return t;
        }
        return NULL;
    }
    return GMIME_IS_PART(o) && is_type(o, "text", "plain") ? o : NULL;
}

/* A non-standard bounce: the first line quoting a 5xx reply (else the
 * first quoting a 4xx) is the diagnostic. */
static void parse_plain(inb_report *r, const char *text)
{
    const char *found[2] = {NULL, NULL}; /* 5xx, 4xx */
    size_t flen[2] = {0, 0};
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        char *l = xstrndup(line, n);
        regmatch_t m[4];
        if (regexec(&reply_re, l, 4, m, 0) == 0) {
            int k = l[m[2].rm_so] == '5' ? 0 : 1;
            if (!found[k]) {
                found[k] = line + m[2].rm_so;
                flen[k] = n - (size_t)m[2].rm_so;
            }
        }
        free(l);
        if (found[0] || !nl)
            break;
        line = nl + 1;
    }
    int k = found[0] ? 0 : found[1] ? 1 : -1;
    if (k < 0)
        return;
    r->kind = INB_REPORT_PLAIN;
    r->rcpts = xcalloc(1, sizeof *r->rcpts);
    r->n_rcpts = 1;
    inb_dsn_rcpt *e = &r->rcpts[0];
    char *diag = xstrndup(found[k], flen[k]);
    e->diagnostic = trimmed(diag);
    free(diag);
    e->action = xstrdup(k == 0 ? "failed" : "delayed");
    e->final_recipient = xstrdup("");
    e->original_recipient = xstrdup("");
    e->remote_mta = xstrdup("");
    regmatch_t m[4];
    if (regexec(&reply_re, e->diagnostic, 4, m, 0) == 0 && m[3].rm_so >= 0)
        e->status = xstrndup(e->diagnostic + m[3].rm_so, (size_t)(m[3].rm_eo - m[3].rm_so));
    else
        e->status = xstrdup("");
}

static bool bounce_subject(const char *s)
{
    static const char *const words[] = {"undeliver", "delivery status", "delivery fail",
                                        "failure notice", "returned mail", "mail delivery",
                                        "non remis", "unzustellbar", "not delivered"};
    if (!s)
        return false;
    char *l = lowered(xstrdup(s));
    bool yes = false;
    for (size_t i = 0; i < sizeof words / sizeof words[0] && !yes; i++)
        yes = strstr(l, words[i]) != NULL;
    free(l);
    return yes;
}

void inb_report_parse(const char *msg, size_t len, inb_report *out)
{
    memset(out, 0, sizeof *out);
    out->feedback_type = xstrdup("");
    out->original_mail_from = xstrdup("");
    out->original_rcpt_to = xstrdup("");
    out->source_ip = xstrdup("");
    out->user_agent = xstrdup("");
    out->orig_message_id = xstrdup("");
    out->orig_return_path = xstrdup("");
    out->orig_to = xstrdup("");
    GMimeMessage *m = parse_message(msg, len);
    if (!m)
        return;
    GMimeObject *top = g_mime_message_get_mime_part(m);
    GMimeMultipart *rep = find_report(top, 0);
    if (rep) {
        const char *rt =
            g_mime_content_type_get_parameter(g_mime_object_get_content_type(GMIME_OBJECT(rep)),
                                              "report-type");
        if (rt && !strcasecmp(rt, "delivery-status"))
            out->kind = INB_REPORT_DSN;
        else if (rt && !strcasecmp(rt, "feedback-report"))
            out->kind = INB_REPORT_ARF;
        if (out->kind != INB_REPORT_OTHER)
            parse_report_parts(out, rep);
    } else if (bounce_subject(g_mime_message_get_subject(m)) ||
               bounce_subject(hdr(m, "X-Failed-Recipients") ? "undeliverable" : NULL)) {
        GMimeObject *t = find_text(top, 0);
        if (t) {
            size_t tl;
            char *text = part_text(t, &tl);
            parse_plain(out, text);
            free(text);
        }
    }
    g_object_unref(m);
}

void inb_report_reply(const inb_dsn_rcpt *e, sl_reply *out)
{
    const char *d = e->diagnostic ? e->diagnostic : "";
    regmatch_t m[4];
    /* The reply may follow some words ("host mx.example.com said: 550 ...",
     * Postfix's X-Postfix type); a code that contradicts Status is not it. */
    if (*d && regexec(&reply_re, d, 4, m, 0) == 0 &&
        (!e->status || !e->status[0] || e->status[0] == d[m[2].rm_so])) {
        int code = atoi(d + m[2].rm_so);
        char enh[16] = "";
        if (m[3].rm_so >= 0)
            snprintf(enh, sizeof enh, "%.*s", (int)(m[3].rm_eo - m[3].rm_so), d + m[3].rm_so);
        else if (e->status)
            snprintf(enh, sizeof enh, "%s", e->status);
        const char *text = d + m[0].rm_eo;
        while (*text == ' ')
            text++;
        sl_reply_of(code, enh, text, out);
        return;
    }
    const char *st = e->status ? e->status : "";
    int code = st[0] == '5' ? 550 : st[0] == '4' ? 450 : 550;
    if (!strcmp(e->action ? e->action : "", "delayed"))
        code = 450;
    sl_reply_of(code, st, *d ? d : "(no diagnostic code)", out);
}

void inb_report_free(inb_report *r)
{
    for (size_t i = 0; i < r->n_rcpts; i++) {
        inb_dsn_rcpt *e = &r->rcpts[i];
        free(e->final_recipient);
        free(e->original_recipient);
        free(e->action);
        free(e->status);
        free(e->diagnostic);
        free(e->remote_mta);
    }
    free(r->rcpts);
    free(r->feedback_type);
    free(r->original_mail_from);
    free(r->original_rcpt_to);
    free(r->source_ip);
    free(r->user_agent);
    free(r->orig_message_id);
    free(r->orig_return_path);
    free(r->orig_to);
    memset(r, 0, sizeof *r);
}
