/*
 * test_libsluice - address validation (table-driven: valid, invalid, IDN)
 * and sluice_send()'s refusals with their messages. The client is created
 * against a bootstrap address nobody listens on: validation never talks to
 * Kafka, and an accepted message just stays outstanding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "sluice.h"
#include "util.h"

/* ---- addresses ---- */

typedef struct {
    const char *in;
    const char *out; /* NULL: must be refused */
    const char *why; /* substring of the reason when refused */
} addr_case;

static const addr_case addr_cases[] = {
    /* valid, as is */
    {"user@example.com", "user@example.com", NULL},
    {"first.last@example.com", "first.last@example.com", NULL},
    {"a@b.co", "a@b.co", NULL},
    {"user+tag@example.com", "user+tag@example.com", NULL},
    {"x!#$%&'*+-/=?^_`{|}~y@example.com", "x!#$%&'*+-/=?^_`{|}~y@example.com", NULL},
    {"1234@sub.domain-with-hyphen.example", "1234@sub.domain-with-hyphen.example", NULL},
    {"\"quoted local\"@example.com", "\"quoted local\"@example.com", NULL},
    {"\"a\\\"b\"@example.com", "\"a\\\"b\"@example.com", NULL},
    {"\"at@inside\"@example.com", "\"at@inside\"@example.com", NULL},
    {"\"\"@example.com", "\"\"@example.com", NULL},
    {"user@123.example", "user@123.example", NULL},
    /* domain lower-cased, local part kept */
    {"User@Example.COM", "User@example.com", NULL},
    {"MiXeD@SUB.Example.Org", "MiXeD@sub.example.org", NULL},
    /* IDN: U-labels to A-labels */
    {"user@bücher.de", "user@xn--bcher-kva.de", NULL},
    {"user@BÜCHER.de", "user@xn--bcher-kva.de", NULL},
    {"user@münchen.example", "user@xn--mnchen-3ya.example", NULL},
    {"info@例え.jp", "info@xn--r8jz45g.jp", NULL},
    {"user@xn--bcher-kva.de", "user@xn--bcher-kva.de", NULL},
    {"user@XN--BCHER-KVA.DE", "user@xn--bcher-kva.de", NULL},
    /* RFC 6531 UTF-8 local part */
    {"jörg@example.com", "jörg@example.com", NULL},
    {"δοκιμή@παράδειγμα.δοκιμή", "δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp", NULL},
    /* length limits: 64-octet local part, 63-octet label */
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com",
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com", NULL},
    {"a@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.com",
     "a@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.com", NULL},

    /* invalid */
    {"", NULL, "empty address"},
    {"plainaddress", NULL, "missing '@'"},
    {"@example.com", NULL, "empty local part"},
    {"user@", NULL, "empty domain"},
    {".user@example.com", NULL, "starts with a dot"},
    {"user.@example.com", NULL, "ends with a dot"},
    {"us..er@example.com", NULL, "consecutive dots"},
    {"us er@example.com", NULL, "space"},
    {"us(er@example.com", NULL, "'('"},
    {"a@b@example.com", NULL, "'@'"},
    {"\"unterminated@example.com", NULL, "unterminated"},
    {"\"q\"x@example.com", NULL, "expected '@'"},
    {"user@example", NULL, "not fully qualified"},
    {"user@localhost", NULL, "not fully qualified"},
    {"user@example..com", NULL, "empty label"},
    {"user@.example.com", NULL, "empty label"},
    {"user@example.com.", NULL, "ends with a dot"},
    {"user@-example.com", NULL, "starts with a hyphen"},
    {"user@example-.com", NULL, "ends with a hyphen"},
    {"user@exa_mple.com", NULL, "'_'"},
    {"user@exa mple.com", NULL, "space"},
    {"user@192.168.0.1", NULL, "all digits"},
    {"user@[192.168.0.1]", NULL, "address literals"},
    {"user@[IPv6:::1]", NULL, "address literals"},
    {"<user@example.com>", NULL, "angle brackets"},
    {"Name <user@example.com>", NULL, "angle brackets"},
    {"user@example.com\r\nRCPT TO:<x@evil.com>", NULL, "line break"},
    {"user\n@example.com", NULL, "line break"},
    {"user@exam\rple.com", NULL, "line break"},
    {"us\ter@example.com", NULL, "control character"},
    {"user@example.com\x7f", NULL, "control character"},
    {"\"a\x01\"@example.com", NULL, "control character"},
    {"us\xff"
     "er@example.com",
     NULL, "UTF-8"},
    {"user@b\xc3(cher.de", NULL, "UTF-8"},
    {"user@xn--zz.com", NULL, "invalid A-label"},
    {"user@\xcc\x81"
     "a.com",
     NULL, "IDN"}, /* leading combining mark */
    {"user@a\xe2\x80\x8b"
     "b.com",
     "user@ab.com", NULL}, /* UTS #46 drops U+200B */
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com", NULL,
     "64 octets"},
    {"a@bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.com", NULL,
     "longer than 63"},
};

