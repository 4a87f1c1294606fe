/*
 * libsluice_int - helpers of libsluice that the publishing commands
 * (`sluice bulk`, `sluice template`) share but that are not part of the
 * public sluice.h (they expose sl_config and
 * protobuf types).
 *
 * sluice__template_fetch() reads the templates topic (compacted; the dev
 * broker does not compact, so the whole topic) to its end and returns the
 * newest Template stored under id: SL_ENOTFOUND when there is none or its
 * newest record is a tombstone, SL_EKAFKA (with *err, caller frees) when
 * the topic cannot be read, SL_EPROTO when the record does not decode. The
 * caller frees *out with sl_template_free(). Blocks; one thread.
 *
 * sluice__template_id_ok() checks a template id: 1-128 octets of
 * [A-Za-z0-9_.-], since it is a Kafka key and appears in file names.
 *
 * sluice__priority_parse() reads a priority as the commands take it
 * ("transactional", "normal" or "bulk", any case): 0 with *out set, or
 * SL_EINVAL with *out untouched.
 */
#ifndef SLUICE_LIBSLUICE_INT_H
#define SLUICE_LIBSLUICE_INT_H

#include "config.h"
#include "sluice.h"
#include "wire.h"

int sluice__template_fetch(const sl_config *cfg, const char *id, sl_template_msg **out, char **err);
bool sluice__template_id_ok(const char *id);
int sluice__priority_parse(const char *s, sluice_priority *out);

#endif
