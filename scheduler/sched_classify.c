/*
 * sched_classify - see sched_classify.h.
 */
#include "sched_classify.h"
#include "sched_addr.h"
#include "budget.h"
#include "dns.h"
#include "log.h"
#include "metrics.h"
#include "sched_site.h"
#include "sched_suppress.h"

#include <stdlib.h>
#include <string.h>

struct sched_classify {
    sched_ctx *ctx;
    sl_consumer *cons;
    sl_series *m_jobs; /* sluice_scheduler_jobs_total{stage="classify"} */
    sl_buf out;        /* the job being encoded for sited */
};

/* One job between its record and the sited publication (DNS may be in
 * flight). */
typedef struct cjob {
    sched_classify *c;
    sched_op *op;
    sl_job *job;
} cjob;

static void set_str(char **field, const char *v)
{
    /* protobuf-c frees non-default strings with free(): ours are malloc'd. */
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = xstrdup(v);
}

const char *sched_classify_validate(const sl_config *cfg, sl_job *job)
{
    (void)cfg;
    if (!job->n_recipients)
        return "no recipients";
    if (job->n_recipients > SL_BUDGET_JOB_RCPTS_MAX)
        return "more than 100 recipients in one job";
    /* The Message-ID derives from the job id: nothing in it may break a
     * header line. */
    const char *bad_id = sl_job_id_check(job->job_id);
    if (bad_id)
        return bad_id;
    for (size_t i = 0; i < job->n_recipients; i++)
        if (!sched_addr_valid(job->recipients[i]))
            return "invalid recipient address";
    /* The null reverse path "" is legal (bounces, DSNs). */
    if (job->mail_from && *job->mail_from && !sched_addr_valid(job->mail_from))
        return "invalid sender address";
    if (!job->domain || !*job->domain)
        set_str(&job->domain, sched_addr_domain(job->recipients[0]));
    sl_lower(job->domain);
    for (size_t i = 0; i < job->n_recipients; i++)
        if (strcasecmp(sched_addr_domain(job->recipients[i]), job->domain))
            return "recipient outside the job's domain";
    if (!job->raw.len && (!job->template_id || !*job->template_id))
        return "no content (neither raw message nor template)";
    return NULL;
}

void sched_classify_reset(sl_job *job, bool retried)
{
    if (!retried)
        job->attempt = 0;
    job->not_before_ms = 0;
    job->null_mx = false;
    if (job->site && job->site != protobuf_c_empty_string)
        free(job->site);
    job->site = (char *)protobuf_c_empty_string;
    for (size_t i = 0; i < job->n_mx; i++)
        protobuf_c_message_free_unpacked(&job->mx[i]->base, NULL);
    free(job->mx);
    job->mx = NULL;
    job->n_mx = 0;
}

/* Did the retry stage republish this record (SCHED_RETRY_HEADER naming the
 * attempt the job carries)? */
static bool from_retry(const rd_kafka_message_t *m, const sl_job *job)
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, SCHED_RETRY_HEADER, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !v || n == 0 || n > 10)
        return false;
    char buf[12];
    memcpy(buf, v, n);
    buf[n] = 0;
    char *end = NULL;
    unsigned long a = strtoul(buf, &end, 10);
    return *end == 0 && a == job->attempt;
}

static void cjob_finish(cjob *j)
{
    sl_job_free(j->job);
    sched_op_release(j->op);
    free(j);
}

/* raw: the record's bytes when the job goes on as it came but for its
 * site (and domain, when classify filled or lower-cased it): those fields
 * are appended instead of encoding the whole job again. NULL: encode it. */
static void publish_sited(cjob *j, const char *site, const rd_kafka_message_t *raw,
                          bool domain_changed)
{
    sched_ctx *ctx = j->c->ctx;
    sl_buf *b = &j->c->out;
    if (raw) {
        sl_buf_reset(b);
        sl_buf_append(b, raw->payload, raw->len);
        if (domain_changed)
            sl_wire_put_bytes(b, SL_JOB_FIELD_DOMAIN, j->job->domain, strlen(j->job->domain));
        sl_wire_put_bytes(b, SL_JOB_FIELD_SITE, site, strlen(site));
    } else {
        set_str(&j->job->site, site);
        sl_pack(&j->job->base, b);
    }
    sched_op_send(j->op, ctx->t_sited, site, b->data, b->len, NULL, 0);
    sl_series_add(j->c->m_jobs, 1);
    cjob_finish(j);
}

