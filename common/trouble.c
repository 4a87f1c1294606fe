/*
 * trouble - delivery-error policy; see trouble.h for the contract.
 *
 * The order of decisions is: conditions without a reply (network,
 * timeout, TLS, protocol, null MX) by stage; then 421, which always ends
 * the connection; then the reply class (2xx/3xx expected, 4xx temporary,
 * 5xx permanent) by stage. The bounce class comes from the operator's
 * rules (cfg->bounce_rules, nothing else), then from the built-in table
 * below, then the catch-all "unknown", soft.
 */
#include "trouble.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct trouble_rule {
    regex_t re;
    Sluice__V1__BounceClass cls;
    bool hard;
} trouble_rule;

struct sl_trouble {
    trouble_rule *rules; /* the configured ones */
    size_t n_rules;
    trouble_rule *builtin;
    size_t n_builtin;
};

/* The built-in knowledge of real replies: enhanced status codes (RFC 3463)
 * and the wordings of the large receivers (Gmail, Microsoft 365 and
 * Outlook.com, Yahoo/AOL, Apple iCloud, GMX/Web.de, Orange, Comcast) and of
 * the Postfix, Exim and Exchange defaults. tests/data/replies.tsv holds the
 * replies it is tested on. Each regex sees the whole reply, every line
 * (sl_reply_rule_text()). First match wins, so the order is the policy:
 *   1. replies about our sender, IP or domain, whatever else they say
 *      ("Sender address rejected: User unknown" is not about the recipient);
 *   2. Microsoft's banned-IP codes and the unmistakable bad-mailbox forms;
 *   3. enhanced codes that name the mailbox or the domain;
 *   4. full mailboxes, TLS, reputation, spam, content, policy: all soft;
 *   5. the bad-mailbox and bad-domain wordings without a telling code
 *      (after 4, so that a block whose text also says "mailbox unavailable"
 *      stays soft);
 *   6. any other X.1.X code: a sender or syntax problem, soft.
 * Only a hard invalid-recipient suppresses the address (the scheduler's
 * feedback stage), so the soft classes are the safe default. */
