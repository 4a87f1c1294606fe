/*
 * sluice-devbroker - librdkafka's mock cluster as a process, for development
 * and tests.
 *
 *   sluice-devbroker [-c FILE] [--brokers N] [--port-file F]
 *                    [--control HOST:PORT | --control-file F]
 *
 * It creates an in-memory Kafka cluster of N brokers (default 3) listening on
 * 127.0.0.1 random ports, creates every sluice topic of the configuration
 * (sl_topics()) with replication factor min(3, N), prints the bootstrap list
 * as the first line of stdout, and runs until SIGTERM or SIGINT (exit 0).
 *
 * Readiness: the control file (if asked for) is written first, then the port
 * file, each through F.tmp and rename(2) so a reader never sees half a file;
 * a process that sees the port file may use both. Both are removed on exit.
 *
 * The control socket is a TCP listener on 127.0.0.1, an ephemeral port
 * unless --control names one, for fault injection, one command per line, each answered by one
 * line "ok ..." or "error ...":
 *
 *   ping                               ok pong
 *   topics                             ok NAME/PARTITIONS ...
 *   broker down|up ID                  take a broker off or back on line
 *   leader TOPIC PARTITION BROKERID    move a partition's leadership
 *   errors APINAME COUNT ERRNAME       the next COUNT requests of that API
 *                                      (Produce, Fetch, ...) fail with ERRNAME
 *                                      (NOT_LEADER_FOR_PARTITION, ...)
 *   rtt BROKERID MS                    add round-trip latency to a broker
 *   coordinator GROUP BROKERID         make a broker a consumer group's
 *                                      coordinator
 *   clear                              drop every queued request error
 *
 * One control thread serves every connection with poll(2); commands run
 * there, the mock cluster itself runs in librdkafka's threads. The main
 * thread only waits for the signal. This is a dev tool, not a daemon on the
 * hot path, so plain blocking sockets are fine.
 *
 * Limits (see docs/devbroker.md): everything is in memory; the mock keeps
 * only the newest few MB per partition, neither compacts nor honours
 * retention, and topics created later by clients get the mock's defaults.
 */
#include "cmdline.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "util.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define BROKER_MAX_CLIENTS 32
#define BROKER_MAX_LINE 1024

typedef struct broker_client {
    int fd;
    sl_buf in;
} broker_client;

typedef struct broker {
    rd_kafka_t *rk; /* the handle the mock cluster hangs off */
    rd_kafka_mock_cluster_t *mock;
    int n_brokers;
    sl_topic_spec *topics; /* what we created, for `topics`/`leader` */
    size_t n_topics;
    char *prefix;
    int listen_fd;
    int wake[2]; /* main -> control thread: stop */
    broker_client clients[BROKER_MAX_CLIENTS];
} broker;

/* Kafka protocol ApiKeys; librdkafka keeps its RD_KAFKAP_* names private. */
static const struct {
    const char *name;
    int16_t key;
} broker_apis[] = {
    {"Produce", 0},
    {"Fetch", 1},
    {"ListOffsets", 2},
    {"Metadata", 3},
    {"OffsetCommit", 8},
    {"OffsetFetch", 9},
    {"FindCoordinator", 10},
    {"JoinGroup", 11},
    {"Heartbeat", 12},
    {"LeaveGroup", 13},
    {"SyncGroup", 14},
    {"DescribeGroups", 15},
    {"ListGroups", 16},
    {"SaslHandshake", 17},
    {"ApiVersion", 18},
    {"ApiVersions", 18},
    {"CreateTopics", 19},
    {"DeleteTopics", 20},
    {"DeleteRecords", 21},
    {"InitProducerId", 22},
    {"OffsetForLeaderEpoch", 23},
    {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25},
    {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
    {"DescribeConfigs", 32},
    {"AlterConfigs", 33},
    {"CreatePartitions", 37},
    {"DeleteGroups", 42},
};
#define BROKER_API_KEY_MAX 70 /* clear: every key up to here */

static int broker_api_key(const char *s)
{
    for (size_t i = 0; i < sizeof broker_apis / sizeof broker_apis[0]; i++)
        if (!strcasecmp(s, broker_apis[i].name))
            return broker_apis[i].key;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end && v >= 0 && v <= BROKER_API_KEY_MAX)
        return (int)v;
    return -1;
}

/* An error name as rd_kafka_err2name() spells it ("NOT_LEADER_FOR_PARTITION",
 * "_TRANSPORT"), with an optional "ERR_" or "RD_KAFKA_RESP_ERR_" prefix, or
 * a number. Returns false when unknown. */
