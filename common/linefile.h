/*
 * linefile - the one skeleton of sluice's line-oriented credential files
 * (sluice-api's keys file, sluice-submit's users file): read the file,
 * walk its lines with their numbers, skip blank and '#' lines, and word
 * errors as "FILE:LINE: what".
 *
 * sl_linefile_read() reads the whole file at path into *out (an empty
 * sl_buf the caller then owns and frees with sl_linefile_wipe()). 0, or
 * SL_ECONFIG with *err "PATH: reason" (caller frees; err may be NULL).
 *
 * sl_linefile_each() refuses a text with a NUL byte ("NAME:1: the file
 * contains a NUL byte", SL_ECONFIG: a line cut short there could drop a
 * restriction silently), then calls fn(arg, line, s, err) for every line
 * of text[0..len) that is not blank or a comment, with s a writable,
 * NUL-terminated copy of the line (leading spaces and tabs, trailing
 * spaces, tabs and CR removed; fn may cut it up), and line its 1-based
 * number. It stops at the first fn that returns non-zero and returns that;
 * else 0. Each copy is wiped (OPENSSL_cleanse) once fn returns: the files
 * hold secrets.
 *
 * sl_linefile_fail() sets *err (when err is not NULL) to "NAME:LINE: "
 * and the formatted message, and returns SL_ECONFIG.
 *
 * sl_linefile_wipe() wipes and frees a buffer sl_linefile_read() filled.
 *
 * Pure functions over the caller's memory: any thread.
 */
#ifndef SLUICE_LINEFILE_H
#define SLUICE_LINEFILE_H

#include <stddef.h>

#include "util.h"

typedef int (*sl_linefile_fn)(void *arg, int line, char *s, char **err);

int sl_linefile_read(const char *path, sl_buf *out, char **err);
int sl_linefile_each(const char *name, const char *text, size_t len, sl_linefile_fn fn, void *arg,
                     char **err);
int sl_linefile_fail(char **err, const char *name, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void sl_linefile_wipe(sl_buf *b);

#endif