/* A temporary DNS failure: try the whole job again after the shortest
 * retry delay rather than hold the partition. */
static void park_dns(cjob *j, const char *why)
{
    sched_ctx *ctx = j->c->ctx;
    int64_t delay = 0;
    const char *topic = sched_ctx_retry_topic(ctx, 0, &delay);
    j->job->not_before_ms = sl_now_ms() + delay;
    sl_log_job(SL_LOG_WARN, j->job->job_id, "classify: MX lookup for %s failed (%s); again in %llds",
               j->job->domain, why, (long long)(delay / 1000));
    sl_buf b = SL_BUF_INIT;
    sl_pack(&j->job->base, &b);
    sched_op_send(j->op, topic, j->job->domain, b.data, b.len, NULL, 0);
    sl_buf_free(&b);
    sl_metric_inc("sluice_classify_dns_deferred_total", NULL, 1);
    cjob_finish(j);
}

static void mx_cb(const sl_dns_mx_result *res, void *arg)
{
    cjob *j = arg;
    sl_job *job = j->job;
    char *site = NULL;
    switch (res->status) {
    case SL_DNS_OK: {
        /* The most preferred SL_BUDGET_MX_MAX hosts (the answer is sorted):
         * what classify adds to a job stays within the size budget. */
        size_t n = res->n_hosts < SL_BUDGET_MX_MAX ? res->n_hosts : SL_BUDGET_MX_MAX;
        sched_mx *mx = xcalloc(n ? n : 1, sizeof *mx);
        job->mx = xcalloc(n ? n : 1, sizeof *job->mx);
        for (size_t i = 0; i < n; i++) {
            mx[i].host = res->hosts[i].host;
            mx[i].preference = res->hosts[i].preference;
            Sluice__V1__MxHost *h = xmalloc(sizeof *h);
            sluice__v1__mx_host__init(h);
            h->host = xstrdup(res->hosts[i].host);
            h->preference = res->hosts[i].preference;
            job->mx[i] = h;
        }
        job->n_mx = n;
        site = sched_site_by_mx(j->c->ctx->sites, job->domain, mx, n);
        free(mx);
        break;
    }
    case SL_DNS_NULL_MX:
        job->null_mx = true;
        site = xstrdup(job->domain);
        break;
    case SL_DNS_NODATA:   /* implicit MX: the domain itself */
    case SL_DNS_NXDOMAIN: /* the sender's policy bounces it with the reason */
        site = xstrdup(job->domain);
        break;
    default:
        if (j->c->ctx->draining && res->status == SL_DNS_CANCELLED) {
            park_dns(j, "shutting down");
            return;
        }
        park_dns(j, sl_dns_status_name(res->status));
        return;
    }
    publish_sited(j, site, NULL, false);
    free(site);
}

/* A record refused before or by decoding (too large, a wire version from
 * the future) may still carry a readable job id: unpack it as leniently as
 * protobuf allows so that the REJECTED event names the job and its
 * producer learns what became of it. NULL when nothing readable is there. */
static sl_job *salvage_job(const rd_kafka_message_t *m)
{
    if (!m->payload || !m->len)
        return NULL;
    sl_job *j = sluice__v1__job__unpack(NULL, m->len, m->payload);
    if (j && (!j->job_id || !*j->job_id)) {
        sl_job_free(j);
        j = NULL;
    }
    return j;
}

