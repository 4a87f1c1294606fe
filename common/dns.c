/*
 * dns - c-ares on a libuv loop, with a TTL cache and query coalescing.
 *
 * The contract is in dns.h. How it works:
 *
 * Every name being resolved or cached is one dns_entry, found by
 * (type, name) in the string hash map (map.h). A lookup either finds a finished
 * entry that has not expired (a cache hit: the waiter is queued and
 * delivered from a zero-delay timer, so no callback ever runs inside
 * sl_dns_mx()/sl_dns_addr()), finds a pending entry (the waiter joins it:
 * coalescing), or creates a pending entry and starts the c-ares queries
 * (one MX query, or an A and an AAAA query). When the last query of an
 * entry finishes, the entry is completed: its waiters are detached and
 * called, and the entry either stays in the table as a cached answer (on
 * the LRU list) or leaves the table (temporary failures, TTL 0).
 *
 * Entries are reference counted: the table holds one reference, each
 * outstanding c-ares query one, each queued cache-hit waiter one, and the
 * delivery loop one while it calls out, so a callback that evicts or
 * replaces the entry it is reading from cannot free it underneath.
 *
 * c-ares tells us which sockets to watch through ARES_OPT_SOCK_STATE_CB;
 * each socket gets a uv_poll_t that is closed (uv_close, which detaches it
 * from epoll at once) when c-ares says the socket is done - before c-ares
 * closes the descriptor, so a reused descriptor number is never confused
 * with the old one. One uv_timer_t follows ares_timeout() so retries and
 * timeouts happen without any socket activity.
 *
 * sl_dns_free() may be called from inside one of our own callbacks; the
 * teardown is then postponed until the outermost c-ares call returns, as
 * c-ares must not be destroyed from within its own callbacks.
 */
#include "dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"
#include "map.h"
#include "metrics.h"
#include "util.h"

#define DNS_MAX_TTL (24 * 3600) /* cap on positive answers */
#define DNS_MAX_NEG_TTL 3600    /* cap on negative answers (RFC 2308 5) */
#define DNS_DEFAULT_NEG_TTL 60  /* negative answer without an SOA */
#define DNS_DEFAULT_CACHE_MAX 10000
#define DNS_MAX_ADDRS 64

#define DNS_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum { DNS_T_MX = 0, DNS_T_ADDR = 1, DNS_T_TXT = 2 };

typedef struct dns_entry dns_entry;

typedef struct dns_waiter {
    struct dns_waiter *next;
    dns_entry *entry; /* queued cache hits only: holds a reference */
    union {
        sl_dns_mx_cb mx;
        sl_dns_addr_cb addr;
        sl_dns_txt_cb txt;
    } cb;
    void *arg;
    bool cached; /* queued: deliver as a cache hit */
} dns_waiter;

/* One family's answer of an address lookup, kept until both are in. */
typedef struct dns_part {
    sl_dns_status status;
    uint32_t ttl;
    sl_dns_ip *ips;
    size_t n;
} dns_part;

struct dns_entry {
    sl_dns *dns;
    int type;
    char *name;
    char *key; /* "type/name", the table's key */
    int refs;
    bool pending; /* queries outstanding */
    bool in_table;
    int outstanding;
    dns_entry *lru_prev, *lru_next; /* cached (finished) entries only */
    dns_waiter *waiters, **waiters_tail;

    sl_dns_status status;
    uint32_t ttl;
    int64_t expires_ms; /* monotonic */
    sl_dns_mx_host *mx; /* owns the host strings */
    size_t n_mx;
    sl_dns_ip *ips;
    size_t n_ips;
    dns_part part4, part6;
    char **txt; /* TXT lookups: each record's strings joined */
    size_t n_txt;
};

typedef struct dns_sock {
    struct dns_sock *next;
    sl_dns *dns;
    ares_socket_t fd;
    uv_poll_t poll;
} dns_sock;

struct sl_dns {
    uv_loop_t *loop;
    ares_channel channel;
    bool channel_ok;
    uv_timer_t ares_timer;
    uv_timer_t defer_timer;
    int open_handles;
    dns_sock *socks;

    sl_map table; /* entry key -> dns_entry, pending or not; holds a reference */
    size_t n_cached;  /* on the LRU list */
    size_t cache_max;
    dns_entry *lru_head, *lru_tail; /* head: most recently used */

    dns_waiter *ready, **ready_tail;

    bool ipv6;
    uint64_t rng;
    int busy;      /* depth of our calls into c-ares / callbacks */
    bool starting; /* inside ares_query(): callbacks must be queued */
    bool closing;
    bool free_requested;
};

static const char *const status_names[] = {
    [SL_DNS_OK] = "ok",
    [SL_DNS_NXDOMAIN] = "nxdomain",
    [SL_DNS_NODATA] = "nodata",
    [SL_DNS_NULL_MX] = "null_mx",
    [SL_DNS_SERVFAIL] = "servfail",
    [SL_DNS_TIMEOUT] = "timeout",
    [SL_DNS_TEMPFAIL] = "tempfail",
    [SL_DNS_CANCELLED] = "cancelled",
};

