/*
 * config_sections - the keys with structured values (config_int.h): routes,
 * pools, sites, shaping, backoff, bounce_rules, limits, retry.delays, dkim
 * and webhook.endpoints. The key table (config_keys.c) calls each one's
 * walk, init (defaults) and free through its entry. A walk gets the key's
 * value node (NULL when absent or null) and fills c->cfg. Every array in
 * the partial sl_config is kept consistent with its count at all times,
 * so that the free functions can release it after an error.
 */
#include "config_int.h"
#include "hostport.h"
#include "mailbox.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const char *const bounce_classes[] = {
    "invalid-recipient", "bad-domain", "mailbox-full", "spam-block", "policy",
    "reputation",        "tls",        "content",      "unknown",
};

/* ------------------------------------------------------------------ */
/* Sections                                                            */

int cfg__walk_routes(cfg_ctx *c, const cfg_node *m)
{
    sl_config *cfg = c->cfg;
    TRY(cfg__map_check(c, m, "routes", NULL, 0));
    if (cfg__is_null(m))
        return 0;
    cfg->routes = xcalloc(m->n / 2 + 1, sizeof(sl_route));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        char kp[PATH_MAX_LEN];
        cfg__key_path(kp, sizeof(kp), "routes", k->s);
        if (cfg__is_null(v))
            return cfg__fail(c, k->line, "key '%s': needs a host:port", kp);
        TRY(cfg__need_scalar(c, v, kp, "host:port"));
        sl_route *r = &cfg->routes[cfg->n_routes];
        if (sl_hostport_parse(v->s, 0, 25, &r->host, &r->port) < 0)
            return cfg__fail(c, v->line, "key '%s': '%s' is not host:port", kp, v->s);
        r->pattern = xstrdup(k->s);
        sl_lower(r->pattern);
        cfg->n_routes++;
    }
    return 0;
}

/* "YYYY-MM-DD" to days since 1970-01-01 (proleptic Gregorian, UTC). */
static int parse_date(const char *s, int64_t *days)
{
    int y, mo, d, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || s[n] || n != 10)
        return -1;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap))
        return -1;
    /* Howard Hinnant's days_from_civil. */
    y -= mo <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *days = era * 146097 + doe - 719468;
    return 0;
}

static int walk_warmup(cfg_ctx *c, const cfg_node *m, const char *path, sl_source *src)
{
    static const char *const keys[] = {"start", "per_day"};
    TRY(cfg__map_check(c, m, path, keys, NELEM(keys)));
    char kp[PATH_MAX_LEN];
    const cfg_node *start = cfg__map_get(m, "start");
    cfg__key_path(kp, sizeof(kp), path, "start");
    if (!start)
        return cfg__fail(c, cfg__map_line(m, "start"), "key '%s': required (YYYY-MM-DD)", kp);
    TRY(cfg__need_scalar(c, start, kp, "a date"));
    if (parse_date(start->s, &src->warmup.start_day) < 0)
        return cfg__fail(c, start->line, "key '%s': '%s' is not a date YYYY-MM-DD", kp, start->s);
    const cfg_node *pd = cfg__map_get(m, "per_day");
    cfg__key_path(kp, sizeof(kp), path, "per_day");
    if (!pd)
        return cfg__fail(c, cfg__map_line(m, "per_day"),
                         "key '%s': required (a list of daily caps)", kp);
    if (pd->type != CN_SEQ || pd->n == 0)
        return cfg__fail(c, pd->line, "key '%s': expected a non-empty list of integers", kp);
    src->has_warmup = true;
    src->warmup.per_day = xcalloc(pd->n, sizeof(uint32_t));
    for (size_t i = 0; i < pd->n; i++) {
        const cfg_node *v = pd->kids[i];
        int64_t x;
        if (v->type != CN_SCALAR || cfg__parse_int(v->s, &x) < 0 || x < 0 || x > UINT32_MAX)
            return cfg__fail(c, v->line, "key '%s[%zu]': expected a message count", kp, i);
        src->warmup.per_day[src->warmup.n_per_day++] = (uint32_t)x;
    }
    return 0;
}

