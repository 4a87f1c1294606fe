/*
 * libsluice - the client: validation of a whole message, the split of its
 * recipients into per-domain jobs, and publishing through the idempotent
 * sl_producer (see sluice.h for the contract).
 *
 * sluice_send() works in two passes so that a message is either refused
 * whole or published whole: the first normalises every field and builds
 * the job groups (checking each job's encoded size), the second packs and
 * hands each job to the producer. Each job with a callback carries one
 * allocation (struct job_ctx, strings inline) until its delivery report;
 * scratch arrays live in the client and are reused across calls, so the
 * one-recipient bulk path allocates only that context.
 */
#define _GNU_SOURCE /* qsort_r */
#include "sluice.h"
#include "budget.h"
#include "config.h"
#include "kafka.h"
#include "wire.h"
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SLUICE_EINVAL == SL_EINVAL, "error codes follow util.h");
_Static_assert(SLUICE_ENOMEM == SL_ENOMEM, "error codes follow util.h");
_Static_assert(SLUICE_ETOOBIG == SL_ETOOBIG, "error codes follow util.h");
_Static_assert(SLUICE_EKAFKA == SL_EKAFKA, "error codes follow util.h");
_Static_assert(SLUICE_ETIMEOUT == SL_ETIMEOUT, "error codes follow util.h");
_Static_assert(SLUICE_ECONFIG == SL_ECONFIG, "error codes follow util.h");
_Static_assert(SLUICE_EADDRESS == SL_EADDRESS, "error codes follow util.h");
_Static_assert(SLUICE_MAX_RCPTS_PER_JOB == SL_BUDGET_JOB_RCPTS_MAX, "classify's job limit");

#define FIELD_MAX 255    /* tenant, campaign, pool, template id */
#define VAR_NAME_MAX 128 /* as template.h allows */

typedef struct rcpt {
    char addr[SLUICE_ADDRESS_MAX + 1];
    size_t at; /* offset of the domain's '@' */
} rcpt;

struct sluice_client {
    sl_config *owned_cfg;
    const sl_config *cfg;
    sl_producer *p;
    char *jobs_topic;
    uint64_t max_job_bytes;
    sl_buf pack;
    char errmsg[512];
    /* scratch, reused across sends */
    rcpt *rc;
    size_t cap_rc;
    size_t *order;
    size_t cap_order;
    Sluice__V1__Job__VarsEntry *vars;
    Sluice__V1__Job__VarsEntry **varp;
    size_t cap_vars, cap_varp;
    Sluice__V1__Job__MetaEntry *meta;
    Sluice__V1__Job__MetaEntry **metap;
    size_t cap_meta, cap_metap;
    char **rcptp;
    size_t cap_rcptp;
    bool accepted_events;
    struct job_ctx *live;                     /* every job awaiting its delivery report */
    char from_in[SLUICE_ADDRESS_MAX * 4 + 1]; /* last valid envelope sender as given */
    char from[SLUICE_ADDRESS_MAX + 1];        /* ... and normalised */
};

typedef struct job_ctx {
    sluice_client *c;
    struct job_ctx *prev, *next; /* c->live */
    sluice_result_cb cb;
    void *arg;
    size_t bytes;
    char job_id[65];
    char *domain;
    uint8_t *packed; /* the job as published, for ACCEPTED events; or NULL */
    size_t n;
    char *rcpts[]; /* then the strings, then packed */
} job_ctx;

