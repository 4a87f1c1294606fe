/*
 * mtasts - MTA-STS (RFC 8461) for the sender: the policy parser, MX
 * pattern matching, and a policy cache shared by every worker thread with
 * a fetch thread of its own, so that no policy is ever fetched on the
 * sending path.
 *
 * snd_sts_parse() parses a policy body strictly: "key: value" lines (LF or
 * CRLF), `version: STSv1` first, exactly one `mode` (enforce, testing,
 * none) and one `max_age` (0 to 31557600 seconds, RFC 8461 3.2), at least
 * one `mx` unless the mode is none; an mx is a host name or "*." and a
 * host name. Unknown keys are ignored (RFC 8461 3.2); anything else - a
 * line without a colon, a repeated version/mode/max_age, a bad value -
 * is an error in *err (malloc'd, the caller frees). snd_sts_txt_id() reads
 * the `_mta-sts` TXT record ("v=STSv1; id=...;") and gives its id.
 * snd_sts_mx_match() says whether an MX host name matches a policy's
 * patterns (a wildcard stands for exactly one leftmost label).
 *
 * snd_mtasts_new() starts the cache and its thread: a libuv loop with its
 * own resolver (common/dns.h, so cfg->dns.servers apply) that looks up
 * `_mta-sts.DOMAIN` TXT and fetches https://mta-sts.DOMAIN/.well-known/
 * mta-sts.txt with libcurl (the host resolved by the same resolver;
 * trusting cfg->sender.tls_ca_file or the system store; no redirects;
 * 64 KiB at most; cfg->sender.mta_sts_fetch_timeout). snd_mtasts_get()
 * (any thread) returns 1 while a domain's first fetch is under way (it
 * starts one for a domain it has not seen), 0 with the policy in force
 * otherwise: mode NONE when the domain has none or its fetch failed (then
 * pol->error says why). A cached policy is used until max_age (a minute at
 * least, at most the recheck interval, so max_age 0 cannot make every
 * delivery wait for a fetch); its TXT id
 * is checked again every cfg->sender.mta_sts_recheck (at most max_age) in
 * the background, and the policy fetched anew when the id changed; a failed
 * refresh keeps the cached policy. A domain without a policy is asked
 * again after the same interval, a failed lookup after a minute (at most
 * the interval). The policy copied into *pol belongs to
 * the caller (snd_sts_policy_clear()). snd_mtasts_free() stops the thread.
 *
 * Tests: SLUICE_SENDER_MTASTS_PORT sets the HTTPS port (default 443).
 * Metrics: sluice_sender_mtasts_fetches_total{result="ok|none|error"}
 * (policy lookups: a policy fetched, no policy published, a lookup or
 * fetch that failed) and sluice_sender_mtasts_policies (domains cached).
 */
#ifndef SLUICE_SND_MTASTS_H
#define SLUICE_SND_MTASTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum { SND_STS_NONE = 0, SND_STS_TESTING, SND_STS_ENFORCE } snd_sts_mode;

typedef struct snd_sts_policy {
    snd_sts_mode mode;
    char **mx;              /* n_mx patterns, lower case */
    size_t n_mx;
    int64_t max_age_s;
    char *error;            /* mode NONE after a failed lookup: why; else NULL */
} snd_sts_policy;

int snd_sts_parse(const char *text, size_t len, snd_sts_policy *out, char **err);
/* 0 and the id (1 to 32 letters and digits) in id[33], or an error. */
int snd_sts_txt_id(const char *txt, char id[33], char **err);
bool snd_sts_mx_match(const snd_sts_policy *p, const char *host);
void snd_sts_policy_clear(snd_sts_policy *p);
void snd_sts_policy_copy(snd_sts_policy *dst, const snd_sts_policy *src);
/* "enforce", "testing", "none". */
const char *snd_sts_mode_name(snd_sts_mode m);

typedef struct snd_mtasts snd_mtasts;

snd_mtasts *snd_mtasts_new(const sl_config *cfg, char **err);
int snd_mtasts_get(snd_mtasts *m, const char *domain, snd_sts_policy *pol);
void snd_mtasts_free(snd_mtasts *m);

#endif
