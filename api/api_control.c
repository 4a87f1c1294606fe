/*
 * api_control - campaign and site control and the suppression endpoints
 * of sluice-api (see api.h and docs/api.md).
 *
 * Both only publish: a Control record on the compacted control topic (key
 * "campaign/TENANT/ID" or "site/NAME"), or a Suppression (or its
 * tombstone) on the compacted suppressions topic under "TENANT/ADDRESS",
 * the key `sluice suppress` uses and the scheduler's classify stage looks
 * up; POST /v1/suppressions imports a list at once. Every answer waits for Kafka's acknowledgement. GET of a
 * suppression reads the suppressions topic to its end (the newest record
 * of the key wins), as `sluice suppress list` does: fine for an operator's
 * question, not for a hot path.
 */
#include "api.h"
#include "api_suppress.h"
#include "control.h"
#include "kafka.h"
#include "map.h"
#include "metrics.h"
#include "reader.h"
#include "wire.h"

#include "sluice/v1/state.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ack {
    bool done;
    int err;
} ack;

static void on_ack(void *arg, int err)
{
    ack *k = arg;
    k->err = err;
    k->done = true;
}

int api_publish(api_ctx *a, const char *suffix, const char *key, const sl_buf *val)
{
    char *topic = sl_config_topic(a->cfg, suffix);
    ack k = {0};
    pthread_mutex_lock(&a->prod_mu);
    int rc = sl_producer_send(a->prod, topic, key, strlen(key), val ? val->data : NULL,
                              val ? val->len : 0, NULL, 0, on_ack, &k);
    int64_t deadline = sl_mono_ms() + a->cfg->api.ack_timeout_ms;
    while (!rc && !k.done && sl_mono_ms() < deadline)
        sl_producer_poll(a->prod, 10);
    if (!rc && !k.done) {
        /* The callback still points at k: wait it out rather than return
         * (the producer retries until its own message timeout). */
        while (!k.done)
            sl_producer_poll(a->prod, 100);
        rc = SL_ETIMEOUT;
    } else if (!rc) {
        rc = k.err;
    }
    pthread_mutex_unlock(&a->prod_mu);
    free(topic);
    return rc;
}

/* The reason from an optional {"reason": "..."} body. */
static int reason_of(const char *body, size_t len, char **out, api_reply *r)
{
    *out = NULL;
    if (len == 0)
        return 0;
    json_error_t e;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (!j || !json_is_object(j)) {
        api_problem(r, 400, NULL, "the body is not a JSON object");
        json_decref(j);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        if (strcmp(k, "reason") != 0) {
            api_problem(r, 400, k, "%s: unknown field", k);
            json_decref(j);
            return -1;
        }
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
            strpbrk(json_string_value(v), "\r\n") || json_string_length(v) > 256) {
            api_problem(r, 400, "reason", "reason: a line of at most 256 characters");
            json_decref(j);
            return -1;
        }
        *out = xstrdup(json_string_value(v));
    }
    json_decref(j);
    return 0;
}

static bool valid_name(const char *s)
{
    if (!*s || strlen(s) > 255)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 32 || *s == 127 || *s == '/')
            return false;
    return true;
}

