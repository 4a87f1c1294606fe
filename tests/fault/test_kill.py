"""Fault scenarios: processes that die or are stopped mid-run.

- SIGKILL the sender three times and the scheduler once while jobs flow,
  restarting each at once: nothing is lost, and the duplicates at the sink
  stay within the in-flight windows at the kills.
- SIGTERM every component mid-run, one after the other (a rolling update):
  nothing is lost and nothing is repeated.
"""

import time
import unittest

from harness import (JOBS, SCHED_BUFFERED, SENDER_INFLIGHT, kill_cluster, load_seconds, log,
                     wait_for)


class KillTest(unittest.TestCase):
    def setUp(self):
        self.c = kill_cluster(self._testMethodName)

    def tearDown(self):
        self.c.close()

    def wait_progress(self, n, timeout=180):
        wait_for(lambda: self.c.at_sink() >= n, timeout, "%d messages at the sink" % n,
                 interval=0.1)

    def window(self, cap):
        """The most a process killed now can repeat: what it holds in memory
        (cap) plus what it finished since its last commit (deliveries in
        the last commit interval, with a second of slack)."""
        n0 = self.c.at_sink()
        # Deliveries during one commit interval plus slack, measured now.
        span = self.c.commit_interval_ms / 1000.0 + 1.0
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= 0.25, 1, "a rate sample", interval=0.05)
        rate = (self.c.at_sink() - n0) / max(0.25, time.monotonic() - t0)
        return cap + int(rate * span) + 1

    def test_sigkill_sender_three_times_and_scheduler(self):
        c = self.c
        ids, pub = c.start_load("kill", load_seconds(JOBS))
        windows = []
        for frac in (0.15, 0.35, 0.55):
            self.wait_progress(int(JOBS * frac))
            w = self.window(SENDER_INFLIGHT)
            c.kill("sender-1")
            windows.append(("sender", self.c.at_sink(), w))
            c.start_sender("sender-1")
        self.wait_progress(int(JOBS * 0.75))
        w = self.window(SCHED_BUFFERED * 2 + 1000)
        c.kill("sched-1")
        windows.append(("scheduler", self.c.at_sink(), w))
        c.start_scheduler("sched-1")
        r = c.finish_load(ids, pub, "sigkill")
        log("kills (component, at sink, window): %s" % windows)
        self.assertEqual(r["lost"], 0, r)
        self.assertEqual(r["phantom"], [], r)
        self.assertEqual(r["conflicting"], [], r)
        bound = sum(w for _, _, w in windows)
        self.assertLessEqual(r["duplicates"], bound,
                             "duplicates beyond the in-flight windows %s" % windows)

    def test_sigterm_rolling_update(self):
        c = self.c
        ids, pub = c.start_load("roll", load_seconds(JOBS))
        # Each component in turn is drained with SIGTERM (exit 0) and its
        # replacement started, as a rolling update with maxUnavailable=1
        # does. (With a surge the replacement joins first; see
        # docs/reliability.md for what that costs on the devbroker.)
        steps = [("sender-1", "sender-2", c.start_sender, 0.15),
                 ("sched-1", "sched-2", c.start_scheduler, 0.35),
                 ("sender-2", "sender-3", c.start_sender, 0.55),
                 ("sched-2", "sched-3", c.start_scheduler, 0.75)]
        for old, new, start, frac in steps:
            self.wait_progress(int(JOBS * frac))
            rc = c.term(old)
            self.assertEqual(rc, 0, "%s exited %s on SIGTERM\n%s" % (old, rc, c.output()))
            start(new)
        r = c.finish_load(ids, pub, "sigterm-rolling", alive=("sched-3", "sender-3"))
        self.assertEqual(r["lost"], 0, r)
        self.assertEqual(r["phantom"], [], r)
        self.assertEqual(r["duplicates"], 0, r)
        self.assertEqual(r["dup_final_events"], 0, r)


if __name__ == "__main__":
    unittest.main()