static bool broker_err_code(const char *s, rd_kafka_resp_err_t *out)
{
    if (!strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18))
        s += 18;
    else if (!strncasecmp(s, "ERR_", 4))
        s += 4;
    const struct rd_kafka_err_desc *descs;
    size_t n;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++)
        if (descs[i].name && !strcasecmp(s, descs[i].name)) {
            *out = descs[i].code;
            return true;
        }
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end && v != 0 && v > -200 && v < 200) {
        *out = (rd_kafka_resp_err_t)v;
        return true;
    }
    return false;
}

/*
 * Requests to the mock cluster's thread (topic create, broker up/down,
 * leader, rtt) go through an op queue whose wake-up pipe librdkafka 2.0.2
 * drains *after* serving the queue: an op enqueued right after the previous
 * one completed can lose its wake-up and wait for the thread's 1 s poll
 * timeout. Leaving a few milliseconds between ops lets the thread finish
 * draining first, which turns a startup of seconds into milliseconds.
 * Ops come from one thread at a time (main during setup, then the control
 * thread), so the timestamp needs no lock.
 */
#define BROKER_OP_GAP_MS 3
static int64_t broker_last_op_ms;

static void broker_op_pace(void)
{
    int64_t wait = broker_last_op_ms + BROKER_OP_GAP_MS - sl_mono_ms();
    if (wait > 0)
        usleep((useconds_t)wait * 1000);
}

static void broker_op_done(void)
{
    broker_last_op_ms = sl_mono_ms();
}

static bool broker_parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static const sl_topic_spec *broker_topic_find(const broker *b, const char *name)
{
    for (size_t i = 0; i < b->n_topics; i++)
        if (!strcmp(b->topics[i].name, name))
            return &b->topics[i];
    /* Accept the short name too: "jobs" for "sluice.jobs". */
    size_t pl = strlen(b->prefix);
    for (size_t i = 0; i < b->n_topics; i++)
        if (!strncmp(b->topics[i].name, b->prefix, pl) && !strcmp(b->topics[i].name + pl, name))
            return &b->topics[i];
    return NULL;
}