static void on_record(void *arg, sl_record *rec)
{
    sched_classify *c = arg;
    sched_ctx *ctx = c->ctx;
    const sl_config *cfg = ctx->cfg;
    sched_op *op = sched_op_new(ctx, "classify", rec);
    rd_kafka_message_t *m = rec->msg;
    if (m->len > sl_budget_job_max(cfg)) {
        sl_job *named = salvage_job(m);
        sched_op_reject(op, ctx, named, "classify", "job larger than scheduler.max_job_bytes");
        sl_job_free(named);
        sched_op_release(op);
        return;
    }
    sl_job *job = NULL;
    const char *why = NULL;
    if (!m->payload || sl_job_decode(m->payload, m->len, &job, &why) != 0) {
        sl_job *named = salvage_job(m);
        sched_op_reject(op, ctx, named, "classify", why ? why : "empty record");
        sl_job_free(named);
        sched_op_release(op);
        return;
    }
    /* Does the job go on as it came, but for its site? Not when it
     * carries anything the scheduler fills (an appended field overrides a
     * scalar, but cannot take MX hosts away). */
    bool retried = from_retry(m, job);
    bool as_is = !job->null_mx && !job->n_mx && !job->not_before_ms && !job->attempt;
    bool domain_changed = !job->domain || !*job->domain;
    for (const char *d = job->domain; d && *d && !domain_changed; d++)
        domain_changed = *d >= 'A' && *d <= 'Z';
    /* A string with a NUL decodes cut short: refuse it rather than
     * deliver to the address before the NUL. */
    const char *nul = sl_job_nul_field(m->payload, m->len);
    char nulwhy[64];
    if (nul) {
        snprintf(nulwhy, sizeof nulwhy, "a NUL byte in %s", nul);
        why = nulwhy;
    } else {
        why = sched_classify_validate(cfg, job);
    }
    if (why) {
        sched_op_reject(op, ctx, job, "classify", why);
        sl_job_free(job);
        sched_op_release(op);
        return;
    }
    /* Suppressions: drop each suppressed recipient with its own event. */
    const char *tenant = job->tenant && *job->tenant ? job->tenant : cfg->scheduler.default_tenant;
    if (ctx->supp) {
        size_t keep = 0;
        for (size_t i = 0; i < job->n_recipients; i++) {
            char *r = job->recipients[i];
            if (!sched_suppress_has(ctx->supp, tenant, r)) {
                job->recipients[keep++] = r;
                continue;
            }
            sl_event e;
            sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_SUPPRESSED, job, "classify");
            e.recipient = r;
            e.reason = (char *)"recipient is on the suppression list";
            sched_op_event(op, ctx, &e);
            sl_log_job(SL_LOG_INFO, job->job_id, "classify: %s suppressed", r);
            sl_metric_inc("sluice_suppressed_total", NULL, 1);
            free(r);
            as_is = false;
        }
        job->n_recipients = keep;
        if (!keep) {
            sl_job_free(job);
            sched_op_release(op);
            return;
        }
    }
    /* site, mx, null_mx and not_before_ms are the scheduler's to fill, and
     * attempt is 0 unless the retry stage says otherwise: whatever a
     * producer put there is dropped here. */
    sched_classify_reset(job, retried);
    cjob *j = xcalloc(1, sizeof *j);
    j->c = c;
    j->op = op;
    j->job = job;
    const rd_kafka_message_t *raw = as_is ? m : NULL;
    const char *site = sched_site_by_domain(ctx->sites, job->domain);
    if (site) {
        publish_sited(j, site, raw, domain_changed);
        return;
    }
    if (sl_config_route(cfg, job->domain) || !ctx->dns) {
        /* A smart host: no MX lookup; the domain is its own site. */
        publish_sited(j, job->domain, raw, domain_changed);
        return;
    }
    if (sl_dns_mx(ctx->dns, job->domain, mx_cb, j) != 0) {
        /* An unusable name: the sender bounces it as a bad domain. */
        publish_sited(j, job->domain, raw, domain_changed);
    }
}

sched_classify *sched_classify_new(sched_ctx *ctx, char **err)
{
    sched_classify *c = xcalloc(1, sizeof *c);
    c->ctx = ctx;
    const char *topics[] = {ctx->t_jobs};
    sl_consumer_opts o = {.group = "sluice-classify",
                          .topics = topics,
                          .n_topics = 1,
                          .on_record = on_record,
                          .arg = c};
    c->cons = sl_consumer_new(ctx->cfg, ctx->loop, &o, err);
    if (!c->cons) {
        free(c);
        return NULL;
    }
    c->m_jobs = sl_metric_series("sluice_scheduler_jobs_total", "stage=\"classify\"",
                                 SL_METRIC_COUNTER);
    return c;
}

bool sched_classify_ready(const sched_classify *c)
{
    return sl_consumer_assigned(c->cons) && (!c->ctx->supp || sched_suppress_loaded(c->ctx->supp));
}

void sched_classify_stop(sched_classify *c, sl_drained_cb cb, void *arg)
{
    sl_consumer_stop(c->cons, cb, arg);
}

void sched_classify_free(sched_classify *c)
{
    if (!c)
        return;
    sl_consumer_free(c->cons);
    sl_buf_free(&c->out);
    free(c);
}
