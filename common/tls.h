/*
 * tls - TLS over memory BIOs, for SMTP clients (sender, STARTTLS) and
 * servers (sluice-submit, the test sink), driven from a libuv loop.
 *
 * No call here touches a socket or blocks: the owner moves bytes. Bytes
 * read from the network go in with sl_tls_feed(); sl_tls_read() then
 * advances the handshake and appends any decrypted application bytes to a
 * buffer; sl_tls_write() encrypts application bytes (queued until the
 * handshake is done); sl_tls_take_output() hands over the ciphertext that
 * must be written to the network. After every feed/read/write the owner
 * calls sl_tls_take_output() and sends what it got.
 *
 * sl_tls_server_ctx()/sl_tls_client_ctx() build contexts with TLS >= 1.2
 * and OpenSSL's default secure ciphers. The client context does not fail a
 * handshake over the peer's certificate (opportunistic SMTP TLS), but it
 * loads a trust store - ca_file when given, else the system's - so that
 * every session can report whether the peer would have verified.
 * sl_tls_verify() makes one session check the certificate's chain and its
 * name, and (require) fail the handshake when either is wrong; then
 * sl_tls_error() reads "certificate verify failed: REASON". The caller owns a context (SSL_CTX_free()); each
 * sl_tls takes its own reference, so a context may be freed while sessions
 * still use it. On failure they return NULL and set *err (if err is not
 * NULL) to a message the caller frees.
 *
 * Errors: functions return 0 (or a count) or a negative SL_E* code:
 * SL_ETLS for a protocol or certificate failure (sl_tls_error() gives the
 * OpenSSL reason), SL_ECLOSED once the peer sent close_notify.
 *
 * DANE (RFC 7672): the client context has OpenSSL's DANE support enabled;
 * sl_tls_dane() gives one session the usable TLSA records of its MX host
 * (DANE-TA(2) and DANE-EE(3) only; the caller filters) and makes the
 * handshake fail unless the certificate matches one of them: DANE-EE needs
 * no chain and no name (RFC 7672 3.1.1), DANE-TA needs the chain to reach
 * the matched certificate or key and the certificate to name base, the MX
 * host (3.1.2). The failure reads "certificate verify failed: ...", and
 * sl_tls_verified() reports the result like any other.
 *
 * sl_tls_selfsigned() writes a fresh self-signed P-256 certificate for
 * "localhost" / 127.0.0.1 and its key to two PEM files, for tests and
 * `sluice dev`.
 *
 * An sl_tls belongs to one thread (one loop) at a time.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "util.h"

typedef struct sl_tls sl_tls;

SSL_CTX *sl_tls_server_ctx(const char *cert_path, const char *key_path, char **err);
/* ca_file: PEM file of trusted CAs; NULL or "": the system trust store. */
SSL_CTX *sl_tls_client_ctx(const char *ca_file, char **err);

/* server: true to accept, false to connect; sni: server name to send
 * (client only; may be NULL). Never returns NULL. */
sl_tls *sl_tls_new(SSL_CTX *ctx, bool server, const char *sni);
void sl_tls_free(sl_tls *t);
/* Client, before the handshake: check the peer's certificate chain against
 * the context's trust store and its name against host (DNS names only; the
 * name is copied). require: a failed check fails the handshake; else it is
 * only reported by sl_tls_verified(). */
void sl_tls_verify(sl_tls *t, const char *host, bool require);

/* One TLSA record (RFC 6698 2.1): certificate usage, selector, matching
 * type and the association data (len bytes). */
typedef struct sl_tlsa {
    uint8_t usage, selector, mtype;
    const unsigned char *data;
    size_t len;
} sl_tlsa;

/* Client, before the handshake: authenticate the peer by these TLSA
 * records (copied) instead of the trust store; base: the MX host name for
 * DANE-TA name checks. A failed match fails the handshake. Returns 0, or
 * SL_EINVAL when no record was usable (the session is then unchanged). */
int sl_tls_dane(sl_tls *t, const char *base, const sl_tlsa *recs, size_t n);

/* Bytes from the network. Returns 0. */
int sl_tls_feed(sl_tls *t, const void *cipher, size_t n);
/* Drive the handshake and append decrypted bytes to plain. Returns the
 * number of bytes appended (0 when more input is needed), SL_ETLS or
 * SL_ECLOSED. */
int sl_tls_read(sl_tls *t, sl_buf *plain);
/* Encrypt n application bytes; before the handshake completes they are
 * queued and sent once it does. Returns 0 or SL_ETLS. */
int sl_tls_write(sl_tls *t, const void *plain, size_t n);
/* Append pending ciphertext to cipher. Returns the number of bytes. */
int sl_tls_take_output(sl_tls *t, sl_buf *cipher);
/* Queue a close_notify (then take the output and send it). */
void sl_tls_shutdown(sl_tls *t);

bool sl_tls_handshake_done(sl_tls *t);
/* "TLSv1.3" and the cipher name once the handshake is done, else "". */
const char *sl_tls_version(sl_tls *t);
const char *sl_tls_cipher(sl_tls *t);
/* After the handshake: whether the peer's certificate chained to the trust
 * store (and matched the host given to sl_tls_verify(), if it was called);
 * why not in *why ("ok" when it did; "" before the handshake), valid as
 * long as t. */
bool sl_tls_verified(sl_tls *t, const char **why);
/* The reason for the last SL_ETLS ("" if none). Valid until the next call. */
const char *sl_tls_error(sl_tls *t);

/* Write a self-signed certificate and its private key as PEM. Returns 0,
 * SL_ETLS or a negated errno. */
int sl_tls_selfsigned(const char *cert_path, const char *key_path);

#endif
