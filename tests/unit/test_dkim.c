/* Unit tests for sender/dkim: key loading, the signature field, relaxed
 * body canonicalization, From-domain key selection, thread safety.
 *
 * Independent verification (dkimpy) lives in
 * tests/integration/test_dkim_verify.py, which runs this binary as
 *   test_dkim sign UNIXTIME DOMAIN:SELECTOR:ALGORITHM:KEYFILE... <msg >signed
 * to sign a message read from stdin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "dkim.h"

#define RSA_KEY SLUICE_TEST_DATA "/dkim/rsa2048.pem"
#define ED_KEY SLUICE_TEST_DATA "/dkim/ed25519.pem"

static sl_dkim_signer *rsa, *ed;

static int setup(void **state)
{
    char *err = NULL;
    if (sl_dkim_key_load("Example.NET", "s1", RSA_KEY, "rsa-sha256", &rsa, &err) != 0 ||
        sl_dkim_key_load("example.net", "e1", ED_KEY, "ed25519-sha256", &ed, &err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    sl_dkim_key_free(rsa);
    sl_dkim_key_free(ed);
    return 0;
}

static char *pem_of_new_key(const char *type, size_t bits)
{
    EVP_PKEY *k = bits ? EVP_PKEY_Q_keygen(NULL, NULL, type, bits)
                       : EVP_PKEY_Q_keygen(NULL, NULL, type);
    assert_non_null(k);
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)n);
    BIO_free(b);
    EVP_PKEY_free(k);
    return s;
}

typedef struct load_case {
    const char *domain, *selector, *file, *alg;
    const char *err_has; /* NULL: loads */
} load_case;

static void test_load_table(void **state)
{
    static const load_case cases[] = {
        {"example.net", "s1", RSA_KEY, "rsa-sha256", NULL},
        {"example.net", "e1", ED_KEY, "ed25519-sha256", NULL},
        {"example.net", "s1", RSA_KEY, "ed25519-sha256", "key is RSA"},
        {"example.net", "e1", ED_KEY, "rsa-sha256", "key is Ed25519"},
        {"example.net", "s1", RSA_KEY, "rsa-sha1", "unknown DKIM algorithm"},
        {"example.net", "s1", "/nonexistent/key.pem", "rsa-sha256", "cannot open"},
        {"example.net", "s1", SLUICE_TEST_DATA "/dkim/../dkim", "rsa-sha256", "not a PEM"},
        {"exa mple.net", "s1", RSA_KEY, "rsa-sha256", "not a DNS name"},
        {"example.net", "s1;x=y", RSA_KEY, "rsa-sha256", "selector"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const load_case *c = &cases[i];
        sl_dkim_signer *k = NULL;
        char *err = NULL;
        int rc = sl_dkim_key_load(c->domain, c->selector, c->file, c->alg, &k, &err);
        if (!c->err_has) {
            if (rc != 0)
                fail_msg("case %zu: %s", i, err);
            sl_dkim_key_free(k);
            continue;
        }
        if (rc != SL_ECONFIG || k)
            fail_msg("case %zu: loaded, wanted '%s'", i, c->err_has);
        if (!err || !strstr(err, c->err_has))
            fail_msg("case %zu: error '%s' lacks '%s'", i, err, c->err_has);
        free(err);
    }
}

static void test_small_rsa_refused(void **state)
{
    char *pem = pem_of_new_key("RSA", 512);
    sl_dkim_signer *k = NULL;
    char *err = NULL;
    assert_int_equal(sl_dkim_key_load_pem("e.net", "s", pem, strlen(pem), "small", "rsa-sha256",
                                          &k, &err),
                     SL_ECONFIG);
    assert_non_null(strstr(err, "512 bits"));
    free(err);
    free(pem);
    /* A fresh Ed25519 key from memory loads. */
    pem = pem_of_new_key("ED25519", 0);
    assert_int_equal(sl_dkim_key_load_pem("e.net", "s", pem, strlen(pem), "mem",
                                          "ed25519-sha256", &k, &err),
                     0);
    assert_int_equal(sl_dkim_key_alg(k), SL_DKIM_ED25519_SHA256);
    sl_dkim_key_free(k);
    free(pem);
}

static void test_dns_txt(void **state)
{
    sl_buf b = SL_BUF_INIT;
    sl_dkim_key_dns_txt(ed, &b);
    assert_true(strncmp(b.data, "v=DKIM1; k=ed25519; p=", 22) == 0);
    assert_int_equal(strlen(b.data + 22), 44); /* 32 bytes in base64 */
    sl_buf_reset(&b);
    sl_dkim_key_dns_txt(rsa, &b);
    assert_true(strncmp(b.data, "v=DKIM1; k=rsa; p=MIIBIjAN", 26) == 0);
    sl_buf_free(&b);
    assert_string_equal(sl_dkim_key_domain(rsa), "example.net"); /* lower-cased */
    assert_string_equal(sl_dkim_key_selector(rsa), "s1");
}

static const char *sample =
    "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "From: Sender <news@example.net>\r\n"
    "To: rcpt@example.org\r\n"
    "Subject: A subject that is long enough\r\n"
    "\tto be folded\r\n"
    "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "Message-ID: <1@example.net>\r\n"
    "X-Mailer: not signed\r\n"
    "Received: from c by d; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "\r\n"
    "Hello\r\n";

/* The header unfolded as relaxed canonicalization does: CRLF+WSP to SP. */
static char *unfold(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && i + 2 < n && s[i + 1] == '\n' && (s[i + 2] == '\t' || s[i + 2] == ' ')) {
            i += 2;
            o[w++] = ' ';
            continue;
        }
        o[w++] = s[i];
    }
    o[w] = 0;
    return o;
}