void api_control_post(api_ctx *a, api_key *key, bool site, const char *target,
                      const char *action, const char *body, size_t len, api_reply *r)
{
    Sluice__V1__ControlAction act;
    if (!strcmp(action, "suspend"))
        act = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_SUSPEND;
    else if (!strcmp(action, "resume"))
        act = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_RESUME;
    else if (!strcmp(action, "cancel") && !site)
        act = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_CANCEL;
    else if (!strcmp(action, "purge") && site)
        act = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_PURGE;
    else {
        api_problem(r, 404, NULL, "no such action: %s (%s)", action,
                    site ? "suspend, resume, purge" : "suspend, resume, cancel");
        return;
    }
    if (!valid_name(target)) {
        api_problem(r, 400, site ? "site" : "campaign", "%s: 1-255 printable characters",
                    site ? "site" : "campaign");
        return;
    }
    if (site && !key->admin) {
        api_problem(r, 403, NULL, "sites are shared by every tenant: this key may not control "
                                  "them (admin=yes in the keys file)");
        return;
    }
    char *reason = NULL;
    if (reason_of(body, len, &reason, r))
        return;
    Sluice__V1__Control c = SLUICE__V1__CONTROL__INIT;
    c.version = SLUICE_WIRE_VERSION;
    c.scope = site ? SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_SITE
                   : SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_CAMPAIGN;
    c.tenant = key->tenant;
    c.target = (char *)target;
    c.action = act;
    c.at_ms = sl_now_ms();
    c.reason = reason ? reason : "";
    c.origin = "api";
    sl_buf b = SL_BUF_INIT;
    sl_pack(&c.base, &b);
    char *k = sl_control_record_key(&c);
    int rc = api_publish(a, "control", k, &b);
    if (rc) {
        api_problem(r, 503, NULL, "Kafka did not take the control record: %s", sl_strerror(rc));
        r->retry_after = 1;
    } else {
        r->status = 202;
        r->body = json_pack("{s:s, s:s, s:s, s:s, s:I}", "scope", site ? "site" : "campaign",
                            "target", target, "action", action, "tenant", key->tenant, "at_ms",
                            (json_int_t)c.at_ms);
        char labels[64];
        snprintf(labels, sizeof labels, "scope=\"%s\",action=\"%s\"", site ? "site" : "campaign",
                 action);
        sl_metric_inc("sluice_api_control_total", labels, 1);
    }
    free(k);
    free(reason);
    sl_buf_free(&b);
}

void api_campaign_get(api_ctx *a, api_key *key, const char *campaign, api_reply *r)
{
    if (!valid_name(campaign)) {
        api_problem(r, 400, "campaign", "campaign: 1-255 printable characters");
        return;
    }
    char *k = sl_control_key(false, key->tenant, campaign);
    sl_control *c = NULL;
    sl_campaign_counts n;
    char *err = NULL;
    int timeout = (int)a->cfg->api.ack_timeout_ms;
    int rc = sl_control_load(a->cfg, k, &c, timeout, &err);
    const char *what = "control";
    if (!rc) {
        what = "events";
        rc = sl_campaign_count(a->cfg, key->tenant, campaign, &n, timeout, &err);
    }
    free(k);
    if (rc) {
        api_problem(r, 503, NULL, "could not read the %s topic: %s", what,
                    err ? err : sl_strerror(rc));
        r->retry_after = 1;
        free(err);
        sl_control_free(c);
        return;
    }
    json_t *counts = json_object();
    json_object_set_new(counts, "jobs", json_integer((json_int_t)n.jobs));
    json_object_set_new(counts, "queued", json_integer((json_int_t)n.queued));
    for (int t = 1; strcmp(sl_event_type_name((Sluice__V1__EventType)t), "UNKNOWN"); t++)
        if (t != SLUICE__V1__EVENT_TYPE__EVENT_SHAPING) {
            char *name = xstrdup(sl_event_type_name((Sluice__V1__EventType)t));
            sl_lower(name);
            json_object_set_new(counts, name, json_integer((json_int_t)n.by[t]));
            free(name);
        }
    r->status = 200;
    r->body = json_pack("{s:s, s:s, s:s, s:o}", "tenant", key->tenant, "campaign", campaign,
                        "state", sl_control_state(c), "counts", counts);
    if (c) {
        json_object_set_new(r->body, "since_ms", json_integer(c->at_ms));
        json_object_set_new(r->body, "reason", json_string(c->reason ? c->reason : ""));
    }
    sl_control_free(c);
}

static const char *const pair_states[] = {"normal", "throttled", "suspended", "disabled"};

static int state_free_cb(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    sluice__v1__site_state__free_unpacked(val, NULL);
    return 0;
}