const char *sl_dns_status_name(sl_dns_status status)
{
    if ((unsigned)status < sizeof status_names / sizeof status_names[0])
        return status_names[status];
    return "unknown";
}

bool sl_dns_status_temporary(sl_dns_status status)
{
    return status == SL_DNS_SERVFAIL || status == SL_DNS_TIMEOUT || status == SL_DNS_TEMPFAIL ||
           status == SL_DNS_CANCELLED;
}

static sl_dns_status status_from_ares(int st)
{
    switch (st) {
    case ARES_SUCCESS:
        return SL_DNS_OK;
    case ARES_ENODATA:
        return SL_DNS_NODATA;
    case ARES_ENOTFOUND:
        return SL_DNS_NXDOMAIN;
    case ARES_ESERVFAIL:
    /* c-ares drops SERVFAIL/REFUSED/NOTIMP replies and moves on to the next
     * server (we keep that: ARES_FLAG_NOCHECKRESP would also turn off its
     * check that a reply answers our question); when no server is left it
     * reports ARES_ECONNREFUSED, as it does for refused connections. */
    case ARES_ECONNREFUSED:
        return SL_DNS_SERVFAIL;
    case ARES_ETIMEOUT:
        return SL_DNS_TIMEOUT;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return SL_DNS_CANCELLED;
    default:
        return SL_DNS_TEMPFAIL;
    }
}

/* ---- small helpers --------------------------------------------------- */

/* xorshift64*: plenty for shuffling MX ties. */
static uint64_t dns_rand(sl_dns *dns)
{
    return sl_xorshift64s(&dns->rng);
}

/* Lower-case, drop one trailing dot, check the shape. NULL if unusable. */
static char *dns_normalise(const char *in)
{
    if (!in)
        return NULL;
    size_t len = strlen(in);
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return NULL;
    char *s = xstrndup(in, len);
    sl_lower(s);
    size_t label = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (label == 0 || label > 63) {
                free(s);
                return NULL;
            }
            label = 0;
        } else if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) {
            free(s);
            return NULL;
        } else {
            label++;
        }
    }
    return s;
}

static uint32_t clamp_ttl(uint32_t ttl, uint32_t cap)
{
    if (ttl & 0x80000000u) /* RFC 2181 8: a TTL with the top bit set is 0 */
        return 0;
    return ttl > cap ? cap : ttl;
}

/* Skip a possibly compressed name at off; returns the offset after it or
 * -1 when the message is malformed. */
