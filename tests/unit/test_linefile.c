/* Unit tests for common/linefile.c: the skeleton of the keys and users
 * files (line numbers, blank and comment lines, trimming, NUL refusal,
 * the "FILE:LINE: what" errors, reading a file). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "linefile.h"
#include "util.h"

typedef struct seen {
    int lines[8];
    char text[8][64];
    int n;
    int stop_at; /* fail on this line number, 0: never */
} seen;

static int record(void *arg, int line, char *s, char **err)
{
    seen *v = arg;
    if (line == v->stop_at)
        return sl_linefile_fail(err, "f", line, "bad '%s'", s);
    v->lines[v->n] = line;
    snprintf(v->text[v->n++], sizeof v->text[0], "%s", s);
    return 0;
}

static void test_each(void **state)
{
    (void)state;
    const char *t = "  # comment\n\none two\t \r\n\t three\n#x\nlast";
    seen v = {0};
    char *err = NULL;
    assert_int_equal(sl_linefile_each("f", t, strlen(t), record, &v, &err), 0);
    assert_null(err);
    assert_int_equal(v.n, 3);
    assert_int_equal(v.lines[0], 3);
    assert_string_equal(v.text[0], "one two");
    assert_int_equal(v.lines[1], 4);
    assert_string_equal(v.text[1], "three");
    assert_int_equal(v.lines[2], 6);
    assert_string_equal(v.text[2], "last");

    /* The first failure stops the walk and words the error. */
    seen w = {.stop_at = 4};
    assert_int_equal(sl_linefile_each("f", t, strlen(t), record, &w, &err), SL_ECONFIG);
    assert_int_equal(w.n, 1);
    assert_string_equal(err, "f:4: bad 'three'");
    free(err);
    err = NULL;

    /* A NUL byte anywhere: refused before any line is handed over. */
    const char nul[] = "one\ntw\0o\nthree\n";
    seen x = {0};
    assert_int_equal(sl_linefile_each("keys", nul, sizeof nul - 1, record, &x, &err), SL_ECONFIG);
    assert_int_equal(x.n, 0);
    assert_string_equal(err, "keys:1: the file contains a NUL byte");
    free(err);

    /* Nothing at all is fine, and err may be NULL. */
    seen y = {.stop_at = 1};
    assert_int_equal(sl_linefile_each("f", "", 0, record, &y, NULL), 0);
    assert_int_equal(sl_linefile_each("f", "x", 1, record, &y, NULL), SL_ECONFIG);
}

static void test_read(void **state)
{
    (void)state;
    char path[] = "test_linefile-XXXXXX"; /* in the test's working directory */
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "a b\n", 4), 4);
    close(fd);
    sl_buf b = SL_BUF_INIT;
    char *err = NULL;
    assert_int_equal(sl_linefile_read(path, &b, &err), 0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "a b\n", 4);
    sl_linefile_wipe(&b);
    assert_null(b.data);
    unlink(path);
    assert_int_equal(sl_linefile_read(path, &b, &err), SL_ECONFIG);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));
    free(err);
    assert_int_equal(b.len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_each), cmocka_unit_test(test_read)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