static const struct {
    const char *match;
    Sluice__V1__BounceClass cls;
    bool hard;
} builtin_rules[] = {
    {"sender address rejected|sender verify failed|sender denied|bad outbound sender|"
     "invalid DNS (MX|A)|unresolvable RFC\\.?5321 from|^[45][0-9]{2} [45]\\.1\\.[78] ",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_POLICY, false},
    /* Microsoft: 5.7.606-649 banned sending IP, 5.7.511 banned, 5.7.708. */
    {"^5[0-9]{2} 5\\.7\\.(6[0-4][0-9]|511|708) ", SLUICE__V1__BOUNCE_CLASS__BOUNCE_REPUTATION,
     false},
    /* Microsoft reuses 5.1.10 (RFC 7505's null MX) for a missing mailbox;
     * 5.4.1 "Recipient address rejected: Access denied" is Exchange
     * Online's directory-based edge blocking: no such recipient. */
    {"RecipientNotFound|RecipNotFound|recipient not found|"
     "^5[0-9]{2} 5\\.4\\.1 Recipient address rejected: Access denied",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_INVALID_RECIPIENT, true},
    {"^5[0-9]{2} 5\\.1\\.10 |null MX", SLUICE__V1__BOUNCE_CLASS__BOUNCE_BAD_DOMAIN, true},
    /* 4.2.1 is Gmail's "receiving mail at a rate", not a disabled mailbox. */
    {"^[45][0-9]{2} [45]\\.1\\.[136] |^5[0-9]{2} 5\\.2\\.1 ",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_INVALID_RECIPIENT, true},
    {"^[45][0-9]{2} [45]\\.(1\\.2|4\\.4) ", SLUICE__V1__BOUNCE_CLASS__BOUNCE_BAD_DOMAIN, true},
    {"^[45][0-9]{2} [45]\\.2\\.2 |mailbox (is )?full|over ?quota|quota ?exceeded|"
     "insufficient (system )?storage|out of storage|mailbox size limit|"
     "exceeded storage allocation",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_MAILBOX_FULL, false},
    {"^[45][0-9]{2} [45]\\.7\\.(10|11|5) |STARTTLS|TLS (is )?required|"
     "encryption (is )?(required|needed)",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_TLS, false},
    {"blocklist|blacklist|block list|black list|spamhaus|spamcop|barracuda|dnsbl|"
     "reputation|banned|blocked using|listed (at|in|by)|\\[TSS?[0-9]{2}\\]|unusual rate|"
     "rate limit|at a rate that|too quickly|too many (messages|connections|sessions)|"
     "temporarily deferred|permanently deferred|throttl|server busy|OFR[0-9]*_10[0-9]",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_REPUTATION, false},
    {"spam|unsolicited|junk mail|bulk mail", SLUICE__V1__BOUNCE_CLASS__BOUNCE_SPAM_BLOCK, false},
    {"^[45][0-9]{2} [45]\\.(3\\.4|6\\.[0-9]+) |virus|malware|too (big|large)|"
     "size (limit|exceeds)|mailsize|message content|its content|RecipSizeLimit",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_CONTENT, false},
    {"^[45][0-9]{2} [45]\\.7\\.[0-9]+ |PTR (record|resource)|reverse DNS|reverse hostname|"
     "policy|greylist|relay(ing)? (access )?(denied|not permitted)|"
     "administrative prohibition|not authori[sz]ed|authentication|unauthenticated",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_POLICY, false},
    {"^5[0-9]{2} .*(user unknown|unknown user|no such (user|mailbox|recipient|address)|"
     "does ?n.t exist|invalid (recipient|mailbox|address)|destinataire invalide|"
     "unknown (recipient|mailbox|or illegal alias)|"
     "mailbox (not found|does not exist|unavailable|is disabled|disabled)|"
     "recipient (address )?rejected|(doesn.t|does not) have an? [^ ]+ account|"
     "not a valid (recipient|mailbox)|account (is |has been )?(disabled|inactive)|"
     "not our customer|unrouteable address|no longer available|user not local)",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_INVALID_RECIPIENT, true},
    {"^5[0-9]{2} .*(domain not found|no such domain|host not found|host unknown|no route to)",
     SLUICE__V1__BOUNCE_CLASS__BOUNCE_BAD_DOMAIN, true},
    {"^[45][0-9]{2} [45]\\.1\\.[0-9]+ ", SLUICE__V1__BOUNCE_CLASS__BOUNCE_POLICY, false},
};
#define N_BUILTIN (sizeof(builtin_rules) / sizeof(builtin_rules[0]))

/* --- rules ---------------------------------------------------------------- */

static int compile_rule(trouble_rule *r, const char *match, char **err, const char *what)
{
    int rc = regcomp(&r->re, match, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char m[256];
        regerror(rc, &r->re, m, sizeof(m));
        if (err)
            *err = xasprintf("%s: invalid regex '%s': %s", what, match, m);
        return SL_ECONFIG;
    }
    return 0;
}

int sl_trouble_new(const sl_config *cfg, sl_trouble **out, char **err)
{
    if (err)
        *err = NULL;
    *out = NULL;
    sl_trouble *t = xcalloc(1, sizeof(*t));
    size_t n = cfg ? cfg->n_bounce_rules : 0;
    t->rules = xcalloc(n ? n : 1, sizeof(*t->rules));
    for (size_t i = 0; i < n; i++) {
        const sl_bounce_rule *br = &cfg->bounce_rules[i];
        char what[64];
        snprintf(what, sizeof(what), "bounce_rules[%zu]", i);
        if (!br->match || !br->class_name) {
            if (err)
                *err = xasprintf("%s: no match or class", what);
            sl_trouble_free(t);
            return SL_ECONFIG;
        }
        if (sl_bounce_class_from_name(br->class_name, &t->rules[i].cls) != 0 ||
            t->rules[i].cls == SLUICE__V1__BOUNCE_CLASS__BOUNCE_NONE) {
            if (err)
                *err = xasprintf("%s: unknown bounce class '%s'", what, br->class_name);
            sl_trouble_free(t);
            return SL_ECONFIG;
        }
        if (compile_rule(&t->rules[i], br->match, err, what) < 0) {
            sl_trouble_free(t);
            return SL_ECONFIG;
        }
        t->rules[i].hard = br->hard;
        t->n_rules++;
    }
    t->builtin = xcalloc(N_BUILTIN, sizeof(*t->builtin));
    for (size_t i = 0; i < N_BUILTIN; i++) {
        if (compile_rule(&t->builtin[i], builtin_rules[i].match, err, "built-in bounce rule") < 0)
            sl_panic("trouble: built-in rule %zu does not compile: %s", i, err ? *err : "");
        t->builtin[i].cls = builtin_rules[i].cls;
        t->builtin[i].hard = builtin_rules[i].hard;
        t->n_builtin++;
    }
    *out = t;
    return 0;
}

