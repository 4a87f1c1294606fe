/*
 * control - see control.h.
 */
#include "control.h"
#include "log.h"
#include "map.h"
#include "reader.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

const char *sl_control_state(const sl_control *c)
{
    if (!c || c->action == SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_RESUME)
        return "active";
    if (c->action == SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_CANCEL)
        return "cancelled";
    return "suspended";
}

int sl_control_load(const sl_config *cfg, const char *key, sl_control **out, int timeout_ms,
                    char **err)
{
    char *topic = sl_config_topic(cfg, "control");
    sl_reader *r = sl_reader_new(cfg, topic, 0, err);
    free(topic);
    *out = NULL;
    if (!r)
        return SL_EKAFKA;
    int64_t deadline = sl_mono_ms() + timeout_ms;
    while (!sl_reader_at_end(r) && sl_mono_ms() < deadline) {
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m)
            continue;
        if (m->key && m->key_len == strlen(key) && !memcmp(m->key, key, m->key_len)) {
            sl_control_free(*out);
            *out = NULL;
            const char *why = NULL;
            if (m->payload && sl_control_decode(m->payload, m->len, out, &why) != 0)
                *out = NULL;
        }
        rd_kafka_message_destroy(m);
    }
    bool complete = sl_reader_at_end(r);
    sl_reader_free(r);
    if (!complete) {
        sl_control_free(*out);
        *out = NULL;
        return SL_ETIMEOUT;
    }
    return 0;
}

static bool final_type(int t)
{
    switch (t) {
    case SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED:
    case SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED:
    case SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED:
    case SLUICE__V1__EVENT_TYPE__EVENT_SUPPRESSED:
    case SLUICE__V1__EVENT_TYPE__EVENT_REJECTED:
    case SLUICE__V1__EVENT_TYPE__EVENT_CANCELLED: return true;
    default: return false;
    }
}

/* Per job: 1 seen, 2 has a final event. */
static int count_job(void *arg, const char *key, void *val)
{
    sl_campaign_counts *c = arg;
    (void)key;
    c->jobs++;
    if (!((uintptr_t)val & 2))
        c->queued++;
    return 0;
}

int sl_campaign_count(const sl_config *cfg, const char *tenant, const char *campaign,
                      sl_campaign_counts *out, int timeout_ms, char **err)
{
    memset(out, 0, sizeof *out);
    char *topic = sl_config_topic(cfg, "events");
    sl_reader *r = sl_reader_new(cfg, topic, 0, err);
    free(topic);
    if (!r)
        return SL_EKAFKA;
    const char *dflt = cfg->scheduler.default_tenant ? cfg->scheduler.default_tenant : "";
    sl_map seen, jobs;
    sl_map_init(&seen);
    sl_map_init(&jobs);
    int64_t deadline = sl_mono_ms() + timeout_ms;
    while (!sl_reader_at_end(r) && sl_mono_ms() < deadline) {
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m)
            continue;
        sl_event *e = NULL;
        const char *why = NULL;
        if (m->payload && sl_event_decode(m->payload, m->len, &e, &why) == 0) {
            const char *t = e->tenant && *e->tenant ? e->tenant : dflt;
            const char *id = e->job_id ? e->job_id : "";
            if (e->campaign && !strcmp(e->campaign, campaign) && !strcmp(t, tenant) && *id &&
                (unsigned)e->type < SL_EVENT_TYPES &&
                e->type != SLUICE__V1__EVENT_TYPE__EVENT_SHAPING) {
                char *k = xasprintf("%s\x1f%u\x1f%d", id, e->attempt, (int)e->type);
                if (!sl_map_get(&seen, k)) {
                    sl_map_put(&seen, k, (void *)1);
                    out->by[e->type]++;
                }
                free(k);
                uintptr_t flags = (uintptr_t)sl_map_get(&jobs, id) | 1;
                if (final_type(e->type))
                    flags |= 2;
                sl_map_put(&jobs, id, (void *)flags);
            }
            sl_event_free(e);
        }
        rd_kafka_message_destroy(m);
    }
    bool complete = sl_reader_at_end(r);
    sl_reader_free(r);
    sl_map_each(&jobs, count_job, out);
    sl_map_free(&seen);
    sl_map_free(&jobs);
    return complete ? 0 : SL_ETIMEOUT;
}
