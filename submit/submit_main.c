/*
 * sluice-submit - the SMTP submission relay: a thin main() over
 * submit_server (see submit_server.h and docs/submit.md).
 *
 *   sluice-submit -c sluice.yaml [--hostname NAME] [--ack-timeout DUR]
 *                 [--auth-max-failures N] [--auth-ip-failures N]
 *                 [--auth-ip-window DUR] [--auth-fail-delay DUR]
 *   sluice-submit --hash-password      (password on stdin, hash on stdout)
 *
 * Skeleton: parse config, load users and TLS, listen, run the loop; SIGHUP
 * reloads the users file (a bad file keeps the old one); SIGTERM/SIGINT
 * drain (stop listening, answer what is owed, flush Kafka) and exit 0. Bad
 * config or usage exits 2.
 */
#include "cmdline.h"
#include "config.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "submit_server.h"
#include "submit_users.h"
#include "tls.h"
#include "util.h"

#include <getopt.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <termios.h>
#include <unistd.h>

typedef struct app {
    sl_config *cfg;
    sub_users *users;
    sub_server *srv;
    uv_signal_t sigterm, sigint, sighup;
    bool stopped;
} app;

static const sl_cmd_help help = {
    .prog = "sluice-submit",
    .synopsis = "-c CONFIG [--hostname NAME] [--ack-timeout DUR]\n"
                "                     [--auth-max-failures N] [--auth-ip-failures N]\n"
                "                     [--auth-ip-window DUR] [--auth-fail-delay DUR]\n"
                "       sluice-submit --hash-password   (reads the password on stdin)",
    .about = "SMTP submission (587 STARTTLS, 465 implicit TLS) into Kafka: answers 250\n"
             "only once Kafka has the job; see docs/submit.md.\n",
    .options = "  -c, --config FILE     the configuration\n"
               "      --hostname NAME   the name in the greeting and Received header\n"
               "      --ack-timeout DUR how long to wait for Kafka before answering 451\n"
               "      --auth-max-failures N  failed AUTHs before a session is closed\n"
               "      --auth-ip-failures N   failed AUTHs per client IP per window\n"
               "      --auth-ip-window DUR   the window of --auth-ip-failures\n"
               "      --auth-fail-delay DUR  the pause after a failed AUTH\n"
               "      --hash-password   print an argon2id hash of the password on stdin\n",
    .config = "  kafka.*               brokers, security, topic names\n"
              "  submit.listen, submit.cert, submit.key, submit.users,\n"
              "  submit.max_message_size, submit.max_recipients, submit.max_connections,\n"
              "  submit.max_connections_per_ip, submit.idle_timeout\n"
              "  metrics.listen, metrics.health_timeout\n",
};

static int hash_password(void)
{
    bool tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty && tcgetattr(STDIN_FILENO, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        fputs("Password: ", stderr);
    } else {
        tty = false;
    }
    sl_buf b = SL_BUF_INIT;
    char chunk[256];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        sl_buf_append(&b, chunk, n);
        if (tty && memchr(chunk, '\n', n))
            break;
    }
    OPENSSL_cleanse(chunk, sizeof chunk);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    /* One line: the newline that ends it is not part of the password. */
    char *nl = b.data ? memchr(b.data, '\n', b.len) : NULL;
    size_t len = nl ? (size_t)(nl - b.data) : b.len;
    if (len && b.data[len - 1] == '\r')
        len--;
    if (len == 0 || memchr(b.data, 0, len)) {
        fputs("sluice-submit: empty password (or one with a NUL byte)\n", stderr);
        if (b.data)
            OPENSSL_cleanse(b.data, b.len);
        sl_buf_free(&b);
        return 2;
    }
    char *hash = sub_password_hash(b.data, len);
    OPENSSL_cleanse(b.data, b.len);
    sl_buf_free(&b);
    printf("%s\n", hash);
    free(hash);
    return fflush(stdout) == 0 ? 0 : 1;
}

