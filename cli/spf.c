/*
 * spf - RFC 7208 check_host() for `sluice check-domain` (see spf.h).
 */
#include "spf.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define SPF_MAX_LOOKUPS 10 /* RFC 7208 4.6.4 */
#define SPF_MAX_MX 10
#define SPF_MAX_VOID 2

typedef struct spf_ctx {
    const cli_spf_dns *dns;
    const cli_spf_ip *ip;
    const char *sender;
    const char *helo;
    int lookups;
    int voids;
    char *reason; /* the last decision: what decided the result */
} spf_ctx;

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static cli_spf_result why(spf_ctx *c, cli_spf_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static cli_spf_result why(spf_ctx *c, cli_spf_result r, const char *fmt, ...)
{
    va_list ap;
    sl_buf b = {0};
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    free(c->reason);
    c->reason = sl_buf_steal(&b, NULL);
    return r;
}

int cli_spf_ip_parse(const char *text, cli_spf_ip *ip)
{
    memset(ip, 0, sizeof *ip);
    if (inet_pton(AF_INET, text, ip->a) == 1) {
        ip->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, ip->a) == 1) {
        ip->family = AF_INET6;
        return 0;
    }
    return -1;
}

static bool prefix_match(const cli_spf_ip *a, const cli_spf_ip *b, int bits)
{
    if (a->family != b->family)
        return false;
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a->a, b->a, (size_t)full))
        return false;
    if (rest) {
        unsigned char m = (unsigned char)(0xff << (8 - rest));
        if ((a->a[full] & m) != (b->a[full] & m))
            return false;
    }
    return true;
}

int cli_spf_record(const cli_spf_dns *dns, const char *domain, char **record,
                   cli_spf_result *res, char **reason)
{
    char **txt = NULL;
    size_t n = 0, found = 0;
    *record = NULL;
    cli_spf_dns_status st = dns->txt(dns->arg, domain, &txt, &n);
    if (st == CLI_SPF_DNS_ERROR) {
        *res = CLI_SPF_TEMPERROR;
        *reason = xasprintf("TXT lookup of %s failed", domain);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        /* "v=spf1" alone or followed by a space (RFC 7208 4.5). */
        if (!strncasecmp(txt[i], "v=spf1", 6) && (txt[i][6] == ' ' || !txt[i][6])) {
            if (!found++)
                *record = xstrdup(txt[i]);
        }
    }
    strv_free(txt, n);
    if (found == 1)
        return 0;
    free(*record);
    *record = NULL;
    if (!found) {
        *res = CLI_SPF_NONE;
        *reason = xasprintf("no SPF record at %s", domain);
    } else {
        *res = CLI_SPF_PERMERROR;
        *reason = xasprintf("%zu SPF records at %s (one is allowed)", found, domain);
    }
    return -1;
}

/* %{i}: dotted quad, or dot-separated nibbles for IPv6 (RFC 7208 7.3). */
static void ip_macro(sl_buf *b, const cli_spf_ip *ip)
{
    if (ip->family == AF_INET) {
        sl_buf_printf(b, "%u.%u.%u.%u", ip->a[0], ip->a[1], ip->a[2], ip->a[3]);
        return;
    }
    for (int i = 0; i < 16; i++)
        sl_buf_printf(b, "%s%x.%x", i ? "." : "", ip->a[i] >> 4, ip->a[i] & 15);
}

/* Expand the macros of a domain-spec into a malloc'd name; NULL (and the
 * reason set) for a macro this evaluator does not handle. */