static int seterr(sluice_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int seterr(sluice_client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

const char *sluice_strerror(int err)
{
    return err == 0 ? "success" : sl_strerror(err);
}

const char *sluice_errmsg(const sluice_client *c)
{
    return c ? c->errmsg : "";
}

sluice_client *sluice_client_new_from_config(const struct sl_config *cfg, char **err)
{
    sluice_client *c = xcalloc(1, sizeof *c);
    c->cfg = cfg;
    c->p = sl_producer_new(cfg, NULL, err);
    if (!c->p) {
        free(c);
        return NULL;
    }
    c->jobs_topic = sl_config_topic(cfg, "jobs");
    /* Make both topics known before the first produce: a topic first seen
     * after the initial metadata request waits about a second for the next
     * one, which would delay the first ACCEPTED event of every client. */
    char *events = sl_config_topic(cfg, "events");
    const char *warm[] = {c->jobs_topic, events};
    for (size_t i = 0; i < 2; i++)
        rd_kafka_topic_destroy(rd_kafka_topic_new(sl_producer_handle(c->p), warm[i], NULL));
    free(events);
    /* The size budget (budget.h): a job the scheduler would refuse, or one
     * that could not fit every topic on its way, is refused here. */
    c->max_job_bytes = sl_budget_job_max(cfg);
    c->accepted_events = true;
    return c;
}

sluice_client *sluice_client_new(const char *config_path, char **err)
{
    sl_config *cfg = NULL;
    if (config_path) {
        if (sl_config_load(config_path, &cfg, err) != 0)
            return NULL;
    } else {
        cfg = sl_config_default();
    }
    sluice_client *c = sluice_client_new_from_config(cfg, err);
    if (!c) {
        sl_config_free(cfg);
        return NULL;
    }
    c->owned_cfg = cfg;
    return c;
}

void sluice_client_free(sluice_client *c)
{
    if (!c)
        return;
    /* The producer drops unacknowledged records without a report: their
     * contexts are freed here, their callbacks never fire (sluice.h). */
    sl_producer_free(c->p);
    while (c->live) {
        job_ctx *j = c->live;
        c->live = j->next;
        free(j);
    }
    free(c->jobs_topic);
    sl_buf_free(&c->pack);
    free(c->rc);
    free(c->order);
    free(c->vars);
    free(c->varp);
    free(c->meta);
    free(c->metap);
    free(c->rcptp);
    if (c->owned_cfg)
        sl_config_free(c->owned_cfg);
    free(c);
}

void sluice_poll(sluice_client *c, int timeout_ms)
{
    sl_producer_poll(c->p, timeout_ms);
}

int sluice_flush(sluice_client *c, int timeout_ms)
{
    return sl_producer_flush(c->p, timeout_ms);
}

size_t sluice_outstanding(const sluice_client *c)
{
    return sl_producer_outstanding(c->p);
}

void sluice_client_set_accepted_events(sluice_client *c, bool on)
{
    c->accepted_events = on;
}

/* ---- validation ---- */

static const char *ctl_in(const char *s, size_t n, bool allow_breaks)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0)
            return "a NUL byte";
        if (!allow_breaks && (s[i] == '\r' || s[i] == '\n'))
            return "a line break";
    }
    return NULL;
}

/* An optional plain field: no CR/LF/NUL/other controls, at most FIELD_MAX. */
static int check_field(sluice_client *c, const char *name, const char *v)
{
    if (!v)
        return 0;
    size_t n = strlen(v);
    if (n > FIELD_MAX)
        return seterr(c, SLUICE_EINVAL, "%s: longer than %d octets", name, FIELD_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch == '\r' || ch == '\n')
            return seterr(c, SLUICE_EINVAL, "%s: contains a line break", name);
        if (ch < 32 || ch == 127)
            return seterr(c, SLUICE_EINVAL, "%s: contains control character 0x%02X", name, ch);
    }
    return 0;
}

static bool var_name_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > VAR_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = k[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

static int rcpt_cmp_ctx_sort(const void *a, const void *b, void *ctx)
{
    const rcpt *rc = ctx;
    const rcpt *x = &rc[*(const size_t *)a], *y = &rc[*(const size_t *)b];
    int d = strcmp(x->addr + x->at, y->addr + y->at);
    if (d)
        return d;
    d = strcmp(x->addr, y->addr);
    if (d)
        return d;
    /* stable: first given first */
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return i < j ? -1 : i > j;
}

static void grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (*cap >= need)
        return;
    size_t n = *cap ? *cap : 8;
    while (n < need)
        n *= 2;
    *p = xrealloc(*p, n * elem);
    *cap = n;
}

/* ---- publishing ---- */

/* One ACCEPTED event per recipient of an acknowledged job, so that event
 * counts are recipient counts as for every later stage. Fire and forget:
 * sluice_flush() still waits for them, and a job's durability does not
 * depend on its event. */
static void job_publish_accepted(sluice_client *c, const job_ctx *j)
{
    sl_job *job = NULL;
    const char *why;
    if (sl_job_decode(j->packed, j->bytes, &job, &why) != 0)
        sl_panic("libsluice: cannot decode a job it packed: %s", why);
    for (size_t i = 0; i < job->n_recipients; i++) {
        sl_event e;
        sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_ACCEPTED, job, "producer");
        e.recipient = job->recipients[i];
        if (sl_event_publish(c->p, c->cfg, &e, NULL, NULL) != 0)
            sl_log_job(SL_LOG_WARN, job->job_id, "libsluice: ACCEPTED event not published");
    }
    sl_job_free(job);
}