/* Without any white space: for tag values that may be folded anywhere. */
static char *nows(const char *s)
{
    char *o = strdup(s), *w = o;
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
            *w++ = *s;
    *w = 0;
    return o;
}

static void test_signature_field(void **state)
{
    const sl_dkim_signer *keys[] = {rsa, ed};
    sl_buf out = SL_BUF_INIT;
    assert_int_equal(sl_dkim_sign_at(keys, 2, sample, strlen(sample), 1700000000, &out), 0);
    /* Two fields, each ending CRLF, continuation lines starting with TAB,
     * every line within 80 columns. */
    const char *second = strstr(out.data + 1, "\r\nDKIM-Signature: ");
    assert_non_null(second);
    assert_true(strncmp(out.data, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;", 53) ==
                0);
    assert_true(strncmp(second + 2, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;",
                        57) == 0);
    assert_true(out.len > 4 && memcmp(out.data + out.len - 2, "\r\n", 2) == 0);
    for (const char *p = out.data; *p;) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        assert_true(e - p <= 80);
        p = e + 2;
        if (*p && strncmp(p, "DKIM-Signature:", 15) != 0)
            assert_int_equal(*p, '\t');
    }
    char *u = unfold(out.data, (size_t)(second + 2 - out.data));
    assert_non_null(strstr(u, " d=example.net;"));
    assert_non_null(strstr(u, " s=s1;"));
    assert_non_null(strstr(u, " t=1700000000;"));
    char *c = nows(u);
    assert_non_null(strstr(c, ";h=From:From:To:Subject:Date:Message-ID;"));
    assert_null(strstr(u, "l="));
    assert_null(strstr(u, "Received"));
    assert_null(strstr(u, "X-Mailer"));
    /* RSA-2048: 256 bytes, 344 base64 characters. */
    const char *b = strstr(c, ";b=");
    assert_non_null(b);
    assert_int_equal(strlen(b + 3), 344);
    free(u);
    free(c);
    u = unfold(second + 2, strlen(second + 2));
    assert_non_null(strstr(u, " s=e1;"));
    c = nows(u);
    b = strstr(c, ";b=");
    assert_non_null(b);
    assert_int_equal(strlen(b + 3), 88); /* Ed25519: 64 bytes */
    free(u);
    free(c);

    /* Deterministic signatures (PKCS#1 v1.5 and Ed25519): same input, same
     * output; any change to a signed field changes it. */
    sl_buf again = SL_BUF_INIT;
    assert_int_equal(sl_dkim_sign_at(keys, 2, sample, strlen(sample), 1700000000, &again), 0);
    assert_string_equal(out.data, again.data);
    char *m2 = strdup(sample);
    m2[strstr(m2, "rcpt@") - m2] = 'R';
    sl_buf_reset(&again);
    assert_int_equal(sl_dkim_sign_at(keys, 2, m2, strlen(m2), 1700000000, &again), 0);
    assert_string_not_equal(out.data, again.data);
    /* An unsigned field does not change it. */
    strcpy(m2, sample);
    m2[strstr(m2, "not signed") - m2] = 'N';
    sl_buf_reset(&again);
    assert_int_equal(sl_dkim_sign_at(keys, 2, m2, strlen(m2), 1700000000, &again), 0);
    assert_string_equal(out.data, again.data);
    free(m2);
    sl_buf_free(&again);
    sl_buf_free(&out);
}

static void test_no_from(void **state)
{
    const sl_dkim_signer *keys[] = {ed};
    const char *m = "To: a@b\r\nSubject: x\r\n\r\nbody\r\n";
    sl_buf out = SL_BUF_INIT;
    sl_buf_puts(&out, "keep");
    assert_int_equal(sl_dkim_sign_at(keys, 1, m, strlen(m), 1, &out), SL_EINVAL);
    assert_string_equal(out.data, "keep");
    sl_buf_free(&out);
}