static char *expand(spf_ctx *c, const char *spec, size_t len, const char *domain)
{
    sl_buf b = {0};
    const char *at = c->sender ? strrchr(c->sender, '@') : NULL;
    for (size_t i = 0; i < len; i++) {
        if (spec[i] != '%') {
            sl_buf_putc(&b, spec[i]);
            continue;
        }
        if (i + 1 >= len)
            goto bad;
        char m = spec[++i];
        if (m == '%') {
            sl_buf_putc(&b, '%');
        } else if (m == '_') {
            sl_buf_putc(&b, ' ');
        } else if (m == '-') {
            sl_buf_puts(&b, "%20");
        } else if (m == '{' && i + 2 < len && spec[i + 2] == '}') {
            char l = (char)tolower((unsigned char)spec[i + 1]);
            i += 2;
            if (l == 'd')
                sl_buf_puts(&b, domain);
            else if (l == 'i')
                ip_macro(&b, c->ip);
            else if (l == 'h')
                sl_buf_puts(&b, c->helo ? c->helo : "");
            else if (l == 's')
                sl_buf_puts(&b, c->sender ? c->sender : "");
            else if (l == 'l')
                sl_buf_append(&b, c->sender ? c->sender : "",
                              at ? (size_t)(at - c->sender) : 0);
            else if (l == 'o')
                sl_buf_puts(&b, at ? at + 1 : domain);
            else
                goto bad;
        } else {
            goto bad;
        }
    }
    return sl_buf_steal(&b, NULL);
bad:
    sl_buf_free(&b);
    why(c, CLI_SPF_PERMERROR, "macro in '%.*s' not supported by this check", (int)len, spec);
    return NULL;
}

/* "/24", "//64", "/24//64" after a mechanism's domain-spec. */
static int parse_cidr(const char *s, int *c4, int *c6)
{
    *c4 = 32;
    *c6 = 128;
    if (!*s)
        return 0;
    if (s[0] == '/' && s[1] != '/') {
        char *end;
        long v = strtol(s + 1, &end, 10);
        if (end == s + 1 || v < 0 || v > 32)
            return -1;
        *c4 = (int)v;
        s = end;
    }
    if (s[0] == '/' && s[1] == '/') {
        char *end;
        long v = strtol(s + 2, &end, 10);
        if (end == s + 2 || v < 0 || v > 128)
            return -1;
        *c6 = (int)v;
        s = end;
    }
    return *s ? -1 : 0;
}

static bool count_lookup(spf_ctx *c)
{
    return ++c->lookups <= SPF_MAX_LOOKUPS;
}

/* A void lookup (nothing found) counts towards the limit of two. */
static bool count_void(spf_ctx *c)
{
    return ++c->voids <= SPF_MAX_VOID;
}

/* Whether an address of name matches; -1 temperror, -2 permerror (reason
 * set). */
static int addr_match(spf_ctx *c, const char *name, int c4, int c6)
{
    cli_spf_ip *ips = NULL;
    size_t n = 0;
    cli_spf_dns_status st = c->dns->addr(c->dns->arg, name, c->ip->family, &ips, &n);
    if (st == CLI_SPF_DNS_ERROR) {
        why(c, CLI_SPF_TEMPERROR, "address lookup of %s failed", name);
        return -1;
    }
    if (st == CLI_SPF_DNS_NONE || !n) {
        free(ips);
        if (!count_void(c)) {
            why(c, CLI_SPF_PERMERROR, "more than %d lookups found nothing (at %s)",
                SPF_MAX_VOID, name);
            return -2;
        }
        return 0;
    }
    int bits = c->ip->family == AF_INET ? c4 : c6;
    bool hit = false;
    for (size_t i = 0; i < n && !hit; i++)
        hit = prefix_match(&ips[i], c->ip, bits);
    free(ips);
    return hit;
}

static cli_spf_result check_host(spf_ctx *c, const char *domain, int depth);

static cli_spf_result qualified(char q)
{
    switch (q) {
    case '-': return CLI_SPF_FAIL;
    case '~': return CLI_SPF_SOFTFAIL;
    case '?': return CLI_SPF_NEUTRAL;
    default: return CLI_SPF_PASS;
    }
}

