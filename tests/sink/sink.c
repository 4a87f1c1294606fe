/*
 * sluice-testsink - the recording SMTP sink that integration, fault and
 * benchmark runs deliver to. See tests/sink/README.md for the options and
 * the fault rules.
 *
 * Built on common/smtp_server: the engine does the protocol, this file
 * decides per recipient (fault rules), records accepted messages (one
 * file each, one JSON log line each) and counts. It is also a benchmark
 * sink, so it never fsyncs and writes through stdio buffers; the log is
 * flushed once per message so tests can tail it. (Writing files from the
 * loop thread blocks it briefly; acceptable for a test tool.)
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "cmdline.h"
#include "log.h"
#include "smtp_server.h"
#include "tls.h"
#include "util.h"

typedef enum { ACT_NONE, ACT_DISCONNECT, ACT_NOANSWER, ACT_DATAFAIL, ACT_REPLY } data_action;

/* A rules-file line: GLOB STAGE CODE TEXT... */
typedef struct rule {
    char *glob;
    bool at_data; /* stage "data" rather than "rcpt" */
    int code;     /* 0 with an action word */
    data_action action;
    uint64_t slow_ms;
    char *text;
    struct rule *next;
} rule;

/* A (sender, recipient) pair seen by --greylist. */
typedef struct grey {
    char *pair;
    struct grey *next;
} grey;

typedef struct sink {
    uv_loop_t *loop;
    bool greylist;      /* 450 4.7.1 to the first RCPT of each (sender, rcpt) */
    grey *grey_seen;
    smtpd_server *srv;
    const char *dir;
    FILE *log;
    FILE *conn_log; /* --conn-log: a line per connection opened and closed */
    rule *rules;
    int greeting;
    uint64_t seq;
    uint64_t accepted_bytes;
    uv_signal_t sigterm, sigint, sigusr1;
} sink;

typedef struct sink_sess {
    uint64_t slow_ms;   /* delay for this transaction's replies */
    data_action action; /* what to do at the end of DATA */
    int code;           /* ACT_REPLY */
    char *text;
    bool noanswer_pending;
} sink_sess;

static void trx_clear(sink_sess *ss)
{
    ss->slow_ms = 0;
    ss->action = ACT_NONE;
    ss->code = 0;
    free(ss->text);
    ss->text = NULL;
}

/* One --conn-log line, flushed: what happened to the connection, when
 * (CLOCK_MONOTONIC, comparable between the sinks of one machine) and
 * between which addresses. */
static void conn_log(sink *k, smtpd_session *s, const char *what)
{
    if (!k->conn_log)
        return;
    const smtpd_envelope *e = smtpd_session_envelope(s);
    fprintf(k->conn_log,
            "{\"ev\":\"%s\",\"t_us\":%" PRIu64 ",\"peer\":\"%s\",\"local\":\"%s\"}\n", what,
            uv_hrtime() / 1000, e->peer ? e->peer : "", e->local ? e->local : "");
    fflush(k->conn_log);
}

static void on_connect(void *arg, smtpd_session *s)
{
    sink *k = arg;
    smtpd_session_set_data(s, xcalloc(1, sizeof(sink_sess)));
    conn_log(k, s, "open");
    if (k->greeting == 421)
        smtpd_reply(s, 421, "4.7.0 Service not available, closing channel");
    else if (k->greeting >= 500)
        smtpd_reply(s, k->greeting, "5.7.1 No SMTP service here");
    else if (k->greeting >= 400)
        smtpd_reply(s, k->greeting, "4.3.2 Service not available");
    else
        smtpd_reply(s, 220, "2.0.0 ready");
}

/* Logged before the 221 goes out, so before the client can have closed
 * and connected again: the end of the connection as the client's
 * connection count sees it, whenever this process gets to read its close. */
static void on_quit(void *arg, smtpd_session *s)
{
    if (smtpd_session_data(s))
        conn_log(arg, s, "quit");
}

static void on_close(void *arg, smtpd_session *s)
{
    sink_sess *ss = smtpd_session_data(s);
    if (!ss)
        return;
    conn_log(arg, s, "close");
    smtpd_session_set_data(s, NULL);
    bool pending = ss->noanswer_pending;
    trx_clear(ss);
    free(ss);
    if (pending) /* the engine still waits for our answer; give it */
        smtpd_reply(s, 451, "4.3.0 never answered");
}

static void on_mail(void *arg, smtpd_session *s, const char *from)
{
    trx_clear(smtpd_session_data(s));
    smtpd_reply(s, 250, "2.1.0 Ok");
}

