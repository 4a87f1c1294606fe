/*
 * cli_stats - `sluice stats`: outcome counts and delivery latency from the
 * events topic.
 *
 *   sluice stats [-c FILE] [--campaign C] [--tenant T]
 *                [--by site|pool|tenant|campaign|domain|source_ip]
 *                [--since T] [--json] [--timeout DURATION]
 *
 * Reads the events topic from the beginning to its end (common/reader),
 * keeps the events that pass the filters, drops repeats of one outcome
 * (same job, recipient, attempt and type: a sender that died may have
 * published twice, see DESIGN "Delivery semantics") and counts per group:
 * accepted, delivered, deferred, bounced (hard, soft, and by class),
 * expired, suppressed, rejected, complained, unsubscribed, plus the delivery latency of DELIVERED
 * events (timestamp_ms - created_at_ms: from acceptance to the receiving
 * MX's 250) as p50/p90/p99/max. Without --by there is one group, "total";
 * with --by a "total" row follows the groups.
 *
 * Output: an aligned table, then bounces by class; --json prints one object
 * {"groups":[{"group":..., "accepted":..., ..., "bounced_by_class":{...},
 * "latency_ms":{"p50":...}}], "total":{...}, "duplicates":N}.
 *
 * Exit status: 0, 1 on Kafka errors or --timeout before the end of the
 * topic, 2 on bad usage or configuration.
 */
#include "cli.h"
#include "stats_count.h"
#include "config.h"
#include "reader.h"
#include "map.h"
#include "wire.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void stats_usage(FILE *f)
{
    fputs("usage: sluice stats [-c FILE] [--campaign C] [--tenant T]\n"
          "                    [--by site|pool|tenant|campaign|domain|source_ip]\n"
          "                    [--since T] [--json] [--timeout DURATION]\n",
          f);
}

static void fmt_ms(int64_t ms, char out[32])
{
    if (ms < 0)
        snprintf(out, 32, "-");
    else if (ms < 1000)
        snprintf(out, 32, "%lldms", (long long)ms);
    else if (ms < 60000)
        snprintf(out, 32, "%.1fs", (double)ms / 1000.0);
    else if (ms < 3600000)
        snprintf(out, 32, "%lldm%02llds", (long long)(ms / 60000), (long long)(ms / 1000 % 60));
    else
        snprintf(out, 32, "%lldh%02lldm", (long long)(ms / 3600000), (long long)(ms / 60000 % 60));
}

static void stats_row(const sluice_stats_group *g, int w)
{
    char p50[32], p90[32], p99[32], mx[32];
    fmt_ms(sluice__stats_pct(g->lat, g->n_lat, 50), p50);
    fmt_ms(sluice__stats_pct(g->lat, g->n_lat, 90), p90);
    fmt_ms(sluice__stats_pct(g->lat, g->n_lat, 99), p99);
    fmt_ms(g->n_lat ? g->lat[g->n_lat - 1] : -1, mx);
    printf("%-*s %9llu %9llu %8llu %8llu %5llu %5llu %7llu %10llu %8llu %10llu %12llu %8s %8s %8s %8s\n",
           w, g->name, (unsigned long long)g->accepted, (unsigned long long)g->delivered,
           (unsigned long long)g->deferred, (unsigned long long)g->bounced,
           (unsigned long long)g->hard, (unsigned long long)g->soft, (unsigned long long)g->expired,
           (unsigned long long)g->suppressed, (unsigned long long)g->rejected,
           (unsigned long long)g->complained, (unsigned long long)g->unsubscribed, p50, p90, p99, mx);
}

static const char *stats_key(const sl_event *e, const char *by)
{
    if (!strcmp(by, "site"))
        return e->site;
    if (!strcmp(by, "pool"))
        return e->pool;
    if (!strcmp(by, "tenant"))
        return e->tenant;
    if (!strcmp(by, "campaign"))
        return e->campaign;
    if (!strcmp(by, "domain"))
        return e->domain;
    return e->source_ip;
}

/* --by site|pool|source_ip: those are known only once a job was routed,
 * so its ACCEPTED (and any other event before routing) names none. Such an
 * event is held (type and bounce fields only) under its job and recipient
 * and counted at the end in the group a later event of the same job and
 * recipient named; one never routed (suppressed, rejected) in
 * "(unrouted)". */
