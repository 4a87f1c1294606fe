/*
 * tls - see tls.h. The SSL object talks to two memory BIOs: rbio holds
 * ciphertext from the network, wbio collects ciphertext for it.
 */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

struct sl_tls {
    SSL *ssl;
    BIO *rbio; /* network -> ssl */
    BIO *wbio; /* ssl -> network */
    bool server;
    bool done; /* handshake complete */
    bool failed;
    bool verify; /* sl_tls_verify() was called */
    sl_buf pending; /* plaintext written before the handshake completed */
    char err[256];
};

/* Drain OpenSSL's thread-local error queue into dst; the queue must be
 * emptied after every failure or a later unrelated call reports it. */
static void collect_err(char *dst, size_t n, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[200] = "";
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    snprintf(dst, n, "%s%s%s", what, reason[0] ? ": " : "", reason);
    ERR_clear_error();
}

static char *ctx_err(const char *what)
{
    char buf[300];
    collect_err(buf, sizeof(buf), what);
    return xstrdup(buf);
}

static SSL_CTX *ctx_common(const SSL_METHOD *m, char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(m);
    if (!ctx) {
        if (err)
            *err = ctx_err("SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Forward secrecy and AEAD only for TLS 1.2; 1.3 suites are fine. */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!MD5:!RC4");
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

SSL_CTX *sl_tls_server_ctx(const char *cert_path, const char *key_path, char **err)
{
    SSL_CTX *ctx = ctx_common(TLS_server_method(), err);
    if (!ctx)
        return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        if (err) {
            char *m = ctx_err("loading certificate");
            *err = xasprintf("%s: %s", cert_path, m);
            free(m);
        }
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        if (err) {
            char *m = ctx_err("loading private key");
            *err = xasprintf("%s: %s", key_path, m);
            free(m);
        }
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* SMTP sessions are one-shot; a session cache only costs memory. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    return ctx;
}

SSL_CTX *sl_tls_client_ctx(const char *ca_file, char **err)
{
    SSL_CTX *ctx = ctx_common(TLS_client_method(), err);
    if (!ctx)
        return NULL;
    /* Verification is per session (sl_tls_verify); without it OpenSSL
     * still checks the chain and keeps the result for sl_tls_verified(). */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    int ok = ca_file && *ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        if (err) {
            char *m = ctx_err("loading trusted certificates");
            *err = xasprintf("%s: %s", ca_file && *ca_file ? ca_file : "system store", m);
            free(m);
        }
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Only sessions given TLSA records (sl_tls_dane) use it. */
    if (SSL_CTX_dane_enable(ctx) <= 0) {
        if (err)
            *err = ctx_err("enabling DANE");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

sl_tls *sl_tls_new(SSL_CTX *ctx, bool server, const char *sni)
{
    sl_tls *t = xcalloc(1, sizeof(*t));
    t->ssl = SSL_new(ctx);
    if (!t->ssl)
        sl_panic("SSL_new failed");
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->rbio || !t->wbio)
        sl_panic("BIO_new failed");
    /* An empty memory BIO must report "retry", not EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    BIO_set_mem_eof_return(t->wbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL now owns both BIOs */
    t->server = server;
    if (server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (sni && *sni)
            SSL_set_tlsext_host_name(t->ssl, sni);
    }
    return t;
}

void sl_tls_verify(sl_tls *t, const char *host, bool require)
{
    /* Partial wildcards ("mx*.example.com") match nothing: RFC 6125. */
    SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (host && *host && SSL_set1_host(t->ssl, host) != 1)
        sl_panic("SSL_set1_host failed");
    t->verify = true;
    if (require)
        SSL_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
}

int sl_tls_dane(sl_tls *t, const char *base, const sl_tlsa *recs, size_t n)
{
    if (SSL_dane_enable(t->ssl, base && *base ? base : NULL) <= 0)
        sl_panic("SSL_dane_enable failed");
    /* RFC 7672 3.1.1: a DANE-EE match is the whole authentication, with no
     * name check (nor expiry: OpenSSL builds no chain for it). */
    SSL_dane_set_flags(t->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].usage != 2 && recs[i].usage != 3)
            continue; /* PKIX-TA/PKIX-EE: unusable for SMTP (RFC 7672 3.1.3) */
        /* 0: unusable (unknown type, bad length), -1: malformed data. */
        if (SSL_dane_tlsa_add(t->ssl, recs[i].usage, recs[i].selector, recs[i].mtype,
                              recs[i].data, recs[i].len) > 0)
            used++;
    }
    ERR_clear_error();
    if (!used)
        return SL_EINVAL;
    t->verify = true;
    SSL_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
    return 0;
}

bool sl_tls_verified(sl_tls *t, const char **why)
{
    if (!t->done && !t->failed) {
        *why = "";
        return false;
    }
    if (!SSL_get0_peer_certificate(t->ssl)) {
        *why = t->done ? "no certificate" : "";
        return false;
    }
    long r = SSL_get_verify_result(t->ssl);
    *why = r == X509_V_OK ? "ok" : X509_verify_cert_error_string(r);
    return r == X509_V_OK;
}

void sl_tls_free(sl_tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    sl_buf_free(&t->pending);
    free(t);
}

int sl_tls_feed(sl_tls *t, const void *cipher, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = BIO_write(t->rbio, cipher, chunk);
        if (w <= 0)
            sl_panic("BIO_write to a memory BIO failed");
        cipher = (const char *)cipher + w;
        n -= (size_t)w;
    }
    return 0;
}

