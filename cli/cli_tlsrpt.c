/*
 * cli_tlsrpt - `sluice tls-report`: an RFC 8460 TLS-RPT aggregate report
 * (JSON) of one UTC day of the sender's TLS sessions, from the events topic.
 *
 *   sluice tls-report [-c FILE] --day YYYY-MM-DD [--org NAME] [--contact EMAIL]
 *                     [--domain D] [--timeout DURATION]
 *
 * Reads the events topic to its end (common/reader), keeps the sender's outcomes (DELIVERED,
 * DEFERRED, BOUNCED) whose timestamp falls in the day, drops repeats of one
 * outcome (stats_count.h), and counts one session per event that reached an
 * MX host or was refused by a TLS policy (tls_failure set). Sessions are
 * grouped per recipient domain and policy: "sts" when the event's
 * tls_policy is mta-sts-enforce or mta-sts-testing, else
 * "no-policy-found". A session is successful when it had TLS, no
 * tls_failure, and (under sts) a verified certificate; a failure's
 * result-type comes from its tls_failure / tls_verify_result:
 * certificate-host-mismatch, certificate-expired, certificate-not-trusted,
 * starttls-not-supported, else validation-failure. failure-details group
 * failures by result type, sending IP, MX host and address, with the
 * failure text as failure-reason-code.
 *
 * The events do not carry the policy text: policy-string lists the policy
 * mode only ("mode: enforce"), and mx-host the MX hosts the sessions went
 * to. --org defaults to the host name, --contact to postmaster@ the host
 * name; report-id is "DAY_ORG".
 *
 * Exit status: 0, 1 on Kafka errors or --timeout before the end of the
 * topic, 2 on bad usage or configuration.
 */
#include "cli.h"
#include "config.h"
#include "map.h"
#include "reader.h"
#include "stats_count.h"
#include "util.h"
#include "wire.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void tlsrpt_usage(FILE *f)
{
    fputs("usage: sluice tls-report [-c FILE] --day YYYY-MM-DD [--org NAME] [--contact EMAIL]\n"
          "                         [--domain D] [--timeout DURATION]\n",
          f);
}

/* One (domain, policy type) group. */
typedef struct rpt_policy {
    json_t *mx;         /* object used as a set of MX host names */
    json_t *details;    /* key -> failure-details object */
    const char *type;   /* "sts" or "no-policy-found" */
    const char *mode;   /* sts: the policy mode seen last */
    char *domain;
    long long ok, failed;
} rpt_policy;

static const char *result_type(const char *failure, const char *verify)
{
    const char *s = failure && *failure ? failure : verify ? verify : "";
    if (strstr(s, "hostname mismatch"))
        return "certificate-host-mismatch";
    if (strstr(s, "has expired"))
        return "certificate-expired";
    if (strstr(s, "self-signed") || strstr(s, "local issuer") || strstr(s, "unable to verify") ||
        strstr(s, "certificate verify failed") || strstr(s, "not trusted"))
        return "certificate-not-trusted";
    if (strstr(s, "STARTTLS") || strstr(s, "no TLS"))
        return "starttls-not-supported";
    return "validation-failure";
}

static bool sender_outcome(const sl_event *e)
{
    return e->type == SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED ||
           e->type == SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED ||
           e->type == SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED;
}

