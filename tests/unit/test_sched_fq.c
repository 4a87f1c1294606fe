/* Unit tests of scheduler/sched_fq: priorities within a site, round robin
 * across (tenant, campaign) flows, and a capped flow never holding back
 * another. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "sched_fq.h"

typedef struct item {
    sched_fq_item it;
    const char *name;
} item;

static item *add(sched_fq *q, item *pool, size_t *n, const char *flow, int prio, const char *name)
{
    item *x = &pool[(*n)++];
    x->name = name;
    sched_fq_push(q, flow, &x->it, prio);
    return x;
}

/* Serve everything ok admits, in order, into out (space separated). */
static void drain(sched_fq *q, sched_fq_ok ok, void *arg, char *out, size_t len)
{
    out[0] = 0;
    sched_fq_item *it;
    while ((it = sched_fq_next(q, ok, arg))) {
        if (out[0])
            strncat(out, " ", len - strlen(out) - 1);
        strncat(out, ((item *)it)->name, len - strlen(out) - 1);
        sched_fq_take(q, it);
    }
}

static void test_round_robin_across_flows(void **state)
{
    (void)state;
    sched_fq q;
    sched_fq_init(&q);
    item pool[16];
    size_t n = 0;
    add(&q, pool, &n, "acme", 2, "a1");
    add(&q, pool, &n, "acme", 2, "a2");
    add(&q, pool, &n, "acme", 2, "a3");
    add(&q, pool, &n, "beta", 2, "b1");
    add(&q, pool, &n, "beta", 2, "b2");
    add(&q, pool, &n, "gamma", 2, "c1");
    char out[256];
    drain(&q, NULL, NULL, out, sizeof out);
    assert_string_equal(out, "a1 b1 c1 a2 b2 a3");
    assert_int_equal(q.n, 0);
    assert_int_equal(q.flows.count, 0);
    sched_fq_free(&q);
}

static void test_priority_first_then_fifo(void **state)
{
    (void)state;
    sched_fq q;
    sched_fq_init(&q);
    item pool[16];
    size_t n = 0;
    add(&q, pool, &n, "acme", 2, "bulk1");
    add(&q, pool, &n, "acme", 1, "norm1");
    add(&q, pool, &n, "beta", 0, "tx1");
    add(&q, pool, &n, "acme", 2, "bulk2");
    add(&q, pool, &n, "acme", 0, "tx2");
    char out[256];
    drain(&q, NULL, NULL, out, sizeof out);
    assert_string_equal(out, "tx2 tx1 norm1 bulk1 bulk2");
    sched_fq_free(&q);
}

static bool not_acme(void *arg, sched_fq_flow *f)
{
    int *calls = arg;
    (*calls)++;
    return strcmp(f->key, "acme") != 0;
}

static void test_capped_flow_never_blocks_others(void **state)
{
    (void)state;
    sched_fq q;
    sched_fq_init(&q);
    item pool[16];
    size_t n = 0;
    /* acme is first in line, with higher priority work, and over its cap. */
    add(&q, pool, &n, "acme", 0, "a1");
    add(&q, pool, &n, "acme", 2, "a2");
    add(&q, pool, &n, "beta", 2, "b1");
    add(&q, pool, &n, "beta", 2, "b2");
    int calls = 0;
    char out[256];
    drain(&q, not_acme, &calls, out, sizeof out);
    assert_string_equal(out, "b1 b2");
    assert_int_equal(q.n, 2);
    /* One verdict per flow per call, whatever the priorities present. */
    assert_true(calls <= 2 * 3);
    /* Once acme may go again it is served. */
    drain(&q, NULL, NULL, out, sizeof out);
    assert_string_equal(out, "a1 a2");
    sched_fq_free(&q);
}

static void test_last_and_remove(void **state)
{
    (void)state;
    sched_fq q;
    sched_fq_init(&q);
    item pool[16];
    size_t n = 0;
    add(&q, pool, &n, "small", 2, "s1");
    add(&q, pool, &n, "big", 2, "g1");
    add(&q, pool, &n, "big", 1, "g2");
    add(&q, pool, &n, "big", 2, "g3");
    sched_fq_item *last = sched_fq_last(&q);
    assert_string_equal(((item *)last)->name, "g3");
    sched_fq_remove(&q, last);
    last = sched_fq_last(&q);
    /* big still has more items; its newest bulk job is g1. */
    assert_string_equal(((item *)last)->name, "g1");
    /* remove does not move the round robin: small (first in) is next. */
    sched_fq_remove(&q, last);
    char out[64];
    drain(&q, NULL, NULL, out, sizeof out);
    assert_string_equal(out, "g2 s1");
    assert_null(sched_fq_last(&q));
    sched_fq_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_across_flows),
        cmocka_unit_test(test_priority_first_then_fifo),
        cmocka_unit_test(test_capped_flow_never_blocks_others),
        cmocka_unit_test(test_last_and_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
