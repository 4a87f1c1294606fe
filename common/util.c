/*
 * util - see util.h.
 */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char *sl_strerror(int err)
{
    switch (err) {
#define XX(name, code, msg)                                                \
    case code:                                                             \
        return msg;
        SL_ERRNO_MAP(XX)
#undef XX
    default:
        break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

const char *sl_errname(int err)
{
    switch (err) {
#define XX(name, code, msg)                                                \
    case code:                                                             \
        return "SL_E" #name;
        SL_ERRNO_MAP(XX)
#undef XX
    default:
        return "errno";
    }
}

static void oom(size_t n)
{
    fprintf(stderr, "sluice: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    sl_buf b = SL_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return sl_buf_steal(&b, NULL);
}

void sl_panic(const char *fmt, ...)
{
    va_list ap;
    fputs("sluice: panic: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void sl_buf_reserve(sl_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void sl_buf_append(sl_buf *b, const void *p, size_t n)
{
    sl_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void sl_buf_puts(sl_buf *b, const char *s)
{
    sl_buf_append(b, s, strlen(s));
}

void sl_buf_putc(sl_buf *b, char c)
{
    sl_buf_append(b, &c, 1);
}

void sl_buf_vprintf(sl_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        sl_panic("vsnprintf failed for format %s", fmt);
    sl_buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void sl_buf_printf(sl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void sl_buf_consume(sl_buf *b, size_t n)
{
    SL_ASSERT(n <= b->len);
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

void sl_buf_reset(sl_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = 0;
}

void sl_buf_free(sl_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *sl_buf_steal(sl_buf *b, size_t *len)
{
    if (!b->data)
        sl_buf_reserve(b, 0), b->data[0] = 0;
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 when it is
 * not one (overlong, surrogate, beyond U+10FFFF, truncated). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

void sl_buf_json_str(sl_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sl_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            /* Remote servers send 8-bit replies; JSON must stay UTF-8, so
             * a byte that is not part of valid UTF-8 becomes U+FFFD. */
            size_t len = utf8_seq((const unsigned char *)s + i, n - i);
            if (len) {
                sl_buf_append(b, s + i, len);
                i += len - 1;
            } else {
                sl_buf_puts(b, "\\ufffd");
            }
            continue;
        }
        switch (c) {
        case '"': sl_buf_puts(b, "\\\""); break;
        case '\\': sl_buf_puts(b, "\\\\"); break;
        case '\n': sl_buf_puts(b, "\\n"); break;
        case '\r': sl_buf_puts(b, "\\r"); break;
        case '\t': sl_buf_puts(b, "\\t"); break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                sl_buf_append(b, esc, 6);
            } else {
                sl_buf_putc(b, (char)c);
            }
        }
    }
    sl_buf_putc(b, '"');
}

void sl_fmt_time(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (!strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm) && n)
        buf[0] = 0;
}

int64_t sl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sl_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sl_read_fp(FILE *f, size_t max, sl_buf *out)
{
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (out->len + n > max)
            return SL_ETOOBIG;
        sl_buf_append(out, buf, n);
    }
    return ferror(f) ? -EIO : 0;
}

int sl_read_file(const char *path, size_t max, sl_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    int rc = sl_read_fp(f, max, out);
    fclose(f);
    return rc;
}

uint64_t sl_xorshift64s(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

int sl_parse_duration_ms(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return SL_EPARSE;
    double mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "m") || !strcmp(end, "min"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else if (!strcmp(end, "d"))
        mult = 86400000;
    else
        return SL_EPARSE;
    /* "inf", "nan" and huge numbers are out of int64's range, where the
     * conversion is undefined; NaN fails the comparison too. */
    double ms = v * mult;
    if (!(ms < 9223372036854775807.0))
        return SL_EPARSE;
    *out = (int64_t)ms;
    return 0;
}

int sl_parse_rate(const char *s, double *per_sec)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v < 0 || *end != '/')
        return SL_EPARSE;
    end++;
    if (!strcmp(end, "s") || !strcmp(end, "sec"))
        *per_sec = v;
    else if (!strcmp(end, "m") || !strcmp(end, "min"))
        *per_sec = v / 60.0;
    else if (!strcmp(end, "h") || !strcmp(end, "hour"))
        *per_sec = v / 3600.0;
    else if (!strcmp(end, "d") || !strcmp(end, "day"))
        *per_sec = v / 86400.0;
    else
        return SL_EPARSE;
    return 0;
}

void sl_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

bool sl_glob_match(const char *p, const char *s)
{
    /* The usual shapes, "*.example.com" and "example.com", compare the
     * tail or the whole name, without the backtracking below. */
    const char *lit = *p == '*' ? p + 1 : p;
    if (!lit[strcspn(lit, "*?")]) {
        size_t pl = strlen(lit), sl = strlen(s);
        if (lit == p)
            return pl == sl && !strcasecmp(p, s);
        return sl >= pl && !strcasecmp(s + sl - pl, lit);
    }
    const char *star = NULL, *ss = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            ss = s;
        } else if (*p == '?' || tolower((unsigned char)*p) == tolower((unsigned char)*s)) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++ss;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == 0;
}
