/*
 * check_domain - `sluice check-domain DOMAIN`: what a receiver will find
 * in DNS about a sending domain and the pools of this configuration,
 * checked the way receivers check it, one pass/warn/fail line per item:
 *
 *   spf      DOMAIN   one v=spf1 record
 *   spf      IP       every pool address authorised (spf.c, RFC 7208,
 *                     at most 10 lookups)
 *   dkim     SEL      each configured key for DOMAIN published at
 *                     SEL._domainkey.KEYDOMAIN with the public half of
 *                     the configured private key
 *   dmarc    DOMAIN   _dmarc record and its p= policy; rua=; alignment of
 *                     the DKIM key domains (and SPF's) with DOMAIN
 *   ptr      IP       forward-confirmed reverse DNS, and the PTR name
 *                     equal to the address's EHLO name
 *   mta-sts  DOMAIN   _mta-sts TXT, and the policy fetched over HTTPS and
 *                     parsed (RFC 8461)
 *   tls-rpt  DOMAIN   _smtp._tls TXT v=TLSRPTv1 with rua= (RFC 8460)
 *
 * Exit 0 when nothing failed (warnings allowed), 1 when something did, 2
 * for bad usage or a bad configuration. DNS goes to dns.servers (or
 * --dns-server); the MTA-STS policy host is resolved the same way.
 *
 * Main thread; everything is freed before returning.
 */
#include "cli.h"
#include "config.h"
#include "dnsq.h"
#include "mailbox.h"
#include "spf.h"
#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CD_POLICY_MAX 65536         /* RFC 8461 3.3: a policy is small */
#define CD_FETCH_TIMEOUT_S 10L

typedef enum { CD_PASS = 0, CD_WARN, CD_FAIL } cd_status;

static const char *const cd_status_names[] = {"pass", "warn", "fail"};

typedef struct cd_item {
    const char *check;
    char *subject;
    cd_status status;
    char *detail;
} cd_item;

typedef struct cd_run {
    const sl_config *cfg;
    const char *domain;
    const char *ca_file;
    cli_dnsq *dns;
    cd_item *items;
    size_t n_items;
} cd_run;

static void add(cd_run *r, const char *check, const char *subject, cd_status st,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void add(cd_run *r, const char *check, const char *subject, cd_status st,
                const char *fmt, ...)
{
    va_list ap;
    sl_buf b = SL_BUF_INIT;
    va_start(ap, fmt);
    sl_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    /* Details quote DNS text: control and non-ASCII octets are shown as
     * '?', so neither a terminal nor the JSON encoder meets them. */
    for (size_t i = 0; i < b.len; i++)
        if ((unsigned char)b.data[i] < 0x20 || (unsigned char)b.data[i] >= 0x7f)
            b.data[i] = '?';
    r->items = xrealloc(r->items, (r->n_items + 1) * sizeof *r->items);
    r->items[r->n_items++] = (cd_item){check, xstrdup(subject), st, sl_buf_steal(&b, NULL)};
}

/* The TXT records at name starting with prefix (case-insensitive, followed
 * by ';', a space or the end): *found of them, the first in *rec (caller
 * frees). Returns the lookup status. */
static cli_spf_dns_status txt_tagged(cd_run *r, const char *name, const char *prefix,
                                     char **rec, size_t *found)
{
    char **v = NULL;
    size_t n = 0, pl = strlen(prefix);
    *rec = NULL;
    *found = 0;
    cli_spf_dns_status st = cli_dnsq_txt(r->dns, name, &v, &n);
    for (size_t i = 0; i < n; i++) {
        const char *s = v[i] + strspn(v[i], " \t");
        if (strncasecmp(s, prefix, pl) || (s[pl] && s[pl] != ';' && s[pl] != ' ' && s[pl] != '\t'))
            continue;
        if (!(*found)++)
            *rec = xstrdup(s);
    }
    cli_dnsq_strv_free(v, n);
    return st;
}

/* The value of tag in a "k=v; k=v" record (DKIM, DMARC, MTA-STS TXT,
 * TLS-RPT), trimmed, malloc'd; NULL when absent. */
static char *tag_get(const char *rec, const char *tag)
{
    size_t tl = strlen(tag);
    const char *p = rec;
    while (*p) {
        p += strspn(p, " \t;");
        const char *end = p + strcspn(p, ";");
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq) {
            const char *k_end = eq;
            while (k_end > p && (k_end[-1] == ' ' || k_end[-1] == '\t'))
                k_end--;
            if ((size_t)(k_end - p) == tl && !strncasecmp(p, tag, tl)) {
                const char *v = eq + 1, *ve = end;
                v += strspn(v, " \t");
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                return xstrndup(v, (size_t)(ve - v));
            }
        }
        p = end;
    }
    return NULL;
}

