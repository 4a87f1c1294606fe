/*
 * cli_control - `sluice campaign` and `sluice site`: the controls on the
 * compacted control topic (key "campaign/TENANT/ID" or "site/NAME", value
 * a Control) that every scheduler running shape follows.
 *
 *   sluice campaign [-c FILE] [--tenant T] [--reason R] suspend|resume|cancel ID
 *   sluice campaign [-c FILE] [--tenant T] [--json] show ID
 *   sluice site [-c FILE] [--reason R] suspend|resume|purge NAME
 *   sluice site [-c FILE] [--json] show NAME
 *
 * suspend, resume, cancel and purge publish one Control (origin "cli") and
 * exit 0 only once Kafka acknowledged it. purge: every job to the site
 * created before now and not dispatched yet becomes a CANCELLED event
 * (control.proto), whether shape holds it or it waits on a retry topic. show reads the control topic to its end
 * (the newest record of the key is in force) and, for a campaign, counts
 * its events on the events topic (control.h, as GET /v1/campaigns/ID does).
 * The tenant defaults to
 * scheduler.default_tenant. Exit status: 0 ok, 1 Kafka failure, 2 bad
 * usage or configuration. Single-threaded.
 */
#include "cli.h"
#include "config.h"
#include "control.h"
#include "kafka.h"
#include "util.h"
#include "wire.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTROL_READ_MS 30000

static void campaign_usage(FILE *f)
{
    fputs("usage: sluice campaign [-c FILE] [--tenant T] [--reason R] suspend|resume|cancel ID\n"
          "       sluice campaign [-c FILE] [--tenant T] [--json] show ID\n",
          f);
}

static void site_usage(FILE *f)
{
    fputs("usage: sluice site [-c FILE] [--reason R] suspend|resume|purge NAME\n"
          "       sluice site [-c FILE] [--json] show NAME\n",
          f);
}

static void control_ack(void *arg, int err)
{
    int *rc = arg;
    *rc = err ? err : 1;
}

/* Publish one Control and wait for its acknowledgement. 0, or 1 after
 * saying why. */
static int control_publish(const char *cmd, const sl_config *cfg, bool site, const char *tenant,
                           const char *target, Sluice__V1__ControlAction action,
                           const char *reason)
{
    char *err = NULL;
    sl_producer *p = sl_producer_new(cfg, NULL, &err);
    if (!p) {
        fprintf(stderr, "sluice %s: %s\n", cmd, err);
        free(err);
        return 1;
    }
    sl_control c = SLUICE__V1__CONTROL__INIT;
    c.version = SLUICE_WIRE_VERSION;
    c.scope = site ? SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_SITE
                   : SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_CAMPAIGN;
    c.tenant = (char *)tenant;
    c.target = (char *)target;
    c.action = action;
    c.at_ms = sl_now_ms();
    c.reason = (char *)(reason ? reason : "");
    c.origin = "cli";
    sl_buf b = SL_BUF_INIT;
    sl_pack(&c.base, &b);
    char *key = sl_control_record_key(&c);
    char *topic = sl_config_topic(cfg, "control");
    int acked = 0;
    int rc = sl_producer_send(p, topic, key, strlen(key), b.data, b.len, NULL, 0, control_ack,
                              &acked);
    if (!rc)
        rc = sl_producer_flush(p, 30000);
    if (!rc && acked != 1)
        rc = acked ? acked : SL_ETIMEOUT;
    if (rc)
        fprintf(stderr, "sluice %s: Kafka did not take the control record: %s\n", cmd,
                sl_strerror(rc));
    sl_producer_free(p);
    free(topic);
    free(key);
    sl_buf_free(&b);
    return rc ? 1 : 0;
}