static void job_done(void *arg, int err)
{
    job_ctx *j = arg;
    if (j->prev)
        j->prev->next = j->next;
    else
        j->c->live = j->next;
    if (j->next)
        j->next->prev = j->prev;
    if (err == 0 && j->packed)
        job_publish_accepted(j->c, j);
    if (j->cb) {
        sluice_job_result r = {
            .job_id = j->job_id,
            .domain = j->domain,
            .recipients = (const char *const *)j->rcpts,
            .n_recipients = j->n,
            .err = err,
            .bytes = j->bytes,
        };
        j->cb(j->arg, &r);
    }
    free(j);
}

static job_ctx *job_ctx_new(sluice_client *c, const rcpt *rc, const size_t *idx, size_t n,
                            const char *job_id, sluice_result_cb cb, void *arg,
                            const sl_buf *packed)
{
    size_t strs = 0;
    for (size_t i = 0; i < n; i++)
        strs += strlen(rc[idx[i]].addr) + 1;
    const char *dom = rc[idx[0]].addr + rc[idx[0]].at + 1;
    strs += strlen(dom) + 1;
    size_t plen = c->accepted_events ? packed->len : 0;
    job_ctx *j = xmalloc(sizeof *j + n * sizeof(char *) + strs + plen);
    j->c = c;
    j->prev = NULL;
    j->next = c->live;
    if (c->live)
        c->live->prev = j;
    c->live = j;
    j->cb = cb;
    j->arg = arg;
    j->n = n;
    j->bytes = packed->len;
    memcpy(j->job_id, job_id, strlen(job_id) + 1);
    char *s = (char *)&j->rcpts[n];
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(rc[idx[i]].addr) + 1;
        memcpy(s, rc[idx[i]].addr, l);
        j->rcpts[i] = s;
        s += l;
    }
    memcpy(s, dom, strlen(dom) + 1);
    j->domain = s;
    s += strlen(dom) + 1;
    j->packed = NULL;
    if (plen) {
        memcpy(s, packed->data, plen);
        j->packed = (uint8_t *)s;
    }
    return j;
}

