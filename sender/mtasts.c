/*
 * mtasts - MTA-STS policies (RFC 8461): parser, matcher and the shared
 * cache with its fetch thread. The contract is in mtasts.h.
 *
 * The cache is a map of domain -> entry under one mutex; workers only read
 * it and queue domains. The fetch thread owns every lookup: TXT, then the
 * policy host's address, then the HTTPS fetch (a blocking libcurl call in
 * that thread only, bounded by the fetch timeout), and writes the result
 * back under the mutex.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "dns.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "mtasts.h"
#include "util.h"

#define STS_MAX_BODY (64 * 1024)
#define STS_MAX_AGE_S 31557600
#define STS_RETRY_MS 60000 /* a failed lookup is tried again after this (at most recheck) */

/* ---- the parser -------------------------------------------------------- */

const char *snd_sts_mode_name(snd_sts_mode m)
{
    switch (m) {
    case SND_STS_ENFORCE: return "enforce";
    case SND_STS_TESTING: return "testing";
    case SND_STS_NONE: return "none";
    }
    return "none";
}

void snd_sts_policy_clear(snd_sts_policy *p)
{
    for (size_t i = 0; i < p->n_mx; i++)
        free(p->mx[i]);
    free(p->mx);
    free(p->error);
    memset(p, 0, sizeof *p);
}

void snd_sts_policy_copy(snd_sts_policy *dst, const snd_sts_policy *src)
{
    memset(dst, 0, sizeof *dst);
    dst->mode = src->mode;
    dst->max_age_s = src->max_age_s;
    dst->error = src->error ? xstrdup(src->error) : NULL;
    if (src->n_mx) {
        dst->mx = xcalloc(src->n_mx, sizeof *dst->mx);
        for (size_t i = 0; i < src->n_mx; i++)
            dst->mx[i] = xstrdup(src->mx[i]);
        dst->n_mx = src->n_mx;
    }
}

/* A host name of letters, digits and hyphens, labels 1 to 63 long, no
 * leading or trailing dot; "*." in front when wild is allowed. */