static long skip_name(const unsigned char *buf, long len, long off)
{
    while (off < len) {
        unsigned n = buf[off];
        if ((n & 0xC0) == 0xC0)
            return off + 2 <= len ? off + 2 : -1;
        if (n & 0xC0)
            return -1;
        off += 1 + n;
        if (n == 0)
            return off <= len ? off : -1;
    }
    return -1;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* From a reply: the smallest TTL over the answer section (*ans_ttl, or
 * UINT32_MAX if none) and the negative-caching TTL from an SOA in the
 * authority section, min(SOA TTL, SOA minimum) per RFC 2308 (*neg_ttl, or
 * DNS_DEFAULT_NEG_TTL without one). */
static void reply_ttls(const unsigned char *buf, int alen, uint32_t *ans_ttl, uint32_t *neg_ttl)
{
    *ans_ttl = UINT32_MAX;
    *neg_ttl = DNS_DEFAULT_NEG_TTL;
    long len = alen;
    if (!buf || len < 12)
        return;
    unsigned qd = buf[4] << 8 | buf[5], an = buf[6] << 8 | buf[7], ns = buf[8] << 8 | buf[9];
    long off = 12;
    for (unsigned i = 0; i < qd; i++) {
        off = skip_name(buf, len, off);
        if (off < 0 || off + 4 > len)
            return;
        off += 4;
    }
    for (unsigned i = 0; i < an + ns; i++) {
        off = skip_name(buf, len, off);
        if (off < 0 || off + 10 > len)
            return;
        unsigned type = buf[off] << 8 | buf[off + 1];
        uint32_t ttl = clamp_ttl(get32(buf + off + 4), UINT32_MAX - 1);
        long rdlen = buf[off + 8] << 8 | buf[off + 9];
        long rd = off + 10;
        if (rd + rdlen > len)
            return;
        if (i < an) {
            if (ttl < *ans_ttl)
                *ans_ttl = ttl;
        } else if (type == ns_t_soa) {
            long p = skip_name(buf, len, rd);
            if (p >= 0)
                p = skip_name(buf, len, p);
            if (p >= 0 && p + 20 <= rd + rdlen) {
                uint32_t minimum = clamp_ttl(get32(buf + p + 16), UINT32_MAX - 1);
                *neg_ttl = ttl < minimum ? ttl : minimum;
            }
        }
        off = rd + rdlen;
    }
}

/* ---- the table and the LRU ----------------------------------------- */

static void entry_unref(dns_entry *e)
{
    SL_ASSERT(e->refs > 0);
    if (--e->refs > 0)
        return;
    SL_ASSERT(!e->in_table && !e->waiters);
    for (size_t i = 0; i < e->n_mx; i++)
        free((char *)e->mx[i].host);
    free(e->mx);
    for (size_t i = 0; i < e->n_txt; i++)
        free(e->txt[i]);
    free(e->txt);
    free(e->ips);
    free(e->part4.ips);
    free(e->part6.ips);
    free(e->name);
    free(e->key);
    free(e);
}

static void lru_unlink(sl_dns *dns, dns_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        dns->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        dns->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
    dns->n_cached--;
}

static void lru_push_front(sl_dns *dns, dns_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = dns->lru_head;
    if (dns->lru_head)
        dns->lru_head->lru_prev = e;
    dns->lru_head = e;
    if (!dns->lru_tail)
        dns->lru_tail = e;
    dns->n_cached++;
}

static bool on_lru(sl_dns *dns, dns_entry *e)
{
    return e->lru_prev || e->lru_next || dns->lru_head == e;
}

static void table_remove(sl_dns *dns, dns_entry *e)
{
    if (!e->in_table)
        return;
    sl_map_del(&dns->table, e->key);
    e->in_table = false;
    if (on_lru(dns, e))
        lru_unlink(dns, e);
    entry_unref(e);
}

static void table_insert(sl_dns *dns, dns_entry *e)
{
    sl_map_put(&dns->table, e->key, e);
    e->in_table = true;
    e->refs++;
}

static int table_remove_each(void *arg, const char *key, void *val)
{
    table_remove(arg, val);
    return 0;
}

static void cache_trim(sl_dns *dns)
{
    while (dns->n_cached > dns->cache_max && dns->lru_tail)
        table_remove(dns, dns->lru_tail);
}

/* ---- delivery ------------------------------------------------------ */

static int mx_cmp(const void *a, const void *b)
{
    const sl_dns_mx_host *x = a, *y = b;
    if (x->preference != y->preference)
        return x->preference < y->preference ? -1 : 1;
    return strcmp(x->host, y->host);
}

static uint32_t ttl_left(const dns_entry *e, int64_t now)
{
    if (e->expires_ms <= now)
        return 0;
    return (uint32_t)((e->expires_ms - now + 999) / 1000);
}

static void deliver(sl_dns *dns, dns_entry *e, dns_waiter *w, bool cached)
{
    const char *type = e->type == DNS_T_MX ? "mx" : e->type == DNS_T_TXT ? "txt" : "addr";
    char labels[64];
    snprintf(labels, sizeof labels, "type=\"%s\",result=\"%s\"", type,
             sl_dns_status_name(e->status));
    sl_metric_inc("sluice_dns_lookups_total", labels, 1);
    uint32_t ttl = e->in_table ? ttl_left(e, sl_mono_ms()) : 0;

    if (e->type == DNS_T_MX) {
        sl_dns_mx_host local[16];
        sl_dns_mx_host *hosts = e->n_mx <= 16 ? local : xmalloc(e->n_mx * sizeof *hosts);
        if (e->n_mx)
            memcpy(hosts, e->mx, e->n_mx * sizeof *hosts);
        /* e->mx is sorted; shuffle every run of equal preference. */
        for (size_t start = 0; start < e->n_mx;) {
            size_t end = start + 1;
            while (end < e->n_mx && hosts[end].preference == hosts[start].preference)
                end++;
            for (size_t i = end - 1; i > start; i--) {
                size_t j = start + (size_t)(dns_rand(dns) % (i - start + 1));
                sl_dns_mx_host t = hosts[i];
                hosts[i] = hosts[j];
                hosts[j] = t;
            }
            start = end;
        }
        sl_dns_mx_result r = {.status = e->status,
                              .domain = e->name,
                              .hosts = hosts,
                              .n_hosts = e->n_mx,
                              .ttl = ttl,
                              .cached = cached};
        w->cb.mx(&r, w->arg);
        if (hosts != local)
            free(hosts);
    } else if (e->type == DNS_T_TXT) {
        sl_dns_txt_result r = {.status = e->status,
                               .name = e->name,
                               .txt = (const char *const *)e->txt,
                               .n_txt = e->n_txt,
                               .ttl = ttl,
                               .cached = cached};
        w->cb.txt(&r, w->arg);
    } else {
        sl_dns_addr_result r = {.status = e->status,
                                .host = e->name,
                                .addrs = e->ips,
                                .n_addrs = e->n_ips,
                                .ttl = ttl,
                                .cached = cached};
        w->cb.addr(&r, w->arg);
    }
}

static void dns_maybe_finish_free(sl_dns *dns);

/* Run the queued cache hits. Hits queued by these callbacks wait for the
 * next turn of the timer, so a callback that looks its own name up again
 * cannot spin here forever. */
static void on_defer(uv_timer_t *t);

static void drain_ready(sl_dns *dns, sl_dns_status force)
{
    dns_waiter *list = dns->ready;
    dns->ready = NULL;
    dns->ready_tail = &dns->ready;
    while (list) {
        dns_waiter *w = list;
        list = w->next;
        dns_entry *e = w->entry;
        if (force == SL_DNS_CANCELLED) {
            sl_dns_status saved = e->status;
            e->status = SL_DNS_CANCELLED;
            size_t n_mx = e->n_mx, n_ips = e->n_ips, n_txt = e->n_txt;
            e->n_mx = e->n_ips = e->n_txt = 0;
            deliver(dns, e, w, false);
            e->status = saved;
            e->n_mx = n_mx;
            e->n_ips = n_ips;
            e->n_txt = n_txt;
        } else {
            deliver(dns, e, w, w->cached);
        }
        entry_unref(e);
        free(w);
    }
}

static void ready_push(sl_dns *dns, dns_entry *e, dns_waiter *w, bool cached)
{
    e->refs++;
    w->entry = e;
    w->cached = cached;
    w->next = NULL;
    *dns->ready_tail = w;
    dns->ready_tail = &w->next;
    uv_timer_start(&dns->defer_timer, on_defer, 0, 0);
}

static void on_defer(uv_timer_t *t)
{
    sl_dns *dns = t->data;
    dns->busy++;
    drain_ready(dns, SL_DNS_OK);
    dns->busy--;
    dns_maybe_finish_free(dns);
}

/* All queries of e are done: settle the result, cache it or not, call the
 * waiters. Runs inside a c-ares callback. */
static void entry_complete(sl_dns *dns, dns_entry *e, bool cacheable, uint32_t ttl)
{
    e->pending = false;
    e->ttl = ttl;
    e->expires_ms = sl_mono_ms() + (int64_t)ttl * 1000;
    if (cacheable && ttl > 0 && !dns->closing && e->in_table) {
        lru_push_front(dns, e);
        cache_trim(dns);
    } else {
        table_remove(dns, e); /* the caller's reference keeps e alive */
    }
    e->refs++;
    dns_waiter *w = e->waiters;
    e->waiters = NULL;
    e->waiters_tail = &e->waiters;
    while (w) {
        dns_waiter *next = w->next;
        if (dns->starting && !dns->closing) {
            /* c-ares answered inside ares_query(): never call back from
             * within sl_dns_mx()/sl_dns_addr(). */
            ready_push(dns, e, w, false);
        } else {
            deliver(dns, e, w, false);
            free(w);
        }
        w = next;
    }
    entry_unref(e);
}

/* ---- c-ares callbacks ------------------------------------------------- */

/* How long an answer of status st may be cached: the answer's TTL for a
 * positive one, the negative TTL (RFC 2308) for NXDOMAIN and NODATA, and
 * not at all (false) for a temporary failure. */
static bool answer_ttl(sl_dns_status st, uint32_t ans_ttl, uint32_t neg_ttl, uint32_t *ttl)
{
    *ttl = 0;
    if (st == SL_DNS_OK || st == SL_DNS_NULL_MX) {
        *ttl = clamp_ttl(ans_ttl == UINT32_MAX ? 0 : ans_ttl, DNS_MAX_TTL);
        return true;
    }
    if (st == SL_DNS_NXDOMAIN || st == SL_DNS_NODATA) {
        *ttl = clamp_ttl(neg_ttl, DNS_MAX_NEG_TTL);
        return true;
    }
    return false;
}

static void on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_entry *e = arg;
    sl_dns *dns = e->dns;
    uint32_t ans_ttl, neg_ttl;
    reply_ttls(abuf, alen, &ans_ttl, &neg_ttl);
    sl_dns_status st = status_from_ares(status);

    if (st == SL_DNS_OK) {
        struct ares_mx_reply *mx = NULL;
        int pst = ares_parse_mx_reply(abuf, alen, &mx);
        if (pst == ARES_SUCCESS) {
            size_t n = 0, n_null = 0;
            for (struct ares_mx_reply *m = mx; m; m = m->next) {
                n++;
                if (!m->host[0] || !strcmp(m->host, "."))
                    n_null++;
            }
            if (n == 1 && n_null == 1) {
                st = SL_DNS_NULL_MX;
            } else if (n == n_null) {
                st = SL_DNS_NODATA; /* several "." records: nonsense, treat as none */
            } else {
                /* A "." among real hosts breaks RFC 7505 3.1; ignore it. */
                e->mx = xcalloc(n - n_null, sizeof *e->mx);
                for (struct ares_mx_reply *m = mx; m; m = m->next) {
                    if (!m->host[0] || !strcmp(m->host, "."))
                        continue;
                    char *h = xstrdup(m->host);
                    size_t hl = strlen(h);
                    if (hl > 1 && h[hl - 1] == '.')
                        h[hl - 1] = 0;
                    sl_lower(h);
                    e->mx[e->n_mx].host = h;
                    e->mx[e->n_mx].preference = m->priority;
                    e->n_mx++;
                }
                qsort(e->mx, e->n_mx, sizeof *e->mx, mx_cmp);
            }
            ares_free_data(mx);
        } else {
            st = pst == ARES_ENODATA ? SL_DNS_NODATA : SL_DNS_TEMPFAIL;
        }
    }
    e->status = st;
    uint32_t ttl;
    bool cacheable = answer_ttl(st, ans_ttl, neg_ttl, &ttl);
    if (st != SL_DNS_CANCELLED)
        sl_debug("dns: MX %s: %s (%zu hosts, ttl %u, %d timeouts)", e->name, sl_dns_status_name(st),
                 e->n_mx, ttl, timeouts);
    e->outstanding--;
    entry_complete(dns, e, cacheable, ttl);
    entry_unref(e); /* the query's reference */
}