static int site_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void api_shaping_get(api_ctx *a, api_key *key, api_reply *r)
{
    if (!key->admin) {
        api_problem(r, 403, NULL, "sites are shared by every tenant: this key may not read "
                                  "their shaping state (admin=yes in the keys file)");
        return;
    }
    char *topic = sl_config_topic(a->cfg, "state");
    char *err = NULL;
    sl_reader *rd = sl_reader_new(a->cfg, topic, 0, &err);
    free(topic);
    if (!rd) {
        api_problem(r, 503, NULL, "could not read the state topic: %s", err);
        r->retry_after = 1;
        free(err);
        return;
    }
    /* The newest record of each site (the dev broker does not compact). */
    sl_map sites;
    sl_map_init(&sites);
    int64_t deadline = sl_mono_ms() + a->cfg->api.ack_timeout_ms;
    while (!sl_reader_at_end(rd) && sl_mono_ms() < deadline) {
        rd_kafka_message_t *m = sl_reader_next(rd, 100);
        if (!m)
            continue;
        if (m->key && m->key_len) {
            char *k = xstrndup(m->key, m->key_len);
            Sluice__V1__SiteState *st =
                m->payload ? sluice__v1__site_state__unpack(NULL, m->len, m->payload) : NULL;
            Sluice__V1__SiteState *old = st ? sl_map_put(&sites, k, st) : sl_map_del(&sites, k);
            if (old)
                sluice__v1__site_state__free_unpacked(old, NULL);
            free(k);
        }
        rd_kafka_message_destroy(m);
    }
    bool complete = sl_reader_at_end(rd);
    sl_reader_free(rd);
    if (!complete) {
        api_problem(r, 503, NULL, "the state topic was not read to its end in time");
        r->retry_after = 1;
    } else {
        const char **names = xcalloc(sites.count + 1, sizeof *names);
        size_t n = 0;
        for (size_t i = 0; i < sites.n_slots; i++)
            for (sl_map_ent *e = sites.slots[i]; e; e = e->next)
                names[n++] = e->key;
        qsort(names, n, sizeof *names, site_cmp);
        json_t *list = json_array();
        int64_t today = sl_now_ms() / 86400000;
        for (size_t i = 0; i < n; i++) {
            const Sluice__V1__SiteState *st = sl_map_get(&sites, names[i]);
            json_t *srcs = json_array();
            for (size_t k = 0; k < st->n_pairs; k++) {
                const Sluice__V1__PairState *p = st->pairs[k];
                unsigned s = (unsigned)p->state < 4 ? (unsigned)p->state : 0;
                json_t *o = json_pack("{s:s, s:s, s:f, s:I}", "source_ip",
                                      p->source_ip ? p->source_ip : "", "state",
                                      pair_states[s], "rate_per_sec", p->rate, "sent_today",
                                      (json_int_t)(p->day == today ? p->sent_today : 0));
                if (s >= 2) {
                    json_object_set_new(o, "until_ms", json_integer(p->until_ms));
                    json_object_set_new(o, "cause", json_string(p->down ? "destination-down"
                                                                        : "backoff-rule"));
                }
                json_array_append_new(srcs, o);
            }
            json_array_append_new(list, json_pack("{s:s, s:I, s:o}", "site", names[i],
                                                  "updated_at_ms",
                                                  (json_int_t)st->updated_at_ms, "sources",
                                                  srcs));
        }
        free(names);
        r->status = 200;
        r->body = json_pack("{s:o}", "sites", list);
    }
    sl_map_each(&sites, state_free_cb, NULL);
    sl_map_free(&sites);
}

typedef struct acks {
    size_t pending, failed;
} acks;

static void on_bulk_ack(void *arg, int err)
{
    acks *k = arg;
    k->pending--;
    if (err)
        k->failed++;
}