void sl_trouble_free(sl_trouble *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_rules; i++)
        regfree(&t->rules[i].re);
    for (size_t i = 0; i < t->n_builtin; i++)
        regfree(&t->builtin[i].re);
    free(t->rules);
    free(t->builtin);
    free(t);
}

Sluice__V1__BounceClass sl_trouble_classify(const sl_trouble *t, const sl_reply *r, bool *hard,
                                            int *rule)
{
    *hard = false;
    if (rule)
        *rule = -1;
    if (!r || r->code < 400)
        return SLUICE__V1__BOUNCE_CLASS__BOUNCE_NONE;
    sl_buf line = SL_BUF_INIT;
    sl_reply_rule_text(r, &line);
    const char *s = line.data;
    Sluice__V1__BounceClass cls = SLUICE__V1__BOUNCE_CLASS__BOUNCE_UNKNOWN;
    bool found = false;
    for (size_t i = 0; i < t->n_rules && !found; i++) {
        if (regexec(&t->rules[i].re, s, 0, NULL, 0) == 0) {
            cls = t->rules[i].cls;
            *hard = t->rules[i].hard;
            if (rule)
                *rule = (int)i;
            found = true;
        }
    }
    for (size_t i = 0; i < t->n_builtin && !found; i++) {
        if (regexec(&t->builtin[i].re, s, 0, NULL, 0) == 0) {
            cls = t->builtin[i].cls;
            *hard = t->builtin[i].hard;
            found = true;
        }
    }
    sl_buf_free(&line);
    if (r->code < 500)
        *hard = false;
    return cls;
}

/* --- policy --------------------------------------------------------------- */

static void verdict(sl_trouble_verdict *v, sl_trouble_action a, sl_trouble_scope s, bool close,
                    const char *reason)
{
    v->action = a;
    v->scope = s;
    v->close = close;
    v->reason = reason;
    v->last_mx_action = a == SL_ACT_NEXT_MX ? SL_ACT_DEFER : a;
}

static bool before_mail(sl_smtp_stage s)
{
    return s == SL_STAGE_CONNECT || s == SL_STAGE_GREETING || s == SL_STAGE_EHLO ||
           s == SL_STAGE_STARTTLS;
}

