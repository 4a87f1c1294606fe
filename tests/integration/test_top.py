"""`sluice top --once` against the dev broker: per-site rates, reply codes,
backoff state and the dispatch backlog, from synthetic events.

Skipped until `top` is in the CLI's command table."""

import os
import subprocess
import tempfile
import unittest

from sluicetest import Proc, bin_path, start_devbroker, wait_for


def top_wired():
    out = subprocess.run([bin_path("sluice"), "--help"], capture_output=True, text=True)
    return any(line.strip().startswith("top") for line in out.stdout.splitlines())


class TopTest(unittest.TestCase):
    def setUp(self):
        if not top_wired():
            self.skipTest("sluice top is not in the command table yet")
        self.tmp = tempfile.TemporaryDirectory(prefix="sluice-top-test-")
        self.dir = self.tmp.name
        self.broker, bootstrap = start_devbroker(self.dir, ["--brokers", "1"])
        self.env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=bootstrap)

    def tearDown(self):
        self.broker.stop()
        self.tmp.cleanup()

    def run_tool(self, *args, timeout=60):
        r = subprocess.run([bin_path(args[0])] + [str(a) for a in args[1:]], env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def test_once_frame(self):
        pub = "sluice-publish-events"
        self.run_tool(pub, "--count", 30, "--prefix", "d", "--site", "google")
        self.run_tool(pub, "--count", 5, "--prefix", "b", "--site", "outlook",
                      "--type", "BOUNCED", "--code", 550)
        self.run_tool(pub, "--count", 1, "--prefix", "s", "--site", "google",
                      "--type", "SHAPING", "--code", 421)
        out = self.run_tool("sluice", "top", "--once")
        self.assertNotIn("\033[", out)  # --once prints plain text
        lines = {}
        for l in out.splitlines():
            if l.strip():
                lines.setdefault(l.split()[0], l.split())  # the site table comes first
        # 30 delivered at google over a 10 s window: 3.0/s.
        self.assertEqual(lines["google"][1:4], ["3.0", "0.0", "0.0"], out)
        self.assertEqual(lines["outlook"][1:4], ["0.0", "0.0", "0.5"], out)
        self.assertIn("250 2.0.0", out)
        self.assertIn("550 5.1.1", out)
        self.assertRegex(out, r"google\s+192\.0\.2\.1\s+5\.0\s+halve")
        # Nothing consumed the dispatch topic: the backlog is known and zero.
        self.assertIn("backlog 0 ", out)

    def test_backlog_is_sender_lag(self):
        # Dispatches nobody consumed yet: the sender group's lag is all of them.
        cfg = os.path.join(self.dir, "c.yaml")
        with open(cfg, "w") as f:
            f.write('kafka: { bootstrap: "%s" }\n' % self.env["SLUICE_KAFKA_BOOTSTRAP"])
        lines = "".join('{"job_id":"j%d","from":"a@b.test","to":["c@d.test"],"domain":"d.test",'
                        '"raw":"Subject: x\\r\\n\\r\\nhi\\r\\n","site":"s",'
                        '"source_ip":"127.0.0.1"}\n' % i for i in range(7))
        r = subprocess.run([bin_path("publish_dispatch"), "-c", cfg], input=lines, env=self.env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = self.run_tool("sluice", "top", "-c", cfg, "--once")
        self.assertIn("backlog 7 ", out)

    def test_bad_usage(self):
        r = subprocess.run([bin_path("sluice"), "top", "--window", "nope"], env=self.env,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)


if __name__ == "__main__":
    unittest.main()