void api_suppressions_import(api_ctx *a, api_key *key, const char *body, size_t len,
                             api_reply *r)
{
    json_error_t e;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    json_t *list = j ? json_object_get(j, "addresses") : NULL;
    const char *reason = "import";
    const char *k;
    json_t *v;
    if (!j || !json_is_object(j)) {
        api_problem(r, 400, NULL, "the body is not a JSON object");
        goto out;
    }
    json_object_foreach(j, k, v)
    {
        if (strcmp(k, "addresses") && strcmp(k, "reason")) {
            api_problem(r, 400, k, "%s: unknown field", k);
            goto out;
        }
    }
    json_t *jr = json_object_get(j, "reason");
    if (jr) {
        if (!json_is_string(jr) || strpbrk(json_string_value(jr), "\r\n") ||
            strlen(json_string_value(jr)) != json_string_length(jr) || json_string_length(jr) > 256) {
            api_problem(r, 400, "reason", "reason: a line of at most 256 characters");
            goto out;
        }
        reason = json_string_value(jr);
    }
    size_t n = json_is_array(list) ? json_array_size(list) : 0;
    if (n == 0 || n > 100000) {
        api_problem(r, 400, "addresses", "addresses: an array of 1 to 100000 addresses");
        goto out;
    }
    /* Every address is checked before anything is published. */
    char **keys = xcalloc(n, sizeof *keys);
    char **addrs = xcalloc(n, sizeof *addrs);
    size_t bad = n;
    for (size_t i = 0; i < n && bad == n; i++) {
        json_t *x = json_array_get(list, i);
        char norm[SLUICE_ADDRESS_MAX + 1], why[256];
        if (!json_is_string(x) ||
            sluice_address_normalize(json_string_value(x), norm, why, sizeof why)) {
            api_problem(r, 400, "addresses", "addresses[%zu]: %s", i,
                        json_is_string(x) ? why : "not a string");
            bad = i;
            break;
        }
        sl_lower(norm);
        addrs[i] = xstrdup(norm);
        keys[i] = xasprintf("%s/%s", key->tenant, norm);
    }
    if (bad == n) {
        char *topic = sl_config_topic(a->cfg, "suppressions");
        acks ak = {0};
        sl_buf b = SL_BUF_INIT;
        int64_t now = sl_now_ms();
        pthread_mutex_lock(&a->prod_mu);
        for (size_t i = 0; i < n; i++) {
            sl_suppression s = SLUICE__V1__SUPPRESSION__INIT;
            s.version = SLUICE_WIRE_VERSION;
            s.tenant = key->tenant;
            s.address = addrs[i];
            s.reason = (char *)reason;
            s.created_at_ms = now;
            sl_pack(&s.base, &b);
            ak.pending++;
            if (sl_producer_send(a->prod, topic, keys[i], strlen(keys[i]), b.data, b.len, NULL,
                                 0, on_bulk_ack, &ak) != 0) {
                ak.pending--;
                ak.failed++;
            }
        }
        /* The callbacks point at ak: wait for every one of them. */
        while (ak.pending)
            sl_producer_poll(a->prod, 10);
        pthread_mutex_unlock(&a->prod_mu);
        sl_buf_free(&b);
        free(topic);
        if (ak.failed) {
            api_problem(r, 503, NULL, "Kafka did not take %zu of %zu records: retry the import",
                        ak.failed, n);
            r->retry_after = 1;
        } else {
            for (size_t i = 0; i < n; i++)
                api_suppress_put(a->supp, key->tenant, addrs[i], true);
            r->status = 200;
            r->body = json_pack("{s:s, s:I, s:s}", "tenant", key->tenant, "suppressed",
                                (json_int_t)n, "reason", reason);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        free(addrs[i]);
    }
    free(keys);
    free(addrs);
out:
    json_decref(j);
}

/* The suppression of key, read from the topic: 1 found (reason in *out),
 * 0 not, or a negative error. */
static int suppression_lookup(api_ctx *a, const char *key, char **out)
{
    char *topic = sl_config_topic(a->cfg, "suppressions");
    char *err = NULL;
    sl_reader *rd = sl_reader_new(a->cfg, topic, 0, &err);
    free(topic);
    if (!rd) {
        free(err);
        return SL_EKAFKA;
    }
    *out = NULL;
    int found = 0;
    int64_t deadline = sl_mono_ms() + a->cfg->api.ack_timeout_ms;
    while (!sl_reader_at_end(rd) && sl_mono_ms() < deadline) {
        rd_kafka_message_t *m = sl_reader_next(rd, 100);
        if (!m)
            continue;
        if (m->key && m->key_len == strlen(key) && !memcmp(m->key, key, m->key_len)) {
            free(*out);
            *out = NULL;
            found = 0;
            sl_suppression *s = NULL;
            const char *why;
            if (m->payload && sl_suppression_decode(m->payload, m->len, &s, &why) == 0) {
                *out = xstrdup(s->reason ? s->reason : "");
                found = 1;
                sl_suppression_free(s);
            }
        }
        rd_kafka_message_destroy(m);
    }
    bool complete = sl_reader_at_end(rd);
    sl_reader_free(rd);
    if (!complete) {
        free(*out);
        *out = NULL;
        return SL_ETIMEOUT;
    }
    return found;
}

void api_suppression(api_ctx *a, api_key *key, const char *method, const char *address,
                     const char *body, size_t len, api_reply *r)
{
    char norm[SLUICE_ADDRESS_MAX + 1], why[256];
    if (sluice_address_normalize(address, norm, why, sizeof why)) {
        api_problem(r, 400, "address", "address \"%s\": %s", address, why);
        return;
    }
    /* The key of `sluice suppress`: the whole address lower-cased. */
    sl_lower(norm);
    char *k = xasprintf("%s/%s", key->tenant, norm);
    if (!strcmp(method, "GET")) {
        char *reason = NULL;
        int rc = suppression_lookup(a, k, &reason);
        if (rc < 0) {
            api_problem(r, 503, NULL, "could not read the suppressions: %s", sl_strerror(rc));
            r->retry_after = 1;
        } else if (rc == 0) {
            api_problem(r, 404, NULL, "%s is not suppressed for tenant %s", norm, key->tenant);
        } else {
            r->status = 200;
            r->body = json_pack("{s:s, s:s, s:s}", "tenant", key->tenant, "address", norm,
                                "reason", reason);
        }
        free(reason);
    } else if (!strcmp(method, "PUT") || !strcmp(method, "DELETE")) {
        bool put = method[0] == 'P';
        char *reason = NULL;
        if (put && reason_of(body, len, &reason, r)) {
            free(k);
            return;
        }
        sl_buf b = SL_BUF_INIT;
        sl_suppression s = SLUICE__V1__SUPPRESSION__INIT;
        if (put) {
            s.version = SLUICE_WIRE_VERSION;
            s.tenant = key->tenant;
            s.address = norm;
            s.reason = reason ? reason : "manual";
            s.created_at_ms = sl_now_ms();
            sl_pack(&s.base, &b);
        }
        int rc = api_publish(a, "suppressions", k, put ? &b : NULL);
        if (rc) {
            api_problem(r, 503, NULL, "Kafka did not take the record: %s", sl_strerror(rc));
            r->retry_after = 1;
        } else if (put) {
            api_suppress_put(a->supp, key->tenant, norm, true);
            r->status = 200;
            r->body = json_pack("{s:s, s:s, s:s}", "tenant", key->tenant, "address", norm,
                                "reason", s.reason);
        } else {
            api_suppress_put(a->supp, key->tenant, norm, false);
            r->status = 204;
        }
        free(reason);
        sl_buf_free(&b);
    } else {
        api_problem(r, 405, NULL, "/v1/suppressions/ADDRESS: GET, PUT or DELETE");
    }
    free(k);
}
