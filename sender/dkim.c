/*
 * dkim - DKIM signing; see dkim.h for the contract.
 *
 * One pass finds the header fields and the body; the body is canonicalized
 * (relaxed) into a per-thread scratch buffer and hashed once for all keys;
 * the signed header fields are canonicalized once too. Per key, only the
 * DKIM-Signature field itself differs: it is built with an empty b=,
 * canonicalized, appended to the header data, hashed and signed.
 *
 * ed25519-sha256 (RFC 8463 section 3): the data is hashed with SHA-256 as
 * for rsa-sha256, and the 32-byte digest is what PureEdDSA Ed25519 signs
 * (not the data itself). Verifiers such as dkimpy do the same.
 */
#include "dkim.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

struct sl_dkim_signer {
    char *domain;
    char *selector;
    sl_dkim_alg alg;
    EVP_PKEY *pkey;
};

struct sl_dkim_keyring {
    sl_dkim_signer **keys;
    size_t n;
};

/* The header fields we sign, in h= order, when present. */
static const char *const signed_fields[] = {
    "From",       "To",       "Cc",           "Subject",
    "Date",       "Message-ID", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post",
};
#define N_SIGNED (sizeof(signed_fields) / sizeof(signed_fields[0]))

/* --- keys ---------------------------------------------------------------- */

static int key_fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int key_fail(char **err, const char *fmt, ...)
{
    if (err) {
        sl_buf b = SL_BUF_INIT;
        va_list ap;
        va_start(ap, fmt);
        sl_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        unsigned long e = ERR_peek_last_error();
        if (e) {
            char es[256];
            ERR_error_string_n(e, es, sizeof(es));
            sl_buf_printf(&b, " (%s)", es);
        }
        *err = sl_buf_steal(&b, NULL);
    }
    ERR_clear_error();
    return SL_ECONFIG;
}

/* d= and s= values: DNS labels; anything else would corrupt the header. */
static bool dns_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 253)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

int sl_dkim_key_load_pem(const char *domain, const char *selector, const char *pem, size_t len,
                         const char *name, const char *algorithm, sl_dkim_signer **out,
                         char **err)
{
    *out = NULL;
    if (err)
        *err = NULL;
    sl_dkim_alg alg;
    if (algorithm && strcmp(algorithm, "rsa-sha256") == 0)
        alg = SL_DKIM_RSA_SHA256;
    else if (algorithm && strcmp(algorithm, "ed25519-sha256") == 0)
        alg = SL_DKIM_ED25519_SHA256;
    else
        return key_fail(err, "%s: unknown DKIM algorithm '%s' (rsa-sha256 or ed25519-sha256)",
                        name, algorithm ? algorithm : "");
    if (!dns_name_ok(domain))
        return key_fail(err, "%s: DKIM domain '%s' is not a DNS name (use the A-label)", name,
                        domain ? domain : "");
    if (!dns_name_ok(selector))
        return key_fail(err, "%s: DKIM selector '%s' is not a DNS label", name,
                        selector ? selector : "");
    ERR_clear_error();
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return key_fail(err, "%s: out of memory", name);
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!pkey)
        return key_fail(err, "%s: not a PEM private key", name);
    int id = EVP_PKEY_get_base_id(pkey);
    if (alg == SL_DKIM_RSA_SHA256) {
        if (id != EVP_PKEY_RSA) {
            EVP_PKEY_free(pkey);
            return key_fail(err, "%s: algorithm rsa-sha256 but the key is %s", name,
                            id == EVP_PKEY_ED25519 ? "Ed25519" : "not RSA");
        }
        if (EVP_PKEY_get_bits(pkey) < 1024) {
            int bits = EVP_PKEY_get_bits(pkey);
            EVP_PKEY_free(pkey);
            return key_fail(err, "%s: RSA key of %d bits; DKIM verifiers ignore keys under 1024",
                            name, bits);
        }
    } else if (id != EVP_PKEY_ED25519) {
        EVP_PKEY_free(pkey);
        return key_fail(err, "%s: algorithm ed25519-sha256 but the key is %s", name,
                        id == EVP_PKEY_RSA ? "RSA" : "not Ed25519");
    }
    sl_dkim_signer *k = xcalloc(1, sizeof(*k));
    k->domain = xstrdup(domain);
    sl_lower(k->domain);
    k->selector = xstrdup(selector);
    k->alg = alg;
    k->pkey = pkey;
    *out = k;
    return 0;
}

