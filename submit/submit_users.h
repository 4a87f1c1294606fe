/*
 * submit_users - the users file of sluice-submit and its password hashes.
 *
 * One user per line; blank lines and lines starting with '#' are ignored:
 *
 *   NAME:HASH [key=value ...]
 *
 * NAME is 1-128 printable octets without ':' or white space; HASH is an
 * argon2id encoded hash ("$argon2id$v=19$m=...,t=...,p=...$salt$hash", what
 * `sluice-submit --hash-password` prints). Fields, all optional:
 *   tenant=NAME        the tenant of every job this user submits
 *   pool=NAME          the IP pool of those jobs
 *   domains=A,B,...    envelope sender (and From header) domains allowed;
 *                      "*.example.com" globs work; none: the user may not
 *                      send at all
 *   rate=N             messages per minute (also "N/min", "N/s", "N/h");
 *                      0 or absent: unlimited
 *   check_from=yes|no  whether the From header domain must be allowed too
 *                      (default yes)
 * An unknown key, a duplicate user or a hash that is not argon2id is an
 * error "FILE:LINE: what" (a typo must not open or close a door silently).
 *
 * sub_users_parse() / sub_users_load() build a table the caller owns
 * (sub_users_free()); it is immutable afterwards. sub_users_find() returns a
 * user owned by the table. sub_user_domain_allowed() checks a lower-case
 * A-label domain against the user's list.
 *
 * sub_password_hash() hashes with argon2id (t=3, m=64 MiB, p=1, 16-octet
 * random salt) into a malloc'd encoded string. sub_password_verify()
 * returns 0 when pass matches, SL_ENOTFOUND when it does not, SL_EINVAL for
 * a malformed hash. Both are CPU heavy (tens to hundreds of milliseconds):
 * never call them on an event loop; sluice-submit runs them in the libuv
 * thread pool. Thread safe.
 */
#ifndef SLUICE_SUBMIT_USERS_H
#define SLUICE_SUBMIT_USERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sub_user {
    char *name;
    char *hash;
    char *tenant; /* NULL: none */
    char *pool;   /* NULL: the default pool */
    char **domains;
    size_t n_domains;
    uint32_t rate_per_min; /* 0: unlimited */
    bool check_from;
    int line;
} sub_user;

typedef struct sub_users {
    sub_user *v;
    size_t n;
} sub_users;

int sub_users_parse(const char *name, const char *text, size_t len, sub_users **out, char **err);
int sub_users_load(const char *path, sub_users **out, char **err);
void sub_users_free(sub_users *u);
const sub_user *sub_users_find(const sub_users *u, const char *name);
bool sub_user_domain_allowed(const sub_user *u, const char *domain);

char *sub_password_hash(const char *pass, size_t n);
int sub_password_verify(const char *hash, const char *pass, size_t n);

#endif