static bool prefix(const char *local, size_t n, const char *p)
{
    size_t pl = strlen(p);
    return n >= pl && strncasecmp(local, p, pl) == 0;
}

/* True the first time the (sender, recipient) pair is seen: like a
 * greylisting receiver, which refuses a new triplet for a while. */
static bool grey_first(sink *k, smtpd_session *s, const char *rcpt)
{
    const smtpd_envelope *e = smtpd_session_envelope(s);
    char *pair = xasprintf("%s %s", e->from ? e->from : "", rcpt);
    for (grey *g = k->grey_seen; g; g = g->next)
        if (!strcasecmp(g->pair, pair)) {
            free(pair);
            return false;
        }
    grey *g = xcalloc(1, sizeof *g);
    g->pair = pair;
    g->next = k->grey_seen;
    k->grey_seen = g;
    return true;
}

static void on_rcpt(void *arg, smtpd_session *s, const char *rcpt)
{
    sink *k = arg;
    sink_sess *ss = smtpd_session_data(s);
    if (k->greylist && grey_first(k, s, rcpt)) {
        smtpd_reply_after(s, ss->slow_ms, 450, "4.7.1 greylisted, try again later");
        return;
    }
    for (rule *r = k->rules; r; r = r->next) {
        if (!sl_glob_match(r->glob, rcpt))
            continue;
        if (r->slow_ms)
            ss->slow_ms = r->slow_ms;
        if (r->at_data) {
            ss->action = r->action;
            ss->code = r->code;
            free(ss->text);
            ss->text = r->text ? xstrdup(r->text) : NULL;
            break;
        }
        if (r->code) {
            smtpd_reply_after(s, ss->slow_ms, r->code, r->text);
            return;
        }
        break;
    }
    const char *at = strrchr(rcpt, '@');
    size_t n = at ? (size_t)(at - rcpt) : strlen(rcpt);
    if (prefix(rcpt, n, "tempfail")) {
        smtpd_reply_after(s, ss->slow_ms, 451, "4.3.0 Temporary failure, try again later");
    } else if (prefix(rcpt, n, "permfail")) {
        smtpd_reply_after(s, ss->slow_ms, 550, "5.1.1 No such user");
    } else if (prefix(rcpt, n, "421")) {
        smtpd_reply_after(s, ss->slow_ms, 421, "4.7.0 Too many messages, closing connection");
    } else {
        if (prefix(rcpt, n, "slow")) {
            uint64_t ms = strtoull(rcpt + 4, NULL, 10);
            if (ms > ss->slow_ms)
                ss->slow_ms = ms;
        } else if (prefix(rcpt, n, "disconnect")) {
            ss->action = ACT_DISCONNECT;
        } else if (prefix(rcpt, n, "noanswer")) {
            ss->action = ACT_NOANSWER;
        } else if (prefix(rcpt, n, "datafail")) {
            ss->action = ACT_DATAFAIL;
        }
        smtpd_reply_after(s, ss->slow_ms, 250, "2.1.5 Ok");
    }
}

/* The Message-ID header's value, trimmed, or "" (first 64 KiB of head). */
static void find_message_id(const char *msg, size_t len, char *out, size_t outlen)
{
    out[0] = 0;
    size_t lim = len < 65536 ? len : 65536;
    size_t i = 0;
    while (i < lim) {
        size_t eol = i;
        while (eol < lim && msg[eol] != '\n')
            eol++;
        size_t l = eol - i;
        if (l == 0 || (l == 1 && msg[i] == '\r'))
            return; /* end of header */
        if (l > 11 && strncasecmp(msg + i, "message-id:", 11) == 0) {
            size_t a = i + 11, b = eol;
            /* A folded value continues on lines starting with white space. */
            while (b + 1 < lim && (msg[b + 1] == ' ' || msg[b + 1] == '\t')) {
                b++;
                while (b < lim && msg[b] != '\n')
                    b++;
            }
            size_t o = 0;
            for (size_t j = a; j < b && o + 1 < outlen; j++)
                if (!isspace((unsigned char)msg[j]))
                    out[o++] = msg[j];
            out[o] = 0;
            return;
        }
        i = eol + 1;
    }
}