static bool valid_pattern(const char *s)
{
    if (!strncmp(s, "*.", 2))
        s += 2;
    size_t total = strlen(s), label = 0;
    if (!total || total > 253 || s[total - 1] == '.')
        return false;
    for (const char *p = s; *p; p++) {
        if (*p == '.') {
            if (!label || p[-1] == '-')
                return false;
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
            if (!label && *p == '-')
                return false;
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

static int parse_fail(char **err, int line, const char *why)
{
    if (err)
        *err = line ? xasprintf("line %d: %s", line, why) : xstrdup(why);
    return SL_EPARSE;
}

int snd_sts_parse(const char *text, size_t len, snd_sts_policy *out, char **err)
{
    memset(out, 0, sizeof *out);
    bool have_version = false, have_mode = false, have_age = false;
    int line = 0;
    const char *p = text, *end = text + len;
    if (memchr(text, 0, len))
        return parse_fail(err, 0, "policy contains a NUL byte");
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r')
            n--;
        char *l = xstrndup(p, n);
        p = nl ? nl + 1 : end;
        /* Trailing white space is allowed (RFC 8461 3.2: *WSP before the
         * line end); an empty line only at the very end. */
        size_t k = strlen(l);
        while (k && (l[k - 1] == ' ' || l[k - 1] == '\t'))
            l[--k] = 0;
        if (!k) {
            free(l);
            if (p < end) {
                snd_sts_policy_clear(out);
                return parse_fail(err, line, "empty line");
            }
            continue;
        }
        char *colon = strchr(l, ':');
        if (!colon || colon == l) {
            free(l);
            snd_sts_policy_clear(out);
            return parse_fail(err, line, "not a \"key: value\" line");
        }
        *colon = 0;
        const char *key = l, *val = colon + 1;
        while (*val == ' ' || *val == '\t')
            val++;
        for (const char *q = key; *q; q++)
            if (!isalnum((unsigned char)*q) && *q != '_' && *q != '-' && *q != '.') {
                free(l);
                snd_sts_policy_clear(out);
                return parse_fail(err, line, "bad key");
            }
        const char *why = NULL;
        if (line == 1 && strcmp(key, "version"))
            why = "the first line must be \"version: STSv1\"";
        else if (!strcmp(key, "version")) {
            if (have_version)
                why = "version given twice";
            else if (strcmp(val, "STSv1"))
                why = "version is not STSv1";
            have_version = true;
        } else if (!strcmp(key, "mode")) {
            if (have_mode)
                why = "mode given twice";
            else if (!strcmp(val, "enforce"))
                out->mode = SND_STS_ENFORCE;
            else if (!strcmp(val, "testing"))
                out->mode = SND_STS_TESTING;
            else if (!strcmp(val, "none"))
                out->mode = SND_STS_NONE;
            else
                why = "mode must be enforce, testing or none";
            have_mode = true;
        } else if (!strcmp(key, "max_age")) {
            size_t d = strspn(val, "0123456789");
            if (have_age)
                why = "max_age given twice";
            else if (!d || d > 10 || val[d])
                why = "max_age must be 1 to 10 digits";
            else if (strtoll(val, NULL, 10) > STS_MAX_AGE_S)
                why = "max_age exceeds 31557600";
            else
                out->max_age_s = strtoll(val, NULL, 10);
            have_age = true;
        } else if (!strcmp(key, "mx")) {
            char *h = xstrdup(val);
            sl_lower(h);
            if (!valid_pattern(h)) {
                free(h);
                why = "mx is not a host name or *.host name";
            } else {
                out->mx = xrealloc(out->mx, (out->n_mx + 1) * sizeof *out->mx);
                out->mx[out->n_mx++] = h;
            }
        } /* else: an extension field, ignored (RFC 8461 3.2) */
        free(l);
        if (why) {
            snd_sts_policy_clear(out);
            return parse_fail(err, line, why);
        }
    }
    const char *why = !have_version ? "no version"
                      : !have_mode  ? "no mode"
                      : !have_age   ? "no max_age"
                      : out->mode != SND_STS_NONE && !out->n_mx ? "no mx"
                                                                  : NULL;
    if (why) {
        snd_sts_policy_clear(out);
        return parse_fail(err, 0, why);
    }
    return 0;
}

int snd_sts_txt_id(const char *txt, char id[33], char **err)
{
    /* sts-text-record = sts-version 1*(sts-sep sts-field) [sts-sep];
     * fields are "name=value" separated by ";" and optional spaces. */
    if (strncmp(txt, "v=STSv1", 7) || (txt[7] && txt[7] != ';' && txt[7] != ' ' && txt[7] != '\t'))
        return parse_fail(err, 0, "TXT record does not start with v=STSv1");
    bool have = false;
    const char *p = txt + 7;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != ';')
            return parse_fail(err, 0, "fields must be separated by ';'");
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *eq = strchr(p, '=');
        const char *semi = strchr(p, ';');
        if (!eq || (semi && semi < eq))
            return parse_fail(err, 0, "a field is not name=value");
        size_t vl = strcspn(eq + 1, "; \t");
        if (eq - p == 2 && !strncmp(p, "id", 2)) {
            if (have)
                return parse_fail(err, 0, "id given twice");
            if (!vl || vl > 32)
                return parse_fail(err, 0, "id must be 1 to 32 letters and digits");
            for (size_t i = 0; i < vl; i++)
                if (!isalnum((unsigned char)eq[1 + i]))
                    return parse_fail(err, 0, "id must be 1 to 32 letters and digits");
            memcpy(id, eq + 1, vl);
            id[vl] = 0;
            have = true;
        }
        p = eq + 1 + vl;
    }
    if (!have)
        return parse_fail(err, 0, "TXT record has no id");
    return 0;
}

bool snd_sts_mx_match(const snd_sts_policy *p, const char *host)
{
    char *h = xstrdup(host);
    sl_lower(h);
    size_t hl = strlen(h);
    if (hl > 1 && h[hl - 1] == '.')
        h[--hl] = 0;
    bool ok = false;
    for (size_t i = 0; i < p->n_mx && !ok; i++) {
        const char *m = p->mx[i];
        if (!strncmp(m, "*.", 2)) {
            /* One label: "*.example.com" takes mx1.example.com, not
             * example.com nor a.b.example.com (RFC 8461 4.1). */
            const char *dot = strchr(h, '.');
            ok = dot && dot != h && !strcmp(dot + 1, m + 2);
        } else {
            ok = !strcmp(h, m);
        }
    }
    free(h);
    return ok;
}

/* ---- the cache --------------------------------------------------------- */

typedef struct sts_entry {
    char *domain;
    bool ready;             /* pol is the answer (else a first fetch is under way) */
    bool queued;            /* on the fetch queue or being fetched */
    snd_sts_policy pol;
    char id[33];
    int64_t expires_ms;     /* mono; pol (mode != NONE) holds until then */
    int64_t check_ms;       /* mono; the TXT record is looked at again then */
    struct sts_entry *qnext;
} sts_entry;