int sl_dkim_key_load(const char *domain, const char *selector, const char *key_file,
                     const char *algorithm, sl_dkim_signer **out, char **err)
{
    *out = NULL;
    if (err)
        *err = NULL;
    FILE *f = key_file ? fopen(key_file, "rb") : NULL;
    if (!f)
        return key_fail(err, "%s: cannot open DKIM key: %s", key_file ? key_file : "(none)",
                        strerror(errno));
    sl_buf b = SL_BUF_INIT;
    char chunk[4096];
    size_t r;
    while ((r = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < (1u << 20))
        sl_buf_append(&b, chunk, r);
    fclose(f);
    int rc = sl_dkim_key_load_pem(domain, selector, b.data ? b.data : "", b.len, key_file,
                                  algorithm, out, err);
    OPENSSL_cleanse(b.data, b.len);
    sl_buf_free(&b);
    return rc;
}

void sl_dkim_key_free(sl_dkim_signer *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->pkey);
    free(k->domain);
    free(k->selector);
    free(k);
}

const char *sl_dkim_key_domain(const sl_dkim_signer *k)
{
    return k->domain;
}

const char *sl_dkim_key_selector(const sl_dkim_signer *k)
{
    return k->selector;
}

sl_dkim_alg sl_dkim_key_alg(const sl_dkim_signer *k)
{
    return k->alg;
}

static void b64_append(sl_buf *out, const unsigned char *p, size_t n)
{
    sl_buf_reserve(out, (n + 2) / 3 * 4 + 1);
    int w = EVP_EncodeBlock((unsigned char *)out->data + out->len, p, (int)n);
    out->len += (size_t)w;
    out->data[out->len] = 0;
}

void sl_dkim_key_dns_txt(const sl_dkim_signer *k, sl_buf *out)
{
    if (k->alg == SL_DKIM_ED25519_SHA256) {
        unsigned char raw[32];
        size_t rl = sizeof(raw);
        if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &rl) != 1)
            sl_panic("dkim: Ed25519 key without a raw public key");
        sl_buf_puts(out, "v=DKIM1; k=ed25519; p=");
        b64_append(out, raw, rl);
    } else {
        unsigned char *der = NULL;
        int dl = i2d_PUBKEY(k->pkey, &der);
        if (dl <= 0)
            sl_panic("dkim: cannot encode an RSA public key");
        sl_buf_puts(out, "v=DKIM1; k=rsa; p=");
        b64_append(out, der, (size_t)dl);
        OPENSSL_free(der);
    }
}

/* --- per-thread scratch -------------------------------------------------- */

typedef struct hfield {
    const char *p; /* the field, continuation lines included */
    size_t len;    /* without the final line end */
    size_t name_len;
} hfield;

typedef struct dkim_tls {
    EVP_MD_CTX *md;   /* SHA-256 for the body and ed25519's header digest */
    EVP_MD_CTX *sign; /* EVP_DigestSign* */
    sl_buf body, hdrs, sig;
    hfield *fields;
    size_t cap_fields;
} dkim_tls;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_free(void *p)
{
    dkim_tls *t = p;
    EVP_MD_CTX_free(t->md);
    EVP_MD_CTX_free(t->sign);
    sl_buf_free(&t->body);
    sl_buf_free(&t->hdrs);
    sl_buf_free(&t->sig);
    free(t->fields);
    free(t);
}

static void tls_init(void)
{
    if (pthread_key_create(&tls_key, tls_free) != 0)
        sl_panic("dkim: pthread_key_create failed");
}