static int control_show(const char *cmd, const sl_config *cfg, bool site, const char *tenant,
                        const char *target, bool json)
{
    char *key = sl_control_key(site, tenant, target);
    sl_control *c = NULL;
    char *err = NULL;
    int rc = sl_control_load(cfg, key, &c, CONTROL_READ_MS, &err);
    free(key);
    sl_campaign_counts n;
    memset(&n, 0, sizeof n);
    const char *what = "control";
    if (!rc && !site) {
        what = "events";
        rc = sl_campaign_count(cfg, tenant, target, &n, CONTROL_READ_MS, &err);
    }
    if (rc) {
        if (rc == SL_ETIMEOUT)
            fprintf(stderr, "sluice %s: the %s topic was not read to its end within %ds\n", cmd,
                    what, CONTROL_READ_MS / 1000);
        else
            fprintf(stderr, "sluice %s: %s\n", cmd, err ? err : sl_strerror(rc));
        free(err);
        sl_control_free(c);
        return 1;
    }
    json_t *j = json_object();
    json_object_set_new(j, site ? "site" : "campaign", json_string(target));
    if (!site)
        json_object_set_new(j, "tenant", json_string(tenant));
    json_object_set_new(j, "state", json_string(sl_control_state(c)));
    if (c) {
        json_object_set_new(j, "since_ms", json_integer(c->at_ms));
        json_object_set_new(j, "origin", json_string(c->origin ? c->origin : ""));
        json_object_set_new(j, "reason", json_string(c->reason ? c->reason : ""));
    }
    if (!site) {
        json_t *ev = json_object();
        json_object_set_new(ev, "jobs", json_integer((json_int_t)n.jobs));
        json_object_set_new(ev, "queued", json_integer((json_int_t)n.queued));
        for (int t = 1; strcmp(sl_event_type_name((Sluice__V1__EventType)t), "UNKNOWN"); t++)
            if (t != SLUICE__V1__EVENT_TYPE__EVENT_SHAPING) {
                char *name = xstrdup(sl_event_type_name((Sluice__V1__EventType)t));
                sl_lower(name);
                json_object_set_new(ev, name, json_integer((json_int_t)n.by[t]));
                free(name);
            }
        json_object_set_new(j, "events", ev);
    }
    if (json) {
        char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        puts(s);
        free(s);
    } else {
        printf("%s %s%s%s: %s", site ? "site" : "campaign", site ? "" : tenant, site ? "" : "/",
               target, sl_control_state(c));
        if (c && c->action != SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_RESUME)
            printf(" (%s%s%s)", c->origin ? c->origin : "", c->reason && *c->reason ? ": " : "",
                   c->reason ? c->reason : "");
        putchar('\n');
        if (!site) {
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(j, "events"), k, v)
                printf("  %-12s %lld\n", k, (long long)json_integer_value(v));
        }
    }
    json_decref(j);
    sl_control_free(c);
    return 0;
}

static int control_cmd(int argc, char **argv, bool site)
{
    const char *cmd = site ? "site" : "campaign";
    void (*usage)(FILE *) = site ? site_usage : campaign_usage;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"tenant", required_argument, NULL, 't'},
        {"reason", required_argument, NULL, 'r'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *tenant = NULL, *reason = NULL;
    bool json = false;
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "c:t:r:jh", opts, NULL)) != -1) {
        switch (o) {
        case 'c': path = optarg; break;
        case 't': tenant = optarg; break;
        case 'r': reason = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind + 2 != argc || (site && tenant)) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[optind], *target = argv[optind + 1];
    Sluice__V1__ControlAction action;
    bool show = !strcmp(sub, "show");
    if (!strcmp(sub, "suspend"))
        action = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_SUSPEND;
    else if (!strcmp(sub, "resume"))
        action = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_RESUME;
    else if (!strcmp(sub, "cancel") && !site)
        action = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_CANCEL;
    else if (!strcmp(sub, "purge") && site)
        action = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_PURGE;
    else if (show)
        action = SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_UNSPECIFIED;
    else {
        fprintf(stderr, "sluice %s: unknown action '%s'\n", cmd, sub);
        usage(stderr);
        return 2;
    }
    /* The names sluice-api accepts: a key part may not hold a '/'. */
    bool ok = *target && strlen(target) <= 255;
    for (const char *s = target; *s; s++)
        if ((unsigned char)*s <= 32 || *s == 127 || *s == '/')
            ok = false;
    if (!ok) {
        fprintf(stderr, "sluice %s: '%s': 1-255 printable characters without '/' or spaces\n",
                cmd, target);
        return 2;
    }
    if (reason && (strlen(reason) > 256 || strpbrk(reason, "\r\n"))) {
        fprintf(stderr, "sluice %s: --reason: a line of at most 256 characters\n", cmd);
        return 2;
    }
    sl_config *cfg = cli_config(cmd, path);
    if (!cfg)
        return 2;
    if (!tenant)
        tenant = cfg->scheduler.default_tenant ? cfg->scheduler.default_tenant : "";
    int status;
    if (cli_kafka_check(cmd, cfg, 0))
        status = 1;
    else if (show)
        status = control_show(cmd, cfg, site, tenant, target, json);
    else if ((status = control_publish(cmd, cfg, site, tenant, target, action, reason)) == 0)
        printf("%s %s%s%s: %s\n", cmd, site ? "" : tenant, site ? "" : "/", target,
               action == SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_RESUME   ? "resumed"
               : action == SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_CANCEL ? "cancelled"
               : action == SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_PURGE
                   ? "purged (what waits for it and was created before now)"
                   : "suspended");
    sl_config_free(cfg);
    return status;
}

int cli_campaign(int argc, char **argv)
{
    return control_cmd(argc, argv, false);
}

int cli_site(int argc, char **argv)
{
    return control_cmd(argc, argv, true);
}
