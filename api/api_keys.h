/*
 * api_keys - the API keys file of sluice-api, key lookup and per-key rate
 * limits.
 *
 * One key per line; blank lines and lines starting with '#' are ignored:
 *
 *   HASH tenant=NAME [domains=A,B,...] [pool=NAME] [rate=N]
 *
 * HASH is the SHA-256 of the key in 64 lower-case hex digits (what
 * `sluice-api --hash-key` prints for a key on stdin; `sluice-api --new-key`
 * makes a key and prints both). Keys are 256 random bits, so a fast hash
 * loses nothing against guessing and costs nothing per request (unlike
 * sluice-submit's argon2id, which protects human-chosen passwords).
 * Fields: tenant (required) stamps every job of the key; domains the
 * envelope sender domains the key may use ("*.example.com" globs; none:
 * the key may not send, only control and suppress); pool the IP pool of its
 * jobs; rate recipients per minute ("N", "N/min", "N/s", "N/h"; 0 or
 * absent: unlimited); admin=yes lets the key suspend and resume sites,
 * which every tenant shares (default no). An unknown field, a duplicate hash or a malformed
 * one is an error "FILE:LINE: what", and so is a NUL byte anywhere in the
 * file.
 *
 * api_keys_parse()/api_keys_load() build a table the caller owns
 * (api_keys_free()). api_keys_find() hashes a presented key and returns its
 * entry (owned by the table) or NULL, comparing hashes in constant time.
 * api_key_domain_allowed() checks a lower-case A-label domain.
 * api_key_take() takes n recipients from the key's token bucket (burst: a
 * minute's worth, at least n) and returns 0, or the seconds to wait.
 * The table is immutable after loading except for the buckets, which a
 * mutex guards: every function is thread safe.
 */
#ifndef SLUICE_API_KEYS_H
#define SLUICE_API_KEYS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct api_key {
    unsigned char hash[32];
    char *tenant;
    char *pool; /* NULL: the default pool */
    char **domains;
    size_t n_domains;
    double rate_per_min; /* 0: unlimited */
    bool admin;          /* may suspend and resume sites (every tenant's) */
    double tokens;
    int64_t refilled_ms;
    int line;
} api_key;

typedef struct api_keys {
    api_key *v;
    size_t n;
    pthread_mutex_t mu;
} api_keys;

int api_keys_parse(const char *name, const char *text, size_t len, api_keys **out, char **err);
int api_keys_load(const char *path, api_keys **out, char **err);
void api_keys_free(api_keys *k);
api_key *api_keys_find(api_keys *k, const char *key);
bool api_key_domain_allowed(const api_key *k, const char *domain);
int api_key_take(api_keys *k, api_key *key, size_t n, int64_t now_ms);
/* SHA-256 of key as 64 hex digits into out[65]. */
void api_key_hash_hex(const char *key, size_t n, char out[65]);

#endif