static void closed_cb(sub_server *srv, void *arg)
{
    (void)srv;
    app *a = arg;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sighup, NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    app *a = h->data;
    if (signum == SIGHUP) {
        sub_users *nu = NULL;
        char *err = NULL;
        if (sub_users_load(a->cfg->submit.users, &nu, &err) != 0) {
            sl_error("submit: users file not reloaded, keeping the old one: %s", err);
            free(err);
            return;
        }
        sub_server_set_users(a->srv, nu);
        sub_users_free(a->users);
        a->users = nu;
        sl_info("submit: reloaded %zu users", nu->n);
        return;
    }
    if (a->stopped)
        return;
    a->stopped = true;
    sl_info("submit: %s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    sub_server_close(a->srv, closed_cb, a);
}

static int64_t dur_arg(const char *opt, const char *v)
{
    int64_t ms;
    if (sl_parse_duration_ms(v, &ms) != 0 || ms < 0) {
        fprintf(stderr, "sluice-submit: %s: '%s' is not a duration (250ms, 5s, 1m)\n", opt, v);
        exit(2);
    }
    return ms;
}

static unsigned count_arg(const char *opt, const char *v)
{
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (!*v || *end || n < 1 || n > 1000000) {
        fprintf(stderr, "sluice-submit: %s: '%s' is not a count from 1\n", opt, v);
        exit(2);
    }
    return (unsigned)n;
}

/* Each session is a descriptor: lift the soft limit to the hard one so
 * that submit.max_connections can be reached, and say so when it cannot
 * (the session cap then comes from the kernel, as failed accepts). */
static void raise_nofile(unsigned max_conn)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    rlim_t want = (rlim_t)max_conn + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want)
        sl_warn("submit: open-file limit %llu is below submit.max_connections %u (+64): "
                "raise it (ulimit -n, LimitNOFILE=) or lower the key",
                (unsigned long long)rl.rlim_cur, max_conn);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"hostname", required_argument, NULL, 'H'},
                                         {"ack-timeout", required_argument, NULL, 'a'},
                                         {"auth-max-failures", required_argument, NULL, 'f'},
                                         {"auth-ip-failures", required_argument, NULL, 'i'},
                                         {"auth-ip-window", required_argument, NULL, 'w'},
                                         {"auth-fail-delay", required_argument, NULL, 'd'},
                                         {"hash-password", no_argument, NULL, 'P'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL;
    sub_opts o = {0};
    int c = sl_cmd_std(argc, argv, &help);
    if (c >= 0)
        return c;
    int ostatus = -1;
    while ((c = sl_cmd_opt_next(argc, argv, "c:h", opts, &help, &cfg_path, &ostatus)) != -1) {
        switch (c) {
        case 'H':
            o.hostname = optarg;
            break;
        case 'a':
            o.ack_timeout_ms = dur_arg("--ack-timeout", optarg);
            if (o.ack_timeout_ms == 0)
                o.ack_timeout_ms = 1;
            break;
        case 'f':
            o.auth_max_failures = count_arg("--auth-max-failures", optarg);
            break;
        case 'i':
            o.auth_ip_failures = count_arg("--auth-ip-failures", optarg);
            break;
        case 'w':
            o.auth_ip_window_ms = dur_arg("--auth-ip-window", optarg);
            break;
        case 'd':
            o.auth_fail_delay_ms = dur_arg("--auth-fail-delay", optarg);
            if (o.auth_fail_delay_ms == 0)
                o.auth_fail_delay_ms = -1; /* zero means "none" here */
            break;
        case 'P':
            return hash_password();
        }
    }
    if (ostatus >= 0)
        return ostatus;
    app a = {0};
    a.cfg = sl_daemon_start(&help, argc, optind, "submit", cfg_path, 1);
    if (!a.cfg->submit.users)
        sl_fatal(2, "%s: key 'submit.users' is required: sluice-submit relays only for "
                    "authenticated users",
                 cfg_path);
    raise_nofile(a.cfg->submit.max_connections);
    /* Every client waits for its jobs' acknowledgement before the next
     * message: batch for 1 ms, not the 5 ms that suits bulk producers. */
    if (a.cfg->kafka.linger_ms < 0)
        a.cfg->kafka.linger_ms = 1;
    char *err = NULL;
    if (sub_users_load(a.cfg->submit.users, &a.users, &err) != 0)
        sl_fatal(2, "%s", err);

    static const char *const dflt_listen[] = {"0.0.0.0:587 starttls", "0.0.0.0:465 tls"};
    const char *const *listen = (const char *const *)a.cfg->submit.listen;
    size_t n_listen = a.cfg->submit.n_listen;
    if (!n_listen) {
        listen = dflt_listen;
        n_listen = 2;
    }
    SSL_CTX *tls = NULL;
    if (a.cfg->submit.cert) {
        tls = sl_tls_server_ctx(a.cfg->submit.cert, a.cfg->submit.key, &err);
        if (!tls)
            sl_fatal(2, "%s: submit.cert/submit.key: %s", cfg_path, err);
    }
    for (size_t i = 0; i < n_listen; i++) {
        const char *mode = strchr(listen[i], ' ');
        if (!tls && mode && strstr(mode, "tls"))
            sl_fatal(2, "%s: key 'submit.listen': '%s' needs submit.cert and submit.key",
                     cfg_path, listen[i]);
        if (!mode || strstr(mode, "plain"))
            sl_warn("submit: listener %s has no TLS: nobody can authenticate there", listen[i]);
    }

    if (a.cfg->metrics.listen) {
        int mport = 0;
        if (sl_http_start(a.cfg->metrics.listen, &mport, &err) < 0)
            sl_fatal(1, "submit: metrics on %s: %s", a.cfg->metrics.listen, err);
        sl_info("submit: metrics on %s (port %d)", a.cfg->metrics.listen, mport);
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    o.cfg = a.cfg;
    o.users = a.users;
    o.tls_ctx = tls;
    a.srv = sub_server_new(&loop, &o, &err);
    if (!a.srv)
        sl_fatal(1, "submit: kafka: %s", err);
    for (size_t i = 0; i < n_listen; i++) {
        int port = 0;
        int rc = sub_server_listen(a.srv, listen[i], &port);
        if (rc != 0)
            sl_fatal(1, "submit: cannot listen on %s: %s", listen[i],
                     rc > -3000 ? uv_strerror(rc) : sl_strerror(rc));
        sl_info("submit: listening on %s", listen[i]);
    }
    sl_info("submit: %zu users, ready", a.users->n);
    sl_http_set_ready(true);
    uv_signal_init(&loop, &a.sigterm);
    uv_signal_init(&loop, &a.sigint);
    uv_signal_init(&loop, &a.sighup);
    a.sigterm.data = a.sigint.data = a.sighup.data = &a;
    uv_signal_start(&a.sigterm, signal_cb, SIGTERM);
    uv_signal_start(&a.sigint, signal_cb, SIGINT);
    uv_signal_start(&a.sighup, signal_cb, SIGHUP);
    sl_beat *beat = sl_health_loop(&loop, "main loop", a.cfg->metrics.health_timeout_ms);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (!a.stopped)
        sl_fatal(1, "submit: exited event loop");
    sl_health_loop_stop(beat);
    sub_stats st;
    sub_server_stats(a.srv, &st);
    sl_info("submit: stopped: %llu messages accepted, %llu jobs, %llu answered 451 for Kafka",
            (unsigned long long)st.accepted, (unsigned long long)st.jobs,
            (unsigned long long)st.kafka_timeouts);
    sub_server_free(a.srv);
    uv_run(&loop, UV_RUN_DEFAULT); /* the producer's own close callbacks */
    if (uv_loop_close(&loop) != 0)
        sl_warn("submit: handles left open at exit");
    SSL_CTX_free(tls);
    sub_users_free(a.users);
    sl_config_free(a.cfg);
    return 0;
}
