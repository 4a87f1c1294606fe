/*
 * fuzz_job_decode - libFuzzer harness for common/wire's decoders: every
 * input is offered to sl_job_decode(), sl_dispatch_decode() and
 * sl_event_decode() (records come off Kafka topics anyone with produce
 * rights can write to, so none of them may crash on any bytes).
 *
 * Invariants:
 *   - a decoder returns 0 with a message, or SL_EPROTO / SL_EVERSION with
 *     a static reason and no message; a decoded record's version is
 *     1..SLUICE_WIRE_VERSION (and a dispatch carries a job of a valid
 *     version);
 *   - what decodes re-encodes (sl_pack) to bytes that decode again and
 *     re-encode to the same bytes;
 *   - sl_job_peek() accepts every job sl_job_decode() accepts and reads
 *     the same tenant, campaign, pool, domain, site and priority; what it
 *     refuses, sl_job_decode() refuses too;
 *   - sl_event_json() of a decoded event, and of the event built from a
 *     decoded job by sl_event_from_job(), is one well-formed JSON object
 *     (checked with jansson, after mapping bytes >= 0x80 to 'x' so that
 *     only the structure is judged; with SLUICE_FUZZ_STRICT_UTF8=1 in the
 *     environment the raw bytes must be valid UTF-8 too).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "wire.h"

#define FAIL(...)                                                                          \
    do {                                                                                   \
        fprintf(stderr, "fuzz_job_decode: invariant: " __VA_ARGS__);                      \
        fputc('\n', stderr);                                                               \
        abort();                                                                           \
    } while (0)

static int strict_utf8 = -1;

static void check_span(const char *what, sl_span v, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    /* A decoded string ends at its first NUL; the span holds all of it. */
    if (v.n < n || (n && memcmp(v.p, s, n) != 0) || (v.n > n && memchr(v.p, 0, v.n) != v.p + n))
        FAIL("sl_job_peek read another %s than sl_job_decode", what);
}

static void check_rc(const char *what, int rc, const void *msg, const char *why)
{
    if (rc == 0) {
        if (!msg)
            FAIL("%s returned 0 without a message", what);
        return;
    }
    if (rc != SL_EPROTO && rc != SL_EVERSION)
        FAIL("%s returned %d", what, rc);
    if (!why || !*why)
        FAIL("%s failed without a reason", what);
}

static void check_json(const sl_event *e)
{
    sl_buf b = SL_BUF_INIT;
    sl_event_json(e, &b);
    json_error_t err;
    if (strict_utf8) {
        json_t *j = json_loadb(b.data, b.len, 0, &err);
        if (!j)
            FAIL("event JSON is not valid (strict UTF-8): %s: %s", err.text, b.data);
        json_decref(j);
    }
    for (size_t i = 0; i < b.len; i++)
        if ((unsigned char)b.data[i] >= 0x80)
            b.data[i] = 'x';
    json_t *j = json_loadb(b.data, b.len, 0, &err);
    if (!j)
        FAIL("event JSON is malformed: %s: %s", err.text, b.data);
    if (!json_is_object(j))
        FAIL("event JSON is not an object: %s", b.data);
    json_decref(j);
    sl_buf_free(&b);
}

/* pack(m) decodes again with desc and packs to the same bytes. */
static void check_roundtrip(const ProtobufCMessage *m)
{
    sl_buf a = SL_BUF_INIT, b = SL_BUF_INIT;
    sl_pack(m, &a);
    ProtobufCMessage *m2 = protobuf_c_message_unpack(m->descriptor, NULL, a.len,
                                                     (const uint8_t *)(a.data ? a.data : ""));
    if (!m2)
        FAIL("%s: re-encoded record does not decode", m->descriptor->name);
    sl_pack(m2, &b);
    if (a.len != b.len || (a.len && memcmp(a.data, b.data, a.len) != 0))
        FAIL("%s: encoding is not stable across a round trip", m->descriptor->name);
    protobuf_c_message_free_unpacked(m2, NULL);
    sl_buf_free(&a);
    sl_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (strict_utf8 < 0) {
        const char *s = getenv("SLUICE_FUZZ_STRICT_UTF8");
        strict_utf8 = s && *s == '1';
    }
    const char *why = NULL;

    sl_job *job = NULL;
    int rc = sl_job_decode(data, size, &job, &why);
    check_rc("sl_job_decode", rc, job, why);
    sl_job_fields f;
    const char *pwhy = NULL;
    int prc = sl_job_peek(data, size, &f, &pwhy);
    check_rc("sl_job_peek", prc, &f, pwhy);
    if (rc == 0 && prc != 0)
        FAIL("sl_job_peek refused a job sl_job_decode accepted: %s", pwhy);
    if (rc == 0) {
        check_span("tenant", f.tenant, job->tenant);
        check_span("campaign", f.campaign, job->campaign);
        check_span("pool", f.pool, job->pool);
        check_span("domain", f.domain, job->domain);
        check_span("site", f.site, job->site);
        if (f.priority != (int32_t)job->priority)
            FAIL("sl_job_peek read another priority than sl_job_decode");
        if (job->version == 0 || job->version > SLUICE_WIRE_VERSION)
            FAIL("job of version %u accepted", job->version);
        check_roundtrip(&job->base);
        sl_event e = SLUICE__V1__EVENT__INIT;
        sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED, job, "fuzz");
        check_json(&e);
        sl_job_free(job);
    }

    sl_dispatch *d = NULL;
    why = NULL;
    rc = sl_dispatch_decode(data, size, &d, &why);
    check_rc("sl_dispatch_decode", rc, d, why);
    if (rc == 0) {
        if (d->version == 0 || d->version > SLUICE_WIRE_VERSION || !d->job ||
            d->job->version == 0 || d->job->version > SLUICE_WIRE_VERSION)
            FAIL("dispatch of a bad version or without a job accepted");
        check_roundtrip(&d->base);
        sl_dispatch_free(d);
    }

    sl_event *ev = NULL;
    why = NULL;
    rc = sl_event_decode(data, size, &ev, &why);
    check_rc("sl_event_decode", rc, ev, why);
    if (rc == 0) {
        if (ev->version == 0 || ev->version > SLUICE_WIRE_VERSION)
            FAIL("event of version %u accepted", ev->version);
        check_roundtrip(&ev->base);
        check_json(ev);
        sl_event_free(ev);
    }
    return 0;
}
