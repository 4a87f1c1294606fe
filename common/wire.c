/*
 * wire - see wire.h.
 */
#include "wire.h"
#include "budget.h"
#include "log.h"
#include "metrics.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Whether m, or a message inside it, kept an unknown field numbered 0.
 * protobuf-c 1.4 accepts field 0 when its tag is an overlong varint and
 * keeps it, but refuses the canonical tag it re-encodes it to: such a
 * record would decode here and fail one hop later. Found by fuzzing. */
static bool pb_has_field0(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (v[k] && pb_has_field0(v[k]))
                    return true;
        } else {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
            if (sub && pb_has_field0(sub))
                return true;
        }
    }
    return false;
}

#define DECODER(fn, type, desc, freefn)                                                \
    int fn(const void *p, size_t n, type **out, const char **why)                      \
    {                                                                                  \
        type *m = (type *)protobuf_c_message_unpack(&desc, NULL, n, p);                \
        if (!m || pb_has_field0(&m->base)) {                                           \
            if (m)                                                                     \
                freefn(m);                                                             \
            *why = "malformed protobuf";                                               \
            return SL_EPROTO;                                                          \
        }                                                                              \
        if (m->version == 0 || m->version > SLUICE_WIRE_VERSION) {                    \
            *why = m->version == 0 ? "missing wire version" : "unsupported wire version"; \
            freefn(m);                                                                 \
            return SL_EVERSION;                                                        \
        }                                                                              \
        *out = m;                                                                      \
        return 0;                                                                      \
    }

void sl_job_free(sl_job *j)
{
    if (j)
        protobuf_c_message_free_unpacked(&j->base, NULL);
}
void sl_dispatch_free(sl_dispatch *d)
{
    if (d)
        protobuf_c_message_free_unpacked(&d->base, NULL);
}
void sl_event_free(sl_event *e)
{
    if (e)
        protobuf_c_message_free_unpacked(&e->base, NULL);
}
void sl_suppression_free(sl_suppression *s)
{
    if (s)
        protobuf_c_message_free_unpacked(&s->base, NULL);
}
void sl_template_free(sl_template_msg *t)
{
    if (t)
        protobuf_c_message_free_unpacked(&t->base, NULL);
}

DECODER(sl_job_decode, sl_job, sluice__v1__job__descriptor, sl_job_free)
DECODER(sl_event_decode, sl_event, sluice__v1__event__descriptor, sl_event_free)
DECODER(sl_suppression_decode, sl_suppression, sluice__v1__suppression__descriptor,
        sl_suppression_free)
void sl_control_free(sl_control *c)
{
    if (c)
        protobuf_c_message_free_unpacked(&c->base, NULL);
}
DECODER(sl_control_decode, sl_control, sluice__v1__control__descriptor, sl_control_free)

char *sl_control_key(bool site, const char *tenant, const char *target)
{
    return site ? xasprintf("site/%s", target) : xasprintf("campaign/%s/%s", tenant, target);
}

char *sl_control_record_key(const sl_control *c)
{
    bool site = c->scope == SLUICE__V1__CONTROL_SCOPE__CONTROL_SCOPE_SITE;
    const char *target = c->target ? c->target : "";
    if (site && c->action == SLUICE__V1__CONTROL_ACTION__CONTROL_ACTION_PURGE)
        return xasprintf("purge/site/%s", target);
    return sl_control_key(site, c->tenant ? c->tenant : "", target);
}

DECODER(sl_template_decode, sl_template_msg, sluice__v1__template__descriptor, sl_template_free)

int sl_dispatch_decode(const void *p, size_t n, sl_dispatch **out, const char **why)
{
    sl_dispatch *d =
        (sl_dispatch *)protobuf_c_message_unpack(&sluice__v1__dispatch__descriptor, NULL, n, p);
    if (!d || pb_has_field0(&d->base)) {
        sl_dispatch_free(d);
        *why = "malformed protobuf";
        return SL_EPROTO;
    }
    if (d->version == 0 || d->version > SLUICE_WIRE_VERSION || !d->job ||
        d->job->version == 0 || d->job->version > SLUICE_WIRE_VERSION) {
        *why = !d->job ? "dispatch without a job" : "unsupported wire version";
        sl_dispatch_free(d);
        return SL_EVERSION;
    }
    *out = d;
    return 0;
}

/* A varint of at most max octets (protobuf-c reads tags and lengths of
 * at most 5, values of at most 10). */
