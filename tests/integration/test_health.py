"""/healthz follows the daemon's own threads, not the metrics thread.

The metrics server answers from a thread of its own, so it used to say 200
while the main loop was hung in a callback or the Kafka consumer thread had
stopped polling: a liveness probe could never see either. Now each of those
threads beats (common/health.h) and /healthz turns 503, naming the stalled
one, once its heartbeat is older than metrics.health_timeout.

How the test stalls a thread: SIGSTOP would stop every thread, the metrics
thread included, so the probe would time out rather than see a 503 -- not
the failure we need to catch. A consumer whose broker went away keeps
polling (librdkafka returns errors from poll), which is healthy, not hung.
So the daemon has a test hook, enabled only by SLUICE_DEBUG_STALL_FILE:
while that file exists and names a heartbeat, the thread that beats it
blocks inside its beat -- inside a main-loop timer callback, or at the top
of the consumer's poll loop -- exactly where a real hang would hold it,
while the metrics thread goes on answering.
"""

import os
import tempfile
import unittest
import urllib.error
import urllib.request

from sluicetest import Proc, free_port, start_devbroker, wait_for


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class HealthTest(unittest.TestCase):
    def setUp(self):
        self.tmpd = tempfile.TemporaryDirectory(prefix="sluice-health-")
        self.tmp = self.tmpd.name
        self.broker, self.bootstrap = start_devbroker(self.tmp, ["--brokers", "1"])
        self.stall = os.path.join(self.tmp, "stall")
        self.port = free_port()
        self.cfg = os.path.join(self.tmp, "sluice.yaml")
        with open(self.cfg, "w") as f:
            f.write("kafka:\n  bootstrap: \"%s\"\n  partitions: 2\n"
                    "  session_timeout_ms: 6000\n  heartbeat_interval_ms: 1000\n"
                    "metrics:\n  listen: 127.0.0.1:%d\n  health_timeout: 1500ms\n"
                    "sender:\n  workers: 1\n  drain_timeout: 3s\n" % (self.bootstrap, self.port))
        self.sender = Proc("sluice-sender", ["-c", self.cfg], tmpdir=self.tmp,
                           env={"SLUICE_DEBUG_STALL_FILE": self.stall})

    def tearDown(self):
        if os.path.exists(self.stall):
            os.unlink(self.stall)
        self.sender.stop()
        self.broker.stop()
        self.tmpd.cleanup()

    def healthz(self, want, has=""):
        def probe():
            try:
                code, body = get(self.port, "/healthz")
            except OSError:
                return None
            return (code, body) if code == want and has in body else None
        return wait_for(probe, 20, "/healthz %d %r\n%s" % (want, has, self.sender.output()))

    def stall_thread(self, name):
        with open(self.stall, "w") as f:
            f.write(name + "\n")

    def test_stalled_main_loop_and_consumer_fail_healthz(self):
        # The metrics server starts first; the heartbeats register as the
        # consumer and the main loop start.
        self.healthz(200, "main loop: ok")
        _, body = self.healthz(200, "consumer sluice-sender: ok")
        self.assertIn("main loop: ok", body)

        # The main loop blocks inside a callback: 503 within the bound, while
        # the metrics thread still answers /metrics.
        self.stall_thread("main loop")
        _, body = self.healthz(503)
        self.assertIn("main loop: STALLED", body)
        self.assertIn("consumer sluice-sender: ok", body)
        code, metrics = get(self.port, "/metrics")
        self.assertEqual(code, 200)
        os.unlink(self.stall)
        _, body = self.healthz(200)
        self.assertIn("main loop: ok", body)

        # The consumer thread stops polling while the main loop runs.
        self.stall_thread("consumer sluice-sender")
        _, body = self.healthz(503)
        self.assertIn("consumer sluice-sender: STALLED", body)
        self.assertIn("main loop: ok", body)
        os.unlink(self.stall)
        self.healthz(200)

        # A delivery worker's loop blocks: deliveries happen there, so it
        # counts as much as the main loop.
        self.healthz(200, "worker 0 loop: ok")
        self.stall_thread("worker 0 loop")
        _, body = self.healthz(503)
        self.assertIn("worker 0 loop: STALLED", body)
        self.assertIn("main loop: ok", body)
        os.unlink(self.stall)
        self.healthz(200, "worker 0 loop: ok")

        self.assertEqual(self.sender.stop(timeout=20), 0, self.sender.output())
        self.assertIn("stalled on purpose", self.sender.stderr())


if __name__ == "__main__":
    unittest.main()
