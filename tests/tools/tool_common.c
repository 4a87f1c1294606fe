/*
 * tool_common - see tool_common.h.
 */
#include "tool_common.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tool_acked, tool_failed;

void tool_ack_cb(void *arg, int err)
{
    (void)arg;
    if (err)
        tool_failed++;
    else
        tool_acked++;
}

const char *tool_str(json_t *o, const char *k, const char *dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

long long tool_num(json_t *o, const char *k, long long dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? (long long)json_number_value(v) : dflt;
}

sl_producer *tool_producer(const sl_config *cfg, const char *who)
{
    char *err = NULL;
    sl_producer *p = sl_producer_new(cfg, NULL, &err);
    if (!p) {
        fprintf(stderr, "%s: %s\n", who, err);
        exit(1);
    }
    return p;
}

sl_producer *tool_start(int argc, char **argv, const char *who, sl_config **cfg)
{
    const char *path = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "-c"))
            path = argv[i + 1];
    *cfg = sl_config_load_or_exit(path);
    return tool_producer(*cfg, who);
}

char **tool_strv(json_t *a, size_t *n)
{
    *n = json_array_size(a);
    char **v = xcalloc(*n + 1, sizeof *v);
    for (size_t i = 0; i < *n; i++)
        v[i] = (char *)json_string_value(json_array_get(a, i));
    return v;
}

const char *tool_template(json_t *tm, sl_buf *b)
{
    sl_template_msg t;
    sluice__v1__template__init(&t);
    t.version = SLUICE_WIRE_VERSION;
    t.id = (char *)tool_str(tm, "id", "");
    const char *body = tool_str(tm, "body", "");
    t.body.data = (uint8_t *)body;
    t.body.len = strlen(body);
    t.updated_at_ms = sl_now_ms();
    sl_pack(&t.base, b);
    return t.id;
}