int sluice_send(sluice_client *c, const sluice_message *m, sluice_result_cb cb, void *arg)
{
    char why[200];
    int rc;
    c->errmsg[0] = 0;
    if (!m)
        return seterr(c, SLUICE_EINVAL, "no message");

    /* Envelope sender. A campaign sends every job from one address: the
     * last valid one is remembered so that it is checked once. */
    if (!m->from || !*m->from)
        return seterr(c, SLUICE_EADDRESS, "from: an envelope sender is required");
    if (strcmp(m->from, c->from_in) != 0) {
        c->from_in[0] = 0;
        if (strlen(m->from) > SLUICE_ADDRESS_MAX * 4 ||
            sluice_address_normalize(m->from, c->from, why, sizeof why))
            return seterr(c, SLUICE_EADDRESS, "from \"%s\": %s", m->from,
                          strlen(m->from) > SLUICE_ADDRESS_MAX * 4 ? "too long" : why);
        strcpy(c->from_in, m->from);
    }
    char *from = c->from;

    /* Plain fields. */
    if ((rc = check_field(c, "tenant", m->tenant)) ||
        (rc = check_field(c, "campaign", m->campaign)) || (rc = check_field(c, "pool", m->pool)) ||
        (rc = check_field(c, "template_id", m->template_id)))
        return rc;
    if ((unsigned)m->priority > SLUICE_PRIORITY_TRANSACTIONAL)
        return seterr(c, SLUICE_EINVAL, "priority: unknown value %d", (int)m->priority);
    if (m->expires_at_ms < 0)
        return seterr(c, SLUICE_EINVAL, "expires_at_ms: negative");
    int64_t now = sl_now_ms();
    if (m->expires_at_ms && m->expires_at_ms <= now)
        return seterr(c, SLUICE_EINVAL, "expires_at_ms: already in the past");

    /* Content. */
    bool has_raw = m->raw != NULL;
    bool has_tmpl = m->template_id && *m->template_id;
    if (has_raw && has_tmpl)
        return seterr(c, SLUICE_EINVAL, "give either a raw message or a template, not both");
    if (!has_raw && !has_tmpl)
        return seterr(c, SLUICE_EINVAL, "no content: give a raw message or a template id");
    if (has_raw) {
        if (m->raw_len == 0)
            return seterr(c, SLUICE_EINVAL, "raw: empty message");
        if (memchr(m->raw, 0, m->raw_len))
            return seterr(c, SLUICE_EINVAL, "raw: the message contains a NUL byte");
        if (m->raw_len > c->max_job_bytes)
            return seterr(c, SLUICE_ETOOBIG, "raw: message of %zu octets exceeds the limit of %llu",
                          m->raw_len, (unsigned long long)c->max_job_bytes);
        if (m->n_vars)
            return seterr(c, SLUICE_EINVAL, "vars: only a template message takes variables");
    }
    if (m->n_vars && !m->vars)
        return seterr(c, SLUICE_EINVAL, "vars: n_vars without vars");
    for (size_t i = 0; i < m->n_vars; i++) {
        const char *k = m->vars[i].key, *v = m->vars[i].value;
        if (!k || !var_name_ok(k))
            return seterr(c, SLUICE_EINVAL,
                          "variable %zu: name \"%s\" must be 1-%d of [A-Za-z0-9_.-]", i + 1,
                          k ? k : "(null)", VAR_NAME_MAX);
        if (!v)
            return seterr(c, SLUICE_EINVAL, "variable %s: no value", k);
    }
    if (m->n_meta && !m->meta)
        return seterr(c, SLUICE_EINVAL, "meta: n_meta without meta");
    for (size_t i = 0; i < m->n_meta; i++) {
        const char *k = m->meta[i].key, *v = m->meta[i].value;
        if (!k || !*k)
            return seterr(c, SLUICE_EINVAL, "meta %zu: empty key", i + 1);
        if (!v)
            return seterr(c, SLUICE_EINVAL, "meta %s: no value", k);
        const char *bad = ctl_in(k, strlen(k), false);
        if (!bad)
            bad = ctl_in(v, strlen(v), false);
        if (bad)
            return seterr(c, SLUICE_EINVAL, "meta %s: contains %s", k, bad);
    }

    /* Recipients: normalise, sort by domain, drop duplicates. */
    if (m->n_to == 0 || !m->to)
        return seterr(c, SLUICE_EADDRESS, "no recipients");
    if (m->n_to > SLUICE_MAX_RCPTS)
        return seterr(c, SLUICE_EINVAL, "%zu recipients: at most %d per message", m->n_to,
                      SLUICE_MAX_RCPTS);
    grow((void **)&c->rc, &c->cap_rc, m->n_to, sizeof *c->rc);
    grow((void **)&c->order, &c->cap_order, m->n_to, sizeof *c->order);
    for (size_t i = 0; i < m->n_to; i++) {
        if (!m->to[i])
            return seterr(c, SLUICE_EADDRESS, "recipient %zu: missing", i + 1);
        if (sluice_address_normalize(m->to[i], c->rc[i].addr, why, sizeof why))
            return seterr(c, SLUICE_EADDRESS, "recipient %zu \"%s\": %s", i + 1, m->to[i], why);
        c->rc[i].at = (size_t)(strrchr(c->rc[i].addr, '@') - c->rc[i].addr);
        c->order[i] = i;
    }
    size_t n = m->n_to;
    if (n > 1) {
        qsort_r(c->order, n, sizeof *c->order, rcpt_cmp_ctx_sort, c->rc);
        size_t w = 1;
        for (size_t i = 1; i < n; i++)
            if (strcmp(c->rc[c->order[i]].addr, c->rc[c->order[w - 1]].addr) != 0)
                c->order[w++] = c->order[i];
        n = w;
    }

    /* The job skeleton shared by every group. */
    Sluice__V1__Job job = SLUICE__V1__JOB__INIT;
    job.version = SLUICE_WIRE_VERSION;
    job.tenant = (char *)(m->tenant ? m->tenant : "");
    job.campaign = (char *)(m->campaign ? m->campaign : "");
    job.pool = (char *)(m->pool ? m->pool : "");
    job.priority = (Sluice__V1__Priority)m->priority;
    job.mail_from = from;
    job.created_at_ms = now;
    job.expires_at_ms = m->expires_at_ms;
    job.transactional = m->transactional != 0;
    if (has_raw) {
        job.raw.data = (uint8_t *)m->raw;
        job.raw.len = m->raw_len;
    } else {
        job.template_id = (char *)m->template_id;
        grow((void **)&c->vars, &c->cap_vars, m->n_vars, sizeof *c->vars);
        grow((void **)&c->varp, &c->cap_varp, m->n_vars, sizeof *c->varp);
        for (size_t i = 0; i < m->n_vars; i++) {
            Sluice__V1__Job__VarsEntry e = SLUICE__V1__JOB__VARS_ENTRY__INIT;
            e.key = (char *)m->vars[i].key;
            e.value = (char *)m->vars[i].value;
            c->vars[i] = e;
            c->varp[i] = &c->vars[i];
        }
        job.n_vars = m->n_vars;
        job.vars = c->varp;
    }
    if (m->n_meta) {
        grow((void **)&c->meta, &c->cap_meta, m->n_meta, sizeof *c->meta);
        grow((void **)&c->metap, &c->cap_metap, m->n_meta, sizeof *c->metap);
        for (size_t i = 0; i < m->n_meta; i++) {
            Sluice__V1__Job__MetaEntry e = SLUICE__V1__JOB__META_ENTRY__INIT;
            e.key = (char *)m->meta[i].key;
            e.value = (char *)m->meta[i].value;
            c->meta[i] = e;
            c->metap[i] = &c->meta[i];
        }
        job.n_meta = m->n_meta;
        job.meta = c->metap;
    }
    grow((void **)&c->rcptp, &c->cap_rcptp, SLUICE_MAX_RCPTS_PER_JOB, sizeof *c->rcptp);

    /* Pass 1: the groups and their sizes. A group is a run of one domain,
     * cut every SLUICE_MAX_RCPTS_PER_JOB recipients. A message of one
     * recipient (the bulk path) is one group: its size is checked once
     * packed, before anything is sent. */
    char job_id[65];
    if (m->job_id) {
        if (m->n_to != 1)
            return seterr(c, SLUICE_EINVAL, "job_id: only for a message of one recipient");
        /* Said at publish time, before anything is sent: a CR or LF in a
         * job id would otherwise surface much later as a misleading
         * delivery failure. */
        size_t jl = strlen(m->job_id);
        const char *bad = sl_job_id_check(m->job_id);
        if (bad)
            return seterr(c, SLUICE_EINVAL, "job_id: %s", bad);
        if (jl >= sizeof job_id)
            return seterr(c, SLUICE_EINVAL, "job_id: longer than 64 octets");
        memcpy(job_id, m->job_id, jl + 1);
    } else {
        sl_job_id_new(job_id);
    }
    job.job_id = job_id;
    for (size_t i = n == 1 ? n : 0; i < n;) {
        const char *dom = c->rc[c->order[i]].addr + c->rc[c->order[i]].at + 1;
        size_t k = 0;
        while (i + k < n && k < SLUICE_MAX_RCPTS_PER_JOB &&
               !strcmp(c->rc[c->order[i + k]].addr + c->rc[c->order[i + k]].at + 1, dom)) {
            c->rcptp[k] = c->rc[c->order[i + k]].addr;
            k++;
        }
        job.domain = (char *)dom;
        job.recipients = c->rcptp;
        job.n_recipients = k;
        size_t sz = protobuf_c_message_get_packed_size(&job.base);
        if (sz > c->max_job_bytes)
            return seterr(c, SLUICE_ETOOBIG,
                          "job for %s: %zu octets encoded, over the limit of %llu", dom, sz,
                          (unsigned long long)c->max_job_bytes);
        i += k;
    }

    /* Pass 2: publish. From here on every job reports through cb. */
    bool first = true;
    for (size_t i = 0; i < n;) {
        const char *dom = c->rc[c->order[i]].addr + c->rc[c->order[i]].at + 1;
        size_t k = 0;
        while (i + k < n && k < SLUICE_MAX_RCPTS_PER_JOB &&
               !strcmp(c->rc[c->order[i + k]].addr + c->rc[c->order[i + k]].at + 1, dom)) {
            c->rcptp[k] = c->rc[c->order[i + k]].addr;
            k++;
        }
        if (!first)
            sl_job_id_new(job_id);
        first = false;
        job.domain = (char *)dom;
        job.recipients = c->rcptp;
        job.n_recipients = k;
        sl_pack(&job.base, &c->pack);
        if (n == 1 && c->pack.len > c->max_job_bytes)
            return seterr(c, SLUICE_ETOOBIG,
                          "job for %s: %zu octets encoded, over the limit of %llu", dom,
                          c->pack.len, (unsigned long long)c->max_job_bytes);
        job_ctx *j = NULL;
        if (cb || c->accepted_events)
            j = job_ctx_new(c, c->rc, &c->order[i], k, job_id, cb, arg, &c->pack);
        int prc = sl_producer_send(c->p, c->jobs_topic, dom, strlen(dom), c->pack.data, c->pack.len,
                                   NULL, 0, j ? job_done : NULL, j);
        if (prc && j)
            job_done(j, prc == SL_ETOOBIG ? SLUICE_ETOOBIG : SLUICE_EKAFKA);
        i += k;
    }
    return 0;
}
