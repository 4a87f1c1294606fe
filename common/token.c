/*
 * token - see token.h.
 */
#include "token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#define FIELD_SEP '\x1f'

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

int sl_token_key_load(const char *path, sl_token_key *key, sl_buf *why)
{
    sl_buf raw = {0};
    key->len = 0;
    if (sl_read_file(path, SL_TOKEN_KEY_MAX + 2, &raw) < 0) {
        sl_buf_printf(why, "%s: cannot read the token key", path);
        sl_buf_free(&raw);
        return -1;
    }
    size_t n = raw.len;
    if (n && raw.data[n - 1] == '\n')
        n--;
    if (n && raw.data[n - 1] == '\r')
        n--;
    int rc = -1;
    if (n < SL_TOKEN_KEY_MIN)
        sl_buf_printf(why, "%s: the token key is shorter than %d bytes", path, SL_TOKEN_KEY_MIN);
    else if (n > SL_TOKEN_KEY_MAX)
        sl_buf_printf(why, "%s: the token key is longer than %d bytes", path, SL_TOKEN_KEY_MAX);
    else {
        memcpy(key->bytes, raw.data, n);
        key->len = n;
        rc = 0;
    }
    OPENSSL_cleanse(raw.data, raw.len); /* do not leave the key in freed memory */
    sl_buf_free(&raw);
    return rc;
}

static void tag_of(const sl_token_key *key, const char *purpose, const void *payload, size_t n,
                   uint8_t tag[SL_TOKEN_TAG])
{
    sl_buf msg = {0};
    sl_buf_append(&msg, purpose, strlen(purpose) + 1);
    sl_buf_append(&msg, payload, n);
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!HMAC(EVP_sha256(), key->bytes, (int)key->len, (const unsigned char *)msg.data, msg.len,
              md, &mdlen))
        sl_panic("HMAC-SHA256 failed");
    sl_buf_free(&msg);
    memcpy(tag, md, SL_TOKEN_TAG);
}

int sl_token_seal(const sl_token_key *key, const char *purpose,
                  const char *const *fields, size_t n, sl_buf *out)
{
    if (!key->len)
        return -1;
    sl_buf p = {0};
    for (size_t i = 0; i < n; i++) {
        if (strchr(fields[i], FIELD_SEP)) {
            sl_buf_free(&p);
            return -1;
        }
        if (i)
            sl_buf_putc(&p, FIELD_SEP);
        sl_buf_puts(&p, fields[i]);
    }
    uint8_t tag[SL_TOKEN_TAG];
    tag_of(key, purpose, p.data ? p.data : "", p.len, tag);
    sl_buf_append(&p, tag, sizeof tag);

    /* base32: 5 bits at a time, most significant first */
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < p.len; i++) {
        acc = (acc << 8) | (uint8_t)p.data[i];
        bits += 8;
        while (bits >= 5) {
            sl_buf_putc(out, b32[(acc >> (bits - 5)) & 31]);
            bits -= 5;
        }
    }
    if (bits)
        sl_buf_putc(out, b32[(acc << (5 - bits)) & 31]);
    sl_buf_free(&p);
    return 0;
}

static int b32_value(char c)
{
    if (c >= 'a' && c <= 'z')
        return c - 'a';
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= '2' && c <= '7')
        return c - '2' + 26;
    return -1;
}

int sl_token_open(const sl_token_key *key, const char *purpose, const char *tok, size_t len,
                  sl_buf *store, const char **fields, size_t max)
{
    sl_buf_reset(store);
    if (!key->len || max == 0)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b32_value(tok[i]);
        if (v < 0)
            return -1;
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        if (bits >= 8) {
            sl_buf_putc(store, (char)((acc >> (bits - 8)) & 0xff));
            bits -= 8;
        }
    }
    /* What is left must be the zero padding of the last character. */
    if (bits >= 5 || (acc & ((1u << bits) - 1)) || store->len < SL_TOKEN_TAG)
        return -1;
    size_t n = store->len - SL_TOKEN_TAG;
    uint8_t tag[SL_TOKEN_TAG];
    tag_of(key, purpose, store->data, n, tag);
    if (CRYPTO_memcmp(tag, store->data + n, SL_TOKEN_TAG))
        return -1;
    store->len = n;
    store->data[n] = '\0';
    if (memchr(store->data, '\0', n))
        return -1;
    size_t k = 0;
    char *s = store->data;
    for (;;) {
        if (k == max)
            return -1;
        fields[k++] = s;
        char *sep = strchr(s, FIELD_SEP);
        if (!sep)
            break;
        *sep = '\0';
        s = sep + 1;
    }
    return (int)k;
}

#define FIELD(s) ((s) ? (s) : "")

int sl_verp_token_seal(const sl_token_key *key, const sl_verp_token *t, sl_buf *out)
{
    const char *f[] = {FIELD(t->tenant), FIELD(t->job_id), FIELD(t->recipient)};
    return sl_token_seal(key, SL_TOKEN_VERP, f, (sizeof f / sizeof f[0]), out);
}

int sl_verp_token_open(const sl_token_key *key, const char *tok, size_t len, sl_buf *store,
                       sl_verp_token *t)
{
    const char *f[3];
    if (sl_token_open(key, SL_TOKEN_VERP, tok, len, store, f, (sizeof f / sizeof f[0])) != (int)(sizeof f / sizeof f[0]))
        return -1;
    *t = (sl_verp_token){.tenant = f[0], .job_id = f[1], .recipient = f[2]};
    return 0;
}

int sl_unsub_token_seal(const sl_token_key *key, const sl_unsub_token *t, sl_buf *out)
{
    const char *f[] = {FIELD(t->tenant), FIELD(t->recipient), FIELD(t->campaign),
                       FIELD(t->list), FIELD(t->job_id)};
    return sl_token_seal(key, SL_TOKEN_UNSUB, f, (sizeof f / sizeof f[0]), out);
}

int sl_unsub_token_open(const sl_token_key *key, const char *tok, size_t len, sl_buf *store,
                        sl_unsub_token *t)
{
    const char *f[5];
    if (sl_token_open(key, SL_TOKEN_UNSUB, tok, len, store, f, (sizeof f / sizeof f[0])) != (int)(sizeof f / sizeof f[0]))
        return -1;
    *t = (sl_unsub_token){.tenant = f[0], .recipient = f[1], .campaign = f[2], .list = f[3],
                          .job_id = f[4]};
    return 0;
}
