/* Unit tests of common/token: seal, open, and every way a token is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "token.h"
#include "util.h"

static sl_token_key key_of(const char *s)
{
    sl_token_key k = {.len = strlen(s)};
    memcpy(k.bytes, s, k.len);
    return k;
}

static void test_round_trip(void **state)
{
    (void)state;
    sl_token_key k = key_of("0123456789abcdef-secret");
    const char *in[] = {"acme", "job-1", "Bob@Example.com", ""};
    sl_buf tok = {0}, store = {0};
    assert_int_equal(sl_token_seal(&k, "verp", in, 4, &tok), 0);
    for (size_t i = 0; i < tok.len; i++)
        assert_non_null(strchr("abcdefghijklmnopqrstuvwxyz234567", tok.data[i]));
    const char *out[8];
    assert_int_equal(sl_token_open(&k, "verp", tok.data, tok.len, &store, out, 8), 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(out[i], in[i]);

    /* A receiver that upper-cases the local part does not break it. */
    for (size_t i = 0; i < tok.len; i++)
        if (tok.data[i] >= 'a' && tok.data[i] <= 'z')
            tok.data[i] = (char)(tok.data[i] - 'a' + 'A');
    assert_int_equal(sl_token_open(&k, "verp", tok.data, tok.len, &store, out, 8), 4);
    sl_buf_free(&tok);
    sl_buf_free(&store);
}

static void test_refused(void **state)
{
    (void)state;
    sl_token_key k = key_of("0123456789abcdef-secret");
    sl_token_key other = key_of("0123456789abcdef-another");
    const char *in[] = {"acme", "job-1"};
    sl_buf tok = {0}, store = {0};
    const char *out[8];
    assert_int_equal(sl_token_seal(&k, "unsub", in, 2, &tok), 0);

    /* another purpose, another key, too few fields allowed */
    assert_int_equal(sl_token_open(&k, "verp", tok.data, tok.len, &store, out, 8), -1);
    assert_int_equal(sl_token_open(&other, "unsub", tok.data, tok.len, &store, out, 8), -1);
    assert_int_equal(sl_token_open(&k, "unsub", tok.data, tok.len, &store, out, 1), -1);
    /* truncated, extended, a character changed, not base32 */
    assert_int_equal(sl_token_open(&k, "unsub", tok.data, tok.len - 1, &store, out, 8), -1);
    sl_buf longer = {0};
    sl_buf_printf(&longer, "%sa", tok.data);
    assert_int_equal(sl_token_open(&k, "unsub", longer.data, longer.len, &store, out, 8), -1);
    for (size_t i = 0; i < tok.len; i++) {
        char saved = tok.data[i];
        tok.data[i] = saved == 'a' ? 'b' : 'a';
        assert_int_equal(sl_token_open(&k, "unsub", tok.data, tok.len, &store, out, 8), -1);
        tok.data[i] = saved;
    }
    assert_int_equal(sl_token_open(&k, "unsub", "abc!def", 7, &store, out, 8), -1);
    assert_int_equal(sl_token_open(&k, "unsub", "", 0, &store, out, 8), -1);
    assert_int_equal(sl_token_open(&k, "unsub", tok.data, tok.len, &store, out, 8), 2);

    /* a field with the separator in it, or no key, mints nothing */
    const char *bad[] = {"a\x1f" "b"};
    sl_buf none = {0};
    assert_int_equal(sl_token_seal(&k, "unsub", bad, 1, &none), -1);
    sl_token_key empty = {.len = 0};
    assert_int_equal(sl_token_seal(&empty, "unsub", in, 2, &none), -1);
    assert_int_equal(none.len, 0);
    sl_buf_free(&tok);
    sl_buf_free(&longer);
    sl_buf_free(&store);
}

static void test_key_load(void **state)
{
    (void)state;
    char path[] = "/tmp/sluice-token-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("short\n", f);
    fclose(f);
    sl_token_key k;
    sl_buf why = {0};
    assert_int_equal(sl_token_key_load(path, &k, &why), -1);
    assert_non_null(strstr(why.data, "shorter than 16"));
    assert_null(strstr(why.data, "short\n"));
    f = fopen(path, "w");
    fputs("a-long-enough-secret-key\n", f);
    fclose(f);
    sl_buf_reset(&why);
    assert_int_equal(sl_token_key_load(path, &k, &why), 0);
    assert_int_equal(k.len, strlen("a-long-enough-secret-key"));
    unlink(path);
    assert_int_equal(sl_token_key_load(path, &k, &why), -1);
    sl_buf_free(&why);
}

static void test_typed(void **state)
{
    (void)state;
    sl_token_key k = key_of("0123456789abcdef-secret");
    sl_buf tok = {0}, store = {0};
    sl_verp_token v = {.tenant = "acme", .job_id = "j1", .recipient = "a@example.com"}, v2;
    assert_int_equal(sl_verp_token_seal(&k, &v, &tok), 0);
    assert_int_equal(sl_verp_token_open(&k, tok.data, tok.len, &store, &v2), 0);
    assert_string_equal(v2.job_id, "j1");
    assert_string_equal(v2.recipient, "a@example.com");
    sl_unsub_token u2;
    /* a VERP token is not an unsubscribe token */
    assert_int_equal(sl_unsub_token_open(&k, tok.data, tok.len, &store, &u2), -1);
    sl_buf_reset(&tok);
    sl_unsub_token u = {.tenant = "acme", .recipient = "a@example.com", .campaign = "c1"};
    assert_int_equal(sl_unsub_token_seal(&k, &u, &tok), 0);
    assert_int_equal(sl_unsub_token_open(&k, tok.data, tok.len, &store, &u2), 0);
    assert_string_equal(u2.campaign, "c1");
    assert_string_equal(u2.list, "");
    sl_buf_free(&tok);
    sl_buf_free(&store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_key_load),
        cmocka_unit_test(test_typed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