int cfg__walk_pools(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"ip", "ehlo", "weight", "socks5", "warmup"};
    sl_config *cfg = c->cfg;
    TRY(cfg__map_check(c, m, "pools", NULL, 0));
    if (cfg__is_null(m))
        return 0;
    cfg->pools = xcalloc(m->n / 2 + 1, sizeof(sl_pool));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        char pp[PATH_MAX_LEN];
        cfg__key_path(pp, sizeof(pp), "pools", k->s);
        sl_pool *pool = &cfg->pools[cfg->n_pools++];
        pool->name = xstrdup(k->s);
        if (cfg__is_null(v) || v->type != CN_SEQ || v->n == 0)
            return cfg__fail(c, cfg__is_null(v) ? k->line : v->line,
                             "key '%s': expected a non-empty list of sources ({ ip, ehlo })", pp);
        pool->sources = xcalloc(v->n, sizeof(sl_source));
        for (size_t j = 0; j < v->n; j++) {
            const cfg_node *e = v->kids[j];
            char sp[PATH_MAX_LEN], kp[PATH_MAX_LEN];
            cfg__pathf(sp, sizeof(sp), "%s[%zu]", pp, j);
            if (e->type != CN_MAP)
                return cfg__fail(c, e->line, "key '%s': expected a mapping { ip, ehlo }", sp);
            TRY(cfg__map_check(c, e, sp, keys, NELEM(keys)));
            sl_source *src = &pool->sources[pool->n_sources++];
            src->weight = 1;
            char *ip = NULL;
            if (cfg__req_str(c, e, sp, "ip", &ip) < 0) {
                free(ip);
                return -1;
            }
            const cfg_node *ipn = cfg__map_get(e, "ip");
            cfg__key_path(kp, sizeof(kp), sp, "ip");
            src->ip = cfg__ip_canon(ip);
            if (!src->ip) {
                cfg__fail(c, ipn->line, "key '%s': '%s' is not an IPv4 or IPv6 address", kp, ip);
                free(ip);
                return -1;
            }
            free(ip);
            /* A source address belongs to one pool: its EHLO name and warm-up
             * state are per address, and sl_config_source() finds it by ip. */
            for (size_t pi = 0; pi < cfg->n_pools; pi++) {
                const sl_pool *op = &cfg->pools[pi];
                size_t ns = op == pool ? pool->n_sources - 1 : op->n_sources;
                for (size_t si = 0; si < ns; si++)
                    if (!strcmp(op->sources[si].ip, src->ip))
                        return cfg__fail(c, ipn->line,
                                         "key '%s': address %s is already in pool '%s'", kp,
                                         src->ip,
                                         op->name);
            }
            TRY(cfg__req_str(c, e, sp, "ehlo", &src->ehlo));
            OPT_INT(e, sp, "weight", 1, 1000000, src->weight);
            if (cfg__opt_str(c, e, sp, "socks5", &src->socks5) < 0)
                return -1;
            if (src->socks5) {
                uint16_t port;
                cfg__key_path(kp, sizeof(kp), sp, "socks5");
                if (sl_hostport_parse(src->socks5, SL_HP_NEED_PORT, 0, NULL, &port) < 0)
                    return cfg__fail(c, cfg__map_get(e, "socks5")->line,
                                     "key '%s': '%s' is not host:port", kp, src->socks5);
            }
            const cfg_node *w = cfg__map_get(e, "warmup");
            if (w) {
                cfg__key_path(kp, sizeof(kp), sp, "warmup");
                TRY(walk_warmup(c, w, kp, src));
            }
        }
    }
    return 0;
}