/* A TXT record is one or more character strings; they are joined, as
 * RFC 7208 3.3 and RFC 8461 3.1 read them. */
int sl_dns_parse_txt(const unsigned char *abuf, int alen, char ***out, size_t *n)
{
    struct ares_txt_ext *txt = NULL;
    int pst = ares_parse_txt_reply_ext(abuf, alen, &txt);
    if (pst != ARES_SUCCESS)
        return pst;
    sl_buf cur = {0};
    for (struct ares_txt_ext *t = txt; t; t = t->next) {
        sl_buf_append(&cur, t->txt, t->length);
        /* A record's strings end where the next record starts. */
        if (!t->next || t->next->record_start) {
            *out = xrealloc(*out, (*n + 1) * sizeof **out);
            (*out)[(*n)++] = xstrndup(cur.data ? cur.data : "", cur.len);
            cur.len = 0;
        }
    }
    sl_buf_free(&cur);
    ares_free_data(txt);
    return ARES_SUCCESS;
}

static void on_txt(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_entry *e = arg;
    sl_dns *dns = e->dns;
    uint32_t ans_ttl, neg_ttl;
    reply_ttls(abuf, alen, &ans_ttl, &neg_ttl);
    sl_dns_status st = status_from_ares(status);

    if (st == SL_DNS_OK) {
        int pst = sl_dns_parse_txt(abuf, alen, &e->txt, &e->n_txt);
        if (pst == ARES_SUCCESS) {
            if (!e->n_txt)
                st = SL_DNS_NODATA;
        } else {
            st = pst == ARES_ENODATA ? SL_DNS_NODATA : SL_DNS_TEMPFAIL;
        }
    }
    e->status = st;
    uint32_t ttl;
    bool cacheable = answer_ttl(st, ans_ttl, neg_ttl, &ttl);
    if (st != SL_DNS_CANCELLED)
        sl_debug("dns: TXT %s: %s (%zu records, ttl %u, %d timeouts)", e->name,
                 sl_dns_status_name(st), e->n_txt, ttl, timeouts);
    e->outstanding--;
    entry_complete(dns, e, cacheable, ttl);
    entry_unref(e);
}