static bool pb_varint(const uint8_t **p, const uint8_t *end, unsigned max, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned i = 0; i < max && *p < end; i++) {
        uint8_t c = *(*p)++;
        r |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

int sl_job_peek(const void *buf, size_t n, sl_job_fields *out, const char **why)
{
    memset(out, 0, sizeof *out);
    const uint8_t *p = buf, *end = p + n;
    uint64_t version = 0;
    while (p < end) {
        uint64_t tag, v = 0;
        /* The field number as protobuf-c reads it: 32 bits of the tag's
         * at most 5 octets, past the wire type. */
        if (!pb_varint(&p, end, 5, &tag))
            goto bad;
        uint32_t field = (uint32_t)(tag >> 3);
        if (field == 0)
            goto bad;
        unsigned wt = tag & 7;
        /* The fields peek reads, and the wire type each must have (0
         * varint, 2 length-delimited). Of the others protobuf-c checks
         * some and not all (a bool takes any): peek leaves them to it. */
        sl_span *s = NULL;
        unsigned want = 2;
        switch (field) {
        case 1: case 6: case 14: case 15: want = 0; break;
        case 3: s = &out->tenant; break;
        case 4: s = &out->campaign; break;
        case 5: s = &out->pool; break;
        case 9: s = &out->domain; break;
        case 18: s = &out->site; break;
        default: want = wt; break;
        }
        if (wt != want)
            goto bad;
        switch (wt) {
        case 0:
            if (!pb_varint(&p, end, 10, &v))
                goto bad;
            if (field == 1)
                version = (uint32_t)v;
            else if (field == 6)
                out->priority = (int32_t)v;
            else if (field == 14)
                out->created_at_ms = (int64_t)v;
            else if (field == 15)
                out->expires_at_ms = (int64_t)v;
            break;
        case 1:
            if (end - p < 8)
                goto bad;
            p += 8;
            break;
        case 2:
            if (!pb_varint(&p, end, 5, &v) || v > INT32_MAX || v > (uint64_t)(end - p))
                goto bad;
            if (s)
                *s = (sl_span){(const char *)p, (size_t)v};
            p += v;
            break;
        case 5:
            if (end - p < 4)
                goto bad;
            p += 4;
            break;
        default:
            goto bad;
        }
    }
    if (version == 0 || version > SLUICE_WIRE_VERSION) {
        *why = version == 0 ? "missing wire version" : "unsupported wire version";
        return SL_EVERSION;
    }
    return 0;
bad:
    *why = "malformed protobuf";
    return SL_EPROTO;
}

/* Does the length-delimited field at [p, p + n) hold a NUL, or, for a map
 * entry (key 1, value 2) or MxHost (host 1), does a string inside? */
static bool span_has_nul(const uint8_t *p, size_t n, bool nested)
{
    if (!nested)
        return memchr(p, 0, n) != NULL;
    const uint8_t *end = p + n;
    while (p < end) {
        uint64_t tag, v;
        if (!pb_varint(&p, end, 5, &tag))
            return false; /* the decoder judged the structure */
        unsigned wt = tag & 7;
        if (wt == 0) {
            if (!pb_varint(&p, end, 10, &v))
                return false;
        } else if (wt == 2) {
            if (!pb_varint(&p, end, 5, &v) || v > (uint64_t)(end - p))
                return false;
            if (memchr(p, 0, (size_t)v))
                return true;
            p += v;
        } else if (wt == 1 || wt == 5) {
            size_t k = wt == 1 ? 8 : 4;
            if ((size_t)(end - p) < k)
                return false;
            p += k;
        } else {
            return false;
        }
    }
    return false;
}

const char *sl_job_nul_field(const void *buf, size_t n)
{
    static const char *const names[] = {
        [2] = "job_id",      [3] = "tenant",    [4] = "campaign", [5] = "pool",
        [7] = "mail_from",   [8] = "recipients", [9] = "domain",  [11] = "template_id",
        [12] = "vars",       [17] = "meta",     [18] = "site",    [19] = "mx",
    };
    const uint8_t *p = buf, *end = p + n;
    while (p < end) {
        uint64_t tag, v;
        if (!pb_varint(&p, end, 5, &tag))
            return NULL;
        uint32_t field = (uint32_t)(tag >> 3);
        unsigned wt = tag & 7;
        if (wt == 0) {
            if (!pb_varint(&p, end, 10, &v))
                return NULL;
        } else if (wt == 2) {
            if (!pb_varint(&p, end, 5, &v) || v > (uint64_t)(end - p))
                return NULL;
            if (field < sizeof names / sizeof names[0] && names[field] &&
                span_has_nul(p, (size_t)v, field == 12 || field == 17 || field == 19))
                return names[field];
            p += v;
        } else if (wt == 1 || wt == 5) {
            size_t k = wt == 1 ? 8 : 4;
            if ((size_t)(end - p) < k)
                return NULL;
            p += k;
        } else {
            return NULL;
        }
    }
    return NULL;
}

void sl_pack(const ProtobufCMessage *m, sl_buf *b)
{
    sl_buf_reset(b);
    size_t n = protobuf_c_message_get_packed_size(m);
    sl_buf_reserve(b, n);
    protobuf_c_message_pack(m, (uint8_t *)b->data);
    b->len = n;
    b->data[n] = 0;
}

static void put_varint(sl_buf *b, uint64_t v)
{
    while (v >= 0x80) {
        sl_buf_putc(b, (char)(v | 0x80));
        v >>= 7;
    }
    sl_buf_putc(b, (char)v);
}

void sl_wire_put_varint(sl_buf *b, uint32_t field, uint64_t v)
{
    put_varint(b, (uint64_t)field << 3);
    put_varint(b, v);
}

void sl_wire_put_double(sl_buf *b, uint32_t field, double v)
{
    put_varint(b, (uint64_t)field << 3 | 1);
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    for (int i = 0; i < 8; i++)
        sl_buf_putc(b, (char)(u >> (8 * i))); /* little-endian */
}

void sl_wire_put_bytes(sl_buf *b, uint32_t field, const void *v, size_t len)
{
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, len);
    sl_buf_append(b, v, len);
}

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

