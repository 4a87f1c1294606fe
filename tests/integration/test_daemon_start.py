"""Every daemon starts the same way (common/cmdline.c, sl_daemon_start()):
among other things it ignores SIGPIPE, so that a peer hanging up (a metrics
scrape, a health probe, an SMTP or HTTP client) is an error on that one
write and never the end of the daemon. Checked from the outside, in each
running daemon's signal dispositions (/proc/PID/status, SigIgn)."""

import os
import signal
import tempfile
import unittest

from sluicetest import Pipeline, Proc, free_port, wait_for

DEADLINE = 20


def ignored_signals(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return int(line.split()[1], 16)
    return 0


@unittest.skipUnless(os.path.exists("/proc/self/status"), "needs /proc")
class DaemonStartTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-daemon-start-")
        self.tmp = self._tmp.name
        self.addCleanup(self._tmp.cleanup)
        self.pipe = Pipeline(self, self.tmp, (
            "webhook:\n  endpoints:\n"
            "    - { url: \"http://127.0.0.1:%d/\", secret: \"s3cret\", batch_size: 1, "
            "timeout: 5s }\n" % free_port()))

    def test_every_daemon_ignores_sigpipe(self):
        bit = 1 << (signal.SIGPIPE - 1)
        procs = {"sluice-devbroker": self.pipe.broker}
        for name in ("sluice-scheduler", "sluice-sender", "sluice-webhook"):
            procs[name] = self.pipe.start(name)
        for name, p in procs.items():
            def ignored():
                if not p.alive():
                    raise AssertionError("%s exited\n%s" % (name, p.output()))
                return ignored_signals(p.pid) & bit
            try:
                wait_for(ignored, DEADLINE, "%s to ignore SIGPIPE" % name)
            except AssertionError as e:
                raise AssertionError("%s%s" % (e, self.pipe.logs()))


class EarlySignalTest(unittest.TestCase):
    """A daemon told to stop while it is still starting drains and exits 0:
    a rolling update stops pods that have only just started. The sender
    without Kafka stays in start-up (its ledger topic cannot be read) long
    enough to be caught there; it learns of the SIGTERM at its next try."""

    def test_sigterm_while_starting_exits_0(self):
        with tempfile.TemporaryDirectory(prefix="sluice-early-") as tmp:
            cfg = os.path.join(tmp, "dead.yaml")
            with open(cfg, "w") as f:
                f.write("kafka:\n  bootstrap: 127.0.0.1:%d\n" % free_port() +
                        "pools:\n  default:\n    - { ip: 127.0.0.1, ehlo: localhost }\n"
                        "metrics: { listen: \"127.0.0.1:0\" }\n")
            p = Proc("sluice-sender", ["-c", cfg], tmpdir=tmp)
            self.addCleanup(p.stop, 5, signal.SIGKILL)
            wait_for(lambda: "metrics on port" in p.stderr(), DEADLINE, "the sender to start")
            self.assertNotIn("workers consuming", p.stderr())
            p.send_signal(signal.SIGTERM)
            # One metadata try (5 s) at most, not the 50 s of every retry.
            self.assertEqual(p.wait(15), 0, p.output())
            self.assertIn("signal 15 while starting", p.stderr())


if __name__ == "__main__":
    unittest.main()
