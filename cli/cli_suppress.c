/*
 * cli_suppress - `sluice suppress`: the tenant suppression lists on the
 * compacted suppressions topic (key "tenant/address").
 *
 *   sluice suppress [-c FILE] [--tenant T] add ADDRESS... [--reason R]
 *   sluice suppress [-c FILE] [--tenant T] remove ADDRESS...
 *   sluice suppress [-c FILE] [--tenant T] list
 *   sluice suppress [-c FILE] [--tenant T] import FILE
 *
 * add publishes a Suppression per address (lower-cased), remove a
 * tombstone for each address in force (one that is not is named on stderr
 * and makes the exit status 1); import reads one address per line ("-" for
 * stdin; blank lines, '#' comments and anything after the first ',' are
 * ignored, and a first entry without '@' is a CSV header, so the first
 * column of a CSV works; an invalid address is named with its line). Each exits 0 only once Kafka acknowledged every
 * record. list reads the topic to its end and prints "tenant/address
 * reason" for the entries still in force (every tenant unless --tenant).
 * The tenant defaults to scheduler.default_tenant. Invalid addresses are
 * reported and exit 2 before anything is published.
 */
#include "cli.h"
#include "config.h"
#include "kafka.h"
#include "reader.h"
#include "sluice.h"
#include "map.h"
#include "util.h"
#include "wire.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void suppress_usage(FILE *f)
{
    fputs("usage: sluice suppress [-c FILE] [--tenant T] add ADDRESS... [--reason R]\n"
          "       sluice suppress [-c FILE] [--tenant T] remove ADDRESS...\n"
          "       sluice suppress [-c FILE] [--tenant T] list\n"
          "       sluice suppress [-c FILE] [--tenant T] import FILE\n",
          f);
}

static int n_acked, n_failed;

static void suppress_ack(void *arg, int err)
{
    (void)arg;
    if (err)
        n_failed++;
    else
        n_acked++;
}

static int suppress_publish(sl_producer *p, const char *topic, const char *tenant,
                            const char *address, const char *reason, bool tombstone)
{
    char *addr = xstrdup(address);
    sl_lower(addr);
    char *key = xasprintf("%s/%s", tenant, addr);
    sl_buf b = SL_BUF_INIT;
    if (!tombstone) {
        sl_suppression s = SLUICE__V1__SUPPRESSION__INIT;
        s.version = SLUICE_WIRE_VERSION;
        s.tenant = (char *)tenant;
        s.address = addr;
        s.reason = (char *)reason;
        s.created_at_ms = sl_now_ms();
        sl_pack(&s.base, &b);
    }
    int rc = sl_producer_send(p, topic, key, strlen(key), tombstone ? NULL : b.data,
                              tombstone ? 0 : b.len, NULL, 0, suppress_ack, NULL);
    sl_buf_free(&b);
    free(key);
    free(addr);
    return rc;
}

/* Addresses from a file, one per line; lines[i] is the line of (*out)[i].
 * A first entry without '@' is a CSV header (such as "email") and skipped. */
static int suppress_read_file(const char *path, char ***out, size_t **lines, size_t *n)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    bool first = true;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        char *s = line;
        s[strcspn(s, ",\r\n")] = 0;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t l = strlen(s);
        while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
            s[--l] = 0;
        if (!*s || *s == '#')
            continue;
        if (first && !strchr(s, '@')) {
            first = false;
            continue;
        }
        first = false;
        *out = xrealloc(*out, (*n + 1) * sizeof **out);
        *lines = xrealloc(*lines, (*n + 1) * sizeof **lines);
        (*lines)[*n] = lineno;
        (*out)[(*n)++] = xstrdup(s);
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return 0;
}

/* The entries in force, "tenant/address" -> reason (owned strings), read
 * to the topic's end. 0, or 1 after saying why. */
static int suppress_load(const sl_config *cfg, const char *topic, sl_map *m);

static void suppress_map_free(sl_map *m)
{
    for (size_t i = 0; i < m->n_slots; i++)
        for (sl_map_ent *e = m->slots[i]; e; e = e->next)
            free(e->val);
    sl_map_free(m);
}

static int suppress_list(const sl_config *cfg, const char *topic, const char *tenant)
{
    sl_map m;
    if (suppress_load(cfg, topic, &m) != 0)
        return 1;
    /* Sorted output for people and diffs. */
    char **keys = xcalloc(m.count ? m.count : 1, sizeof *keys);
    size_t n = 0;
    for (size_t i = 0; i < m.n_slots; i++)
        for (sl_map_ent *e = m.slots[i]; e; e = e->next)
            keys[n++] = e->key;
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && strcmp(keys[k - 1], keys[k]) > 0; k--) {
            char *t = keys[k];
            keys[k] = keys[k - 1];
            keys[k - 1] = t;
        }
    size_t tl = tenant ? strlen(tenant) : 0;
    for (size_t i = 0; i < n; i++)
        if (!tenant || (!strncmp(keys[i], tenant, tl) && keys[i][tl] == '/'))
            printf("%s %s\n", keys[i], (char *)sl_map_get(&m, keys[i]));
    free(keys);
    suppress_map_free(&m);
    return 0;
}

