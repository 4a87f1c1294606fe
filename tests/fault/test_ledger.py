"""Fault scenarios for the delivery ledger (docs/reliability.md, "The
delivery ledger"): what a killed process had delivered but not committed is
skipped by whoever reads it again, so kills cost almost no duplicates.

- sigkill-every-10s: SIGKILL the sender every 10 s while the load flows,
  restarting it at once: lost 0, duplicates at most 0.1% of the jobs.
- sched-sigkill: SIGKILL the scheduler mid-load (it produces the dispatches
  of what it had not committed again, maybe to another source IP): lost 0,
  duplicates at most 0.1%.

Both also run on real Kafka (SLUICE_KAFKA=real).
"""

import math
import time
import unittest

from harness import JOBS, Cluster, log, wait_for

# At most 0.1% of the jobs may reach the sink twice.
BOUND = max(1, math.ceil(JOBS * 0.001))


def load_seconds(n):
    return 12 + n / 1000.0


class LedgerKillTest(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(self._testMethodName,
                         sender_yaml="{ workers: 2, drain_timeout: 20s, max_inflight: 400, "
                         "max_inflight_per_destination: 400 }",
                         extra_yaml="scheduler: { max_buffered: 500 }\n")

    def tearDown(self):
        self.c.close()

    def at_sink(self):
        return len(self.c.sink.messages())

    def finish(self, ids, pub, scenario):
        c = self.c
        pub.join(timeout=300)
        self.assertIsNone(pub.error, "publishing failed: %s" % pub.error)
        c.wait_final(ids, 240, check_alive=("sched-1", "sender-1"))
        c.wait_quiet()
        r = c.reconcile(ids, scenario)
        self.assertEqual(r["lost"], 0, r)
        self.assertEqual(r["phantom"], [], r)
        self.assertEqual(r["conflicting"], [], r)
        self.assertLessEqual(r["duplicates"], BOUND, r)
        return r

    def test_sigkill_sender_every_10s(self):
        c = self.c
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        specs = c.job_specs(JOBS, "lk")
        ids = [s["job_id"] for s in specs]
        seconds = load_seconds(JOBS)
        pub = c.publish_paced(specs, seconds)
        t_end = time.monotonic() + seconds
        kills = 0
        # A kill every 10 s while the load lasts, at least one.
        while time.monotonic() < t_end or kills == 0:
            t0 = time.monotonic()
            wait_for(lambda: c.assert_alive("sched-1", "sender-1")
                     or time.monotonic() - t0 >= 10, 15, "10 s of load", interval=0.25)
            log("at sink before kill %d: %d" % (kills + 1, self.at_sink()))
            c.kill("sender-1")
            c.start_sender("sender-1")
            kills += 1
        log("sender killed %d times" % kills)
        self.finish(ids, pub, "ledger-sigkill-every-10s")

    def test_sigkill_scheduler(self):
        c = self.c
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        specs = c.job_specs(JOBS, "ls")
        ids = [s["job_id"] for s in specs]
        pub = c.publish_paced(specs, load_seconds(JOBS))
        wait_for(lambda: self.at_sink() >= JOBS // 2, 180, "half the jobs at the sink",
                 interval=0.1)
        c.kill("sched-1")
        c.start_scheduler("sched-1")
        self.finish(ids, pub, "ledger-sched-sigkill")


if __name__ == "__main__":
    unittest.main()
