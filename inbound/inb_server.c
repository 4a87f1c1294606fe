/*
 * inb_server - see inb_server.h.
 */
#include "inb_server.h"
#include "inb_report.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "smtp_server.h"
#include "util.h"
#include "wire.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct inb_server {
    inb_opts o;
    uv_loop_t *loop;
    smtpd_server *smtpd;
    sl_producer *prod;
    inb_stats st;
    uv_timer_t flush_timer; /* the once-per-interval log summaries */
    bool closing;
    void (*close_cb)(inb_server *, void *);
    void *close_arg;
};

/* One accepted message whose events wait for Kafka. */
typedef struct inb_msg {
    inb_server *srv;
    smtpd_session *sess;
    size_t outstanding;
    bool failed, sealed;
} inb_msg;

typedef enum { RCPT_FOREIGN, RCPT_UNKNOWN, RCPT_BOUNCE, RCPT_UNSUB, RCPT_FBL } rcpt_kind;

#define BOUNCE_PREFIX "bounce+"
#define UNSUB_PREFIX "unsub+"

static bool domain_ours(const sl_config *cfg, const char *d)
{
    if (cfg->inbound.n_domains) {
        for (size_t i = 0; i < cfg->inbound.n_domains; i++)
            if (!strcasecmp(cfg->inbound.domains[i], d))
                return true;
    } else {
        if (cfg->verp.domain && !strcasecmp(cfg->verp.domain, d))
            return true;
        for (size_t i = 0; i < cfg->verp.n_tenants; i++)
            if (!strcasecmp(cfg->verp.tenants[i].domain, d))
                return true;
    }
    for (size_t i = 0; i < cfg->inbound.n_fbl; i++) {
        const char *at = strrchr(cfg->inbound.fbl[i], '@');
        if (at && !strcasecmp(at + 1, d))
            return true;
    }
    return false;
}

/* What addr is to us; for bounce+TOKEN and unsub+TOKEN, the token in *tok and *tlen. */
static rcpt_kind rcpt_classify(const sl_config *cfg, const char *addr, const char **tok,
                               size_t *tlen)
{
    const char *at = strrchr(addr, '@');
    if (!at || !domain_ours(cfg, at + 1))
        return RCPT_FOREIGN;
    for (size_t i = 0; i < cfg->inbound.n_fbl; i++)
        if (!strcasecmp(cfg->inbound.fbl[i], addr))
            return RCPT_FBL;
    size_t local = (size_t)(at - addr);
    if (local > strlen(BOUNCE_PREFIX) && !strncasecmp(addr, BOUNCE_PREFIX, strlen(BOUNCE_PREFIX))) {
        *tok = addr + strlen(BOUNCE_PREFIX);
        *tlen = local - strlen(BOUNCE_PREFIX);
        return RCPT_BOUNCE;
    }
    if (local > strlen(UNSUB_PREFIX) && !strncasecmp(addr, UNSUB_PREFIX, strlen(UNSUB_PREFIX))) {
        *tok = addr + strlen(UNSUB_PREFIX);
        *tlen = local - strlen(UNSUB_PREFIX);
        return RCPT_UNSUB;
    }
    return RCPT_UNKNOWN;
}

/* ---- SMTP hooks ---- */

static void on_rcpt(void *arg, smtpd_session *s, const char *rcpt)
{
    inb_server *srv = arg;
    const char *tok;
    size_t tlen;
    switch (rcpt_classify(srv->o.cfg, rcpt, &tok, &tlen)) {
    case RCPT_FOREIGN:
        sl_metric_inc("sluice_inbound_rcpt_refused_total", "reason=\"relay\"", 1);
        smtpd_reply(s, 550, "5.7.1 Relaying denied: this host takes bounces and reports only");
        return;
    case RCPT_UNKNOWN:
        sl_metric_inc("sluice_inbound_rcpt_refused_total", "reason=\"unknown\"", 1);
        smtpd_reply(s, 550, "5.1.1 No such mailbox");
        return;
    default:
        smtpd_reply(s, 250, "2.1.5 Ok");
    }
}

