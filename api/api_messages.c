/*
 * api_messages - POST /v1/messages: validate the request, build each
 * recipient's job, publish through libsluice and answer once Kafka has
 * acknowledged every job (see api.h and docs/api.md).
 *
 * Each recipient is one job (one sluice_send() of one recipient), so each
 * gets its own job id, substitutions and metadata, and a bad recipient is
 * reported alone while the others go out. With an Idempotency-Key the job
 * ids are derived from (tenant, key, SHA-256 of the body, recipient index):
 * a retry of the same request answers the same ids. Once every job is
 * acknowledged, the request is recorded on the idempotency topic
 * (api_idem.h) before the 202: a retry that finds the record, on any
 * instance, is answered from it and publishes nothing; the same key with
 * another body is 422. Before the record exists (a 503 half way), the
 * derived ids Kafka acknowledged are remembered here (the newest IDEM_MAX
 * of them, under api_ctx.mu), so a retry that reaches the same instance
 * publishes only what was not acknowledged; another instance publishes
 * the same jobs again under the same ids.
 *
 * The body's hash is part of the derivation (not only tenant, key and
 * index) so that two different bodies racing under one key before either
 * is recorded never share a job id: the sender's ledger would otherwise
 * drop one of two different messages as a repeat of the other.
 */
#include "api.h"
#include "api_idem.h"
#include "api_mime.h"
#include "api_suppress.h"
#include "template.h"

#include "log.h"
#include "map.h"
#include "metrics.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct rcpt_result {
    char *address; /* as normalised, or as given when invalid */
    char job_id[65];
    char *error; /* NULL: published */
    bool done;
} rcpt_result;

/* A request's jobs in flight. Freed by the request, or by the last
 * callback when the request gave up waiting (abandoned). Under api_ctx.mu. */
typedef struct batch {
    rcpt_result *res;
    size_t n;
    size_t pending;
    bool abandoned;
    pthread_cond_t *acked; /* api_ctx.acked: broadcast when pending reaches 0 */
} batch;

typedef struct job_arg {
    batch *b;
    size_t i;
    bool derived; /* an Idempotency-Key's id: remembered once acknowledged */
} job_arg;

/* The derived job ids Kafka acknowledged, the newest IDEM_MAX of them: a
 * ring of the ids (oldest evicted first) and a map for the look-up. About
 * 100 octets an id. Under api_ctx.mu. */
#define IDEM_MAX 200000
static sl_map idem_acked;
static char *idem_ring[IDEM_MAX];
static size_t idem_next;

static void idem_remember(const char *id)
{
    if (!idem_acked.slots)
        sl_map_init(&idem_acked);
    if (sl_map_get(&idem_acked, id))
        return;
    if (idem_ring[idem_next]) {
        sl_map_del(&idem_acked, idem_ring[idem_next]);
        free(idem_ring[idem_next]);
    }
    idem_ring[idem_next] = xstrdup(id);
    sl_map_put(&idem_acked, id, (void *)1);
    idem_next = (idem_next + 1) % IDEM_MAX;
}

static bool idem_known(const char *id)
{
    return idem_acked.slots && sl_map_get(&idem_acked, id);
}

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->res[i].address);
        free(b->res[i].error);
    }
    free(b->res);
    free(b);
}

static void on_result(void *arg, const sluice_job_result *jr)
{
    job_arg *ja = arg;
    batch *b = ja->b;
    rcpt_result *r = &b->res[ja->i];
    snprintf(r->job_id, sizeof r->job_id, "%s", jr->job_id);
    if (jr->err)
        r->error = xasprintf("not published: %s", sluice_strerror(jr->err));
    else if (ja->derived)
        idem_remember(jr->job_id);
    r->done = true;
    free(ja);
    if (--b->pending == 0) {
        if (b->abandoned)
            batch_free(b);
        else
            pthread_cond_broadcast(b->acked);
    }
}

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* 26 Crockford base32 characters from the first 130 bits of a SHA-256:
 * the shape of a sluice job id, not time-sortable. */
