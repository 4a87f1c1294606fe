/*
 * cli_template - `sluice template put|get|delete`: manage the templates
 * that bulk jobs name.
 *
 *   sluice template put [-c FILE] ID FILE   store (or replace) template ID
 *   sluice template get [-c FILE] ID        print its body (stdout: what put takes)
 *   sluice template delete [-c FILE] ID     publish a tombstone
 *   sluice template list [-c FILE]          every stored id with its variables
 *
 * put validates the body with sl_tmpl_compile() (a From field, well-formed
 * header section, valid placeholders), normalises line ends to CRLF and
 * stores a Template (id, body, every variable the body references,
 * updated_at_ms) on the compacted templates topic keyed by id. It prints
 * "template ID stored (N variables: a, b)" only once Kafka acknowledged it.
 * FILE may be "-" for stdin.
 *
 * Exit status: 0 ok, 1 Kafka failure or (get) no such template, 2 bad
 * usage, configuration or template (with the line and reason).
 */
#include "publish.h"
#include "config.h"
#include "kafka.h"
#include "libsluice_int.h"
#include "reader.h"
#include "template.h"
#include "wire.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEMPLATE_MAX_BYTES (1024 * 1024)
#define TEMPLATE_TIMEOUT_MS 30000

static void template_usage(FILE *f)
{
    fputs("usage: sluice template put [-c FILE] ID FILE   store a template (FILE - for stdin)\n"
          "       sluice template get [-c FILE] ID        print a stored template\n"
          "       sluice template delete [-c FILE] ID     remove a template\n"
          "       sluice template list [-c FILE]          list the stored templates\n"
          "ID: 1-128 of [A-Za-z0-9_.-]\n",
          f);
}

static void template_acked(void *arg, int err)
{
    *(int *)arg = err ? err : 1;
}

/* Publish value (NULL: tombstone) under id and wait for the ack. */
static int template_publish(const sl_config *cfg, const char *id, const sl_buf *value)
{
    char *err = NULL;
    sl_producer *p = sl_producer_new(cfg, NULL, &err);
    if (!p) {
        fprintf(stderr, "sluice template: %s\n", err);
        free(err);
        return 1;
    }
    char *topic = sl_config_topic(cfg, "templates");
    int done = 0;
    int rc = sl_producer_send(p, topic, id, strlen(id), value ? value->data : NULL,
                              value ? value->len : 0, NULL, 0, template_acked, &done);
    if (rc == 0 && sl_producer_flush(p, TEMPLATE_TIMEOUT_MS) != 0)
        rc = SL_ETIMEOUT;
    if (rc == 0 && done != 1)
        rc = done;
    if (rc)
        fprintf(stderr, "sluice template: %s: not stored: %s\n", id,
                rc == SL_ETIMEOUT ? "Kafka did not acknowledge it in time" : sl_strerror(rc));
    free(topic);
    sl_producer_free(p);
    return rc ? 1 : 0;
}

static int template_put(const sl_config *cfg, const char *id, const char *path)
{
    sl_buf body = SL_BUF_INIT, packed = SL_BUF_INIT;
    sl_tmpl *t = NULL;
    char *err = NULL;
    int rc = 2;
    int frc = cli_read_file(path, TEMPLATE_MAX_BYTES, &body);
    if (frc) {
        fprintf(stderr, "sluice template: %s: %s\n", path,
                frc == SL_ETOOBIG ? "larger than 1 MiB" : strerror(-frc));
        goto out;
    }
    if (sl_tmpl_compile(body.data ? body.data : "", body.len, &t, &err) != 0) {
        fprintf(stderr, "sluice template: %s: %s\n", path, err ? err : "invalid template");
        goto out;
    }
    size_t nvars, tlen;
    const char *const *vars = sl_tmpl_vars(t, &nvars);
    const char *text = sl_tmpl_text(t, &tlen);
    sl_template_msg m = SLUICE__V1__TEMPLATE__INIT;
    m.version = SLUICE_WIRE_VERSION;
    m.id = (char *)id;
    m.body.data = (uint8_t *)text;
    m.body.len = tlen;
    m.n_variables = nvars;
    m.variables = (char **)vars;
    m.updated_at_ms = sl_now_ms();
    sl_pack(&m.base, &packed);
    rc = template_publish(cfg, id, &packed);
    if (rc == 0) {
        printf("template %s stored (%zu variable%s", id, nvars, nvars == 1 ? "" : "s");
        for (size_t i = 0; i < nvars; i++)
            printf("%s%s", i ? ", " : ": ", vars[i]);
        puts(")");
    }
out:
    free(err);
    sl_tmpl_free(t);
    sl_buf_free(&body);
    sl_buf_free(&packed);
    return rc;
}

