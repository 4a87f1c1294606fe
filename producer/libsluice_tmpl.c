/*
 * libsluice_tmpl - fetching a stored template and checking what the
 * publishing commands are given (see libsluice_int.h).
 */
#include "libsluice_int.h"
#include "reader.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FETCH_TIMEOUT_MS 30000

bool sluice__template_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

int sluice__priority_parse(const char *s, sluice_priority *out)
{
    if (!strcasecmp(s, "transactional"))
        *out = SLUICE_PRIORITY_TRANSACTIONAL;
    else if (!strcasecmp(s, "normal"))
        *out = SLUICE_PRIORITY_NORMAL;
    else if (!strcasecmp(s, "bulk"))
        *out = SLUICE_PRIORITY_BULK;
    else
        return SL_EINVAL;
    return 0;
}

int sluice__template_fetch(const sl_config *cfg, const char *id, sl_template_msg **out, char **err)
{
    char *topic = sl_config_topic(cfg, "templates");
    sl_reader *r = sl_reader_new(cfg, topic, 0, err);
    free(topic);
    if (!r)
        return SL_EKAFKA;
    /* Messages must not outlive the consumer (rd_kafka_destroy() waits for
     * them), so keep a copy of the newest value. */
    size_t idlen = strlen(id);
    sl_buf last = SL_BUF_INIT;
    bool found = false;
    int64_t deadline = sl_mono_ms() + FETCH_TIMEOUT_MS;
    while (!sl_reader_at_end(r)) {
        if (sl_mono_ms() >= deadline) {
            sl_reader_free(r);
            sl_buf_free(&last);
            *err = xasprintf("reading the templates topic timed out");
            return SL_EKAFKA;
        }
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (!m)
            continue;
        /* Keys go to one partition, so offset order is update order. */
        if (m->key && m->key_len == idlen && !memcmp(m->key, id, idlen)) {
            sl_buf_reset(&last);
            found = m->payload && m->len; /* a tombstone deletes */
            if (found)
                sl_buf_append(&last, m->payload, m->len);
        }
        rd_kafka_message_destroy(m);
    }
    sl_reader_free(r);
    if (!found) {
        sl_buf_free(&last);
        return SL_ENOTFOUND;
    }
    const char *why = NULL;
    int rc = sl_template_decode(last.data, last.len, out, &why);
    if (rc)
        *err = xasprintf("template %s: %s", id, why);
    sl_buf_free(&last);
    return rc;
}
