/*
 * sched_tool - produce Jobs and read back scheduler topics, for the
 * scheduler's integration tests (tests/integration/test_scheduler*.py).
 *
 *   sched_tool produce -c CFG [--topic SUFFIX] [--key K] --to A[,B] [--count N]
 *                      [--priority bulk|normal|transactional] [--pool P]
 *                      [--tenant T] [--campaign C] [--not-before-ms MS] [--expires-at-ms MS]
 *                      [--created-at-ms MS] [--garbage] [--version N] [--id PREFIX]
 *                      [--domains N [--sites M]] [--tiny]
 *   sched_tool dump -c CFG --topic SUFFIX [--count N] [--timeout MS]
 *   sched_tool watermarks -c CFG --topic SUFFIX
 *   sched_tool event -c CFG --type deferred|bounced|delivered|complained|unsubscribed --site S --source-ip IP
 *                    --code N --enh X.Y.Z --reply TEXT [--to A] [--tenant T]
 *                    [--bounce-class NAME] [--hard] [--down-for-ms MS]
 *   sched_tool suppress -c CFG --tenant T --to A [--remove]
 *   sched_tool state -c CFG --site S --source-ip IP --type throttled|suspended
 *                    [--rate R] [--down-for-ms MS] [--created-at-ms MS]
 *
 * produce sends N jobs (ids PREFIX-0..N-1) to the topic (default jobs),
 * keyed by the recipients' domain, and waits for every acknowledgement.
 * --domains N spreads the jobs over N domains: job i goes to the first
 * recipient's local part at d<k>.s<k % M>.<domain> (k = i % N, M from
 * --sites, default 1), for benchmarks with many domains and sites. --tiny
 * makes the smallest valid job (null sender, one-byte content), for
 * benchmarks that hold a million jobs in the dev broker.
 * event --created-at-ms MS stamps the event with MS instead of now.
 * event --down-for-ms MS sets destination_down_until_ms to now + MS (a
 * sender's "every MX of the site is down from this IP" deferral).
 * --garbage sends bytes that are not a protobuf. dump reads the topic from
 * the beginning until N records (or the end after timeout) and prints one
 * JSON object per record: the Dispatch, Job or Event fields the tests
 * assert on, plus the key, the record timestamp and any headers.
 * watermarks prints "PARTITION LOW HIGH" per partition, as the partition
 * leaders report them: a test that read a topic back checks with it that
 * it read every offset up to the high watermark (nothing pruned, nothing
 * left unread).
 */
#include "config.h"
#include "kafka.h"
#include "reader.h"
#include "util.h"
#include "tool_common.h"
#include "wire.h"
#include "sluice/v1/state.pb-c.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void json_job(sl_buf *b, const sl_job *j)
{
    sl_buf_puts(b, "\"job_id\":");
    sl_buf_json_str(b, j->job_id, strlen(j->job_id));
    sl_buf_puts(b, ",\"domain\":");
    sl_buf_json_str(b, j->domain, strlen(j->domain));
    sl_buf_puts(b, ",\"job_site\":");
    sl_buf_json_str(b, j->site, strlen(j->site));
    sl_buf_printf(b, ",\"priority\":%d,\"attempt\":%u,\"not_before_ms\":%lld,\"null_mx\":%s",
                  (int)j->priority, j->attempt, (long long)j->not_before_ms,
                  j->null_mx ? "true" : "false");
    sl_buf_puts(b, ",\"recipients\":[");
    for (size_t i = 0; i < j->n_recipients; i++) {
        if (i)
            sl_buf_putc(b, ',');
        sl_buf_json_str(b, j->recipients[i], strlen(j->recipients[i]));
    }
    sl_buf_puts(b, "],\"mx\":[");
    for (size_t i = 0; i < j->n_mx; i++) {
        if (i)
            sl_buf_putc(b, ',');
        sl_buf_json_str(b, j->mx[i]->host, strlen(j->mx[i]->host));
    }
    sl_buf_putc(b, ']');
}