int cfg__walk_sites(cfg_ctx *c, const cfg_node *m)
{
    static const char *const keys[] = {"mx", "domains"};
    sl_config *cfg = c->cfg;
    TRY(cfg__map_check(c, m, "sites", NULL, 0));
    if (cfg__is_null(m))
        return 0;
    cfg->sites = xcalloc(m->n / 2 + 1, sizeof(sl_site));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        char sp[PATH_MAX_LEN];
        cfg__key_path(sp, sizeof(sp), "sites", k->s);
        if (!strcmp(k->s, "default"))
            return cfg__fail(c, k->line,
                             "key '%s': 'default' is reserved for destinations in no site", sp);
        sl_site *s = &cfg->sites[cfg->n_sites++];
        s->name = xstrdup(k->s);
        TRY(cfg__map_check(c, v, sp, keys, NELEM(keys)));
        TRY(cfg__opt_str_list(c, v, sp, "mx", &s->mx, &s->n_mx));
        TRY(cfg__opt_str_list(c, v, sp, "domains", &s->domains, &s->n_domains));
        for (size_t j = 0; j < s->n_mx; j++)
            sl_lower(s->mx[j]);
        for (size_t j = 0; j < s->n_domains; j++)
            sl_lower(s->domains[j]);
        if (s->n_mx == 0 && s->n_domains == 0)
            return cfg__fail(c, cfg__is_null(v) ? k->line : v->line,
                             "key '%s': a site needs mx or domains patterns", sp);
    }
    return 0;
}

static int check_site(cfg_ctx *c, const char *name, int line, const char *kp)
{
    if (!strcmp(name, "default"))
        return 0;
    const char **names = xcalloc(c->cfg->n_sites + 1, sizeof(char *));
    for (size_t i = 0; i < c->cfg->n_sites; i++) {
        if (!strcmp(c->cfg->sites[i].name, name)) {
            free(names);
            return 0;
        }
        names[i] = c->cfg->sites[i].name;
    }
    const char *hint = cfg__did_you_mean(name, names, c->cfg->n_sites);
    if (hint)
        cfg__fail(c, line, "key '%s': site '%s' is not defined in sites (did you mean '%s'?)", kp,
                  name, hint);
    else
        cfg__fail(c, line, "key '%s': site '%s' is not defined in sites", kp, name);
    free(names);
    return -1;
}

/* Fill s from mapping m over what s holds already (defaults or the
 * "default" entry). */
static int walk_shaping_entry(cfg_ctx *c, const cfg_node *m, const char *sp, sl_shaping *s,
                              bool inherit_burst)
{
    static const char *const keys[] = {
        "max_message_rate", "burst", "max_connections", "max_messages_per_connection", "tls",
        "timeouts"};
    static const char *const tkeys[] = {"connect", "greeting",   "ehlo", "mail", "rcpt",
                                        "data",    "data_block", "dot",  "quit", "idle"};
    TRY(cfg__map_check(c, m, sp, keys, NELEM(keys)));
    int rate_set = cfg__opt_rate(c, m, sp, "max_message_rate", true, &s->max_message_rate);
    TRY(rate_set);
    int burst_set = cfg__opt_burst(c, m, sp, "burst", &s->burst);
    TRY(burst_set);
    /* Without an explicit burst, the bucket holds one second of the rate this
     * entry sets; an entry that sets no rate keeps the default's burst. */
    if (!burst_set && (rate_set || !inherit_burst))
        s->burst = s->max_message_rate > 1 ? s->max_message_rate : 1;
    OPT_INT(m, sp, "max_connections", 1, 100000, s->max_connections);
    OPT_INT(m, sp, "max_messages_per_connection", 1, 100000000, s->max_messages_per_connection);
    char *tls = NULL;
    int r = cfg__opt_str(c, m, sp, "tls", &tls);
    if (r > 0) {
        if (!strcmp(tls, "opportunistic"))
            s->tls = SL_TLS_OPPORTUNISTIC;
        else if (!strcmp(tls, "required"))
            s->tls = SL_TLS_REQUIRED;
        else if (!strcmp(tls, "disabled"))
            s->tls = SL_TLS_DISABLED;
        else if (!strcmp(tls, "verify"))
            s->tls = SL_TLS_VERIFY;
        else
            r = cfg__fail(c, cfg__map_get(m, "tls")->line,
                          "key '%s.tls': '%s' is not one of opportunistic, required, verify, "
                          "disabled",
                          sp, tls);
    }
    free(tls);
    TRY(r);
    const cfg_node *t = cfg__map_get(m, "timeouts");
    if (t) {
        char tp[PATH_MAX_LEN];
        cfg__key_path(tp, sizeof(tp), sp, "timeouts");
        TRY(cfg__map_check(c, t, tp, tkeys, NELEM(tkeys)));
        int64_t *fields[] = {&s->timeouts.connect,    &s->timeouts.greeting, &s->timeouts.ehlo,
                             &s->timeouts.mail,       &s->timeouts.rcpt,     &s->timeouts.data,
                             &s->timeouts.data_block, &s->timeouts.dot,      &s->timeouts.quit,
                             &s->timeouts.idle};
        for (size_t i = 0; i < NELEM(tkeys); i++)
            TRY(cfg__opt_duration(c, t, tp, tkeys[i], false, fields[i]));
    }
    return 0;
}

