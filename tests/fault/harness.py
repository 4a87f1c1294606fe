"""harness - the reliability fault suite's cluster, load, faults and books.

A Cluster is one private sluice deployment made of separate processes: a
sluice-devbroker (with its control socket), a recording sluice-testsink,
one or more sluice-scheduler and sluice-sender processes, all on ephemeral
ports, in one temp dir. A scenario publishes N jobs, breaks something while
they flow, and then reconciles:

    every job id published ends in a final event (DELIVERED, BOUNCED,
    EXPIRED, SUPPRESSED, REJECTED)                        -> lost = 0
    every DELIVERED job is at the sink                    -> phantom = 0
    copies at the sink beyond the first are counted       -> duplicates = D

and prints one line per scenario:

    scenario=X jobs=N lost=0 duplicates=D final=DELIVERED:n,... ...

(also appended to $SLUICE_FAULT_REPORT when set; scripts/fault.sh collects
them). N is $SLUICE_FAULT_JOBS (default 2000). Every wait is a condition
with a deadline; a fault that must last a given time is held that long.

Importable by any tests/fault/test_*.py; the integration helpers
(sluicetest: Proc, wait_for, start_sink) are reused from
tests/integration.

SLUICE_KAFKA=real runs a scenario that supports it on a real Apache Kafka
instead: a 3-node KRaft cluster started with scripts/kafka.sh
(replication factor 3, min.insync.replicas 2), one per test process and
shared by its scenarios (a JVM cluster takes seconds to start and stop).
Each scenario has its own topics (topic_prefix fault.<n>.<name>.),
created with `sluice topics ensure`; the consumer groups are sluice's own
and shared, which is harmless as scenarios run one after another.
Cluster.real is then a RealKafka (kill, pause, restart a node, move
partition leaders) and Cluster.ctl is None: the devbroker's injected
request errors and latency do not exist there. A scenario's close()
leaves the shared cluster whole again: a stopped node is continued, a
killed one started again.
"""

import atexit

import collections
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from sluicetest import (Proc, bin_path, free_port, read_complete, start_devbroker,  # noqa: E402
                        start_sink, wait_for)

JOBS = int(os.environ.get("SLUICE_FAULT_JOBS", "2000"))
REAL = os.environ.get("SLUICE_KAFKA", "dev") == "real"
KAFKA_SH = os.path.join(HERE, "..", "..", "scripts", "kafka.sh")
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "kafka"))

import kafka_meta  # noqa: E402
FINAL = ("DELIVERED", "BOUNCED", "EXPIRED", "SUPPRESSED", "REJECTED")
KEEP = os.environ.get("SLUICE_FAULT_KEEP")  # keep the temp dir for post-mortems


def load_seconds(n):
    """How long a kill scenario spreads its load over: long enough that the
    faults land mid-run at any size."""
    return 12 + n / 1000.0


# The kill scenarios' sender holds at most SENDER_INFLIGHT dispatches in
# memory (sender.max_inflight) and their scheduler buffers SCHED_BUFFERED
# (scheduler.max_buffered); what a kill may repeat derives from them.
SENDER_INFLIGHT = 400
SCHED_BUFFERED = 500


def kill_cluster(name):
    """The Cluster of the kill scenarios (test_kill, test_ledger): two
    sender workers with the in-flight and buffer caps above."""
    return Cluster(name, sender_yaml="{ workers: 2, drain_timeout: 20s, max_inflight: %d, "
                   "max_inflight_per_destination: %d }" % (SENDER_INFLIGHT, SENDER_INFLIGHT),
                   extra_yaml="scheduler: { max_buffered: %d }\n" % SCHED_BUFFERED)


