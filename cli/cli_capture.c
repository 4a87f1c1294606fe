/*
 * cli_capture - `sluice capture --listen HOST:PORT --dir DIR [--port-file F]`:
 * the local capture SMTP server that `sluice dev` starts. It accepts every
 * message (it is the whole Internet, for development) and writes each one
 * to its own file in DIR, named <unix-ms>-<seq>.eml so that a plain sort is
 * arrival order. The first line of a file is an added header carrying the
 * envelope (X-Sluice-Envelope: {"from":...,"rcpt":[...]}); the message
 * follows exactly as received. Files are written under a temporary name and
 * renamed, so a reader never sees half a message.
 *
 * Runs on its own loop (not the default one), so it may also be run in a
 * thread. SIGTERM/SIGINT stop it with exit 0. The protocol is
 * common/smtp_server, the same engine as sluice-submit and the test sink.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "cli.h"
#include "log.h"
#include "smtp_server.h"
#include "util.h"

typedef struct capture {
    const char *dir;
    uint64_t seq;
    smtpd_server *srv;
    uv_signal_t sigterm, sigint;
    bool failed;
} capture;

static int capture_write(capture *c, smtpd_session *s, const char *msg, size_t len, char *name,
                         size_t namelen)
{
    const smtpd_envelope *e = smtpd_session_envelope(s);
    sl_buf head = SL_BUF_INIT;
    sl_buf_puts(&head, "X-Sluice-Envelope: {\"from\":");
    sl_buf_json_str(&head, e->from, strlen(e->from));
    sl_buf_puts(&head, ",\"rcpt\":[");
    for (size_t i = 0; i < e->nrcpt; i++) {
        if (i)
            sl_buf_putc(&head, ',');
        sl_buf_json_str(&head, e->rcpt[i], strlen(e->rcpt[i]));
    }
    sl_buf_puts(&head, "]}\r\n");
    snprintf(name, namelen, "%013" PRId64 "-%06" PRIu64 ".eml", sl_now_ms(), ++c->seq);
    char *path = xasprintf("%s/%s", c->dir, name);
    char *tmp = xasprintf("%s/.%s.tmp", c->dir, name);
    int rc = 0;
    FILE *f = fopen(tmp, "w");
    if (!f || fwrite(head.data, 1, head.len, f) != head.len || fwrite(msg, 1, len, f) != len) {
        rc = -errno;
        if (f)
            fclose(f);
    } else if (fclose(f) != 0 || rename(tmp, path) != 0) {
        rc = -errno;
    }
    if (rc < 0) {
        sl_error("capture: %s: %s", path, strerror(-rc));
        unlink(tmp);
    }
    free(path);
    free(tmp);
    sl_buf_free(&head);
    return rc;
}

static void on_data(void *arg, smtpd_session *s, const char *msg, size_t len)
{
    capture *c = arg;
    char name[64];
    if (capture_write(c, s, msg, len, name, sizeof(name)) < 0) {
        smtpd_reply(s, 451, "4.3.0 Cannot write the message, try again later");
        return;
    }
    const smtpd_envelope *e = smtpd_session_envelope(s);
    sl_info("captured %s from <%s> to %zu recipient(s), %zu bytes", name, e->from, e->nrcpt, len);
    char *text = xasprintf("2.0.0 Ok: captured as %s", name);
    smtpd_reply(s, 250, text);
    free(text);
}

static void closed_cb(smtpd_server *srv, void *arg)
{
    capture *c = arg;
    uv_close((uv_handle_t *)&c->sigterm, NULL);
    uv_close((uv_handle_t *)&c->sigint, NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    capture *c = h->data;
    uv_signal_stop(&c->sigterm);
    uv_signal_stop(&c->sigint);
    smtpd_stats st;
    smtpd_server_stats(c->srv, &st);
    sl_info("capture: stopping after %" PRIu64 " message(s) on %" PRIu64 " connection(s)",
            st.messages, st.connections);
    smtpd_server_close(c->srv, closed_cb, c);
}

static void capture_usage(FILE *f)
{
    fputs("usage: sluice capture --listen HOST:PORT --dir DIR [--port-file F] [--hostname NAME]\n"
          "Accepts every message over SMTP and writes each to its own file in DIR.\n",
          f);
}

static int mkdir_p(const char *dir)
{
    char *p = xstrdup(dir);
    for (char *q = p + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            free(p);
            return -errno;
        }
        *q = '/';
    }
    int rc = (mkdir(p, 0755) != 0 && errno != EEXIST) ? -errno : 0;
    free(p);
    return rc;
}

int cli_capture(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, 0, 'l'},
                                         {"dir", required_argument, 0, 'd'},
                                         {"port-file", required_argument, 0, 'p'},
                                         {"hostname", required_argument, 0, 'H'},
                                         {"config", required_argument, 0, 'c'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *listen = "127.0.0.1:2525", *port_file = NULL, *hostname = "capture.sluice.local";
    capture c = {0};
    /* Every command takes -c; capture needs no config. */
    const char *unused_config = NULL;
    optind = 1;
    int o, ostatus = -1;
    while ((o = cli_opt_next(argc, argv, "c:h", opts, &unused_config, capture_usage, &ostatus)) !=
           -1) {
        switch (o) {
        case 'l':
            listen = optarg;
            break;
        case 'd':
            c.dir = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 'H':
            hostname = optarg;
            break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    if (!c.dir || optind != argc) {
        capture_usage(stderr);
        return 2;
    }
    int rc = mkdir_p(c.dir);
    if (rc < 0) {
        fprintf(stderr, "sluice capture: %s: %s\n", c.dir, strerror(-rc));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    smtpd_config cfg = {.hostname = hostname,
                        .max_conn = 10000,
                        .max_conn_per_ip = 10000,
                        .max_rcpt = 1000,
                        .max_message_size = 100u << 20};
    smtpd_hooks hooks = {.arg = &c, .on_data = on_data};
    c.srv = smtpd_server_new(&loop, &cfg, &hooks);
    int port = 0;
    rc = smtpd_server_listen(c.srv, listen, SMTPD_PLAIN, &port);
    if (rc < 0) {
        fprintf(stderr, "sluice capture: listen %s: %s\n", listen,
                rc > -3000 ? uv_strerror(rc) : sl_strerror(rc));
        smtpd_server_close(c.srv, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        smtpd_server_free(c.srv);
        uv_loop_close(&loop);
        return 1;
    }
    const char *colon = strrchr(listen, ':');
    printf("sluice capture: listening on %.*s:%d, writing messages to %s\n", (int)(colon - listen),
           listen, port, c.dir);
    fflush(stdout);
    if (port_file) {
        char *tmp = xasprintf("%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
            fprintf(stderr, "sluice capture: %s: %s\n", port_file, strerror(errno));
            free(tmp);
            return 1;
        }
        free(tmp);
    }
    uv_signal_init(&loop, &c.sigterm);
    uv_signal_init(&loop, &c.sigint);
    c.sigterm.data = c.sigint.data = &c;
    uv_signal_start(&c.sigterm, signal_cb, SIGTERM);
    uv_signal_start(&c.sigint, signal_cb, SIGINT);
    uv_run(&loop, UV_RUN_DEFAULT);
    smtpd_server_free(c.srv);
    if (uv_loop_close(&loop) != 0)
        sl_warn("capture: loop closed with handles open");
    return 0;
}
