/*
 * cli_send - `sluice send`: publish one message through libsluice.
 *
 *   sluice send [-c FILE] --from A --to B[,C] [--to D] --subject S
 *               (--body-file F | --raw-file F | --template ID [--var K=V]...)
 *               [--header-from "Name <a@b>"] [--tenant T] [--campaign C]
 *               [--pool P] [--priority transactional|normal|bulk (default normal)]
 *               [--meta K=V]... [--expire DURATION] [--timeout DURATION]
 *               [--transactional] [--json]
 *
 * --transactional marks the jobs transactional: the sender adds no
 * List-Unsubscribe fields (docs/configuration.md, unsubscribe).
 * --body-file builds a text/plain message (From, To, Subject, Date, MIME
 * headers; sl_msg_build_simple()); --raw-file sends a complete RFC 5322
 * message as it is, bare LF line ends made CRLF. F may be "-" for stdin.
 *
 * It prints one line per job only once Kafka has acknowledged that job:
 * "JOBID accepted DOMAIN RCPT[,RCPT...]" (or a JSON object per job with
 * --json), and "JOBID failed DOMAIN: reason" for a job Kafka refused or did
 * not confirm within --timeout (default 60s). A --template is fetched
 * first: not stored, or a variable missing, exits 2 before publishing;
 * `email` is each recipient's address (one job each) unless --var sets it. Exit status: 0 when every job
 * was acknowledged, 1 otherwise, 2 on bad usage, configuration, addresses
 * or content (with the reason on stderr; nothing is published then).
 */
#include "publish.h"
#include "sluice.h"
#include "config.h"
#include "template.h"
#include "libsluice_int.h"
#include "wire.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEND_MAX_FILE (64u * 1024 * 1024)

typedef struct send_state {
    bool json;
    size_t acked, failed;
} send_state;

static void send_usage(FILE *f)
{
    fputs("usage: sluice send [-c FILE] --from ADDRESS --to ADDRESS[,ADDRESS...]\n"
          "                   (--subject TEXT --body-file FILE | --raw-file FILE\n"
          "                    | --template ID [--var K=V]...)\n"
          "                   [--header-from \"Name <address>\"] [--tenant T] [--campaign C]\n"
          "                   [--pool P] [--priority transactional|normal|bulk] [--meta K=V]...\n"
          "                   [--expire DURATION] [--timeout DURATION] [--transactional]\n"
          "                   [--json]\n"
          "Prints each job id once Kafka acknowledged it. FILE may be - for stdin.\n",
          f);
}

/* Bare LF and bare CR become CRLF. */
static void send_crlf(const sl_buf *in, sl_buf *out)
{
    for (size_t i = 0; i < in->len; i++) {
        char ch = in->data[i];
        if (ch == '\r') {
            sl_buf_puts(out, "\r\n");
            if (i + 1 < in->len && in->data[i + 1] == '\n')
                i++;
        } else if (ch == '\n') {
            sl_buf_puts(out, "\r\n");
        } else {
            sl_buf_putc(out, ch);
        }
    }
}

/* "K=V" into a kv whose strings point into s (modified). */
static int send_kv(char *s, sluice_kv *kv)
{
    char *eq = strchr(s, '=');
    if (!eq || eq == s)
        return SL_EINVAL;
    *eq = 0;
    kv->key = s;
    kv->value = eq + 1;
    return 0;
}

static void send_result(void *arg, const sluice_job_result *r)
{
    send_state *st = arg;
    if (r->err == 0)
        st->acked++;
    else
        st->failed++;
    if (st->json) {
        sl_buf b = SL_BUF_INIT;
        sl_buf_puts(&b, "{\"job_id\":");
        sl_buf_json_str(&b, r->job_id, strlen(r->job_id));
        sl_buf_printf(&b, ",\"status\":\"%s\",\"domain\":", r->err ? "failed" : "accepted");
        sl_buf_json_str(&b, r->domain, strlen(r->domain));
        sl_buf_puts(&b, ",\"recipients\":[");
        for (size_t i = 0; i < r->n_recipients; i++) {
            if (i)
                sl_buf_putc(&b, ',');
            sl_buf_json_str(&b, r->recipients[i], strlen(r->recipients[i]));
        }
        sl_buf_putc(&b, ']');
        if (r->err) {
            sl_buf_puts(&b, ",\"error\":");
            const char *e = sluice_strerror(r->err);
            sl_buf_json_str(&b, e, strlen(e));
        }
        sl_buf_puts(&b, "}\n");
        fputs(b.data, stdout);
        sl_buf_free(&b);
    } else if (r->err == 0) {
        printf("%s accepted %s ", r->job_id, r->domain);
        for (size_t i = 0; i < r->n_recipients; i++)
            printf("%s%s", i ? "," : "", r->recipients[i]);
        putchar('\n');
    } else {
        printf("%s failed %s: %s\n", r->job_id, r->domain, sluice_strerror(r->err));
    }
    fflush(stdout);
}

