/*
 * offsets - the in-flight window of one partition, for at-least-once
 * offset storing.
 *
 * Records are pushed in offset order as they are handed out; each push
 * returns a sequence number. sl_offsets_done() marks one record finished
 * (in any order) and returns the offset that is now safe to store: the
 * offset of the lowest record still in flight, or one past the last
 * record when none is, or -1 when that position did not move. Storing
 * that value means a restart resumes at the oldest unfinished record:
 * work is repeated, never skipped.
 *
 * Not thread safe: the caller serialises (kafka.c holds its mutex).
 */
#ifndef SLUICE_OFFSETS_H
#define SLUICE_OFFSETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_offsets {
    int64_t *offsets;
    bool *done;
    size_t cap, head, count;
    uint64_t head_seq;
    int64_t stored; /* last value returned, -1 none */
} sl_offsets;

void sl_offsets_init(sl_offsets *o);
void sl_offsets_free(sl_offsets *o);
uint64_t sl_offsets_push(sl_offsets *o, int64_t offset);
int64_t sl_offsets_done(sl_offsets *o, uint64_t seq);
size_t sl_offsets_inflight(const sl_offsets *o);

#endif
