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
"""

import collections
import json
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

from sluicetest import Proc, bin_path, free_port, start_sink, wait_for  # noqa: E402

JOBS = int(os.environ.get("SLUICE_FAULT_JOBS", "2000"))
FINAL = ("DELIVERED", "BOUNCED", "EXPIRED", "SUPPRESSED", "REJECTED")
KEEP = os.environ.get("SLUICE_FAULT_KEEP")  # keep the temp dir for post-mortems


def log(msg):
    sys.stderr.write("[fault %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def read_complete(path):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return text if text.endswith("\n") else None


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
    """

    def __init__(self, name, partitions=4, domains=8, ips=2, sink_args=(), extra_yaml="",
                 sender_yaml=None, retry="{ delays: [1s, 2s, 5s], expiry: 3m }",
                 shaping=None, commit_interval_ms=200, kafka_yaml="", store=False):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="sluice-fault-%s-" % name)
        self.domains = domains
        self.procs = {}          # name -> Proc (current incarnation)
        self.metrics_ports = {}  # name -> port
        self.started = time.monotonic()
        self.commit_interval_ms = commit_interval_ms
        self.sink = start_sink(self.tmp, list(sink_args), store=store)
        pool = "".join("    - { ip: 127.0.0.%d, ehlo: mta%d.example.net }\n" % (i + 1, i + 1)
                       for i in range(ips))
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
        with open(self.cfg, "w") as f:
            f.write("kafka:\n  bootstrap: 127.0.0.1:1\n  topic_prefix: fault.\n"
                    "  partitions: %d\n  session_timeout_ms: 6000\n  heartbeat_interval_ms: 1000\n"
                    "  commit_interval_ms: %d\n%s"
                    "routes:\n  \"*\": %s\n"
                    "pools:\n  default:\n%s"
                    "shaping:\n  default: %s\n"
                    "retry: %s\n"
                    "sender: %s\n"
                    % (partitions, commit_interval_ms, kafka_yaml, self.sink.address, pool,
                       shaping, retry, sender_yaml))
            f.write(extra_yaml)
        port_file = os.path.join(self.tmp, "broker.port")
        ctl_file = os.path.join(self.tmp, "broker.ctl")
        self.broker = Proc("sluice-devbroker", ["-c", self.cfg, "--port-file", port_file,
                                                "--control-file", ctl_file], tmpdir=self.tmp)

        def ready():
            if not self.broker.alive():
                raise AssertionError("devbroker exited\n" + self.broker.output())
            return read_complete(port_file)
        self.bootstrap = wait_for(ready, 30, "devbroker port file").strip().splitlines()[0]
        self.ctl = Control(read_complete(ctl_file).strip())
        self.env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=self.bootstrap,
                        SLUICE_LOG_FORMAT="json")
        self.tail = None
        self.dead = []  # incarnations that were stopped or killed, for post-mortems

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

    def sink_counts(self):
        """job id -> copies accepted at the sink (from the Message-ID)."""
        counts = collections.Counter()
        for m in self.sink.messages():
            mid = m.get("message_id", "").strip("<>")
            counts[mid.rsplit("@", 1)[0]] += 1
        return counts

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
        sink = self.sink_counts()
        ids = list(ids)
        lost = [i for i in ids if not tail.finals.get(i)]
        final = collections.Counter()
        multi_final = 0
        conflicting = []
        phantom = []
        wrong = []
        for i in ids:
            evs = tail.finals.get(i, [])
            if not evs:
                continue
            types = [e["type"] for e in evs]
            final[types[0]] += 1
            multi_final += len(types) - 1
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
        r = {"scenario": scenario, "jobs": len(ids), "lost": len(lost),
             "duplicates": duplicates, "final": dict(final), "dup_final_events": multi_final,
             "conflicting": conflicting, "phantom": phantom, "wrong": wrong,
             "possible_duplicate_events": possible_dup, "lost_ids": lost[:10],
             "elapsed": time.monotonic() - self.started}
        line = ("scenario=%s jobs=%d lost=%d duplicates=%d final=%s dup_final_events=%d "
                "possible_duplicate=%d phantom=%d elapsed=%.0fs" % (
                    scenario, len(ids), len(lost), duplicates,
                    ",".join("%s:%d" % kv for kv in sorted(final.items())), multi_final,
                    possible_dup, len(phantom), r["elapsed"]))
        r["line"] = line
        print(line, flush=True)
        log(line)
        out = os.environ.get("SLUICE_FAULT_REPORT")
        if out:
            with open(out, "a") as f:
                f.write(line + "\n")
        return r

    def broker_down(self):
        """Take broker 1 down (its connections close) and move the leader of
        every partition of every topic to broker 2 or 3. broker_up() ends
        it."""
        topics = self.ctl.command("topics").split()[1:]
        self.ctl.command("broker down 1")
        for t in topics:
            name, parts = t.rsplit("/", 1)
            for p in range(int(parts)):
                self.ctl.command("leader %s %d %d" % (name, p, 2 + p % 2))

    def broker_up(self):
        self.ctl.command("broker up 1")

    def dump(self, topic, timeout_ms=3000):
        """Every record on topic (suffix) as sched_tool prints it."""
        r = subprocess.run([bin_path("sched_tool"), "dump", "-c", self.cfg, "--topic", topic,
                            "--count", "0", "--timeout", str(timeout_ms)],
                           capture_output=True, text=True, timeout=120, env=self.env)
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
        try:
            self.ctl.close()
        except Exception:
            pass
        self.broker.stop()
        self.sink.stop()
        if KEEP:
            log("kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
