/* Unit tests for common/cmdline.c's option step shared by the commands of
 * `sluice` (cli_opt_next()): -c taken, other options handed back, -h and
 * unknown options ending the loop with the exit status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "cmdline.h"

static int usage_out, usage_err;

static void usage(FILE *f)
{
    if (f == stdout)
        usage_out++;
    else
        usage_err++;
}

static const struct option opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"json", no_argument, NULL, 256},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Runs the loop over args as a command does; returns the exit status
 * (-1: go on) and counts --json in *json. */
static int run(char **args, int n, const char **path, int *json)
{
    int o, st = -1;
    optind = 0;
    opterr = 0;
    *json = 0;
    while ((o = cli_opt_next(n, args, "c:h", opts, path, usage, &st)) != -1)
        if (o == 256)
            (*json)++;
    return st;
}

static void test_opt_next(void **state)
{
    (void)state;
    const char *path = NULL;
    int json;
    char *a1[] = {"cmd", "-c", "one.yaml", "--json", "--config", "two.yaml", "list", NULL};
    assert_int_equal(run(a1, 7, &path, &json), -1);
    assert_string_equal(path, "two.yaml");
    assert_int_equal(json, 1);
    assert_string_equal(a1[optind], "list");
    assert_int_equal(usage_out + usage_err, 0);

    char *a2[] = {"cmd", "--json", "-h", "--json", NULL};
    assert_int_equal(run(a2, 4, &path, &json), 0);
    assert_int_equal(json, 1);
    assert_int_equal(usage_out, 1);

    char *a3[] = {"cmd", "--colour", NULL};
    assert_int_equal(run(a3, 2, &path, &json), 2);
    assert_int_equal(usage_err, 1);

    char *a4[] = {"cmd", "-c", NULL};
    assert_int_equal(run(a4, 2, &path, &json), 2);
    assert_int_equal(usage_err, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_opt_next)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