static void record(sink *k, smtpd_session *s, const char *msg, size_t len, uint64_t n)
{
    const smtpd_envelope *e = smtpd_session_envelope(s);
    sl_buf env = SL_BUF_INIT;
    sl_buf_puts(&env, "{\"from\":");
    sl_buf_json_str(&env, e->from, strlen(e->from));
    sl_buf_puts(&env, ",\"rcpt\":[");
    for (size_t i = 0; i < e->nrcpt; i++) {
        if (i)
            sl_buf_putc(&env, ',');
        sl_buf_json_str(&env, e->rcpt[i], strlen(e->rcpt[i]));
    }
    sl_buf_putc(&env, ']');
    if (k->dir) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%08" PRIu64 ".eml", k->dir, n);
        FILE *f = fopen(path, "w");
        if (!f) {
            sl_error("sink: %s: %s", path, strerror(errno));
        } else {
            fprintf(f, "X-Sink-Envelope: %s}\r\n", env.data);
            fwrite(msg, 1, len, f);
            if (fclose(f) != 0)
                sl_error("sink: %s: %s", path, strerror(errno));
        }
    }
    if (k->log) {
        char mid[1000];
        find_message_id(msg, len, mid, sizeof(mid));
        sl_buf_puts(&env, ",\"message_id\":");
        sl_buf_json_str(&env, mid, strlen(mid));
        sl_buf_printf(&env, ",\"size\":%zu,\"tls\":%s,\"tls_version\":", len,
                      e->tls ? "true" : "false");
        sl_buf_json_str(&env, e->tls_version, strlen(e->tls_version));
        sl_buf_puts(&env, ",\"helo\":");
        sl_buf_json_str(&env, e->helo ? e->helo : "", e->helo ? strlen(e->helo) : 0);
        sl_buf_puts(&env, ",\"peer\":");
        sl_buf_json_str(&env, e->peer, strlen(e->peer));
        sl_buf_puts(&env, ",\"local\":");
        sl_buf_json_str(&env, e->local, strlen(e->local));
        sl_buf_printf(&env, ",\"n\":%" PRIu64 ",\"t_us\":%" PRIu64 ",\"file\":", n,
                      uv_hrtime() / 1000);
        char name[32];
        snprintf(name, sizeof(name), "%08" PRIu64 ".eml", n);
        if (k->dir)
            sl_buf_json_str(&env, name, strlen(name));
        else
            sl_buf_puts(&env, "null");
        sl_buf_puts(&env, "}\n");
        fwrite(env.data, 1, env.len, k->log);
        fflush(k->log);
    }
    sl_buf_free(&env);
}

static void on_data(void *arg, smtpd_session *s, const char *msg, size_t len)
{
    sink *k = arg;
    sink_sess *ss = smtpd_session_data(s);
    switch (ss->action) {
    case ACT_DISCONNECT:
        smtpd_session_drop(s);
        smtpd_reply(s, 451, "4.3.0 dropped"); /* discarded: closed */
        return;
    case ACT_NOANSWER:
        ss->noanswer_pending = true;
        return;
    case ACT_DATAFAIL:
        smtpd_reply_after(s, ss->slow_ms, 554, "5.6.0 Message rejected (datafail rule)");
        return;
    case ACT_REPLY:
        if (ss->code < 200 || ss->code >= 300) {
            smtpd_reply_after(s, ss->slow_ms, ss->code, ss->text);
            return;
        }
        break;
    case ACT_NONE:
        break;
    }
    uint64_t n = ++k->seq;
    k->accepted_bytes += len;
    record(k, s, msg, len, n);
    char text[64];
    snprintf(text, sizeof(text), "2.0.0 Ok: queued as %08" PRIu64, n);
    smtpd_reply_after(s, ss->slow_ms, 250, text);
}

static void print_counters(sink *k, FILE *f)
{
    smtpd_stats st;
    smtpd_server_stats(k->srv, &st);
    fprintf(f,
            "sluice-testsink: connections=%" PRIu64 " active=%" PRIu64 " refused=%" PRIu64
            " messages=%" PRIu64 " rejected=%" PRIu64 " bytes=%" PRIu64 "\n",
            st.connections, st.active, st.refused, st.messages, st.rejected, k->accepted_bytes);
    fflush(f);
}

