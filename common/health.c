/*
 * health - see health.h. Heartbeats are a mutex-protected list that only
 * grows (retired ones stay, marked); the beat itself is an atomic store of
 * the monotonic clock, so beating never takes the lock.
 */
#include "health.h"
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct sl_beat {
    char *name;
    int64_t bound_ms;
    _Atomic int64_t last_ms;
    atomic_bool retired;
    uv_timer_t timer; /* sl_health_loop() only */
    struct sl_beat *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static sl_beat *beats;
static pthread_once_t stall_once = PTHREAD_ONCE_INIT;
static const char *stall_path;

static void stall_init(void)
{
    const char *p = getenv("SLUICE_DEBUG_STALL_FILE");
    stall_path = p && *p ? p : NULL;
}

/* The test hook (health.h). Reads the file on every beat, which is why it
 * exists only when the environment asks for it. */
static void stall_maybe(sl_beat *b)
{
    FILE *f = fopen(stall_path, "r");
    if (!f)
        return;
    char want[128] = "";
    if (!fgets(want, sizeof want, f))
        want[0] = 0;
    fclose(f);
    want[strcspn(want, "\r\n")] = 0;
    if (strncmp(b->name, want, strlen(want)))
        return;
    sl_warn("%s: stalled on purpose while %s exists (SLUICE_DEBUG_STALL_FILE)", b->name,
            stall_path);
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (access(stall_path, F_OK) == 0)
        nanosleep(&ts, NULL);
    sl_warn("%s: stall over", b->name);
}

sl_beat *sl_health_register(const char *name, int64_t bound_ms)
{
    pthread_once(&stall_once, stall_init);
    sl_beat *b = xcalloc(1, sizeof *b);
    b->name = xstrdup(name);
    b->bound_ms = bound_ms > 0 ? bound_ms : SL_HEALTH_TIMEOUT_MS;
    atomic_store(&b->last_ms, sl_mono_ms());
    pthread_mutex_lock(&mu);
    b->next = beats;
    beats = b;
    pthread_mutex_unlock(&mu);
    return b;
}

void sl_health_beat(sl_beat *b)
{
    if (stall_path)
        stall_maybe(b);
    atomic_store_explicit(&b->last_ms, sl_mono_ms(), memory_order_relaxed);
}

void sl_health_unregister(sl_beat *b)
{
    atomic_store(&b->retired, true);
}

static void loop_beat_cb(uv_timer_t *t)
{
    sl_health_beat(t->data);
}

sl_beat *sl_health_loop(uv_loop_t *loop, const char *name, int64_t bound_ms)
{
    sl_beat *b = sl_health_register(name, bound_ms);
    /* Several beats per bound, so one late timer never reads as a stall. */
    uint64_t every = (uint64_t)(b->bound_ms / 4);
    if (every > 1000)
        every = 1000;
    if (every < 1)
        every = 1;
    uv_timer_init(loop, &b->timer);
    b->timer.data = b;
    uv_timer_start(&b->timer, loop_beat_cb, every, every);
    uv_unref((uv_handle_t *)&b->timer);
    return b;
}

void sl_health_loop_stop(sl_beat *b)
{
    sl_health_unregister(b);
    if (!uv_is_closing((uv_handle_t *)&b->timer))
        uv_close((uv_handle_t *)&b->timer, NULL);
}

bool sl_health_report(sl_buf *out)
{
    bool ok = true;
    int64_t now = sl_mono_ms();
    sl_buf lines = SL_BUF_INIT;
    pthread_mutex_lock(&mu);
    for (sl_beat *b = beats; b; b = b->next) {
        if (atomic_load(&b->retired))
            continue;
        int64_t age = now - atomic_load_explicit(&b->last_ms, memory_order_relaxed);
        bool stale = age > b->bound_ms;
        ok &= !stale;
        sl_buf_printf(&lines, "%s: %s, last beat %.1f s ago (bound %.1f s)\n", b->name,
                      stale ? "STALLED" : "ok", (double)age / 1000, (double)b->bound_ms / 1000);
    }
    pthread_mutex_unlock(&mu);
    sl_buf_puts(out, ok ? "ok\n" : "stalled\n");
    sl_buf_append(out, lines.data ? lines.data : "", lines.len);
    sl_buf_free(&lines);
    return ok;
}
