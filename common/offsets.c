/*
 * offsets - see offsets.h. A ring buffer of (offset, done) in push order;
 * done records are popped off the head.
 */
#include "offsets.h"
#include "util.h"

#include <stdlib.h>

void sl_offsets_init(sl_offsets *o)
{
    *o = (sl_offsets){0};
    o->stored = -1;
}

void sl_offsets_free(sl_offsets *o)
{
    free(o->offsets);
    free(o->done);
    sl_offsets_init(o);
}

uint64_t sl_offsets_push(sl_offsets *o, int64_t offset)
{
    if (o->count == o->cap) {
        size_t ncap = o->cap ? o->cap * 2 : 256;
        int64_t *no = xmalloc(ncap * sizeof *no);
        bool *nd = xmalloc(ncap * sizeof *nd);
        for (size_t i = 0; i < o->count; i++) {
            no[i] = o->offsets[(o->head + i) % o->cap];
            nd[i] = o->done[(o->head + i) % o->cap];
        }
        free(o->offsets);
        free(o->done);
        o->offsets = no;
        o->done = nd;
        o->cap = ncap;
        o->head = 0;
    }
    size_t idx = (o->head + o->count) % o->cap;
    o->offsets[idx] = offset;
    o->done[idx] = false;
    o->count++;
    return o->head_seq + o->count - 1;
}

int64_t sl_offsets_done(sl_offsets *o, uint64_t seq)
{
    SL_ASSERT(seq >= o->head_seq && seq < o->head_seq + o->count);
    o->done[(o->head + (seq - o->head_seq)) % o->cap] = true;
    int64_t last = -1;
    while (o->count && o->done[o->head]) {
        last = o->offsets[o->head];
        o->head = (o->head + 1) % o->cap;
        o->head_seq++;
        o->count--;
    }
    if (last < 0)
        return -1;
    int64_t store = o->count ? o->offsets[o->head] : last + 1;
    if (store == o->stored)
        return -1;
    o->stored = store;
    return store;
}

size_t sl_offsets_inflight(const sl_offsets *o)
{
    return o->count;
}