static void rpt_count(sl_map *groups, const sl_event *e)
{
    bool sts = e->tls_policy && !strncmp(e->tls_policy, "mta-sts-", 8);
    bool has_mx = e->mx_host && *e->mx_host;
    bool has_fail = e->tls_failure && *e->tls_failure;
    if (!has_mx && !has_fail)
        return; /* never reached an MX (DNS, a local refusal): no session */
    const char *type = sts ? "sts" : "no-policy-found";
    char *key = xasprintf("%s\x1f%s", e->domain ? e->domain : "", type);
    rpt_policy *p = sl_map_get(groups, key);
    if (!p) {
        p = xcalloc(1, sizeof *p);
        p->mx = json_object();
        p->details = json_object();
        p->type = type;
        p->domain = xstrdup(e->domain ? e->domain : "");
        sl_map_put(groups, key, p);
    }
    free(key);
    if (sts)
        p->mode = !strcmp(e->tls_policy, "mta-sts-enforce") ? "enforce" : "testing";
    if (has_mx)
        json_object_set_new(p->mx, e->mx_host, json_true());
    bool tls = e->tls_protocol && *e->tls_protocol;
    bool ok = tls && !has_fail && (!sts || e->tls_verified);
    if (ok) {
        p->ok++;
        return;
    }
    p->failed++;
    const char *rt = result_type(e->tls_failure, tls ? e->tls_verify_result : "no TLS");
    const char *src = e->source_ip ? e->source_ip : "";
    const char *mxh = has_mx ? e->mx_host : "";
    const char *mxip = e->mx_ip ? e->mx_ip : "";
    char *dk = xasprintf("%s|%s|%s|%s", rt, src, mxh, mxip);
    json_t *d = json_object_get(p->details, dk);
    if (!d) {
        d = json_object();
        json_object_set_new(d, "result-type", json_string(rt));
        if (*src)
            json_object_set_new(d, "sending-mta-ip", json_string(src));
        if (*mxh)
            json_object_set_new(d, "receiving-mx-hostname", json_string(mxh));
        if (*mxip)
            json_object_set_new(d, "receiving-ip", json_string(mxip));
        json_object_set_new(d, "failed-session-count", json_integer(0));
        const char *why = has_fail ? e->tls_failure : tls ? e->tls_verify_result : "no TLS";
        json_object_set_new(d, "failure-reason-code", json_string(why ? why : ""));
        json_object_set_new(p->details, dk, d);
    }
    json_t *c = json_object_get(d, "failed-session-count");
    json_integer_set(c, json_integer_value(c) + 1);
    free(dk);
}

static int policy_cmp(const void *a, const void *b)
{
    const rpt_policy *x = *(rpt_policy *const *)a, *y = *(rpt_policy *const *)b;
    int c = strcmp(x->domain, y->domain);
    return c ? c : strcmp(x->type, y->type);
}