static dkim_tls *tls_get(void)
{
    pthread_once(&tls_once, tls_init);
    dkim_tls *t = pthread_getspecific(tls_key);
    if (!t) {
        t = xcalloc(1, sizeof(*t));
        t->md = EVP_MD_CTX_new();
        t->sign = EVP_MD_CTX_new();
        if (!t->md || !t->sign)
            sl_panic("dkim: out of memory for digest contexts");
        pthread_setspecific(tls_key, t);
    }
    return t;
}

/* --- canonicalization (RFC 6376 3.4.2, 3.4.4) --------------------------- */

/* "name:value\r\n": name lower-cased, unfolded, white space runs to one
 * SP, none around the colon or at the end. */
static void canon_header(sl_buf *out, const hfield *f)
{
    size_t nl = f->name_len;
    while (nl > 0 && (f->p[nl - 1] == ' ' || f->p[nl - 1] == '\t'))
        nl--;
    sl_buf_reserve(out, f->len + 3);
    for (size_t i = 0; i < nl; i++)
        out->data[out->len++] = (char)tolower((unsigned char)f->p[i]);
    out->data[out->len++] = ':';
    bool space = false, started = false;
    for (size_t i = f->name_len + 1; i < f->len; i++) {
        char c = f->p[i];
        if (c == '\r' || c == '\n')
            continue;
        if (c == ' ' || c == '\t') {
            space = true;
            continue;
        }
        if (space && started)
            out->data[out->len++] = ' ';
        space = false;
        started = true;
        out->data[out->len++] = c;
    }
    out->data[out->len++] = '\r';
    out->data[out->len++] = '\n';
    out->data[out->len] = 0;
}

/* Relaxed body: per line, white space runs to one SP and none at the end;
 * empty lines at the end dropped; a non-empty body ends in CRLF. */
static void canon_body(sl_buf *out, const char *p, size_t n)
{
    sl_buf_reserve(out, n + 2);
    size_t pending = 0, i = 0;
    while (i < n) {
        const char *nlp = memchr(p + i, '\n', n - i);
        size_t end = nlp ? (size_t)(nlp - p) : n;
        size_t le = end;
        if (nlp && le > i && p[le - 1] == '\r')
            le--;
        /* Reserve the worst case: pending empty lines plus this line. */
        sl_buf_reserve(out, pending * 2 + (le - i) + 2);
        size_t start = out->len;
        size_t w = start + pending * 2;
        bool space = false;
        for (size_t j = i; j < le; j++) {
            char c = p[j];
            if (c == ' ' || c == '\t') {
                space = true;
                continue;
            }
            if (space)
                out->data[w++] = ' ';
            space = false;
            out->data[w++] = c;
        }
        if (w > start + pending * 2) {
            for (size_t k = 0; k < pending; k++) {
                out->data[start + 2 * k] = '\r';
                out->data[start + 2 * k + 1] = '\n';
            }
            pending = 0;
            out->data[w++] = '\r';
            out->data[w++] = '\n';
            out->len = w;
        } else if (nlp) {
            pending++;
        }
        out->data[out->len] = 0;
        i = nlp ? end + 1 : n;
    }
}

/* Split the header section into fields; returns the body offset. */
static size_t parse_fields(dkim_tls *t, const char *msg, size_t len, size_t *n_fields)
{
    size_t nf = 0, i = 0;
    while (i < len) {
        const char *nlp = memchr(msg + i, '\n', len - i);
        size_t end = nlp ? (size_t)(nlp - msg) : len;
        size_t le = (end > i && msg[end - 1] == '\r') ? end - 1 : end;
        size_t next = nlp ? end + 1 : len;
        if (le == i) { /* the blank line */
            i = next;
            break;
        }
        if ((msg[i] == ' ' || msg[i] == '\t') && nf > 0) {
            t->fields[nf - 1].len = le - (size_t)(t->fields[nf - 1].p - msg);
        } else {
            const char *colon = memchr(msg + i, ':', le - i);
            if (colon) {
                if (nf == t->cap_fields) {
                    t->cap_fields = t->cap_fields ? t->cap_fields * 2 : 32;
                    t->fields = xrealloc(t->fields, t->cap_fields * sizeof(*t->fields));
                }
                t->fields[nf].p = msg + i;
                t->fields[nf].len = le - i;
                t->fields[nf].name_len = (size_t)(colon - (msg + i));
                nf++;
            }
            /* A line with no colon is not a field; it is not signed. */
        }
        i = next;
    }
    *n_fields = nf;
    return i;
}