static int watermarks(const sl_config *cfg, const char *suffix, int timeout_ms)
{
    char *topic = sl_config_topic(cfg, suffix);
    char errstr[512];
    rd_kafka_conf_t *c = sl_kafka_conf(cfg, "watermarks");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(c);
        fprintf(stderr, "sched_tool: %s\n", errstr);
        free(topic);
        return 1;
    }
    int rc = 1;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    if (e || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "sched_tool: metadata for %s: %s\n", topic,
                rd_kafka_err2str(e ? e : md->topic_cnt ? md->topics[0].err
                                                       : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
        goto out;
    }
    size_t n = (size_t)md->topics[0].partition_cnt;
    int64_t *lo = xcalloc(n ? n : 1, sizeof *lo), *hi = xcalloc(n ? n : 1, sizeof *hi);
    e = sl_kafka_watermarks(rk, topic, NULL, n, lo, hi, timeout_ms);
    if (e)
        fprintf(stderr, "sched_tool: watermarks of %s: %s\n", topic, rd_kafka_err2str(e));
    for (size_t i = 0; !e && i < n; i++)
        printf("%zu %lld %lld\n", i, (long long)lo[i], (long long)hi[i]);
    free(lo);
    free(hi);
    if (e)
        goto out;
    rc = 0;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    free(topic);
    return rc;
}

/* "PARTITION OFFSET" per partition of the topic: what group has committed
 * (-1001: nothing). */
static int committed(const sl_config *cfg, const char *suffix, const char *group, int timeout_ms)
{
    char *err = NULL;
    rd_kafka_t *rk = sl_kafka_assign_handle(cfg, "sched_tool", group, &err, NULL);
    if (!rk) {
        fprintf(stderr, "sched_tool: %s\n", err);
        free(err);
        return 1;
    }
    char *topic = sl_config_topic(cfg, suffix);
    int rc = 1;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_partition_list_t *l = NULL;
    if (e || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "sched_tool: metadata for %s: %s\n", topic,
                rd_kafka_err2str(e ? e : md->topic_cnt ? md->topics[0].err
                                                       : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
        goto out;
    }
    l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id);
    e = rd_kafka_committed(rk, l, timeout_ms);
    if (e) {
        fprintf(stderr, "sched_tool: committed offsets of %s: %s\n", group, rd_kafka_err2str(e));
        goto out;
    }
    for (int i = 0; i < l->cnt; i++)
        printf("%d %lld\n", l->elems[i].partition, (long long)l->elems[i].offset);
    rc = 0;
out:
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    free(topic);
    return rc;
}

