"""Every `sluice` command that talks to Kafka, pointed at a port nobody
listens on: one clear line naming the address and the reason, exit 1, no
librdkafka log lines, and no hang (each run is bounded by a guard far above
what the command takes; the guard only stops a hung run, it measures
nothing). Files named on the command line are checked before Kafka."""

import os
import socket
import tempfile
import unittest

from sluicetest import run_sluice, write_file

GUARD = 40


class TestUnreachable(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-dead-")
        self.tmp = self._tmp.name
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.dead = "127.0.0.1:%d" % probe.getsockname()[1]
        self.cfg = self.write("dead.yaml", "kafka:\n  bootstrap: %s\n" % self.dead)

    def tearDown(self):
        self._tmp.cleanup()

    def write(self, name, text):
        return write_file(self.tmp, name, text)

    def sluice(self, *args, env=None):
        return run_sluice(*args, env_extra=env, timeout=GUARD)

    def assert_one_clear_line(self, r, cmd):
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(r.stderr, "sluice %s: cannot reach Kafka at %s: connection refused\n"
                         % (cmd, self.dead))

    def test_every_command(self):
        body = self.write("body.txt", "hi\n")
        tmpl = self.write("t.tmpl", "From: a@example.net\nSubject: s\n\nhi {{email}}\n")
        rcpts = self.write("r.csv", "email\na@example.com\n")
        runs = [
            ("send", ["--from", "x@example.net", "--to", "y@example.org", "--subject", "s",
                      "--body-file", body]),
            ("send", ["--from", "x@example.net", "--to", "y@example.org", "--subject", "s",
                      "--body-file", body, "--timeout", "2s"]),
            ("bulk", ["--template", "t", "--recipients", rcpts, "--from", "x@example.net"]),
            ("template", ["put", "t", tmpl]),
            ("template", ["get", "t"]),
            ("events", []),
            ("events", ["--timeout", "1s"]),
            ("stats", []),
            ("stats", ["--timeout", "1s"]),
            ("suppress", ["list"]),
            ("suppress", ["add", "a@example.com"]),
            ("topics", ["list"]),
            ("top", ["--once"]),
        ]
        for cmd, args in runs:
            with self.subTest(cmd=cmd, args=args):
                r = self.sluice(cmd, "-c", self.cfg, *args)
                self.assert_one_clear_line(r, cmd)

    def test_something_else_listening(self):
        """A port that accepts connections but is not Kafka (a wrong port in
        the bootstrap): the ApiVersions round trip gets no answer."""
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen(8)  # never accepts, never answers
            addr = "127.0.0.1:%d" % srv.getsockname()[1]
            cfg = self.write("other.yaml", "kafka:\n  bootstrap: %s\n" % addr)
            r = self.sluice("events", "-c", cfg, "--timeout", "1s")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr, "sluice events: cannot reach Kafka at %s: it accepts "
                         "connections but no Kafka broker answered\n" % addr)

    def test_environment_bootstrap(self):
        r = self.sluice("events", env={"SLUICE_KAFKA_BOOTSTRAP": self.dead})
        self.assert_one_clear_line(r, "events")

    def test_sluice_config_honoured_by_every_command(self):
        """suppress, shaping and topics used to ignore SLUICE_CONFIG."""
        for args in (["suppress", "list"], ["topics", "list"], ["stats"], ["events"]):
            with self.subTest(args=args):
                r = self.sluice(*args, env={"SLUICE_CONFIG": self.cfg})
                self.assert_one_clear_line(r, args[0])
        cfg = self.write("m.yaml", "kafka:\n  bootstrap: %s\nmetrics: { listen: %s }\n"
                         % (self.dead, self.dead))
        r = self.sluice("shaping", "show", env={"SLUICE_CONFIG": cfg})
        self.assertNotIn("no metrics.listen", r.stderr)
        self.assertIn(self.dead, r.stderr)

    def test_verbose_flag_is_accepted_anywhere(self):
        r = self.sluice("-v", "stats", "-c", self.cfg)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot reach Kafka at %s" % self.dead, r.stderr)
        r = self.sluice("stats", "--verbose", "-c", self.cfg)
        self.assertEqual(r.returncode, 1, r.stderr)

    def test_unresolvable_host(self):
        cfg = self.write("nx.yaml", "kafka:\n  bootstrap: no-such-host.invalid:9092\n")
        r = self.sluice("stats", "-c", cfg)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn("cannot reach Kafka at no-such-host.invalid:9092: cannot resolve",
                      r.stderr)

    def test_missing_files_before_kafka(self):
        nosuch = os.path.join(self.tmp, "nosuch.csv")
        r = self.sluice("bulk", "-c", self.cfg, "--template", "t", "--recipients", nosuch,
                        "--from", "x@example.net")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr, "sluice bulk: %s: No such file or directory\n" % nosuch)


if __name__ == "__main__":
    unittest.main()
