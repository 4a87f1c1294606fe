/*
 * test_submit_users - the users file of sluice-submit: fields parse into
 * what they say, every mistake names its line, domains match as globs and
 * A-labels, and argon2id hashes verify only the right password.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "submit_users.h"
#include "util.h"

/* A syntactically valid argon2id string; never verified here. */
#define H "$argon2id$v=19$m=16,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

static void test_fields(void **state)
{
    (void)state;
    const char *text = "# comment\n"
                       "\n"
                       "alice:" H " tenant=acme pool=p1 domains=example.net,*.Example.ORG rate=30\n"
                       "  bob:" H "   check_from=no rate=2/s domains=bücher.de\r\n"
                       "carol:" H;
    sub_users *u = NULL;
    char *err = NULL;
    assert_int_equal(sub_users_parse("users", text, strlen(text), &u, &err), 0);
    assert_int_equal(u->n, 3);
    const sub_user *a = sub_users_find(u, "alice");
    assert_non_null(a);
    assert_string_equal(a->hash, H);
    assert_string_equal(a->tenant, "acme");
    assert_string_equal(a->pool, "p1");
    assert_int_equal(a->rate_per_min, 30);
    assert_true(a->check_from);
    assert_int_equal(a->line, 3);
    assert_true(sub_user_domain_allowed(a, "example.net"));
    assert_true(sub_user_domain_allowed(a, "mail.example.org"));
    assert_false(sub_user_domain_allowed(a, "example.org"));
    assert_false(sub_user_domain_allowed(a, "notexample.net"));
    const sub_user *b = sub_users_find(u, "bob");
    assert_non_null(b);
    assert_false(b->check_from);
    assert_int_equal(b->rate_per_min, 120);
    assert_null(b->tenant);
    assert_true(sub_user_domain_allowed(b, "xn--bcher-kva.de"));
    const sub_user *c = sub_users_find(u, "carol");
    assert_non_null(c);
    assert_int_equal(c->n_domains, 0);
    assert_false(sub_user_domain_allowed(c, "example.net"));
    assert_int_equal(c->rate_per_min, 0);
    assert_null(sub_users_find(u, "dave"));
    assert_null(sub_users_find(u, "alic"));
    sub_users_free(u);
}

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *want; /* substring of the error */
    } cases[] = {
        {"alice\n", "users:1: expected NAME:HASH"},
        {":" H "\n", "users:1: expected NAME:HASH"},
        {"\nalice:plaintext\n", "users:2: user 'alice': the hash is not argon2id"},
        {"alice:$argon2i$v=19$x\n", "not argon2id"},
        {"alice:\n", "not argon2id"},
        {"alice:" H " color=red\n", "users:1: user 'alice': unknown field 'color'"},
        {"alice:" H " tenant\n", "field 'tenant' is not key=value"},
        {"alice:" H " tenant=\n", "tenant must be 1-255 octets"},
        {"alice:" H " rate=fast\n", "rate 'fast' is not"},
        {"alice:" H " check_from=maybe\n", "check_from must be yes or no"},
        {"alice:" H " domains=exa mple.com\n", "domain 'exa': domain \"exa\" is not fully qualified"},
        {"alice:" H " domains=bad..dom\n", "user 'alice': domain 'bad..dom'"},
        {"alice:" H "\nalice:" H "\n", "users:2: user 'alice' already defined on line 1"},
        {"al ice:" H "\n", "white space"},
        {"al\x01ice:" H "\n", "control character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sub_users *u = NULL;
        char *err = NULL;
        int rc = sub_users_parse("users", cases[i].text, strlen(cases[i].text), &u, &err);
        if (rc != SL_ECONFIG || !err || !strstr(err, cases[i].want))
            fail_msg("case %zu: rc %d err \"%s\", want \"%s\"", i, rc, err ? err : "(null)",
                     cases[i].want);
        assert_null(u);
        free(err);
    }
}

static void test_load_missing(void **state)
{
    (void)state;
    sub_users *u = NULL;
    char *err = NULL;
    assert_int_equal(sub_users_load("/nonexistent/users", &u, &err), SL_ECONFIG);
    assert_non_null(strstr(err, "/nonexistent/users"));
    free(err);
}

static void test_hash_verify(void **state)
{
    (void)state;
    char *h = sub_password_hash("s3cret", 6);
    assert_non_null(h);
    assert_memory_equal(h, "$argon2id$v=19$m=65536,t=3,p=1$", 31);
    assert_int_equal(sub_password_verify(h, "s3cret", 6), 0);
    assert_int_equal(sub_password_verify(h, "s3cres", 6), SL_ENOTFOUND);
    assert_int_equal(sub_password_verify(h, "s3cret", 5), SL_ENOTFOUND);
    assert_int_equal(sub_password_verify("$argon2id$garbage", "s3cret", 6), SL_EINVAL);
    char *h2 = sub_password_hash("s3cret", 6);
    assert_string_not_equal(h, h2); /* fresh salt each time */
    free(h);
    free(h2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_load_missing),
        cmocka_unit_test(test_hash_verify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
