/*
 * submit_msg - the From header's domains and the Received header (see
 * submit_msg.h).
 */
#include "submit_msg.h"
#include "sluice.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void sub_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* The unfolded value of every field named `name` in the header section.
 * Returns how many there were; *value gets the first (caller frees). */
static int header_find(const char *msg, size_t len, const char *name, char **value)
{
    size_t nl = strlen(name);
    int found = 0;
    const char *p = msg, *end = msg + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (ll == 0 || (ll == 1 && p[0] == '\r'))
            break; /* the empty line ends the header section */
        const char *colon = memchr(p, ':', ll);
        bool match = false;
        if (colon && p[0] != ' ' && p[0] != '\t') {
            size_t fl = (size_t)(colon - p);
            while (fl && (p[fl - 1] == ' ' || p[fl - 1] == '\t'))
                fl--; /* obsolete syntax allows white space before ':' */
            match = fl == nl && !strncasecmp(p, name, nl);
        }
        const char *next = eol ? eol + 1 : end;
        if (match) {
            sl_buf v = SL_BUF_INIT;
            sl_buf_append(&v, colon + 1, (size_t)(p + ll - colon - 1));
            while (next < end && (*next == ' ' || *next == '\t')) {
                const char *e2 = memchr(next, '\n', (size_t)(end - next));
                size_t l2 = e2 ? (size_t)(e2 - next) : (size_t)(end - next);
                sl_buf_append(&v, next, l2);
                next = e2 ? e2 + 1 : end;
            }
            for (size_t i = 0; i < v.len; i++)
                if (v.data[i] == '\r' || v.data[i] == '\n')
                    v.data[i] = ' ';
            if (found++ == 0)
                *value = sl_buf_steal(&v, NULL);
            else
                sl_buf_free(&v);
            p = next;
            continue;
        }
        p = next;
    }
    return found;
}

/* The first (or, with last, the last) c in s[0..n) at or after from that is
 * not inside a quoted string ('\\' escapes inside quotes); NULL if none. */
static const char *find_unquoted(const char *s, size_t n, char c, const char *from, bool last)
{
    const char *hit = NULL;
    bool q = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && q && i + 1 < n) {
            i++;
            continue;
        }
        if (s[i] == '"') {
            q = !q;
        } else if (!q && s[i] == c && s + i >= from) {
            hit = s + i;
            if (!last)
                break;
        }
    }
    return hit;
}

/* Domain of one mailbox (the text between separators, comments already
 * removed): the addr-spec inside <> if any, else the whole; the part after
 * the last '@' outside quotes. */
