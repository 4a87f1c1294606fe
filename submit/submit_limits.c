/*
 * submit_limits - token buckets per user and AUTH failures per IP (see
 * submit_limits.h). Linear tables: the users file is small, and the
 * failure table is pruned and capped.
 */
#include "submit_limits.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

typedef struct bucket {
    char *key;
    double tokens;
    int64_t at_ms;
} bucket;

struct sub_rate {
    bucket *v;
    size_t n;
};

sub_rate *sub_rate_new(void)
{
    return xcalloc(1, sizeof(sub_rate));
}

void sub_rate_free(sub_rate *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].key);
    free(r->v);
    free(r);
}

static bucket *bucket_get(sub_rate *r, const char *key, uint32_t rate, int64_t now)
{
    for (size_t i = 0; i < r->n; i++) {
        bucket *b = &r->v[i];
        if (!strcmp(b->key, key)) {
            double add = (double)(now - b->at_ms) * rate / 60000.0;
            b->tokens = b->tokens + add > rate ? rate : b->tokens + add;
            b->at_ms = now;
            return b;
        }
    }
    r->v = xrealloc(r->v, (r->n + 1) * sizeof *r->v);
    bucket *b = &r->v[r->n++];
    b->key = xstrdup(key);
    b->tokens = rate;
    b->at_ms = now;
    return b;
}

bool sub_rate_check(sub_rate *r, const char *key, uint32_t rate_per_min, int64_t now_ms)
{
    if (rate_per_min == 0)
        return true;
    return bucket_get(r, key, rate_per_min, now_ms)->tokens >= 1.0;
}

bool sub_rate_take(sub_rate *r, const char *key, uint32_t rate_per_min, int64_t now_ms)
{
    if (rate_per_min == 0)
        return true;
    bucket *b = bucket_get(r, key, rate_per_min, now_ms);
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

typedef struct fail_ent {
    char ip[48];
    unsigned n;
    int64_t first_ms;
} fail_ent;

struct sub_fails {
    fail_ent *v;
    size_t n, cap, max;
    int64_t window_ms;
};

sub_fails *sub_fails_new(int64_t window_ms, size_t max_entries)
{
    sub_fails *f = xcalloc(1, sizeof *f);
    f->window_ms = window_ms;
    f->max = max_entries ? max_entries : 1;
    return f;
}

void sub_fails_free(sub_fails *f)
{
    if (!f)
        return;
    free(f->v);
    free(f);
}

static void fails_prune(sub_fails *f, int64_t now)
{
    size_t w = 0;
    for (size_t i = 0; i < f->n; i++)
        if (now - f->v[i].first_ms < f->window_ms)
            f->v[w++] = f->v[i];
    f->n = w;
}

static fail_ent *fails_find(sub_fails *f, const char *ip, int64_t now)
{
    for (size_t i = 0; i < f->n; i++) {
        fail_ent *e = &f->v[i];
        if (!strcmp(e->ip, ip)) {
            if (now - e->first_ms >= f->window_ms) {
                e->n = 0;
                e->first_ms = now;
            }
            return e;
        }
    }
    return NULL;
}

unsigned sub_fails_count(sub_fails *f, const char *ip, int64_t now_ms)
{
    fail_ent *e = fails_find(f, ip, now_ms);
    return e ? e->n : 0;
}

unsigned sub_fails_note(sub_fails *f, const char *ip, int64_t now_ms)
{
    fail_ent *e = fails_find(f, ip, now_ms);
    if (!e) {
        if (f->n >= f->cap / 2 + 16)
            fails_prune(f, now_ms);
        if (f->n >= f->max) {
            /* Drop the oldest run (entries are kept in insertion order). */
            memmove(&f->v[0], &f->v[1], (f->n - 1) * sizeof *f->v);
            f->n--;
        }
        if (f->n == f->cap) {
            f->cap = f->cap ? f->cap * 2 : 16;
            f->v = xrealloc(f->v, f->cap * sizeof *f->v);
        }
        e = &f->v[f->n++];
        memset(e, 0, sizeof *e);
        strncpy(e->ip, ip, sizeof e->ip - 1);
        e->first_ms = now_ms;
    }
    return ++e->n;
}