static void test_multi_instance_fields(void **state)
{
    const sl_dkim_signer *keys[] = {ed};
    const char *m = "From: a@example.net\r\nTo: x@y\r\nCc: c1@y\r\nTo: z@y\r\n"
                    "List-Unsubscribe: <mailto:u@example.net>\r\n"
                    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                    "Reply-To: r@example.net\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nx\r\n";
    sl_buf out = SL_BUF_INIT;
    assert_int_equal(sl_dkim_sign_at(keys, 1, m, strlen(m), 1, &out), 0);
    char *u = nows(out.data);
    assert_non_null(strstr(u, ";h=From:From:To:To:Cc:MIME-Version:Content-Type:"
                              "Content-Transfer-Encoding:Reply-To:List-Unsubscribe:"
                              "List-Unsubscribe-Post;"));
    free(u);
    sl_buf_free(&out);
}

/* bh= of a message with the given body must be the SHA-256 of the given
 * relaxed canonical form. */
typedef struct body_case {
    const char *body, *canon;
} body_case;

static void test_body_canon_table(void **state)
{
    static const body_case cases[] = {
        {"", ""},
        {"\r\n", ""},
        {"\r\n\r\n\r\n", ""},
        {"Hello\r\n", "Hello\r\n"},
        {"Hello", "Hello\r\n"},
        {"a  b \t\r\n\r\n\r\n", "a b\r\n"},
        {"a\r\n \t \r\nb", "a\r\n\r\nb\r\n"},
        {" lead\r\n", " lead\r\n"},
        {"x\r\n\r\ny\r\n \r\n\r\n", "x\r\n\r\ny\r\n"},
        {"bare\nlf\n\n", "bare\r\nlf\r\n"},
        {".dot\r\n..two\r\n", ".dot\r\n..two\r\n"},
        {"caf\xc3\xa9  \xc3\xa9t\xc3\xa9\r\n", "caf\xc3\xa9 \xc3\xa9t\xc3\xa9\r\n"},
    };
    const sl_dkim_signer *keys[] = {ed};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_buf m = SL_BUF_INIT, out = SL_BUF_INIT;
        sl_buf_printf(&m, "From: a@example.net\r\n\r\n%s", cases[i].body);
        assert_int_equal(sl_dkim_sign_at(keys, 1, m.data, m.len, 1, &out), 0);
        unsigned char d[32];
        unsigned int dl;
        EVP_Digest(cases[i].canon, strlen(cases[i].canon), d, &dl, EVP_sha256(), NULL);
        unsigned char want[64];
        EVP_EncodeBlock(want, d, 32);
        char *u = unfold(out.data, out.len);
        char needle[80];
        snprintf(needle, sizeof(needle), " bh=%s;", want);
        if (!strstr(u, needle))
            fail_msg("case %zu: want %s in %s", i, needle, u);
        free(u);
        sl_buf_free(&m);
        sl_buf_free(&out);
    }
}

typedef struct from_case {
    const char *msg, *want; /* want NULL: not found */
} from_case;

