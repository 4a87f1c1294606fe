/*
 * fuzz_smtp_reply - libFuzzer harness for common/smtp_reply's sl_reply_parse()
 * in stream mode: replies are parsed one after another from the front of
 * the buffer, the way the sender reads a pipelined batch.
 *
 * Invariants for every reply parsed:
 *   - 0 < used <= len; code 200..599; 1 <= lines <= SL_REPLY_MAX_LINES;
 *   - text is NUL terminated, text_len == strlen(text) (no NUL inside),
 *     and the text holds exactly lines-1 LFs;
 *   - enh is "" or starts with the code's class digit and a dot;
 *   - stream consistency: parsing the same bytes as they trickle in never
 *     completes early or fails early. Every strict prefix of the reply's
 *     octets returns SL_EAGAIN, and the reply's own octets alone parse to
 *     the same result. (A reader that gets the reply in two reads must
 *     see what one that gets it in one read sees.)
 * A result other than 0, SL_EAGAIN or SL_EPARSE is a failure, and so is
 * SL_EAGAIN followed by a longer buffer that fails on the same octets.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_reply.h"
#include "util.h"

#define FAIL(...)                                                                          \
    do {                                                                                   \
        fprintf(stderr, "fuzz_smtp_reply: invariant: " __VA_ARGS__);                      \
        fputc('\n', stderr);                                                               \
        abort();                                                                           \
    } while (0)

static void check_reply(const sl_reply *r)
{
    if (r->code < 200 || r->code > 599)
        FAIL("code %d", r->code);
    if (r->lines < 1 || r->lines > SL_REPLY_MAX_LINES)
        FAIL("%d lines", r->lines);
    if (!r->text)
        FAIL("no text");
    if (strlen(r->text) != r->text_len)
        FAIL("text_len %zu but strlen %zu", r->text_len, strlen(r->text));
    int lf = 0;
    for (size_t i = 0; i < r->text_len; i++) {
        if (r->text[i] == '\n')
            lf++;
    }
    if (lf != r->lines - 1)
        FAIL("%d LFs in a %d line reply", lf, r->lines);
    size_t el = strnlen(r->enh, sizeof(r->enh));
    if (el == sizeof(r->enh))
        FAIL("enh not terminated");
    if (el && (el < 5 || r->enh[0] != '0' + r->code / 100 || r->enh[1] != '.'))
        FAIL("enh '%s' for code %d", r->enh, r->code);
}

static bool same(const sl_reply *a, const sl_reply *b)
{
    return a->code == b->code && a->lines == b->lines && strcmp(a->enh, b->enh) == 0 &&
           a->text_len == b->text_len && memcmp(a->text, b->text, a->text_len) == 0;
}

/* A copy in its own allocation, so ASan sees any read past the end. */
static int parse_copy(const char *p, size_t n, sl_reply *r, size_t *used)
{
    char *c = xmalloc(n ? n : 1);
    memcpy(c, p, n);
    int rc = sl_reply_parse(c, n, r, used);
    free(c);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    size_t off = 0;
    int replies = 0;
    while (off < size && replies < 200) {
        sl_reply r;
        size_t used = 12345;
        int rc = parse_copy(buf + off, size - off, &r, &used);
        if (rc == SL_EAGAIN || rc == SL_EPARSE) {
            if (used != 0 || r.text)
                FAIL("a failed parse left used=%zu or text set", used);
            if (rc == SL_EAGAIN) {
                /* Incomplete: every shorter prefix must be incomplete too. */
                for (size_t k = 0; k < size - off; k += 1 + (size - off) / 16) {
                    sl_reply q;
                    size_t u;
                    int qrc = parse_copy(buf + off, k, &q, &u);
                    if (qrc != SL_EAGAIN)
                        FAIL("prefix %zu of an incomplete reply returned %d", k, qrc);
                }
            }
            break;
        }
        if (rc != 0)
            FAIL("sl_reply_parse returned %d", rc);
        if (used == 0 || used > size - off)
            FAIL("used %zu of %zu", used, size - off);
        check_reply(&r);

        /* The reply's own octets parse alone to the same reply. */
        sl_reply again;
        size_t u2;
        if (parse_copy(buf + off, used, &again, &u2) != 0 || u2 != used || !same(&r, &again))
            FAIL("the reply's octets alone parse differently");
        sl_reply_free(&again);

        /* Every strict prefix is incomplete: a reader that got the reply
         * in two reads must not fail where one read succeeds. Checking
         * every prefix is quadratic, so check the last few and a spread. */
        for (size_t k = 0; k < used; k++) {
            if (used > 64 && k > 8 && k < used - 8 && k % (used / 16 + 1) != 0)
                continue;
            sl_reply q;
            size_t u;
            int qrc = parse_copy(buf + off, k, &q, &u);
            if (qrc != SL_EAGAIN) {
                if (qrc == 0)
                    sl_reply_free(&q);
                FAIL("prefix %zu of a %zu octet reply returned %s, not SL_EAGAIN", k, used,
                     sl_errname(qrc));
            }
        }
        sl_reply_free(&r);
        off += used;
        replies++;
    }
    return 0;
}
