/*
 * map - see map.h.
 */
#include "map.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

void sl_map_init(sl_map *m)
{
    m->n_slots = 8; /* most maps are small: a site's pairs, its flows */
    m->slots = xcalloc(m->n_slots, sizeof *m->slots);
    m->count = 0;
}

static sl_map_ent **find(const sl_map *m, const char *key)
{
    sl_map_ent **pp = &m->slots[hash(key) & (m->n_slots - 1)];
    while (*pp && strcmp((*pp)->key, key))
        pp = &(*pp)->next;
    return pp;
}

void *sl_map_get(const sl_map *m, const char *key)
{
    sl_map_ent *e = *find(m, key);
    return e ? e->val : NULL;
}

static void resize(sl_map *m, size_t n)
{
    sl_map_ent **s = xcalloc(n, sizeof *s);
    for (size_t i = 0; i < m->n_slots; i++) {
        sl_map_ent *e = m->slots[i];
        while (e) {
            sl_map_ent *next = e->next;
            size_t k = hash(e->key) & (n - 1);
            e->next = s[k];
            s[k] = e;
            e = next;
        }
    }
    free(m->slots);
    m->slots = s;
    m->n_slots = n;
}

void *sl_map_put(sl_map *m, const char *key, void *val)
{
    sl_map_ent **pp = find(m, key);
    if (*pp) {
        void *old = (*pp)->val;
        (*pp)->val = val;
        return old;
    }
    sl_map_ent *e = xcalloc(1, sizeof *e);
    e->key = xstrdup(key);
    e->val = val;
    *pp = e;
    if (++m->count > m->n_slots)
        resize(m, m->n_slots * 2);
    return NULL;
}

void *sl_map_del(sl_map *m, const char *key)
{
    sl_map_ent **pp = find(m, key);
    sl_map_ent *e = *pp;
    if (!e)
        return NULL;
    *pp = e->next;
    void *v = e->val;
    free(e->key);
    free(e);
    m->count--;
    return v;
}

void sl_map_shrink(sl_map *m)
{
    size_t n = m->n_slots;
    while (n > 8 && m->count < n / 4)
        n /= 2;
    if (n != m->n_slots)
        resize(m, n);
}

void sl_map_each(sl_map *m, int (*cb)(void *arg, const char *key, void *val), void *arg)
{
    for (size_t i = 0; i < m->n_slots; i++) {
        sl_map_ent *e = m->slots[i];
        while (e) {
            sl_map_ent *next = e->next;
            if (cb(arg, e->key, e->val))
                return;
            e = next;
        }
    }
}

size_t sl_map_sweep(sl_map *m, bool (*drop)(void *arg, void *val), void *arg)
{
    size_t freed = 0;
    for (size_t i = 0; i < m->n_slots; i++) {
        sl_map_ent **pp = &m->slots[i];
        while (*pp) {
            sl_map_ent *e = *pp;
            if (drop(arg, e->val)) {
                *pp = e->next;
                free(e->key);
                free(e);
                m->count--;
                freed++;
                continue;
            }
            pp = &e->next;
        }
    }
    if (freed)
        sl_map_shrink(m);
    return freed;
}

void sl_map_free(sl_map *m)
{
    for (size_t i = 0; m->slots && i < m->n_slots; i++) {
        sl_map_ent *e = m->slots[i];
        while (e) {
            sl_map_ent *next = e->next;
            free(e->key);
            free(e);
            e = next;
        }
    }
    free(m->slots);
    m->slots = NULL;
    m->n_slots = m->count = 0;
}