/* Run one command line; the answer (no newline) is appended to out. */
static void broker_command(broker *b, char *line, sl_buf *out)
{
    char *argv[8];
    int argc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r", &save); tok && argc < 8;
         tok = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = tok;
    if (argc == 0) {
        sl_buf_puts(out, "error empty command");
        return;
    }
    const char *cmd = argv[0];
    long id, n, ms, part;
    rd_kafka_resp_err_t err;

    if (!strcmp(cmd, "ping") && argc == 1) {
        sl_buf_puts(out, "ok pong");
    } else if (!strcmp(cmd, "topics") && argc == 1) {
        sl_buf_puts(out, "ok");
        for (size_t i = 0; i < b->n_topics; i++)
            sl_buf_printf(out, " %s/%d", b->topics[i].name, b->topics[i].partitions);
    } else if (!strcmp(cmd, "broker") && argc == 3 &&
               (!strcmp(argv[1], "down") || !strcmp(argv[1], "up"))) {
        if (!broker_parse_int(argv[2], 1, b->n_brokers, &id)) {
            sl_buf_printf(out, "error no broker '%s' (ids are 1..%d)", argv[2], b->n_brokers);
            return;
        }
        bool down = !strcmp(argv[1], "down");
        broker_op_pace();
        err = down ? rd_kafka_mock_broker_set_down(b->mock, (int32_t)id)
                   : rd_kafka_mock_broker_set_up(b->mock, (int32_t)id);
        broker_op_done();
        if (err)
            sl_buf_printf(out, "error %s", rd_kafka_err2str(err));
        else
            sl_buf_printf(out, "ok broker %ld %s", id, argv[1]);
    } else if (!strcmp(cmd, "leader") && argc == 4) {
        /* The mock would silently create an unknown topic here; refuse. */
        const sl_topic_spec *t = broker_topic_find(b, argv[1]);
        if (!t) {
            sl_buf_printf(out, "error unknown topic '%s'", argv[1]);
        } else if (!broker_parse_int(argv[2], 0, t->partitions - 1, &part)) {
            sl_buf_printf(out, "error no partition '%s' in %s (0..%d)", argv[2], t->name,
                          t->partitions - 1);
        } else if (!broker_parse_int(argv[3], 1, b->n_brokers, &id)) {
            sl_buf_printf(out, "error no broker '%s' (ids are 1..%d)", argv[3], b->n_brokers);
        } else {
            broker_op_pace();
            err = rd_kafka_mock_partition_set_leader(b->mock, t->name, (int32_t)part, (int32_t)id);
            broker_op_done();
            if (err)
                sl_buf_printf(out, "error %s", rd_kafka_err2str(err));
            else
                sl_buf_printf(out, "ok leader %s %ld %ld", t->name, part, id);
        }
    } else if (!strcmp(cmd, "errors") && argc == 4) {
        int key = broker_api_key(argv[1]);
        if (key < 0) {
            sl_buf_printf(out, "error unknown api '%s'", argv[1]);
        } else if (!broker_parse_int(argv[2], 1, 100000, &n)) {
            sl_buf_printf(out, "error bad count '%s' (1..100000)", argv[2]);
        } else if (!broker_err_code(argv[3], &err)) {
            sl_buf_printf(out, "error unknown error name '%s'", argv[3]);
        } else {
            rd_kafka_resp_err_t *errs = xmalloc((size_t)n * sizeof *errs);
            for (long i = 0; i < n; i++)
                errs[i] = err;
            rd_kafka_mock_push_request_errors_array(b->mock, (int16_t)key, (size_t)n, errs);
            free(errs);
            sl_buf_printf(out, "ok errors %s %ld %s", argv[1], n, rd_kafka_err2name(err));
        }
    } else if (!strcmp(cmd, "rtt") && argc == 3) {
        if (!broker_parse_int(argv[1], 1, b->n_brokers, &id))
            sl_buf_printf(out, "error no broker '%s' (ids are 1..%d)", argv[1], b->n_brokers);
        else if (!broker_parse_int(argv[2], 0, 600000, &ms))
            sl_buf_printf(out, "error bad rtt '%s' (0..600000 ms)", argv[2]);
        else {
            broker_op_pace();
            err = rd_kafka_mock_broker_set_rtt(b->mock, (int32_t)id, (int)ms);
            broker_op_done();
            if (err)
                sl_buf_printf(out, "error %s", rd_kafka_err2str(err));
            else
                sl_buf_printf(out, "ok rtt %ld %ld", id, ms);
        }
    } else if (!strcmp(cmd, "coordinator") && argc == 3) {
        if (!broker_parse_int(argv[2], 1, b->n_brokers, &id)) {
            sl_buf_printf(out, "error no broker '%s' (ids are 1..%d)", argv[2], b->n_brokers);
        } else {
            broker_op_pace();
            err = rd_kafka_mock_coordinator_set(b->mock, "group", argv[1], (int32_t)id);
            broker_op_done();
            if (err)
                sl_buf_printf(out, "error %s", rd_kafka_err2str(err));
            else
                sl_buf_printf(out, "ok coordinator %s %ld", argv[1], id);
        }
    } else if (!strcmp(cmd, "clear") && argc == 1) {
        for (int16_t k = 0; k <= BROKER_API_KEY_MAX; k++)
            rd_kafka_mock_clear_request_errors(b->mock, k);
        sl_buf_puts(out, "ok cleared");
    } else if (!strcmp(cmd, "help")) {
        sl_buf_puts(out, "ok ping | topics | broker down|up ID | leader TOPIC PARTITION ID"
                         " | errors API COUNT ERRNAME | rtt ID MS | coordinator GROUP ID"
                         " | clear");
    } else {
        sl_buf_puts(out, "error unknown command or wrong arguments: '");
        for (int i = 0; i < argc; i++)
            sl_buf_printf(out, "%s%s", i ? " " : "", argv[i]);
        sl_buf_puts(out, "' (try help)");
    }
}

static void broker_client_close(broker_client *c)
{
    close(c->fd);
    c->fd = -1;
    sl_buf_free(&c->in);
}

static bool broker_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read what is there and answer every complete line. */
static void broker_client_read(broker *b, broker_client *c)
{
    char tmp[4096];
    ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
    if (r < 0 && errno == EINTR)
        return;
    if (r <= 0) {
        broker_client_close(c);
        return;
    }
    sl_buf_append(&c->in, tmp, (size_t)r);
    char *nl;
    while (c->in.len > 0 && (nl = memchr(c->in.data, '\n', c->in.len))) {
        size_t len = (size_t)(nl - c->in.data);
        if (len > 0 && c->in.data[len - 1] == '\r')
            len--;
        char *line = xstrndup(c->in.data, len);
        char *logged = xstrdup(line); /* broker_command() tokenises line */
        sl_buf_consume(&c->in, (size_t)(nl - c->in.data) + 1);
        sl_buf out = SL_BUF_INIT;
        broker_command(b, line, &out);
        sl_info("control: %s -> %s", logged, out.data);
        free(logged);
        free(line);
        sl_buf_putc(&out, '\n');
        bool ok = broker_write_all(c->fd, out.data, out.len);
        sl_buf_free(&out);
        if (!ok) {
            broker_client_close(c);
            return;
        }
    }
    if (c->in.len > BROKER_MAX_LINE) {
        broker_write_all(c->fd, "error line too long\n", 20);
        broker_client_close(c);
    }
}

