/*
 * sched_site - see sched_site.h.
 */
#include "sched_site.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

const char *sched_site_by_domain(const sl_config *cfg, const char *domain)
{
    for (size_t i = 0; i < cfg->n_sites; i++)
        for (size_t k = 0; k < cfg->sites[i].n_domains; k++)
            if (sl_glob_match(cfg->sites[i].domains[k], domain))
                return cfg->sites[i].name;
    return NULL;
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

char *sched_site_by_mx(const sl_config *cfg, const char *domain, const sched_mx *mx, size_t n)
{
    if (!n) {
        char *s = xstrdup(domain);
        sl_lower(s);
        return s;
    }
    sched_mx *sorted = xmalloc(n * sizeof *sorted);
    memcpy(sorted, mx, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_pref);
    for (size_t h = 0; h < n; h++) {
        char *host = host_norm(sorted[h].host);
        for (size_t i = 0; i < cfg->n_sites; i++)
            for (size_t k = 0; k < cfg->sites[i].n_mx; k++)
                if (sl_glob_match(cfg->sites[i].mx[k], host)) {
                    free(host);
                    free(sorted);
                    return xstrdup(cfg->sites[i].name);
                }
        free(host);
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