static void derived_job_id(const char *tenant, const char *idem, const unsigned char body[32],
                           size_t i, char out[27])
{
    sl_buf s = SL_BUF_INIT;
    sl_buf_printf(&s, "sluice-api/v1%c%s%c%s%c", 0, tenant, 0, idem, 0);
    sl_buf_append(&s, body, 32);
    sl_buf_printf(&s, "%c%zu", 0, i);
    unsigned char h[32];
    unsigned int hl = 32;
    EVP_Digest(s.data, s.len, h, &hl, EVP_sha256(), NULL);
    sl_buf_free(&s);
    for (int k = 0; k < 26; k++) {
        int v = 0;
        for (int bit = 0; bit < 5; bit++) {
            int pos = k * 5 + bit;
            v = (v << 1) | ((h[pos / 8] >> (7 - pos % 8)) & 1);
        }
        out[k] = crockford[v];
    }
    out[26] = 0;
}

/* Unknown fields are refused, naming the first. */
static int check_keys(json_t *o, const char *path, const char *const *allowed, size_t n,
                      api_reply *r)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        size_t i = 0;
        while (i < n && strcmp(allowed[i], k))
            i++;
        if (i == n) {
            api_problem(r, 400, NULL, "%s%s%s: unknown field", path, *path ? "." : "", k);
            json_t *f = json_sprintf("%s%s%s", path, *path ? "." : "", k);
            json_object_set_new(r->body, "field", f);
            return -1;
        }
    }
    return 0;
}

/* A string field or NULL when absent; -1 (with the reply) when not a
 * string. */
static int get_str(json_t *o, const char *key, const char *path, const char **out, api_reply *r)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        char f[128];
        snprintf(f, sizeof f, "%s%s%s", path, *path ? "." : "", key);
        api_problem(r, 400, f, "%s: must be a string", f);
        return -1;
    }
    *out = json_string_value(v);
    if (strlen(*out) != json_string_length(v)) {
        char f[128];
        snprintf(f, sizeof f, "%s%s%s", path, *path ? "." : "", key);
        api_problem(r, 400, f, "%s: contains NUL", f);
        return -1;
    }
    return 0;
}

/* A map of strings into kv pairs (borrowed from the JSON). */
static int get_map(json_t *o, const char *key, const char *path, sluice_kv **out, size_t *n,
                   api_reply *r)
{
    json_t *m = json_object_get(o, key);
    *out = NULL;
    *n = 0;
    if (!m || json_is_null(m))
        return 0;
    char f[160];
    snprintf(f, sizeof f, "%s.%s", path, key);
    if (!json_is_object(m)) {
        api_problem(r, 400, f, "%s: must be an object of strings", f);
        return -1;
    }
    *out = xcalloc(json_object_size(m) + 1, sizeof **out);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            free(*out);
            *out = NULL;
            api_problem(r, 400, f, "%s.%s: must be a string without NUL", f, k);
            return -1;
        }
        (*out)[*n].key = k;
        (*out)[*n].value = json_string_value(v);
        (*n)++;
    }
    return 0;
}

typedef struct render_ctx {
    const sluice_kv *vars;
    size_t n;
    const char *to;
} render_ctx;

static bool lookup(void *arg, const char *name, const char **value, size_t *len)
{
    render_ctx *c = arg;
    if (!strcmp(name, API_MIME_TO_VAR)) {
        *value = c->to;
        *len = strlen(c->to);
        return true;
    }
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->vars[i].key, name)) {
            *value = c->vars[i].value;
            *len = strlen(*value);
            return true;
        }
    return false;
}