/* One lookup in the fetch thread. */
typedef struct sts_job {
    snd_mtasts *m;
    char *domain;
    char id[33];
} sts_job;

struct snd_mtasts {
    pthread_mutex_t mu;
    sl_map map;                 /* domain -> sts_entry, under mu */
    sts_entry *qhead, **qtail;  /* under mu */
    bool stop;                  /* under mu */
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t async;
    sl_dns *dns;
    char *ca_file;
    int64_t timeout_ms;
    int64_t recheck_ms;
    unsigned port;
};

/* Record the outcome of a lookup: pol (owned, moved in) with id, or a
 * failure (pol NULL, why set) or "no policy" (pol NULL, why NULL). */
static void sts_store(snd_mtasts *m, const char *domain, snd_sts_policy *pol, const char *id,
                      const char *why, bool unchanged)
{
    int64_t now = sl_mono_ms();
    int64_t retry = STS_RETRY_MS < m->recheck_ms ? STS_RETRY_MS : m->recheck_ms;
    const char *result = pol ? "ok" : why ? "error" : "none";
    if (!unchanged)
        sl_metric_inc("sluice_sender_mtasts_fetches_total",
                      !strcmp(result, "ok")      ? "result=\"ok\""
                      : !strcmp(result, "error") ? "result=\"error\""
                                                 : "result=\"none\"",
                      1);
    pthread_mutex_lock(&m->mu);
    sts_entry *e = sl_map_get(&m->map, domain);
    if (!e) {
        pthread_mutex_unlock(&m->mu);
        if (pol)
            snd_sts_policy_clear(pol);
        return;
    }
    e->queued = false;
    bool cached = e->ready && e->pol.mode != SND_STS_NONE && e->expires_ms > now;
    if (pol) {
        snd_sts_policy_clear(&e->pol);
        e->pol = *pol;
        snprintf(e->id, sizeof e->id, "%s", id);
        /* A policy just fetched is used for a minute at least, so that
         * max_age 0 cannot make every delivery wait for a fetch of its own. */
        e->expires_ms = now + (pol->max_age_s * 1000 > retry ? pol->max_age_s * 1000 : retry);
        e->check_ms = now + (pol->max_age_s * 1000 < m->recheck_ms ? pol->max_age_s * 1000
                                                                    : m->recheck_ms);
    } else if (unchanged) {
        int64_t left = e->expires_ms - now;
        e->check_ms = now + (left < m->recheck_ms ? left : m->recheck_ms);
    } else if (cached) {
        /* RFC 8461 5.1: a policy that cannot be refreshed stays in force
         * until it expires. */
        e->check_ms = now + retry;
    } else {
        snd_sts_policy_clear(&e->pol);
        e->id[0] = 0;
        if (why)
            e->pol.error = xstrdup(why);
        e->check_ms = now + (why ? retry : m->recheck_ms);
    }
    e->ready = true;
    pthread_mutex_unlock(&m->mu);
    if (why)
        sl_log_every(SL_LOG_WARN, domain, "MTA-STS %s: %s%s", domain, why,
                     cached ? " (the cached policy stays in force)" : "");
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    sl_buf *b = arg;
    if (b->len + size * n > STS_MAX_BODY)
        return 0; /* too large: curl fails the transfer */
    sl_buf_append(b, data, size * n);
    return size * n;
}