int cli_tlsrpt(int argc, char **argv)
{
    enum { O_DAY = 256, O_ORG, O_CONTACT, O_DOMAIN, O_TIMEOUT };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"day", required_argument, NULL, O_DAY},
        {"org", required_argument, NULL, O_ORG},
        {"contact", required_argument, NULL, O_CONTACT},
        {"domain", required_argument, NULL, O_DOMAIN},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("SLUICE_CONFIG");
    const char *day = NULL, *org = NULL, *contact = NULL, *domain = NULL;
    int64_t timeout_ms = 300000;
    int o, ostatus = -1;
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &path, tlsrpt_usage, &ostatus)) != -1) {
        switch (o) {
        case O_DAY: day = optarg; break;
        case O_ORG: org = optarg; break;
        case O_CONTACT: contact = optarg; break;
        case O_DOMAIN: domain = optarg; break;
        case O_TIMEOUT:
            if (sl_parse_duration_ms(optarg, &timeout_ms) != 0 || timeout_ms <= 0) {
                fprintf(stderr, "sluice tls-report: --timeout: '%s' is not a duration\n", optarg);
                return 2;
            }
            break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    if (optind != argc) {
        fprintf(stderr, "sluice tls-report: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    int y, mo, d, used = 0;
    if (!day || sscanf(day, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || (size_t)used != strlen(day) ||
        mo < 1 || mo > 12 || d < 1 || d > 31) {
        fprintf(stderr, "sluice tls-report: --day YYYY-MM-DD is required%s%s%s\n",
                day ? " ('" : "", day ? day : "", day ? "' is not a date)" : "");
        return 2;
    }
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d};
    int64_t start = (int64_t)timegm(&tm) * 1000, end = start + 86400000;
    struct tm chk;
    time_t ts = (time_t)(start / 1000);
    gmtime_r(&ts, &chk);
    if (chk.tm_mday != d) {
        fprintf(stderr, "sluice tls-report: --day: '%s' is not a date\n", day);
        return 2;
    }
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    char *contact_def = xasprintf("postmaster@%s", host);

    sl_config *cfg;
    char *topic;
    sl_reader *r;
    /* From the beginning, filtered by timestamp, as `sluice stats --since`
     * does: producers may stamp records with their own clocks. */
    int orc = cli_open_reader("tls-report", path, timeout_ms, "events", 0, &cfg, &topic, &r);
    if (orc) {
        free(contact_def);
        return orc;
    }
    sluice_stats seen = {0};
    sluice__stats_init(&seen);
    sl_map groups;
    sl_map_init(&groups);
    int rc = 0;
    int64_t deadline = sl_mono_ms() + timeout_ms;
    while (!sl_reader_at_end(r)) {
        if (sl_mono_ms() >= deadline) {
            fprintf(stderr, "sluice tls-report: the end of %s was not reached in time\n", topic);
            rc = 1;
            break;
        }
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m)
            continue;
        sl_event *e = NULL;
        const char *why;
        if (m->payload && sl_event_decode(m->payload, m->len, &e, &why) == 0) {
            if (sender_outcome(e) && e->timestamp_ms >= start && e->timestamp_ms < end &&
                (!domain || !strcasecmp(domain, e->domain ? e->domain : "")) &&
                !sluice__stats_seen(&seen, e))
                rpt_count(&groups, e);
            sl_event_free(e);
        }
        rd_kafka_message_destroy(m);
    }
    sl_reader_free(r);
    sluice__stats_free(&seen);

    rpt_policy **list = xcalloc(groups.count + 1, sizeof *list);
    size_t n = 0;
    for (size_t i = 0; i < groups.n_slots; i++)
        for (sl_map_ent *ent = groups.slots[i]; ent; ent = ent->next)
            list[n++] = ent->val;
    qsort(list, n, sizeof *list, policy_cmp);

    char range[2][32];
    snprintf(range[0], sizeof range[0], "%04d-%02d-%02dT00:00:00Z", y, mo, d);
    snprintf(range[1], sizeof range[1], "%04d-%02d-%02dT23:59:59Z", y, mo, d);
    json_t *rep = json_object();
    json_object_set_new(rep, "organization-name", json_string(org ? org : host));
    json_t *dr = json_object();
    json_object_set_new(dr, "start-datetime", json_string(range[0]));
    json_object_set_new(dr, "end-datetime", json_string(range[1]));
    json_object_set_new(rep, "date-range", dr);
    json_object_set_new(rep, "contact-info", json_string(contact ? contact : contact_def));
    char *rid = xasprintf("%s_%s", day, org ? org : host);
    json_object_set_new(rep, "report-id", json_string(rid));
    free(rid);
    json_t *pols = json_array();
    for (size_t i = 0; i < n; i++) {
        rpt_policy *p = list[i];
        json_t *pol = json_object(), *pp = json_object();
        json_object_set_new(pp, "policy-type", json_string(p->type));
        if (p->mode) {
            json_t *ps = json_array();
            json_array_append_new(ps, json_string("version: STSv1"));
            char *ml = xasprintf("mode: %s", p->mode);
            json_array_append_new(ps, json_string(ml));
            free(ml);
            json_object_set_new(pp, "policy-string", ps);
        }
        json_object_set_new(pp, "policy-domain", json_string(p->domain));
        json_t *mxs = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(p->mx, k, v) json_array_append_new(mxs, json_string(k));
        json_object_set_new(pp, "mx-host", mxs);
        json_object_set_new(pol, "policy", pp);
        json_t *sum = json_object();
        json_object_set_new(sum, "total-successful-session-count", json_integer(p->ok));
        json_object_set_new(sum, "total-failure-session-count", json_integer(p->failed));
        json_object_set_new(pol, "summary", sum);
        json_t *fd = json_array();
        json_object_foreach(p->details, k, v) json_array_append(fd, v);
        if (json_array_size(fd))
            json_object_set_new(pol, "failure-details", fd);
        else
            json_decref(fd);
        json_array_append_new(pols, pol);
        json_decref(p->mx);
        json_decref(p->details);
        free(p->domain);
        free(p);
    }
    json_object_set_new(rep, "policies", pols);
    char *out = json_dumps(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (out) {
        fputs(out, stdout);
        fputc('\n', stdout);
        free(out);
    }
    json_decref(rep);
    free(list);
    sl_map_free(&groups);
    free(contact_def);
    free(topic);
    sl_config_free(cfg);
    return rc;
}