static int dump(const sl_config *cfg, const char *suffix, int count, int timeout_ms)
{
    char *topic = sl_config_topic(cfg, suffix);
    char *err = NULL;
    sl_reader *r = sl_reader_new(cfg, topic, 0, &err);
    if (!r) {
        fprintf(stderr, "sched_tool: %s\n", err);
        return 1;
    }
    int n = 0;
    int64_t deadline = sl_mono_ms() + timeout_ms;
    while ((count <= 0 || n < count) && sl_mono_ms() < deadline) {
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m) {
            if (count <= 0 && sl_reader_at_end(r))
                break;
            continue;
        }
        sl_buf b = SL_BUF_INIT;
        sl_buf_puts(&b, "{\"key\":");
        if (m->key)
            sl_buf_json_str(&b, m->key, m->key_len);
        else
            sl_buf_puts(&b, "null");
        rd_kafka_timestamp_type_t tt;
        sl_buf_printf(&b, ",\"ts\":%lld,\"partition\":%d,\"offset\":%lld",
                      (long long)rd_kafka_message_timestamp(m, &tt), m->partition,
                      (long long)m->offset);
        rd_kafka_headers_t *hdrs = NULL;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
            const char *name;
            const void *val;
            size_t vlen;
            sl_buf_puts(&b, ",\"headers\":{");
            for (size_t i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &val, &vlen); i++) {
                if (i)
                    sl_buf_putc(&b, ',');
                sl_buf_json_str(&b, name, strlen(name));
                sl_buf_putc(&b, ':');
                sl_buf_json_str(&b, val ? val : "", val ? vlen : 0);
            }
            sl_buf_putc(&b, '}');
        }
        const char *why;
        if (!strcmp(suffix, "dispatch")) {
            sl_dispatch *d = NULL;
            if (m->payload && sl_dispatch_decode(m->payload, m->len, &d, &why) == 0) {
                sl_buf_puts(&b, ",\"site\":");
                sl_buf_json_str(&b, d->site, strlen(d->site));
                sl_buf_puts(&b, ",\"source_ip\":");
                sl_buf_json_str(&b, d->source_ip, strlen(d->source_ip));
                sl_buf_puts(&b, ",\"ehlo\":");
                sl_buf_json_str(&b, d->ehlo, strlen(d->ehlo));
                sl_buf_puts(&b, ",\"route\":");
                sl_buf_json_str(&b, d->route, strlen(d->route));
                sl_buf_puts(&b, ",\"pool\":");
                sl_buf_json_str(&b, d->pool, strlen(d->pool));
                sl_buf_printf(&b,
                              ",\"send_at_ms\":%lld,\"rate_per_sec\":%g,\"max_connections\":%u,"
                              "\"max_messages_per_connection\":%u,\"tls\":%d,\"repeat\":%s,",
                              (long long)d->send_at_ms, d->rate_per_sec, d->max_connections,
                              d->max_messages_per_connection, (int)d->tls,
                              d->repeat ? "true" : "false");
                json_job(&b, d->job);
                sl_dispatch_free(d);
            }
        } else if (!strcmp(suffix, "events") || !strcmp(suffix, "ledger")) {
            sl_event *e = NULL;
            if (m->payload && sl_event_decode(m->payload, m->len, &e, &why) == 0) {
                sl_buf_puts(&b, ",\"event\":");
                sl_event_json(e, &b);
                sl_event_free(e);
            }
        } else if (!strcmp(suffix, "control")) {
            Sluice__V1__Control *c =
                m->payload ? sluice__v1__control__unpack(NULL, m->len, m->payload) : NULL;
            if (c) {
                sl_buf_printf(&b, ",\"scope\":%d,\"action\":%d,\"at_ms\":%lld,\"tenant\":",
                              (int)c->scope, (int)c->action, (long long)c->at_ms);
                sl_buf_json_str(&b, c->tenant, strlen(c->tenant));
                sl_buf_puts(&b, ",\"target\":");
                sl_buf_json_str(&b, c->target, strlen(c->target));
                sl_buf_puts(&b, ",\"reason\":");
                sl_buf_json_str(&b, c->reason, strlen(c->reason));
                sl_buf_puts(&b, ",\"origin\":");
                sl_buf_json_str(&b, c->origin, strlen(c->origin));
                sluice__v1__control__free_unpacked(c, NULL);
            }
        } else if (!strcmp(suffix, "suppressions")) {
            sl_suppression *s = NULL;
            if (m->payload && sl_suppression_decode(m->payload, m->len, &s, &why) == 0) {
                sl_buf_puts(&b, ",\"reason\":");
                sl_buf_json_str(&b, s->reason, strlen(s->reason));
                sl_suppression_free(s);
            } else if (!m->payload) {
                sl_buf_puts(&b, ",\"tombstone\":true");
            }
        } else if (!strcmp(suffix, "state")) {
            Sluice__V1__SiteState *st =
                m->payload ? sluice__v1__site_state__unpack(NULL, m->len, m->payload) : NULL;
            if (st) {
                sl_buf_printf(&b, ",\"site\":");
                sl_buf_json_str(&b, st->site, strlen(st->site));
                sl_buf_puts(&b, ",\"pairs\":{");
                for (size_t i = 0; i < st->n_pairs; i++) {
                    const Sluice__V1__PairState *q = st->pairs[i];
                    if (i)
                        sl_buf_putc(&b, ',');
                    sl_buf_json_str(&b, q->source_ip, strlen(q->source_ip));
                    sl_buf_printf(&b,
                                  ":{\"day\":%lld,\"sent_today\":%u,\"state\":%d,"
                                  "\"rate\":%g,\"until_ms\":%lld,\"bucket_tokens\":%g,"
                                  "\"bucket_at_ms\":%lld}",
                                  (long long)q->day, q->sent_today, (int)q->state, q->rate,
                                  (long long)q->until_ms, q->bucket_tokens,
                                  (long long)q->bucket_at_ms);
                }
                sl_buf_puts(&b, "},\"limits\":[");
                for (size_t i = 0; i < st->n_limits; i++) {
                    const Sluice__V1__LimitState *q = st->limits[i];
                    sl_buf_printf(&b, "%s{\"limit\":%u,\"tenant\":", i ? "," : "", q->limit);
                    sl_buf_json_str(&b, q->tenant, strlen(q->tenant));
                    sl_buf_puts(&b, ",\"campaign\":");
                    sl_buf_json_str(&b, q->campaign, strlen(q->campaign));
                    sl_buf_printf(&b, ",\"tokens\":%g,\"at_ms\":%lld}", q->tokens,
                                  (long long)q->at_ms);
                }
                sl_buf_putc(&b, ']');
                sluice__v1__site_state__free_unpacked(st, NULL);
            }
        } else if (strcmp(suffix, "dlq")) {
            sl_job *j = NULL;
            if (m->payload && sl_job_decode(m->payload, m->len, &j, &why) == 0) {
                sl_buf_putc(&b, ',');
                json_job(&b, j);
                sl_job_free(j);
            }
        }
        sl_buf_putc(&b, '}');
        puts(b.data);
        fflush(stdout);
        sl_buf_free(&b);
        rd_kafka_message_destroy(m);
        n++;
    }
    sl_reader_free(r);
    free(topic);
    return count > 0 && n < count ? 1 : 0;
}