/* Runs in the fetch thread, blocking it (and only it). */
static void sts_fetch(sts_job *j, const char *ip)
{
    snd_mtasts *m = j->m;
    char url[600], resolve[600];
    char *host = xasprintf("mta-sts.%s", j->domain);
    if (m->port == 443)
        snprintf(url, sizeof url, "https://%s/.well-known/mta-sts.txt", host);
    else
        snprintf(url, sizeof url, "https://%s:%u/.well-known/mta-sts.txt", host, m->port);
    snprintf(resolve, sizeof resolve, strchr(ip, ':') ? "%s:%u:[%s]" : "%s:%u:%s", host, m->port,
             ip);
    free(host);
    struct curl_slist *res = curl_slist_append(NULL, resolve);
    sl_buf body = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *c = curl_easy_init();
    if (!c)
        sl_panic("curl_easy_init failed");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_RESOLVE, res);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L); /* RFC 8461 3.3: no redirects */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)m->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (m->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, m->ca_file);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sluice-sender");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    char *ctype = NULL;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
    char *why = NULL;
    if (rc != CURLE_OK)
        why = xasprintf("policy fetch %s failed: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    else if (status != 200)
        why = xasprintf("policy fetch %s: HTTP status %ld", url, status);
    else if (!ctype || strncasecmp(ctype, "text/plain", 10) ||
             (ctype[10] && ctype[10] != ';' && ctype[10] != ' '))
        why = xasprintf("policy fetch %s: media type %s, not text/plain", url,
                        ctype ? ctype : "(none)");
    curl_easy_cleanup(c);
    curl_slist_free_all(res);
    if (why) {
        sts_store(m, j->domain, NULL, NULL, why, false);
        free(why);
        sl_buf_free(&body);
        return;
    }
    snd_sts_policy pol;
    char *perr = NULL;
    if (snd_sts_parse(body.data ? body.data : "", body.len, &pol, &perr) < 0) {
        char *w = xasprintf("bad policy at %s: %s", url, perr);
        sts_store(m, j->domain, NULL, NULL, w, false);
        free(w);
        free(perr);
    } else {
        sl_info("MTA-STS %s: policy id %s, mode %s, %zu mx, max_age %lld", j->domain, j->id,
                snd_sts_mode_name(pol.mode), pol.n_mx, (long long)pol.max_age_s);
        sts_store(m, j->domain, &pol, j->id, NULL, false);
    }
    sl_buf_free(&body);
}

static void job_free(sts_job *j)
{
    free(j->domain);
    free(j);
}

static void on_host(const sl_dns_addr_result *r, void *arg)
{
    sts_job *j = arg;
    if (r->status == SL_DNS_CANCELLED) {
        job_free(j);
        return;
    }
    if (r->status != SL_DNS_OK || !r->n_addrs) {
        char *why = xasprintf("policy host mta-sts.%s has no address: %s", j->domain,
                              sl_dns_status_name(r->status));
        sts_store(j->m, j->domain, NULL, NULL, why, false);
        free(why);
    } else {
        sts_fetch(j, r->addrs[0].text);
    }
    job_free(j);
}

static void on_txt(const sl_dns_txt_result *r, void *arg)
{
    sts_job *j = arg;
    snd_mtasts *m = j->m;
    if (r->status == SL_DNS_CANCELLED) {
        job_free(j);
        return;
    }
    if (r->status == SL_DNS_NXDOMAIN || r->status == SL_DNS_NODATA) {
        sts_store(m, j->domain, NULL, NULL, NULL, false);
        job_free(j);
        return;
    }
    if (r->status != SL_DNS_OK) {
        char *why = xasprintf("TXT lookup of _mta-sts.%s failed: %s", j->domain,
                              sl_dns_status_name(r->status));
        sts_store(m, j->domain, NULL, NULL, why, false);
        free(why);
        job_free(j);
        return;
    }
    /* RFC 8461 3.1: records not starting with v=STSv1 are ignored; more
     * than one that does means no policy. */
    size_t n = 0;
    const char *rec = NULL;
    for (size_t i = 0; i < r->n_txt; i++)
        if (!strncmp(r->txt[i], "v=STSv1", 7)) {
            n++;
            rec = r->txt[i];
        }
    char id[33], *err = NULL;
    if (n != 1 || snd_sts_txt_id(rec, id, &err) < 0) {
        char *why = n > 1 ? xasprintf("_mta-sts.%s has %zu STSv1 records", j->domain, n)
                    : n   ? xasprintf("_mta-sts.%s: %s", j->domain, err)
                          : NULL;
        sts_store(m, j->domain, NULL, NULL, why, false);
        free(why);
        free(err);
        job_free(j);
        return;
    }
    pthread_mutex_lock(&m->mu);
    sts_entry *e = sl_map_get(&m->map, j->domain);
    bool same = e && e->ready && e->pol.mode != SND_STS_NONE && !strcmp(e->id, id) &&
                e->expires_ms > sl_mono_ms();
    pthread_mutex_unlock(&m->mu);
    if (same) {
        sts_store(m, j->domain, NULL, NULL, NULL, true);
        job_free(j);
        return;
    }
    snprintf(j->id, sizeof j->id, "%s", id);
    char *host = xasprintf("mta-sts.%s", j->domain);
    if (sl_dns_addr(m->dns, host, on_host, j) < 0) {
        char *why = xasprintf("bad policy host name %s", host);
        sts_store(m, j->domain, NULL, NULL, why, false);
        free(why);
        job_free(j);
    }
    free(host);
}

