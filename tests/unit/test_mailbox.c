/* Unit tests of common/mailbox: the one RFC 5321 / 6531 mailbox grammar,
 * table-driven, under each set of flags its callers pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "mailbox.h"
#include "util.h"

#define LIT SL_MBOX_LITERAL
#define STRICT (SL_MBOX_ASCII | SL_MBOX_FQDN)

static void test_table(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        unsigned flags;
        const char *why; /* NULL: valid; else a substring of the reason */
    } cases[] = {
        {"user@example.com", 0, NULL},
        {"user@example.com", STRICT, NULL},
        {"first.last+tag@sub.example.org", STRICT, NULL},
        {"!#$%&'*+-/=?^_`{|}~@example.com", STRICT, NULL},
        {"\"john doe\"@example.com", STRICT, NULL},
        {"\"a@b\"@example.com", STRICT, NULL},
        {"\"esc\\\"aped\"@example.com", STRICT, NULL},
        {"jos\xc3\xa9@example.com", STRICT, NULL},
        {"user@b\xc3\xbc" "cher.de", 0, NULL},
        {"user@b\xc3\xbc" "cher.de", STRICT, "not allowed in a host name"},
        {"user@localhost", 0, NULL},
        {"user@localhost", STRICT, "not fully qualified"},
        {"user@example.123", 0, NULL},
        {"user@example.123", STRICT, "is all digits"},
        {"user@[192.0.2.1]", LIT, NULL},
        {"user@[IPv6:2001:db8::1]", LIT, NULL},
        {"user@[192.0.2.1]", 0, "address literals are not accepted"},
        {"user@[192.0.2.1", LIT, "unterminated address literal"},
        {"", 0, "empty address"},
        {"user", 0, "missing '@'"},
        {"@example.com", 0, "empty local part"},
        {".user@example.com", 0, "starts with a dot"},
        {"user.@example.com", 0, "ends with a dot"},
        {"us..er@example.com", 0, "two consecutive dots"},
        {"us er@example.com", 0, "character space at offset 2"},
        {"us(er@example.com", 0, "character '(' at offset 2"},
        {"\"unterminated@example.com", 0, "unterminated quoted local part"},
        {"\"q\"x@example.com", 0, "expected '@' after the quoted local part"},
        {"\"bad\x01\"@example.com", 0, "control character"},
        {"a\r\nRCPT TO:<x@y>@example.com", 0, "line break"},
        {"<user@example.com>", 0, "without angle brackets"},
        {"a@b@example.com", 0, "more than one '@'"},
        {"user@", 0, "empty domain"},
        {"user@example.com.", 0, "ends with a dot"},
        {"user@example..com", 0, "empty label"},
        {"user@-example.com", 0, "starts with a hyphen"},
        {"user@example-.com", 0, "ends with a hyphen"},
        {"user@exa_mple.com", 0, "character '_'"},
        {"bad\xff@example.com", 0, "not valid UTF-8"},
        {"user@bad\xff.com", 0, "not valid UTF-8"},
        {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@example.com", 0,
         "longer than 64 octets (65)"},
        {"user@xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.com", 0,
         "longer than 63 octets"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char why[200] = "";
        int rc = sl_mailbox_check(cases[i].addr, cases[i].flags, why, sizeof why);
        if (!cases[i].why) {
            if (rc != 0)
                fail_msg("'%s' (flags %u) refused: %s", cases[i].addr, cases[i].flags, why);
        } else if (rc != SL_EADDRESS || !strstr(why, cases[i].why)) {
            fail_msg("'%s' (flags %u): rc %d, reason '%s', want '%s'", cases[i].addr,
                     cases[i].flags, rc, why, cases[i].why);
        }
        /* No reason buffer: the same verdict. */
        assert_int_equal(sl_mailbox_check(cases[i].addr, cases[i].flags, NULL, 0), rc);
    }
}

static void test_whole_length(void **state)
{
    (void)state;
    char a[300];
    /* 64 + 1 + 189 = 254 octets: the longest mailbox. */
    memset(a, 'l', 64);
    a[64] = '@';
    size_t n = 65;
    while (n < 254) {
        size_t take = 254 - n > 63 ? 62 : 254 - n;
        if (n > 65)
            a[n++] = '.', take--;
        memset(a + n, 'd', take);
        n += take;
    }
    a[n] = 0;
    assert_int_equal(strlen(a), 254);
    assert_int_equal(sl_mailbox_check(a, 0, NULL, 0), 0);
    a[n] = 'd', a[n + 1] = 0;
    char why[100];
    assert_int_equal(sl_mailbox_check(a, 0, why, sizeof why), SL_EADDRESS);
    assert_non_null(strstr(why, "longer than 254 octets"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_whole_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