void sl_trouble_decide(const sl_trouble *t, sl_smtp_stage stage, sl_smtp_cond cond,
                       const sl_reply *r, sl_trouble_verdict *v)
{
    memset(v, 0, sizeof(*v));
    v->rule = -1;
    v->bounce_class = SLUICE__V1__BOUNCE_CLASS__BOUNCE_NONE;

    if (cond == SL_COND_REPLY && !r)
        cond = SL_COND_PROTOCOL;
    if (cond == SL_COND_NULL_MX) {
        verdict(v, SL_ACT_BOUNCE, SL_SCOPE_MESSAGE, false, "domain has a null MX");
        v->bounce_class = SLUICE__V1__BOUNCE_CLASS__BOUNCE_BAD_DOMAIN;
        v->hard = true;
        return;
    }
    if (cond != SL_COND_REPLY) {
        /* No usable reply: the connection is unusable. */
        v->bounce_class = cond == SL_COND_TLS ? SLUICE__V1__BOUNCE_CLASS__BOUNCE_TLS
                                              : SLUICE__V1__BOUNCE_CLASS__BOUNCE_UNKNOWN;
        const char *why = cond == SL_COND_TIMEOUT    ? "timed out"
                          : cond == SL_COND_TLS      ? "TLS failure"
                          : cond == SL_COND_PROTOCOL ? "malformed reply"
                                                     : "connection lost";
        if (stage == SL_STAGE_RSET || stage == SL_STAGE_QUIT) {
            verdict(v, SL_ACT_OK, SL_SCOPE_NONE, true, why);
        } else if (before_mail(stage)) {
            verdict(v, SL_ACT_NEXT_MX, SL_SCOPE_CONNECTION, true,
                    stage == SL_STAGE_CONNECT ? "cannot connect" : why);
        } else if (stage == SL_STAGE_DOT) {
            /* The server may have taken the message and we missed the
             * reply: retry, and say the retry may be a duplicate. */
            verdict(v, SL_ACT_DEFER, SL_SCOPE_CONNECTION, true, why);
            v->possible_duplicate = cond == SL_COND_TIMEOUT || cond == SL_COND_NETWORK;
        } else {
            verdict(v, SL_ACT_DEFER, SL_SCOPE_CONNECTION, true, why);
        }
        return;
    }

    int code = r->code;
    int cls = code / 100;
    bool ok = stage == SL_STAGE_DATA ? cls == 3 : cls == 2;
    if (ok) {
        verdict(v, SL_ACT_OK, SL_SCOPE_NONE, stage == SL_STAGE_QUIT, "ok");
        return;
    }
    if (cls == 2 || cls == 3) {
        /* 354 where 250 belongs or the reverse: the peer is confused. */
        verdict(v, before_mail(stage) ? SL_ACT_NEXT_MX : SL_ACT_DEFER, SL_SCOPE_CONNECTION, true,
                "unexpected reply");
        v->bounce_class = SLUICE__V1__BOUNCE_CLASS__BOUNCE_UNKNOWN;
        return;
    }
    v->bounce_class = sl_trouble_classify(t, r, &v->hard, &v->rule);

    if (stage == SL_STAGE_RSET || stage == SL_STAGE_QUIT) {
        verdict(v, SL_ACT_OK, SL_SCOPE_NONE, true, "reset refused");
        v->hard = false;
        return;
    }
    if (code == 421) {
        verdict(v, before_mail(stage) ? SL_ACT_NEXT_MX : SL_ACT_DEFER, SL_SCOPE_CONNECTION, true,
                "service not available (421)");
        v->hard = false;
        return;
    }
    if (before_mail(stage)) {
        static const char *const why[] = {"connect refused", "greeting refused",
                                          "EHLO refused", "STARTTLS refused"};
        verdict(v, SL_ACT_NEXT_MX, SL_SCOPE_CONNECTION, true, why[stage]);
        if (stage == SL_STAGE_STARTTLS)
            v->bounce_class = SLUICE__V1__BOUNCE_CLASS__BOUNCE_TLS;
        /* A 5xx greeting or EHLO refusal is about us (IP, name), never about
         * the address: a soft bounce at the last MX, as Postfix does. */
        v->last_mx_action = cls == 5 && stage != SL_STAGE_STARTTLS ? SL_ACT_BOUNCE : SL_ACT_DEFER;
        v->hard = false;
        return;
    }
    sl_trouble_action a = cls == 5 ? SL_ACT_BOUNCE : SL_ACT_DEFER;
    switch (stage) {
    case SL_STAGE_MAIL:
        verdict(v, a, SL_SCOPE_MESSAGE, false, "sender rejected");
        /* MAIL FROM refusals are about the sender, not the recipient. */
        v->hard = false;
        break;
    case SL_STAGE_RCPT:
        verdict(v, a, SL_SCOPE_RECIPIENT, false, "recipient rejected");
        break;
    case SL_STAGE_DATA:
        verdict(v, a, SL_SCOPE_MESSAGE, false, "DATA refused");
        break;
    default: /* SL_STAGE_DOT */
        verdict(v, a, SL_SCOPE_MESSAGE, false, "message refused");
        break;
    }
}

const char *sl_smtp_stage_name(sl_smtp_stage s)
{
    static const char *const names[] = {"connect", "greeting", "ehlo", "starttls", "mail",
                                        "rcpt",    "data",     "dot",  "rset",     "quit"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

const char *sl_trouble_action_name(sl_trouble_action a)
{
    static const char *const names[] = {"ok", "defer", "bounce", "next-mx"};
    return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : "unknown";
}
