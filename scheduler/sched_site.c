/*
 * sched_site - see sched_site.h.
 */
#include "sched_site.h"
#include "map.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* A pattern's rank is its place in config order (sites, then each site's
 * patterns), from 1; the map values are ranks. */
typedef struct glob_pat {
    const char *pattern;
    uint32_t rank;
} glob_pat;

typedef struct pat_index {
    sl_map exact;  /* "gmail.com" -> lowest rank */
    sl_map tail;   /* "*.hotmail.com" under ".hotmail.com" -> lowest rank */
    glob_pat *globs;  /* every other pattern, in rank order */
    size_t n_globs;
} pat_index;

struct sched_sites {
    const sl_config *cfg;
    const char **site_of; /* rank -> site name; [0] unused */
    pat_index domains, mx;
};

static void put_lowest(sl_map *m, const char *key, uint32_t rank)
{
    char *k = xstrdup(key);
    sl_lower(k);
    uintptr_t had = (uintptr_t)sl_map_get(m, k);
    if (!had || rank < had)
        sl_map_put(m, k, (void *)(uintptr_t)rank);
    free(k);
}

static void index_add(pat_index *x, const char *p, uint32_t rank)
{
    if (!p[strcspn(p, "*?")]) {
        put_lowest(&x->exact, p, rank);
    } else if (p[0] == '*' && p[1] == '.' && !p[1 + strcspn(p + 1, "*?")]) {
        put_lowest(&x->tail, p + 1, rank);
    } else {
        x->globs = xrealloc(x->globs, (x->n_globs + 1) * sizeof *x->globs);
        x->globs[x->n_globs++] = (glob_pat){p, rank};
    }
}

sched_sites *sched_sites_new(const sl_config *cfg)
{
    sched_sites *s = xcalloc(1, sizeof *s);
    s->cfg = cfg;
    sl_map_init(&s->domains.exact);
    sl_map_init(&s->domains.tail);
    sl_map_init(&s->mx.exact);
    sl_map_init(&s->mx.tail);
    size_t n = 1;
    for (size_t i = 0; i < cfg->n_sites; i++)
        n += cfg->sites[i].n_domains + cfg->sites[i].n_mx;
    s->site_of = xcalloc(n, sizeof *s->site_of);
    uint32_t rank = 1;
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const sl_site *site = &cfg->sites[i];
        for (size_t k = 0; k < site->n_domains; k++, rank++) {
            s->site_of[rank] = site->name;
            index_add(&s->domains, site->domains[k], rank);
        }
        for (size_t k = 0; k < site->n_mx; k++, rank++) {
            s->site_of[rank] = site->name;
            index_add(&s->mx, site->mx[k], rank);
        }
    }
    return s;
}

static void index_free(pat_index *x)
{
    sl_map_free(&x->exact);
    sl_map_free(&x->tail);
    free(x->globs);
}

void sched_sites_free(sched_sites *s)
{
    if (!s)
        return;
    index_free(&s->domains);
    index_free(&s->mx);
    free(s->site_of);
    free(s);
}

/* The lowest rank of a pattern matching name, or 0. */
static uint32_t index_match(const pat_index *x, const char *name)
{
    char stack[256];
    size_t len = strlen(name);
    char *low = len < sizeof stack ? stack : xmalloc(len + 1);
    memcpy(low, name, len + 1);
    sl_lower(low);
    uint32_t best = (uint32_t)(uintptr_t)sl_map_get(&x->exact, low);
    for (const char *dot = strchr(low, '.'); dot; dot = strchr(dot + 1, '.')) {
        uint32_t r = (uint32_t)(uintptr_t)sl_map_get(&x->tail, dot);
        if (r && (!best || r < best))
            best = r;
    }
    for (size_t i = 0; i < x->n_globs && (!best || x->globs[i].rank < best); i++)
        if (sl_glob_match(x->globs[i].pattern, low)) {
            best = x->globs[i].rank;
            break;
        }
    if (low != stack)
        free(low);
    return best;
}

const char *sched_site_by_domain(const sched_sites *s, const char *domain)
{
    uint32_t r = index_match(&s->domains, domain);
    return r ? s->site_of[r] : NULL;
}

static int cmp_pref(const void *a, const void *b)
{
    const sched_mx *x = a, *y = b;
    if (x->preference != y->preference)
        return x->preference < y->preference ? -1 : 1;
    return strcasecmp(x->host, y->host);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *host_norm(const char *h)
{
    char *s = xstrdup(h);
    sl_lower(s);
    size_t n = strlen(s);
    if (n && s[n - 1] == '.')
        s[n - 1] = 0; /* "mx.example.com." and "mx.example.com" are one host */
    return s;
}

char *sched_site_by_mx(const sched_sites *s, const char *domain, const sched_mx *mx, size_t n)
{
    if (!n) {
        char *d = xstrdup(domain);
        sl_lower(d);
        return d;
    }
    sched_mx *sorted = xmalloc(n * sizeof *sorted);
    memcpy(sorted, mx, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_pref);
    for (size_t h = 0; h < n; h++) {
        char *host = host_norm(sorted[h].host);
        uint32_t r = index_match(&s->mx, host);
        free(host);
        if (r) {
            free(sorted);
            return xstrdup(s->site_of[r]);
        }
    }
    free(sorted);
    char **names = xmalloc(n * sizeof *names);
    for (size_t i = 0; i < n; i++)
        names[i] = host_norm(mx[i].host);
    qsort(names, n, sizeof *names, cmp_str);
    sl_buf b = SL_BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(names[i], names[i - 1])) {
            if (b.len)
                sl_buf_putc(&b, ',');
            sl_buf_puts(&b, names[i]);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return sl_buf_steal(&b, NULL);
}