static void addr_part(dns_entry *e, dns_part *part, int family, int status, unsigned char *abuf,
                      int alen)
{
    uint32_t ans_ttl, neg_ttl;
    reply_ttls(abuf, alen, &ans_ttl, &neg_ttl);
    part->status = status_from_ares(status);
    if (part->status == SL_DNS_OK) {
        int n = DNS_MAX_ADDRS;
        int pst;
        if (family == AF_INET) {
            struct ares_addrttl at[DNS_MAX_ADDRS];
            pst = ares_parse_a_reply(abuf, alen, NULL, at, &n);
            if (pst == ARES_SUCCESS && n > 0) {
                part->ips = xcalloc((size_t)n, sizeof *part->ips);
                for (int i = 0; i < n; i++) {
                    sl_dns_ip *ip = &part->ips[i];
                    ip->family = AF_INET;
                    ip->addr.v4 = at[i].ipaddr;
                    inet_ntop(AF_INET, &ip->addr.v4, ip->text, sizeof ip->text);
                }
                part->n = (size_t)n;
            }
        } else {
            struct ares_addr6ttl at[DNS_MAX_ADDRS];
            pst = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
            if (pst == ARES_SUCCESS && n > 0) {
                part->ips = xcalloc((size_t)n, sizeof *part->ips);
                for (int i = 0; i < n; i++) {
                    sl_dns_ip *ip = &part->ips[i];
                    ip->family = AF_INET6;
                    memcpy(&ip->addr.v6, &at[i].ip6addr, sizeof ip->addr.v6);
                    inet_ntop(AF_INET6, &ip->addr.v6, ip->text, sizeof ip->text);
                }
                part->n = (size_t)n;
            }
        }
        if (pst == ARES_SUCCESS && n == 0)
            pst = ARES_ENODATA;
        if (pst != ARES_SUCCESS)
            part->status = pst == ARES_ENODATA ? SL_DNS_NODATA : SL_DNS_TEMPFAIL;
    }
    answer_ttl(part->status, ans_ttl, neg_ttl, &part->ttl);
}