/* The organisational domain, approximated as the last two labels (no
 * public suffix list: "example.co.uk" is taken as "co.uk"). */
static const char *org_domain(const char *d)
{
    const char *last = strrchr(d, '.');
    if (!last)
        return d;
    for (const char *p = last - 1; p > d; p--)
        if (*p == '.')
            return p + 1;
    return d;
}

/* --- the pool addresses --------------------------------------------- */

typedef struct cd_source {
    const char *ip;
    const char *ehlo;
} cd_source;

/* Every distinct address of every pool, with its EHLO name. */
static cd_source *sources(const sl_config *cfg, size_t *n)
{
    cd_source *v = NULL;
    *n = 0;
    for (size_t p = 0; p < cfg->n_pools; p++) {
        for (size_t s = 0; s < cfg->pools[p].n_sources; s++) {
            const sl_source *src = &cfg->pools[p].sources[s];
            bool seen = false;
            for (size_t i = 0; i < *n && !seen; i++)
                seen = !strcmp(v[i].ip, src->ip);
            if (seen)
                continue;
            v = xrealloc(v, (*n + 1) * sizeof *v);
            v[(*n)++] = (cd_source){src->ip, src->ehlo};
        }
    }
    return v;
}

/* --- SPF ------------------------------------------------------------ */

static void check_spf(cd_run *r, const cd_source *src, size_t n_src)
{
    cli_spf_dns dns = cli_dnsq_spf(r->dns);
    char *record = NULL, *reason = NULL;
    cli_spf_result res;
    if (cli_spf_record(&dns, r->domain, &record, &res, &reason) < 0) {
        add(r, "spf", r->domain, CD_FAIL, "%s%s%s", reason, res == CLI_SPF_TEMPERROR ? ": " : "",
            res == CLI_SPF_TEMPERROR ? cli_dnsq_error(r->dns) : "");
        free(reason);
        return;
    }
    /* "+all" (or a bare "all") authorises every address on the Internet:
     * receivers treat such a record as no record at all, or worse. */
    bool open_all = false;
    char *copy = xstrdup(record), *save = NULL;
    for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
        open_all |= !strcasecmp(t, "all") || !strcasecmp(t, "+all");
    free(copy);
    if (open_all)
        add(r, "spf", r->domain, CD_WARN, "%s: +all authorises every address", record);
    else
        add(r, "spf", r->domain, CD_PASS, "%s", record);
    free(record);
    if (!n_src)
        add(r, "spf", "(pools)", CD_WARN, "no pool addresses in the configuration to check");
    char *sender = xasprintf("postmaster@%s", r->domain);
    for (size_t i = 0; i < n_src; i++) {
        cli_spf_ip ip;
        if (cli_spf_ip_parse(src[i].ip, &ip) < 0) {
            add(r, "spf", src[i].ip, CD_FAIL, "not an IP address");
            continue;
        }
        cli_spf_out out;
        res = cli_spf_check(&dns, r->domain, &ip, sender, src[i].ehlo, &out);
        add(r, "spf", src[i].ip, res == CLI_SPF_PASS ? CD_PASS : CD_FAIL, "%s: %s (%d lookups)",
            cli_spf_result_name(res), out.reason, out.lookups);
        cli_spf_out_free(&out);
    }
    free(sender);
}

/* --- DKIM ----------------------------------------------------------- */

/* The public key bytes a DKIM record's p= must hold for the private key
 * in file: SubjectPublicKeyInfo DER for RSA, the raw 32 octets for
 * Ed25519 (RFC 8463). 0, or -1 with *why. */