/* Map an SSL_* return to 0 (retry later), SL_ECLOSED or SL_ETLS. */
static int ssl_result(sl_tls *t, int rc, const char *what)
{
    int e = SSL_get_error(t->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return SL_ECLOSED;
    default:
        collect_err(t->err, sizeof(t->err), what);
        t->failed = true;
        if (t->verify && !t->done && SSL_get_verify_result(t->ssl) != X509_V_OK)
            snprintf(t->err, sizeof(t->err), "certificate verify failed: %s",
                     X509_verify_cert_error_string(SSL_get_verify_result(t->ssl)));
        return SL_ETLS;
    }
}

static int write_all(sl_tls *t, const void *p, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = SSL_write(t->ssl, p, chunk);
        if (w <= 0) {
            int rc = ssl_result(t, w, "TLS write");
            return rc ? rc : SL_ETLS; /* a memory BIO never asks to retry */
        }
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    return 0;
}

int sl_tls_read(sl_tls *t, sl_buf *plain)
{
    if (t->failed)
        return SL_ETLS;
    if (!t->done) {
        int rc = SSL_do_handshake(t->ssl);
        if (rc != 1)
            return ssl_result(t, rc, "TLS handshake");
        t->done = true;
        if (t->pending.len) {
            rc = write_all(t, t->pending.data, t->pending.len);
            sl_buf_free(&t->pending);
            if (rc < 0)
                return rc;
        }
    }
    int total = 0;
    for (;;) {
        sl_buf_reserve(plain, 16384);
        int r = SSL_read(t->ssl, plain->data + plain->len, (int)(plain->cap - plain->len - 1));
        if (r <= 0) {
            int rc = ssl_result(t, r, "TLS read");
            if (rc < 0 && total == 0)
                return rc;
            break;
        }
        plain->len += (size_t)r;
        plain->data[plain->len] = 0;
        total += r;
    }
    return total;
}

int sl_tls_write(sl_tls *t, const void *plain, size_t n)
{
    if (t->failed)
        return SL_ETLS;
    if (!t->done) {
        sl_buf_append(&t->pending, plain, n);
        /* A client starts its handshake here if nothing else did. */
        if (!t->server) {
            int rc = SSL_do_handshake(t->ssl);
            if (rc == 1) {
                t->done = true;
                rc = write_all(t, t->pending.data, t->pending.len);
                sl_buf_free(&t->pending);
                return rc;
            }
            return ssl_result(t, rc, "TLS handshake");
        }
        return 0;
    }
    return write_all(t, plain, n);
}

int sl_tls_take_output(sl_tls *t, sl_buf *cipher)
{
    /* A client's first flight exists only once the handshake is started. */
    if (!t->server && !t->done && !t->failed && BIO_ctrl_pending(t->wbio) == 0 &&
        SSL_in_before(t->ssl)) {
        int rc = SSL_do_handshake(t->ssl);
        if (rc == 1)
            t->done = true;
        else
            (void)ssl_result(t, rc, "TLS handshake");
    }
    size_t n = BIO_ctrl_pending(t->wbio);
    if (n == 0)
        return 0;
    sl_buf_reserve(cipher, n);
    int r = BIO_read(t->wbio, cipher->data + cipher->len, (int)n);
    if (r <= 0)
        return 0;
    cipher->len += (size_t)r;
    cipher->data[cipher->len] = 0;
    return r;
}

void sl_tls_shutdown(sl_tls *t)
{
    if (t->done && !t->failed) {
        (void)SSL_shutdown(t->ssl);
        ERR_clear_error();
    }
}

bool sl_tls_handshake_done(sl_tls *t)
{
    return t->done;
}

const char *sl_tls_version(sl_tls *t)
{
    return t->done ? SSL_get_version(t->ssl) : "";
}

const char *sl_tls_cipher(sl_tls *t)
{
    const char *c = t->done ? SSL_get_cipher_name(t->ssl) : NULL;
    return c ? c : "";
}

const char *sl_tls_error(sl_tls *t)
{
    return t->err;
}

int sl_tls_selfsigned(const char *cert_path, const char *key_path)
{
    int ret = SL_ETLS;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (!pkey || !x)
        goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(sl_now_ms() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext =
        X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
    if (!ext)
        goto out;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!X509_sign(x, pkey, EVP_sha256()))
        goto out;

    f = fopen(key_path, "w");
    if (!f) {
        ret = -errno;
        goto out;
    }
    if (!PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL))
        goto out;
    if (fclose(f) != 0) {
        f = NULL;
        ret = -errno;
        goto out;
    }
    f = fopen(cert_path, "w");
    if (!f) {
        ret = -errno;
        goto out;
    }
    if (!PEM_write_X509(f, x))
        goto out;
    ret = fclose(f) == 0 ? 0 : -errno;
    f = NULL;
out:
    if (f)
        fclose(f);
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ret;
}