static bool field_is(const hfield *f, const char *name)
{
    size_t nl = f->name_len;
    while (nl > 0 && (f->p[nl - 1] == ' ' || f->p[nl - 1] == '\t'))
        nl--;
    return strlen(name) == nl && strncasecmp(f->p, name, nl) == 0;
}

/* Append text to a header being built, folding before it when the line
 * would pass 78 columns. */
static void fold_put(sl_buf *b, size_t *col, const char *s, size_t n)
{
    if (*col + n > 78 && *col > 1) {
        sl_buf_append(b, "\r\n\t", 3);
        *col = 1;
        if (n > 0 && s[0] == ' ') { /* the fold already separates */
            s++;
            n--;
        }
    }
    sl_buf_append(b, s, n);
    *col += n;
}

int sl_dkim_sign_at(const sl_dkim_signer *const *keys, size_t n, const char *msg, size_t len,
                    int64_t now_s, sl_buf *out_headers)
{
    if (n == 0)
        return 0;
    dkim_tls *t = tls_get();
    size_t nf;
    size_t body_off = parse_fields(t, msg, len, &nf);

    /* h= and the canonical header data, shared by every key. Instances of
     * a repeated field are signed bottom-up (RFC 6376 5.4.2). */
    sl_buf hlist = SL_BUF_INIT;
    sl_buf_reset(&t->hdrs);
    bool have_from = false;
    for (size_t s = 0; s < N_SIGNED; s++) {
        size_t count = 0;
        for (size_t i = nf; i-- > 0;) {
            if (!field_is(&t->fields[i], signed_fields[s]))
                continue;
            canon_header(&t->hdrs, &t->fields[i]);
            count++;
        }
        if (s == 0) {
            have_from = count > 0;
            count++; /* over-sign From: the extra listing matches nothing */
        }
        for (size_t c = 0; c < count; c++) {
            if (hlist.len)
                sl_buf_putc(&hlist, ':');
            sl_buf_puts(&hlist, signed_fields[s]);
        }
    }
    if (!have_from) {
        sl_buf_free(&hlist);
        return SL_EINVAL;
    }
    size_t hdrs_base = t->hdrs.len;

    /* Body hash. */
    unsigned char bh[EVP_MAX_MD_SIZE];
    unsigned int bhl = 0;
    sl_buf_reset(&t->body);
    canon_body(&t->body, msg + body_off, len - body_off);
    if (EVP_DigestInit_ex(t->md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(t->md, t->body.data ? t->body.data : "", t->body.len) != 1 ||
        EVP_DigestFinal_ex(t->md, bh, &bhl) != 1) {
        sl_buf_free(&hlist);
        ERR_clear_error();
        return SL_ETLS;
    }

    size_t out_base = out_headers->len;
    int rc = 0;
    for (size_t k = 0; k < n; k++) {
        const sl_dkim_signer *key = keys[k];
        sl_buf *h = &t->sig;
        sl_buf_reset(h);
        size_t col = 0;
        char tag[512];
        int tl = snprintf(tag, sizeof(tag), "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed;",
                          key->alg == SL_DKIM_RSA_SHA256 ? "rsa-sha256" : "ed25519-sha256");
        fold_put(h, &col, tag, (size_t)tl);
        tl = snprintf(tag, sizeof(tag), " d=%s;", key->domain);
        fold_put(h, &col, tag, (size_t)tl);
        tl = snprintf(tag, sizeof(tag), " s=%s;", key->selector);
        fold_put(h, &col, tag, (size_t)tl);
        tl = snprintf(tag, sizeof(tag), " t=%lld;", (long long)now_s);
        fold_put(h, &col, tag, (size_t)tl);
        /* h=, folded at colons (FWS is allowed around them). */
        const char *hp = hlist.data;
        bool first = true;
        while (*hp) {
            const char *e = strchr(hp, ':');
            size_t nl = e ? (size_t)(e - hp) : strlen(hp);
            char part[64];
            int pl = snprintf(part, sizeof(part), "%s%.*s%s", first ? " h=" : "", (int)nl, hp,
                              e ? ":" : ";");
            fold_put(h, &col, part, (size_t)pl);
            first = false;
            hp += nl + (e ? 1 : 0);
        }
        sl_buf bhb = SL_BUF_INIT;
        sl_buf_puts(&bhb, " bh=");
        b64_append(&bhb, bh, bhl);
        sl_buf_putc(&bhb, ';');
        fold_put(h, &col, bhb.data, bhb.len);
        sl_buf_free(&bhb);
        fold_put(h, &col, " b=", 3);
        size_t b_at = h->len;

        /* The field as signed: canonicalized, empty b=, no final CRLF. */
        t->hdrs.len = hdrs_base;
        hfield self = {h->data, h->len, strlen("DKIM-Signature")};
        canon_header(&t->hdrs, &self);
        t->hdrs.len -= 2;

        unsigned char sig[1024];
        size_t sl = sizeof(sig);
        bool ok;
        EVP_MD_CTX_reset(t->sign);
        if (key->alg == SL_DKIM_RSA_SHA256) {
            ok = EVP_DigestSignInit_ex(t->sign, NULL, "SHA256", NULL, NULL, key->pkey, NULL) == 1 &&
                 EVP_DigestSign(t->sign, sig, &sl, (const unsigned char *)t->hdrs.data,
                                t->hdrs.len) == 1;
        } else {
            unsigned char d[EVP_MAX_MD_SIZE];
            unsigned int dl = 0;
            ok = EVP_DigestInit_ex(t->md, EVP_sha256(), NULL) == 1 &&
                 EVP_DigestUpdate(t->md, t->hdrs.data, t->hdrs.len) == 1 &&
                 EVP_DigestFinal_ex(t->md, d, &dl) == 1 &&
                 EVP_DigestSignInit_ex(t->sign, NULL, NULL, NULL, NULL, key->pkey, NULL) == 1 &&
                 EVP_DigestSign(t->sign, sig, &sl, d, dl) == 1;
        }
        if (!ok) {
            ERR_clear_error();
            rc = SL_ETLS;
            break;
        }
        sl_buf b64 = SL_BUF_INIT;
        b64_append(&b64, sig, sl);
        /* b= folded in fixed chunks: FWS inside base64 is allowed and
         * verifiers strip it with the value. */
        h->len = b_at;
        size_t pos = 0;
        while (pos < b64.len) {
            size_t room = col < 78 ? 78 - col : 0;
            if (room < 8) {
                sl_buf_append(h, "\r\n\t", 3);
                col = 1;
                continue;
            }
            size_t take = b64.len - pos < room ? b64.len - pos : room;
            sl_buf_append(h, b64.data + pos, take);
            col += take;
            pos += take;
        }
        sl_buf_free(&b64);
        sl_buf_append(h, "\r\n", 2);
        sl_buf_append(out_headers, h->data, h->len);
    }
    sl_buf_free(&hlist);
    if (rc < 0) {
        out_headers->len = out_base;
        if (out_headers->data)
            out_headers->data[out_base] = 0;
    }
    return rc;
}

int sl_dkim_sign(const sl_dkim_signer *const *keys, size_t n, const char *msg, size_t len,
                 sl_buf *out_headers)
{
    return sl_dkim_sign_at(keys, n, msg, len, (int64_t)time(NULL), out_headers);
}

/* --- From domain and the keyring ----------------------------------------- */

int sl_dkim_from_domain(const char *msg, size_t len, char *out, size_t outsz)
{
    dkim_tls *t = tls_get();
    size_t nf;
    parse_fields(t, msg, len, &nf);
    for (size_t i = 0; i < nf; i++) {
        const hfield *f = &t->fields[i];
        if (!field_is(f, "From"))
            continue;
        const char *v = f->p + f->name_len + 1, *e = f->p + f->len;
        /* The address is in the last <...> when there is one, else the
         * whole value; its domain follows the last '@'. */
        const char *lt = NULL;
        for (const char *q = v; q < e; q++)
            if (*q == '<')
                lt = q;
        const char *a = lt ? lt + 1 : v;
        const char *ae = a;
        while (ae < e && *ae != '>' && (lt || (*ae != ',' && *ae != '\r')))
            ae++;
        const char *at = NULL;
        for (const char *q = a; q < ae; q++)
            if (*q == '@')
                at = q;
        if (!at)
            return SL_ENOTFOUND;
        const char *d = at + 1, *de = d;
        while (de < ae && *de != ' ' && *de != '\t' && *de != '>' && *de != ')' &&
               *de != '\r' && *de != '\n')
            de++;
        size_t dn = (size_t)(de - d);
        if (dn == 0 || dn + 1 > outsz)
            return SL_ENOTFOUND;
        for (size_t j = 0; j < dn; j++)
            out[j] = (char)tolower((unsigned char)d[j]);
        out[dn] = 0;
        return 0;
    }
    return SL_ENOTFOUND;
}

int sl_dkim_keyring_load(const sl_config *cfg, sl_dkim_keyring **out, char **err)
{
    sl_dkim_keyring *kr = xcalloc(1, sizeof(*kr));
    kr->keys = xcalloc(cfg->n_dkim ? cfg->n_dkim : 1, sizeof(*kr->keys));
    for (size_t i = 0; i < cfg->n_dkim; i++) {
        const sl_dkim_key *c = &cfg->dkim[i];
        int rc = sl_dkim_key_load(c->domain, c->selector, c->key_file, c->algorithm,
                                  &kr->keys[kr->n], err);
        if (rc < 0) {
            sl_dkim_keyring_free(kr);
            *out = NULL;
            return rc;
        }
        kr->n++;
    }
    *out = kr;
    return 0;
}

void sl_dkim_keyring_free(sl_dkim_keyring *kr)
{
    if (!kr)
        return;
    for (size_t i = 0; i < kr->n; i++)
        sl_dkim_key_free(kr->keys[i]);
    free(kr->keys);
    free(kr);
}

int sl_dkim_keyring_sign(const sl_dkim_keyring *kr, const char *msg, size_t len,
                         sl_buf *out_headers)
{
    if (!kr || kr->n == 0)
        return 0;
    char dom[256];
    if (sl_dkim_from_domain(msg, len, dom, sizeof(dom)) < 0)
        return 0;
    /* Exact matches first; otherwise the longest parent domain. */
    const sl_dkim_signer *pick[8];
    size_t np = 0, best = 0;
    size_t dl = strlen(dom);
    for (size_t i = 0; i < kr->n; i++) {
        const sl_dkim_signer *k = kr->keys[i];
        size_t kl = strlen(k->domain);
        size_t score = 0;
        if (kl == dl && strcmp(k->domain, dom) == 0)
            score = 1000;
        else if (kl < dl && dom[dl - kl - 1] == '.' && strcmp(dom + dl - kl, k->domain) == 0)
            score = kl;
        if (score == 0 || score < best)
            continue;
        if (score > best) {
            best = score;
            np = 0;
        }
        if (np < sizeof(pick) / sizeof(pick[0]))
            pick[np++] = k;
    }
    if (np == 0)
        return 0;
    return sl_dkim_sign(pick, np, msg, len, out_headers);
}