/* One mechanism: 1 matched, 0 not, or -(result) for an error result. */
static int mechanism(spf_ctx *c, const char *domain, const char *term, int depth)
{
    const char *name_end = term + strcspn(term, ":/");
    size_t nlen = (size_t)(name_end - term);
    const char *arg = *name_end == ':' ? name_end + 1 : NULL;
    const char *cidr = arg ? arg + strcspn(arg, "/") : name_end;
    size_t alen = arg ? (size_t)(cidr - arg) : 0;
#define IS(s) (nlen == strlen(s) && !strncasecmp(term, s, nlen))

    if (IS("all"))
        return *name_end ? -(int)why(c, CLI_SPF_PERMERROR, "bad term '%s'", term) : 1;
    if (IS("ip4") || IS("ip6")) {
        int fam = IS("ip4") ? AF_INET : AF_INET6;
        if (!arg)
            return -(int)why(c, CLI_SPF_PERMERROR, "bad term '%s'", term);
        /* ip6 addresses hold ':' but never '/': the whole argument up to
         * the '/' is the address. */
        char *net = xstrndup(arg, alen);
        cli_spf_ip ip;
        int bad = cli_spf_ip_parse(net, &ip) < 0 || ip.family != fam;
        free(net);
        int bits = fam == AF_INET ? 32 : 128;
        if (!bad && *cidr) {
            char *end;
            long v = strtol(cidr + 1, &end, 10);
            bad = cidr[1] == '/' || end == cidr + 1 || *end || v < 0 || v > bits;
            bits = (int)v;
        }
        if (bad)
            return -(int)why(c, CLI_SPF_PERMERROR, "bad term '%s'", term);
        return prefix_match(&ip, c->ip, bits);
    }
    bool is_a = IS("a"), is_mx = IS("mx"), is_inc = IS("include"), is_ex = IS("exists"),
         is_ptr = IS("ptr");
    if (!is_a && !is_mx && !is_inc && !is_ex && !is_ptr)
        return -(int)why(c, CLI_SPF_PERMERROR, "unknown mechanism '%s'", term);
    if ((is_inc || is_ex || arg) && !alen)
        return -(int)why(c, CLI_SPF_PERMERROR, "'%s' needs a domain", term);
    int c4 = 32, c6 = 128;
    if ((is_inc || is_ex || is_ptr) ? *cidr != 0 : parse_cidr(cidr, &c4, &c6) < 0)
        return -(int)why(c, CLI_SPF_PERMERROR, "bad term '%s'", term);
    if (!count_lookup(c))
        return -(int)why(c, CLI_SPF_PERMERROR, "more than %d DNS lookups (at '%s' in %s)",
                         SPF_MAX_LOOKUPS, term, domain);
    char *target = arg && alen ? expand(c, arg, alen, domain) : xstrdup(domain);
    if (!target)
        return -(int)CLI_SPF_PERMERROR;
    int rc = 0;
    if (is_ptr) {
        rc = 0; /* RFC 7208 5.5: do not use; counted, never matched here */
    } else if (is_inc) {
        cli_spf_result r = check_host(c, target, depth + 1);
        if (r == CLI_SPF_PASS)
            rc = 1;
        else if (r == CLI_SPF_TEMPERROR)
            rc = -(int)r;
        else if (r == CLI_SPF_PERMERROR)
            rc = -(int)r; /* the reason found inside stands */
        else if (r == CLI_SPF_NONE)
            rc = -(int)why(c, CLI_SPF_PERMERROR, "include:%s has no SPF record", target);
    } else if (is_ex) {
        /* exists: any A record matches, whatever the client's family. */
        cli_spf_ip *ips = NULL;
        size_t n = 0;
        cli_spf_dns_status st = c->dns->addr(c->dns->arg, target, AF_INET, &ips, &n);
        free(ips);
        if (st == CLI_SPF_DNS_ERROR)
            rc = -(int)why(c, CLI_SPF_TEMPERROR, "address lookup of %s failed", target);
        else if (n)
            rc = 1;
        else if (!count_void(c))
            rc = -(int)why(c, CLI_SPF_PERMERROR, "more than %d lookups found nothing (at %s)",
                           SPF_MAX_VOID, target);
    } else if (is_a) {
        int m = addr_match(c, target, c4, c6);
        rc = m == -1 ? -(int)CLI_SPF_TEMPERROR : m == -2 ? -(int)CLI_SPF_PERMERROR : m;
    } else {
        char **mx = NULL;
        size_t n = 0;
        cli_spf_dns_status st = c->dns->mx(c->dns->arg, target, &mx, &n);
        if (st == CLI_SPF_DNS_ERROR) {
            rc = -(int)why(c, CLI_SPF_TEMPERROR, "MX lookup of %s failed", target);
        } else if (st == CLI_SPF_DNS_NONE || !n) {
            if (!count_void(c))
                rc = -(int)why(c, CLI_SPF_PERMERROR, "more than %d lookups found nothing",
                               SPF_MAX_VOID);
        } else if (n > SPF_MAX_MX) {
            rc = -(int)why(c, CLI_SPF_PERMERROR, "%s has more than %d MX hosts", target,
                           SPF_MAX_MX);
        } else {
            for (size_t i = 0; i < n && rc == 0; i++) {
                int m = addr_match(c, mx[i], c4, c6);
                rc = m == -1 ? -(int)CLI_SPF_TEMPERROR : m == -2 ? -(int)CLI_SPF_PERMERROR : m;
            }
        }
        strv_free(mx, n);
    }
    free(target);
    return rc;
#undef IS
}

