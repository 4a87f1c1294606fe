"""Fault scenarios for the delivery ledger (docs/reliability.md, "The
delivery ledger"): what a killed process had delivered but not committed is
skipped by whoever reads it again, so kills cost almost no duplicates.

- sigkill-every-10s: SIGKILL the sender every 10 s while the load flows,
  restarting it at once: lost 0, duplicates at most 0.1% of the jobs (and
  at CI size, at most the 6 a kill that 0.1% of 20,000 jobs allows).
- sched-sigkill: SIGKILL the scheduler mid-load (it produces the dispatches
  of what it had not committed again, maybe to another source IP): lost 0,
  duplicates at most 0.1%.

Both also run on real Kafka (SLUICE_KAFKA=real).
"""

import math
import time
import unittest

from harness import JOBS, kill_cluster, load_seconds, log, wait_for

# At most 0.1% of the jobs may reach the sink twice.
BOUND = max(1, math.ceil(JOBS * 0.001))
# What one SIGKILL of the sender may repeat: the messages a receiver
# accepted in the moment before their ledger record was acknowledged
# (docs/reliability.md, the remaining window). The goal, 0.1% of a
# 20,000-job run with its three kills, allows 6 a kill; a CI-size run
# (2,000 jobs, one kill) is held to that per kill, not to 0.1% of its
# smaller total (2), which one loaded moment exceeds.
PER_KILL = 6


class LedgerKillTest(unittest.TestCase):
    def setUp(self):
        self.c = kill_cluster(self._testMethodName)

    def tearDown(self):
        self.c.close()

    def finish(self, ids, pub, scenario, bound=BOUND):
        r = self.c.finish_load(ids, pub, scenario)
        self.assertEqual(r["lost"], 0, r)
        self.assertEqual(r["phantom"], [], r)
        self.assertEqual(r["conflicting"], [], r)
        self.assertLessEqual(r["duplicates"], bound, r)
        return r

    def test_sigkill_sender_every_10s(self):
        c = self.c
        seconds = load_seconds(JOBS)
        ids, pub = c.start_load("lk", seconds)
        t_end = time.monotonic() + seconds
        kills = 0
        # A kill every 10 s while the load lasts, at least one.
        while time.monotonic() < t_end or kills == 0:
            t0 = time.monotonic()
            wait_for(lambda: c.assert_alive("sched-1", "sender-1")
                     or time.monotonic() - t0 >= 10, 15, "10 s of load", interval=0.25)
            log("at sink before kill %d: %d" % (kills + 1, c.at_sink()))
            c.kill("sender-1")
            c.start_sender("sender-1")
            kills += 1
        log("sender killed %d times" % kills)
        self.finish(ids, pub, "ledger-sigkill-every-10s", max(BOUND, PER_KILL * kills))

    def test_sigkill_scheduler(self):
        c = self.c
        ids, pub = c.start_load("ls", load_seconds(JOBS))
        wait_for(lambda: c.at_sink() >= JOBS // 2, 180, "half the jobs at the sink",
                 interval=0.1)
        c.kill("sched-1")
        c.start_scheduler("sched-1")
        self.finish(ids, pub, "ledger-sched-sigkill")


if __name__ == "__main__":
    unittest.main()
