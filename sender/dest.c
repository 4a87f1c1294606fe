/*
 * dest - see dest.h.
 */
#include "dest.h"
#include "map.h"
#include "metrics.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dest {
    char *key;
    snd_dest_state state;
    int64_t backoff_ms;     /* the delay used for the current DOWN spell */
    int64_t down_until;
    int64_t last_used;
    uint32_t failures;      /* consecutive */
    size_t held;
    /* Transactions completed, in two buckets of RATE_BUCKET_MS: the rate
     * says how fast what it holds drains. */
    int64_t bucket_start;
    uint32_t bucket_done, prev_done;
    snd_result why;          /* what marked it down */
} dest;

#define RATE_BUCKET_MS 5000

struct snd_dests {
    snd_dest_opts o;
    sl_map dests; /* key -> dest, owned */
    size_t n_down;
    uint64_t rng;
};

snd_dests *snd_dests_new(const snd_dest_opts *o)
{
    snd_dests *ds = xcalloc(1, sizeof *ds);
    ds->o = *o;
    if (ds->o.backoff_initial_ms <= 0)
        ds->o.backoff_initial_ms = 1000;
    if (ds->o.backoff_max_ms < ds->o.backoff_initial_ms)
        ds->o.backoff_max_ms = ds->o.backoff_initial_ms;
    if (ds->o.idle_ms <= 0)
        ds->o.idle_ms = 600000;
    ds->rng = o->seed ? o->seed : 0x9e3779b97f4a7c15ULL;
    sl_map_init(&ds->dests);
    return ds;
}

static void dest_free(dest *d)
{
    free(d->key);
    snd_result_clear(&d->why);
    free(d);
}

static void set_state(snd_dests *ds, dest *d, snd_dest_state st)
{
    if (d->state == st)
        return;
    bool was_down = d->state != SND_DEST_UP, is_down = st != SND_DEST_UP;
    d->state = st;
    if (was_down != is_down) {
        ds->n_down += is_down ? 1 : (size_t)-1;
        sl_metric_add("sluice_sender_destinations_down", NULL, is_down ? 1 : -1);
    }
    static const char *const names[] = {"up", "down", "probing"};
    char l[32];
    snprintf(l, sizeof l, "to=\"%s\"", names[st]);
    sl_metric_inc("sluice_sender_destination_state_changes_total", l, 1);
}

static int free_each(void *arg, const char *key, void *val)
{
    dest *d = val;
    if (d->state != SND_DEST_UP)
        sl_metric_add("sluice_sender_destinations_down", NULL, -1);
    dest_free(d);
    return 0;
}

void snd_dests_free(snd_dests *ds)
{
    if (!ds)
        return;
    sl_map_each(&ds->dests, free_each, NULL);
    sl_map_free(&ds->dests);
    free(ds);
}

char *snd_dest_key(const char *source_ip, const char *socks5, const char *ip, unsigned port)
{
    return xasprintf("%s|%s|%s|%u", source_ip ? source_ip : "", socks5 ? socks5 : "",
                     ip ? ip : "", port);
}

static dest *find(snd_dests *ds, const char *key, bool create, int64_t now)
{
    dest *d = sl_map_get(&ds->dests, key);
    if (d) {
        if (create)
            d->last_used = now;
        return d;
    }
    if (!create)
        return NULL;
    d = xcalloc(1, sizeof *d);
    d->key = xstrdup(key);
    d->last_used = now;
    sl_map_put(&ds->dests, key, d);
    return d;
}

bool snd_dest_may_connect(snd_dests *ds, const char *key, int64_t now)
{
    dest *d = find(ds, key, true, now);
    switch (d->state) {
    case SND_DEST_UP:
        return true;
    case SND_DEST_DOWN:
        if (now < d->down_until)
            return false;
        set_state(ds, d, SND_DEST_PROBING);
        return true;
    default:
        return false;
    }
}

bool snd_dest_blocked(snd_dests *ds, const char *key, int64_t now, const snd_result **why,
                      int64_t *until)
{
    dest *d = find(ds, key, false, now);
    if (!d || d->state != SND_DEST_DOWN || now >= d->down_until)
        return false;
    d->last_used = now;
    if (why)
        *why = &d->why;
    if (until)
        *until = d->down_until;
    return true;
}