static int dkim_expected(const char *file, sl_buf *out, const char **k, char **why)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        *why = xasprintf("cannot read %s: %s", file, strerror(errno));
        return -1;
    }
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!pkey) {
        *why = xasprintf("%s holds no PEM private key", file);
        return -1;
    }
    int rc = 0;
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519) {
        unsigned char raw[64];
        size_t rl = sizeof raw;
        if (EVP_PKEY_get_raw_public_key(pkey, raw, &rl) == 1)
            sl_buf_append(out, raw, rl);
        else
            rc = -1;
        *k = "ed25519";
    } else {
        unsigned char *der = NULL;
        int len = i2d_PUBKEY(pkey, &der);
        if (len > 0)
            sl_buf_append(out, der, (size_t)len);
        else
            rc = -1;
        OPENSSL_free(der);
        *k = "rsa";
    }
    EVP_PKEY_free(pkey);
    if (rc < 0)
        *why = xasprintf("cannot derive the public key of %s", file);
    return rc;
}

/* Base64 without whitespace into out; -1 when malformed. */
static int b64_decode(const char *in, sl_buf *out)
{
    sl_buf clean = SL_BUF_INIT;
    for (const char *p = in; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            sl_buf_putc(&clean, *p);
    int rc = -1;
    if (clean.len && clean.len % 4 == 0) {
        sl_buf_reserve(out, clean.len);
        int n = EVP_DecodeBlock((unsigned char *)out->data + out->len,
                                (const unsigned char *)clean.data, (int)clean.len);
        if (n >= 0) {
            /* EVP_DecodeBlock counts the padding as zero octets. */
            if (clean.data[clean.len - 1] == '=')
                n--;
            if (clean.data[clean.len - 2] == '=')
                n--;
            out->len += (size_t)n;
            rc = 0;
        }
    }
    sl_buf_free(&clean);
    return rc;
}

static void check_dkim_key(cd_run *r, const sl_dkim_key *key)
{
    char *name = xasprintf("%s._domainkey.%s", key->selector, key->domain);
    sl_buf want = SL_BUF_INIT, have = SL_BUF_INIT;
    const char *k = NULL;
    char *why = NULL, *rec = NULL, *p = NULL, *kt = NULL;
    size_t found;
    if (dkim_expected(key->key_file, &want, &k, &why) < 0) {
        add(r, "dkim", name, CD_FAIL, "%s", why);
        goto out;
    }
    /* A key record need not carry v=DKIM1; it is the TXT record with p=. */
    char **v = NULL;
    size_t n = 0;
    if (cli_dnsq_txt(r->dns, name, &v, &n) == CLI_SPF_DNS_ERROR) {
        add(r, "dkim", name, CD_FAIL, "TXT lookup failed: %s", cli_dnsq_error(r->dns));
        goto out;
    }
    found = 0;
    for (size_t i = 0; i < n; i++) {
        char *pv = tag_get(v[i], "p");
        if (!pv)
            continue;
        if (!found++) {
            rec = xstrdup(v[i]);
            p = pv;
        } else {
            free(pv);
        }
    }
    cli_dnsq_strv_free(v, n);
    if (!found) {
        add(r, "dkim", name, CD_FAIL, "no DKIM key record published");
        goto out;
    }
    if (found > 1) {
        add(r, "dkim", name, CD_FAIL, "%zu key records (one is expected)", found);
        goto out;
    }
    kt = tag_get(rec, "k");
    if (kt && strcasecmp(kt, k)) {
        add(r, "dkim", name, CD_FAIL, "k=%s in DNS, but %s is an %s key", kt, key->key_file, k);
        goto out;
    }
    if (!*p) {
        add(r, "dkim", name, CD_FAIL, "key revoked (empty p=)");
        goto out;
    }
    if (b64_decode(p, &have) < 0) {
        add(r, "dkim", name, CD_FAIL, "p= is not valid base64");
        goto out;
    }
    if (have.len != want.len || memcmp(have.data, want.data, want.len))
        add(r, "dkim", name, CD_FAIL, "the public key in DNS does not match %s", key->key_file);
    else
        add(r, "dkim", name, CD_PASS, "%s key matches %s", k, key->key_file);
out:
    free(name);
    free(why);
    free(rec);
    free(p);
    free(kt);
    sl_buf_free(&want);
    sl_buf_free(&have);
}

/* The keys that sign mail from DOMAIN, as the sender picks them: those of
 * DOMAIN itself, else of its closest parent domain. */
static size_t dkim_keys(const cd_run *r, const sl_dkim_key **out)
{
    size_t n = 0;
    for (const char *d = r->domain; d; d = strchr(d, '.') ? strchr(d, '.') + 1 : NULL) {
        for (size_t i = 0; i < r->cfg->n_dkim; i++)
            if (!strcasecmp(r->cfg->dkim[i].domain, d))
                out[n++] = &r->cfg->dkim[i];
        if (n)
            break;
    }
    return n;
}

static void check_dkim(cd_run *r)
{
    const sl_dkim_key **keys = xcalloc(r->cfg->n_dkim + 1, sizeof *keys);
    size_t n = dkim_keys(r, keys);
    if (!n)
        add(r, "dkim", r->domain, CD_FAIL, "no dkim key in the configuration signs for %s",
            r->domain);
    for (size_t i = 0; i < n; i++)
        check_dkim_key(r, keys[i]);
    free(keys);
}

/* --- DMARC ---------------------------------------------------------- */

static bool aligned(const char *a, const char *b, bool strict)
{
    return strict ? !strcasecmp(a, b) : !strcasecmp(org_domain(a), org_domain(b));
}

static void check_dmarc(cd_run *r)
{
    char *name = xasprintf("_dmarc.%s", r->domain), *rec = NULL;
    size_t found;
    const char *where = r->domain;
    cli_spf_dns_status st = txt_tagged(r, name, "v=DMARC1", &rec, &found);
    if (st != CLI_SPF_DNS_ERROR && !found && strcmp(org_domain(r->domain), r->domain)) {
        /* RFC 7489 6.6.3: no record at the domain, ask the organisational
         * domain. */
        free(name);
        where = org_domain(r->domain);
        name = xasprintf("_dmarc.%s", where);
        st = txt_tagged(r, name, "v=DMARC1", &rec, &found);
    }
    if (st == CLI_SPF_DNS_ERROR) {
        add(r, "dmarc", r->domain, CD_FAIL, "TXT lookup of %s failed: %s", name,
            cli_dnsq_error(r->dns));
        free(name);
        return;
    }
    if (!found) {
        add(r, "dmarc", r->domain, CD_FAIL, "no DMARC record at _dmarc.%s", r->domain);
        free(name);
        return;
    }
    if (found > 1) {
        add(r, "dmarc", r->domain, CD_FAIL, "%zu DMARC records at %s (one is allowed)", found,
            name);
        free(rec);
        free(name);
        return;
    }
    char *p = tag_get(rec, "p"), *rua = tag_get(rec, "rua"), *adkim = tag_get(rec, "adkim"),
         *pct = tag_get(rec, "pct");
    if (!p)
        add(r, "dmarc", r->domain, CD_FAIL, "no p= policy in %s: %s", name, rec);
    else if (!strcasecmp(p, "none"))
        add(r, "dmarc", r->domain, CD_WARN, "p=none at %s: monitoring only, nothing enforced",
            name);
    else if (!strcasecmp(p, "quarantine") || !strcasecmp(p, "reject"))
        add(r, "dmarc", r->domain, pct && strcmp(pct, "100") ? CD_WARN : CD_PASS,
            "p=%s%s%s at %s", p, pct ? " pct=" : "", pct ? pct : "", name);
    else
        add(r, "dmarc", r->domain, CD_FAIL, "p=%s is not a DMARC policy", p);

    if (rua)
        add(r, "dmarc-rua", r->domain, CD_PASS, "aggregate reports to %s", rua);
    else
        add(r, "dmarc-rua", r->domain, CD_WARN, "no rua=: no aggregate reports are sent");

    /* Alignment: the d= of every key that signs for DOMAIN. The SPF
     * domain is DOMAIN itself (the envelope sender's domain), aligned
     * under aspf=r and aspf=s alike. */
    bool sd = adkim && !strcasecmp(adkim, "s");
    const sl_dkim_key **keys = xcalloc(r->cfg->n_dkim + 1, sizeof *keys);
    size_t n = dkim_keys(r, keys), ok = 0;
    const char *bad = NULL;
    for (size_t i = 0; i < n; i++) {
        if (aligned(keys[i]->domain, r->domain, sd))
            ok++;
        else
            bad = keys[i]->domain;
    }
    if (n && ok)
        add(r, "dmarc-alignment", r->domain, CD_PASS, "DKIM d=%s aligned (%s), SPF aligned",
            keys[0]->domain, sd ? "strict" : "relaxed");
    else if (bad)
        add(r, "dmarc-alignment", r->domain, CD_FAIL,
            "DKIM d=%s does not align with %s under adkim=s; only SPF aligns", bad, r->domain);
    else
        add(r, "dmarc-alignment", r->domain, CD_WARN,
            "no DKIM key for %s: DMARC rests on SPF alone, which forwarding breaks", r->domain);
    free(keys);
    free(p);
    free(rua);
    free(adkim);
    free(pct);
    free(rec);
    free(name);
}

/* --- PTR / FCrDNS --------------------------------------------------- */

static void check_ptr(cd_run *r, const cd_source *src, size_t n_src)
{
    for (size_t i = 0; i < n_src; i++) {
        cli_spf_ip ip;
        char **names = NULL;
        size_t n = 0;
        if (cli_spf_ip_parse(src[i].ip, &ip) < 0) {
            add(r, "ptr", src[i].ip, CD_FAIL, "not an IP address");
            continue;
        }
        cli_spf_dns_status st = cli_dnsq_ptr(r->dns, &ip, &names, &n);
        if (st == CLI_SPF_DNS_ERROR) {
            add(r, "ptr", src[i].ip, CD_FAIL, "PTR lookup failed: %s", cli_dnsq_error(r->dns));
            continue;
        }
        if (!n) {
            add(r, "ptr", src[i].ip, CD_FAIL, "no PTR record");
            continue;
        }
        const char *confirmed = NULL;
        bool ehlo_confirmed = false;
        for (size_t j = 0; j < n; j++) {
            cli_spf_ip *fw = NULL;
            size_t nf = 0;
            cli_dnsq_addr(r->dns, names[j], ip.family, &fw, &nf);
            for (size_t k = 0; k < nf; k++) {
                if (!memcmp(fw[k].a, ip.a, ip.family == AF_INET ? 4 : 16)) {
                    if (!confirmed)
                        confirmed = names[j];
                    if (!strcasecmp(names[j], src[i].ehlo))
                        ehlo_confirmed = true;
                }
            }
            free(fw);
        }
        if (ehlo_confirmed)
            add(r, "ptr", src[i].ip, CD_PASS, "%s, forward-confirmed, the EHLO name",
                src[i].ehlo);
        else if (confirmed)
            add(r, "ptr", src[i].ip, CD_WARN,
                "PTR %s is forward-confirmed but the EHLO name is %s", confirmed, src[i].ehlo);
        else
            add(r, "ptr", src[i].ip, CD_FAIL, "PTR %s does not resolve back to %s", names[0],
                src[i].ip);
        cli_dnsq_strv_free(names, n);
    }
}

/* --- MTA-STS -------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    sl_buf *b = arg;
    if (b->len + size * nmemb > CD_POLICY_MAX)
        return 0; /* too big: the transfer fails */
    sl_buf_append(b, p, size * nmemb);
    return size * nmemb;
}

