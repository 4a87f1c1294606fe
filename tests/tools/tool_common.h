/*
 * tool_common - what the test tools (publish_dispatch, sched_tool,
 * fault_publish) share: counting the producer's acknowledgements and
 * reading fields of a JSON input line.
 *
 * tool_ack_cb() is an sl_producer delivery callback that counts into
 * tool_acked and tool_failed (the producer's thread; the tools read the
 * counts after sl_producer_flush()). tool_str() and tool_num() return a
 * JSON object's string or number member, or dflt when it is absent or of
 * another type; the string is owned by the object.
 */
#ifndef SLUICE_TOOL_COMMON_H
#define SLUICE_TOOL_COMMON_H

#include <jansson.h>

extern int tool_acked, tool_failed;

void tool_ack_cb(void *arg, int err);
const char *tool_str(json_t *o, const char *k, const char *dflt);
long long tool_num(json_t *o, const char *k, long long dflt);

#endif
