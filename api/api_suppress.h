/*
 * api_suppress - the suppression lists as sluice-api sees them, so that
 * POST /v1/messages reports a suppressed recipient per recipient at request
 * time (not published) instead of accepting a job the scheduler would only
 * drop later.
 *
 * A set of "tenant/address" (lower-cased, the key `sluice suppress`,
 * sluice-api and the scheduler write on the compacted suppressions topic),
 * filled by a group-less reader of the whole topic and kept following it:
 * api_suppress_drain() reads what has arrived (the main thread, every tick)
 * and says whether the topic was read to its end once. PUT and DELETE of
 * this daemon apply at once (api_suppress_put()); another daemon's take
 * effect within a tick. The scheduler's classify stage still checks every
 * job: this is the early answer, not the guarantee.
 *
 * api_suppress_has() and api_suppress_put() may be called from any thread
 * (under the set's lock); drain from one thread only.
 */
#ifndef SLUICE_API_SUPPRESS_H
#define SLUICE_API_SUPPRESS_H

#include <stdbool.h>

#include "config.h"

typedef struct api_suppress api_suppress;

/* NULL and *err (caller frees) when the topic cannot be read. */
api_suppress *api_suppress_new(const sl_config *cfg, char **err);
bool api_suppress_drain(api_suppress *s);
bool api_suppress_has(api_suppress *s, const char *tenant, const char *address);
void api_suppress_put(api_suppress *s, const char *tenant, const char *address, bool on);
void api_suppress_free(api_suppress *s);

#endif