/* Fetch the policy over HTTPS, the host resolved through our DNS. 0 with
 * body, or -1 with *why. */
static int sts_fetch(cd_run *r, const char *host, sl_buf *body, char **why)
{
    cli_spf_ip *ips = NULL;
    size_t n = 0;
    cli_dnsq_addr(r->dns, host, AF_INET, &ips, &n);
    if (!n) {
        free(ips);
        cli_dnsq_addr(r->dns, host, AF_INET6, &ips, &n);
    }
    if (!n) {
        free(ips);
        *why = xasprintf("%s has no address", host);
        return -1;
    }
    char addr[INET6_ADDRSTRLEN];
    inet_ntop(ips[0].family, ips[0].a, addr, sizeof addr);
    free(ips);
    char *url = xasprintf("https://%s/.well-known/mta-sts.txt", host);
    char *pin = xasprintf(strchr(addr, ':') ? "%s:443:[%s]" : "%s:443:%s", host, addr);
    struct curl_slist *resolve = curl_slist_append(NULL, pin);
    CURL *c = curl_easy_init();
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, CD_FETCH_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    /* RFC 8461 3.3: no redirects, a valid certificate for the host. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    if (r->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    int ret = 0;
    if (rc != CURLE_OK) {
        *why = xasprintf("%s: %s", url, *errbuf ? errbuf : curl_easy_strerror(rc));
        ret = -1;
    } else if (code != 200) {
        *why = xasprintf("%s: HTTP %ld", url, code);
        ret = -1;
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(resolve);
    free(pin);
    free(url);
    return ret;
}

/* RFC 8461 3.2: "key: value" lines; version STSv1, a mode, max_age, and
 * an mx line at least (unless mode is none). 0 with *mode and the mx
 * patterns in *mx (caller frees both), or -1 with *why. */
static int sts_parse(const sl_buf *body, char **mode, char ***mx, size_t *n_mx, char **why)
{
    char *text = xstrndup(body->data ? body->data : "", body->len), *save = NULL;
    bool version = false, max_age = false;
    *mode = NULL;
    *mx = NULL;
    *n_mx = 0;
    for (char *line = strtok_r(text, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = 0;
        char *v = colon + 1, *ve = v + strlen(v);
        v += strspn(v, " \t");
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = 0;
        if (!strcmp(line, "version"))
            version = !strcmp(v, "STSv1");
        else if (!strcmp(line, "mode") && !*mode)
            *mode = xstrdup(v);
        else if (!strcmp(line, "max_age"))
            max_age = *v && strspn(v, "0123456789") == strlen(v);
        else if (!strcmp(line, "mx") && *v) {
            *mx = xrealloc(*mx, (*n_mx + 1) * sizeof **mx);
            (*mx)[(*n_mx)++] = xstrdup(v);
        }
    }
    free(text);
    const char *m = *mode ? *mode : "";
    if (!version)
        *why = xstrdup("no \"version: STSv1\" line");
    else if (strcmp(m, "enforce") && strcmp(m, "testing") && strcmp(m, "none"))
        *why = xasprintf("mode '%s' is not enforce, testing or none", m);
    else if (!max_age)
        *why = xstrdup("no valid max_age");
    else if (!*n_mx && strcmp(m, "none"))
        *why = xstrdup("no mx line");
    else
        return 0;
    free(*mode);
    *mode = NULL;
    cli_dnsq_strv_free(*mx, *n_mx);
    *mx = NULL;
    *n_mx = 0;
    return -1;
}

/* RFC 8461 4.1: a policy mx "*.example.net" matches exactly one more
 * label on the left ("mx1.example.net", not "a.b.example.net"). */
static bool sts_mx_match(const char *pattern, const char *host)
{
    if (strncmp(pattern, "*.", 2))
        return !strcasecmp(pattern, host);
    const char *dot = strchr(host, '.');
    return dot && dot > host && !strcasecmp(dot + 1, pattern + 2);
}

/* Every MX host of the domain must be one the policy names, or senders
 * that enforce it refuse to deliver there. NULL when all are (or the
 * domain has no MX to compare), else the first one that is not. */
static char *sts_mx_uncovered(cd_run *r, char **mx, size_t n_mx)
{
    char **hosts = NULL, *bad = NULL;
    size_t n = 0;
    cli_dnsq_mx(r->dns, r->domain, &hosts, &n);
    for (size_t i = 0; i < n && !bad; i++) {
        bool ok = false;
        for (size_t j = 0; j < n_mx && !ok; j++)
            ok = sts_mx_match(mx[j], hosts[i]);
        if (!ok)
            bad = xstrdup(hosts[i]);
    }
    cli_dnsq_strv_free(hosts, n);
    return bad;
}

static void check_mta_sts(cd_run *r)
{
    char *name = xasprintf("_mta-sts.%s", r->domain), *rec = NULL;
    size_t found;
    cli_spf_dns_status st = txt_tagged(r, name, "v=STSv1", &rec, &found);
    if (st == CLI_SPF_DNS_ERROR) {
        add(r, "mta-sts", r->domain, CD_FAIL, "TXT lookup of %s failed: %s", name,
            cli_dnsq_error(r->dns));
    } else if (!found) {
        add(r, "mta-sts", r->domain, CD_WARN,
            "no MTA-STS record at %s: receivers may deliver to you over unverified TLS", name);
    } else if (found > 1) {
        add(r, "mta-sts", r->domain, CD_FAIL, "%zu MTA-STS records at %s (one is allowed)",
            found, name);
    } else {
        char *id = tag_get(rec, "id"), *why = NULL, *mode = NULL, **mx = NULL, *bad = NULL;
        size_t n_mx = 0;
        char *host = xasprintf("mta-sts.%s", r->domain);
        sl_buf body = SL_BUF_INIT;
        if (!id || !*id)
            add(r, "mta-sts", r->domain, CD_FAIL, "no id= in %s", name);
        else if (sts_fetch(r, host, &body, &why) < 0)
            add(r, "mta-sts", r->domain, CD_FAIL, "policy not fetched: %s", why);
        else if (sts_parse(&body, &mode, &mx, &n_mx, &why) < 0)
            add(r, "mta-sts", r->domain, CD_FAIL, "policy does not parse: %s", why);
        else if (strcmp(mode, "none") && (bad = sts_mx_uncovered(r, mx, n_mx)))
            add(r, "mta-sts", r->domain, CD_FAIL,
                "MX host %s is not in the policy's mx list: senders enforcing it will not "
                "deliver there",
                bad);
        else
            add(r, "mta-sts", r->domain, strcmp(mode, "enforce") ? CD_WARN : CD_PASS,
                "id=%s, policy mode %s", id, mode);
        sl_buf_free(&body);
        cli_dnsq_strv_free(mx, n_mx);
        free(bad);
        free(host);
        free(mode);
        free(why);
        free(id);
    }
    free(rec);
    free(name);
}

/* --- TLS-RPT -------------------------------------------------------- */

static void check_tls_rpt(cd_run *r)
{
    char *name = xasprintf("_smtp._tls.%s", r->domain), *rec = NULL;
    size_t found;
    cli_spf_dns_status st = txt_tagged(r, name, "v=TLSRPTv1", &rec, &found);
    if (st == CLI_SPF_DNS_ERROR) {
        add(r, "tls-rpt", r->domain, CD_FAIL, "TXT lookup of %s failed: %s", name,
            cli_dnsq_error(r->dns));
    } else if (!found) {
        add(r, "tls-rpt", r->domain, CD_WARN, "no TLS-RPT record at %s", name);
    } else if (found > 1) {
        add(r, "tls-rpt", r->domain, CD_FAIL, "%zu TLS-RPT records at %s (one is allowed)",
            found, name);
    } else {
        char *rua = tag_get(rec, "rua");
        if (rua && *rua)
            add(r, "tls-rpt", r->domain, CD_PASS, "reports to %s", rua);
        else
            add(r, "tls-rpt", r->domain, CD_FAIL, "no rua= in %s", name);
        free(rua);
    }
    free(rec);
    free(name);
}

/* --- the command ---------------------------------------------------- */

static const sl_cmd_help cd_help = {
    .prog = "sluice check-domain",
    .synopsis = "[-c FILE] [--json] [--dns-server IP[:PORT]] [--ca-file FILE] DOMAIN",
    .about = "Check what receivers find in DNS for the sending domain DOMAIN and the pools\n"
             "of the configuration: SPF (one record; every pool address authorised, within\n"
             "10 lookups), each DKIM key of the configuration published and matching its\n"
             "private key, DMARC (policy, rua, alignment), forward-confirmed reverse DNS\n"
             "of every pool address against its EHLO name, MTA-STS (record and policy\n"
             "fetched over HTTPS) and TLS-RPT. One pass/warn/fail line per item. Exit 0\n"
             "when nothing fails, 1 when something does, 2 for bad usage or config.",
    .options = "  -c, --config FILE        the configuration (pools, dkim, dns)\n"
               "      --json               one JSON object instead of the table\n"
               "      --dns-server ADDR    ask this server (IP or IP:PORT), not dns.servers\n"
               "      --ca-file FILE       trust FILE's CAs for the MTA-STS policy fetch\n",
    .config = "  pools (ip, ehlo), dkim (domain, selector, key), dns.servers, dns.timeout,\n"
              "  dns.tries\n",
};

static void usage(FILE *f)
{
    sl_cmd_usage(&cd_help, f);
}

static void print_table(const cd_run *r)
{
    size_t w = 7;
    for (size_t i = 0; i < r->n_items; i++)
        if (strlen(r->items[i].subject) > w)
            w = strlen(r->items[i].subject);
    printf("%-16s %-*s %-6s %s\n", "CHECK", (int)w, "SUBJECT", "RESULT", "DETAIL");
    for (size_t i = 0; i < r->n_items; i++)
        printf("%-16s %-*s %-6s %s\n", r->items[i].check, (int)w, r->items[i].subject,
               cd_status_names[r->items[i].status], r->items[i].detail);
}

static void print_json(const cd_run *r, const size_t *count, cd_status worst)
{
    json_t *checks = json_array();
    for (size_t i = 0; i < r->n_items; i++)
        json_array_append_new(checks, json_pack("{s:s, s:s, s:s, s:s}", "check",
                                                r->items[i].check, "subject",
                                                r->items[i].subject, "status",
                                                cd_status_names[r->items[i].status], "detail",
                                                r->items[i].detail));
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:o}", "domain", r->domain, "result",
                          cd_status_names[worst], "pass", (json_int_t)count[CD_PASS], "warn",
                          (json_int_t)count[CD_WARN], "fail", (json_int_t)count[CD_FAIL],
                          "checks", checks);
    char *s = json_dumps(o, JSON_INDENT(2));
    puts(s);
    free(s);
    json_decref(o);
}

