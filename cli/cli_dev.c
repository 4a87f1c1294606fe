/*
 * cli_dev - `sluice dev`: the whole pipeline on one machine.
 *
 * Starts sluice-devbroker, `sluice capture`, sluice-scheduler and
 * sluice-sender as child processes, each logging to DIR/logs/NAME.log with
 * its pid in DIR/pids/NAME.pid, and supervises them: a child that dies is
 * started again (with a short backoff); the dev broker holds every topic in
 * memory, so its death ends the run.
 *
 * --demo N stores a demo template, publishes N jobs (template id plus
 * variables, across several recipient domains), then reads the events
 * topic until every job has a final event (DELIVERED, BOUNCED, EXPIRED,
 * SUPPRESSED, REJECTED), drawing a progress bar, and prints a summary
 * (--json: one JSON object). A job with more than one DELIVERED event is a
 * duplicate (e.g. a sender killed mid-run repeats its in-flight window);
 * duplicates are counted, never hidden.
 *
 * Without --config, dev writes DIR/sluice.yaml: the dev broker's bootstrap,
 * one pool of 127.0.0.1, every domain routed to the capture server (or to
 * --route HOST:PORT), fast retry delays. With --config, that file is used
 * and children get the dev broker through SLUICE_KAFKA_BOOTSTRAP.
 *
 * --kafka BOOTSTRAP runs on that Kafka instead of a dev broker: it must
 * answer (sl_kafka_probe) before anything else starts, `sluice topics
 * ensure` creates the topics it lacks (log in DIR/logs/topics.log), and
 * the children get BOOTSTRAP through SLUICE_KAFKA_BOOTSTRAP. Its topics
 * outlive the run; the demo tells its jobs apart by their fresh ids.
 */
#include "cli.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "map.h"
#include "reader.h"
#include "util.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { CH_BROKER, CH_CAPTURE, CH_SCHEDULER, CH_SENDER, CH_MAX };
static const char *const child_names[CH_MAX] = {"devbroker", "capture", "scheduler", "sender"};

typedef struct dev_child {
    pid_t pid;
    char **argv;
    char *metrics; /* its own metrics.listen (SLUICE_METRICS_LISTEN); NULL: none */
    int restarts;
    int64_t last_start_ms;
} dev_child;

typedef struct dev_state {
    char *dir;
    char *bindir;
    char *config_path;
    char *bootstrap;
    char *capture_addr;
    const char *route; /* --route, or NULL: the capture server */
    dev_child ch[CH_MAX];
    bool json;
} dev_state;

/* Interrupts received: the first stops dev in order, one more while it
 * stops kills whoever is left at once. */
static volatile sig_atomic_t dev_stop;
static bool dev_kill_now; /* interrupted while stopping: no more grace */

static void on_signal(int sig)
{
    (void)sig;
    if (dev_stop < 100)
        dev_stop++;
}

/* A loopback port nothing listens on now, for a child's metrics.listen.
 * Another program may take it before the child binds; the child then
 * fails, is restarted and says so in its log. */
static char *dev_free_addr(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        sl_fatal(1, "dev: no free port for metrics: %s", strerror(errno));
    close(fd);
    return xasprintf("127.0.0.1:%d", ntohs(a.sin_port));
}

