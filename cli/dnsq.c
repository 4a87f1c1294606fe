/*
 * dnsq - blocking DNS questions for the commands of `sluice` (see dnsq.h).
 */
#include "dnsq.h"
#include "dns.h"
#include "util.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>

struct cli_dnsq {
    ares_channel channel;
    const char *error; /* static text */
};

typedef struct answer {
    bool done;
    int status;
    unsigned char *abuf;
    int alen;
} answer;

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    answer *a = arg;
    a->done = true;
    a->status = status;
    if (status == ARES_SUCCESS && abuf && alen > 0) {
        a->abuf = xmalloc((size_t)alen);
        memcpy(a->abuf, abuf, (size_t)alen);
        a->alen = alen;
    }
}

cli_dnsq *cli_dnsq_new(const sl_config *cfg, const char *server, char **err)
{
    cli_dnsq *q = xcalloc(1, sizeof *q);
    struct ares_options opts;
    memset(&opts, 0, sizeof opts);
    opts.timeout = cfg && cfg->dns.timeout_ms > 0 ? (int)cfg->dns.timeout_ms : 5000;
    opts.tries = cfg && cfg->dns.tries > 0 ? cfg->dns.tries : 2;
    opts.flags = ARES_FLAG_NOALIASES;
    int rc = ares_init_options(&q->channel, &opts,
                               ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
    if (rc != ARES_SUCCESS) {
        *err = xasprintf("cannot initialise c-ares: %s", ares_strerror(rc));
        free(q);
        return NULL;
    }
    sl_buf csv = SL_BUF_INIT;
    if (server) {
        sl_buf_puts(&csv, server);
    } else if (cfg) {
        for (size_t i = 0; i < cfg->dns.n_servers; i++) {
            const char *s = cfg->dns.servers[i];
            size_t n = strlen(s);
            if (i)
                sl_buf_putc(&csv, ',');
            /* c-ares takes "::1" and "[::1]:53" but not "[::1]". */
            if (n > 2 && s[0] == '[' && s[n - 1] == ']')
                sl_buf_append(&csv, s + 1, n - 2);
            else
                sl_buf_puts(&csv, s);
        }
    }
    if (csv.len) {
        char *s = sl_buf_steal(&csv, NULL);
        rc = ares_set_servers_ports_csv(q->channel, s);
        if (rc != ARES_SUCCESS) {
            *err = xasprintf("bad DNS server '%s': %s", s, ares_strerror(rc));
            free(s);
            cli_dnsq_free(q);
            return NULL;
        }
        free(s);
    }
    sl_buf_free(&csv);
    return q;
}

void cli_dnsq_free(cli_dnsq *q)
{
    if (!q)
        return;
    ares_destroy(q->channel);
    free(q);
}

const char *cli_dnsq_error(const cli_dnsq *q)
{
    return q->error ? q->error : "no error";
}

void cli_dnsq_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Ask and wait; OK with a->abuf, or NONE / ERROR. */
static cli_spf_dns_status ask(cli_dnsq *q, const char *name, int type, answer *a)
{
    memset(a, 0, sizeof *a);
    ares_query(q->channel, name, ns_c_in, type, on_answer, a);
    while (!a->done) {
        fd_set r, w;
        FD_ZERO(&r);
        FD_ZERO(&w);
        int nfds = ares_fds(q->channel, &r, &w);
        struct timeval tv, *tvp = ares_timeout(q->channel, NULL, &tv);
        if (nfds == 0 && !tvp)
            break; /* nothing pending: the callback has run */
        select(nfds, &r, &w, NULL, tvp);
        ares_process(q->channel, &r, &w);
    }
    if (a->status == ARES_SUCCESS)
        return CLI_SPF_DNS_OK;
    if (a->status == ARES_ENOTFOUND || a->status == ARES_ENODATA)
        return CLI_SPF_DNS_NONE;
    q->error = ares_strerror(a->status);
    return CLI_SPF_DNS_ERROR;
}

static char *norm_name(const char *s)
{
    char *n = xstrdup(s);
    size_t l = strlen(n);
    if (l && n[l - 1] == '.')
        n[l - 1] = 0;
    sl_lower(n);
    return n;
}

static void push(char ***v, size_t *n, char *s)
{
    *v = xrealloc(*v, (*n + 1) * sizeof **v);
    (*v)[(*n)++] = s;
}

cli_spf_dns_status cli_dnsq_txt(cli_dnsq *q, const char *name, char ***out, size_t *n)
{
    answer a;
    *out = NULL;
    *n = 0;
    cli_spf_dns_status st = ask(q, name, ns_t_txt, &a);
    if (st != CLI_SPF_DNS_OK)
        return st;
    int rc = sl_dns_parse_txt(a.abuf, a.alen, out, n);
    free(a.abuf);
    if (rc == ARES_ENODATA)
        return CLI_SPF_DNS_NONE;
    if (rc != ARES_SUCCESS) {
        q->error = ares_strerror(rc);
        return CLI_SPF_DNS_ERROR;
    }
    return *n ? CLI_SPF_DNS_OK : CLI_SPF_DNS_NONE;
}

cli_spf_dns_status cli_dnsq_mx(cli_dnsq *q, const char *name, char ***out, size_t *n)
{
    answer a;
    *out = NULL;
    *n = 0;
    cli_spf_dns_status st = ask(q, name, ns_t_mx, &a);
    if (st != CLI_SPF_DNS_OK)
        return st;
    struct ares_mx_reply *mx = NULL;
    int rc = ares_parse_mx_reply(a.abuf, a.alen, &mx);
    free(a.abuf);
    if (rc == ARES_ENODATA)
        return CLI_SPF_DNS_NONE;
    if (rc != ARES_SUCCESS) {
        q->error = ares_strerror(rc);
        return CLI_SPF_DNS_ERROR;
    }
    for (struct ares_mx_reply *m = mx; m; m = m->next)
        push(out, n, norm_name(m->host));
    ares_free_data(mx);
    return *n ? CLI_SPF_DNS_OK : CLI_SPF_DNS_NONE;
}

#define DNSQ_MAX_ADDRS 32

cli_spf_dns_status cli_dnsq_addr(cli_dnsq *q, const char *name, int family, cli_spf_ip **out,
                                 size_t *n)
{
    answer a;
    *out = NULL;
    *n = 0;
    cli_spf_dns_status st = ask(q, name, family == AF_INET ? ns_t_a : ns_t_aaaa, &a);
    if (st != CLI_SPF_DNS_OK)
        return st;
    int count = DNSQ_MAX_ADDRS, rc;
    *out = xcalloc(DNSQ_MAX_ADDRS, sizeof **out);
    if (family == AF_INET) {
        struct ares_addrttl at[DNSQ_MAX_ADDRS];
        rc = ares_parse_a_reply(a.abuf, a.alen, NULL, at, &count);
        for (int i = 0; rc == ARES_SUCCESS && i < count; i++) {
            (*out)[i].family = AF_INET;
            memcpy((*out)[i].a, &at[i].ipaddr, 4);
        }
    } else {
        struct ares_addr6ttl at[DNSQ_MAX_ADDRS];
        rc = ares_parse_aaaa_reply(a.abuf, a.alen, NULL, at, &count);
        for (int i = 0; rc == ARES_SUCCESS && i < count; i++) {
            (*out)[i].family = AF_INET6;
            memcpy((*out)[i].a, &at[i].ip6addr, 16);
        }
    }
    free(a.abuf);
    if (rc == ARES_SUCCESS && count > 0) {
        *n = (size_t)count;
        return CLI_SPF_DNS_OK;
    }
    free(*out);
    *out = NULL;
    if (rc == ARES_SUCCESS || rc == ARES_ENODATA)
        return CLI_SPF_DNS_NONE;
    q->error = ares_strerror(rc);
    return CLI_SPF_DNS_ERROR;
}

cli_spf_dns_status cli_dnsq_ptr(cli_dnsq *q, const cli_spf_ip *ip, char ***out, size_t *n)
{
    answer a;
    *out = NULL;
    *n = 0;
    sl_buf name = SL_BUF_INIT;
    if (ip->family == AF_INET) {
        sl_buf_printf(&name, "%u.%u.%u.%u.in-addr.arpa", ip->a[3], ip->a[2], ip->a[1],
                      ip->a[0]);
    } else {
        for (int i = 15; i >= 0; i--)
            sl_buf_printf(&name, "%x.%x.", ip->a[i] & 15, ip->a[i] >> 4);
        sl_buf_puts(&name, "ip6.arpa");
    }
    char *qname = sl_buf_steal(&name, NULL);
    cli_spf_dns_status st = ask(q, qname, ns_t_ptr, &a);
    free(qname);
    if (st != CLI_SPF_DNS_OK)
        return st;
    struct hostent *he = NULL;
    int rc = ares_parse_ptr_reply(a.abuf, a.alen, ip->a, ip->family == AF_INET ? 4 : 16,
                                  ip->family, &he);
    free(a.abuf);
    if (rc == ARES_ENODATA)
        return CLI_SPF_DNS_NONE;
    if (rc != ARES_SUCCESS) {
        q->error = ares_strerror(rc);
        return CLI_SPF_DNS_ERROR;
    }
    push(out, n, norm_name(he->h_name));
    for (char **al = he->h_aliases; al && *al; al++)
        push(out, n, norm_name(*al));
    ares_free_hostent(he);
    return CLI_SPF_DNS_OK;
}

static cli_spf_dns_status spf_txt(void *arg, const char *name, char ***out, size_t *n)
{
    return cli_dnsq_txt(arg, name, out, n);
}

static cli_spf_dns_status spf_mx(void *arg, const char *name, char ***out, size_t *n)
{
    return cli_dnsq_mx(arg, name, out, n);
}

static cli_spf_dns_status spf_addr(void *arg, const char *name, int family, cli_spf_ip **out,
                                   size_t *n)
{
    return cli_dnsq_addr(arg, name, family, out, n);
}

cli_spf_dns cli_dnsq_spf(cli_dnsq *q)
{
    return (cli_spf_dns){.txt = spf_txt, .mx = spf_mx, .addr = spf_addr, .arg = q};
}
