/*
 * sched_backoff - see sched_backoff.h.
 */
#include "sched_backoff.h"
#include "smtp_reply.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shipped defaults for the rate-limit deferrals of the big receivers.
 * They name no site: the reply texts are specific enough on their own. */
static const sl_backoff_rule default_rules[] = {
    /* Gmail: "421-4.7.28 ... unusual rate of unsolicited mail ..." */
    {(char *)"^421 4\\.7\\.28( |$)", NULL, SL_BACKOFF_HALVE, 1.0, 600000, 0, 0},
    /* Gmail: "421-4.7.0 ... rate limited / unusual rate ..." */
    {(char *)"^421 4\\.7\\.0 .*(rate|unusual)", NULL, SL_BACKOFF_HALVE, 1.0, 600000, 0, 0},
    /* Microsoft: "451 4.7.650 The mail server [x] has been temporarily rate limited" */
    {(char *)"^4[0-9][0-9] 4\\.7\\.650( |$)", NULL, SL_BACKOFF_HALVE, 1.0, 900000, 0, 0},
    /* Yahoo: "421 4.7.0 [TSS04] Messages from x temporarily deferred" (TS01..TS04) */
    {(char *)"^421 4\\.7\\.0 \\[TSS?0[0-9]\\]", NULL, SL_BACKOFF_HALVE, 1.0, 1800000, 0, 0},
    /* Microsoft bounces with "550 5.7.606 Access denied, banned sending IP
     * [x]" once an IP is on its block list: every further message from it
     * bounces too, so take the IP out of the site's rotation for a day
     * (delisting is an operator's request through Microsoft's portal). Both
     * the conventional site name and an unconfigured MX rollup match. */
    {(char *)"^5[0-9][0-9] 5\\.7\\.606( |$)|banned sending IP", (char *)"microsoft",
     SL_BACKOFF_DISABLE_IP, 1.0, 0, 86400000, 0},
    {(char *)"^5[0-9][0-9] 5\\.7\\.606( |$)|banned sending IP", (char *)"*protection.outlook.com*",
     SL_BACKOFF_DISABLE_IP, 1.0, 0, 86400000, 0},
};
#define N_DEFAULT (sizeof default_rules / sizeof default_rules[0])

void sched_backoff_init(sched_backoff *b, double base_rate)
{
    memset(b, 0, sizeof *b);
    b->base = base_rate > 0 ? base_rate : 0;
    b->rate = b->base;
}

static double step_of(const sched_backoff *b)
{
    double base = b->base > 0 ? b->base : SCHED_BO_UNLIMITED_START;
    double s = base / 10.0;
    return s < 0.1 ? 0.1 : s;
}

static int64_t step_interval(const sched_backoff *b)
{
    int64_t i = b->recover_after_ms / 10;
    return i < 1000 ? 1000 : i;
}

/* SUSPENDED or DISABLED (st) until `until`; down: the end comes from a
 * destination-down report. */
static bool hold_until(sched_backoff *b, sched_bo_state st, int64_t until, bool down)
{
    if (b->state == st && until <= b->until_ms)
        return false;
    if (b->state != SCHED_BO_SUSPENDED && b->state != SCHED_BO_DISABLED)
        b->resume_state = b->state;
    /* DISABLED outranks SUSPENDED: a suspension never shortens it. */
    if (b->state == SCHED_BO_DISABLED && st == SCHED_BO_SUSPENDED) {
        if (until <= b->until_ms)
            return false;
        st = SCHED_BO_DISABLED;
    }
    if (until > b->until_ms || b->state != st)
        b->down = down && st == SCHED_BO_SUSPENDED;
    b->state = st;
    if (until > b->until_ms)
        b->until_ms = until;
    return true;
}

bool sched_backoff_apply(sched_backoff *b, const sl_backoff_rule *rule, int64_t now_ms)
{
    switch (rule->action) {
    case SL_BACKOFF_HALVE: {
        double cur = b->rate > 0 ? b->rate : SCHED_BO_UNLIMITED_START;
        double floor = rule->floor > 0 ? rule->floor : 1.0;
        double next = cur / 2;
        if (next < floor)
            next = floor;
        bool changed = next != b->rate || (b->state != SCHED_BO_THROTTLED &&
                                           b->state != SCHED_BO_SUSPENDED &&
                                           b->state != SCHED_BO_DISABLED);
        b->rate = next;
        b->floor = floor;
        b->recover_after_ms = rule->recover_after_ms > 0 ? rule->recover_after_ms : 600000;
        b->last_halve_ms = now_ms;
        b->last_step_ms = now_ms;
        if (b->state == SCHED_BO_SUSPENDED || b->state == SCHED_BO_DISABLED)
            b->resume_state = SCHED_BO_THROTTLED;
        else
            b->state = SCHED_BO_THROTTLED;
        return changed;
    }
    case SL_BACKOFF_SUSPEND:
    case SL_BACKOFF_DISABLE_IP: {
        sched_bo_state st =
            rule->action == SL_BACKOFF_SUSPEND ? SCHED_BO_SUSPENDED : SCHED_BO_DISABLED;
        int64_t until = now_ms + (rule->duration_ms > 0 ? rule->duration_ms : 600000);
        return hold_until(b, st, until, false);
    }
    }
    return false;
}