/* Both families are in: combine. Any address makes the lookup OK (a
 * failing AAAA must not stop delivery over IPv4), but the result is only
 * cached when neither half failed temporarily. */
static void addr_finish(sl_dns *dns, dns_entry *e)
{
    dns_part *p4 = &e->part4, *p6 = &e->part6;
    bool temp4 = sl_dns_status_temporary(p4->status);
    bool temp6 = sl_dns_status_temporary(p6->status);
    e->n_ips = p4->n + p6->n;
    if (e->n_ips) {
        e->ips = xcalloc(e->n_ips, sizeof *e->ips);
        if (p4->n)
            memcpy(e->ips, p4->ips, p4->n * sizeof *e->ips);
        if (p6->n)
            memcpy(e->ips + p4->n, p6->ips, p6->n * sizeof *e->ips);
    }
    free(p4->ips);
    free(p6->ips);
    p4->ips = p6->ips = NULL;

    if (e->n_ips)
        e->status = SL_DNS_OK;
    else if (p4->status == SL_DNS_CANCELLED || p6->status == SL_DNS_CANCELLED)
        e->status = SL_DNS_CANCELLED;
    else if (temp4)
        e->status = p4->status;
    else if (temp6)
        e->status = p6->status;
    else if (p4->status == SL_DNS_NXDOMAIN || p6->status == SL_DNS_NXDOMAIN)
        e->status = SL_DNS_NXDOMAIN;
    else
        e->status = SL_DNS_NODATA;
    bool cacheable = !temp4 && !temp6;
    uint32_t ttl = p4->ttl < p6->ttl ? p4->ttl : p6->ttl;
    if (e->status != SL_DNS_CANCELLED)
        sl_debug("dns: addr %s: %s (%zu addresses, ttl %u)", e->name, sl_dns_status_name(e->status),
                 e->n_ips, cacheable ? ttl : 0);
    entry_complete(dns, e, cacheable, cacheable ? ttl : 0);
}

static void on_a(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_entry *e = arg;
    addr_part(e, &e->part4, AF_INET, status, abuf, alen);
    if (--e->outstanding == 0)
        addr_finish(e->dns, e);
    entry_unref(e);
}

static void on_aaaa(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_entry *e = arg;
    addr_part(e, &e->part6, AF_INET6, status, abuf, alen);
    if (--e->outstanding == 0)
        addr_finish(e->dns, e);
    entry_unref(e);
}

/* ---- libuv glue -------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    sl_dns *dns = h->data;
    if (h->type == UV_POLL)
        free(DNS_CONTAINER_OF((uv_poll_t *)h, dns_sock, poll));
    dns->open_handles--;
    if (dns->open_handles == 0 && dns->closing) {
        sl_map_free(&dns->table);
        free(dns);
    }
}

static void on_ares_timer(uv_timer_t *t);
static void dns_close_handle(uv_handle_t *h);

static void timer_update(sl_dns *dns)
{
    if (dns->closing || !dns->channel_ok)
        return;
    struct timeval tv, *tvp = ares_timeout(dns->channel, NULL, &tv);
    if (!tvp) {
        uv_timer_stop(&dns->ares_timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    uv_timer_start(&dns->ares_timer, on_ares_timer, ms, 0);
}

static void on_ares_timer(uv_timer_t *t)
{
    sl_dns *dns = t->data;
    dns->busy++;
    ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns->busy--;
    timer_update(dns);
    dns_maybe_finish_free(dns);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    dns_sock *s = DNS_CONTAINER_OF(p, dns_sock, poll);
    sl_dns *dns = s->dns;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    if (status < 0) {
        /* Let c-ares see the error on its next read or write. */
        rfd = wfd = s->fd;
    } else {
        if (events & UV_READABLE)
            rfd = s->fd;
        if (events & UV_WRITABLE)
            wfd = s->fd;
    }
    dns->busy++;
    ares_process_fd(dns->channel, rfd, wfd);
    dns->busy--;
    timer_update(dns);
    dns_maybe_finish_free(dns);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    sl_dns *dns = data;
    dns_sock **pp = &dns->socks;
    while (*pp && (*pp)->fd != fd)
        pp = &(*pp)->next;
    dns_sock *s = *pp;
    if (!readable && !writable) {
        if (s) {
            *pp = s->next;
            /* Before c-ares closes fd: uv_close detaches it from epoll now. */
            dns_close_handle((uv_handle_t *)&s->poll);
        }
        return;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->dns = dns;
        s->fd = fd;
        int rc = uv_poll_init_socket(dns->loop, &s->poll, fd);
        if (rc < 0) {
            /* Without a watcher this socket is only served by timeouts. */
            sl_error("dns: cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
            free(s);
            return;
        }
        s->poll.data = dns;
        dns->open_handles++;
        s->next = dns->socks;
        dns->socks = s;
    }
    int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, events, on_poll);
}

/* ---- setup and teardown ------------------------------------------------ */