const char *sl_job_id_check(const char *id)
{
    if (!id || !*id)
        return "no job id";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++, n++)
        if (*p < 0x21 || *p > 0x7e)
            return *p == '\r' || *p == '\n'
                       ? "job id contains CR or LF"
                       : "job id contains a space, a control character or non-ASCII";
    if (n > SL_BUDGET_JOB_ID_MAX)
        return "job id longer than 255 octets";
    return NULL;
}

void sl_job_id_new(char out[27])
{
    /* 48-bit millisecond clock then 80 random bits; within one
     * millisecond a thread increments the random part (with carry), so its
     * ids stay unique and sort in creation order, as ULIDs do. */
    static __thread uint64_t last_ms;
    static __thread unsigned char rnd[10];
    uint64_t ms = (uint64_t)sl_now_ms();
    if (ms > last_ms) {
        if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
            sl_panic("getrandom failed");
        rnd[0] &= 0x7f; /* headroom: increments never wrap within a ms */
        last_ms = ms;
    } else {
        ms = last_ms; /* the clock stepped back: keep ordering */
        for (int i = 9; i >= 0 && ++rnd[i] == 0; i--)
            ;
    }
    unsigned char r[10];
    memcpy(r, rnd, sizeof r);
    /* 128 bits: 6 bytes time + 10 bytes random, base32 into 26 chars. */
    unsigned char b[16];
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (8 * (5 - i)));
    memcpy(b + 6, r, 10);
    int bit = 0;
    for (int i = 0; i < 26; i++) {
        /* first char uses 3 bits (128 = 2 + 25*5 + 1? use 130 bits with pad) */
        int v = 0;
        for (int k = 0; k < 5; k++) {
            int pos = bit - 2 + k; /* two leading zero pad bits */
            int bitv = 0;
            if (pos >= 0 && pos < 128)
                bitv = (b[pos / 8] >> (7 - pos % 8)) & 1;
            v = (v << 1) | bitv;
        }
        bit += 5;
        out[i] = crockford[v];
    }
    out[26] = 0;
}

char *sl_message_id(const char *job_id, const char *domain)
{
    return xasprintf("<%s@%s>", job_id, domain && *domain ? domain : "sluice.invalid");
}

const char *sl_event_type_name(Sluice__V1__EventType t)
{
    switch (t) {
    case SLUICE__V1__EVENT_TYPE__EVENT_ACCEPTED: return "ACCEPTED";
    case SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED: return "DELIVERED";
    case SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED: return "DEFERRED";
    case SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED: return "BOUNCED";
    case SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED: return "EXPIRED";
    case SLUICE__V1__EVENT_TYPE__EVENT_SUPPRESSED: return "SUPPRESSED";
    case SLUICE__V1__EVENT_TYPE__EVENT_REJECTED: return "REJECTED";
    case SLUICE__V1__EVENT_TYPE__EVENT_SHAPING: return "SHAPING";
    case SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED: return "COMPLAINED";
    case SLUICE__V1__EVENT_TYPE__EVENT_CANCELLED: return "CANCELLED";
    case SLUICE__V1__EVENT_TYPE__EVENT_UNSUBSCRIBED: return "UNSUBSCRIBED";
    default: return "UNKNOWN";
    }
}