static void *broker_control_main(void *arg)
{
    broker *b = arg;
    struct pollfd pfd[BROKER_MAX_CLIENTS + 2];
    for (;;) {
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = b->wake[0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = b->listen_fd, .events = POLLIN};
        for (int i = 0; i < BROKER_MAX_CLIENTS; i++)
            pfd[n++] = (struct pollfd){.fd = b->clients[i].fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            sl_panic("control poll: %s", strerror(errno));
        }
        if (pfd[0].revents)
            break;
        for (int i = 0; i < BROKER_MAX_CLIENTS; i++)
            if (b->clients[i].fd >= 0 && pfd[2 + i].revents)
                broker_client_read(b, &b->clients[i]);
        if (pfd[1].revents & POLLIN) {
            int fd = accept(b->listen_fd, NULL, NULL);
            if (fd < 0)
                continue;
            int slot = -1;
            for (int i = 0; i < BROKER_MAX_CLIENTS && slot < 0; i++)
                if (b->clients[i].fd < 0)
                    slot = i;
            if (slot < 0) {
                broker_write_all(fd, "error too many control connections\n", 35);
                close(fd);
            } else {
                b->clients[slot].fd = fd;
            }
        }
    }
    for (int i = 0; i < BROKER_MAX_CLIENTS; i++)
        if (b->clients[i].fd >= 0)
            broker_client_close(&b->clients[i]);
    return NULL;
}

/* Listen on host:port (port 0: ephemeral); returns the fd, or with *err
 * set -2 for a malformed spec and -1 when the socket fails. The actual
 * address goes to addr_out. */
