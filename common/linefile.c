/*
 * linefile - the line-oriented credential file skeleton; see linefile.h.
 */
#include "linefile.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sl_linefile_fail(char **err, const char *name, int line, const char *fmt, ...)
{
    if (err) {
        sl_buf b = SL_BUF_INIT;
        sl_buf_printf(&b, "%s:%d: ", name, line);
        va_list ap;
        va_start(ap, fmt);
        sl_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        *err = sl_buf_steal(&b, NULL);
    }
    return SL_ECONFIG;
}

void sl_linefile_wipe(sl_buf *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->len);
    sl_buf_free(b);
}

int sl_linefile_read(const char *path, sl_buf *out, char **err)
{
    int rc = sl_read_file(path, SIZE_MAX, out);
    if (rc == 0)
        return 0;
    sl_linefile_wipe(out);
    if (err)
        *err = rc == -EIO ? xasprintf("%s: read error", path)
                          : xasprintf("%s: %s", path, sl_strerror(rc));
    return SL_ECONFIG;
}

int sl_linefile_each(const char *name, const char *text, size_t len, sl_linefile_fn fn, void *arg,
                     char **err)
{
    if (memchr(text, 0, len))
        return sl_linefile_fail(err, name, 1, "the file contains a NUL byte");
    const char *p = text, *end = text + len;
    int line = 0;
    while (p < end) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        p += n + (nl ? 1 : 0);
        char *copy = xstrndup(p - n - (nl ? 1 : 0), n);
        char *s = copy;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t l = strlen(s);
        while (l && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r'))
            s[--l] = 0;
        int rc = !*s || *s == '#' ? 0 : fn(arg, line, s, err);
        OPENSSL_cleanse(copy, n);
        free(copy);
        if (rc)
            return rc;
    }
    return 0;
}
