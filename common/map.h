/*
 * map - the one string-keyed hash table in sluice (chained, FNV-1a, grows
 * at load 1, shrinks on request): the scheduler's sites, suppressions and
 * held retry topics, the sender's pools and pacer, the resolver's cache,
 * the demo's job ids.
 *
 * The map copies keys and owns the copies; values are the caller's (the
 * map never frees them). sl_map_put() replaces and returns the old
 * value. Iteration order is unspecified; do not insert or delete during
 * sl_map_each() except deleting the entry being visited. One thread.
 */
#ifndef SLUICE_MAP_H
#define SLUICE_MAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sl_map_ent {
    char *key;
    void *val;
    struct sl_map_ent *next;
} sl_map_ent;

typedef struct sl_map {
    sl_map_ent **slots;
    size_t n_slots;
    size_t count;
} sl_map;

void sl_map_init(sl_map *m);
void *sl_map_get(const sl_map *m, const char *key);
void *sl_map_put(sl_map *m, const char *key, void *val);
void *sl_map_del(sl_map *m, const char *key);
/* cb returns nonzero to stop. */
void sl_map_each(sl_map *m, int (*cb)(void *arg, const char *key, void *val), void *arg);
/* Deletes (and lets drop free) every entry for which drop returns true,
 * then shrinks the table if it freed any; returns how many it deleted. */
size_t sl_map_sweep(sl_map *m, bool (*drop)(void *arg, void *val), void *arg);
/* After many deletions: a smaller table for what is left (not during
 * iteration). */
void sl_map_shrink(sl_map *m);
/* Frees the table and keys, not the values. */
void sl_map_free(sl_map *m);

#endif