static const char *const bounce_names[] = {
    "none",   "invalid-recipient", "bad-domain", "mailbox-full", "spam-block",
    "policy", "reputation",        "tls",        "content",      "unknown"};

const char *sl_bounce_class_name(Sluice__V1__BounceClass c)
{
    if ((unsigned)c < sizeof bounce_names / sizeof bounce_names[0])
        return bounce_names[c];
    return "unknown";
}

int sl_bounce_class_from_name(const char *name, Sluice__V1__BounceClass *out)
{
    for (size_t i = 0; i < sizeof bounce_names / sizeof bounce_names[0]; i++)
        if (!strcmp(bounce_names[i], name)) {
            *out = (Sluice__V1__BounceClass)i;
            return 0;
        }
    return SL_ENOTFOUND;
}

void sl_event_from_job(sl_event *e, Sluice__V1__EventType type, const sl_job *job,
                       const char *stage)
{
    sluice__v1__event__init(e);
    e->version = SLUICE_WIRE_VERSION;
    e->type = type;
    e->stage = (char *)stage;
    e->timestamp_ms = sl_now_ms();
    if (!job)
        return;
    e->job_id = job->job_id;
    e->tenant = job->tenant;
    e->campaign = job->campaign;
    e->recipient = job->n_recipients ? job->recipients[0] : (char *)"";
    e->domain = job->domain;
    e->site = job->site;
    e->pool = job->pool;
    e->attempt = job->attempt;
    e->created_at_ms = job->created_at_ms;
    /* Event.meta and Job.meta are distinct generated types with the same
     * layout (string key, string value). */
    e->n_meta = job->n_meta;
    e->meta = (Sluice__V1__Event__MetaEntry **)job->meta;
}

int sl_event_publish(sl_producer *p, const sl_config *cfg, const sl_event *e, sl_produce_cb cb,
                     void *arg)
{
    sl_buf b = SL_BUF_INIT;
    char *topic = sl_config_topic(cfg, "events");
    sl_pack(&e->base, &b);
    const char *key = e->job_id ? e->job_id : "";
    int rc = sl_producer_send(p, topic, key, strlen(key), b.data, b.len, NULL, 0, cb, arg);
    free(topic);
    sl_buf_free(&b);
    return rc;
}

int sl_dlq_publish(sl_producer *p, const sl_config *cfg, const void *raw, size_t len,
                   const char *reason, const char *topic, int32_t partition, int64_t offset,
                   sl_produce_cb cb, void *arg)
{
    return sl_dlq_publish_hdrs(p, cfg, raw, len, reason, topic, partition, offset, NULL, 0, cb,
                               arg);
}

int sl_dlq_publish_hdrs(sl_producer *p, const sl_config *cfg, const void *raw, size_t len,
                        const char *reason, const char *topic, int32_t partition, int64_t offset,
                        const sl_header *extra, size_t n_extra, sl_produce_cb cb, void *arg)
{
    SL_ASSERT(n_extra <= 4);
    char *dlq = sl_config_topic(cfg, "dlq");
    char part[16], off[24], orig[24];
    snprintf(part, sizeof part, "%d", partition);
    snprintf(off, sizeof off, "%lld", (long long)offset);
    /* The DLQ takes any record it is given: a copy larger than the budget
     * allows is cut, and the headers say so and how long it was. */
    size_t keep = len;
    uint64_t cap = sl_budget_dlq_copy_max(cfg);
    if (keep > cap)
        keep = (size_t)cap;
    char *why = NULL;
    if (reason && strlen(reason) > SL_BUDGET_REASON_MAX)
        reason = why = xstrndup(reason, SL_BUDGET_REASON_MAX);
    sl_header h[10] = {{"reason", reason ? reason : ""},
                       {"source-topic", topic ? topic : ""},
                       {"source-partition", part},
                       {"source-offset", off}};
    size_t nh = 4;
    for (size_t i = 0; i < n_extra; i++)
        h[nh++] = extra[i];
    if (keep < len) {
        snprintf(orig, sizeof orig, "%zu", len);
        h[nh++] = (sl_header){"truncated", "true"};
        h[nh++] = (sl_header){"original-length", orig};
        sl_metric_inc("sluice_dlq_truncated_total", NULL, 1);
    }
    int rc = sl_producer_send(p, dlq, NULL, 0, raw ? raw : "", raw ? keep : 0, h, nh, cb, arg);
    free(why);
    free(dlq);
    return rc;
}