static int template_get(const sl_config *cfg, const char *id)
{
    sl_template_msg *t = NULL;
    char *err = NULL;
    int rc = sluice__template_fetch(cfg, id, &t, &err);
    if (rc == SL_ENOTFOUND) {
        fprintf(stderr, "sluice template: %s: no such template\n", id);
        return 1;
    }
    if (rc) {
        fprintf(stderr, "sluice template: %s\n", err ? err : sl_strerror(rc));
        free(err);
        return 1;
    }
    /* stdout is the body alone, so that `get ID > F` and `put ID F`
     * round-trip; the variables go to stderr. */
    fprintf(stderr, "template %s, %zu variable%s", id, t->n_variables,
            t->n_variables == 1 ? "" : "s");
    for (size_t i = 0; i < t->n_variables; i++)
        fprintf(stderr, "%s%s", i ? ", " : ": ", t->variables[i]);
    fputc('\n', stderr);
    fwrite(t->body.data, 1, t->body.len, stdout);
    sl_template_free(t);
    return 0;
}

typedef struct template_row {
    char *id;
    sl_buf line; /* empty: deleted */
} template_row;

static int template_row_cmp(const void *a, const void *b)
{
    return strcmp(((const template_row *)a)->id, ((const template_row *)b)->id);
}

typedef struct template_rows {
    template_row *v;
    size_t n;
} template_rows;

/* One record of the templates topic: the newest value per id wins. */
static void template_record(void *arg, const rd_kafka_message_t *m)
{
    template_rows *t = arg;
    if (!m->key || !m->key_len)
        return;
    template_row *rows = t->v;
    size_t i = 0;
    while (i < t->n &&
           (strlen(rows[i].id) != m->key_len || memcmp(rows[i].id, m->key, m->key_len)))
        i++;
    if (i == t->n) {
        rows = t->v = xrealloc(t->v, (t->n + 1) * sizeof *t->v);
        rows[t->n].id = xstrndup(m->key, m->key_len);
        rows[t->n].line = (sl_buf)SL_BUF_INIT;
        t->n++;
    }
    sl_buf_reset(&rows[i].line);
    sl_template_msg *tm = NULL;
    const char *why = NULL;
    if (m->payload && m->len && sl_template_decode(m->payload, m->len, &tm, &why) == 0) {
        sl_buf_printf(&rows[i].line, "%zu variable%s", tm->n_variables,
                      tm->n_variables == 1 ? "" : "s");
        for (size_t v = 0; v < tm->n_variables; v++)
            sl_buf_printf(&rows[i].line, "%s%s", v ? ", " : ": ", tm->variables[v]);
        sl_template_free(tm);
    } else if (m->payload && m->len) {
        sl_buf_printf(&rows[i].line, "unreadable: %s", why ? why : "?");
    }
}

/* Every template on the compacted topic, newest value per id, by id. */
static int template_list(const sl_config *cfg)
{
    char *topic = sl_config_topic(cfg, "templates");
    template_rows t = {0};
    int rc = cli_read_topic("template", cfg, topic, TEMPLATE_TIMEOUT_MS, template_record, &t);
    free(topic);
    template_row *rows = t.v;
    size_t n = t.n;
    qsort(rows, n, sizeof *rows, template_row_cmp);
    for (size_t i = 0; i < n; i++) {
        if (rows[i].line.len && rc == 0)
            printf("%s  %s\n", rows[i].id, rows[i].line.data);
        free(rows[i].id);
        sl_buf_free(&rows[i].line);
    }
    free(rows);
    return rc;
}

int cli_template(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("SLUICE_CONFIG");
    int st = -1;
    optind = 1;
    while (cli_opt_next(argc, argv, "c:h", opts, &path, template_usage, &st) != -1)
        ;
    if (st >= 0)
        return st;
    int nargs = argc - optind;
    const char *sub = nargs > 0 ? argv[optind] : "";
    bool put = !strcmp(sub, "put"), get = !strcmp(sub, "get"), del = !strcmp(sub, "delete");
    if (!strcmp(sub, "list") && nargs == 1) {
        sl_config *cfg;
        int rc = cli_open("template", path, 0, &cfg);
        if (rc)
            return rc;
        rc = template_list(cfg);
        sl_config_free(cfg);
        return rc;
    }
    if (!(put && nargs == 3) && !((get || del) && nargs == 2)) {
        template_usage(stderr);
        return 2;
    }
    const char *id = argv[optind + 1];
    if (!sluice__template_id_ok(id)) {
        fprintf(stderr, "sluice template: '%s' is not a valid id (1-128 of [A-Za-z0-9_.-])\n", id);
        return 2;
    }
    sl_config *cfg;
    int rc = cli_open("template", path, 0, &cfg);
    if (rc)
        return rc;
    if (put)
        rc = template_put(cfg, id, argv[optind + 2]);
    else if (get)
        rc = template_get(cfg, id);
    else if ((rc = template_publish(cfg, id, NULL)) == 0)
        printf("template %s deleted\n", id);
    sl_config_free(cfg);
    return rc;
}
