/*
 * publish_dispatch - produce Dispatch (and Template) records from JSON
 * lines on stdin, for the sender's integration tests
 * (tests/integration/test_sender*.py).
 *
 *   publish_dispatch -c CFG < specs.jsonl
 *
 * Each line is one object. {"template": {"id": ..., "body": ...}} publishes
 * a Template to the templates topic (key: id). {"garbage": "text"} puts
 * those bytes on the dispatch topic as they are. Anything else is a
 * Dispatch: job_id, from, to (list), domain, raw, template_id, vars
 * (object), attempt, created_at_ms, expires_at_ms, mx ([{host, pref}]),
 * null_mx, site, pool, source_ip, ehlo, send_at_ms, rate, max_connections,
 * max_messages_per_connection, tls ("opportunistic"|"required"|"verify"|"disabled"),
 * route, socks5. Key: source_ip + "/" + site. Exits 0 once every record is
 * acknowledged, 1 otherwise.
 */
#include "config.h"
#include "kafka.h"
#include "util.h"
#include "tool_common.h"
#include "wire.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    sl_config *cfg;
    sl_producer *p = tool_start(argc, argv, "producer", &cfg);
    char *dtopic = sl_config_topic(cfg, "dispatch");
    char *ttopic = sl_config_topic(cfg, "templates");
    char line[1 << 16];
    int sent = 0;
    while (fgets(line, sizeof line, stdin)) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) {
            if (line[0] != '\n')
                fprintf(stderr, "bad line: %s\n", je.text);
            continue;
        }
        sl_buf b = SL_BUF_INIT;
        json_t *tm = json_object_get(o, "template");
        if (tm) {
            const char *id = tool_template(tm, &b);
            sl_producer_send(p, ttopic, id, strlen(id), b.data, b.len, NULL, 0, tool_ack_cb, NULL);
        } else if (json_object_get(o, "garbage")) {
            const char *g = tool_str(o, "garbage", "x");
            sl_producer_send(p, dtopic, "g", 1, g, strlen(g), NULL, 0, tool_ack_cb, NULL);
        } else {
            sl_job job;
            sluice__v1__job__init(&job);
            job.version = SLUICE_WIRE_VERSION;
            job.job_id = (char *)tool_str(o, "job_id", "job");
            job.tenant = (char *)tool_str(o, "tenant", "t1");
            job.mail_from = (char *)tool_str(o, "from", "sender@example.net");
            job.domain = (char *)tool_str(o, "domain", "example.test");
            job.site = (char *)tool_str(o, "site", job.domain);
            job.attempt = (uint32_t)tool_num(o, "attempt", 0);
            job.created_at_ms = tool_num(o, "created_at_ms", sl_now_ms());
            job.expires_at_ms = tool_num(o, "expires_at_ms", 0);
            job.null_mx = json_is_true(json_object_get(o, "null_mx"));
            char **rcpts = tool_strv(json_object_get(o, "to"), &job.n_recipients);
            job.recipients = rcpts;
            const char *raw = tool_str(o, "raw", NULL);
            if (raw) {
                job.raw.data = (uint8_t *)raw;
                job.raw.len = strlen(raw);
            }
            job.template_id = (char *)tool_str(o, "template_id", "");
            json_t *vars = json_object_get(o, "vars");
            size_t nv = json_object_size(vars), k = 0;
            Sluice__V1__Job__VarsEntry *ve = xcalloc(nv + 1, sizeof *ve);
            Sluice__V1__Job__VarsEntry **vp = xcalloc(nv + 1, sizeof *vp);
            const char *vk;
            json_t *vv;
            json_object_foreach(vars, vk, vv)
            {
                sluice__v1__job__vars_entry__init(&ve[k]);
                ve[k].key = (char *)vk;
                ve[k].value = (char *)json_string_value(vv);
                vp[k] = &ve[k];
                k++;
            }
            job.vars = vp;
            job.n_vars = k;
            json_t *mx = json_object_get(o, "mx");
            size_t nmx = json_array_size(mx);
            Sluice__V1__MxHost *mh = xcalloc(nmx + 1, sizeof *mh);
            Sluice__V1__MxHost **mp = xcalloc(nmx + 1, sizeof *mp);
            for (size_t i = 0; i < nmx; i++) {
                sluice__v1__mx_host__init(&mh[i]);
                mh[i].host = (char *)tool_str(json_array_get(mx, i), "host", "");
                mh[i].preference = (uint32_t)tool_num(json_array_get(mx, i), "pref", 10);
                mp[i] = &mh[i];
            }
            job.mx = mp;
            job.n_mx = nmx;

            sl_dispatch d;
            sluice__v1__dispatch__init(&d);
            d.version = SLUICE_WIRE_VERSION;
            d.job = &job;
            d.site = job.site;
            d.pool = (char *)tool_str(o, "pool", "default");
            d.source_ip = (char *)tool_str(o, "source_ip", "127.0.0.1");
            d.ehlo = (char *)tool_str(o, "ehlo", "mta1.example.net");
            d.send_at_ms = tool_num(o, "send_at_ms", 0);
            json_t *rate = json_object_get(o, "rate");
            d.rate_per_sec = json_is_number(rate) ? json_number_value(rate) : 0;
            d.max_connections = (uint32_t)tool_num(o, "max_connections", 0);
            d.max_messages_per_connection = (uint32_t)tool_num(o, "max_messages_per_connection", 0);
            const char *tls = tool_str(o, "tls", "opportunistic");
            d.tls = !strcmp(tls, "required")   ? SLUICE__V1__TLS_POLICY__TLS_REQUIRED
                    : !strcmp(tls, "disabled") ? SLUICE__V1__TLS_POLICY__TLS_DISABLED
                    : !strcmp(tls, "verify")   ? SLUICE__V1__TLS_POLICY__TLS_VERIFY
                                               : SLUICE__V1__TLS_POLICY__TLS_OPPORTUNISTIC;
            d.route = (char *)tool_str(o, "route", "");
            d.socks5 = (char *)tool_str(o, "socks5", "");
            sl_pack(&d.base, &b);
            char *key = xasprintf("%s/%s", d.source_ip, d.site);
            sl_producer_send(p, dtopic, key, strlen(key), b.data, b.len, NULL, 0, tool_ack_cb, NULL);
            free(key);
            free(rcpts);
            free(ve);
            free(vp);
            free(mh);
            free(mp);
        }
        sent++;
        sl_buf_free(&b);
        json_decref(o);
    }
    sl_producer_flush(p, 30000);
    sl_producer_free(p);
    free(dtopic);
    free(ttopic);
    sl_config_free(cfg);
    if (tool_acked != sent || tool_failed) {
        fprintf(stderr, "publish_dispatch: %d sent, %d acknowledged, %d failed\n", sent, tool_acked,
                tool_failed);
        return 1;
    }
    printf("%d\n", tool_acked);
    return 0;
}