static char *self_bindir(void)
{
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return xstrdup(".");
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = 0;
    return xstrdup(buf);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        sl_fatal(1, "dev: cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static pid_t spawn(dev_state *st, int which)
{
    dev_child *c = &st->ch[which];
    char log[4096], pidf[4096];
    snprintf(log, sizeof log, "%s/logs/%s.log", st->dir, child_names[which]);
    snprintf(pidf, sizeof pidf, "%s/pids/%s.pid", st->dir, child_names[which]);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        sl_fatal(1, "dev: fork: %s", strerror(errno));
    if (pid == 0) {
        /* A process group of its own: Ctrl-C on the terminal reaches dev
         * alone, which stops the daemons before the broker; and the child
         * goes when dev dies, however it dies. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        setenv("SLUICE_LOG_FORMAT", "json", 1);
        if (st->bootstrap)
            setenv("SLUICE_KAFKA_BOOTSTRAP", st->bootstrap, 1);
        /* The scheduler and the sender each serve /metrics on a port of
         * their own, whatever metrics.listen the config holds. */
        if (c->metrics)
            setenv("SLUICE_METRICS_LISTEN", c->metrics, 1);
        execv(c->argv[0], c->argv);
        fprintf(stderr, "exec %s: %s\n", c->argv[0], strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    c->last_start_ms = sl_mono_ms();
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "%d\n", (int)pid);
    write_file(pidf, pidtext);
    return pid;
}

static char *read_port_file(const char *path, pid_t pid, int timeout_ms)
{
    int64_t deadline = sl_mono_ms() + timeout_ms;
    while (sl_mono_ms() < deadline) {
        FILE *f = fopen(path, "r");
        if (f) {
            char line[512];
            char *ok = fgets(line, sizeof line, f);
            fclose(f);
            if (ok) {
                line[strcspn(line, "\r\n")] = 0;
                if (*line)
                    return xstrdup(line);
            }
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return NULL;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static char **argv_new(const char *first, ...)
{
    size_t n = 0, cap = 16;
    char **v = xcalloc(cap, sizeof *v);
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *))
        v[n++] = xstrdup(a);
    va_end(ap);
    v[n] = NULL;
    return v;
}

static void argv_free(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

/* Frees what st holds (its children stopped) and lets go of the state
 * directory's lock. */
static void dev_state_free(dev_state *st, int lockfd)
{
    for (int i = 0; i < CH_MAX; i++) {
        argv_free(st->ch[i].argv);
        free(st->ch[i].metrics);
    }
    free(st->bootstrap);
    free(st->capture_addr);
    free(st->config_path);
    free(st->bindir);
    free(st->dir);
    close(lockfd);
}

/* SIGTERM every child in `which` at once, wait at most grace_ms for all of
 * them, then SIGKILL whoever is left: whatever state a child is in (a
 * sender draining toward a dead destination, a scheduler waiting on
 * Kafka), dev stops within the grace. Each child's drain is bounded by its
 * own config, and the dev broker holds everything in memory anyway. An
 * interrupt while waiting kills them at once. When the stop was asked for
 * (an interrupt) or takes a while, dev says on stderr whom it waits for. */
static void stop_children(dev_state *st, const int *which, int n, int grace_ms)
{
    sig_atomic_t seen = dev_stop;
    if (dev_kill_now)
        grace_ms = 0;
    for (int i = 0; i < n; i++)
        if (st->ch[which[i]].pid > 0)
            kill(st->ch[which[i]].pid, grace_ms ? SIGTERM : SIGKILL);
    int64_t start = sl_mono_ms(), deadline = start + grace_ms;
    bool said = false;
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) {
            dev_child *c = &st->ch[which[i]];
            int status;
            if (c->pid > 0 && waitpid(c->pid, &status, WNOHANG) == 0)
                left++;
            else
                c->pid = 0;
        }
        if (!left)
            return;
        if (sl_mono_ms() > deadline)
            break;
        if (dev_stop > seen) {
            fprintf(stderr, "sluice dev: interrupted again; killing them\n");
            dev_kill_now = true;
            grace_ms = 0;
            break;
        }
        if (!said && (seen || sl_mono_ms() - start > 1000)) {
            char names[128] = "";
            for (int i = 0; i < n; i++)
                if (st->ch[which[i]].pid > 0)
                    snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                             names[0] ? ", " : "", child_names[which[i]]);
            fprintf(stderr,
                    "sluice dev: stopping: waiting up to %d s for %s (Ctrl-C again kills)\n",
                    (grace_ms + 999) / 1000, names);
            said = true;
        }
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++) {
        dev_child *c = &st->ch[which[i]];
        if (c->pid <= 0)
            continue;
        if (grace_ms > 0)
            sl_warn("dev: %s did not stop within %d ms of SIGTERM; killing it",
                    child_names[which[i]], grace_ms);
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
    }
}

static void stop_child(dev_state *st, int which, int grace_ms)
{
    stop_children(st, &which, 1, grace_ms);
}

/* Run `sluice topics ensure` on st->bootstrap and wait for it; 0 on success. */
static int ensure_topics(dev_state *st)
{
    char bin[4096], log[4096];
    snprintf(bin, sizeof bin, "%s/sluice", st->bindir);
    snprintf(log, sizeof log, "%s/logs/topics.log", st->dir);
    pid_t pid = fork();
    if (pid < 0)
        sl_fatal(1, "dev: fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        setenv("SLUICE_KAFKA_BOOTSTRAP", st->bootstrap, 1);
        execl(bin, bin, "topics", "ensure", "-c", st->config_path, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Restart children that died. Returns false when the broker died. */
static bool supervise(dev_state *st)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < CH_MAX; i++) {
            dev_child *c = &st->ch[i];
            if (c->pid != pid)
                continue;
            c->pid = 0;
            char how[64];
            if (WIFSIGNALED(status))
                snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
            else
                snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
            if (i == CH_BROKER) {
                sl_error("dev: the dev broker %s; its topics were in memory, stopping", how);
                return false;
            }
            c->restarts++;
            sl_warn("dev: %s %s; restarting it (restart %d, log %s/logs/%s.log)", child_names[i],
                    how, c->restarts, st->dir, child_names[i]);
            /* Back off a crash loop; a single death restarts at once. */
            if (sl_mono_ms() - c->last_start_ms < 1000) {
                struct timespec ts = {0, 500 * 1000000};
                nanosleep(&ts, NULL);
            }
            spawn(st, i);
        }
    }
    return true;
}

static const char demo_template[] =
    "From: Sluice Demo <demo@sluice.example>\r\n"
    "To: {{name}} <{{email}}>\r\n"
    "Subject: Hello {{name}}, your sluice demo message {{n}}\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello {{name}},\r\n"
    "\r\n"
    "This is demo message {{n}} of the sluice pipeline: producer, Kafka,\r\n"
    "classify, shape, sender, SMTP.\r\n"
    "\r\n"
    "-- \r\n"
    "sluice\r\n";

static const char *const demo_domains[] = {"example.com", "example.net", "example.org",
                                           "mail.test",   "gmail.test",  "outlook.test",
                                           "yahoo.test",  "corp.test"};

typedef struct demo_ack {
    size_t acked, failed;
} demo_ack;

static void demo_ack_cb(void *arg, int err)
{
    demo_ack *a = arg;
    if (err)
        a->failed++;
    else
        a->acked++;
}

/* Job ids of this demo (common/map.h), each with its counters. */
typedef struct demo_job {
    uint8_t final; /* 0 none, else EventType of the first final event */
    uint16_t delivered;
} demo_job;

typedef struct demo_set {
    sl_map ids;      /* job id -> demo_job in jobs[] */
    demo_job *jobs;  /* one per published message, owned */
    size_t n;
} demo_set;

static void set_free(demo_set *s)
{
    sl_map_free(&s->ids);
    free(s->jobs);
}

static int publish_demo(const sl_config *cfg, long n, demo_set *set)
{
    char *err = NULL;
    sl_producer *p = sl_producer_new(cfg, NULL, &err);
    if (!p) {
        fprintf(stderr, "sluice dev: %s\n", err);
        free(err);
        return 1;
    }
    demo_ack ack = {0, 0};
    /* The template first: the sender looks it up by id. */
    sl_template_msg t = SLUICE__V1__TEMPLATE__INIT;
    t.version = SLUICE_WIRE_VERSION;
    t.id = "sluice-demo";
    t.body.data = (uint8_t *)demo_template;
    t.body.len = sizeof demo_template - 1;
    char *vars[] = {"name", "email", "n"};
    t.variables = vars;
    t.n_variables = 3;
    t.updated_at_ms = sl_now_ms();
    sl_buf b = SL_BUF_INIT;
    sl_pack(&t.base, &b);
    char *ttopic = sl_config_topic(cfg, "templates");
    sl_producer_send(p, ttopic, t.id, strlen(t.id), b.data, b.len, NULL, 0, demo_ack_cb, &ack);
    free(ttopic);
    if (sl_producer_flush(p, 30000) || ack.failed) {
        fprintf(stderr, "sluice dev: storing the demo template failed\n");
        sl_producer_free(p);
        sl_buf_free(&b);
        return 1;
    }
    char *jtopic = sl_config_topic(cfg, "jobs");
    static const char *const names[] = {"Ada", "Grace", "Linus", "Radia", "Ken", "Barbara"};
    for (long i = 0; i < n; i++) {
        char id[27], rcpt[128], num[24];
        const char *domain = demo_domains[i % (sizeof demo_domains / sizeof demo_domains[0])];
        const char *name = names[i % 6];
        sl_job_id_new(id);
        snprintf(rcpt, sizeof rcpt, "user%ld@%s", i, domain);
        snprintf(num, sizeof num, "%ld", i + 1);
        sl_map_put(&set->ids, id, &set->jobs[set->n++]);
        sl_job j = SLUICE__V1__JOB__INIT;
        j.version = SLUICE_WIRE_VERSION;
        j.job_id = id;
        j.tenant = "demo";
        j.campaign = "demo";
        j.priority = SLUICE__V1__PRIORITY__PRIORITY_BULK;
        j.mail_from = "demo@sluice.example";
        char *rcpts[] = {rcpt};
        j.recipients = rcpts;
        j.n_recipients = 1;
        j.domain = (char *)domain;
        j.template_id = "sluice-demo";
        Sluice__V1__Job__VarsEntry v[3] = {SLUICE__V1__JOB__VARS_ENTRY__INIT,
                                           SLUICE__V1__JOB__VARS_ENTRY__INIT,
                                           SLUICE__V1__JOB__VARS_ENTRY__INIT};
        v[0].key = "name", v[0].value = (char *)name;
        v[1].key = "email", v[1].value = rcpt;
        v[2].key = "n", v[2].value = num;
        Sluice__V1__Job__VarsEntry *vp[3] = {&v[0], &v[1], &v[2]};
        j.vars = vp;
        j.n_vars = 3;
        j.created_at_ms = sl_now_ms();
        sl_pack(&j.base, &b);
        int rc = sl_producer_send(p, jtopic, domain, strlen(domain), b.data, b.len, NULL, 0,
                                  demo_ack_cb, &ack);
        if (rc) {
            fprintf(stderr, "sluice dev: publishing a demo job failed: %s\n", sl_strerror(rc));
            break;
        }
        if (sl_producer_outstanding(p) > 50000)
            sl_producer_poll(p, 10);
    }
    int rc = sl_producer_flush(p, 120000);
    free(jtopic);
    sl_buf_free(&b);
    sl_producer_free(p);
    if (rc || ack.failed) {
        fprintf(stderr, "sluice dev: %zu demo jobs were not acknowledged by Kafka\n",
                (size_t)n - ack.acked);
        return 1;
    }
    return 0;
}

/* The rate counts from the first event (first_ms; 0: none yet), so that
 * start-up does not dilute it. */
static void progress(long done, long total, int64_t start_ms, int64_t first_ms, bool tty)
{
    if (!tty)
        return;
    double el = (double)(sl_mono_ms() - start_ms) / 1000.0;
    double del = first_ms ? (double)(sl_mono_ms() - first_ms) / 1000.0 : 0;
    double rate = del > 0 ? done / del : 0;
    int width = 40, fill = total ? (int)(width * done / total) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r[%s] %ld/%ld  %.0f msg/s  %.1fs ", bar, done, total, rate, el);
    fflush(stderr);
}

/* dev_start_ms: when dev began starting its children. The summary reports
 * start-up (until the first event of a demo job: broker, daemons, consumer
 * groups, publishing) apart from delivery (first event to last final
 * event), and the rate over delivery alone. */
static int run_demo(dev_state *st, const sl_config *cfg, long n, int timeout_s,
                    int64_t dev_start_ms)
{
    demo_set set = {.jobs = xcalloc((size_t)n + 1, sizeof(demo_job))};
    sl_map_init(&set.ids);
    int64_t start = sl_mono_ms(), first_ms = 0, last_ms = 0;
    bool tty = isatty(STDERR_FILENO);
    if (!st->json)
        fprintf(stderr, "sluice dev: publishing %ld demo messages\n", n);
    if (publish_demo(cfg, n, &set)) {
        set_free(&set);
        return 1;
    }
    char *err = NULL;
    char *etopic = sl_config_topic(cfg, "events");
    sl_reader *r = sl_reader_new(cfg, etopic, 0, &err);
    free(etopic);
    if (!r) {
        fprintf(stderr, "sluice dev: %s\n", err);
        free(err);
        return 1;
    }
    long counts[16] = {0}, finals = 0, duplicates = 0, deferred = 0;
    /* Jobs that only defer (a dead --route, say) would leave the bar at 0
     * with no word why until the timeout: say it, once, after a while. */
    char *last_defer = NULL;
    bool told_defer = false;
    int64_t last_draw = 0;
    int rc = 0;
    while (finals < n) {
        if (dev_stop) {
            rc = 1;
            break;
        }
        if (!supervise(st)) {
            rc = 1;
            break;
        }
        if (sl_mono_ms() - start > (int64_t)timeout_s * 1000) {
            fprintf(stderr, "\nsluice dev: timed out after %ds with %ld of %ld jobs final\n",
                    timeout_s, finals, n);
            rc = 1;
            break;
        }
        rd_kafka_message_t *m = sl_reader_next(r, 100);
        if (m) {
            sl_event *e = NULL;
            const char *why;
            if (!sl_event_decode(m->payload, m->len, &e, &why) && e->job_id) {
                demo_job *job = sl_map_get(&set.ids, e->job_id);
                if (job) {
                    if (!first_ms)
                        first_ms = sl_mono_ms();
                    switch (e->type) {
                    case SLUICE__V1__EVENT_TYPE__EVENT_DEFERRED:
                        deferred++;
                        free(last_defer);
                        last_defer = xstrdup(e->reply && *e->reply     ? e->reply
                                             : e->reason && *e->reason ? e->reason
                                                                       : "?");
                        last_defer[strcspn(last_defer, "\r\n")] = 0;
                        break;
                    case SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED:
                        if (++job->delivered > 1)
                            duplicates++;
                        /* fall through */
                    case SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED:
                    case SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED:
                    case SLUICE__V1__EVENT_TYPE__EVENT_SUPPRESSED:
                    case SLUICE__V1__EVENT_TYPE__EVENT_REJECTED:
                        if (!job->final) {
                            job->final = (uint8_t)e->type;
                            counts[e->type]++;
                            finals++;
                            last_ms = sl_mono_ms();
                        }
                        break;
                    default:
                        break;
                    }
                }
            }
            sl_event_free(e);
            rd_kafka_message_destroy(m);
        }
        if (sl_mono_ms() - last_draw > 100) {
            progress(finals, n, start, first_ms, tty && !st->json);
            last_draw = sl_mono_ms();
        }
        if (!told_defer && last_defer && finals < n && sl_mono_ms() - start > 15000 &&
            deferred >= n - finals) {
            fprintf(stderr,
                    "%ssluice dev: %ld of %ld jobs not final after %lds; %ld attempts deferred, "
                    "the last: %s\n",
                    tty && !st->json ? "\n" : "", n - finals, n,
                    (long)((sl_mono_ms() - start) / 1000), deferred, last_defer);
            told_defer = true;
        }
    }
    progress(finals, n, start, first_ms, tty && !st->json);
    if (tty && !st->json)
        fputc('\n', stderr);
    sl_reader_free(r);
    free(last_defer);
    double el = (double)(sl_mono_ms() - dev_start_ms) / 1000.0;
    double startup = first_ms ? (double)(first_ms - dev_start_ms) / 1000.0 : el;
    double delivery = first_ms && last_ms ? (double)(last_ms - first_ms) / 1000.0 : 0;
    /* One message, or all at once: the rate over the delivery window is
     * meaningless below a millisecond; count that as one. */
    double rate = finals ? finals / (delivery > 0.001 ? delivery : 0.001) : 0;
    long delivered = counts[SLUICE__V1__EVENT_TYPE__EVENT_DELIVERED];
    long bounced = counts[SLUICE__V1__EVENT_TYPE__EVENT_BOUNCED];
    long other = counts[SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED] +
                 counts[SLUICE__V1__EVENT_TYPE__EVENT_SUPPRESSED] +
                 counts[SLUICE__V1__EVENT_TYPE__EVENT_REJECTED];
    int restarts = 0;
    for (int i = 0; i < CH_MAX; i++)
        restarts += st->ch[i].restarts;
    if (st->json) {
        printf("{\"messages\":%ld,\"delivered\":%ld,\"bounced\":%ld,\"deferred\":%ld,"
               "\"expired\":%ld,\"suppressed\":%ld,\"rejected\":%ld,\"unfinished\":%ld,"
               "\"duplicates\":%ld,\"restarts\":%d,\"elapsed_s\":%.3f,\"startup_s\":%.3f,"
               "\"delivery_s\":%.3f,\"messages_per_second\":%.1f,\"mail_dir\":",
               n, delivered, bounced, deferred, counts[SLUICE__V1__EVENT_TYPE__EVENT_EXPIRED],
               counts[SLUICE__V1__EVENT_TYPE__EVENT_SUPPRESSED],
               counts[SLUICE__V1__EVENT_TYPE__EVENT_REJECTED], n - finals, duplicates, restarts,
               el, startup, delivery, rate);
        sl_buf js = SL_BUF_INIT;
        char mail[4096];
        snprintf(mail, sizeof mail, "%s/mail", st->dir);
        sl_buf_json_str(&js, mail, strlen(mail));
        printf("%s}\n", js.data);
        sl_buf_free(&js);
    } else {
        printf("\nsluice dev demo summary\n"
               "  messages     %ld\n"
               "  delivered    %ld\n"
               "  bounced      %ld\n"
               "  deferred     %ld (attempts that were retried)\n"
               "  other final  %ld (expired, suppressed, rejected)\n"
               "  unfinished   %ld\n"
               "  duplicates   %ld\n"
               "  restarts     %d\n"
               "  start-up     %.2f s (broker, daemons, publishing, until the first event)\n"
               "  delivery     %.2f s (first event to last final event)\n"
               "  throughput   %.0f messages/s (over the delivery time)\n"
               "  elapsed      %.2f s in all\n",
               n, delivered, bounced, deferred, other, n - finals, duplicates, restarts, startup,
               delivery, rate, el);
        if (st->route)
            printf("  mail         sent to %s (--route)\n", st->route);
        else
            printf("  mail         %s/mail\n", st->dir);
    }
    fflush(stdout);
    set_free(&set);
    return rc ? rc : (delivered + bounced + other == n ? 0 : 1);
}

/* --route must be HOST:PORT with a host that resolves: otherwise every job
 * would defer with "cannot resolve MX host" until the demo timed out. */
static int dev_check_route(const char *route)
{
    const char *colon = strrchr(route, ':');
    char *e = NULL;
    long port = colon ? strtol(colon + 1, &e, 10) : 0;
    if (!colon || colon == route || !e || e == colon + 1 || *e || port < 1 || port > 65535) {
        fprintf(stderr, "sluice dev: --route: '%s' is not HOST:PORT\n", route);
        return -1;
    }
    char *host = xstrndup(route, (size_t)(colon - route));
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, colon + 1, &hints, &res);
    if (g != 0)
        fprintf(stderr, "sluice dev: --route: cannot resolve '%s': %s\n", host, gai_strerror(g));
    if (res)
        freeaddrinfo(res);
    free(host);
    return g ? -1 : 0;
}

static void dev_usage(FILE *f)
{
    fputs("usage: sluice dev [-c FILE] [--demo N] [--json] [--route HOST:PORT] [--dir DIR]\n"
          "                  [--timeout SECONDS] [--kafka BOOTSTRAP]\n"
          "Runs the dev broker, the scheduler, a sender and a capture SMTP server locally.\n"
          "  --demo N     send N demo messages through the pipeline, print a summary, exit\n"
          "  --json       print the summary as one JSON object\n"
          "  --route H:P  deliver every message to this SMTP server instead of the capture\n"
          "  --dir DIR    working directory (config, logs, pids, captured mail); one\n"
          "               sluice dev per directory\n"
          "  -c FILE      run on this configuration instead of writing one (its kafka\n"
          "               bootstrap is replaced by the dev broker's)\n"
          "  --timeout S  with --demo: give up after S seconds (default 600)\n"
          "  --kafka B    use the Kafka cluster at B (host:port[,host:port...]) instead\n"
          "               of the dev broker; missing topics are created\n",
          f);
}

int cli_dev(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"demo", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},         {"route", required_argument, NULL, 'r'},
        {"dir", required_argument, NULL, 'd'},    {"timeout", required_argument, NULL, 't'},
        {"kafka", required_argument, NULL, 'k'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    dev_state st = {0};
    const char *config = NULL, *route = NULL, *kafka = NULL;
    long demo = -1;
    int timeout_s = 600;
    int o, ostatus = -1;
    optind = 1;
    while ((o = cli_opt_next(argc, argv, "c:n:jr:d:t:k:h", opts, &config, dev_usage, &ostatus)) != -1) {
        switch (o) {
        case 'n': {
            char *e;
            demo = strtol(optarg, &e, 10);
            if (e == optarg || *e || demo < 1) {
                fprintf(stderr, "sluice dev: --demo: '%s' is not a count of messages (1 or more)\n",
                        optarg);
                free(st.dir);
                return 2;
            }
            break;
        }
        case 'j': st.json = true; break;
        case 'r': route = optarg; break;
        case 'd': st.dir = xstrdup(optarg); break;
        case 't': timeout_s = atoi(optarg); break;
        case 'k': kafka = optarg; break;
        }
    }
    if (ostatus >= 0)
        return ostatus;
    if (optind < argc || (demo != -1 && demo < 1)) {
        dev_usage(stderr);
        return 2;
    }
    if (route && dev_check_route(route) != 0) {
        free(st.dir);
        return 2;
    }
    sl_log_init("dev", SL_LOG_INFO);
    /* Validate a given config before starting anything. */
    if (config) {
        sl_config *probe = sl_config_load_or_exit(config);
        sl_config_free(probe);
    }
    if (!st.dir) {
        char tmpl[] = "/tmp/sluice-dev.XXXXXX";
        if (!mkdtemp(tmpl))
            sl_fatal(1, "dev: mkdtemp: %s", strerror(errno));
        st.dir = xstrdup(tmpl);
    }
    char path[4096];
    mkdir(st.dir, 0755);
    /* One instance per directory: a second would overwrite the first's
     * config and pid files. The lock lives as long as this process. */
    snprintf(path, sizeof path, "%s/dev.lock", st.dir);
    int lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        if (lockfd >= 0) {
            ssize_t n = pread(lockfd, pid, sizeof pid - 1, 0);
            pid[n > 0 ? strcspn(pid, "\n") : 0] = 0;
        }
        fprintf(stderr, "sluice dev: %s is in use by another sluice dev%s%s%s; stop it or pick "
                        "another --dir\n",
                st.dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
        if (lockfd >= 0)
            close(lockfd);
        free(st.dir);
        return 1;
    }
    char pidtext[32];
    int pl = snprintf(pidtext, sizeof pidtext, "%d\n", (int)getpid());
    if (ftruncate(lockfd, 0) != 0 || pwrite(lockfd, pidtext, (size_t)pl, 0) != pl)
        sl_warn("dev: cannot write %s", path);
    const char *subdirs[] = {"logs", "pids", "mail"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", st.dir, subdirs[i]);
        mkdir(path, 0755);
    }
    st.bindir = self_bindir();
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    st.route = route;
    int64_t dev_start_ms = sl_mono_ms();
    /* 1. the broker (none with --kafka) */
    char bin[4096], portf[4096];
    snprintf(bin, sizeof bin, "%s/sluice-devbroker", st.bindir);
    snprintf(portf, sizeof portf, "%s/pids/devbroker.bootstrap", st.dir);
    unlink(portf);
    if (kafka) {
        st.bootstrap = xstrdup(kafka);
    } else {
        st.ch[CH_BROKER].argv = config ? argv_new(bin, "-c", config, "--port-file", portf, NULL)
                                       : argv_new(bin, "--port-file", portf, NULL);
        spawn(&st, CH_BROKER);
        st.bootstrap = read_port_file(portf, st.ch[CH_BROKER].pid, 30000);
    }
    if (!st.bootstrap) {
        fprintf(stderr, "sluice dev: the dev broker did not start (see %s/logs/devbroker.log)\n",
                st.dir);
        stop_child(&st, CH_BROKER, 1000);
        return 1;
    }
    /* 2. the capture server */
    snprintf(bin, sizeof bin, "%s/sluice", st.bindir);
    char maildir[4096];
    snprintf(maildir, sizeof maildir, "%s/mail", st.dir);
    snprintf(portf, sizeof portf, "%s/pids/capture.port", st.dir);
    unlink(portf);
    st.ch[CH_CAPTURE].argv = argv_new(bin, "capture", "--listen", "127.0.0.1:0", "--dir", maildir,
                                      "--port-file", portf, NULL);
    spawn(&st, CH_CAPTURE);
    char *cport = read_port_file(portf, st.ch[CH_CAPTURE].pid, 30000);
    if (!cport) {
        fprintf(stderr, "sluice dev: the capture server did not start (see %s/logs/capture.log)\n",
                st.dir);
        stop_child(&st, CH_BROKER, 1000);
        return 1;
    }
    /* Later restarts of the capture server keep its port. */
    argv_free(st.ch[CH_CAPTURE].argv);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%s", cport);
    st.ch[CH_CAPTURE].argv =
        argv_new(bin, "capture", "--listen", listen, "--dir", maildir, NULL);
    st.capture_addr = xstrdup(listen);
    free(cport);
    /* 3. the config; each daemon gets a metrics port of its own, the
     * scheduler's in the written config so that `sluice shaping show`
     * finds it through SLUICE_CONFIG. */
    st.ch[CH_SCHEDULER].metrics = dev_free_addr();
    st.ch[CH_SENDER].metrics = dev_free_addr();
    if (config) {
        st.config_path = xstrdup(config);
    } else {
        snprintf(path, sizeof path, "%s/sluice.yaml", st.dir);
        char *yaml = xasprintf(
            "# Written by `sluice dev`: %s, one local pool, every domain\n"
            "# routed to %s.\n"
            "kafka:\n"
            "  bootstrap: %s\n"
            "  session_timeout_ms: 6000\n"
            "  heartbeat_interval_ms: 1000\n"
            "  commit_interval_ms: 500\n"
            "routes:\n"
            "  \"*\": %s\n"
            "pools:\n"
            "  default:\n"
            "    - { ip: 127.0.0.1, ehlo: localhost }\n"
            "shaping:\n"
            "  default: { max_message_rate: 100000/s, max_connections: 20, "
            "max_messages_per_connection: 1000 }\n"
            "retry: { delays: [1s, 5s, 30s], expiry: 1h }\n"
            "sender:\n"
            "  drain_timeout: 3s\n"
            "  # One destination (the capture server or --route) takes all.\n"
            "  max_inflight_per_destination: 5000\n"
            "# The scheduler's metrics (sluice shaping show); dev gives the sender\n"
            "# its own, %s, through SLUICE_METRICS_LISTEN.\n"
            "metrics:\n"
            "  listen: %s\n",
            kafka ? "the --kafka cluster" : "the dev broker",
            route ? "the --route server" : "the capture server", st.bootstrap,
            route ? route : st.capture_addr, st.ch[CH_SENDER].metrics,
            st.ch[CH_SCHEDULER].metrics);
        write_file(path, yaml);
        free(yaml);
        st.config_path = xstrdup(path);
    }
    sl_config *cfg = sl_config_load_or_exit(st.config_path);
    free(cfg->kafka.bootstrap);
    cfg->kafka.bootstrap = xstrdup(st.bootstrap);
    if (kafka) {
        char why[512];
        int bad = sl_kafka_probe(cfg, 10000, why, sizeof why) != 0;
        if (bad)
            fprintf(stderr, "sluice dev: --kafka: %s\n", why);
        else if ((bad = ensure_topics(&st) != 0))
            fprintf(stderr, "sluice dev: --kafka: creating the topics on %s failed (see %s/logs/"
                            "topics.log)\n",
                    st.bootstrap, st.dir);
        if (bad) {
            stop_child(&st, CH_CAPTURE, 1000);
            sl_config_free(cfg);
            dev_state_free(&st, lockfd);
            return 1;
        }
    }
    /* 4. scheduler and sender */
    snprintf(bin, sizeof bin, "%s/sluice-scheduler", st.bindir);
    st.ch[CH_SCHEDULER].argv = argv_new(bin, "-c", st.config_path, NULL);
    spawn(&st, CH_SCHEDULER);
    snprintf(bin, sizeof bin, "%s/sluice-sender", st.bindir);
    st.ch[CH_SENDER].argv = argv_new(bin, "-c", st.config_path, NULL);
    spawn(&st, CH_SENDER);
    if (!st.json) {
        if (route)
            fprintf(stderr, "sluice dev: broker %s, mail goes to %s (--route), config %s\n",
                    st.bootstrap, route, st.config_path);
        else
            fprintf(stderr, "sluice dev: broker %s, capture smtp %s, config %s\n", st.bootstrap,
                    st.capture_addr, st.config_path);
        fprintf(stderr,
                "            metrics: scheduler http://%s/metrics, sender http://%s/metrics\n"
                "            logs %s/logs",
                st.ch[CH_SCHEDULER].metrics, st.ch[CH_SENDER].metrics, st.dir);
        if (route)
            fputc('\n', stderr);
        else
            fprintf(stderr, ", mail %s/mail\n", st.dir);
    }

    int rc = 0;
    if (demo > 0) {
        rc = run_demo(&st, cfg, demo, timeout_s, dev_start_ms);
    } else {
        fprintf(stderr, "sluice dev: running; Ctrl-C stops\n");
        if (!config)
            fprintf(stderr,
                    "sluice dev: next, in another shell:\n"
                    "  export SLUICE_CONFIG=%s\n"
                    "  sluice send --from you@example.net --to someone@example.org "
                    "--subject hi --body-file FILE\n",
                    st.config_path);
        else /* the file's own bootstrap and metrics.listen are not dev's */
            fprintf(stderr,
                    "sluice dev: next, in another shell:\n"
                    "  export SLUICE_CONFIG=%s SLUICE_KAFKA_BOOTSTRAP=%s\n"
                    "  sluice shaping show --metrics %s\n",
                    st.config_path, st.bootstrap, st.ch[CH_SCHEDULER].metrics);
        while (!dev_stop && supervise(&st)) {
            struct timespec ts = {0, 100 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    /* Stop in dependency order (the daemons drain into Kafka before it
     * goes), each step bounded: a few seconds in all, whatever they do. */
    const int daemons[] = {CH_SENDER, CH_SCHEDULER};
    stop_children(&st, daemons, 2, 4000);
    const int rest[] = {CH_CAPTURE, CH_BROKER};
    stop_children(&st, rest, 2, 2000);
    sl_config_free(cfg);
    dev_state_free(&st, lockfd);
    return rc;
}
