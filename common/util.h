/*
 * util - allocation wrappers, the growable buffer, the error table, clocks.
 *
 * xmalloc()/xcalloc()/xrealloc()/xstrdup()/xstrndup() never return NULL:
 * on exhaustion they print a message and abort. The caller owns and frees
 * what they return.
 *
 * sl_buf is the one growable byte string of sluice. It is always NUL
 * terminated (data[len] == 0) so it can be used as a C string when it holds
 * text. The buffer owns `data`; sl_buf_free() releases it and leaves an empty
 * buffer. Not thread safe; one owner at a time.
 *
 * Errors: functions return 0 or a negative SL_E* code. sl_strerror() maps
 * any code (ours, or a negated errno) to a message; sl_errname() to a name.
 * The table is an X-macro like libuv's UV_ERRNO_MAP.
 */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>

#define SL_ERRNO_MAP(XX)                                                   \
    XX(INVAL, -3001, "invalid argument")                                   \
    XX(NOMEM, -3002, "out of memory")                                      \
    XX(PARSE, -3003, "parse error")                                        \
    XX(RANGE, -3004, "value out of range")                                 \
    XX(NOTFOUND, -3005, "not found")                                       \
    XX(EXISTS, -3006, "already exists")                                    \
    XX(TOOBIG, -3007, "too large")                                         \
    XX(VERSION, -3008, "unsupported wire version")                         \
    XX(KAFKA, -3009, "kafka error")                                        \
    XX(DNS, -3010, "dns error")                                            \
    XX(TLS, -3011, "tls error")                                            \
    XX(TIMEOUT, -3012, "timed out")                                        \
    XX(CONFIG, -3013, "invalid configuration")                             \
    XX(ADDRESS, -3014, "invalid address")                                  \
    XX(TEMPLATE, -3015, "template error")                                  \
    XX(PROTO, -3016, "malformed record")                                   \
    XX(CLOSED, -3017, "closed")                                            \
    XX(AGAIN, -3018, "try again")                                          \
    XX(IO, -3019, "i/o error")

enum {
#define XX(name, code, msg) SL_E##name = code,
    SL_ERRNO_MAP(XX)
#undef XX
};

const char *sl_strerror(int err);
const char *sl_errname(int err);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print "sluice: panic: ..." and abort: a broken invariant. */
void sl_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define SL_ASSERT(cond)                                                    \
    do {                                                                   \
        if (!(cond))                                                       \
            sl_panic("%s:%d: assertion failed: %s", __FILE__, __LINE__, #cond); \
    } while (0)

typedef struct sl_buf {
    char *data;
    size_t len;
    size_t cap;
} sl_buf;

#define SL_BUF_INIT {NULL, 0, 0}
void sl_buf_reserve(sl_buf *b, size_t extra);
void sl_buf_append(sl_buf *b, const void *p, size_t n);
void sl_buf_puts(sl_buf *b, const char *s);
void sl_buf_putc(sl_buf *b, char c);
void sl_buf_printf(sl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl_buf_vprintf(sl_buf *b, const char *fmt, va_list ap);
/* Drop the first n bytes (n <= len). */
void sl_buf_consume(sl_buf *b, size_t n);
void sl_buf_reset(sl_buf *b);
void sl_buf_free(sl_buf *b);
/* Hand the bytes to the caller (who frees them); the buffer becomes empty. */
char *sl_buf_steal(sl_buf *b, size_t *len);
/* Append s as a JSON string literal, quotes included; bytes that are not
 * valid UTF-8 become U+FFFD, so the output is always valid JSON text. */
void sl_buf_json_str(sl_buf *b, const char *s, size_t n);

/* Clocks in milliseconds: wall (for records) and monotonic (for timers). */
int64_t sl_now_ms(void);
int64_t sl_mono_ms(void);
/* Append all of f, or of the file at path, at most max octets, to out.
 * Returns 0, -errno (the file cannot be opened or read: -EIO), or
 * SL_ETOOBIG when there is more (out then holds what fitted). */
int sl_read_fp(FILE *f, size_t max, sl_buf *out);
int sl_read_file(const char *path, size_t max, sl_buf *out);

/* xorshift64*: the next of a small, fast pseudo-random sequence whose
 * state (never 0) the caller keeps; for jitter and shuffling ties, never
 * for anything secret. */
uint64_t sl_xorshift64s(uint64_t *state);
/* Wall ms as "2026-12-04T20:40:05Z" (UTC, ISO 8601) into buf. */
void sl_fmt_time(int64_t ms, char *buf, size_t n);

/* Parse "30s", "5m", "2h", "3d", "250ms", or a bare number of seconds into
 * milliseconds. Returns 0 or SL_EPARSE. */
int sl_parse_duration_ms(const char *s, int64_t *out);
/* Parse a rate "50/s", "3000/min", "10000/h" (or "/m", "/hour") into
 * messages per second. Returns 0 or SL_EPARSE. */
int sl_parse_rate(const char *s, double *per_sec);
/* Lower-case ASCII in place. */
void sl_lower(char *s);
/* Shell-style glob with only '*' (any run) and '?': "*.google.com". Case
 * insensitive, as host names are. */
bool sl_glob_match(const char *pattern, const char *s);

#endif
