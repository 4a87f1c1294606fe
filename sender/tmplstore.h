/*
 * tmplstore - every template of the compacted templates topic, compiled and
 * held in memory, for all worker threads of one sender.
 *
 * snd_tmplstore_start() starts a thread that reads the templates topic
 * from the beginning without a consumer group (common/reader.h), compiles
 * each Template (common/template.h) and keeps the newest per id; a
 * tombstone removes the id; a body that does not compile is logged and the
 * previous version kept. It keeps following the topic until stopped.
 *
 * snd_tmplstore_build() renders a job's message through snd_msg_build()
 * with the job's template under a read lock (templates are replaced under
 * the write lock, so a render never sees one freed). It returns
 * SL_ENOTFOUND when the id is unknown, else what snd_msg_build() returns.
 * snd_tmplstore_loaded() is true once the reader reached the end of the
 * topic as it was at start: a missing id before then may still arrive.
 *
 * Threads: build/loaded from any thread; start/stop from the owner.
 */
#ifndef SLUICE_SND_TMPLSTORE_H
#define SLUICE_SND_TMPLSTORE_H

#include <stdbool.h>

#include "config.h"
#include "template.h"
#include "wire.h"

typedef struct snd_tmplstore snd_tmplstore;

snd_tmplstore *snd_tmplstore_start(const sl_config *cfg);
int snd_tmplstore_build(snd_tmplstore *ts, const sl_job *job, int64_t now_ms, sl_buf *out,
                        char **err);
bool snd_tmplstore_loaded(snd_tmplstore *ts);
size_t snd_tmplstore_count(snd_tmplstore *ts);
/* Put a compiled template in directly (tests). Takes ownership of t. */
void snd_tmplstore_put(snd_tmplstore *ts, const char *id, sl_tmpl *t);
/* Stops the reader and frees the store; returns true. A reader stuck in a
 * Kafka call (no broker) is not waited for beyond a second: it and the
 * store are left running and false is returned. The reader still reads
 * the config then: the caller must exit without freeing it. */
bool snd_tmplstore_stop(snd_tmplstore *ts);

#endif