static void json_kv_str(sl_buf *b, bool *first, const char *k, const char *v)
{
    if (!v || !*v)
        return;
    sl_buf_printf(b, "%s\"%s\":", *first ? "" : ",", k);
    sl_buf_json_str(b, v, strlen(v));
    *first = false;
}

static void json_kv_int(sl_buf *b, bool *first, const char *k, long long v)
{
    if (!v)
        return;
    sl_buf_printf(b, "%s\"%s\":%lld", *first ? "" : ",", k, v);
    *first = false;
}

void sl_event_json(const sl_event *e, sl_buf *b)
{
    bool first = true;
    sl_buf_putc(b, '{');
    json_kv_str(b, &first, "type", sl_event_type_name(e->type));
    json_kv_str(b, &first, "job_id", e->job_id);
    json_kv_str(b, &first, "tenant", e->tenant);
    json_kv_str(b, &first, "campaign", e->campaign);
    json_kv_str(b, &first, "recipient", e->recipient);
    json_kv_str(b, &first, "domain", e->domain);
    json_kv_str(b, &first, "site", e->site);
    json_kv_str(b, &first, "pool", e->pool);
    json_kv_str(b, &first, "source_ip", e->source_ip);
    json_kv_str(b, &first, "mx_host", e->mx_host);
    json_kv_str(b, &first, "mx_ip", e->mx_ip);
    json_kv_int(b, &first, "smtp_code", e->smtp_code);
    json_kv_str(b, &first, "enhanced_code", e->enhanced_code);
    json_kv_str(b, &first, "reply", e->reply);
    json_kv_str(b, &first, "tls_protocol", e->tls_protocol);
    json_kv_str(b, &first, "tls_cipher", e->tls_cipher);
    json_kv_str(b, &first, "tls_policy", e->tls_policy);
    if (e->tls_verify_result && *e->tls_verify_result)
        sl_buf_printf(b, ",\"tls_verified\":%s", e->tls_verified ? "true" : "false");
    json_kv_str(b, &first, "tls_verify_result", e->tls_verify_result);
    json_kv_str(b, &first, "tls_failure", e->tls_failure);
    sl_buf_printf(b, ",\"attempt\":%u", e->attempt);
    json_kv_int(b, &first, "timestamp_ms", e->timestamp_ms);
    json_kv_int(b, &first, "created_at_ms", e->created_at_ms);
    if (e->bounce_class) {
        json_kv_str(b, &first, "bounce_class", sl_bounce_class_name(e->bounce_class));
        sl_buf_printf(b, ",\"bounce_hard\":%s", e->bounce_hard ? "true" : "false");
    }
    json_kv_str(b, &first, "reason", e->reason);
    json_kv_str(b, &first, "stage", e->stage);
    json_kv_str(b, &first, "retry_topic", e->retry_topic);
    json_kv_int(b, &first, "next_attempt_ms", e->next_attempt_ms);
    json_kv_int(b, &first, "destination_down_until_ms", e->destination_down_until_ms);
    if (e->possible_duplicate)
        sl_buf_puts(b, ",\"possible_duplicate\":true");
    if (e->republished)
        sl_buf_puts(b, ",\"republished\":true");
    json_kv_int(b, &first, "queue_ms", e->queue_ms);
    json_kv_int(b, &first, "smtp_ms", e->smtp_ms);
    json_kv_str(b, &first, "sender_id", e->sender_id);
    json_kv_str(b, &first, "message_id", e->message_id);
    /* JSON has no infinity (and NaN fails the comparison). */
    if (e->rate_per_sec > 0 && isfinite(e->rate_per_sec))
        sl_buf_printf(b, ",\"rate_per_sec\":%g", e->rate_per_sec);
    if (e->n_meta) {
        sl_buf_puts(b, ",\"meta\":{");
        for (size_t i = 0; i < e->n_meta; i++) {
            if (i)
                sl_buf_putc(b, ',');
            sl_buf_json_str(b, e->meta[i]->key, strlen(e->meta[i]->key));
            sl_buf_putc(b, ':');
            sl_buf_json_str(b, e->meta[i]->value, strlen(e->meta[i]->value));
        }
        sl_buf_putc(b, '}');
    }
    sl_buf_putc(b, '}');
}
