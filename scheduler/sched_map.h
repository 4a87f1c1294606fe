/*
 * map - a string-keyed hash table (chained, grows at load 1): sites in
 * shape, suppressions, held retry topics.
 *
 * The map copies keys and owns the copies; values are the caller's (the
 * map never frees them). sched_map_put() replaces and returns the old
 * value. Iteration order is unspecified; do not insert or delete during
 * sched_map_each() except deleting the entry being visited. One thread.
 */
#ifndef SLUICE_SCHED_MAP_H
#define SLUICE_SCHED_MAP_H

#include <stddef.h>

typedef struct sched_map_ent {
    char *key;
    void *val;
    struct sched_map_ent *next;
} sched_map_ent;

typedef struct sched_map {
    sched_map_ent **slots;
    size_t n_slots;
    size_t count;
} sched_map;

void sched_map_init(sched_map *m);
void *sched_map_get(const sched_map *m, const char *key);
void *sched_map_put(sched_map *m, const char *key, void *val);
void *sched_map_del(sched_map *m, const char *key);
/* cb returns nonzero to stop. */
void sched_map_each(sched_map *m, int (*cb)(void *arg, const char *key, void *val), void *arg);
/* After many deletions: a smaller table for what is left (not during
 * iteration). */
void sched_map_shrink(sched_map *m);
/* Frees the table and keys, not the values. */
void sched_map_free(sched_map *m);

#endif