/* The inline content as a compiled template, or NULL with the reply. */
static sl_tmpl *inline_template(json_t *content, const char *sender, api_reply *r)
{
    static const char *const keys[] = {"from_name", "subject", "text",
                                       "html",      "headers", "attachments"};
    if (!json_is_object(content)) {
        api_problem(r, 400, "content", "content: must be an object");
        return NULL;
    }
    if (check_keys(content, "content", keys, 6, r))
        return NULL;
    api_mime m = {.from = sender};
    if (get_str(content, "from_name", "content", &m.from_name, r) ||
        get_str(content, "subject", "content", &m.subject, r) ||
        get_str(content, "text", "content", &m.text, r) ||
        get_str(content, "html", "content", &m.html, r))
        return NULL;
    sluice_kv *hdrs = NULL;
    size_t n_hdrs = 0;
    if (get_map(content, "headers", "content", &hdrs, &n_hdrs, r))
        return NULL;
    json_t *atts = json_object_get(content, "attachments");
    api_attachment *att = NULL;
    sl_tmpl *t = NULL;
    if (atts && !json_is_array(atts)) {
        api_problem(r, 400, "content.attachments", "content.attachments: must be an array");
        goto out;
    }
    m.n_att = atts ? json_array_size(atts) : 0;
    att = xcalloc(m.n_att + 1, sizeof *att);
    for (size_t i = 0; i < m.n_att; i++) {
        static const char *const akeys[] = {"filename", "content_type", "content"};
        json_t *a = json_array_get(atts, i);
        char path[64];
        snprintf(path, sizeof path, "content.attachments[%zu]", i);
        if (!json_is_object(a)) {
            api_problem(r, 400, path, "%s: must be an object", path);
            goto out;
        }
        if (check_keys(a, path, akeys, 3, r) ||
            get_str(a, "filename", path, &att[i].filename, r) ||
            get_str(a, "content_type", path, &att[i].content_type, r) ||
            get_str(a, "content", path, &att[i].content_b64, r))
            goto out;
        if (!att[i].filename || !att[i].content_b64) {
            api_problem(r, 400, path, "%s: filename and content are required", path);
            goto out;
        }
    }
    m.att = att;
    api_header *h = xcalloc(n_hdrs + 1, sizeof *h);
    for (size_t i = 0; i < n_hdrs; i++) {
        h[i].name = hdrs[i].key;
        h[i].value = hdrs[i].value;
    }
    m.headers = h;
    m.n_headers = n_hdrs;
    sl_buf msg = SL_BUF_INIT;
    char why[256];
    if (api_mime_build(&m, &msg, why, sizeof why) != 0) {
        api_problem(r, 400, "content", "content: %s", why);
    } else {
        char *err = NULL;
        if (sl_tmpl_compile(msg.data, msg.len, &t, &err) != 0) {
            api_problem(r, 400, "content", "content: %s", err);
            free(err);
            t = NULL;
        }
    }
    sl_buf_free(&msg);
    free(h);
out:
    free(att);
    free(hdrs);
    return t;
}

static int priority_of(const char *s, sluice_priority *p)
{
    if (!s || !strcmp(s, "normal"))
        *p = SLUICE_PRIORITY_NORMAL;
    else if (!strcmp(s, "bulk"))
        *p = SLUICE_PRIORITY_BULK;
    else if (!strcmp(s, "transactional"))
        *p = SLUICE_PRIORITY_TRANSACTIONAL;
    else
        return -1;
    return 0;
}

