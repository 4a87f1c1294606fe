/*
 * tool_common - see tool_common.h.
 */
#include "tool_common.h"

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