static char *servers_csv(const sl_config *cfg)
{
    sl_buf b = SL_BUF_INIT;
    for (size_t i = 0; i < cfg->dns.n_servers; i++) {
        const char *s = cfg->dns.servers[i];
        if (i)
            sl_buf_putc(&b, ',');
        size_t n = strlen(s);
        /* c-ares takes "::1" and "[::1]:53" but not "[::1]". */
        if (n > 2 && s[0] == '[' && s[n - 1] == ']')
            sl_buf_append(&b, s + 1, n - 2);
        else
            sl_buf_puts(&b, s);
    }
    return sl_buf_steal(&b, NULL);
}

sl_dns *sl_dns_new(uv_loop_t *loop, const sl_config *cfg, char **err)
{
    sl_metric_help("sluice_dns_lookups_total", SL_METRIC_COUNTER,
                   "DNS lookups answered, by type and result.");
    sl_metric_help("sluice_dns_cache_hits_total", SL_METRIC_COUNTER,
                   "DNS lookups served from the cache or joined to a query in flight.");
    sl_metric_help("sluice_dns_queries_total", SL_METRIC_COUNTER,
                   "DNS queries sent to servers, by record type.");

    sl_dns *dns = xcalloc(1, sizeof *dns);
    dns->loop = loop;
    sl_map_init(&dns->table);
    dns->cache_max = DNS_DEFAULT_CACHE_MAX;
    dns->ready_tail = &dns->ready;
    dns->ipv6 = true;
    if (getrandom(&dns->rng, sizeof dns->rng, GRND_NONBLOCK) != sizeof dns->rng)
        dns->rng = (uint64_t)sl_now_ms() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)dns;
    if (!dns->rng)
        dns->rng = 0x9E3779B97F4A7C15ULL;

    struct ares_options opts;
    memset(&opts, 0, sizeof opts);
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS;
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = dns;
    opts.timeout = cfg && cfg->dns.timeout_ms > 0 ? (int)cfg->dns.timeout_ms : 5000;
    opts.tries = cfg && cfg->dns.tries > 0 ? cfg->dns.tries : 2;
    /* ares_query never applies search domains; NOALIASES keeps
     * HOSTALIASES out of a daemon's behaviour. */
    opts.flags = ARES_FLAG_NOALIASES;
    int rc = ares_init_options(&dns->channel, &opts, mask);
    if (rc != ARES_SUCCESS) {
        if (err)
            *err = xasprintf("dns: cannot initialise c-ares: %s", ares_strerror(rc));
        sl_map_free(&dns->table);
        free(dns);
        return NULL;
    }
    dns->channel_ok = true;
    if (cfg && cfg->dns.n_servers > 0) {
        char *csv = servers_csv(cfg);
        rc = ares_set_servers_ports_csv(dns->channel, csv);
        if (rc != ARES_SUCCESS) {
            if (err)
                *err = xasprintf("dns: bad dns.servers '%s': %s", csv, ares_strerror(rc));
            free(csv);
            ares_destroy(dns->channel);
            sl_map_free(&dns->table);
            free(dns);
            return NULL;
        }
        free(csv);
    }
    uv_timer_init(loop, &dns->ares_timer);
    dns->ares_timer.data = dns;
    uv_timer_init(loop, &dns->defer_timer);
    dns->defer_timer.data = dns;
    dns->open_handles = 2;
    /* Both timers run only while there is work (queries pending, hits
     * queued), so an idle resolver keeps no loop alive. */
    return dns;
}

/* A shutdown that uv_walk()s and closes every handle may have closed ours
 * already, with its own callback: closing twice would abort in libuv, and
 * freeing the memory under a pending close would be worse, so such a
 * resolver is leaked instead (the process is exiting anyway). */
static void dns_close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

static void dns_teardown(sl_dns *dns)
{
    dns->busy++;
    /* Cache hits waiting for the timer: cancelled like everything else. */
    drain_ready(dns, SL_DNS_CANCELLED);
    /* ares_destroy completes each query with ARES_EDESTRUCTION (waiters get
     * SL_DNS_CANCELLED) and reports every socket closed (polls closed). */
    if (dns->channel_ok) {
        ares_destroy(dns->channel);
        dns->channel_ok = false;
    }
    drain_ready(dns, SL_DNS_CANCELLED);
    dns->busy--;
    sl_map_each(&dns->table, table_remove_each, dns);
    while (dns->socks) {
        dns_sock *s = dns->socks;
        dns->socks = s->next;
        dns_close_handle((uv_handle_t *)&s->poll);
    }
    dns_close_handle((uv_handle_t *)&dns->ares_timer);
    dns_close_handle((uv_handle_t *)&dns->defer_timer);
}

static void dns_maybe_finish_free(sl_dns *dns)
{
    if (dns->free_requested && dns->busy == 0) {
        dns->free_requested = false;
        dns_teardown(dns);
    }
}

void sl_dns_free(sl_dns *dns)
{
    if (!dns || dns->closing)
        return;
    dns->closing = true;
    if (dns->busy > 0) {
        dns->free_requested = true; /* finished when the outer call unwinds */
        return;
    }
    dns_teardown(dns);
}

