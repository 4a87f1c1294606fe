/*
 * fault_publish - produce Job records (well-formed or hostile) from JSON
 * lines on stdin, for the fault suite (tests/fault/).
 *
 *   fault_publish -c CFG < specs.jsonl
 *
 * One object a line (read with getline, so a line may be many megabytes):
 *
 *   {"job_id", "to": [..], "from", "domain", "tenant", "campaign", "pool",
 *    "raw", "template_id", "vars": {..}, "meta": {..}, "version",
 *    "expires_at_ms", "key", "topic"}
 *       a Job on topic (suffix, default "jobs"), keyed by key (default the
 *       domain). Strings are JSON strings, so "\r", "\n" and "\u0000" reach
 *       the protobuf as bytes: a NUL cuts a C string, exactly as any C
 *       producer would send it, except in raw (bytes) which keeps it.
 *       "raw_pad": N appends N bytes of body ("x" lines) to raw.
 *       "truncate": N sends only the first N bytes of the packed Job.
 *   {"payload_hex": "...", "key", "topic"}  those bytes as the value.
 *   {"tombstone": true, "key", "topic"}    a null value (compaction's delete).
 *   Any record may add "headers": {"name": "value", ...} (at most 8).
 *   {"template": {"id", "body"}}            a Template on the templates topic.
 *
 * Every record is sent and the tool waits for every acknowledgement. It
 * prints "acked=A failed=F" and exits 0 when every record was acknowledged,
 * 1 otherwise (a record too large for Kafka is a failure the caller may
 * expect).
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

/* A map<string,string> from a JSON object; entries in *ve, pointers in *vp
 * (caller frees both). */
static size_t map_entries(json_t *obj, Sluice__V1__Job__VarsEntry **ve,
                          Sluice__V1__Job__VarsEntry ***vp)
{
    size_t n = json_object_size(obj), k = 0;
    *ve = xcalloc(n + 1, sizeof **ve);
    *vp = xcalloc(n + 1, sizeof **vp);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        sluice__v1__job__vars_entry__init(&(*ve)[k]);
        (*ve)[k].key = (char *)key;
        (*ve)[k].value = (char *)(json_is_string(v) ? json_string_value(v) : "");
        (*vp)[k] = &(*ve)[k];
        k++;
    }
    return k;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void pack_job(json_t *o, sl_buf *b)
{
    sl_job job;
    sluice__v1__job__init(&job);
    job.version = (uint32_t)tool_num(o, "version", SLUICE_WIRE_VERSION);
    job.job_id = (char *)tool_str(o, "job_id", "job");
    job.tenant = (char *)tool_str(o, "tenant", "");
    job.campaign = (char *)tool_str(o, "campaign", "");
    job.pool = (char *)tool_str(o, "pool", "");
    job.mail_from = (char *)tool_str(o, "from", "sender@example.net");
    job.domain = (char *)tool_str(o, "domain", "example.test");
    job.created_at_ms = tool_num(o, "created_at_ms", sl_now_ms());
    job.expires_at_ms = tool_num(o, "expires_at_ms", 0);
    job.not_before_ms = tool_num(o, "not_before_ms", 0);
    char **rcpts = tool_strv(json_object_get(o, "to"), &job.n_recipients);
    job.recipients = rcpts;
    sl_buf raw = SL_BUF_INIT;
    json_t *rawj = json_object_get(o, "raw");
    if (json_is_string(rawj))
        sl_buf_append(&raw, json_string_value(rawj), json_string_length(rawj));
    long long pad = tool_num(o, "raw_pad", 0);
    for (long long i = 0; i < pad; i += 78) {
        long long n = pad - i < 78 ? pad - i : 78;
        char line[80];
        memset(line, 'x', sizeof line);
        if (n >= 2) {
            line[n - 2] = '\r';
            line[n - 1] = '\n';
        }
        sl_buf_append(&raw, line, (size_t)n);
    }
    if (raw.len) {
        job.raw.data = (uint8_t *)raw.data;
        job.raw.len = raw.len;
    }
    job.template_id = (char *)tool_str(o, "template_id", "");
    Sluice__V1__Job__VarsEntry *ve, **vp, *me, **mp;
    job.n_vars = map_entries(json_object_get(o, "vars"), &ve, &vp);
    job.vars = vp;
    /* Job.meta has the same entry layout as vars (map<string,string>). */
    job.n_meta = map_entries(json_object_get(o, "meta"), &me, &mp);
    job.meta = (Sluice__V1__Job__MetaEntry **)mp;
    sl_pack(&job.base, b);
    long long cut = tool_num(o, "truncate", -1);
    if (cut >= 0 && (size_t)cut < b->len)
        b->len = (size_t)cut;
    free(rcpts);
    free(ve);
    free(vp);
    free(me);
    free(mp);
    sl_buf_free(&raw);
}

int main(int argc, char **argv)
{
    sl_config *cfg;
    sl_producer *p = tool_start(argc, argv, "fault_publish", &cfg);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int sent = 0, refused = 0;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &je);
        if (!o) {
            if (line[0] != '\n')
                fprintf(stderr, "fault_publish: bad line: %s\n", je.text);
            continue;
        }
        sl_buf b = SL_BUF_INIT;
        const char *topic_sfx = tool_str(o, "topic", "jobs");
        const char *key = NULL;
        bool tombstone = json_is_true(json_object_get(o, "tombstone"));
        json_t *tm = json_object_get(o, "template");
        if (tombstone) {
            key = tool_str(o, "key", "tombstone");
        } else if (tm) {
            key = tool_template(tm, &b);
            topic_sfx = "templates";
        } else if (json_is_string(json_object_get(o, "payload_hex"))) {
            const char *h = tool_str(o, "payload_hex", "");
            for (size_t i = 0; h[i] && h[i + 1]; i += 2) {
                int hi = hexval(h[i]), lo = hexval(h[i + 1]);
                if (hi < 0 || lo < 0)
                    break;
                sl_buf_putc(&b, (char)(hi * 16 + lo));
            }
            key = tool_str(o, "key", "hostile");
        } else {
            pack_job(o, &b);
            key = tool_str(o, "key", tool_str(o, "domain", "example.test"));
        }
        /* "headers": {"name": "value"} on any record (the retry stage's
         * mark, for one). */
        sl_header hdrs[8];
        size_t nh = 0;
        json_t *hj = json_object_get(o, "headers");
        const char *hk;
        json_t *hv;
        if (json_is_object(hj))
            json_object_foreach(hj, hk, hv) if (nh < 8 && json_is_string(hv))
                hdrs[nh++] = (sl_header){hk, json_string_value(hv)};
        char *topic = sl_config_topic(cfg, topic_sfx);
        const void *val = tombstone ? NULL : b.data ? b.data : "";
        int rc = sl_producer_send(p, topic, key, strlen(key), val, b.len,
                                  nh ? hdrs : NULL, nh, tool_ack_cb, NULL);
        if (rc) {
            fprintf(stderr, "fault_publish: send refused: %s\n", sl_strerror(rc));
            refused++;
        } else {
            sent++;
        }
        free(topic);
        sl_buf_free(&b);
        json_decref(o);
        if (sent % 1000 == 0)
            sl_producer_poll(p, 0);
    }
    free(line);
    sl_producer_flush(p, 60000);
    sl_producer_free(p);
    sl_config_free(cfg);
    printf("acked=%d failed=%d\n", tool_acked, tool_failed + refused);
    if (tool_acked != sent || tool_failed || refused)
        return 1;
    return 0;
}