static void closed_cb(smtpd_server *srv, void *arg)
{
    sink *k = arg;
    uv_close((uv_handle_t *)&k->sigterm, NULL);
    uv_close((uv_handle_t *)&k->sigint, NULL);
    uv_close((uv_handle_t *)&k->sigusr1, NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    sink *k = h->data;
    print_counters(k, stdout);
    if (signum == SIGUSR1)
        return;
    smtpd_server_close(k->srv, closed_cb, k);
}

static int load_rules(sink *k, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "sluice-testsink: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0;
    rule **tail = &k->rules;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#')
            continue;
        char glob[512], stage[16], what[32];
        int used = 0;
        if (sscanf(p, "%511s %15s %31s %n", glob, stage, what, &used) < 3) {
            fprintf(stderr, "sluice-testsink: %s:%d: want GLOB STAGE CODE|ACTION [TEXT]\n", path,
                    lineno);
            fclose(f);
            return -1;
        }
        rule *r = xcalloc(1, sizeof(*r));
        r->glob = xstrdup(glob);
        r->at_data = strcmp(stage, "data") == 0;
        if (!r->at_data && strcmp(stage, "rcpt") != 0) {
            fprintf(stderr, "sluice-testsink: %s:%d: stage must be rcpt or data\n", path, lineno);
            fclose(f);
            return -1;
        }
        const char *text = used ? p + used : "";
        if (isdigit((unsigned char)what[0])) {
            r->code = atoi(what);
            r->action = ACT_REPLY;
            r->text = xstrdup(*text ? text : "4.0.0 rule");
        } else if (strcmp(what, "disconnect") == 0) {
            r->action = ACT_DISCONNECT;
        } else if (strcmp(what, "noanswer") == 0) {
            r->action = ACT_NOANSWER;
        } else if (strncmp(what, "slow", 4) == 0) {
            r->slow_ms = strtoull(what + 4, NULL, 10);
        } else {
            fprintf(stderr, "sluice-testsink: %s:%d: unknown action %s\n", path, lineno, what);
            fclose(f);
            return -1;
        }
        if (!r->at_data && r->action != ACT_REPLY && !r->slow_ms) {
            fprintf(stderr, "sluice-testsink: %s:%d: %s works at stage data\n", path, lineno, what);
            fclose(f);
            return -1;
        }
        *tail = r;
        tail = &r->next;
    }
    fclose(f);
    return 0;
}

static const sl_cmd_help help = {
    .prog = "sluice-testsink",
    .synopsis = "[--listen HOST:PORT] [--port-file F] [--dir D] [--log F]\n"
                "         [--tls-cert C --tls-key K [--implicit-tls]] [--no-pipelining] [--no-smtputf8]\n"
                "         [--max-rcpt N] [--max-size BYTES] [--max-conn-per-ip N] [--idle-timeout DUR]\n"
                "         [--greeting CODE] [--rules FILE] [--hostname NAME] [--greylist]\n"
                "         [--conn-log F]",
    .about = "A recording SMTP sink with fault rules, for tests and benchmarks; see\n"
             "tests/sink/README.md for every option and the fault rules.\n",
    .options = "  --listen HOST:PORT (default 127.0.0.1:2525), --port-file F, --dir D,\n"
               "  --log F, --tls-cert C, --tls-key K, --implicit-tls, --no-pipelining,\n"
               "  --no-smtputf8, --max-rcpt N, --max-size BYTES, --max-conn-per-ip N,\n"
               "  --idle-timeout DUR, --greeting CODE, --rules FILE, --hostname NAME,\n"
               "  --greylist, --conn-log F\n",
    .config = NULL, /* it reads no sluice configuration */
};