static int suppress_load(const sl_config *cfg, const char *topic, sl_map *mp)
{
    char *err = NULL;
    sl_map_init(mp);
    sl_reader *r = sl_reader_new(cfg, topic, 0, &err);
    if (!r) {
        fprintf(stderr, "sluice suppress: %s\n", err);
        free(err);
        sl_map_free(mp);
        return 1;
    }
    /* The mock broker never compacts: the last record per key wins. */
    sl_map m = *mp;
    int64_t deadline = sl_mono_ms() + 30000;
    while (!sl_reader_at_end(r) && sl_mono_ms() < deadline) {
        rd_kafka_message_t *msg = sl_reader_next(r, 200);
        if (!msg)
            continue;
        if (msg->key) {
            char *key = xstrndup(msg->key, msg->key_len);
            char *old = NULL;
            if (!msg->payload) {
                old = sl_map_del(&m, key);
            } else {
                sl_suppression *s = NULL;
                const char *why;
                if (sl_suppression_decode(msg->payload, msg->len, &s, &why) == 0) {
                    old = sl_map_put(&m, key, xstrdup(s->reason ? s->reason : ""));
                    sl_suppression_free(s);
                }
            }
            free(old);
            free(key);
        }
        rd_kafka_message_destroy(msg);
    }
    bool complete = sl_reader_at_end(r);
    sl_reader_free(r);
    *mp = m;
    if (!complete) {
        suppress_map_free(mp);
        fprintf(stderr, "sluice suppress: the topic was not read to its end within 30s\n");
        return 1;
    }
    return 0;
}

int cli_suppress(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"tenant", required_argument, NULL, 't'},
        {"reason", required_argument, NULL, 'r'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *tenant = NULL, *reason = NULL;
    int o, ostatus = -1;
    optind = 0;
    while ((o = cli_opt_next(argc, argv, "c:t:r:h", opts, &path, suppress_usage, &ostatus)) != -1) {
        switch (o) {
        case 't': tenant = optarg; break;
        case 'r': reason = optarg; break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    if (optind >= argc) {
        suppress_usage(stderr);
        return 2;
    }
    const char *sub = argv[optind++];
    bool add = !strcmp(sub, "add"), rm = !strcmp(sub, "remove"), imp = !strcmp(sub, "import");
    if (!add && !rm && !imp && strcmp(sub, "list")) {
        suppress_usage(stderr);
        return 2;
    }
    if ((add || rm) && optind >= argc) {
        suppress_usage(stderr);
        return 2;
    }
    if ((imp && optind != argc - 1) || (!strcmp(sub, "list") && optind != argc)) {
        suppress_usage(stderr);
        return 2;
    }
    sl_config *cfg = NULL;
    char *err = NULL;
    int orc = cli_open("suppress", path, 0, &cfg);
    if (orc)
        return orc;
    char *topic = sl_config_topic(cfg, "suppressions");
    int status = 0;
    if (!strcmp(sub, "list")) {
        status = suppress_list(cfg, topic, tenant);
        goto out;
    }
    if (!tenant)
        tenant = cfg->scheduler.default_tenant ? cfg->scheduler.default_tenant : "";
    char **addrs = NULL;
    size_t n = 0, *lines = NULL;
    if (imp) {
        if (suppress_read_file(argv[optind], &addrs, &lines, &n) != 0) {
            fprintf(stderr, "sluice suppress: cannot read %s\n", argv[optind]);
            status = 2;
            goto out;
        }
    } else {
        for (int i = optind; i < argc; i++) {
            addrs = xrealloc(addrs, (n + 1) * sizeof *addrs);
            addrs[n++] = xstrdup(argv[i]);
        }
    }
    char norm[SLUICE_ADDRESS_MAX + 1], why[160];
    for (size_t i = 0; i < n; i++)
        if (sluice_address_normalize(addrs[i], norm, why, sizeof why) != 0) {
            if (lines)
                fprintf(stderr, "sluice suppress: %s:%zu: invalid address '%s': %s\n",
                        argv[optind], lines[i], addrs[i], why);
            else
                fprintf(stderr, "sluice suppress: invalid address '%s': %s\n", addrs[i], why);
            status = 2;
        }
    /* remove: only what is in force; saying "removed" of an address that
     * was never suppressed would mislead. */
    size_t not_there = 0;
    if (!status && rm) {
        sl_map cur;
        if (suppress_load(cfg, topic, &cur) != 0) {
            status = 1;
        } else {
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                char *key = xasprintf("%s/%s", tenant, addrs[i]);
                sl_lower(key + strlen(tenant) + 1);
                if (sl_map_get(&cur, key)) {
                    addrs[k++] = addrs[i];
                } else {
                    fprintf(stderr, "sluice suppress: %s is not suppressed for tenant '%s'\n",
                            addrs[i], tenant);
                    free(addrs[i]);
                    not_there++;
                }
                free(key);
            }
            n = k;
            suppress_map_free(&cur);
        }
    }
    if (!status) {
        sl_producer *p = sl_producer_new(cfg, NULL, &err);
        if (!p) {
            fprintf(stderr, "sluice suppress: %s\n", err);
            free(err);
            status = 1;
        } else {
            const char *why = reason ? reason : imp ? "import" : "manual";
            for (size_t i = 0; i < n; i++)
                if (suppress_publish(p, topic, tenant, addrs[i], why, rm) != 0)
                    n_failed++;
            if (sl_producer_flush(p, 60000) != 0 || n_failed) {
                fprintf(stderr, "sluice suppress: %d of %zu not acknowledged\n",
                        (int)(n - (size_t)n_acked), n);
                status = 1;
            } else {
                printf("%s %zu address%s for tenant '%s'\n", rm ? "removed" : "suppressed", n,
                       n == 1 ? "" : "es", tenant);
                if (not_there)
                    status = 1;
            }
            sl_producer_free(p);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(addrs[i]);
    free(addrs);
    free(lines);
out:
    free(topic);
    sl_config_free(cfg);
    return status;
}