static void test_addresses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof addr_cases / sizeof addr_cases[0]; i++) {
        const addr_case *tc = &addr_cases[i];
        char out[SLUICE_ADDRESS_MAX + 1] = "";
        char why[200] = "";
        int rc = sluice_address_normalize(tc->in, out, why, sizeof why);
        if (tc->out) {
            if (rc != 0 || strcmp(out, tc->out) != 0)
                fail_msg("case %zu \"%s\": want \"%s\", got rc %d out \"%s\" why \"%s\"", i, tc->in,
                         tc->out, rc, out, why);
        } else {
            if (rc != SLUICE_EADDRESS)
                fail_msg("case %zu \"%s\": accepted as \"%s\", should be refused", i, tc->in, out);
            if (!strstr(why, tc->why))
                fail_msg("case %zu \"%s\": reason \"%s\" lacks \"%s\"", i, tc->in, why, tc->why);
        }
    }
}

/* Whole-address and domain length limits, built rather than written out. */
static void test_address_lengths(void **state)
{
    (void)state;
    char addr[400], out[SLUICE_ADDRESS_MAX + 1], why[200];
    /* 64 + 1 + 4 labels of 47 + ".com" = 257 octets: over 254. */
    char lab[48];
    memset(lab, 'x', 47);
    lab[47] = 0;
    snprintf(addr, sizeof addr, "%.64s@%s.%s.%s.%s.com",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", lab, lab, lab,
             lab);
    assert_int_equal(sluice_address_normalize(addr, out, why, sizeof why), SLUICE_EADDRESS);
    assert_non_null(strstr(why, "254"));
    /* Exactly 254 octets passes: 64 + 1 + 189. */
    char dom[190];
    memset(dom, 'y', 189);
    for (int i = 50; i < 189; i += 51)
        dom[i] = '.';
    memcpy(dom + 185, ".com", 4);
    dom[189] = 0;
    snprintf(addr, sizeof addr, "%.64s@%s",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", dom);
    assert_int_equal(strlen(addr), 254);
    assert_int_equal(sluice_address_normalize(addr, out, why, sizeof why), 0);
    /* A domain over 255 octets. */
    char big[300];
    memset(big, 'z', sizeof big);
    for (int i = 40; i < 290; i += 41)
        big[i] = '.';
    memcpy(big + 290, ".com", 5);
    snprintf(addr, sizeof addr, "a@%s", big);
    assert_int_equal(sluice_address_normalize(addr, out, why, sizeof why), SLUICE_EADDRESS);
    assert_non_null(strstr(why, "255"));
}

/* One form for the sender-domain lists of API keys and submission users:
 * globs lower-cased as written, names to their lower-case A-label. */
static void test_domain_pattern(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out; /* out NULL: refused */
    } cases[] = {
        {"Example.COM", "example.com"},
        {"*.Example.COM", "*.example.com"},
        {"mail?.example.com", "mail?.example.com"},
        {"B\xc3\xbc" "cher.DE", "xn--bcher-kva.de"},
        {"", NULL},
        {"-bad.example", NULL},
        {"no..dots", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[SLUICE_ADDRESS_MAX + 1], why[200] = "";
        int rc = sluice_domain_pattern_normalize(cases[i].in, out, why, sizeof why);
        if (cases[i].out) {
            assert_int_equal(rc, 0);
            assert_string_equal(out, cases[i].out);
        } else {
            assert_int_equal(rc, SLUICE_EADDRESS);
            assert_true(why[0] != 0);
        }
    }
    char big[400], out[SLUICE_ADDRESS_MAX + 1], why[200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    big[0] = '*';
    assert_int_equal(sluice_domain_pattern_normalize(big, out, why, sizeof why), SLUICE_EADDRESS);
    assert_string_equal(why, "domain too long");
    big[0] = 'a';
    assert_int_equal(sluice_domain_pattern_normalize(big, out, why, sizeof why), SLUICE_EADDRESS);
    assert_string_equal(why, "domain too long");
}

/* ---- sluice_send refusals ---- */

static sluice_client *client;
static sl_config *cfg;

static int setup(void **state)
{
    (void)state;
    char *err = NULL;
    const char yaml[] = "kafka:\n  bootstrap: 127.0.0.1:1\n"
                        "scheduler:\n  max_job_bytes: 4096\n";
    if (sl_config_parse("test.yaml", yaml, sizeof yaml - 1, &cfg, &err) != 0) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    client = sluice_client_new_from_config(cfg, &err);
    if (!client) {
        fprintf(stderr, "client: %s\n", err);
        return -1;
    }
    sluice_client_set_accepted_events(client, false);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sluice_client_free(client);
    sl_config_free(cfg);
    return 0;
}

typedef struct {
    const char *name;
    void (*mutate)(sluice_message *m);
    int code;
    const char *msg; /* substring of sluice_errmsg() */
} send_case;

static const char *rcpts2[] = {"bob@example.com", "carol@example.org"};
static const char *bad_rcpts[] = {"bob@example.com", "carol@exa mple.org"};
static const char *null_rcpts[] = {"bob@example.com", NULL};
static const sluice_kv good_vars[] = {{"name", "Bob"}, {"body", "line 1\r\nline 2"}};
static const sluice_kv bad_var_name[] = {{"na me", "x"}};
static const sluice_kv nul_var[] = {{"name", NULL}};
static const sluice_kv crlf_meta[] = {{"k", "v\r\nX-Evil: 1"}};
static const sluice_kv empty_meta[] = {{"", "v"}};
static char big_raw[5000];

static void m_none(sluice_message *m)
{
    (void)m;
}
static void m_no_from(sluice_message *m)
{
    m->from = NULL;
}
static void m_bad_from(sluice_message *m)
{
    m->from = "bounce@@example.net";
}
static void m_crlf_from(sluice_message *m)
{
    m->from = "b@example.net\r\nDATA";
}
static void m_no_to(sluice_message *m)
{
    m->n_to = 0;
}
static void m_bad_to(sluice_message *m)
{
    m->to = bad_rcpts;
}
static void m_null_to(sluice_message *m)
{
    m->to = null_rcpts;
}
static void m_too_many(sluice_message *m)
{
    m->n_to = SLUICE_MAX_RCPTS + 1;
}
static void m_no_content(sluice_message *m)
{
    m->raw = NULL;
    m->raw_len = 0;
}
static void m_both(sluice_message *m)
{
    m->template_id = "welcome";
}
static void m_empty_raw(sluice_message *m)
{
    m->raw_len = 0;
}
static void m_nul_raw(sluice_message *m)
{
    m->raw = "From: a\r\n\0x";
    m->raw_len = 12;
}
static void m_big_raw(sluice_message *m)
{
    m->raw = big_raw;
    m->raw_len = sizeof big_raw;
}
static void m_tenant_crlf(sluice_message *m)
{
    m->tenant = "acme\r\nx";
}
static void m_campaign_nul(sluice_message *m)
{
    m->campaign = "camp\x01";
}
static void m_pool_long(sluice_message *m)
{
    static char p[300];
    memset(p, 'p', 299);
    m->pool = p;
}
static void m_prio(sluice_message *m)
{
    m->priority = (sluice_priority)7;
}
static void m_expired(sluice_message *m)
{
    m->expires_at_ms = 1000;
}
static void m_negative_expiry(sluice_message *m)
{
    m->expires_at_ms = -5;
}
static void m_tmpl(sluice_message *m)
{
    m->raw = NULL;
    m->raw_len = 0;
    m->template_id = "welcome";
    m->vars = good_vars;
    m->n_vars = 2;
}
static void m_tmpl_crlf_id(sluice_message *m)
{
    m_tmpl(m);
    m->template_id = "wel\ncome";
}
static void m_tmpl_bad_var(sluice_message *m)
{
    m_tmpl(m);
    m->vars = bad_var_name;
    m->n_vars = 1;
}
static void m_tmpl_null_var(sluice_message *m)
{
    m_tmpl(m);
    m->vars = nul_var;
    m->n_vars = 1;
}
static void m_raw_vars(sluice_message *m)
{
    m->vars = good_vars;
    m->n_vars = 2;
}
static void m_meta_crlf(sluice_message *m)
{
    m->meta = crlf_meta;
    m->n_meta = 1;
}
static void m_meta_empty(sluice_message *m)
{
    m->meta = empty_meta;
    m->n_meta = 1;
}

static void m_job_id_crlf(sluice_message *m)
{
    static const char *one[] = {"bob@example.org"};
    m->to = one;
    m->n_to = 1;
    m->job_id = "J1\r\nX-Evil: 1";
}

static const send_case send_cases[] = {
    {"valid raw", m_none, 0, NULL},
    {"valid template", m_tmpl, 0, NULL},
    {"no from", m_no_from, SLUICE_EADDRESS, "envelope sender is required"},
    {"bad from", m_bad_from, SLUICE_EADDRESS, "from \"bounce@@example.net\""},
    {"crlf from", m_crlf_from, SLUICE_EADDRESS, "line break"},
    {"no recipients", m_no_to, SLUICE_EADDRESS, "no recipients"},
    {"bad recipient", m_bad_to, SLUICE_EADDRESS, "recipient 2 \"carol@exa mple.org\": domain"},
    {"null recipient", m_null_to, SLUICE_EADDRESS, "recipient 2: missing"},
    {"too many", m_too_many, SLUICE_EINVAL, "at most 10000"},
    {"no content", m_no_content, SLUICE_EINVAL, "no content"},
    {"both contents", m_both, SLUICE_EINVAL, "not both"},
    {"empty raw", m_empty_raw, SLUICE_EINVAL, "empty message"},
    {"NUL in raw", m_nul_raw, SLUICE_EINVAL, "NUL"},
    {"raw too big", m_big_raw, SLUICE_ETOOBIG, "exceeds the limit of 4096"},
    {"tenant CRLF", m_tenant_crlf, SLUICE_EINVAL, "tenant: contains a line break"},
    {"campaign control", m_campaign_nul, SLUICE_EINVAL, "campaign: contains control character"},
    {"pool too long", m_pool_long, SLUICE_EINVAL, "pool: longer than 255"},
    {"priority", m_prio, SLUICE_EINVAL, "priority"},
    {"expired", m_expired, SLUICE_EINVAL, "in the past"},
    {"negative expiry", m_negative_expiry, SLUICE_EINVAL, "negative"},
    {"template id CRLF", m_tmpl_crlf_id, SLUICE_EINVAL, "template_id: contains a line break"},
    {"bad variable name", m_tmpl_bad_var, SLUICE_EINVAL, "name \"na me\""},
    {"variable without value", m_tmpl_null_var, SLUICE_EINVAL, "variable name: no value"},
    {"raw with vars", m_raw_vars, SLUICE_EINVAL, "only a template"},
    {"meta CRLF", m_meta_crlf, SLUICE_EINVAL, "meta k: contains a line break"},
    {"meta empty key", m_meta_empty, SLUICE_EINVAL, "empty key"},
    {"job id CRLF", m_job_id_crlf, SLUICE_EINVAL, "job_id: job id contains CR or LF"},
};

static int results;
static void count_result(void *arg, const sluice_job_result *r)
{
    (void)arg;
    (void)r;
    results++;
}

static void test_send_validation(void **state)
{
    (void)state;
    memset(big_raw, 'x', sizeof big_raw);
    for (size_t i = 0; i < sizeof send_cases / sizeof send_cases[0]; i++) {
        const send_case *tc = &send_cases[i];
        sluice_message m = SLUICE_MESSAGE_INIT;
        m.from = "bounce@example.net";
        m.to = rcpts2;
        m.n_to = 2;
        m.raw = "From: a@example.net\r\n\r\nhi\r\n";
        m.raw_len = strlen(m.raw);
        tc->mutate(&m);
        size_t before = sluice_outstanding(client);
        results = 0;
        int rc = sluice_send(client, &m, count_result, NULL);
        if (rc != tc->code)
            fail_msg("%s: rc %d (%s), want %d; msg \"%s\"", tc->name, rc, sluice_strerror(rc),
                     tc->code, sluice_errmsg(client));
        if (tc->code) {
            if (!strstr(sluice_errmsg(client), tc->msg))
                fail_msg("%s: message \"%s\" lacks \"%s\"", tc->name, sluice_errmsg(client),
                         tc->msg);
            /* Refused whole: nothing handed to the producer, no callback. */
            assert_int_equal(sluice_outstanding(client), before);
        } else {
            /* Two domains: two jobs outstanding (no broker to ack them). */
            assert_int_equal(sluice_outstanding(client), before + 2);
        }
        assert_int_equal(results, 0);
    }
}

/* Recipients group by domain, 100 per job at most, duplicates once. */
static void test_send_split(void **state)
{
    (void)state;
    enum { N = 250 };
    static char buf[N + 3][64];
    const char *to[N + 3];
    for (int i = 0; i < N; i++) {
        snprintf(buf[i], sizeof buf[i], "u%d@Big.Example", i);
        to[i] = buf[i];
    }
    to[N] = "u1@big.example"; /* duplicate after domain normalisation */
    to[N + 1] = "x@other.example";
    to[N + 2] = "x@OTHER.example"; /* duplicate */
    sluice_message m = SLUICE_MESSAGE_INIT;
    m.from = "bounce@example.net";
    m.to = to;
    m.n_to = N + 3;
    m.template_id = "t";
    size_t before = sluice_outstanding(client);
    assert_int_equal(sluice_send(client, &m, NULL, NULL), 0);
    /* 250 on big.example -> 3 jobs (100, 100, 50), 1 on other.example. */
    assert_int_equal(sluice_outstanding(client) - before, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_address_lengths),
        cmocka_unit_test(test_domain_pattern),
        cmocka_unit_test_setup_teardown(test_send_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_split, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