int cli_check_domain(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"dns-server", required_argument, NULL, 'd'},
        {"ca-file", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *server = NULL, *ca_file = NULL;
    bool json = false;
    int o, status = -1;
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &path, usage, &status)) != -1) {
        switch (o) {
        case 'j': json = true; break;
        case 'd': server = optarg; break;
        case 'a': ca_file = optarg; break;
        default: break;
        }
    }
    if (status != -1)
        return status;
    if (optind + 1 != argc) {
        usage(stderr);
        return 2;
    }
    char *domain = xstrdup(argv[optind]);
    size_t dl = strlen(domain);
    if (dl && domain[dl - 1] == '.')
        domain[dl - 1] = 0;
    sl_lower(domain);
    char why[160];
    if (sl_mailbox_domain_check(domain, SL_MBOX_ASCII | SL_MBOX_FQDN, why, sizeof why) < 0) {
        fprintf(stderr, "sluice check-domain: '%s' is not a domain name (%s; give an IDN in its "
                "A-label form)\n", argv[optind], why);
        free(domain);
        return 2;
    }
    sl_config *cfg = cli_config("check-domain", path);
    if (!cfg) {
        free(domain);
        return 2;
    }
    char *err = NULL;
    cli_dnsq *dns = cli_dnsq_new(cfg, server, &err);
    if (!dns) {
        fprintf(stderr, "sluice check-domain: %s\n", err);
        free(err);
        sl_config_free(cfg);
        free(domain);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cd_run r = {.cfg = cfg, .domain = domain, .ca_file = ca_file, .dns = dns};
    size_t n_src;
    cd_source *src = sources(cfg, &n_src);
    check_spf(&r, src, n_src);
    check_dkim(&r);
    check_dmarc(&r);
    check_ptr(&r, src, n_src);
    check_mta_sts(&r);
    check_tls_rpt(&r);

    size_t count[3] = {0, 0, 0};
    cd_status worst = CD_PASS;
    for (size_t i = 0; i < r.n_items; i++) {
        count[r.items[i].status]++;
        if (r.items[i].status > worst)
            worst = r.items[i].status;
    }
    if (json) {
        print_json(&r, count, worst);
    } else {
        print_table(&r);
        printf("\n%s: %zu pass, %zu warn, %zu fail\n", domain, count[CD_PASS], count[CD_WARN],
               count[CD_FAIL]);
    }
    for (size_t i = 0; i < r.n_items; i++) {
        free(r.items[i].subject);
        free(r.items[i].detail);
    }
    free(r.items);
    free(src);
    cli_dnsq_free(dns);
    curl_global_cleanup();
    sl_config_free(cfg);
    free(domain);
    return worst == CD_FAIL ? 1 : 0;
}