static void forged(inb_server *srv, const char *what, const smtpd_envelope *env)
{
    srv->st.forged++;
    sl_metric_inc("sluice_inbound_forged_total", NULL, 1);
    sl_log_every(SL_LOG_WARN, "inbound-forged",
                 "inbound: ignoring a %s whose token does not open (forged, or another key), "
                 "from %s",
                 what, env->peer_ip);
}

static void ignored(const char *reason)
{
    char l[64];
    snprintf(l, sizeof l, "reason=\"%s\"", reason);
    sl_metric_inc("sluice_inbound_ignored_total", l, 1);
}

static void msg_maybe_done(inb_msg *m)
{
    if (!m->sealed || m->outstanding)
        return;
    if (m->failed)
        smtpd_reply(m->sess, 451, "4.3.0 Not recorded, try again later");
    else {
        m->srv->st.messages++;
        smtpd_reply(m->sess, 250, "2.0.0 Ok");
    }
    free(m);
}

static void event_acked(void *arg, int err)
{
    inb_msg *m = arg;
    m->outstanding--;
    if (err) {
        m->failed = true;
        sl_warn("inbound: an event was not acknowledged by Kafka (error %d)", err);
    } else {
        m->srv->st.events++;
    }
    msg_maybe_done(m);
}

static void publish(inb_msg *m, sl_event *e)
{
    char l[64];
    snprintf(l, sizeof l, "type=\"%s\"", sl_event_type_name(e->type));
    sl_metric_inc("sluice_inbound_events_total", l, 1);
    sl_log_job(SL_LOG_INFO, e->job_id, "inbound: %s for %s (tenant %s)%s%s",
               sl_event_type_name(e->type), e->recipient, *e->tenant ? e->tenant : "(default)",
               *e->reason ? ": " : "", e->reason);
    m->outstanding++;
    if (sl_event_publish(m->srv->prod, m->srv->o.cfg, e, event_acked, m) != 0) {
        m->outstanding--;
        m->failed = true;
    }
}

static const char *domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

static void event_init(sl_event *e, Sluice__V1__EventType type, const char *tenant,
                       const char *job_id, const char *recipient)
{
    sl_event_from_job(e, type, NULL, "inbound");
    e->tenant = (char *)tenant;
    e->job_id = (char *)job_id;
    e->recipient = (char *)recipient;
    e->domain = (char *)domain_of(recipient);
}

static void complaint(inb_msg *m, const inb_report *r, const char *tenant, const char *job_id,
                      const char *recipient)
{
    if (strcmp(r->feedback_type, "abuse") != 0) {
        ignored("not-abuse");
        return;
    }
    if (!*recipient) {
        ignored("unmapped");
        return;
    }
    sl_event e;
    event_init(&e, SLUICE__V1__EVENT_TYPE__EVENT_COMPLAINED, tenant, job_id, recipient);
    char *reason = xasprintf("feedback-loop report (ARF, %s)",
                             *r->user_agent ? r->user_agent : "no User-Agent");
    e.reason = reason;
    e.source_ip = r->source_ip;
    publish(m, &e);
    free(reason);
}

/* A bounce to bounce+TOKEN: the token says whose. */
static void bounce(inb_msg *m, const inb_report *r, const sl_verp_token *t)
{
    if (r->kind == INB_REPORT_ARF) {
        complaint(m, r, t->tenant, t->job_id, t->recipient);
        return;
    }
    if (r->kind == INB_REPORT_OTHER || !r->n_rcpts) {
        ignored("not-a-bounce"); /* an auto-reply, a challenge, a human */
        return;
    }
    const inb_dsn_rcpt *pick = NULL;
    for (size_t i = 0; i < r->n_rcpts && !pick; i++)
        if (!strcasecmp(r->rcpts[i].final_recipient, t->recipient) ||
            !strcasecmp(r->rcpts[i].original_recipient, t->recipient))
            pick = &r->rcpts[i];
    if (!pick)
        pick = &r->rcpts[0];
    if (strcmp(pick->action, "failed") != 0) {
        /* "delayed": the receiving side still tries, and the sender's own
         * events already said DELIVERED; a later "failed" DSN decides. */
        ignored(!strcmp(pick->action, "delayed") ? "delayed" : "not-failed");
        return;
    }
    sl_reply rep = {0};
    inb_report_reply(pick, &rep);
    bool hard = false;
    int rule = -1;
    Sluice__V1__BounceClass cls = sl_trouble_classify(m->srv->o.trouble, &rep, &hard, &rule);
    if (rep.code < 500)
        hard = false;
    sl_event e;
    event_init(&e, SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED, t->tenant, t->job_id, t->recipient);
    e.smtp_code = (uint32_t)rep.code;
    e.enhanced_code = rep.enh;
    e.reply = rep.raw ? rep.raw : rep.text;
    e.bounce_class = cls;
    e.bounce_hard = hard;
    e.mx_host = pick->remote_mta;
    char *reason = xasprintf("asynchronous bounce (%s)", inb_report_kind_name(r->kind));
    e.reason = reason;
    publish(m, &e);
    free(reason);
    sl_reply_free(&rep);
}

