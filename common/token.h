/*
 * token - HMAC-authenticated tokens that sluice hands out and later gets
 * back from the outside world: the VERP return path of a job
 * (bounce+TOKEN@bounce.example.net) and the one-click unsubscribe URL
 * (https://.../u/TOKEN). Whoever holds the key can mint them; nobody else
 * can, so a forged bounce or unsubscribe is recognised and ignored.
 *
 * A token is the lowercase base32 (RFC 4648 alphabet, no padding) of
 * payload || tag, where tag is the first SL_TOKEN_TAG bytes of
 * HMAC-SHA256(key, purpose || 0x00 || payload). Lowercase base32 survives
 * receivers that fold the case of a local part, and needs no escaping in a
 * URL path. The purpose ("verp", "unsub"...) separates the uses: a token
 * minted for one does not open as another.
 *
 * The payload is a list of fields (no field may contain 0x1f, the unit
 * separator that joins them). It is authenticated, not encrypted: do not
 * put in it what the recipient may not read.
 *
 * Thread safety: the functions are reentrant; an sl_token_key is read-only
 * once loaded and may be shared by threads.
 */
#ifndef SLUICE_TOKEN_H
#define SLUICE_TOKEN_H

#include "util.h"

#include <stddef.h>
#include <stdint.h>

#define SL_TOKEN_TAG 10          /* bytes of HMAC kept: 80 bits */
#define SL_TOKEN_KEY_MIN 16      /* shortest key accepted */
#define SL_TOKEN_KEY_MAX 256

typedef struct sl_token_key {
    uint8_t bytes[SL_TOKEN_KEY_MAX];
    size_t len;                  /* 0: no key loaded */
} sl_token_key;

/* Read the key from a file (a mounted Kubernetes Secret): its bytes, less
 * one trailing newline. 0, or -1 with *why set (the path and the problem;
 * never the key) when the file cannot be read or is shorter than
 * SL_TOKEN_KEY_MIN or longer than SL_TOKEN_KEY_MAX bytes. */
int sl_token_key_load(const char *path, sl_token_key *key, sl_buf *why);

/* Append to *out the token for purpose and fields[0..n). -1 (nothing
 * appended) if a field contains 0x1f or the key is empty. */
int sl_token_seal(const sl_token_key *key, const char *purpose,
                  const char *const *fields, size_t n, sl_buf *out);

/* Check a token (len bytes; upper case accepted) minted for purpose and
 * split its payload: on success returns the number of fields, stores them
 * NUL-terminated in *store (reset first) and points fields[i] into it, at
 * most max fields. -1 if the token is malformed, its tag does not match
 * (forged, truncated, minted for another purpose or with another key), or it
 * has more than max fields. */
int sl_token_open(const sl_token_key *key, const char *purpose, const char *tok, size_t len,
                  sl_buf *store, const char **fields, size_t max);

/* The two tokens sluice mints. Fields are borrowed strings (a missing one
 * is ""); the _open functions point them into *store. */

/* VERP: the return path bounce+TOKEN@<bounce domain> of one job and
 * recipient, so a bounce or a feedback-loop report maps back to them. */
typedef struct sl_verp_token {
    const char *tenant, *job_id, *recipient;
} sl_verp_token;

/* Unsubscribe: the one-click URL .../u/TOKEN (RFC 8058) and the mailto
 * address unsub+TOKEN@<bounce domain>; list, when set, scopes the
 * suppression to that list instead of the whole tenant. */
typedef struct sl_unsub_token {
    const char *tenant, *recipient, *campaign, *list, *job_id;
} sl_unsub_token;

#define SL_TOKEN_VERP "verp"
#define SL_TOKEN_UNSUB "unsub"

int sl_verp_token_seal(const sl_token_key *key, const sl_verp_token *t, sl_buf *out);
int sl_verp_token_open(const sl_token_key *key, const char *tok, size_t len, sl_buf *store,
                       sl_verp_token *t);
int sl_unsub_token_seal(const sl_token_key *key, const sl_unsub_token *t, sl_buf *out);
int sl_unsub_token_open(const sl_token_key *key, const char *tok, size_t len, sl_buf *store,
                        sl_unsub_token *t);

#endif
