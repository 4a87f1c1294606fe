"""Fault scenarios for the delivery ledger (docs/reliability.md, "The
delivery ledger"): what a killed process had delivered but not committed is
skipped by whoever reads it again, so kills cost almost no duplicates.

- sigkill-every-10s: SIGKILL the sender every 10 s while the load flows,
  each kill at a moment the sink is accepting messages, restarting it at
  once: lost 0, and every duplicate is one of two kinds
  (docs/reliability.md, "The remaining window"), each announced by
  possible_duplicate on its events:
  - in flight at the kill: a final dot the dead sender had written, which
    the sink accepted after the kill. No sender can know of those (SMTP's
    own window, RFC 1047); at most one per open connection per kill.
  - the ledger's window: a 250 the sender read whose ledger record had
    not reached the broker when it died: only the last moments before
    the kill, never an older message.
- sched-sigkill: SIGKILL the scheduler mid-load (it produces the dispatches
  of what it had not committed again, maybe to another source IP): lost 0,
  duplicates at most 0.1%.

Both also run on real Kafka (SLUICE_KAFKA=real).
"""

import math
import time
import unittest

from harness import JOBS, kill_cluster, load_seconds, log, wait_for

# At most 0.1% of the jobs may reach the sink twice (scheduler kill).
BOUND = max(1, math.ceil(JOBS * 0.001))
# A sender kill: the connections that can each have a final dot on the
# wire (kill_cluster: 8 domains x 2 source IPs x max_connections 10).
CONNECTIONS = 8 * 2 * 10
# The ledger's window: a duplicate whose first copy the sink accepted
# longer than this before the kill means the ledger missed a record it had
# time to land. The window itself is the ledger record's trip to the
# broker (milliseconds, up to a few hundred on a loaded machine).
LEDGER_WINDOW_MS = 5000


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
            flowing = c.wait_flowing(JOBS)
            log("at sink before kill %d: %d%s" % (kills + 1, c.at_sink(),
                                                  " (mid-flow)" if flowing else ""))
            c.kill("sender-1")
            c.start_sender("sender-1")
            kills += 1
        log("sender killed %d times" % kills)
        r = self.finish(ids, pub, "ledger-sigkill-every-10s", bound=JOBS)
        d = c.duplicates(r)
        late = sorted(ms for _, ms in d["before"] if ms is not None)
        log("duplicates: %d in flight at a kill, %d in the ledger's window (ms before the "
            "kill: %s)" % (len(d["in_flight"]), len(d["before"]), late[-5:]))
        self.assertEqual(d["unflagged"], [], "duplicates without possible_duplicate")
        self.assertLessEqual(len(d["in_flight"]), CONNECTIONS * kills, d)
        self.assertEqual([x for x in d["before"] if x[1] is None or x[1] > LEDGER_WINDOW_MS],
                         [], "duplicates of messages accepted long before a kill")

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
