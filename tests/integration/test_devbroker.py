"""sluice-devbroker: the mock Kafka cluster process and its control socket,
and `sluice topics list|ensure` against it.

Every test starts its own devbroker on ephemeral ports and waits for its
port file with a deadline; nothing sleeps for synchronisation.
"""

import os
import signal
import socket
import subprocess
import tempfile
import unittest

from sluicetest import Proc, bin_path, wait_for

DEFAULT_FIXED = ["jobs", "sited", "dispatch", "events", "suppressions", "templates", "dlq"]


def read_complete(path):
    """The file's text once it ends with a newline (written whole), else None."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return text if text.endswith("\n") else None


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