void snd_dest_failed(snd_dests *ds, const char *key, const snd_result *why, int64_t now)
{
    dest *d = find(ds, key, true, now);
    if (d->state == SND_DEST_DOWN)
        return; /* a connection that was opening with the one that failed */
    d->failures++;
    int64_t base = ds->o.backoff_initial_ms;
    for (uint32_t i = 1; i < d->failures && base < ds->o.backoff_max_ms; i++)
        base *= 2;
    if (base > ds->o.backoff_max_ms)
        base = ds->o.backoff_max_ms;
    /* Jitter in [base/2, base]. */
    int64_t half = base / 2;
    int64_t delay = half + (half > 0 ? (int64_t)(sl_xorshift64s(&ds->rng) % (uint64_t)(half + 1)) : 0);
    if (delay <= 0)
        delay = 1;
    d->backoff_ms = delay;
    d->down_until = now + delay;
    snd_result_clear(&d->why);
    if (why)
        snd_result_copy(&d->why, why);
    set_state(ds, d, SND_DEST_DOWN);
}

void snd_dest_ok(snd_dests *ds, const char *key, int64_t now)
{
    dest *d = find(ds, key, true, now);
    d->failures = 0;
    d->backoff_ms = 0;
    d->down_until = 0;
    snd_result_clear(&d->why);
    set_state(ds, d, SND_DEST_UP);
}

void snd_dest_probe_abandoned(snd_dests *ds, const char *key, int64_t now)
{
    dest *d = find(ds, key, false, now);
    if (!d || d->state != SND_DEST_PROBING)
        return;
    d->down_until = now;
    set_state(ds, d, SND_DEST_DOWN);
}

snd_dest_state snd_dest_state_of(snd_dests *ds, const char *key)
{
    dest *d = find(ds, key, false, 0);
    return d ? d->state : SND_DEST_UP;
}

const snd_result *snd_dest_why(snd_dests *ds, const char *key)
{
    dest *d = find(ds, key, false, 0);
    return d && d->state != SND_DEST_UP && d->why.reply.code ? &d->why : NULL;
}

int64_t snd_dest_down_until(snd_dests *ds, const char *key)
{
    dest *d = find(ds, key, false, 0);
    return d && d->state != SND_DEST_UP ? d->down_until : 0;
}

void snd_dest_hold(snd_dests *ds, const char *key, int64_t now)
{
    find(ds, key, true, now)->held++;
}

void snd_dest_unhold(snd_dests *ds, const char *key, int64_t now)
{
    dest *d = find(ds, key, false, now);
    SL_ASSERT(d && d->held > 0);
    d->held--;
    d->last_used = now;
}

static void roll(dest *d, int64_t now)
{
    if (now - d->bucket_start < RATE_BUCKET_MS)
        return;
    d->prev_done = now - d->bucket_start < 2 * RATE_BUCKET_MS ? d->bucket_done : 0;
    d->bucket_done = 0;
    d->bucket_start = now - (now - d->bucket_start) % RATE_BUCKET_MS;
}

void snd_dest_done(snd_dests *ds, const char *key, int64_t now)
{
    dest *d = find(ds, key, true, now);
    roll(d, now);
    d->bucket_done++;
}

double snd_dest_rate(snd_dests *ds, const char *key, int64_t now)
{
    dest *d = find(ds, key, false, now);
    if (!d)
        return 0;
    roll(d, now);
    int64_t span = RATE_BUCKET_MS + (now - d->bucket_start);
    return (double)(d->prev_done + d->bucket_done) * 1000.0 / (double)span;
}

size_t snd_dest_held(snd_dests *ds, const char *key)
{
    dest *d = find(ds, key, false, 0);
    return d ? d->held : 0;
}

size_t snd_dests_count(const snd_dests *ds)
{
    return ds->dests.count;
}

size_t snd_dests_down(const snd_dests *ds)
{
    return ds->n_down;
}

typedef struct sweep {
    snd_dests *ds;
    int64_t now;
} sweep;

static bool sweep_drop(void *arg, void *val)
{
    sweep *sw = arg;
    snd_dests *ds = sw->ds;
    dest *d = val;
    int64_t quiet_since = d->last_used > d->down_until ? d->last_used : d->down_until;
    if (d->held != 0 || d->state == SND_DEST_PROBING || sw->now - quiet_since < ds->o.idle_ms)
        return false;
    if (d->state != SND_DEST_UP) {
        ds->n_down--;
        sl_metric_add("sluice_sender_destinations_down", NULL, -1);
    }
    dest_free(d);
    return true;
}

size_t snd_dests_sweep(snd_dests *ds, int64_t now)
{
    sweep sw = {ds, now};
    return sl_map_sweep(&ds->dests, sweep_drop, &sw);
}