bool sched_backoff_down(sched_backoff *b, int64_t until_ms, int64_t now_ms)
{
    if (until_ms <= now_ms)
        return false;
    return hold_until(b, SCHED_BO_SUSPENDED, until_ms, true);
}

bool sched_backoff_idle(const sched_backoff *b)
{
    return b->state == SCHED_BO_NORMAL && b->rate == b->base;
}

bool sched_backoff_tick(sched_backoff *b, int64_t now_ms)
{
    bool changed = false;
    if ((b->state == SCHED_BO_SUSPENDED || b->state == SCHED_BO_DISABLED) &&
        now_ms >= b->until_ms) {
        b->state = b->resume_state;
        b->until_ms = 0;
        b->down = false;
        changed = true;
    }
    if (b->state == SCHED_BO_THROTTLED && now_ms - b->last_halve_ms >= b->recover_after_ms) {
        int64_t iv = step_interval(b);
        /* The first step comes right when recover_after has passed. */
        if (b->last_step_ms == b->last_halve_ms)
            b->last_step_ms = b->last_halve_ms + b->recover_after_ms - iv;
        while (b->state == SCHED_BO_THROTTLED && now_ms - b->last_step_ms >= iv) {
            b->last_step_ms += iv;
            b->rate += step_of(b);
            if (b->base > 0 ? b->rate >= b->base : b->rate >= SCHED_BO_UNLIMITED_START) {
                b->rate = b->base;
                b->state = SCHED_BO_NORMAL;
            }
            changed = true;
        }
    }
    return changed;
}

bool sched_backoff_usable(const sched_backoff *b)
{
    return b->state != SCHED_BO_SUSPENDED && b->state != SCHED_BO_DISABLED;
}

int64_t sched_backoff_next_ms(const sched_backoff *b)
{
    switch (b->state) {
    case SCHED_BO_SUSPENDED:
    case SCHED_BO_DISABLED:
        return b->until_ms;
    case SCHED_BO_THROTTLED: {
        int64_t start = b->last_halve_ms + b->recover_after_ms;
        int64_t last = b->last_step_ms == b->last_halve_ms ? start - step_interval(b)
                                                           : b->last_step_ms;
        return last + step_interval(b);
    }
    default:
        return INT64_MAX;
    }
}

const char *sched_backoff_state_name(sched_bo_state s)
{
    static const char *const names[] = {"normal", "throttled", "suspended", "disabled"};
    return (unsigned)s < SCHED_BO_NSTATES ? names[s] : "unknown";
}

int sched_backoff_rules_init(sched_backoff_rules *r, const sl_config *cfg, char **err)
{
    size_t n = cfg->n_backoff + N_DEFAULT;
    r->rules = xcalloc(n, sizeof *r->rules);
    r->re = xcalloc(n, sizeof *r->re);
    r->n = 0;
    for (size_t i = 0; i < n; i++) {
        const sl_backoff_rule *src =
            i < cfg->n_backoff ? &cfg->backoff[i] : &default_rules[i - cfg->n_backoff];
        int rc = regcomp(&r->re[i], src->match, REG_EXTENDED | REG_ICASE | REG_NOSUB);
        if (rc) {
            char msg[256];
            regerror(rc, &r->re[i], msg, sizeof msg);
            *err = xasprintf("%s:%d: key 'backoff.match': bad regex \"%s\": %s",
                             cfg->path ? cfg->path : "config", src->line, src->match, msg);
            sched_backoff_rules_free(r);
            return SL_ECONFIG;
        }
        r->rules[i] = *src;
        r->n++;
    }
    return 0;
}

void sched_backoff_rules_free(sched_backoff_rules *r)
{
    for (size_t i = 0; i < r->n; i++)
        regfree(&r->re[i]);
    free(r->re);
    free(r->rules);
    memset(r, 0, sizeof *r);
}

const sl_backoff_rule *sched_backoff_match(const sched_backoff_rules *r, const char *site,
                                           unsigned code, const char *enh, const char *text)
{
    /* Rules see "421 4.7.0 [TSS04] Messages ..." whether or not the sender
     * kept the reply's prefixes. */
    sl_reply rep;
    sl_reply_of((int)code, enh, text, &rep);
    sl_buf b = SL_BUF_INIT;
    sl_reply_rule_text(&rep, &b);
    sl_reply_free(&rep);
    const sl_backoff_rule *hit = NULL;
    for (size_t i = 0; i < r->n && !hit; i++) {
        if (r->rules[i].site && (!site || !sl_glob_match(r->rules[i].site, site)))
            continue;
        if (regexec(&r->re[i], b.data, 0, NULL, 0) == 0)
            hit = &r->rules[i];
    }
    sl_buf_free(&b);
    return hit;
}
