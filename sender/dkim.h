/*
 * dkim - DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256
 * (RFC 8463), relaxed/relaxed canonicalization.
 *
 * sl_dkim_key_load() reads a PEM private key once (OpenSSL 3, EVP_PKEY)
 * for one (domain, selector); the algorithm named must match the key's
 * type ("rsa-sha256" needs an RSA key of at least 1024 bits,
 * "ed25519-sha256" an Ed25519 key), otherwise SL_ECONFIG with *err set
 * (malloc'd, caller frees). The returned signer is immutable: any thread
 * may sign with it concurrently. sl_dkim_key_free() releases it.
 *
 * sl_dkim_sign() computes one DKIM-Signature header field per key (dual
 * signing when a domain has both an RSA and an Ed25519 key) and appends
 * them to out_headers, each ending in CRLF. The caller sends
 * out_headers followed by exactly the msg bytes it passed: those are the
 * bytes signed. The message is header fields, a blank line and the body,
 * with CRLF (bare LF is tolerated). Signed fields, those present of: From
 * (over-signed: listed once more than present, so no From can be added),
 * To, Cc, Subject, Date, Message-ID, MIME-Version, Content-Type,
 * Content-Transfer-Encoding, Reply-To, List-Unsubscribe,
 * List-Unsubscribe-Post. No l= (a body length limit invites appended
 * content); t= is the signing time. Returns 0, SL_EINVAL when the message
 * has no From field, or SL_ETLS when OpenSSL fails (nothing appended).
 * Per-thread hashing contexts and scratch buffers are reused between
 * calls; they are released when the thread exits.
 *
 * The keyring is what the sender holds: every configured key, loaded once;
 * sl_dkim_keyring_sign() picks the keys whose domain is the From domain
 * (or, when none is, its closest parent domain, which still aligns for
 * DMARC) and signs with all of them. A message whose From domain has no key
 * is left unsigned (0, nothing appended).
 *
 * sl_dkim_key_dns_txt() writes the TXT record value to publish at
 * <selector>._domainkey.<domain>: "v=DKIM1; k=rsa; p=<SPKI DER base64>" or
 * "v=DKIM1; k=ed25519; p=<raw 32-byte key base64>".
 */
#ifndef SLUICE_DKIM_H
#define SLUICE_DKIM_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "util.h"

/* A loaded key (config.h's sl_dkim_key is the configuration entry). */
typedef struct sl_dkim_signer sl_dkim_signer;

typedef enum { SL_DKIM_RSA_SHA256 = 1, SL_DKIM_ED25519_SHA256 = 2 } sl_dkim_alg;

int sl_dkim_key_load(const char *domain, const char *selector, const char *key_file,
                     const char *algorithm, sl_dkim_signer **out, char **err);
/* The same from PEM text in memory; name is used in messages. */
int sl_dkim_key_load_pem(const char *domain, const char *selector, const char *pem, size_t len,
                         const char *name, const char *algorithm, sl_dkim_signer **out,
                         char **err);
void sl_dkim_key_free(sl_dkim_signer *k);
const char *sl_dkim_key_domain(const sl_dkim_signer *k);
const char *sl_dkim_key_selector(const sl_dkim_signer *k);
sl_dkim_alg sl_dkim_key_alg(const sl_dkim_signer *k);
void sl_dkim_key_dns_txt(const sl_dkim_signer *k, sl_buf *out);

int sl_dkim_sign(const sl_dkim_signer *const *keys, size_t n, const char *msg, size_t len,
                 sl_buf *out_headers);
/* With an explicit signing time (seconds since the epoch), for tests. */
int sl_dkim_sign_at(const sl_dkim_signer *const *keys, size_t n, const char *msg, size_t len,
                    int64_t now_s, sl_buf *out_headers);

/* The lower-case domain of the (first) From address, into out; 0 or
 * SL_ENOTFOUND. */
int sl_dkim_from_domain(const char *msg, size_t len, char *out, size_t outsz);

typedef struct sl_dkim_keyring sl_dkim_keyring;
/* Load every key of cfg->dkim. SL_ECONFIG with *err (caller frees) when one
 * fails: a configured key that cannot be used is a configuration error. */
int sl_dkim_keyring_load(const sl_config *cfg, sl_dkim_keyring **out, char **err);
void sl_dkim_keyring_free(sl_dkim_keyring *kr);
/* Sign with the keys for the From domain; 0 with nothing appended when it
 * has none. Errors as sl_dkim_sign(). */
int sl_dkim_keyring_sign(const sl_dkim_keyring *kr, const char *msg, size_t len,
                         sl_buf *out_headers);

#endif