static void on_wake(uv_async_t *a)
{
    snd_mtasts *m = a->data;
    pthread_mutex_lock(&m->mu);
    sts_entry *q = m->qhead;
    m->qhead = NULL;
    m->qtail = &m->qhead;
    bool stop = m->stop;
    /* Copy the names: entries may be replaced once the lock is gone. */
    size_t n = 0;
    for (sts_entry *e = q; e; e = e->qnext)
        n++;
    char **names = xcalloc(n + 1, sizeof *names);
    n = 0;
    for (sts_entry *e = q; e; e = e->qnext)
        names[n++] = xstrdup(e->domain);
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        if (!stop) {
            sts_job *j = xcalloc(1, sizeof *j);
            j->m = m;
            j->domain = names[i];
            char *txt = xasprintf("_mta-sts.%s", names[i]);
            int rc = sl_dns_txt(m->dns, txt, on_txt, j);
            free(txt);
            if (rc < 0) {
                sts_store(m, names[i], NULL, NULL, "bad domain name", false);
                job_free(j);
            }
        } else {
            free(names[i]);
        }
    }
    free(names);
    if (stop) {
        sl_dns_free(m->dns);
        m->dns = NULL;
        uv_close((uv_handle_t *)&m->async, NULL);
    }
}

static void *sts_thread(void *arg)
{
    snd_mtasts *m = arg;
    uv_run(&m->loop, UV_RUN_DEFAULT);
    return NULL;
}

snd_mtasts *snd_mtasts_new(const sl_config *cfg, char **err)
{
    snd_mtasts *m = xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    sl_map_init(&m->map);
    m->qtail = &m->qhead;
    m->ca_file = cfg->sender.tls_ca_file ? xstrdup(cfg->sender.tls_ca_file) : NULL;
    m->timeout_ms = cfg->sender.mta_sts_fetch_timeout_ms;
    m->recheck_ms = cfg->sender.mta_sts_recheck_ms > 0 ? cfg->sender.mta_sts_recheck_ms : 300000;
    const char *pp = getenv("SLUICE_SENDER_MTASTS_PORT");
    m->port = pp && atoi(pp) > 0 && atoi(pp) < 65536 ? (unsigned)atoi(pp) : 443;
    uv_loop_init(&m->loop);
    m->dns = sl_dns_new(&m->loop, cfg, err);
    if (!m->dns) {
        uv_loop_close(&m->loop);
        sl_map_free(&m->map);
        free(m->ca_file);
        free(m);
        return NULL;
    }
    uv_async_init(&m->loop, &m->async, on_wake);
    m->async.data = m;
    if (pthread_create(&m->thread, NULL, sts_thread, m) != 0)
        sl_panic("mta-sts: cannot start the fetch thread");
    return m;
}

int snd_mtasts_get(snd_mtasts *m, const char *domain, snd_sts_policy *pol)
{
    char *d = xstrdup(domain);
    sl_lower(d);
    int64_t now = sl_mono_ms();
    bool wake = false;
    int rc = 1;
    pthread_mutex_lock(&m->mu);
    sts_entry *e = sl_map_get(&m->map, d);
    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->domain = xstrdup(d);
        sl_map_put(&m->map, d, e);
        sl_metric_set("sluice_sender_mtasts_policies", "", (double)m->map.count);
    }
    if (e->ready && e->pol.mode != SND_STS_NONE && e->expires_ms <= now)
        e->ready = false; /* expired: never used, fetched again before use */
    if (!e->queued && (!e->ready || e->check_ms <= now)) {
        e->queued = true;
        e->qnext = NULL;
        *m->qtail = e;
        m->qtail = &e->qnext;
        wake = true;
    }
    if (e->ready) {
        snd_sts_policy_copy(pol, &e->pol);
        rc = 0;
    }
    pthread_mutex_unlock(&m->mu);
    if (wake)
        uv_async_send(&m->async);
    free(d);
    return rc;
}

static int free_entry(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    sts_entry *e = val;
    snd_sts_policy_clear(&e->pol);
    free(e->domain);
    free(e);
    return 0;
}

void snd_mtasts_free(snd_mtasts *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_mutex_unlock(&m->mu);
    uv_async_send(&m->async);
    pthread_join(m->thread, NULL);
    uv_loop_close(&m->loop);
    sl_map_each(&m->map, free_entry, NULL);
    sl_map_free(&m->map);
    pthread_mutex_destroy(&m->mu);
    free(m->ca_file);
    free(m);
}