static cli_spf_result check_host(spf_ctx *c, const char *domain, int depth)
{
    char *record = NULL, *reason = NULL;
    cli_spf_result res;
    if (depth > SPF_MAX_LOOKUPS)
        return why(c, CLI_SPF_PERMERROR, "include or redirect loop at %s", domain);
    if (cli_spf_record(c->dns, domain, &record, &res, &reason) < 0) {
        why(c, res, "%s", reason);
        free(reason);
        return res;
    }
    char *redirect = NULL;
    cli_spf_result out = CLI_SPF_NEUTRAL;
    bool decided = false;
    char *save = NULL;
    for (char *t = strtok_r(record + 6, " ", &save); t && !decided;
         t = strtok_r(NULL, " ", &save)) {
        /* A modifier is name=value with a name of letters, digits, - _ . */
        size_t nl = strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.");
        if (nl && t[nl] == '=') {
            if (nl == 8 && !strncasecmp(t, "redirect", 8)) {
                if (redirect) {
                    out = why(c, CLI_SPF_PERMERROR, "two redirect= in %s", domain);
                    decided = true;
                } else {
                    redirect = xstrdup(t + 9);
                }
            }
            continue; /* exp= and unknown modifiers are ignored */
        }
        char q = '+';
        if (strchr("+-~?", *t))
            q = *t++;
        int m = mechanism(c, domain, t, depth);
        if (m < 0) {
            out = (cli_spf_result)-m;
            decided = true;
        } else if (m == 1) {
            out = qualified(q);
            why(c, out, "matched %c%s in %s", q, t, domain);
            decided = true;
        }
    }
    if (!decided && redirect) {
        if (!count_lookup(c)) {
            out = why(c, CLI_SPF_PERMERROR, "more than %d DNS lookups (at redirect=%s)",
                      SPF_MAX_LOOKUPS, redirect);
        } else {
            char *target = expand(c, redirect, strlen(redirect), domain);
            if (!target) {
                out = CLI_SPF_PERMERROR;
            } else {
                out = check_host(c, target, depth + 1);
                if (out == CLI_SPF_NONE)
                    out = why(c, CLI_SPF_PERMERROR, "redirect=%s has no SPF record", target);
                free(target);
            }
        }
        decided = true;
    }
    if (!decided)
        why(c, out, "nothing matched in %s (neutral)", domain);
    free(redirect);
    free(record);
    return out;
}

cli_spf_result cli_spf_check(const cli_spf_dns *dns, const char *domain, const cli_spf_ip *ip,
                             const char *sender, const char *helo, cli_spf_out *out)
{
    spf_ctx c = {.dns = dns, .ip = ip, .sender = sender, .helo = helo};
    cli_spf_result r = check_host(&c, domain, 0);
    out->lookups = c.lookups;
    out->reason = c.reason ? c.reason : xstrdup("");
    return r;
}

void cli_spf_out_free(cli_spf_out *out)
{
    free(out->reason);
    out->reason = NULL;
}

const char *cli_spf_result_name(cli_spf_result r)
{
    static const char *const names[] = {"none",     "neutral",   "pass",     "fail",
                                        "softfail", "temperror", "permerror"};
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}