typedef struct stats_held {
    char *jr; /* "job_id\x1frecipient" */
    sl_event ev;
} stats_held;

static bool stats_routed_key(const char *by)
{
    return !strcmp(by, "site") || !strcmp(by, "pool") || !strcmp(by, "source_ip");
}

static char *stats_jr(const sl_event *e)
{
    return xasprintf("%s\x1f%s", e->job_id ? e->job_id : "", e->recipient ? e->recipient : "");
}

/* --since as in `sluice events`: a duration back, epoch ms, or a date. */
static int stats_since(const char *s, int64_t *out)
{
    int y, mo, d, h = 0, mi = 0, se = 0, used = 0;
    size_t n = strlen(s);
    if ((sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) == 3 && (size_t)used == n) ||
        (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &used) == 6 &&
         ((size_t)used == n || ((size_t)used == n - 1 && s[used] == 'Z')))) {
        struct tm tm = {.tm_year = y - 1900,
                        .tm_mon = mo - 1,
                        .tm_mday = d,
                        .tm_hour = h,
                        .tm_min = mi,
                        .tm_sec = se};
        *out = (int64_t)timegm(&tm) * 1000;
        return 0;
    }
    char *e;
    long long v = strtoll(s, &e, 10);
    if (*s && !*e && v > 100000000000LL) {
        *out = v;
        return 0;
    }
    int64_t dur;
    if (sl_parse_duration_ms(s, &dur) == 0 && dur >= 0) {
        *out = sl_now_ms() - dur;
        return 0;
    }
    return SL_EPARSE;
}

