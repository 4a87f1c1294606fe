/*
 * sched_control - see sched_control.h.
 */
#include "sched_control.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "reader.h"

#include <stdlib.h>
#include <string.h>

/* One control in force. */
typedef struct centry {
    bool site;
    Sluice__V1__ControlAction action; /* SUSPEND, CANCEL or PURGE */
    int64_t at_ms;                    /* PURGE: jobs created before it */
    char *why;                        /* "campaign acme/spring cancelled (cli: wrong list)" */
} centry;

struct sched_control {
    sched_ctx *ctx;
    sl_map in_force; /* key -> centry */
    sl_reader *reader; /* NULL in tests */
    uv_timer_t timer;
    bool loaded;
    void (*on_change)(void *arg);
    void *arg;
};

/* Records read per timer tick; the timer comes back at once while there
 * is more. */
#define DRAIN_BATCH 2000

static void centry_free(centry *e)
{
    if (e) {
        free(e->why);
        free(e);
    }
}

static void count_metrics(sched_control *c)
{
    size_t n[2][2] = {{0}}; /* [site][cancel or purge] */
    for (size_t i = 0; i < c->in_force.n_slots; i++)
        for (sl_map_ent *m = c->in_force.slots[i]; m; m = m->next) {
            const centry *e = m->val;
            n[e->site][e->action != SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_SUSPEND]++;
        }
    sl_metric_set("sluice_control_in_force", "scope=\"campaign\",action=\"suspend\"",
                  (double)n[0][0]);
    sl_metric_set("sluice_control_in_force", "scope=\"campaign\",action=\"cancel\"",
                  (double)n[0][1]);
    sl_metric_set("sluice_control_in_force", "scope=\"site\",action=\"suspend\"",
                  (double)n[1][0]);
    sl_metric_set("sluice_control_in_force", "scope=\"site\",action=\"purge\"",
                  (double)n[1][1]);
}

static bool lift(sched_control *c, const char *key)
{
    centry *old = sl_map_del(&c->in_force, key);
    centry_free(old);
    return old != NULL;
}

bool sched_control_apply(sched_control *c, const char *key, const void *val, size_t len)
{
    if (!val)
        return lift(c, key);
    sl_control *ctl = NULL;
    const char *why = NULL;
    if (sl_control_decode(val, len, &ctl, &why) != 0) {
        sl_warn("control: ignoring record %s: %s", key, why);
        return false;
    }
    bool changed = false;
    bool site = ctl->scope == SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_SITE;
    if (!site && ctl->scope != SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_CAMPAIGN) {
        sl_warn("control: ignoring record %s: no scope", key);
        goto out;
    }
    /* The key is what compaction keeps one of: it must be the record's own,
     * or a later record under the right key would not replace this one. */
    char *want = sl_control_record_key(ctl);
    bool same = !strcmp(want, key);
    free(want);
    if (!same || !ctl->target || !*ctl->target) {
        sl_warn("control: ignoring record %s: its key does not name its scope and target", key);
        goto out;
    }
    switch (ctl->action) {
    case SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_RESUME:
        changed = lift(c, key);
        sl_info("control: %s resumed (%s%s%s)", key, ctl->origin ? ctl->origin : "",
                ctl->reason && *ctl->reason ? ": " : "", ctl->reason ? ctl->reason : "");
        break;
    case SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_PURGE: {
        if (!site) {
            sl_warn("control: ignoring record %s: only a site can be purged", key);
            break;
        }
        const centry *old = sl_map_get(&c->in_force, key);
        changed = !old || old->at_ms != ctl->at_ms;
        centry *e = xcalloc(1, sizeof *e);
        e->site = true;
        e->action = ctl->action;
        e->at_ms = ctl->at_ms;
        e->why = xasprintf("site %s purged (%s%s%s)", key + 11,
                           ctl->origin && *ctl->origin ? ctl->origin : "control",
                           ctl->reason && *ctl->reason ? ": " : "",
                           ctl->reason ? ctl->reason : "");
        centry_free(sl_map_put(&c->in_force, key, e));
        if (changed)
            sl_info("control: %s: jobs created before %lld", e->why, (long long)e->at_ms);
        break;
    }
    case SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_CANCEL:
        if (site) {
            sl_warn("control: ignoring record %s: a site cannot be cancelled", key);
            break;
        }
        /* fall through */
    case SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_SUSPEND: {
        bool cancel = ctl->action == SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_CANCEL;
        const centry *old = sl_map_get(&c->in_force, key);
        changed = !old || old->action != ctl->action;
        centry *e = xcalloc(1, sizeof *e);
        e->site = site;
        e->action = ctl->action;
        e->why = xasprintf("%s %s %s (%s%s%s)", site ? "site" : "campaign",
                           key + (site ? 5 : 9), cancel ? "cancelled" : "suspended",
                           ctl->origin && *ctl->origin ? ctl->origin : "control",
                           ctl->reason && *ctl->reason ? ": " : "",
                           ctl->reason ? ctl->reason : "");
        centry_free(sl_map_put(&c->in_force, key, e));
        if (changed)
            sl_info("control: %s", e->why);
        break;
    }
    default:
        sl_warn("control: ignoring record %s: unknown action %d", key, (int)ctl->action);
        break;
    }
out:
    sl_control_free(ctl);
    if (changed)
        count_metrics(c);
    return changed;
}