static void usage(FILE *f)
{
    sl_cmd_usage(&help, f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, 0, 'l'},
                                         {"port-file", required_argument, 0, 'p'},
                                         {"dir", required_argument, 0, 'd'},
                                         {"log", required_argument, 0, 'L'},
                                         {"tls-cert", required_argument, 0, 'c'},
                                         {"tls-key", required_argument, 0, 'k'},
                                         {"implicit-tls", no_argument, 0, 'I'},
                                         {"no-pipelining", no_argument, 0, 'P'},
                                         {"no-smtputf8", no_argument, 0, 'U'},
                                         {"max-rcpt", required_argument, 0, 'r'},
                                         {"max-size", required_argument, 0, 's'},
                                         {"max-conn-per-ip", required_argument, 0, 'C'},
                                         {"idle-timeout", required_argument, 0, 't'},
                                         {"greeting", required_argument, 0, 'g'},
                                         {"rules", required_argument, 0, 'R'},
                                         {"hostname", required_argument, 0, 'H'},
                                         {"greylist", no_argument, 0, 'G'},
                                         {"conn-log", required_argument, 0, 'N'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *listen = "127.0.0.1:2525", *port_file = NULL, *log_path = NULL;
    const char *conn_log_path = NULL;
    const char *cert = NULL, *key = NULL, *rules = NULL;
    bool implicit = false;
    sink k = {0};
    smtpd_config cfg = {.hostname = "sink.test",
                        .max_conn = 100000,
                        .max_conn_per_ip = 100000,
                        .max_message_size = 100u << 20};
    sl_log_init("testsink", SL_LOG_WARN);
    int c = sl_cmd_std(argc, argv, &help);
    if (c >= 0)
        return c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 'd':
            k.dir = optarg;
            break;
        case 'L':
            log_path = optarg;
            break;
        case 'c':
            cert = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'I':
            implicit = true;
            break;
        case 'P':
            cfg.no_pipelining = true;
            break;
        case 'U':
            cfg.no_smtputf8 = true;
            break;
        case 'r':
            cfg.max_rcpt = (unsigned)atoi(optarg);
            break;
        case 's':
            cfg.max_message_size = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'C':
            cfg.max_conn_per_ip = (unsigned)atoi(optarg);
            break;
        case 't': {
            int64_t ms;
            if (sl_parse_duration_ms(optarg, &ms) != 0 || ms <= 0) {
                fprintf(stderr, "sluice-testsink: bad --idle-timeout %s\n", optarg);
                return 2;
            }
            cfg.idle_timeout_ms = (uint64_t)ms;
            break;
        }
        case 'g':
            k.greeting = atoi(optarg);
            break;
        case 'R':
            rules = optarg;
            break;
        case 'H':
            cfg.hostname = optarg;
            break;
        case 'G':
            k.greylist = true;
            break;
        case 'N':
            conn_log_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || (!cert) != (!key) || (implicit && !cert)) {
        usage(stderr);
        return 2;
    }
    if (rules && load_rules(&k, rules) != 0)
        return 2;
    SSL_CTX *ctx = NULL;
    if (cert) {
        char *err = NULL;
        ctx = sl_tls_server_ctx(cert, key, &err);
        if (!ctx) {
            fprintf(stderr, "sluice-testsink: %s\n", err);
            free(err);
            return 2;
        }
        cfg.tls_ctx = ctx;
    }
    if (log_path) {
        k.log = fopen(log_path, "a");
        if (!k.log) {
            fprintf(stderr, "sluice-testsink: %s: %s\n", log_path, strerror(errno));
            return 2;
        }
        setvbuf(k.log, NULL, _IOFBF, 1 << 16);
    }
    if (conn_log_path) {
        k.conn_log = fopen(conn_log_path, "a");
        if (!k.conn_log) {
            fprintf(stderr, "sluice-testsink: %s: %s\n", conn_log_path, strerror(errno));
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    k.loop = uv_default_loop();
    smtpd_hooks hooks = {.arg = &k,
                         .on_connect = on_connect,
                         .on_mail = on_mail,
                         .on_rcpt = on_rcpt,
                         .on_data = on_data,
                         .on_quit = on_quit,
                         .on_close = on_close};
    k.srv = smtpd_server_new(k.loop, &cfg, &hooks);
    int port = 0;
    int rc = smtpd_server_listen(k.srv, listen,
                                 implicit ? SMTPD_TLS
                                 : ctx    ? SMTPD_STARTTLS
                                          : SMTPD_PLAIN,
                                 &port);
    if (rc < 0) {
        fprintf(stderr, "sluice-testsink: listen %s: %s\n", listen,
                rc > -3000 ? uv_strerror(rc) : sl_strerror(rc));
        return 1;
    }
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)(strrchr(listen, ':') - listen), listen);
    printf("sluice-testsink listening on %s:%d\n", host, port);
    fflush(stdout);
    if (port_file) {
        /* Write then rename: a reader never sees a half-written port. */
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
            fprintf(stderr, "sluice-testsink: %s: %s\n", port_file, strerror(errno));
            return 1;
        }
    }
    uv_signal_init(k.loop, &k.sigterm);
    uv_signal_init(k.loop, &k.sigint);
    uv_signal_init(k.loop, &k.sigusr1);
    k.sigterm.data = k.sigint.data = k.sigusr1.data = &k;
    uv_signal_start(&k.sigterm, signal_cb, SIGTERM);
    uv_signal_start(&k.sigint, signal_cb, SIGINT);
    uv_signal_start(&k.sigusr1, signal_cb, SIGUSR1);
    uv_run(k.loop, UV_RUN_DEFAULT);
    smtpd_server_free(k.srv);
    if (k.log)
        fclose(k.log);
    if (k.conn_log)
        fclose(k.conn_log);
    SSL_CTX_free(ctx);
    for (grey *g = k.grey_seen, *n; g; g = n) {
        n = g->next;
        free(g->pair);
        free(g);
    }
    for (rule *r = k.rules, *n; r; r = n) {
        n = r->next;
        free(r->glob);
        free(r->text);
        free(r);
    }
    uv_loop_close(k.loop);
    return 0;
}