/* The VERP token in a quoted return path, if it is one of ours. */
static bool return_path_token(const inb_server *srv, const char *addr, sl_buf *store,
                              sl_verp_token *t)
{
    const char *tok;
    size_t tlen;
    if (!*addr || rcpt_classify(srv->o.cfg, addr, &tok, &tlen) != RCPT_BOUNCE)
        return false;
    return sl_verp_token_open(srv->o.key, tok, tlen, store, t) == 0;
}

/* A report to an FBL mailbox: mapped by the return path or Message-ID. */
static void fbl_report(inb_msg *m, const inb_report *r)
{
    if (r->kind != INB_REPORT_ARF) {
        ignored("not-a-report");
        return;
    }
    sl_buf store = SL_BUF_INIT;
    sl_verp_token t;
    if (return_path_token(m->srv, r->original_mail_from, &store, &t) ||
        return_path_token(m->srv, r->orig_return_path, &store, &t)) {
        complaint(m, r, t.tenant, t.job_id, t.recipient);
        sl_buf_free(&store);
        return;
    }
    sl_buf_free(&store);
    /* Without a token: the job id from the Message-ID sluice wrote
     * (<job id@domain>), the recipient from the report; the tenant is not
     * known, so the scheduler's default tenant is used. */
    char *jid = xstrdup(r->orig_message_id);
    char *at = strrchr(jid, '@');
    if (at)
        *at = 0;
    if (!at || sl_job_id_check(jid) != NULL)
        jid[0] = 0;
    const char *rcpt = *r->original_rcpt_to ? r->original_rcpt_to : r->orig_to;
    if (!*jid && !*rcpt) {
        ignored("unmapped");
    } else {
        complaint(m, r, "", jid, rcpt);
    }
    free(jid);
}

static void on_data(void *arg, smtpd_session *s, const char *msg, size_t len)
{
    inb_server *srv = arg;
    const smtpd_envelope *env = smtpd_session_envelope(s);
    inb_report r;
    inb_report_parse(msg, len, &r);
    char l[64];
    snprintf(l, sizeof l, "kind=\"%s\"", inb_report_kind_name(r.kind));
    sl_metric_inc("sluice_inbound_messages_total", l, 1);

    inb_msg *m = xcalloc(1, sizeof *m);
    m->srv = srv;
    m->sess = s;
    for (size_t i = 0; i < env->nrcpt; i++) {
        const char *tok;
        size_t tlen;
        sl_buf store = SL_BUF_INIT;
        switch (rcpt_classify(srv->o.cfg, env->rcpt[i], &tok, &tlen)) {
        case RCPT_BOUNCE: {
            sl_verp_token t;
            if (sl_verp_token_open(srv->o.key, tok, tlen, &store, &t) != 0)
                forged(srv, "bounce", env);
            else
                bounce(m, &r, &t);
            break;
        }
        case RCPT_UNSUB: {
            sl_unsub_token t;
            if (sl_unsub_token_open(srv->o.key, tok, tlen, &store, &t) != 0) {
                forged(srv, "mailto unsubscribe", env);
                break;
            }
            sl_event e;
            event_init(&e, SLUICE__V1__EVENT_TYPE__EVENT_UNSUBSCRIBED, t.tenant, t.job_id,
                       t.recipient);
            e.campaign = (char *)t.campaign;
            Sluice__V1__Event__MetaEntry me = SLUICE__V1__EVENT__META_ENTRY__INIT, *mp = &me;
            if (*t.list) {
                me.key = "list";
                me.value = (char *)t.list;
                e.meta = &mp;
                e.n_meta = 1;
            }
            e.reason = "mailto unsubscribe (List-Unsubscribe)";
            publish(m, &e);
            break;
        }
        case RCPT_FBL:
            fbl_report(m, &r);
            break;
        default:
            break; /* refused at RCPT */
        }
        sl_buf_free(&store);
    }
    inb_report_free(&r);
    m->sealed = true;
    msg_maybe_done(m);
}

