/*
 * tmplstore - see tmplstore.h.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "tmplstore.h"
#include "log.h"
#include "message.h"
#include "reader.h"
#include "template.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct entry {
    char *id;
    sl_tmpl *t;
    struct entry *next;
} entry;

struct snd_tmplstore {
    const sl_config *cfg;
    pthread_rwlock_t lock;
    entry *head;
    size_t count;
    pthread_t thread;
    bool has_thread;
    atomic_bool stop;
    atomic_bool loaded;
};

static void put_locked(snd_tmplstore *ts, const char *id, sl_tmpl *t)
{
    entry **pp = &ts->head;
    for (; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->id, id))
            break;
    if (*pp) {
        entry *e = *pp;
        sl_tmpl_free(e->t);
        if (t) {
            e->t = t;
        } else {
            *pp = e->next;
            free(e->id);
            free(e);
            ts->count--;
        }
        return;
    }
    if (!t)
        return;
    entry *e = xcalloc(1, sizeof *e);
    e->id = xstrdup(id);
    e->t = t;
    e->next = ts->head;
    ts->head = e;
    ts->count++;
}

void snd_tmplstore_put(snd_tmplstore *ts, const char *id, sl_tmpl *t)
{
    pthread_rwlock_wrlock(&ts->lock);
    put_locked(ts, id, t);
    pthread_rwlock_unlock(&ts->lock);
}

static void apply(snd_tmplstore *ts, rd_kafka_message_t *m)
{
    char id[256] = "";
    if (m->key_len && m->key_len < sizeof id)
        memcpy(id, m->key, m->key_len), id[m->key_len] = 0;
    if (!m->payload || !m->len) {
        if (*id)
            snd_tmplstore_put(ts, id, NULL);
        return;
    }
    sl_template_msg *tm = NULL;
    const char *why = NULL;
    if (sl_template_decode(m->payload, m->len, &tm, &why) < 0) {
        sl_warn("templates: skipping record at offset %lld: %s", (long long)m->offset, why);
        return;
    }
    const char *tid = tm->id && *tm->id ? tm->id : id;
    sl_tmpl *t = NULL;
    char *err = NULL;
    if (sl_tmpl_compile((const char *)tm->body.data, tm->body.len, &t, &err) < 0) {
        sl_warn("templates: template '%s' does not compile, keeping the previous one: %s", tid,
                err);
        free(err);
    } else {
        snd_tmplstore_put(ts, tid, t);
        sl_debug("templates: loaded '%s'", tid);
    }
    sl_template_free(tm);
}

static void *reader_thread(void *arg)
{
    snd_tmplstore *ts = arg;
    char *topic = sl_config_topic(ts->cfg, "templates");
    sl_reader *r = NULL;
    while (!atomic_load(&ts->stop) && !r) {
        char *err = NULL;
        r = sl_reader_new(ts->cfg, topic, 0, &err);
        if (!r) {
            sl_warn("templates: cannot read %s yet: %s", topic, err ? err : "?");
            free(err);
            for (int i = 0; i < 20 && !atomic_load(&ts->stop); i++)
                usleep(100000);
        }
    }
    while (r && !atomic_load(&ts->stop)) {
        rd_kafka_message_t *m = sl_reader_next(r, 200);
        if (m) {
            if (!m->err)
                apply(ts, m);
            rd_kafka_message_destroy(m);
        }
        if (!atomic_load(&ts->loaded) && sl_reader_at_end(r)) {
            atomic_store(&ts->loaded, true);
            sl_info("templates: %zu loaded from %s", snd_tmplstore_count(ts), topic);
        }
    }
    if (r)
        sl_reader_free(r);
    free(topic);
    return NULL;
}

snd_tmplstore *snd_tmplstore_start(const sl_config *cfg)
{
    snd_tmplstore *ts = xcalloc(1, sizeof *ts);
    ts->cfg = cfg;
    pthread_rwlock_init(&ts->lock, NULL);
    if (!cfg) {
        atomic_store(&ts->loaded, true);
        return ts;
    }
    if (pthread_create(&ts->thread, NULL, reader_thread, ts) != 0)
        sl_panic("pthread_create failed");
    ts->has_thread = true;
    return ts;
}

int snd_tmplstore_build(snd_tmplstore *ts, const sl_job *job, int64_t now_ms, sl_buf *out,
                        char **err)
{
    pthread_rwlock_rdlock(&ts->lock);
    entry *e = ts->head;
    while (e && strcmp(e->id, job->template_id))
        e = e->next;
    int rc = e ? snd_msg_build(job, e->t, now_ms, out, err) : SL_ENOTFOUND;
    pthread_rwlock_unlock(&ts->lock);
    if (rc == SL_ENOTFOUND)
        *err = xasprintf("template '%s' is not known", job->template_id);
    return rc;
}

bool snd_tmplstore_loaded(snd_tmplstore *ts)
{
    return atomic_load(&ts->loaded);
}

size_t snd_tmplstore_count(snd_tmplstore *ts)
{
    pthread_rwlock_rdlock(&ts->lock);
    size_t n = ts->count;
    pthread_rwlock_unlock(&ts->lock);
    return n;
}

bool snd_tmplstore_stop(snd_tmplstore *ts)
{
    if (!ts)
        return true;
    atomic_store(&ts->stop, true);
    if (ts->has_thread) {
        /* The reader checks stop between Kafka calls, but one call can
         * block for long without a broker (sl_reader_new's metadata
         * retries): the sender's drain bound must not wait for it. A
         * reader still busy is left to the process exit, with the store. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        if (pthread_timedjoin_np(ts->thread, NULL, &until) != 0) {
            sl_warn("templates: the reader is still in a Kafka call; not waiting for it");
            pthread_detach(ts->thread);
            return false;
        }
    }
    entry *e = ts->head;
    while (e) {
        entry *n = e->next;
        sl_tmpl_free(e->t);
        free(e->id);
        free(e);
        e = n;
    }
    pthread_rwlock_destroy(&ts->lock);
    free(ts);
    return true;
}