int cli_stats(int argc, char **argv)
{
    enum { O_CAMPAIGN = 256, O_TENANT, O_BY, O_SINCE, O_JSON, O_TIMEOUT };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"campaign", required_argument, NULL, O_CAMPAIGN},
        {"tenant", required_argument, NULL, O_TENANT},
        {"by", required_argument, NULL, O_BY},
        {"since", required_argument, NULL, O_SINCE},
        {"json", no_argument, NULL, O_JSON},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *const bys[] = {"site", "pool", "tenant", "campaign", "domain", "source_ip"};
    const char *path = getenv("SLUICE_CONFIG");
    const char *campaign = NULL, *tenant = NULL, *by = NULL;
    int64_t since = 0, timeout_ms = 300000;
    bool json = false;
    int o, ostatus = -1;
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &path, stats_usage, &ostatus)) != -1) {
        switch (o) {
        case O_CAMPAIGN:
            campaign = optarg;
            break;
        case O_TENANT:
            tenant = optarg;
            break;
        case O_JSON:
            json = true;
            break;
        case O_BY: {
            by = NULL;
            for (size_t i = 0; i < sizeof bys / sizeof bys[0]; i++)
                if (!strcmp(optarg, bys[i]))
                    by = bys[i];
            if (!by) {
                fprintf(stderr,
                        "sluice stats: --by: '%s' is not site, pool, tenant, campaign, "
                        "domain or source_ip\n",
                        optarg);
                return 2;
            }
            break;
        }
        case O_SINCE:
            if (stats_since(optarg, &since) != 0) {
                fprintf(stderr, "sluice stats: --since: cannot parse '%s'\n", optarg);
                return 2;
            }
            break;
        case O_TIMEOUT:
            if (sl_parse_duration_ms(optarg, &timeout_ms) != 0 || timeout_ms <= 0) {
                fprintf(stderr, "sluice stats: --timeout: '%s' is not a duration\n", optarg);
                return 2;
            }
            break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    if (optind != argc) {
        fprintf(stderr, "sluice stats: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    sl_config *cfg;
    char *topic;
    sl_reader *r;
    int orc = cli_open_reader("stats", path, timeout_ms, "events", 0, &cfg, &topic, &r);
    if (orc)
        return orc;
    sluice_stats st = {0};
    sluice__stats_init(&st);
    bool hold = by && stats_routed_key(by);
    sl_map where; /* job+recipient -> group name (owned) */
    sl_map_init(&where);
    stats_held *held = NULL;
    size_t n_held = 0, cap_held = 0;
    int rc = 0;
    int64_t deadline = sl_mono_ms() + timeout_ms;
    while (!sl_reader_at_end(r)) {
        if (sl_mono_ms() >= deadline) {
            fprintf(stderr,
                    "sluice stats: the end of %s was not reached in time; partial "
                    "counts\n",
                    topic);
            rc = 1;
            break;
        }
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m)
            continue;
        sl_event *e = NULL;
        const char *why;
        if (m->payload && sl_event_decode(m->payload, m->len, &e, &why) == 0) {
            if ((!campaign || !strcmp(campaign, e->campaign ? e->campaign : "")) &&
                (!tenant || !strcmp(tenant, e->tenant ? e->tenant : "")) &&
                (!since || !e->timestamp_ms || e->timestamp_ms >= since)) {
                if (sluice__stats_seen(&st, e)) {
                    st.duplicates++;
                } else {
                    sluice__stats_add(&st.total, e);
                    const char *key = by ? stats_key(e, by) : NULL;
                    if (hold && (!key || !*key)) {
                        if (n_held == cap_held) {
                            cap_held = cap_held ? cap_held * 2 : 256;
                            held = xrealloc(held, cap_held * sizeof *held);
                        }
                        stats_held *h = &held[n_held++];
                        h->jr = stats_jr(e);
                        h->ev = (sl_event)SLUICE__V1__EVENT__INIT;
                        h->ev.type = e->type;
                        h->ev.bounce_hard = e->bounce_hard;
                        h->ev.bounce_class = e->bounce_class;
                    } else if (by) {
                        if (hold) {
                            char *jr = stats_jr(e);
                            if (!sl_map_get(&where, jr))
                                free(sl_map_put(&where, jr, xstrdup(key)));
                            free(jr);
                        }
                        sluice__stats_add(sluice__stats_group(&st, key), e);
                    }
                }
            }
            sl_event_free(e);
        }
        rd_kafka_message_destroy(m);
    }
    sl_reader_free(r);
    for (size_t i = 0; i < n_held; i++) {
        const char *g = sl_map_get(&where, held[i].jr);
        sluice__stats_add(sluice__stats_group(&st, g ? g : "(unrouted)"), &held[i].ev);
        free(held[i].jr);
    }
    free(held);
    for (size_t i = 0; i < where.n_slots; i++)
        for (sl_map_ent *e = where.slots[i]; e; e = e->next)
            free(e->val);
    sl_map_free(&where);

    sluice__stats_finish(&st);

    if (json) {
        sl_buf b = SL_BUF_INIT;
        sl_buf_puts(&b, "{\"groups\":[");
        for (size_t i = 0; i < st.n; i++) {
            if (i)
                sl_buf_putc(&b, ',');
            sluice__stats_group_json(&st.g[i], &b);
        }
        sl_buf_puts(&b, "],\"total\":");
        sluice__stats_group_json(&st.total, &b);
        sl_buf_printf(&b, ",\"duplicates\":%llu}\n", (unsigned long long)st.duplicates);
        fputs(b.data, stdout);
        sl_buf_free(&b);
    } else {
        int w = 12;
        for (size_t i = 0; i < st.n; i++)
            if ((int)strlen(st.g[i].name) > w)
                w = (int)strlen(st.g[i].name);
        if (w > 40)
            w = 40;
        printf("%-*s %9s %9s %8s %8s %5s %5s %7s %10s %8s %10s %12s %8s %8s %8s %8s\n", w,
               by ? by : "", "ACCEPTED", "DELIVERED", "DEFERRED", "BOUNCED", "HARD", "SOFT",
               "EXPIRED", "SUPPRESSED", "REJECTED", "COMPLAINED", "UNSUBSCRIBED", "P50", "P90", "P99", "MAX");
        for (size_t i = 0; i < st.n; i++)
            stats_row(&st.g[i], w);
        stats_row(&st.total, w);
        bool any = false;
        for (int c = 0; c < SLUICE_STATS_CLASSES; c++)
            if (st.total.by_class[c]) {
                if (!any)
                    printf("\nbounces by class:\n");
                any = true;
                printf("  %-20s %llu\n", sl_bounce_class_name((Sluice__V1__BounceClass)c),
                       (unsigned long long)st.total.by_class[c]);
            }
        if (st.duplicates)
            printf("\n%llu duplicate events ignored\n", (unsigned long long)st.duplicates);
    }
    sluice__stats_free(&st);
    free(topic);
    sl_config_free(cfg);
    return rc;
}