static const sl_timeouts rfc5321_timeouts = {
    .connect = 30000,
    .greeting = 300000,
    .ehlo = 300000,
    .mail = 300000,
    .rcpt = 300000,
    .data = 120000,
    .data_block = 180000,
    .dot = 600000,
    .quit = 120000,
    .idle = 30000,
};

/* shaping[0] is always the "default" entry. */
void cfg__init_shaping(sl_config *cfg)
{
    sl_shaping *s = cfg->shaping = xcalloc(1, sizeof(sl_shaping));
    cfg->n_shaping = 1;
    s->site = xstrdup("default");
    s->max_message_rate = 100;
    s->burst = 100;
    s->max_connections = 10;
    s->max_messages_per_connection = 100;
    s->tls = SL_TLS_OPPORTUNISTIC;
    s->timeouts = rfc5321_timeouts;
}

static void shaping_copy(sl_shaping *dst, const sl_shaping *src, const char *site)
{
    *dst = *src;
    dst->site = xstrdup(site);
}

int cfg__walk_shaping(cfg_ctx *c, const cfg_node *m)
{
    sl_config *cfg = c->cfg;
    TRY(cfg__map_check(c, m, "shaping", NULL, 0));
    if (cfg__is_null(m))
        return 0;
    const cfg_node *d = NULL;
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (!strcmp(m->kids[i]->s, "default"))
            d = m->kids[i + 1];
    if (d)
        TRY(walk_shaping_entry(c, d, "shaping.default", &cfg->shaping[0], false));
    cfg->shaping = xrealloc(cfg->shaping, (m->n / 2 + 1) * sizeof(sl_shaping));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        if (!strcmp(k->s, "default"))
            continue;
        char sp[PATH_MAX_LEN];
        cfg__key_path(sp, sizeof(sp), "shaping", k->s);
        TRY(check_site(c, k->s, k->line, sp));
        sl_shaping *s = &cfg->shaping[cfg->n_shaping++];
        shaping_copy(s, &cfg->shaping[0], k->s);
        TRY(walk_shaping_entry(c, v, sp, s, true));
    }
    return 0;
}

