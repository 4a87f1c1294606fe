"""sluice-devbroker: the mock Kafka cluster process and its control socket,
and `sluice topics list|ensure` against it.

Every test starts its own devbroker on ephemeral ports and waits for its
port file with a deadline; nothing sleeps for synchronisation.
"""

import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from sluicetest import Proc, bin_path, read_complete, wait_for

DEFAULT_FIXED = ["jobs", "sited", "dispatch", "events", "suppressions", "templates", "dlq",
                 "control", "state", "ledger", "idempotency"]


class KafkaConn:
    """Just enough of the Kafka wire protocol (ApiVersions v0, Metadata v0)
    to see from the outside that control commands reach the brokers."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.corr = 0

    def close(self):
        self.sock.close()

    def _recvn(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("broker closed the connection")
            buf += chunk
        return buf

    def request(self, api_key, body=b""):
        self.corr += 1
        cid = b"sluice-test"
        msg = struct.pack(">hhih", api_key, 0, self.corr, len(cid)) + cid + body
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        size, = struct.unpack(">i", self._recvn(4))
        data = self._recvn(size)
        corr, = struct.unpack(">i", data[:4])
        assert corr == self.corr, (corr, self.corr)
        return data[4:]

    def api_versions_error(self):
        return struct.unpack(">h", self.request(18)[:2])[0]

    def coordinator(self, group):
        """The broker id FindCoordinator (v0) names for a consumer group."""
        g = group.encode()
        err, node = struct.unpack(">hi", self.request(10, struct.pack(">h", len(g)) + g)[:6])
        assert err == 0, err
        return node

    def leaders(self, topic):
        """{partition: leader broker id} of topic."""
        name = topic.encode()
        d = self.request(3, struct.pack(">ih", 1, len(name)) + name)
        off = 0

        def take(fmt):
            nonlocal off
            v = struct.unpack_from(fmt, d, off)[0]
            off += struct.calcsize(fmt)
            return v

        def string():
            nonlocal off
            n = take(">h")
            off += n
            return d[off - n:off].decode()

        for _ in range(take(">i")):             # brokers: id, host, port
            take(">i"), string(), take(">i")
        out = {}
        for _ in range(take(">i")):             # topics
            take(">h"), string()
            for _ in range(take(">i")):         # partitions
                take(">h")
                pid, leader = take(">i"), take(">i")
                for _ in range(take(">i")):     # replicas
                    take(">i")
                for _ in range(take(">i")):     # isr
                    take(">i")
                out[pid] = leader
        return out


class DevBroker:
    """A running sluice-devbroker with its bootstrap and control address."""

    def __init__(self, tmpdir, args=()):
        self.port_file = os.path.join(tmpdir, "broker.port")
        self.control_file = os.path.join(tmpdir, "broker.control")
        self.proc = Proc("sluice-devbroker",
                         ["--port-file", self.port_file, "--control-file", self.control_file]
                         + list(args), tmpdir=tmpdir)

        def ready():
            if not self.proc.alive():
                raise AssertionError("sluice-devbroker exited early\n" + self.proc.output())
            return read_complete(self.port_file)

        self.bootstrap = wait_for(ready, 20, "devbroker port file").strip()
        host, port = read_complete(self.control_file).strip().rsplit(":", 1)
        self.control = (host, int(port))

    def connect(self):
        s = socket.create_connection(self.control, timeout=10)
        return s, s.makefile("r")

    def command(self, line):
        s, f = self.connect()
        with s, f:
            s.sendall((line + "\n").encode())
            return f.readline().rstrip("\n")

    def stop(self):
        return self.proc.stop()


def sluice_topics_available():
    """True once the `sluice` CLI has the topics command wired in."""
    try:
        r = subprocess.run([bin_path("sluice"), "topics", "--help"], capture_output=True,
                           text=True, timeout=20)
    except (AssertionError, OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "ensure" in r.stdout


class DevBrokerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sluice-devbroker-test-")
        self.addCleanup(self.tmp.cleanup)

    def start(self, args=()):
        b = DevBroker(self.tmp.name, args)
        self.addCleanup(b.stop)
        return b

    def test_bootstrap_printed_written_and_listening(self):
        b = self.start(["--brokers", "3"])
        # The first stdout line is the same bootstrap list as the port file.
        first = wait_for(lambda: read_complete(b.proc.stdout_path), 10, "stdout line")
        self.assertEqual(first.splitlines()[0], b.bootstrap)
        addrs = b.bootstrap.split(",")
        self.assertEqual(len(addrs), 3, b.bootstrap)
        for a in addrs:
            host, port = a.rsplit(":", 1)
            self.assertEqual(host, "127.0.0.1")
            socket.create_connection((host, int(port)), timeout=5).close()
        self.assertFalse(os.path.exists(b.port_file + ".tmp"))

    def test_sigterm_exits_zero_and_removes_files(self):
        b = self.start(["--brokers", "1"])
        self.assertEqual(b.command("ping"), "ok pong")
        b.proc.send_signal(signal.SIGTERM)
        self.assertEqual(b.proc.wait(15), 0, b.proc.output())
        self.assertFalse(os.path.exists(b.port_file))
        self.assertFalse(os.path.exists(b.control_file))

    def test_sigint_exits_zero(self):
        b = self.start(["--brokers", "1"])
        b.proc.send_signal(signal.SIGINT)
        self.assertEqual(b.proc.wait(15), 0, b.proc.output())

    def test_default_topics_created(self):
        b = self.start()
        reply = b.command("topics")
        self.assertTrue(reply.startswith("ok "), reply)
        topics = dict(t.rsplit("/", 1) for t in reply.split()[1:])
        for suffix in DEFAULT_FIXED:
            self.assertIn("sluice." + suffix, topics)
        self.assertTrue(any(t.startswith("sluice.retry.") for t in topics), topics)
        for name, parts in topics.items():
            self.assertGreaterEqual(int(parts), 1, name)

    def test_control_commands(self):
        b = self.start(["--brokers", "3"])
        cases = [
            ("ping", "ok"),
            ("broker down 2", "ok"),
            ("broker up 2", "ok"),
            ("broker down 0", "error"),
            ("broker down 4", "error"),
            ("broker sideways 1", "error"),
            ("leader sluice.jobs 0 2", "ok"),
            ("leader jobs 0 3", "ok"),             # the short name works too
            ("leader sluice.jobs 9999 1", "error"),
            ("leader sluice.jobs 0 7", "error"),
            ("leader no.such.topic 0 1", "error"),  # never auto-created
            ("errors Produce 3 NOT_LEADER_FOR_PARTITION", "ok"),
            ("errors fetch 1 REQUEST_TIMED_OUT", "ok"),
            ("errors JoinGroup 2 ERR_COORDINATOR_NOT_AVAILABLE", "ok"),
            ("errors Heartbeat 1 _TRANSPORT", "ok"),
            ("errors Frobnicate 1 REQUEST_TIMED_OUT", "error"),
            ("errors Produce 0 REQUEST_TIMED_OUT", "error"),
            ("errors Produce 1 NO_SUCH_ERROR", "error"),
            ("clear", "ok"),
            ("rtt 1 25", "ok"),
            ("rtt 1 0", "ok"),
            ("rtt 9 25", "error"),
            ("rtt 1 -1", "error"),
            ("coordinator sluice-sender 2", "ok"),
            ("coordinator sluice-sender 4", "error"),
            ("coordinator sluice-sender", "error"),
            ("nonsense", "error"),
            ("", "error"),
        ]
        s, f = b.connect()
        with s, f:
            for cmd, want in cases:
                s.sendall((cmd + "\r\n" if cmd == "ping" else cmd + "\n").encode())
                reply = f.readline()
                self.assertTrue(reply.endswith("\n"), "%r -> %r" % (cmd, reply))
                self.assertEqual(reply.split(" ", 1)[0].strip(), want, "%r -> %r" % (cmd, reply))
        # The topic the mock was asked about must not have appeared.
        self.assertNotIn("no.such.topic", b.command("topics"))

    def test_control_commands_reach_the_brokers(self):
        b = self.start(["--brokers", "3"])
        addrs = b.bootstrap.split(",")
        k = KafkaConn(addrs[0])
        self.addCleanup(k.close)
        self.assertEqual(k.api_versions_error(), 0)

        # leader: the metadata the brokers serve follows the command.
        before = k.leaders("sluice.jobs")
        self.assertIn(0, before)
        target = 1 + before[0] % 3
        self.assertEqual(b.command("leader sluice.jobs 0 %d" % target).split()[0], "ok")
        self.assertEqual(wait_for(lambda: k.leaders("sluice.jobs")[0] == target, 10,
                                  "new leader in metadata"), True)

        # errors: exactly COUNT requests fail with that code, then all is well.
        self.assertEqual(b.command("errors ApiVersions 2 REQUEST_TIMED_OUT").split()[0], "ok")
        self.assertEqual([k.api_versions_error() for _ in range(3)], [7, 7, 0])
        # clear drops what is still queued.
        b.command("errors ApiVersions 5 NOT_LEADER_FOR_PARTITION")
        self.assertEqual(b.command("clear"), "ok cleared")
        self.assertEqual(k.api_versions_error(), 0)

        # rtt: answers from that broker come late; 0 removes the delay.
        self.assertEqual(b.command("rtt 1 300").split()[0], "ok")
        t0 = time.monotonic()
        k.api_versions_error()
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        b.command("rtt 1 0")
        t0 = time.monotonic()
        k.api_versions_error()
        self.assertLess(time.monotonic() - t0, 0.25)

        # coordinator: FindCoordinator names the broker the command gave,
        # whichever it named before.
        other = 1 + k.coordinator("sluice-sender") % 3
        self.assertEqual(b.command("coordinator sluice-sender %d" % other),
                         "ok coordinator sluice-sender %d" % other)
        self.assertEqual(k.coordinator("sluice-sender"), other)

        # broker down: its connections close and new ones are refused;
        # broker up: it serves again.
        self.assertEqual(b.command("broker down 1"), "ok broker 1 down")
        with self.assertRaises((EOFError, ConnectionError)):
            k.api_versions_error()
        with self.assertRaises(ConnectionError):
            KafkaConn(addrs[0]).api_versions_error()
        k2 = KafkaConn(addrs[1])    # the others are unaffected
        self.addCleanup(k2.close)
        self.assertEqual(k2.api_versions_error(), 0)
        self.assertEqual(b.command("broker up 1"), "ok broker 1 up")
        k3 = wait_for(lambda: self._try_conn(addrs[0]), 10, "broker 1 back up")
        self.addCleanup(k3.close)
        self.assertEqual(k3.api_versions_error(), 0)

    @staticmethod
    def _try_conn(addr):
        try:
            return KafkaConn(addr)
        except ConnectionError:
            return None

    def test_several_control_connections(self):
        b = self.start(["--brokers", "1"])
        conns = [b.connect() for _ in range(4)]
        try:
            for s, f in reversed(conns):
                s.sendall(b"ping\n")
                self.assertEqual(f.readline(), "ok pong\n")
            # A pipelined batch gets one answer per line, in order.
            s, f = conns[0]
            s.sendall(b"ping\nbroker down 5\nping\n")
            self.assertEqual([f.readline().split(" ")[0] for _ in range(3)],
                             ["ok", "error", "ok"])
        finally:
            for s, f in conns:
                f.close()
                s.close()

    def test_fixed_control_port(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        b = self.start(["--control", "127.0.0.1:%d" % port])
        self.assertEqual(b.control, ("127.0.0.1", port))
        self.assertEqual(b.command("ping"), "ok pong")

    def test_bad_arguments_exit_2(self):
        for args in (["--brokers", "0"], ["--brokers", "x"], ["--bogus"], ["extra"],
                     ["--control", "nonsense"], ["-c", os.path.join(self.tmp.name, "nope.yaml")]):
            r = subprocess.run([bin_path("sluice-devbroker")] + args, capture_output=True,
                               text=True, timeout=20)
            self.assertEqual(r.returncode, 2, "%s: %s" % (args, r.stderr))

    def test_config_prefix_partitions_and_retry_topics(self):
        cfg = os.path.join(self.tmp.name, "sluice.yaml")
        with open(cfg, "w") as f:
            f.write("kafka:\n  bootstrap: 127.0.0.1:1\n  topic_prefix: t1.\n  partitions: 2\n"
                    "retry:\n  delays: [1m, 2h]\n  expiry: 72h\n")
        b = self.start(["-c", cfg, "--brokers", "2"])
        topics = dict(t.rsplit("/", 1) for t in b.command("topics").split()[1:])
        want = {"t1." + s: "2" for s in DEFAULT_FIXED + ["retry.1m", "retry.2h"]}
        self.assertEqual(topics, want)

    @unittest.skipUnless(sluice_topics_available(), "`sluice topics` not wired into the CLI yet")
    def test_sluice_topics_list_and_ensure(self):
        b = self.start(["--brokers", "3"])
        expected = dict(t.rsplit("/", 1) for t in b.command("topics").split()[1:])
        env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=b.bootstrap)
        r = subprocess.run([bin_path("sluice"), "topics", "list"], capture_output=True,
                           text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = {}
        for line in r.stdout.splitlines()[1:]:
            name, parts = line.split()[:2]
            listed[name] = parts
        for name, parts in expected.items():
            self.assertEqual(listed.get(name), parts, "%s in\n%s" % (name, r.stdout))

        # Everything exists already: ensure reports so and succeeds.
        r = subprocess.run([bin_path("sluice"), "topics", "ensure"], capture_output=True,
                           text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), len(expected), r.stdout)
        self.assertTrue(all(l.startswith("exists ") for l in lines), r.stdout)

    @unittest.skipUnless(sluice_topics_available(), "`sluice topics` not wired into the CLI yet")
    def test_sluice_topics_kafka_down_exits_1(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            dead = "127.0.0.1:%d" % probe.getsockname()[1]
        env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=dead)
        r = subprocess.run([bin_path("sluice"), "topics", "list"], capture_output=True,
                           text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

    @unittest.skipUnless(sluice_topics_available(), "`sluice topics` not wired into the CLI yet")
    def test_sluice_topics_bad_usage_exits_2(self):
        for args in (["topics"], ["topics", "frob"], ["topics", "list", "-c",
                                                      os.path.join(self.tmp.name, "nope.yaml")]):
            r = subprocess.run([bin_path("sluice")] + args, capture_output=True, text=True,
                               timeout=20)
            self.assertEqual(r.returncode, 2, "%s: %s" % (args, r.stderr))


if __name__ == "__main__":
    unittest.main()
