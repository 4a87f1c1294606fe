/* Unit tests of scheduler/sched_addr: strict RFC 5321 address syntax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sched_addr.h"

static void test_table(void **state)
{
    (void)state;
    char long_local[80], long_label[80];
    memset(long_local, 'a', 65);
    strcpy(long_local + 65, "@x.com");
    memset(long_label, 'b', 64);
    snprintf(long_label + 64, 16, "@%s", "x.com");
    const struct {
        const char *addr;
        bool ok;
    } cases[] = {
        {"a@example.com", true},
        {"first.last+tag@sub.example.co.uk", true},
        {"\"quoted space\"@example.com", true},
        {"\"esc\\\"aped\"@example.com", true},
        {"user@[192.0.2.1]", true},
        {"jörg@bücher.de", true},
        {"o'hara@x-y.example", true},
        {"a@b", true},
        {"", false},
        {"noat", false},
        {"@example.com", false},
        {"a@", false},
        {".a@example.com", false},
        {"a.@example.com", false},
        {"a..b@example.com", false},
        {"a b@example.com", false},
        {"a@exa mple.com", false},
        {"a@-example.com", false},
        {"a@example-.com", false},
        {"a@example..com", false},
        {"a@example.com.", false},
        {"a\r\n@example.com", false},
        {"a@example.com\r\nRCPT TO:<x@y>", false},
        {"<a@example.com>", false},
        {"\"unterminated@example.com", false},
        {"a@[1.2.3.4", false},
        {long_local, false},
        {long_label, true},
        {"j\xc3\xb6rg@b\xc3\xbc" "cher.de", true},
        {"j\xffrg@example.com", false},      /* not UTF-8 */
        {"j\xc3@example.com", false},        /* a sequence cut short */
        {"a@b\xc3\x28.de", false},           /* a bad continuation in the domain */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (sched_addr_valid(cases[i].addr) != cases[i].ok)
            fail_msg("case %zu \"%s\": want %d", i, cases[i].addr, cases[i].ok);
    }
    assert_false(sched_addr_valid(NULL));
}

static void test_domain(void **state)
{
    (void)state;
    assert_string_equal(sched_addr_domain("\"a@b\"@example.com"), "example.com");
    assert_null(sched_addr_domain("nodomain"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_domain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