static int mailbox_domain(const char *s, size_t n, char **out)
{
    const char *lt = find_unquoted(s, n, '<', s, false);
    if (lt) {
        const char *gt = find_unquoted(s, n, '>', lt, false);
        if (!gt)
            return SL_EPARSE;
        s = lt + 1;
        n = (size_t)(gt - lt - 1);
    }
    const char *at = find_unquoted(s, n, '@', s, true);
    if (!at)
        return SL_EPARSE;
    const char *d = at + 1, *e = s + n;
    while (d < e && (*d == ' ' || *d == '\t'))
        d++;
    while (e > d && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (e > d && e[-1] == '.')
        e--; /* a trailing root dot names the same domain */
    if (d == e)
        return SL_EPARSE;
    for (const char *c = d; c < e; c++)
        if (*c == ' ' || *c == '\t' || *c == '"' || *c == '<' || *c == '>' || *c == '@')
            return SL_EPARSE;
    char *dom = xstrndup(d, (size_t)(e - d));
    /* Compare A-labels with A-labels: an internationalised From domain is
     * converted as envelope domains are; one that does not convert is kept
     * lower-cased and will simply match nothing. */
    char addr[SLUICE_ADDRESS_MAX + 2], norm[SLUICE_ADDRESS_MAX + 1];
    if ((size_t)snprintf(addr, sizeof addr, "x@%s", dom) < sizeof addr &&
        sluice_address_normalize(addr, norm, NULL, 0) == 0) {
        free(dom);
        dom = xstrdup(strchr(norm, '@') + 1);
    } else {
        sl_lower(dom);
    }
    *out = dom;
    return 0;
}

int sub_msg_from_domains(const char *msg, size_t len, char ***out, size_t *n)
{
    char *v = NULL;
    int found = header_find(msg, len, "From", &v);
    if (found == 0)
        return SL_ENOTFOUND;
    if (found > 1) {
        free(v);
        return SL_EEXISTS;
    }
    /* Remove comments (nested, with quoted pairs), keep quoted strings. */
    size_t vl = strlen(v), w = 0;
    int depth = 0;
    bool q = false;
    for (size_t i = 0; i < vl; i++) {
        char c = v[i];
        if (c == '\\' && (q || depth) && i + 1 < vl) {
            if (!depth) {
                v[w++] = c;
                v[w++] = v[i + 1];
            }
            i++;
            continue;
        }
        if (depth) {
            if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
            continue;
        }
        if (c == '"')
            q = !q;
        else if (c == '(' && !q) {
            depth = 1;
            v[w++] = ' ';
            continue;
        }
        v[w++] = c;
    }
    v[w] = 0;
    /* Split into mailboxes at top-level ',' (and group ':' ';'). */
    char **doms = NULL;
    size_t nd = 0;
    int rc = 0;
    size_t start = 0;
    q = false;
    bool angle = false;
    for (size_t i = 0; i <= w; i++) {
        char c = v[i];
        if (i < w && c == '\\' && q && i + 1 < w) {
            i++;
            continue;
        }
        if (i < w && c == '"') {
            q = !q;
            continue;
        }
        if (q && i < w)
            continue;
        if (c == '<')
            angle = true;
        else if (c == '>')
            angle = false;
        if (angle && i < w)
            continue;
        if (c == ':' && i < w) { /* group display name */
            start = i + 1;
            continue;
        }
        if (i == w || c == ',' || c == ';') {
            const char *s = v + start;
            size_t sl = i - start;
            size_t k = 0;
            while (k < sl && (s[k] == ' ' || s[k] == '\t'))
                k++;
            if (k < sl) {
                char *d;
                rc = mailbox_domain(s, sl, &d);
                if (rc)
                    break;
                doms = xrealloc(doms, (nd + 1) * sizeof *doms);
                doms[nd++] = d;
            }
            start = i + 1;
        }
    }
    free(v);
    if (!rc && nd == 0)
        rc = SL_EPARSE;
    if (rc) {
        sub_strv_free(doms, nd);
        return rc;
    }
    *out = doms;
    *n = nd;
    return 0;
}

/* Append word to the field, folding before it when the line would pass 78
 * columns. col tracks the current line's length. */
static void fold_word(sl_buf *b, size_t *col, const char *word)
{
    size_t wl = strlen(word);
    if (*col + 1 + wl > 78 && *col > 8) {
        sl_buf_puts(b, "\r\n\t");
        *col = 8;
    } else {
        sl_buf_putc(b, ' ');
        (*col)++;
    }
    sl_buf_puts(b, word);
    *col += wl;
}

/* Keep header text printable ASCII: a HELO name is client input. */
static char *clean(const char *s, size_t max)
{
    s = s ? s : "";
    char *o = xstrndup(s, strnlen(s, max)); /* xstrndup copies exactly n */
    for (char *p = o; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '(' || *p == ')' ||
            *p == ';')
            *p = '_';
    return o;
}

void sub_msg_received(sl_buf *b, const sub_received *r)
{
    size_t col = strlen("Received:");
    sl_buf_puts(b, "Received:");
    char *helo = clean(r->helo && *r->helo ? r->helo : "unknown", 255);
    char *ip = clean(r->peer_ip, 64);
    char *by = clean(r->by && *r->by ? r->by : "localhost", 255);
    char *w;
    fold_word(b, &col, "from");
    fold_word(b, &col, helo);
    w = xasprintf("([%s])", ip);
    fold_word(b, &col, w);
    free(w);
    fold_word(b, &col, "by");
    fold_word(b, &col, by);
    fold_word(b, &col, "(sluice-submit)");
    if (r->tls && r->tls_version && *r->tls_version) {
        char *v = clean(r->tls_version, 32), *c = clean(r->tls_cipher, 128);
        w = xasprintf("(using %s with cipher %s)", v, c);
        fold_word(b, &col, w);
        free(w);
        free(v);
        free(c);
    }
    fold_word(b, &col, "with");
    fold_word(b, &col, r->esmtp || r->tls || r->auth ? (r->tls ? (r->auth ? "ESMTPSA" : "ESMTPS")
                                                               : (r->auth ? "ESMTPA" : "ESMTP"))
                                                     : "SMTP");
    if (r->id && *r->id) {
        fold_word(b, &col, "id");
        char *id = clean(r->id, 64);
        fold_word(b, &col, id);
        free(id);
    }
    if (r->rcpt && *r->rcpt) {
        fold_word(b, &col, "for");
        char *rc = clean(r->rcpt, 256);
        w = xasprintf("<%s>;", rc);
        fold_word(b, &col, w);
        free(w);
        free(rc);
    } else {
        sl_buf_putc(b, ';');
        col++;
    }
    time_t t = (time_t)(r->now_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char date[64];
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    if (col + 1 + strlen(date) > 78) {
        sl_buf_puts(b, "\r\n\t");
    } else {
        sl_buf_putc(b, ' ');
    }
    sl_buf_puts(b, date);
    sl_buf_puts(b, "\r\n");
    free(helo);
    free(ip);
    free(by);
}