static void test_from_domain_table(void **state)
{
    static const from_case cases[] = {
        {"From: a@Example.NET\r\n\r\n", "example.net"},
        {"From: \"x@y.com\" <b@c.org>\r\n\r\n", "c.org"},
        {"Subject: s\r\nfrom: Name\r\n <u@d.com> (comment)\r\n\r\n", "d.com"},
        {"From: u@d.com (Name)\r\n\r\n", "d.com"},
        {"From: nobody\r\n\r\n", NULL},
        {"To: a@b\r\n\r\nFrom: a@c\r\n", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char d[64];
        int rc = sl_dkim_from_domain(cases[i].msg, strlen(cases[i].msg), d, sizeof(d));
        if (cases[i].want) {
            if (rc != 0 || strcmp(d, cases[i].want) != 0)
                fail_msg("case %zu: rc %d got '%s' want '%s'", i, rc, rc ? "" : d,
                         cases[i].want);
        } else if (rc != SL_ENOTFOUND) {
            fail_msg("case %zu: found '%s'", i, d);
        }
    }
}

static size_t count_sigs(const char *s)
{
    size_t n = 0;
    while (s && (s = strstr(s, "DKIM-Signature:")) != NULL) {
        n++;
        s++;
    }
    return n;
}

static void test_keyring(void **state)
{
    sl_dkim_key cfgkeys[] = {
        {"example.net", "s1", RSA_KEY, "rsa-sha256"},
        {"example.net", "e1", ED_KEY, "ed25519-sha256"},
        {"other.org", "o1", ED_KEY, "ed25519-sha256"},
    };
    sl_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.dkim = cfgkeys;
    cfg.n_dkim = 3;
    sl_dkim_keyring *kr;
    char *err = NULL;
    assert_int_equal(sl_dkim_keyring_load(&cfg, &kr, &err), 0);
    struct {
        const char *from;
        size_t sigs;
        const char *has;
    } cases[] = {
        {"a@example.net", 2, "d=example.net"},
        {"a@EXAMPLE.net", 2, "d=example.net"},
        {"a@mail.other.org", 1, "d=other.org"},
        {"a@notother.org", 0, NULL},
        {"a@nokey.com", 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_buf m = SL_BUF_INIT, out = SL_BUF_INIT;
        sl_buf_printf(&m, "From: %s\r\nSubject: s\r\n\r\nbody\r\n", cases[i].from);
        assert_int_equal(sl_dkim_keyring_sign(kr, m.data, m.len, &out), 0);
        if (count_sigs(out.data) != cases[i].sigs)
            fail_msg("case %zu: %zu signatures", i, count_sigs(out.data));
        if (cases[i].has)
            assert_non_null(strstr(out.data, cases[i].has));
        sl_buf_free(&m);
        sl_buf_free(&out);
    }
    sl_dkim_keyring_free(kr);

    /* One bad key fails the whole load. */
    cfgkeys[2].algorithm = "rsa-sha256";
    assert_int_equal(sl_dkim_keyring_load(&cfg, &kr, &err), SL_ECONFIG);
    assert_null(kr);
    assert_non_null(strstr(err, "ed25519.pem"));
    free(err);
}

static void *sign_thread(void *arg)
{
    const sl_dkim_signer *keys[] = {rsa, ed};
    sl_buf *out = arg;
    for (int i = 0; i < 20; i++) {
        sl_buf_reset(out);
        if (sl_dkim_sign_at(keys, 2, sample, strlen(sample), 1700000000, out) != 0)
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void **state)
{
    sl_buf a = SL_BUF_INIT, b = SL_BUF_INIT, c = SL_BUF_INIT;
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, sign_thread, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, sign_thread, &b), 0);
    void *ra, *rb;
    pthread_join(ta, &ra);
    pthread_join(tb, &rb);
    assert_null(ra);
    assert_null(rb);
    assert_null(sign_thread(&c));
    assert_string_equal(a.data, b.data);
    assert_string_equal(a.data, c.data);
    sl_buf_free(&a);
    sl_buf_free(&b);
    sl_buf_free(&c);
}

/* test_dkim sign UNIXTIME DOMAIN:SELECTOR:ALG:KEYFILE... <msg >signed */
static int sign_tool(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s sign UNIXTIME DOMAIN:SELECTOR:ALG:KEYFILE...\n", argv[0]);
        return 2;
    }
    int64_t now = strtoll(argv[2], NULL, 10);
    size_t n = (size_t)argc - 3;
    sl_dkim_signer **keys = calloc(n, sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        char *spec = strdup(argv[3 + i]);
        char *d = strtok(spec, ":"), *s = strtok(NULL, ":"), *a = strtok(NULL, ":"),
             *f = strtok(NULL, "");
        char *err = NULL;
        if (!d || !s || !a || !f || sl_dkim_key_load(d, s, f, a, &keys[i], &err) != 0) {
            fprintf(stderr, "bad key %s: %s\n", argv[3 + i], err ? err : "syntax");
            return 2;
        }
        free(spec);
    }
    sl_buf msg = SL_BUF_INIT, out = SL_BUF_INIT;
    char chunk[8192];
    size_t r;
    while ((r = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
        sl_buf_append(&msg, chunk, r);
    int rc = sl_dkim_sign_at((const sl_dkim_signer *const *)keys, n, msg.data ? msg.data : "",
                             msg.len, now, &out);
    if (rc != 0) {
        fprintf(stderr, "sign: %s\n", sl_strerror(rc));
        return 1;
    }
    fwrite(out.data, 1, out.len, stdout);
    fwrite(msg.data, 1, msg.len, stdout);
    for (size_t i = 0; i < n; i++)
        sl_dkim_key_free(keys[i]);
    free(keys);
    sl_buf_free(&msg);
    sl_buf_free(&out);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "sign") == 0)
        return sign_tool(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_table),        cmocka_unit_test(test_small_rsa_refused),
        cmocka_unit_test(test_dns_txt),           cmocka_unit_test(test_signature_field),
        cmocka_unit_test(test_no_from),           cmocka_unit_test(test_multi_instance_fields),
        cmocka_unit_test(test_body_canon_table),  cmocka_unit_test(test_from_domain_table),
        cmocka_unit_test(test_keyring),           cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