static int broker_control_listen(const char *spec, char *addr_out, size_t addr_len, char **err)
{
    const char *colon = strrchr(spec, ':');
    if (!colon) {
        *err = xasprintf("--control '%s': expected HOST:PORT", spec);
        return -2;
    }
    char *host = xstrndup(spec, (size_t)(colon - spec));
    long port;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (!broker_parse_int(colon + 1, 0, 65535, &port) ||
        inet_pton(AF_INET, *host ? host : "127.0.0.1", &sa.sin_addr) != 1) {
        *err = xasprintf("--control '%s': expected IPv4-HOST:PORT", spec);
        free(host);
        return -2;
    }
    free(host);
    sa.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        *err = xasprintf("control socket %s: %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
    snprintf(addr_out, addr_len, "%s:%u", ip, (unsigned)ntohs(sa.sin_port));
    return fd;
}

/* Write "text\n" to path atomically: path.tmp, then rename. */
static int broker_write_file(const char *path, const char *text)
{
    char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = 0;
    if (!f || fprintf(f, "%s\n", text) < 0 || fclose(f) != 0)
        rc = -errno;
    else if (rename(tmp, path) < 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* librdkafka's own lines, through our logger: notices (such as "no
 * bootstrap.servers" about the idle handle) only at debug level. */
static void broker_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    sl_log(level <= 3   ? SL_LOG_ERROR
           : level == 4 ? SL_LOG_WARN
                        : SL_LOG_DEBUG,
           "kafka %s: %s", fac, buf);
}

static const sl_cmd_help help = {
    .prog = "sluice-devbroker",
    .synopsis = "[-c FILE] [--brokers N] [--port-file F]\n"
                "                        [--control HOST:PORT] [--control-file F]",
    .about = "An in-memory Kafka (librdkafka's mock cluster) with every sluice topic,\n"
             "for development and tests only. Prints the bootstrap list on stdout;\n"
             "see docs/devbroker.md.\n",
    .options = "  -c, --config FILE     the configuration (default: the built-in one)\n"
               "      --brokers N       brokers in the cluster, 1..32 (default 3)\n"
               "      --port-file F     write the bootstrap list to F once it is up\n"
               "      --control HOST:PORT  the fault-injection control listener\n"
               "      --control-file F  write the control address to F\n",
    .config = "  kafka.topic_prefix, kafka.partitions, retry.delays (the topics created)\n",
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"brokers", required_argument, NULL, 'b'},
        {"port-file", required_argument, NULL, 'p'},
        {"control", required_argument, NULL, 'C'},
        {"control-file", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cfg_path = NULL, *port_file = NULL, *control = NULL, *control_file = NULL;
    long n_brokers = 3;
    int o = sl_cmd_std(argc, argv, &help);
    if (o >= 0)
        return o;
    int ostatus = -1;
    while ((o = sl_cmd_opt_next(argc, argv, "c:h", opts, &help, &cfg_path, &ostatus)) != -1) {
        switch (o) {
        case 'b':
            if (!broker_parse_int(optarg, 1, 32, &n_brokers)) {
                fprintf(stderr, "sluice-devbroker: --brokers '%s': expected 1..32\n", optarg);
                return 2;
            }
            break;
        case 'p':
            port_file = optarg;
            break;
        case 'C':
            control = optarg;
            break;
        case 'F':
            control_file = optarg;
            break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    /* Ignores SIGPIPE too: a reader that closed our stdout must not kill
     * the cluster. */
    sl_config *cfg = sl_daemon_start(&help, argc, optind, "devbroker", cfg_path, 0);

    /* Block the stop signals before any thread starts so that every thread
     * inherits the mask and only sigwait() below receives them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    broker b = {.n_brokers = (int)n_brokers, .listen_fd = -1};
    for (int i = 0; i < BROKER_MAX_CLIENTS; i++)
        b.clients[i].fd = -1;
    b.prefix = xstrdup(cfg->kafka.topic_prefix ? cfg->kafka.topic_prefix : "");

    /* The mock cluster needs a client handle to live in; this one never
     * connects anywhere. */
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "client.id", "sluice-devbroker", errstr, sizeof errstr);
    rd_kafka_conf_set_log_cb(conf, broker_kafka_log);
    b.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!b.rk)
        sl_fatal(1, "kafka handle: %s", errstr);
    conf = NULL; /* now owned by b.rk */
    b.mock = rd_kafka_mock_cluster_new(b.rk, b.n_brokers);
    if (!b.mock)
        sl_fatal(1, "could not create the mock cluster");

    int rf = b.n_brokers < 3 ? b.n_brokers : 3;
    b.topics = sl_topics(cfg, &b.n_topics);
    for (size_t i = 0; i < b.n_topics; i++) {
        broker_op_pace();
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(b.mock, b.topics[i].name, b.topics[i].partitions, rf);
        broker_op_done();
        if (err)
            sl_fatal(1, "create topic %s: %s", b.topics[i].name, rd_kafka_err2str(err));
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(b.mock);

    /* The control socket always runs: without --control it takes an
     * ephemeral port, reported in the log and in --control-file. */
    char control_addr[64] = "";
    char *err = NULL;
    b.listen_fd = broker_control_listen(control ? control : "127.0.0.1:0", control_addr,
                                        sizeof control_addr, &err);
    if (b.listen_fd < 0)
        sl_fatal(b.listen_fd == -2 ? 2 : 1, "%s", err);
    if (pipe(b.wake) < 0)
        sl_fatal(1, "pipe: %s", strerror(errno));
    pthread_t control_thread;
    if (pthread_create(&control_thread, NULL, broker_control_main, &b) != 0)
        sl_fatal(1, "could not start the control thread");
    if (control_file) {
        int rc = broker_write_file(control_file, control_addr);
        if (rc < 0)
            sl_fatal(1, "write %s: %s", control_file, strerror(-rc));
    }
    if (port_file) {
        int rc = broker_write_file(port_file, bootstrap);
        if (rc < 0)
            sl_fatal(1, "write %s: %s", port_file, strerror(-rc));
    }
    printf("%s\n", bootstrap);
    fflush(stdout);
    sl_info("mock cluster of %d brokers at %s, %zu topics, replication %d, control %s", b.n_brokers,
            bootstrap, b.n_topics, rf, control_addr);

    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    sl_info("signal %d: stopping", sig);

    if (write(b.wake[1], "x", 1) != 1)
        sl_panic("wake control thread: %s", strerror(errno));
    pthread_join(control_thread, NULL);
    close(b.listen_fd);
    close(b.wake[0]);
    close(b.wake[1]);
    if (port_file)
        unlink(port_file);
    if (control_file)
        unlink(control_file);
    broker_op_pace(); /* destroy is an op too */
    rd_kafka_mock_cluster_destroy(b.mock);
    rd_kafka_destroy(b.rk);
    sl_topics_free(b.topics, b.n_topics);
    free(b.prefix);
    sl_config_free(cfg);
    return 0;
}