static void hex_of(const unsigned char h[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* The answer to a request whose Idempotency-Key has a record: the same
 * body (its hash), so the same recipients, the same derived job ids and
 * the same refusals as the first time; nothing is published. */
static void idem_replay(api_key *key, const char *idem, const unsigned char body_hash[32],
                        json_t *rcpts, json_t *prior, api_reply *r)
{
    size_t n = json_array_size(rcpts), accepted = 0;
    const char **err_of = xcalloc(n + 1, sizeof *err_of);
    json_t *errors = json_object_get(prior, "errors");
    size_t k;
    json_t *rej;
    json_array_foreach(json_object_get(prior, "rejected"), k, rej)
    {
        json_int_t i = json_integer_value(json_array_get(rej, 0));
        const char *why = json_string_value(
            json_array_get(errors, (size_t)json_integer_value(json_array_get(rej, 1))));
        if (i >= 0 && (size_t)i < n)
            err_of[i] = why ? why : "rejected";
    }
    json_t *results = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *addr = json_string_value(json_object_get(json_array_get(rcpts, i), "address"));
        char an[SLUICE_ADDRESS_MAX + 1], why[256];
        json_t *e = json_pack("{s:I, s:s}", "index", (json_int_t)i, "address",
                              sluice_address_normalize(addr, an, why, sizeof why) ? addr : an);
        const char *error = err_of[i];
        if (error) {
            json_object_set_new(e, "error", json_string(error));
        } else {
            char jid[27];
            derived_job_id(key->tenant, idem, body_hash, i, jid);
            json_object_set_new(e, "job_id", json_string(jid));
            accepted++;
        }
        json_array_append_new(results, e);
    }
    free(err_of);
    r->status = 202;
    r->body = json_pack("{s:I, s:I, s:o}", "accepted", (json_int_t)accepted, "rejected",
                        (json_int_t)(n - accepted), "recipients", results);
}

/* Records an answered request on the idempotency topic (and here at
 * once). A failure is logged, not answered: the jobs are in Kafka, and a
 * retry that does not find the record publishes them again under the same
 * job ids (docs/api.md, Idempotency). */
static void idem_record(api_ctx *a, api_key *key, const char *idem, const char *hex, size_t n,
                        json_t *results)
{
    /* Each distinct error once ("errors"), the refused recipients as
     * [index, error's index]: 10,000 refusals of a few kinds fit a record
     * of the topic's size budget. */
    json_t *rejected = json_array(), *errors = json_array();
    sl_map seen;
    sl_map_init(&seen);
    size_t i;
    json_t *e;
    json_array_foreach(results, i, e)
    {
        const char *err = json_string_value(json_object_get(e, "error"));
        if (!err)
            continue;
        uintptr_t j = (uintptr_t)sl_map_get(&seen, err);
        if (!j) {
            json_array_append_new(errors, json_string(err));
            j = json_array_size(errors);
            sl_map_put(&seen, err, (void *)j);
        }
        json_array_append_new(rejected, json_pack("[I, I]", (json_int_t)i, (json_int_t)(j - 1)));
    }
    sl_map_free(&seen);
    json_t *rec = json_pack("{s:i, s:s, s:s, s:s, s:I, s:o, s:o, s:I}", "v", 1, "tenant",
                            key->tenant, "key", idem, "sha256", hex, "recipients", (json_int_t)n,
                            "errors", errors, "rejected", rejected, "at_ms",
                            (json_int_t)sl_now_ms());
    char *text = json_dumps(rec, JSON_COMPACT);
    sl_buf val = SL_BUF_INIT;
    sl_buf_puts(&val, text);
    free(text);
    char *k = api_idem_key(key->tenant, idem);
    int rc = api_publish(a, "idempotency", k, &val);
    if (rc)
        sl_warn("api: idempotency record %s not published: %s (a retry publishes the same jobs "
                "again under the same ids)",
                k, sl_strerror(rc));
    api_idem_put(a->idem, rec);
    free(k);
    sl_buf_free(&val);
    json_decref(rec);
}

void api_messages_post(api_ctx *a, api_key *key, const char *body, size_t len, const char *idem,
                       api_reply *r)
{
    static const char *const keys[] = {"sender",   "recipients", "template_id", "content",
                                       "campaign", "pool",       "priority", "transactional"};
    json_error_t jerr;
    json_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req || !json_is_object(req)) {
        api_problem(r, 400, NULL, "the body is not a JSON object%s%s", req ? "" : ": ",
                    req ? "" : jerr.text);
        json_decref(req);
        return;
    }
    sl_tmpl *tmpl = NULL;
    batch *b = NULL;
    const char *sender, *template_id, *campaign, *pool, *prio;
    if (check_keys(req, "", keys, 8, r) || get_str(req, "sender", "", &sender, r) ||
        get_str(req, "template_id", "", &template_id, r) ||
        get_str(req, "campaign", "", &campaign, r) || get_str(req, "pool", "", &pool, r) ||
        get_str(req, "priority", "", &prio, r))
        goto out;
    json_t *tr = json_object_get(req, "transactional");
    if (tr && !json_is_boolean(tr)) {
        api_problem(r, 400, "transactional", "transactional: must be true or false");
        goto out;
    }
    bool transactional = tr && json_is_true(tr);
    sluice_priority priority;
    if (priority_of(prio, &priority)) {
        api_problem(r, 400, "priority", "priority: '%s' is not bulk, normal or transactional",
                    prio);
        goto out;
    }
    if (!sender) {
        api_problem(r, 400, "sender", "sender: required");
        goto out;
    }
    char norm[SLUICE_ADDRESS_MAX + 1], why[256];
    if (sluice_address_normalize(sender, norm, why, sizeof why)) {
        api_problem(r, 400, "sender", "sender \"%s\": %s", sender, why);
        goto out;
    }
    if (!api_key_domain_allowed(key, strchr(norm, '@') + 1)) {
        api_problem(r, 403, "sender", "sender: this key may not send from %s",
                    strchr(norm, '@') + 1);
        goto out;
    }
    if (pool && key->pool && strcmp(pool, key->pool)) {
        api_problem(r, 403, "pool", "pool: this key sends from pool %s only", key->pool);
        goto out;
    }
    if (key->pool)
        pool = key->pool;
    json_t *content = json_object_get(req, "content");
    if (!template_id == !content) {
        api_problem(r, 400, "content", "exactly one of template_id and content is required");
        goto out;
    }
    if (content && !(tmpl = inline_template(content, norm, r)))
        goto out;
    json_t *rcpts = json_object_get(req, "recipients");
    size_t n = json_is_array(rcpts) ? json_array_size(rcpts) : 0;
    if (n == 0 || n > SLUICE_MAX_RCPTS) {
        api_problem(r, 400, "recipients", "recipients: an array of 1 to %d recipients",
                    SLUICE_MAX_RCPTS);
        goto out;
    }
    /* The whole request is checked before anything is published. */
    for (size_t i = 0; i < n; i++) {
        static const char *const rkeys[] = {"address", "substitutions", "metadata"};
        json_t *o = json_array_get(rcpts, i);
        char path[48];
        snprintf(path, sizeof path, "recipients[%zu]", i);
        const char *addr;
        if (!json_is_object(o)) {
            api_problem(r, 400, path, "%s: must be an object", path);
            goto out;
        }
        if (check_keys(o, path, rkeys, 3, r) || get_str(o, "address", path, &addr, r))
            goto out;
        if (!addr) {
            api_problem(r, 400, path, "%s.address: required", path);
            goto out;
        }
    }
    unsigned char body_hash[32];
    unsigned int hl = 32;
    EVP_Digest(body, len, body_hash, &hl, EVP_sha256(), NULL);
    char hex[65];
    hex_of(body_hash, hex);
    if (idem && a->idem) {
        /* Whichever instance answered this key before, its record is in
         * Kafka (acknowledged before its answer): read up to it. */
        if (api_idem_sync(a->idem, key->tenant, idem, (int)a->cfg->api.ack_timeout_ms) != 0) {
            api_problem(r, 503, NULL,
                        "the idempotency topic could not be read: retry with the same "
                        "Idempotency-Key");
            r->retry_after = 1;
            goto out;
        }
        json_t *prior = api_idem_get(a->idem, key->tenant, idem);
        if (prior) {
            const char *was = json_string_value(json_object_get(prior, "sha256"));
            if (!was || strcmp(was, hex)) {
                sl_metric_inc("sluice_api_idempotent_replays_total", "result=\"conflict\"", 1);
                api_problem(r, 422, "Idempotency-Key",
                            "Idempotency-Key: already used with another request body");
            } else {
                sl_metric_inc("sluice_api_idempotent_replays_total", "result=\"same\"", 1);
                idem_replay(key, idem, body_hash, rcpts, prior, r);
            }
            json_decref(prior);
            goto out;
        }
    }
    int wait = api_key_take(a->keys, key, n, sl_mono_ms());
    if (wait > 0) {
        api_problem(r, 429, NULL, "rate limit of this key: %.0f recipients per minute",
                    key->rate_per_min);
        r->retry_after = wait;
        goto out;
    }

    b = xcalloc(1, sizeof *b);
    b->acked = &a->acked;
    b->n = n;
    b->res = xcalloc(n, sizeof *b->res);
    sl_buf raw = SL_BUF_INIT;
    /* Validation and rendering run unlocked; only the send takes the
     * client's lock, so a large request does not stall the others. */
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(rcpts, i);
        rcpt_result *res = &b->res[i];
        const char *addr = json_string_value(json_object_get(o, "address"));
        char an[SLUICE_ADDRESS_MAX + 1];
        res->done = true;
        if (sluice_address_normalize(addr, an, why, sizeof why)) {
            res->address = xstrdup(addr);
            res->error = xasprintf("address: %s", why);
            continue;
        }
        res->address = xstrdup(an);
        if (a->supp && api_suppress_has(a->supp, key->tenant, an)) {
            res->error = xstrdup("suppressed: the address is on the tenant's suppression list");
            continue;
        }
        sluice_kv *vars = NULL, *meta = NULL;
        size_t n_vars = 0, n_meta = 0;
        char path[48];
        snprintf(path, sizeof path, "recipients[%zu]", i);
        api_reply tmp = {0};
        if (get_map(o, "substitutions", path, &vars, &n_vars, &tmp) ||
            get_map(o, "metadata", path, &meta, &n_meta, &tmp)) {
            res->error = xstrdup(json_string_value(json_object_get(tmp.body, "detail")));
            json_decref(tmp.body);
            continue;
        }
        sluice_message m = SLUICE_MESSAGE_INIT;
        const char *to[1] = {an};
        m.from = norm;
        m.to = to;
        m.n_to = 1;
        m.tenant = key->tenant;
        m.campaign = campaign;
        m.pool = pool;
        m.priority = priority;
        m.transactional = transactional;
        m.meta = meta;
        m.n_meta = n_meta;
        char jid[27];
        if (idem) {
            derived_job_id(key->tenant, idem, body_hash, i, jid);
            m.job_id = jid;
        }
        if (tmpl) {
            render_ctx rc = {vars, n_vars, an};
            char *err = NULL;
            sl_buf_reset(&raw);
            if (sl_tmpl_render(tmpl, lookup, &rc, &raw, &err) != 0) {
                res->error = xasprintf("substitutions: %s", err);
                free(err);
                free(vars);
                free(meta);
                continue;
            }
            m.raw = raw.data;
            m.raw_len = raw.len;
        } else {
            m.template_id = template_id;
            m.vars = vars;
            m.n_vars = n_vars;
        }
        job_arg *ja = xmalloc(sizeof *ja);
        ja->b = b;
        ja->i = i;
        ja->derived = idem != NULL;
        pthread_mutex_lock(&a->mu);
        if (idem && idem_known(jid)) {
            /* Acknowledged for an earlier try of this request. */
            pthread_mutex_unlock(&a->mu);
            snprintf(res->job_id, sizeof res->job_id, "%s", jid);
            free(ja);
            free(vars);
            free(meta);
            continue;
        }
        res->done = false;
        b->pending++;
        if (sluice_send(a->client, &m, on_result, ja) != 0) {
            b->pending--;
            res->done = true;
            res->error = xstrdup(sluice_errmsg(a->client));
            free(ja);
        }
        pthread_mutex_unlock(&a->mu);
        free(vars);
        free(meta);
    }
    sl_buf_free(&raw);
    pthread_mutex_lock(&a->mu);
    /* Wait for Kafka: serve what has arrived (for every request) without
     * blocking, then wait with the lock released, so that the other
     * requests publish and poll in between: polling with a timeout under
     * the lock made concurrent requests take turns of 5 ms each. */
    int64_t deadline = sl_mono_ms() + a->cfg->api.ack_timeout_ms;
    while (b->pending && sl_mono_ms() < deadline) {
        sluice_poll(a->client, 0);
        if (!b->pending)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&a->acked, &a->mu, &ts);
    }
    if (b->pending) {
        b->abandoned = true;
        b = NULL; /* the last callback frees it */
        pthread_mutex_unlock(&a->mu);
        api_problem(r, 503, NULL,
                    "Kafka did not acknowledge every job within %lld ms: retry with the same "
                    "Idempotency-Key",
                    (long long)a->cfg->api.ack_timeout_ms);
        r->retry_after = 1;
        goto out;
    }
    pthread_mutex_unlock(&a->mu);

    json_t *results = json_array();
    size_t accepted = 0, kafka_failed = 0;
    for (size_t i = 0; i < n; i++) {
        rcpt_result *res = &b->res[i];
        json_t *e = json_pack("{s:I, s:s}", "index", (json_int_t)i, "address", res->address);
        if (res->error) {
            json_object_set_new(e, "error", json_string(res->error));
            if (!strncmp(res->error, "not published", 13))
                kafka_failed++;
        } else {
            json_object_set_new(e, "job_id", json_string(res->job_id));
            accepted++;
        }
        json_array_append_new(results, e);
    }
    if (kafka_failed) {
        api_problem(r, 503, NULL, "Kafka refused %zu jobs: retry with the same Idempotency-Key",
                    kafka_failed);
        r->retry_after = 1;
        json_object_set_new(r->body, "recipients", results);
    } else if (!accepted) {
        api_problem(r, 422, "recipients", "no recipient could be accepted");
        json_object_set_new(r->body, "recipients", results);
    } else {
        if (idem && a->idem)
            idem_record(a, key, idem, hex, n, results);
        r->status = 202;
        r->body = json_pack("{s:I, s:I, s:o}", "accepted", (json_int_t)accepted, "rejected",
                            (json_int_t)(n - accepted), "recipients", results);
    }
out:
    if (b)
        batch_free(b);
    sl_tmpl_free(tmpl);
    json_decref(req);
}
