/*
 * api_unsub - one-click unsubscribe (RFC 8058) in sluice-api: the
 * unauthenticated routes /u/TOKEN that the List-Unsubscribe links of bulk
 * mail point at (sender/message.c writes them, docs/api.md).
 *
 * The token (common/token.h) is the only credential: HMAC-signed by the
 * sender with tokens.secret_file, it names the tenant, recipient,
 * campaign, list and job. A token that does not open is 404 and nothing is
 * published. A valid POST whose body says List-Unsubscribe=One-Click
 * publishes one UNSUBSCRIBED event to the events topic (keyed by job id)
 * and answers 200 only once Kafka has acknowledged it (503 with
 * Retry-After when it does not in api.ack_timeout); the scheduler's
 * feedback stage then suppresses the recipient for the tenant. A GET
 * never unsubscribes (link scanners and prefetchers follow GETs): it shows
 * a page whose button POSTs the same body. No cookies, no redirects.
 *
 * Connection threads; the key is read-only once loaded.
 */
#include "api.h"
#include "log.h"
#include "metrics.h"
#include "token.h"
#include "wire.h"

#include <string.h>

static void html(api_reply *r, int status, const char *title, const char *body)
{
    r->status = status;
    free(r->html);
    r->html = xasprintf("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                        "<meta name=\"robots\" content=\"noindex\">"
                        "<title>%s</title></head>\n<body>\n<h1>%s</h1>\n%s</body></html>\n",
                        title, title, body);
}

/* RFC 8058 3.2: the body is List-Unsubscribe=One-Click, sent as
 * application/x-www-form-urlencoded or multipart/form-data. */
static bool one_click(const char *body)
{
    if (strstr(body, "List-Unsubscribe=One-Click"))
        return true;
    const char *n = strstr(body, "name=\"List-Unsubscribe\"");
    return n && strstr(n, "One-Click");
}

void api_unsub(api_ctx *a, const char *method, const char *token, const char *body,
               api_reply *r)
{
    bool post = !strcmp(method, "POST");
    if (!post && strcmp(method, "GET")) {
        r->allow = "GET, POST";
        html(r, 405, "Method not allowed", "<p>Use the link or the button.</p>\n");
        return;
    }
    sl_buf store = SL_BUF_INIT;
    sl_unsub_token t;
    if (!a->unsub_key || sl_unsub_token_open(a->unsub_key, token, strlen(token), &store, &t) < 0 ||
        !*t.recipient) {
        sl_buf_free(&store);
        sl_metric_inc("sluice_api_unsubscribes_total", "result=\"bad-token\"", 1);
        html(r, 404, "Link not valid",
             "<p>This unsubscribe link is not valid. Please use the link from the message "
             "itself.</p>\n");
        return;
    }
    if (!post) {
        sl_buf_free(&store);
        html(r, 200, "Unsubscribe",
             "<p>Stop receiving these messages?</p>\n"
             "<form method=\"post\">"
             "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
             "<button type=\"submit\">Unsubscribe</button></form>\n");
        return;
    }
    if (!one_click(body)) {
        sl_buf_free(&store);
        html(r, 400, "Bad request",
             "<p>The request body must be List-Unsubscribe=One-Click (RFC 8058).</p>\n");
        return;
    }
    sl_event e;
    sl_event_from_job(&e, SLUICE__V1__EVENT_TYPE__EVENT_UNSUBSCRIBED, NULL, "api");
    e.tenant = (char *)t.tenant;
    e.recipient = (char *)t.recipient;
    e.campaign = (char *)t.campaign;
    e.job_id = (char *)t.job_id;
    const char *at = strrchr(t.recipient, '@');
    e.domain = (char *)(at ? at + 1 : "");
    e.reason = (char *)"one-click unsubscribe (RFC 8058)";
    Sluice__V1__Event__MetaEntry list = SLUICE__V1__EVENT__META_ENTRY__INIT;
    Sluice__V1__Event__MetaEntry *meta[1] = {&list};
    if (*t.list) {
        list.key = (char *)"list";
        list.value = (char *)t.list;
        e.n_meta = 1;
        e.meta = meta;
    }
    sl_buf val = SL_BUF_INIT;
    sl_pack(&e.base, &val);
    int rc = api_publish(a, "events", t.job_id, &val);
    sl_buf_free(&val);
    if (rc < 0) {
        sl_warn("api: unsubscribe of %s (tenant %s) not published: %s; answered 503",
                t.recipient, t.tenant, sl_strerror(rc));
        sl_buf_free(&store);
        r->retry_after = 5;
        html(r, 503, "Please try again", "<p>The request could not be recorded. Please try "
                                         "again in a moment.</p>\n");
        return;
    }
    sl_log_job(SL_LOG_INFO, t.job_id, "one-click unsubscribe of %s for tenant %s%s%s",
               t.recipient, t.tenant, *t.list ? ", list " : "", t.list);
    sl_metric_inc("sluice_api_unsubscribes_total", "result=\"published\"", 1);
    sl_buf_free(&store);
    html(r, 200, "Unsubscribed", "<p>You will not receive these messages any more.</p>\n");
}