/* ---- lookups ----------------------------------------------------------- */

static int dns_lookup(sl_dns *dns, int type, const char *name, dns_waiter *w)
{
    if (dns->closing) {
        free(w);
        return SL_ECLOSED;
    }
    char *norm = dns_normalise(name);
    if (!norm) {
        free(w);
        return SL_EINVAL;
    }
    const char *tname = type == DNS_T_MX    ? "type=\"mx\""
                        : type == DNS_T_TXT ? "type=\"txt\""
                                            : "type=\"addr\"";
    char *key = xasprintf("%d/%s", type, norm);
    dns_entry *e = sl_map_get(&dns->table, key);
    if (e && !e->pending && e->expires_ms <= sl_mono_ms()) {
        table_remove(dns, e);
        e = NULL;
    }
    if (e && !e->pending) {
        free(norm);
        free(key);
        lru_unlink(dns, e);
        lru_push_front(dns, e);
        sl_metric_inc("sluice_dns_cache_hits_total", tname, 1);
        ready_push(dns, e, w, true);
        return 0;
    }
    if (e) { /* in flight: coalesce */
        free(norm);
        free(key);
        *e->waiters_tail = w;
        e->waiters_tail = &w->next;
        sl_metric_inc("sluice_dns_cache_hits_total", tname, 1);
        return 0;
    }
    e = xcalloc(1, sizeof *e);
    e->dns = dns;
    e->type = type;
    e->name = norm;
    e->key = key;
    e->pending = true;
    e->waiters = w;
    e->waiters_tail = &w->next;
    table_insert(dns, e);

    /* A c-ares callback may run inside ares_query (out of memory, no
     * servers); hold a reference and the busy count so neither the entry
     * nor the resolver goes away underneath us. */
    e->refs++;
    dns->busy++;
    dns->starting = true;
    if (type == DNS_T_MX) {
        e->outstanding = 1;
        e->refs++;
        sl_metric_inc("sluice_dns_queries_total", "type=\"mx\"", 1);
        ares_query(dns->channel, norm, ns_c_in, ns_t_mx, on_mx, e);
    } else if (type == DNS_T_TXT) {
        e->outstanding = 1;
        e->refs++;
        sl_metric_inc("sluice_dns_queries_total", "type=\"txt\"", 1);
        ares_query(dns->channel, norm, ns_c_in, ns_t_txt, on_txt, e);
    } else {
        e->outstanding = dns->ipv6 ? 2 : 1;
        e->part6.status = SL_DNS_NODATA;
        e->part6.ttl = UINT32_MAX;
        e->refs += e->outstanding;
        sl_metric_inc("sluice_dns_queries_total", "type=\"a\"", 1);
        ares_query(dns->channel, norm, ns_c_in, ns_t_a, on_a, e);
        /* outstanding counts this query already: it must be sent. */
        if (dns->ipv6) {
            sl_metric_inc("sluice_dns_queries_total", "type=\"aaaa\"", 1);
            ares_query(dns->channel, norm, ns_c_in, ns_t_aaaa, on_aaaa, e);
        }
    }
    dns->starting = false;
    dns->busy--;
    entry_unref(e);
    timer_update(dns);
    dns_maybe_finish_free(dns);
    return 0;
}

int sl_dns_mx(sl_dns *dns, const char *domain, sl_dns_mx_cb cb, void *arg)
{
    if (!dns || !cb)
        return SL_EINVAL;
    dns_waiter *w = xcalloc(1, sizeof *w);
    w->cb.mx = cb;
    w->arg = arg;
    return dns_lookup(dns, DNS_T_MX, domain, w);
}

int sl_dns_addr(sl_dns *dns, const char *host, sl_dns_addr_cb cb, void *arg)
{
    if (!dns || !cb)
        return SL_EINVAL;
    dns_waiter *w = xcalloc(1, sizeof *w);
    w->cb.addr = cb;
    w->arg = arg;
    return dns_lookup(dns, DNS_T_ADDR, host, w);
}

int sl_dns_txt(sl_dns *dns, const char *name, sl_dns_txt_cb cb, void *arg)
{
    if (!dns || !cb)
        return SL_EINVAL;
    dns_waiter *w = xcalloc(1, sizeof *w);
    w->cb.txt = cb;
    w->arg = arg;
    return dns_lookup(dns, DNS_T_TXT, name, w);
}

void sl_dns_set_ipv6(sl_dns *dns, bool enable)
{
    dns->ipv6 = enable;
}

void sl_dns_set_cache_max(sl_dns *dns, size_t max)
{
    dns->cache_max = max ? max : 1;
    cache_trim(dns);
}

void sl_dns_cache_clear(sl_dns *dns)
{
    while (dns->lru_tail)
        table_remove(dns, dns->lru_tail);
}

size_t sl_dns_cache_size(const sl_dns *dns)
{
    return dns->n_cached;
}