int cfg__walk_backoff(cfg_ctx *c, const cfg_node *v)
{
    static const char *const keys[] = {"match", "site",          "action",
                                       "floor", "recover_after", "duration"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = cfg__need_seq(c, v, "backoff", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->backoff = xcalloc(l->n + 1, sizeof(sl_backoff_rule));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char bp[PATH_MAX_LEN], kp[PATH_MAX_LEN];
        cfg__pathf(bp, sizeof(bp), "backoff[%zu]", i);
        if (e->type != CN_MAP)
            return cfg__fail(c, e->line, "key '%s': expected a mapping { match, action, ... }", bp);
        TRY(cfg__map_check(c, e, bp, keys, NELEM(keys)));
        sl_backoff_rule *r = &cfg->backoff[cfg->n_backoff++];
        r->line = e->line;
        r->action = SL_BACKOFF_HALVE;
        r->floor = 1;
        r->recover_after_ms = 600000;
        r->duration_ms = 1800000;
        TRY(cfg__req_str(c, e, bp, "match", &r->match));
        cfg__key_path(kp, sizeof(kp), bp, "match");
        TRY(cfg__regex_check(c, cfg__map_get(e, "match"), kp));
        int rs = cfg__opt_str(c, e, bp, "site", &r->site);
        TRY(rs);
        if (rs) {
            cfg__key_path(kp, sizeof(kp), bp, "site");
            TRY(check_site(c, r->site, cfg__map_get(e, "site")->line, kp));
        }
        char *action = NULL;
        int ra = cfg__opt_str(c, e, bp, "action", &action);
        if (ra > 0) {
            if (!strcmp(action, "halve"))
                r->action = SL_BACKOFF_HALVE;
            else if (!strcmp(action, "suspend"))
                r->action = SL_BACKOFF_SUSPEND;
            else if (!strcmp(action, "disable_ip"))
                r->action = SL_BACKOFF_DISABLE_IP;
            else
                ra = cfg__fail(c, cfg__map_get(e, "action")->line,
                               "key '%s.action': '%s' is not one of halve, suspend, disable_ip", bp,
                               action);
        }
        free(action);
        TRY(ra);
        TRY(cfg__opt_rate(c, e, bp, "floor", false, &r->floor));
        TRY(cfg__opt_duration(c, e, bp, "recover_after", false, &r->recover_after_ms));
        TRY(cfg__opt_duration(c, e, bp, "duration", false, &r->duration_ms));
    }
    return 0;
}

/* limits: [{ tenant, campaign, max_message_rate, burst }] - see sl_limit. */
int cfg__walk_limits(cfg_ctx *c, const cfg_node *v)
{
    static const char *const keys[] = {"tenant", "campaign", "max_message_rate", "burst"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = cfg__need_seq(c, v, "limits", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->limits = xcalloc(l->n + 1, sizeof(sl_limit));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char bp[PATH_MAX_LEN];
        cfg__pathf(bp, sizeof(bp), "limits[%zu]", i);
        if (e->type != CN_MAP)
            return cfg__fail(c, e->line,
                             "key '%s': expected a mapping { tenant, campaign, max_message_rate }",
                             bp);
        TRY(cfg__map_check(c, e, bp, keys, NELEM(keys)));
        sl_limit *lim = &cfg->limits[cfg->n_limits++];
        lim->line = e->line;
        int rt = cfg__opt_str(c, e, bp, "tenant", &lim->tenant);
        TRY(rt);
        int rc = cfg__opt_str(c, e, bp, "campaign", &lim->campaign);
        TRY(rc);
        if (!rt && !rc)
            return cfg__fail(c, e->line, "key '%s': needs a tenant or a campaign (or both)", bp);
        int rr = cfg__opt_rate(c, e, bp, "max_message_rate", false, &lim->max_message_rate);
        TRY(rr);
        if (!rr)
            return cfg__fail(c, e->line, "key '%s.max_message_rate': required", bp);
        int rb = cfg__opt_burst(c, e, bp, "burst", &lim->burst);
        TRY(rb);
        if (!rb)
            lim->burst = lim->max_message_rate > 1 ? lim->max_message_rate : 1;
    }
    return 0;
}

int cfg__walk_bounce_rules(cfg_ctx *c, const cfg_node *v)
{
    static const char *const keys[] = {"match", "class", "hard"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = cfg__need_seq(c, v, "bounce_rules", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->bounce_rules = xcalloc(l->n + 1, sizeof(sl_bounce_rule));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char bp[PATH_MAX_LEN], kp[PATH_MAX_LEN];
        cfg__pathf(bp, sizeof(bp), "bounce_rules[%zu]", i);
        if (e->type != CN_MAP)
            return cfg__fail(c, e->line, "key '%s': expected a mapping { match, class, hard }", bp);
        TRY(cfg__map_check(c, e, bp, keys, NELEM(keys)));
        sl_bounce_rule *r = &cfg->bounce_rules[cfg->n_bounce_rules++];
        r->hard = true;
        TRY(cfg__req_str(c, e, bp, "match", &r->match));
        cfg__key_path(kp, sizeof(kp), bp, "match");
        TRY(cfg__regex_check(c, cfg__map_get(e, "match"), kp));
        TRY(cfg__req_str(c, e, bp, "class", &r->class_name));
        bool ok = false;
        for (size_t j = 0; j < NELEM(bounce_classes); j++)
            ok |= !strcmp(r->class_name, bounce_classes[j]);
        if (!ok) {
            const char *hint = cfg__did_you_mean(r->class_name, bounce_classes,
                                                 NELEM(bounce_classes));
            return cfg__fail(c, cfg__map_get(e, "class")->line,
                             "key '%s.class': '%s' is not a bounce class%s%s%s (one of "
                             "invalid-recipient, bad-domain, mailbox-full, spam-block, policy, "
                             "reputation, tls, content, unknown)",
                             bp, r->class_name, hint ? "; did you mean '" : "", hint ? hint : "",
                             hint ? "'?" : "");
        }
        TRY(cfg__opt_bool(c, e, bp, "hard", &r->hard));
    }
    return 0;
}

/* retry.delays: a non-empty list of distinct durations. */
int cfg__walk_retry_delays(cfg_ctx *c, const cfg_node *d)
{
    sl_config *cfg = c->cfg;
    if (!d)
        return 0;
    if (d->type != CN_SEQ || d->n == 0)
        return cfg__fail(c, d->line, "key 'retry.delays': expected a non-empty list of durations");
    free(cfg->retry.delays_ms);
    cfg->retry.delays_ms = xcalloc(d->n, sizeof(int64_t));
    cfg->retry.n_delays = 0;
    for (size_t i = 0; i < d->n; i++) {
        char kp[PATH_MAX_LEN];
        cfg__pathf(kp, sizeof(kp), "retry.delays[%zu]", i);
        int64_t ms;
        TRY(cfg__check_duration(c, d->kids[i], kp, &ms));
        if (ms <= 0)
            return cfg__fail(c, d->kids[i]->line, "key '%s': must be longer than zero", kp);
        /* Each delay is its own retry topic; the same delay twice would
         * be one topic consumed as two. */
        for (size_t j = 0; j < cfg->retry.n_delays; j++)
            if (cfg->retry.delays_ms[j] == ms)
                return cfg__fail(c, d->kids[i]->line, "key '%s': %s is listed twice", kp,
                                 d->kids[i]->s);
        cfg->retry.delays_ms[cfg->retry.n_delays++] = ms;
    }
    return 0;
}

static const int64_t default_delays[] = {60000, 300000, 1800000, 7200000, 21600000};

void cfg__init_retry_delays(sl_config *cfg)
{
    cfg->retry.delays_ms = xmalloc(sizeof(default_delays));
    memcpy(cfg->retry.delays_ms, default_delays, sizeof(default_delays));
    cfg->retry.n_delays = NELEM(default_delays);
}

void cfg__free_retry_delays(sl_config *cfg)
{
    free(cfg->retry.delays_ms);
}

int cfg__walk_dkim(cfg_ctx *c, const cfg_node *v)
{
    static const char *const keys[] = {"domain", "selector", "key", "algorithm"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = cfg__need_seq(c, v, "dkim", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->dkim = xcalloc(l->n + 1, sizeof(sl_dkim_key));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char dp[PATH_MAX_LEN];
        cfg__pathf(dp, sizeof(dp), "dkim[%zu]", i);
        if (e->type != CN_MAP)
            return cfg__fail(c, e->line, "key '%s': expected a mapping { domain, selector, key }",
                             dp);
        TRY(cfg__map_check(c, e, dp, keys, NELEM(keys)));
        sl_dkim_key *k = &cfg->dkim[cfg->n_dkim++];
        TRY(cfg__req_str(c, e, dp, "domain", &k->domain));
        sl_lower(k->domain);
        TRY(cfg__req_str(c, e, dp, "selector", &k->selector));
        TRY(cfg__req_str(c, e, dp, "key", &k->key_file));
        k->algorithm = xstrdup("rsa-sha256");
        TRY(cfg__opt_str(c, e, dp, "algorithm", &k->algorithm));
        if (strcmp(k->algorithm, "rsa-sha256") && strcmp(k->algorithm, "ed25519-sha256"))
            return cfg__fail(c, cfg__map_get(e, "algorithm")->line,
                             "key '%s.algorithm': '%s' is not one of rsa-sha256, ed25519-sha256",
                             dp,
                             k->algorithm);
        if (access(k->key_file, R_OK) < 0)
            return cfg__fail(c, cfg__map_get(e, "key")->line, "key '%s.key': cannot read '%s': %s",
                             dp,
                             k->key_file, strerror(errno));
        for (size_t j = 0; j + 1 < cfg->n_dkim; j++)
            if (!strcmp(cfg->dkim[j].domain, k->domain) &&
                !strcmp(cfg->dkim[j].selector, k->selector))
                return cfg__fail(c, cfg__map_get(e, "selector")->line,
                                 "key '%s.selector': %s._domainkey.%s is defined twice", dp,
                                 k->selector, k->domain);
    }
    return 0;
}

/* webhook.endpoints: where sluice-webhook posts events. Exactly one of
 * secret / secret_file, because an unsigned webhook cannot be trusted by its
 * receiver; the secret itself never appears in a message. */
int cfg__walk_webhook_endpoints(cfg_ctx *c, const cfg_node *v)
{
    static const char *const ekeys[] = {"url", "secret", "secret_file", "batch_size", "timeout"};
    sl_config *cfg = c->cfg;
    bool failed;
    const cfg_node *l = cfg__need_seq(c, v, "webhook.endpoints", &failed);
    if (failed)
        return -1;
    if (!l)
        return 0;
    cfg->webhook.endpoints = xcalloc(l->n + 1, sizeof(sl_webhook_endpoint));
    for (size_t i = 0; i < l->n; i++) {
        const cfg_node *e = l->kids[i];
        char ep[PATH_MAX_LEN];
        cfg__pathf(ep, sizeof(ep), "webhook.endpoints[%zu]", i);
        if (e->type != CN_MAP)
            return cfg__fail(c, e->line, "key '%s': expected a mapping { url, secret }", ep);
        TRY(cfg__map_check(c, e, ep, ekeys, NELEM(ekeys)));
        sl_webhook_endpoint *w = &cfg->webhook.endpoints[cfg->webhook.n_endpoints++];
        w->batch_size = 100;
        w->timeout_ms = 10000;
        TRY(cfg__req_str(c, e, ep, "url", &w->url));
        if (strncasecmp(w->url, "http://", 7) && strncasecmp(w->url, "https://", 8))
            return cfg__fail(c, cfg__map_line(e, "url"),
                             "key '%s.url': '%s' is not an http:// or https:// URL", ep, w->url);
        const cfg_node *sv = cfg__map_get(e, "secret");
        if (sv && sv->type != CN_SCALAR)
            return cfg__fail(c, sv->line, "key '%s.secret': expected a string", ep);
        if (sv)
            w->secret = xstrdup(sv->s);
        TRY(cfg__opt_str(c, e, ep, "secret_file", &w->secret_file));
        if (!w->secret == !w->secret_file)
            return cfg__fail(c, e->line, "key '%s': exactly one of secret, secret_file is required",
                             ep);
        if (w->secret && !w->secret[0])
            return cfg__fail(c, cfg__map_line(e, "secret"), "key '%s.secret': must not be empty",
                             ep);
        if (w->secret_file && access(w->secret_file, R_OK) < 0)
            return cfg__fail(c, cfg__map_line(e, "secret_file"),
                             "key '%s.secret_file': cannot read '%s': %s", ep, w->secret_file,
                             strerror(errno));
        OPT_INT(e, ep, "batch_size", 1, 100000, w->batch_size);
        TRY(cfg__opt_duration(c, e, ep, "timeout", false, &w->timeout_ms));
    }
    return 0;
}

void cfg__free_webhook_endpoints(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->webhook.n_endpoints; i++) {
        free(cfg->webhook.endpoints[i].url);
        free(cfg->webhook.endpoints[i].secret);
        free(cfg->webhook.endpoints[i].secret_file);
    }
    free(cfg->webhook.endpoints);
}

/* ------------------------------------------------------------------ */
/* Freeing: each releases what its walk (or init) allocated, also after */
/* an error part way through.                                          */

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* verp.tenants: tenant -> its own bounce domain (lowercased). */
int cfg__walk_verp_tenants(cfg_ctx *c, const cfg_node *m)
{
    sl_config *cfg = c->cfg;
    TRY(cfg__map_check(c, m, "verp.tenants", NULL, 0));
    if (cfg__is_null(m))
        return 0;
    cfg->verp.tenants = xcalloc(m->n / 2 + 1, sizeof(*cfg->verp.tenants));
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const cfg_node *k = m->kids[i], *v = m->kids[i + 1];
        char kp[PATH_MAX_LEN];
        cfg__key_path(kp, sizeof(kp), "verp.tenants", k->s);
        if (cfg__is_null(v))
            return cfg__fail(c, k->line, "key '%s': needs a domain", kp);
        TRY(cfg__need_scalar(c, v, kp, "domain"));
        char why[200];
        if (sl_mailbox_domain_check(v->s, 0, why, sizeof why) < 0)
            return cfg__fail(c, v->line, "key '%s': '%s' is not a domain: %s", kp, v->s, why);
        struct sl_verp_tenant *t = &cfg->verp.tenants[cfg->verp.n_tenants++];
        t->tenant = xstrdup(k->s);
        t->domain = xstrdup(v->s);
        sl_lower(t->domain);
    }
    return 0;
}

void cfg__free_verp_tenants(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->verp.n_tenants; i++) {
        free(cfg->verp.tenants[i].tenant);
        free(cfg->verp.tenants[i].domain);
    }
    free(cfg->verp.tenants);
}

void cfg__free_routes(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_routes; i++) {
        free(cfg->routes[i].pattern);
        free(cfg->routes[i].host);
    }
    free(cfg->routes);
}

