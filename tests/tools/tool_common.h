/*
 * tool_common - what the test tools (publish_dispatch, sched_tool,
 * fault_publish) share: counting the producer's acknowledgements and
 * reading fields of a JSON input line, starting the producer and packing
 * a Template.
 *
 * tool_ack_cb() is an sl_producer delivery callback that counts into
 * tool_acked and tool_failed (the producer's thread; the tools read the
 * counts after sl_producer_flush()). tool_str() and tool_num() return a
 * JSON object's string or number member, or dflt when it is absent or of
 * another type; the string is owned by the object.
 *
 * tool_start() is the tools' start-up: it loads the configuration named by
 * "-c FILE" in argv (exit 2 on a bad one) and returns a producer on it, or
 * prints "who: reason" and exits 1; *cfg receives the configuration (the
 * caller frees both). tool_producer() is the second half, for a tool that
 * loads its configuration itself. tool_template() packs the Template
 * {"id", "body"} of tm into b (stamped now) and returns its id, owned by tm.
 * tool_strv() returns the strings of the JSON array a (NULL for a member
 * that is not a string) as a NULL-terminated vector the caller frees (the
 * strings stay owned by a), and their count in *n.
 */
#ifndef SLUICE_TOOL_COMMON_H
#define SLUICE_TOOL_COMMON_H

#include "config.h"
#include "kafka.h"
#include "util.h"

#include <jansson.h>

extern int tool_acked, tool_failed;

void tool_ack_cb(void *arg, int err);
const char *tool_str(json_t *o, const char *k, const char *dflt);
long long tool_num(json_t *o, const char *k, long long dflt);
sl_producer *tool_start(int argc, char **argv, const char *who, sl_config **cfg);
sl_producer *tool_producer(const sl_config *cfg, const char *who);
const char *tool_template(json_t *tm, sl_buf *b);
char **tool_strv(json_t *a, size_t *n);

#endif