/* ---- life cycle ---- */

static void flush_cb(uv_timer_t *t)
{
    (void)t;
    sl_log_every_flush();
}

inb_server *inb_server_new(uv_loop_t *loop, const inb_opts *o, char **err)
{
    inb_server *srv = xcalloc(1, sizeof *srv);
    srv->o = *o;
    srv->loop = loop;
    srv->prod = sl_producer_new(o->cfg, loop, err);
    if (!srv->prod) {
        free(srv);
        return NULL;
    }
    smtpd_config sc = {
        .hostname = o->hostname,
        .max_message_size = (size_t)o->cfg->inbound.max_message_size,
        .max_rcpt = 50,
    };
    smtpd_hooks h = {.arg = srv, .on_rcpt = on_rcpt, .on_data = on_data};
    srv->smtpd = smtpd_server_new(loop, &sc, &h);
    uv_timer_init(loop, &srv->flush_timer);
    uv_timer_start(&srv->flush_timer, flush_cb, 10000, 10000);
    sl_metric_help("sluice_inbound_messages_total", SL_METRIC_COUNTER,
                   "Mails sluice-inbound accepted, by what they are (dsn, arf, plain, other)");
    sl_metric_help("sluice_inbound_events_total", SL_METRIC_COUNTER,
                   "Events sluice-inbound published, by type");
    sl_metric_help("sluice_inbound_forged_total", SL_METRIC_COUNTER,
                   "Recipients whose VERP or unsubscribe token did not open: ignored");
    sl_metric_help("sluice_inbound_ignored_total", SL_METRIC_COUNTER,
                   "Accepted mails that published nothing, by reason");
    sl_metric_help("sluice_inbound_rcpt_refused_total", SL_METRIC_COUNTER,
                   "RCPT TO refused: relay (a foreign domain) or unknown (no such mailbox)");
    sl_metric_inc("sluice_inbound_forged_total", NULL, 0);
    return srv;
}

int inb_server_listen(inb_server *srv, const char *hostport, int *bound_port)
{
    return smtpd_server_listen(srv->smtpd, hostport, SMTPD_PLAIN, bound_port);
}

static void smtpd_closed_cb(smtpd_server *s, void *arg)
{
    (void)s;
    inb_server *srv = arg;
    if (sl_producer_flush(srv->prod, 10000) != 0)
        sl_warn("inbound: %zu events still unacknowledged at exit",
                sl_producer_outstanding(srv->prod));
    sl_log_every_flush();
    uv_close((uv_handle_t *)&srv->flush_timer, NULL);
    /* Its poll handle is what keeps the loop running: close it now. */
    sl_producer_free(srv->prod);
    srv->prod = NULL;
    if (srv->close_cb)
        srv->close_cb(srv, srv->close_arg);
}

void inb_server_close(inb_server *srv, void (*cb)(inb_server *, void *), void *arg)
{
    if (srv->closing)
        return;
    srv->closing = true;
    srv->close_cb = cb;
    srv->close_arg = arg;
    smtpd_server_close(srv->smtpd, smtpd_closed_cb, srv);
}

void inb_server_free(inb_server *srv)
{
    if (!srv)
        return;
    smtpd_server_free(srv->smtpd);
    if (srv->prod)
        sl_producer_free(srv->prod);
    free(srv);
}

void inb_server_stats(const inb_server *srv, inb_stats *out)
{
    *out = srv->st;
}