/* Split "a,b, c" into the list (strings point into s). */
static void send_split(char *s, char ***list, size_t *n, size_t *cap)
{
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t l = strlen(tok);
        while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
            tok[--l] = 0;
        if (!l)
            continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 8;
            *list = xrealloc(*list, *cap * sizeof **list);
        }
        (*list)[(*n)++] = tok;
    }
}

int cli_send(int argc, char **argv)
{
    enum {
        O_FROM = 256,
        O_TO,
        O_SUBJECT,
        O_BODY,
        O_RAW,
        O_TEMPLATE,
        O_VAR,
        O_HFROM,
        O_TENANT,
        O_CAMPAIGN,
        O_POOL,
        O_PRIORITY,
        O_META,
        O_EXPIRE,
        O_TIMEOUT,
        O_JSON,
        O_TRANSACTIONAL
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"from", required_argument, NULL, O_FROM},
        {"to", required_argument, NULL, O_TO},
        {"subject", required_argument, NULL, O_SUBJECT},
        {"body-file", required_argument, NULL, O_BODY},
        {"raw-file", required_argument, NULL, O_RAW},
        {"template", required_argument, NULL, O_TEMPLATE},
        {"var", required_argument, NULL, O_VAR},
        {"header-from", required_argument, NULL, O_HFROM},
        {"tenant", required_argument, NULL, O_TENANT},
        {"campaign", required_argument, NULL, O_CAMPAIGN},
        {"pool", required_argument, NULL, O_POOL},
        {"priority", required_argument, NULL, O_PRIORITY},
        {"meta", required_argument, NULL, O_META},
        {"expire", required_argument, NULL, O_EXPIRE},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"json", no_argument, NULL, O_JSON},
        {"transactional", no_argument, NULL, O_TRANSACTIONAL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("SLUICE_CONFIG");
    const char *body_file = NULL, *raw_file = NULL, *subject = NULL, *hfrom = NULL;
    sluice_message m = SLUICE_MESSAGE_INIT;
    char **to = NULL;
    size_t n_to = 0, cap_to = 0;
    sluice_kv *vars = NULL, *meta = NULL;
    size_t n_vars = 0, n_meta = 0;
    int64_t expire_ms = 0, timeout_ms = 60000;
    send_state st = {0};
    int rc = 2, o, ostatus = -1;
    sl_buf raw = SL_BUF_INIT, msg = SL_BUF_INIT;
    sluice_client *c = NULL;
    sl_config *cfg = NULL;
    sl_template_msg *tmpl = NULL;
    char *err = NULL;

    /* One message sent by hand is a notification, not a campaign. */
    m.priority = SLUICE_PRIORITY_NORMAL;
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &path, send_usage, &ostatus)) != -1) {
        switch (o) {
        case O_FROM:
            m.from = optarg;
            break;
        case O_TO:
            send_split(optarg, &to, &n_to, &cap_to);
            break;
        case O_SUBJECT:
            subject = optarg;
            break;
        case O_BODY:
            body_file = optarg;
            break;
        case O_RAW:
            raw_file = optarg;
            break;
        case O_TEMPLATE:
            m.template_id = optarg;
            break;
        case O_HFROM:
            hfrom = optarg;
            break;
        case O_TENANT:
            m.tenant = optarg;
            break;
        case O_CAMPAIGN:
            m.campaign = optarg;
            break;
        case O_POOL:
            m.pool = optarg;
            break;
        case O_JSON:
            st.json = true;
            break;
        case O_TRANSACTIONAL:
            m.transactional = 1;
            break;
        case O_VAR:
        case O_META: {
            sluice_kv **arr = o == O_VAR ? &vars : &meta;
            size_t *n = o == O_VAR ? &n_vars : &n_meta;
            *arr = xrealloc(*arr, (*n + 1) * sizeof **arr);
            if (send_kv(optarg, &(*arr)[*n]) != 0) {
                fprintf(stderr, "sluice send: --%s wants KEY=VALUE, not '%s'\n",
                        o == O_VAR ? "var" : "meta", optarg);
                goto out;
            }
            (*n)++;
            break;
        }
        case O_PRIORITY:
            if (sluice__priority_parse(optarg, &m.priority) != 0) {
                fprintf(stderr,
                        "sluice send: --priority: '%s' is not transactional, normal or bulk\n",
                        optarg);
                goto out;
            }
            break;
        case O_EXPIRE:
        case O_TIMEOUT: {
            int64_t v;
            if (sl_parse_duration_ms(optarg, &v) != 0 || v <= 0) {
                fprintf(stderr, "sluice send: --%s: '%s' is not a duration (30s, 5m, 2h)\n",
                        o == O_EXPIRE ? "expire" : "timeout", optarg);
                goto out;
            }
            *(o == O_EXPIRE ? &expire_ms : &timeout_ms) = v;
            break;
        }
        }
    }
    if (ostatus >= 0) {
        rc = ostatus;
        goto out;
    }
    if (optind != argc) {
        fprintf(stderr, "sluice send: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    if (!m.from || !n_to) {
        fprintf(stderr, "sluice send: --from and --to are required\n");
        send_usage(stderr);
        goto out;
    }
    int ncontent = !!body_file + !!raw_file + !!m.template_id;
    if (ncontent != 1) {
        fprintf(stderr, "sluice send: give exactly one of --body-file, --raw-file, --template\n");
        goto out;
    }
    if (body_file && !subject) {
        fprintf(stderr, "sluice send: --subject is required with --body-file\n");
        goto out;
    }
    if ((raw_file || m.template_id) && (subject || hfrom)) {
        fprintf(stderr, "sluice send: --subject and --header-from only go with --body-file\n");
        goto out;
    }
    if (n_vars && !m.template_id) {
        fprintf(stderr, "sluice send: --var only goes with --template\n");
        goto out;
    }

    if (body_file || raw_file) {
        const char *f = body_file ? body_file : raw_file;
        int frc = cli_read_file(f, SEND_MAX_FILE, &raw);
        if (frc) {
            fprintf(stderr, "sluice send: %s: %s\n", f,
                    frc == SL_ETOOBIG ? "file too large" : strerror(-frc));
            goto out;
        }
        if (body_file) {
            if (sl_msg_build_simple(hfrom ? hfrom : m.from, (const char *const *)to, n_to, subject,
                                    raw.data ? raw.data : "", raw.len, &msg, &err) != 0) {
                fprintf(stderr, "sluice send: %s\n", err ? err : "cannot build the message");
                goto out;
            }
        } else {
            send_crlf(&raw, &msg);
        }
        m.raw = msg.data ? msg.data : "";
        m.raw_len = msg.len;
    }
    m.to = (const char *const *)to;
    m.n_to = n_to;
    m.vars = vars;
    m.n_vars = n_vars;
    m.meta = meta;
    m.n_meta = n_meta;
    if (expire_ms)
        m.expires_at_ms = sl_now_ms() + expire_ms;

    int orc = cli_open("send", path, timeout_ms, &cfg);
    if (orc) {
        rc = orc;
        goto out;
    }
    /* A template is checked before anything is published: it must be
     * stored and every variable it uses given, except `email`, which is
     * each recipient's own address unless --var sets it (as in bulk). */
    bool per_rcpt = false;
    if (m.template_id) {
        int trc = sluice__template_fetch(cfg, m.template_id, &tmpl, &err);
        if (trc == SL_ENOTFOUND) {
            fprintf(stderr, "sluice send: template '%s' is not stored (sluice template put %s FILE)\n",
                    m.template_id, m.template_id);
            goto out;
        }
        if (trc) {
            fprintf(stderr, "sluice send: fetching template '%s': %s\n", m.template_id,
                    err ? err : sl_strerror(trc));
            rc = 1;
            goto out;
        }
        for (size_t v = 0; v < tmpl->n_variables; v++) {
            bool given = false;
            for (size_t i = 0; i < n_vars && !given; i++)
                given = !strcmp(vars[i].key, tmpl->variables[v]);
            if (given)
                continue;
            if (!strcmp(tmpl->variables[v], "email")) {
                per_rcpt = true;
                continue;
            }
            fprintf(stderr, "sluice send: template '%s' needs variable '%s': --var %s=VALUE\n",
                    m.template_id, tmpl->variables[v], tmpl->variables[v]);
            goto out;
        }
    }
    if (per_rcpt) {
        /* All or nothing: every address is checked before the first job. */
        char norm[SLUICE_ADDRESS_MAX + 1], why[200];
        for (size_t i = 0; i < n_to; i++)
            if (sluice_address_normalize(to[i], norm, why, sizeof why) != 0) {
                fprintf(stderr, "sluice send: recipient %zu \"%s\": %s\n", i + 1, to[i], why);
                goto out;
            }
    }
    c = sluice_client_new_from_config(cfg, &err);
    if (!c) {
        fprintf(stderr, "sluice send: %s\n", err ? err : "cannot create the client");
        goto out;
    }
    if (per_rcpt) {
        vars = xrealloc(vars, (n_vars + 1) * sizeof *vars);
        vars[n_vars].key = "email";
        m.vars = vars;
        m.n_vars = n_vars + 1;
        m.n_to = 1;
    }
    for (size_t i = 0; i < (per_rcpt ? n_to : 1); i++) {
        if (per_rcpt) {
            vars[n_vars].value = to[i];
            m.to = (const char *const *)&to[i];
        }
        int src = sluice_send(c, &m, send_result, &st);
        if (src < 0) {
            fprintf(stderr, "sluice send: %s: %s\n", sluice_strerror(src), sluice_errmsg(c));
            goto out;
        }
    }
    if (sluice_flush(c, (int)timeout_ms) != 0) {
        fprintf(stderr,
                "sluice send: %zu job(s) not acknowledged by Kafka within %lld ms; they may "
                "still be published\n",
                sluice_outstanding(c), (long long)timeout_ms);
        rc = 1;
        goto out;
    }
    rc = st.failed || !st.acked ? 1 : 0;
out:
    sluice_client_free(c);
    if (tmpl)
        sl_template_free(tmpl);
    sl_config_free(cfg);
    free(err);
    free(to);
    free(vars);
    free(meta);
    sl_buf_free(&raw);
    sl_buf_free(&msg);
    return rc;
}