static void drain_cb(uv_timer_t *t)
{
    sched_control *c = t->data;
    int n = 0;
    bool changed = false;
    rd_kafka_message_t *m;
    while (n < DRAIN_BATCH && (m = sl_reader_next(c->reader, 0))) {
        if (m->key && m->key_len) {
            char *key = xstrndup(m->key, m->key_len);
            changed |= sched_control_apply(c, key, m->payload, m->len);
            free(key);
        }
        rd_kafka_message_destroy(m);
        n++;
    }
    if (!c->loaded && sl_reader_at_end(c->reader)) {
        c->loaded = true;
        changed = true;
        sl_info("control: loaded, %zu in force", c->in_force.count);
    }
    if (changed && c->loaded && c->on_change)
        c->on_change(c->arg);
    uv_timer_start(&c->timer, drain_cb, n == DRAIN_BATCH ? 0 : 200, 0);
}

sched_control *sched_control_new(sched_ctx *ctx, char **err)
{
    sched_control *c = xcalloc(1, sizeof *c);
    c->ctx = ctx;
    sl_map_init(&c->in_force);
    sl_metric_help("sluice_control_in_force", SL_METRIC_GAUGE,
                   "Campaign and site controls in force (sluice.control), by scope and action");
    count_metrics(c);
    if (!ctx->loop) {
        c->loaded = true;
        return c;
    }
    char *topic = sl_config_topic(ctx->cfg, "control");
    c->reader = sl_reader_new(ctx->cfg, topic, 0, err);
    free(topic);
    if (!c->reader) {
        sl_map_free(&c->in_force);
        free(c);
        return NULL;
    }
    uv_timer_init(ctx->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, drain_cb, 0, 0);
    return c;
}

bool sched_control_loaded(const sched_control *c)
{
    return c->loaded;
}

void sched_control_on_change(sched_control *c, void (*cb)(void *arg), void *arg)
{
    c->on_change = cb;
    c->arg = arg;
}

sched_control_verdict sched_control_job(const sched_control *c, const char *tenant,
                                        const char *campaign, const char *site,
                                        int64_t created_ms, const char **why)
{
    if (!c->in_force.count)
        return SCHED_CONTROL_GO;
    const centry *ce = NULL, *se = NULL;
    if (site && *site) {
        char *k = xasprintf("purge/site/%s", site);
        const centry *pe = sl_map_get(&c->in_force, k);
        free(k);
        if (pe && created_ms < pe->at_ms) {
            if (why)
                *why = pe->why;
            return SCHED_CONTROL_CANCEL;
        }
    }
    if (campaign && *campaign) {
        char *k = sl_control_key(false, tenant ? tenant : "", campaign);
        ce = sl_map_get(&c->in_force, k);
        free(k);
    }
    if (ce && ce->action == SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_CANCEL) {
        if (why)
            *why = ce->why;
        return SCHED_CONTROL_CANCEL;
    }
    if (!ce && site && *site) {
        char *k = sl_control_key(true, NULL, site);
        se = sl_map_get(&c->in_force, k);
        free(k);
    }
    if (ce || se) {
        if (why)
            *why = (ce ? ce : se)->why;
        return SCHED_CONTROL_HOLD;
    }
    return SCHED_CONTROL_GO;
}

size_t sched_control_count(const sched_control *c)
{
    return c->in_force.count;
}

static int free_cb(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    centry_free(val);
    return 0;
}

static void close_cb(uv_handle_t *h)
{
    free(h->data);
}

void sched_control_free(sched_control *c)
{
    if (!c)
        return;
    sl_map_each(&c->in_force, free_cb, NULL);
    sl_map_free(&c->in_force);
    if (c->reader) {
        sl_reader_free(c->reader);
        uv_close((uv_handle_t *)&c->timer, close_cb);
    } else {
        free(c);
    }
}