void cfg__free_pools(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_pools; i++) {
        sl_pool *p = &cfg->pools[i];
        for (size_t j = 0; j < p->n_sources; j++) {
            free(p->sources[j].ip);
            free(p->sources[j].ehlo);
            free(p->sources[j].socks5);
            free(p->sources[j].warmup.per_day);
        }
        free(p->sources);
        free(p->name);
    }
    free(cfg->pools);
}

void cfg__free_sites(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_sites; i++) {
        free(cfg->sites[i].name);
        free_strv(cfg->sites[i].mx, cfg->sites[i].n_mx);
        free_strv(cfg->sites[i].domains, cfg->sites[i].n_domains);
    }
    free(cfg->sites);
}

void cfg__free_shaping(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_shaping; i++)
        free(cfg->shaping[i].site);
    free(cfg->shaping);
}

void cfg__free_backoff(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_backoff; i++) {
        free(cfg->backoff[i].match);
        free(cfg->backoff[i].site);
    }
    free(cfg->backoff);
}

void cfg__free_limits(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_limits; i++) {
        free(cfg->limits[i].tenant);
        free(cfg->limits[i].campaign);
    }
    free(cfg->limits);
}

void cfg__free_bounce_rules(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_bounce_rules; i++) {
        free(cfg->bounce_rules[i].match);
        free(cfg->bounce_rules[i].class_name);
    }
    free(cfg->bounce_rules);
}

void cfg__free_dkim(sl_config *cfg)
{
    for (size_t i = 0; i < cfg->n_dkim; i++) {
        free(cfg->dkim[i].domain);
        free(cfg->dkim[i].selector);
        free(cfg->dkim[i].key_file);
        free(cfg->dkim[i].algorithm);
    }
    free(cfg->dkim);
}