def log(msg):
    sys.stderr.write("[fault %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class Control:
    """The devbroker's control socket (docs/devbroker.md)."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.rf = self.sock.makefile("r")

    def command(self, line, expect_ok=True):
        self.sock.sendall((line + "\n").encode())
        answer = self.rf.readline().strip()
        log("control: %s -> %s" % (line, answer))
        if expect_ok and not answer.startswith("ok"):
            raise AssertionError("devbroker control %r answered %r" % (line, answer))
        return answer

    def close(self):
        self.rf.close()
        self.sock.close()


class RealKafka:
    """A 3-node Apache Kafka cluster of scripts/kafka.sh in dir, for one
    scenario. Nodes are 1..3; faults act on a node's process id."""

    def __init__(self, dir, nodes=3):
        self.dir = dir
        self.nodes = nodes
        self.attached = False
        r = subprocess.run(["bash", KAFKA_SH, "start", "--nodes", str(nodes), "--dir", dir],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise AssertionError("scripts/kafka.sh start failed:\n%s\n%s" % (r.stdout, r.stderr))
        self.bootstrap = r.stdout.strip().splitlines()[-1]

    @classmethod
    def attach(cls, dir):
        """The cluster that scripts/kafka.sh already runs in dir (the kafka
        tier's shared one, started by a ctest fixture): used, never
        stopped."""
        k = cls.__new__(cls)
        k.dir, k.attached = dir, True
        env = {}
        with open(os.path.join(dir, "cluster.env")) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                env[key] = value
        k.nodes, k.bootstrap = int(env["NODES"]), env["BOOTSTRAP"]
        return k

    def pid(self, node):
        with open(os.path.join(self.dir, "node%d" % node, "pid")) as f:
            return int(f.read())

    def alive(self, node):
        try:
            os.kill(self.pid(node), 0)
            return True
        except (OSError, ValueError):
            return False

    def signal(self, node, sig):
        log("kafka node %d (pid %d): %s" % (node, self.pid(node), signal.Signals(sig).name))
        os.kill(self.pid(node), sig)

    def kill(self, node):
        """SIGKILL a node and wait until it is gone."""
        self.signal(node, signal.SIGKILL)
        wait_for(lambda: not self.alive(node), 30, "kafka node %d gone" % node, interval=0.1)

    def restart(self, node):
        """Start a stopped node again on its data, in the background: the
        JVM takes seconds to start, and the scenario goes on meanwhile.
        Returns the starter; wait_back() waits for it."""
        log("kafka node %d: start" % node)
        return subprocess.Popen(["bash", KAFKA_SH, "start-node", str(node), "--dir", self.dir],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_back(self, starter, timeout=180):
        out, _ = starter.communicate(timeout=timeout)
        if starter.returncode != 0:
            raise AssertionError("kafka.sh start-node: %s" % out)

    def leaders(self, topic):
        """partition -> {"leader", "replicas", "isr"} as the cluster says."""
        md = kafka_meta.metadata(self.bootstrap, [topic])
        return md["topics"][topic]["partitions"]

    def coordinator(self, group):
        """The node that coordinates a consumer group, as the admin API
        (FindCoordinator, through ConsumerGroupCommand) reports it."""
        r = self.tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                      "--bootstrap-server", self.bootstrap, "--describe", "--group", group,
                      "--state")
        m = re.search(r"\((\d+)\)", r.stdout)
        if r.returncode != 0 or not m:
            raise AssertionError("coordinator of %s: %s %s" % (group, r.stdout, r.stderr))
        return int(m.group(1))

    def tool(self, *args, timeout=120):
        r = subprocess.run(["bash", KAFKA_SH, "tool"] + list(args), capture_output=True,
                           text=True, timeout=timeout, env=dict(os.environ, SLUICE_KAFKA_DIR=self.dir))
        log("kafka tool %s -> %d %s" % (args[0], r.returncode, (r.stdout + r.stderr).strip()[-300:]))
        return r

    def topic_configs(self):
        """topic -> {key: value} of every topic's dynamic configs, as the
        admin API (DescribeConfigs, through ConfigCommand) reports them."""
        r = self.tool("configs", "--bootstrap-server", self.bootstrap, "--entity-type", "topics",
                      "--describe")
        if r.returncode != 0:
            raise AssertionError("ConfigCommand --describe: %s %s" % (r.stdout, r.stderr))
        out, cur = {}, None
        for line in r.stdout.splitlines():
            if line.startswith("Dynamic configs for topic "):
                cur = out.setdefault(line.split()[4], {})
            elif cur is not None and line.startswith(" ") and "=" in line:
                k, v = line.strip().split(" ", 1)[0].split("=", 1)
                cur[k] = v
        return out

    def move_leaders(self, topic, partitions, node):
        """Make node the preferred (first) replica of each partition and
        elect it: leadership moves while the replicas stay the same."""
        cur = self.leaders(topic)
        plan = {"version": 1, "partitions": []}
        for p in partitions:
            reps = [node] + [b for b in cur[p]["replicas"] if b != node]
            plan["partitions"].append({"topic": topic, "partition": p, "replicas": reps})
        path = os.path.join(self.dir, "reassign-%d.json" % int(time.monotonic() * 1000))
        with open(path, "w") as f:
            json.dump(plan, f)
        r = self.tool("reassign", "--bootstrap-server", self.bootstrap, "--execute",
                      "--reassignment-json-file", path)
        if r.returncode != 0:
            raise AssertionError("reassignment failed: %s %s" % (r.stdout, r.stderr))
        self.elect_preferred(topic, partitions)
        wait_for(lambda: all(self.leaders(topic)[p]["leader"] == node for p in partitions), 60,
                 "%s partitions %s led by node %d" % (topic, partitions, node), interval=0.2)

    def elect_preferred(self, topic=None, partitions=()):
        """A preferred leader election: of the given partitions, or of all.
        Returns the tool's result (it fails when no election was needed)."""
        args = ["leader-election", "--bootstrap-server", self.bootstrap,
                "--election-type", "PREFERRED"]
        if topic:
            path = os.path.join(self.dir, "elect-%d.json" % int(time.monotonic() * 1000))
            with open(path, "w") as f:
                json.dump({"partitions": [{"topic": topic, "partition": p}
                                          for p in partitions]}, f)
            args += ["--path-to-json-file", path]
        else:
            args += ["--all-topic-partitions"]
        return self.tool(*args)

    def heal(self):
        """Every node running again: SIGCONT to all (a SIGSTOPped node),
        a dead one started, and all of them in the metadata."""
        for n in range(1, self.nodes + 1):
            if self.alive(n):
                os.kill(self.pid(n), signal.SIGCONT)
            else:
                self.wait_back(self.restart(n))

        def whole():
            try:
                return len(kafka_meta.metadata(self.bootstrap)["brokers"]) == self.nodes
            except OSError:
                return False
        wait_for(whole, 120, "all %d kafka nodes in the metadata" % self.nodes, interval=0.5)

    def close(self):
        if self.attached:
            return
        subprocess.run(["bash", KAFKA_SH, "stop", "--dir", self.dir], capture_output=True,
                       timeout=120, env=dict(os.environ, SLUICE_KAFKA_STOP_TIMEOUT="5"))


_shared_kafka = None
_scenarios = 0


# The kafka ctest tier starts one 3-node cluster for the files whose
# scenarios fault only sluice's daemons, never a broker, and names its
# directory here; each scenario has its own topics (Cluster's prefix).
SHARED_DIR = os.environ.get("SLUICE_KAFKA_CLUSTER_DIR")


def shared_kafka():
    """The test process's RealKafka: the tier's shared cluster when
    SLUICE_KAFKA_CLUSTER_DIR names one, else one started on first use and
    stopped at exit."""
    global _shared_kafka
    if _shared_kafka is None and SHARED_DIR:
        _shared_kafka = RealKafka.attach(SHARED_DIR)
    if _shared_kafka is None:
        d = tempfile.mkdtemp(prefix="sluice-fault-kafka-")
        try:
            _shared_kafka = RealKafka(os.path.join(d, "kafka"))
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise

        def stop():
            _shared_kafka.close()
            if KEEP:
                log("kept %s" % d)
            else:
                shutil.rmtree(d, ignore_errors=True)
        atexit.register(stop)
    return _shared_kafka


class EventTail:
    """Follows the events topic from the beginning in a background process
    (sched_tool dump with no end) and keeps the books per job id."""

    def __init__(self, cluster):
        self.c = cluster
        self.path = os.path.join(cluster.tmp, "events-%d.jsonl" % int(time.monotonic() * 1000))
        self.proc = Proc("sched_tool", ["dump", "-c", cluster.cfg, "--topic", "events",
                                        "--count", 1000000000, "--timeout", 36000000],
                         tmpdir=cluster.tmp, env=cluster.env)
        # Proc captures stdout in its own file; read that one.
        self.path = self.proc.stdout_path
        self._pos = 0
        self._partial = b""
        self.events = []
        self.finals = collections.defaultdict(list)  # job id -> [final types]
        self.by_type = collections.Counter()

    def poll(self):
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        self._pos += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            rec = json.loads(line)
            ev = rec.get("event")
            if not ev:
                continue
            self.events.append(ev)
            t = ev.get("type", "")
            self.by_type[t] += 1
            if t in FINAL:
                self.finals[ev.get("job_id", "")].append(ev)
        return self

    def stop(self):
        self.proc.stop()


class Cluster:
    """One private sluice deployment. kw:
    partitions     partitions per topic (4)
    domains        recipient domains the load is spread over (8)
    ips            source IPs in the default pool (2; 127.0.0.1, .2, ...)
    sink_args      extra sluice-testsink arguments (a --rules file, ...)
    store          the sink also keeps each message as a file (sink.dir)
    extra_yaml     appended to the configuration
    sender_yaml    the sender: section body
    retry          the retry: section (short delays and expiry)
    shaping        the shaping default entry
    pools_yaml     more pools (lines under pools:, after default)
    route          the domains routed to the sink ("*"; others go by MX)
    """

    def __init__(self, name, partitions=4, domains=8, ips=2, sink_args=(), extra_yaml="",
                 sender_yaml=None, retry="{ delays: [1s, 2s, 5s], expiry: 3m }",
                 shaping=None, commit_interval_ms=200, kafka_yaml="", store=False,
                 pools_yaml="", route="*"):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="sluice-fault-%s-" % name)
        self.domains = domains
        self.procs = {}          # name -> Proc (current incarnation)
        self.metrics_ports = {}  # name -> port
        self.started = time.monotonic()
        self.commit_interval_ms = commit_interval_ms
        self.sink = start_sink(self.tmp, list(sink_args), store=store)
        pool = "".join("    - { ip: 127.0.0.%d, ehlo: mta%d.example.net }\n" % (i + 1, i + 1)
                       for i in range(ips)) + pools_yaml
        if sender_yaml is None:
            # Every domain goes to one sink, one destination: it may hold the
            # whole window (sender.max_inflight_per_destination).
            sender_yaml = ("{ workers: 2, drain_timeout: 15s, max_inflight: 400, "
                           "max_inflight_per_destination: 400 }")
        if shaping is None:
            shaping = ("{ max_message_rate: 100000/s, max_connections: 10, "
                       "max_messages_per_connection: 200, timeouts: { connect: 5s, greeting: 10s, "
                       "ehlo: 10s, mail: 10s, rcpt: 10s, data: 10s, data_block: 10s, dot: 10s, "
                       "quit: 5s, idle: 5s } }")
        self.cfg = os.path.join(self.tmp, "sluice.yaml")
        prefix = "fault."
        if REAL:
            global _scenarios
            _scenarios += 1
            prefix = "fault.%d.%d.%s." % (os.getpid(), _scenarios, name)
        self.prefix = prefix
        with open(self.cfg, "w") as f:
            f.write("kafka:\n  bootstrap: 127.0.0.1:1\n  topic_prefix: %s\n"
                    "  partitions: %d\n  session_timeout_ms: 6000\n  heartbeat_interval_ms: 1000\n"
                    "  commit_interval_ms: %d\n%s"
                    "routes:\n  \"%s\": %s\n"
                    "pools:\n  default:\n%s"
                    "shaping:\n  default: %s\n"
                    "retry: %s\n"
                    "sender: %s\n"
                    % (prefix, partitions, commit_interval_ms, kafka_yaml, route, self.sink.address,
                       pool, shaping, retry, sender_yaml))
            f.write(extra_yaml)
        self.broker = self.real = self.ctl = None
        if REAL:
            try:
                self.real = shared_kafka()
            except BaseException:
                self.sink.stop()
                raise
            self.bootstrap = self.real.bootstrap
            self.env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=self.bootstrap,
                            SLUICE_LOG_FORMAT="json")
            r = subprocess.run([bin_path("sluice"), "topics", "ensure", "-c", self.cfg],
                               capture_output=True, text=True, timeout=120, env=self.env)
            if r.returncode != 0:
                self.sink.stop()
                raise AssertionError("sluice topics ensure: %s %s" % (r.stdout, r.stderr))
        else:
            self.broker, self.bootstrap = start_devbroker(self.tmp, cfg=self.cfg, control=True,
                                                          timeout=30)
            self.ctl = Control(read_complete(os.path.join(self.tmp, "broker.control")).strip())
            self.env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=self.bootstrap,
                            SLUICE_LOG_FORMAT="json")
        self.tail = None
        self.dead = []  # incarnations that were stopped or killed, for post-mortems
        self.kills = []  # (name, time.monotonic()) of every SIGKILL

    def topic(self, suffix):
        """The full name of one of the scenario's topics ("jobs", ...)."""
        return self.prefix + suffix

    # ---- processes ----

    def _start(self, name, binary, args, wait_ready=True):
        port = free_port()
        env = dict(self.env, SLUICE_METRICS_LISTEN="127.0.0.1:%d" % port,
                   SLUICE_INSTANCE_ID=name)
        p = Proc(binary, ["-c", self.cfg] + list(args), tmpdir=self.tmp, env=env)
        self.procs[name] = p
        self.metrics_ports[name] = port
        if wait_ready:
            self.wait_ready(name)
        return p

    def start_scheduler(self, name="sched-1", wait_ready=True):
        return self._start(name, "sluice-scheduler", [], wait_ready)

    def start_sender(self, name="sender-1", wait_ready=True):
        return self._start(name, "sluice-sender", [], wait_ready)

    def ready(self, name):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.metrics_ports[name],
                                        timeout=2) as r:
                return r.status == 200
        except Exception:
            return False

    def wait_ready(self, name, timeout=60):
        p = self.procs[name]

        def ok():
            if not p.alive():
                raise AssertionError("%s exited (%s)\n%s" % (name, p.popen.returncode,
                                                             p.output()[-4000:]))
            return self.ready(name)
        wait_for(ok, timeout, "%s /readyz" % name, interval=0.1)

    def metrics(self, name):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_ports[name],
                                    timeout=5) as r:
            return r.read().decode()

    def metric(self, name, series):
        """Sum of every sample of `series` (any labels) on component name."""
        total = 0.0
        for line in self.metrics(name).splitlines():
            if line.startswith(series + " ") or line.startswith(series + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self, name):
        p = self.procs[name]
        log("SIGKILL %s (pid %d)" % (name, p.pid))
        # CLOCK_MONOTONIC, as the sink's t_us: duplicates() splits by it.
        self.kills.append((name, time.monotonic()))
        p.kill()
        self.dead.append((name, p))
        return p

    def term(self, name, timeout=60):
        """SIGTERM and wait for the exit; returns the exit status."""
        p = self.procs[name]
        log("SIGTERM %s (pid %d)" % (name, p.pid))
        rc = p.stop(timeout=timeout)
        self.dead.append((name, p))
        return rc

    def assert_alive(self, *names):
        for n in names or list(self.procs):
            p = self.procs[n]
            if not p.alive():
                raise AssertionError("%s died (status %s)\n%s" % (n, p.popen.returncode,
                                                                  p.output()[-6000:]))

    # ---- load ----

    def start_load(self, prefix, seconds, n=JOBS):
        """Start sched-1 and sender-1, then publish n jobs (ids prefix-N)
        paced over seconds; returns (ids, the publishing thread)."""
        self.start_scheduler("sched-1")
        self.start_sender("sender-1")
        specs = self.job_specs(n, prefix)
        return [s["job_id"] for s in specs], self.publish_paced(specs, seconds)

    def finish_load(self, ids, pub, scenario, alive=("sched-1", "sender-1")):
        """Wait for the publisher (failing on its error), for every id to be
        final while the `alive` processes live, and for the pipeline to go
        quiet; returns the books (reconcile)."""
        pub.join(timeout=300)
        if pub.error:
            raise AssertionError("publishing failed: %s" % pub.error)
        self.wait_final(ids, 240, check_alive=alive)
        self.wait_quiet()
        return self.reconcile(ids, scenario)

    def at_sink(self):
        """Messages the sink accepted so far (its complete log lines: cheap
        enough to poll many times a second)."""
        try:
            with open(self.sink.log_path, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def wait_flowing(self, total, timeout=10):
        """Wait until the sink is accepting messages: its count grew since
        the last look and is below total. A kill timed by this lands while
        deliveries are on the wire, not in a pause between two chunks of
        the paced load (which a quiet machine delivers faster than they
        are published). Returns False if the load was all delivered or
        nothing flowed within timeout."""
        last = [self.at_sink()]

        def grew():
            n = self.at_sink()
            moved, last[0] = n > last[0], n
            return "flowing" if moved and n < total else "done" if n >= total else None
        try:
            return wait_for(grew, timeout, "deliveries in flight", interval=0.002) == "flowing"
        except AssertionError:
            return False

    def job_specs(self, n, prefix, local=None):
        """n single-recipient jobs spread over the cluster's domains.
        local(i) gives the recipient's local part (default "u<i>")."""
        specs = []
        for i in range(n):
            jid = "%s-%06d" % (prefix, i)
            lp = local(i) if local else "u%d" % i
            dom = "d%d.test" % (i % self.domains)
            to = "%s@%s" % (lp, dom)
            specs.append({"job_id": jid, "to": [to], "domain": dom,
                          "raw": "From: Fault <sender@example.net>\r\nTo: %s\r\n"
                                 "Subject: fault %s\r\n\r\nbody of %s\r\n" % (to, jid, jid)})
        return specs

    def publish(self, specs, expect_ok=True, timeout=300):
        data = "".join(json.dumps(s) + "\n" for s in specs)
        r = subprocess.run([bin_path("fault_publish"), "-c", self.cfg], input=data.encode(),
                           capture_output=True, timeout=timeout, env=self.env)
        if expect_ok and r.returncode != 0:
            raise AssertionError("fault_publish failed: %s %s" % (r.stdout, r.stderr))
        return r

    def publish_paced(self, specs, seconds, chunks=None):
        """Publish specs in chunks spread over `seconds` from a background
        thread (steady load while faults happen). Returns the thread; join
        it (it re-raises nothing; check .error)."""
        chunks = chunks or max(1, min(40, int(seconds * 2)))
        size = (len(specs) + chunks - 1) // chunks
        t = threading.Thread(target=self._paced, args=(specs, seconds, size), daemon=True)
        t.error = None
        t.start()
        return t

    def _paced(self, specs, seconds, size):
        th = threading.current_thread()
        start = time.monotonic()
        n = (len(specs) + size - 1) // size
        try:
            for k in range(n):
                due = start + seconds * k / n
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not synchronisation
                self.publish(specs[k * size:(k + 1) * size])
        except Exception as e:  # reported by the scenario
            th.error = e

    # ---- books ----

    def follow_events(self):
        if not self.tail:
            self.tail = EventTail(self)
        return self.tail

    def sink_books(self):
        """One pass over the sink's log: job id (from the Message-ID) ->
        copies accepted, and job id -> when the first was accepted (the
        sink's t_us, CLOCK_MONOTONIC, in seconds)."""
        counts, first = collections.Counter(), {}
        for m in self.sink.messages():
            j = m.get("message_id", "").strip("<>").rsplit("@", 1)[0]
            counts[j] += 1
            first.setdefault(j, m.get("t_us", 0) / 1e6)
        return counts, first

    def sink_counts(self):
        """job id -> copies accepted at the sink (from the Message-ID)."""
        return self.sink_books()[0]

    def duplicates(self, r):
        """The duplicated jobs of the books r (reconcile()), split by when
        the sink accepted their first copy against the SIGKILLs of
        self.kills: "in_flight" when it came after a kill and before the
        next incarnation could have sent it (the dead sender had sent the
        final dot; the receiver answered a process that was gone: SMTP's
        own window, RFC 1047), else "before" with the milliseconds from
        that acceptance to the next kill (None if no kill followed);
        "unflagged" lists the duplicates no event marked
        possible_duplicate."""
        kills = sorted(t for _, t in self.kills)
        out = {"in_flight": [], "before": [], "unflagged": []}
        for j, t in r["first_at"].items():
            if j not in r["flagged"]:
                out["unflagged"].append(j)
            after = [k for k in kills if k <= t]
            # Within 1 s of a kill: the dead sender's dots, still landing.
            if after and t - after[-1] < 1.0:
                out["in_flight"].append(j)
            else:
                nxt = [k for k in kills if k > t]
                out["before"].append((j, round((nxt[0] - t) * 1000, 1) if nxt else None))
        return out

    def wait_final(self, ids, timeout, check_alive=()):
        """Wait until every id has a final event; return the tail."""
        tail = self.follow_events()
        want = set(ids)

        def done():
            tail.poll()
            if check_alive:
                self.assert_alive(*check_alive)
            missing = len(want) - sum(1 for i in want if tail.finals.get(i))
            done.missing = missing
            return missing == 0
        done.missing = len(want)
        try:
            wait_for(done, timeout, "every job final", interval=0.5)
        except AssertionError:
            missing = sorted(i for i in want if not tail.finals.get(i))
            raise AssertionError("%d of %d jobs have no final event after %ds (first: %s); "
                                 "events by type %s" % (len(missing), len(want), timeout,
                                                        missing[:5], dict(tail.by_type)))
        return tail

    def wait_quiet(self, quiet=3.0, timeout=60):
        """Wait until neither the sink nor the events topic changed for
        `quiet` seconds: late duplicates (a partition re-read after a kill)
        are in the books before they are closed."""
        tail = self.follow_events()
        state = {"sig": None, "since": time.monotonic()}

        def settled():
            tail.poll()
            sig = (len(self.sink.messages()), len(tail.events))
            now = time.monotonic()
            if sig != state["sig"]:
                state["sig"], state["since"] = sig, now
                return False
            return now - state["since"] >= quiet
        wait_for(settled, timeout, "the pipeline to go quiet", interval=0.25)

    def reconcile(self, ids, scenario, expect_final=None):
        """The books: returns a dict and prints the report line. Asserts
        nothing; the scenario does."""
        tail = self.follow_events().poll()
        sink, first = self.sink_books()
        ids = list(ids)
        lost = [i for i in ids if not tail.finals.get(i)]
        final = collections.Counter()
        multi_final = republished = 0
        conflicting = []
        phantom = []
        wrong = []
        for i in ids:
            evs = tail.finals.get(i, [])
            if not evs:
                continue
            types = [e["type"] for e in evs]
            final[types[0]] += 1
            # A final event the sender re-published from the delivery
            # ledger says so (republished): a copy analytics drops by
            # design, counted apart.
            again = min(sum(1 for e in evs if e.get("republished")), len(evs) - 1)
            republished += again
            multi_final += len(types) - 1 - again
            if len(set(types)) > 1:
                conflicting.append((i, types))
            if "DELIVERED" in types and not sink.get(i):
                phantom.append(i)
            if expect_final and types[0] != expect_final(i):
                wrong.append((i, types[0], expect_final(i)))
        idset = set(ids)
        duplicates = sum(c - 1 for j, c in sink.items() if j in idset and c > 1)
        possible_dup = sum(1 for e in tail.events
                           if e.get("possible_duplicate") and e.get("job_id") in idset)
        flagged = set(e.get("job_id") for e in tail.events if e.get("possible_duplicate"))
        r = {"scenario": scenario, "jobs": len(ids), "lost": len(lost),
             "duplicates": duplicates, "final": dict(final), "dup_final_events": multi_final,
             "republished": republished,
             "conflicting": conflicting, "phantom": phantom, "wrong": wrong,
             "possible_duplicate_events": possible_dup, "lost_ids": lost[:10],
             "flagged": flagged,
             "first_at": {j: first[j] for j in idset if sink.get(j, 0) > 1},
             "elapsed": time.monotonic() - self.started}
        line = ("scenario=%s jobs=%d lost=%d duplicates=%d final=%s dup_final_events=%d "
                "republished=%d possible_duplicate=%d phantom=%d elapsed=%.0fs" % (
                    scenario, len(ids), len(lost), duplicates,
                    ",".join("%s:%d" % kv for kv in sorted(final.items())), multi_final,
                    republished, possible_dup, len(phantom), r["elapsed"]))
        r["line"] = line
        print(line, flush=True)
        log(line)
        out = os.environ.get("SLUICE_FAULT_REPORT")
        if out:
            with open(out, "a") as f:
                f.write(line + "\n")
        return r

    def broker_down(self, move_leaders=True):
        """Take broker 1 down (its connections close) and, with
        move_leaders, move the leader of every partition of every topic to
        broker 2 or 3. broker_up() ends it. The mock can acknowledge a
        batch it never stored when a leader moves under a producer
        (docs/devbroker.md): a scenario that asserts exactly-once storage
        keeps the leaders where they are."""
        topics = self.ctl.command("topics").split()[1:]
        self.ctl.command("broker down 1")
        if not move_leaders:
            return
        for t in topics:
            name, parts = t.rsplit("/", 1)
            for p in range(int(parts)):
                self.ctl.command("leader %s %d %d" % (name, p, 2 + p % 2))

    def broker_up(self):
        self.ctl.command("broker up 1")

    def watermarks(self, topic, timeout=60):
        """partition -> (low, high) as the partition leaders report them
        (asked again while a leader has just moved and answers NOT_LEADER)."""
        def ask():
            r = subprocess.run([bin_path("sched_tool"), "watermarks", "-c", self.cfg, "--topic",
                                topic, "--timeout", "10000"],
                               capture_output=True, text=True, timeout=60, env=self.env)
            ask.err = r.stderr
            return r if r.returncode == 0 else None
        ask.err = ""
        try:
            r = wait_for(ask, timeout, "the watermarks of %s" % topic, interval=0.5)
        except AssertionError:
            raise AssertionError("sched_tool watermarks: %s" % ask.err)
        out = {}
        for line in r.stdout.splitlines():
            p, lo, hi = (int(x) for x in line.split())
            out[p] = (lo, hi)
        return out

    def dump(self, topic, timeout_ms=3000, count=0):
        """Every record on topic (suffix) as sched_tool prints it: up to the
        end of every partition (count 0), or exactly count records, within
        timeout_ms."""
        r = subprocess.run([bin_path("sched_tool"), "dump", "-c", self.cfg, "--topic", topic,
                            "--count", str(count), "--timeout", str(timeout_ms)],
                           capture_output=True, text=True, timeout=timeout_ms / 1000 + 60,
                           env=self.env)
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def output(self):
        """Tails of every process's output, for assertion messages."""
        parts = []
        for n, p in list(self.procs.items()) + self.dead:
            parts.append("=== %s ===\n%s" % (n, p.output()[-3000:]))
        return "\n".join(parts)

    def close(self):
        if self.tail:
            self.tail.stop()
        for p in self.procs.values():
            p.stop(timeout=20)
        if self.ctl:
            try:
                self.ctl.close()
            except Exception:
                pass
        if self.broker:
            self.broker.stop()
        if self.real:
            self.real.heal()
        self.sink.stop()
        if KEEP:
            log("kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