/* The end of a one-record command: wait for its acknowledgement (send
 * status rc), free the producer and the config; the exit status. */
static int one_acked(sl_producer *p, sl_config *cfg, int rc, int timeout_ms)
{
    if (rc || sl_producer_flush(p, timeout_ms) || tool_failed) {
        fprintf(stderr, "sched_tool: not acknowledged\n");
        return 1;
    }
    sl_producer_free(p);
    sl_config_free(cfg);
    puts("1 acked");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: sched_tool produce|dump|watermarks|committed|event|suppress -c CFG ...\n",
              stderr);
        return 2;
    }
    const char *cmd = argv[1];
    const char *cfg_path = NULL, *suffix = NULL, *key = NULL, *to = "a@example.com";
    const char *pool = "", *tenant = "", *campaign = "", *idp = "job";
    int count = 1, timeout = 20000, prio = 0, version = SLUICE_WIRE_VERSION;
    int ndomains = 0, nsites = 1;
    bool tiny = false;
    long long not_before = 0, expires = 0, created = 0, down_for = 0;
    bool garbage = false, hard = false, remove_ = false;
    const char *etype = "deferred", *site = "", *sip = "", *enh = "", *reply = "", *bclass = NULL;
    int code = 0;
    double rate = 0;
    static const struct option opts[] = {
        {"config", 1, 0, 'c'}, {"topic", 1, 0, 't'},  {"key", 1, 0, 'k'},
        {"to", 1, 0, 'T'},     {"count", 1, 0, 'n'},  {"priority", 1, 0, 'P'},
        {"pool", 1, 0, 'p'},   {"tenant", 1, 0, 'e'}, {"not-before-ms", 1, 0, 'b'},
        {"expires-at-ms", 1, 0, 'x'}, {"created-at-ms", 1, 0, 'C'}, {"garbage", 0, 0, 'g'},
        {"version", 1, 0, 'v'}, {"id", 1, 0, 'i'},    {"timeout", 1, 0, 'o'},
        {"type", 1, 0, 'y'},   {"site", 1, 0, 's'},   {"source-ip", 1, 0, 'I'},
        {"code", 1, 0, 'd'},   {"enh", 1, 0, 'E'},    {"reply", 1, 0, 'r'},
        {"bounce-class", 1, 0, 'B'}, {"hard", 0, 0, 'H'}, {"remove", 0, 0, 'R'},
        {"campaign", 1, 0, 'M'}, {"domains", 1, 0, 'D'}, {"sites", 1, 0, 'S'},
        {"tiny", 0, 0, 'Y'},   {"down-for-ms", 1, 0, 'W'}, {"rate", 1, 0, 'Q'},
        {0, 0, 0, 0}};
    int o;
    optind = 2;
    while ((o = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
        switch (o) {
        case 'c': cfg_path = optarg; break;
        case 't': suffix = optarg; break;
        case 'k': key = optarg; break;
        case 'T': to = optarg; break;
        case 'n': count = atoi(optarg); break;
        case 'P':
            prio = !strcmp(optarg, "transactional") ? 2 : !strcmp(optarg, "normal") ? 1 : 0;
            break;
        case 'p': pool = optarg; break;
        case 'e': tenant = optarg; break;
        case 'b': not_before = atoll(optarg); break;
        case 'x': expires = atoll(optarg); break;
        case 'C': created = atoll(optarg); break;
        case 'g': garbage = true; break;
        case 'v': version = atoi(optarg); break;
        case 'i': idp = optarg; break;
        case 'o': timeout = atoi(optarg); break;
        case 'y': etype = optarg; break;
        case 's': site = optarg; break;
        case 'I': sip = optarg; break;
        case 'd': code = atoi(optarg); break;
        case 'E': enh = optarg; break;
        case 'r': reply = optarg; break;
        case 'B': bclass = optarg; break;
        case 'H': hard = true; break;
        case 'R': remove_ = true; break;
        case 'M': campaign = optarg; break;
        case 'D': ndomains = atoi(optarg); break;
        case 'S': nsites = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'Y': tiny = true; break;
        case 'W': down_for = atoll(optarg); break;
        case 'Q': rate = atof(optarg); break;
        default: return 2;
        }
    }
    char *err = NULL;
    sl_config *cfg = NULL;
    if (sl_config_load(cfg_path, &cfg, &err) != 0) {
        fprintf(stderr, "sched_tool: %s\n", err);
        return 2;
    }
    if (!strcmp(cmd, "dump")) {
        int rc = dump(cfg, suffix ? suffix : "dispatch", count, timeout);
        sl_config_free(cfg);
        return rc;
    }
    if (!strcmp(cmd, "committed")) {
        /* --key GROUP [--topic SUFFIX] */
        int rc = committed(cfg, suffix ? suffix : "events", key ? key : "", timeout);
        sl_config_free(cfg);
        return rc;
    }
    if (!strcmp(cmd, "watermarks")) {
        int rc = watermarks(cfg, suffix ? suffix : "jobs", timeout);
        sl_config_free(cfg);
        return rc;
    }
    sl_producer *p = tool_producer(cfg, "sched_tool");
    if (!strcmp(cmd, "state")) {
        /* One SiteState with one pair, as the scheduler writes it. */
        Sluice__V1__PairState ps = SLUICE__V1__PAIR_STATE__INIT;
        ps.source_ip = (char *)sip;
        ps.state = !strcmp(etype, "throttled") ? 1 : !strcmp(etype, "suspended") ? 2 : 0;
        ps.rate = rate;
        if (down_for > 0)
            ps.until_ms = sl_now_ms() + down_for;
        Sluice__V1__PairState *pp[] = {&ps};
        Sluice__V1__SiteState st = SLUICE__V1__SITE_STATE__INIT;
        st.version = SLUICE_WIRE_VERSION;
        st.site = (char *)site;
        st.updated_at_ms = created ? created : sl_now_ms();
        st.pairs = pp;
        st.n_pairs = 1;
        sl_buf b = SL_BUF_INIT;
        sl_pack(&st.base, &b);
        char *t = sl_config_topic(cfg, "state");
        int rc = sl_producer_send(p, t, site, strlen(site), b.data, b.len, NULL, 0, tool_ack_cb, NULL);
        free(t);
        sl_buf_free(&b);
        return one_acked(p, cfg, rc, timeout);
    }
    if (!strcmp(cmd, "event") || !strcmp(cmd, "suppress")) {
        int rc;
        if (!strcmp(cmd, "event")) {
            sl_event e = SLUICE__V1__EVENT__INIT;
            e.version = SLUICE_WIRE_VERSION;
            e.type = !strcmp(etype, "bounced")      ? SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED
                     : !strcmp(etype, "delivered")  ? SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED
                     : !strcmp(etype, "complained") ? SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED
                     : !strcmp(etype, "unsubscribed")
                         ? SLUICE__V1__EVENT_TYPE__EVENT_UNSUBSCRIBED
                         : SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED;
            e.job_id = (char *)idp;
            e.tenant = (char *)tenant;
            e.campaign = (char *)campaign;
            e.recipient = (char *)to;
            e.site = (char *)site;
            e.source_ip = (char *)sip;
            e.smtp_code = (uint32_t)code;
            e.enhanced_code = (char *)enh;
            e.reply = (char *)reply;
            e.timestamp_ms = created ? created : sl_now_ms();
            e.bounce_hard = hard;
            if (down_for > 0)
                e.destination_down_until_ms = e.timestamp_ms + down_for;
            if (bclass)
                sl_bounce_class_from_name(bclass, &e.bounce_class);
            rc = sl_event_publish(p, cfg, &e, tool_ack_cb, NULL);
        } else {
            char *t = sl_config_topic(cfg, "suppressions");
            char *k = xasprintf("%s/%s", tenant, to);
            sl_suppression su = SLUICE__V1__SUPPRESSION__INIT;
            su.version = SLUICE_WIRE_VERSION;
            su.tenant = (char *)tenant;
            su.address = (char *)to;
            su.reason = (char *)"manual";
            sl_buf b = SL_BUF_INIT;
            sl_pack(&su.base, &b);
            rc = sl_producer_send(p, t, k, strlen(k), remove_ ? NULL : b.data,
                                  remove_ ? 0 : b.len, NULL, 0, tool_ack_cb, NULL);
            sl_buf_free(&b);
            free(k);
            free(t);
        }
        return one_acked(p, cfg, rc, timeout);
    }
    if (strcmp(cmd, "produce"))
        return 2;
    char *topic = sl_config_topic(cfg, suffix ? suffix : "jobs");
    char *rcpts = xstrdup(to);
    char *list[64];
    size_t nr = 0;
    char *save = NULL;
    for (char *t = strtok_r(rcpts, ",", &save); t && nr < 64; t = strtok_r(NULL, ",", &save))
        list[nr++] = t;
    const char *at = nr ? strrchr(list[0], '@') : NULL;
    char *domain = xstrdup(at ? at + 1 : "");
    sl_lower(domain);
    char *lp = NULL; /* local part of the first recipient, for --domains */
    if (ndomains > 0 && nr) {
        lp = xstrdup(list[0]);
        char *a = strrchr(lp, '@');
        if (a)
            *a = 0;
    }
    char dom_i[300], rcpt_i[400];
    char *one[1] = {rcpt_i};
    for (int i = 0; i < count; i++) {
        sl_buf b = SL_BUF_INIT;
        const char *jdomain = domain;
        if (lp) {
            int k = i % ndomains;
            snprintf(dom_i, sizeof dom_i, "d%d.s%d.%s", k, k % nsites, domain);
            snprintf(rcpt_i, sizeof rcpt_i, "%s@%s", lp, dom_i);
            jdomain = dom_i;
        }
        if (garbage) {
            sl_buf_puts(&b, "\xff\xff this is not a protobuf");
        } else {
            sl_job j = SLUICE__V1__JOB__INIT;
            char id[128];
            snprintf(id, sizeof id, "%s-%d", idp, i);
            j.version = (uint32_t)version;
            j.job_id = id;
            j.tenant = (char *)tenant;
            j.campaign = (char *)campaign;
            j.pool = (char *)pool;
            j.priority = (Sluice__V1__Priority)prio;
            j.mail_from = tiny ? (char *)"" : (char *)"sender@example.net";
            j.recipients = lp ? one : list;
            j.n_recipients = lp ? 1 : nr;
            j.domain = (char *)jdomain;
            j.raw.data = (uint8_t *)(tiny ? "x" : "Subject: test\r\n\r\nhello\r\n");
            j.raw.len = strlen((char *)j.raw.data);
            j.created_at_ms = created ? created : sl_now_ms();
            j.expires_at_ms = expires;
            j.not_before_ms = not_before;
            sl_pack(&j.base, &b);
        }
        const char *k = key ? key : jdomain;
        if (sl_producer_send(p, topic, k, strlen(k), b.data, b.len, NULL, 0, tool_ack_cb, NULL)) {
            fprintf(stderr, "sched_tool: send failed\n");
            return 1;
        }
        sl_buf_free(&b);
    }
    int rc = sl_producer_flush(p, timeout);
    sl_producer_free(p);
    free(rcpts);
    free(domain);
    free(lp);
    free(topic);
    sl_config_free(cfg);
    if (rc || tool_failed) {
        fprintf(stderr, "sched_tool: %d acked, %d failed\n", tool_acked, tool_failed);
        return 1;
    }
    printf("%d acked\n", tool_acked);
    return 0;
}
