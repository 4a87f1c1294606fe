/*
 * sluice-publish-events - a test tool: publish synthetic Event records to
 * the events topic, as the pipeline's stages would.
 *
 *   sluice-publish-events [-c FILE] --count N [--prefix P] [--site S]
 *                         [--type DELIVERED|DEFERRED|BOUNCED|SHAPING]
 *                         [--code N] [--garbage K] [--ledger KEY]
 *
 * Event i gets job id "<P>-<i>" (P default "job"), recipient
 * "user<i>@example.test", attempt 1, now as its timestamp. --garbage K also
 * publishes K records that are not protobuf, for DLQ paths. --ledger KEY
 * publishes them to the ledger topic instead, with the dispatch key KEY,
 * as a sender's delivery ledger would (a ledger record whose event never
 * landed). Exits 0 once
 * Kafka acknowledged every record, 1 otherwise; 2 on bad usage.
 */
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "util.h"
#include "wire.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int failed;

static void on_ack(void *arg, int err)
{
    (void)arg;
    if (err)
        failed++;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *prefix = "job", *site = "example", *type = "DELIVERED";
    const char *ledger_key = NULL;
    long count = -1, garbage = 0, code = 250;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"count", required_argument, NULL, 'n'},
        {"prefix", required_argument, NULL, 'p'}, {"site", required_argument, NULL, 's'},
        {"type", required_argument, NULL, 't'},   {"code", required_argument, NULL, 'r'},
        {"garbage", required_argument, NULL, 'g'}, {"ledger", required_argument, NULL, 'l'},
        {NULL, 0, NULL, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "c:n:", opts, NULL)) != -1) {
        switch (o) {
        case 'c': path = optarg; break;
        case 'n': count = strtol(optarg, NULL, 10); break;
        case 'p': prefix = optarg; break;
        case 's': site = optarg; break;
        case 't': type = optarg; break;
        case 'r': code = strtol(optarg, NULL, 10); break;
        case 'g': garbage = strtol(optarg, NULL, 10); break;
        case 'l': ledger_key = optarg; break;
        default:
            fputs("usage: sluice-publish-events [-c FILE] --count N [--prefix P] [--site S] "
                  "[--type T] [--code N] [--garbage K] [--ledger KEY]\n",
                  stderr);
            return 2;
        }
    }
    if (count < 0 || garbage < 0)
        return 2;
    Sluice__V1__EventType ty = SLUICE__V1__EVENT_TYPE__EVENT_UNKNOWN;
    for (int t = 1; t <= 8; t++)
        if (!strcasecmp(type, sl_event_type_name((Sluice__V1__EventType)t)))
            ty = (Sluice__V1__EventType)t;
    if (ty == SLUICE__V1__EVENT_TYPE__EVENT_UNKNOWN) {
        fprintf(stderr, "sluice-publish-events: unknown type '%s'\n", type);
        return 2;
    }
    sl_log_init("publish", SL_LOG_WARN);
    sl_config *cfg = path ? sl_config_load_or_exit(path) : sl_config_default();
    char *err = NULL;
    sl_producer *p = sl_producer_new(cfg, NULL, &err);
    if (!p) {
        fprintf(stderr, "sluice-publish-events: %s\n", err);
        return 1;
    }
    for (long i = 0; i < count; i++) {
        sl_event e = SLUICE__V1__EVENT__INIT;
        char *job = xasprintf("%s-%ld", prefix, i);
        char *rcpt = xasprintf("user%ld@example.test", i);
        e.version = SLUICE_WIRE_VERSION;
        e.type = ty;
        e.job_id = job;
        e.recipient = rcpt;
        e.domain = "example.test";
        e.site = (char *)site;
        e.source_ip = "192.0.2.1";
        e.attempt = 1;
        e.timestamp_ms = sl_now_ms();
        e.stage = "sender";
        e.smtp_code = (uint32_t)code;
        e.enhanced_code = code >= 500 ? "5.1.1" : code >= 400 ? "4.7.0" : "2.0.0";
        e.reply = code >= 500 ? "550 5.1.1 no such user" : code >= 400 ? "421 4.7.0 slow down"
                                                                       : "250 2.0.0 ok";
        if (ty == SLUICE__V1__EVENT_TYPE__EVENT_SHAPING) {
            e.rate_per_sec = 5;
            e.reason = "halve";
        }
        if (ledger_key) {
            char *lt = sl_config_topic(cfg, "ledger");
            sl_buf b = SL_BUF_INIT;
            sl_pack(&e.base, &b);
            if (sl_producer_send(p, lt, ledger_key, strlen(ledger_key), b.data, b.len, NULL, 0,
                                 on_ack, NULL) != 0)
                failed++;
            sl_buf_free(&b);
            free(lt);
        } else if (sl_event_publish(p, cfg, &e, on_ack, NULL) != 0)
            failed++;
        free(job);
        free(rcpt);
        sl_producer_poll(p, 0);
    }
    char *topic = sl_config_topic(cfg, "events");
    for (long i = 0; i < garbage; i++) {
        char junk[32];
        int n = snprintf(junk, sizeof junk, "\xff\xffnot-protobuf-%ld", i);
        if (sl_producer_send(p, topic, "junk", 4, junk, (size_t)n, NULL, 0, on_ack, NULL) != 0)
            failed++;
    }
    free(topic);
    if (sl_producer_flush(p, 30000) != 0)
        failed++;
    sl_producer_free(p);
    sl_config_free(cfg);
    if (failed)
        fprintf(stderr, "sluice-publish-events: %d records failed\n", failed);
    return failed ? 1 : 0;
}
