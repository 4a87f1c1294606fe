"""Integration tests of the site state shape keeps on the state topic: a
scheduler SIGKILLed and started again goes on with the warm-up counts and
the backoff its predecessor had, instead of starting afresh."""

import signal
import time
import unittest

from sluicetest import wait_for
from test_scheduler import SchedCase, warm_pools


class TestStateAcrossRestart(SchedCase):
    extra = """
backoff:
  - { match: "^421 4\\\\.7\\\\.28", site: google, action: halve, floor: 1/s, recover_after: 30s }
"""

    def setUp(self):
        self.pools = warm_pools(plain=False)
        super().setUp()

    def state(self, site):
        recs = [r for r in self.dump("state", 0, 1000) if r.get("site") == site]
        return recs[-1]["pairs"] if recs else {}

    def kill_and_restart(self):
        self.sched.stop(sig=signal.SIGKILL)
        self.start_scheduler()

    def test_warmup_cap_holds_across_a_sigkill(self):
        self.start_scheduler()
        self.produce("--to", "a@warm.test", "--pool", "warm", "--count", 3, "--id", "w")
        self.assertEqual({r["source_ip"] for r in self.dump("dispatch", 3)}, {"127.0.0.5"})
        # The count reaches the state topic within 100 ms of the dispatches.
        wait_for(lambda: self.state("warm.test").get("127.0.0.5", {}).get("sent_today") == 3,
                 10, "warm-up count written")
        self.kill_and_restart()
        # No sender ran, so no event tells the new process what was sent:
        # only the state topic does. The cap of 3 is spent for today.
        self.produce("--to", "a@warm.test", "--pool", "warm", "--count", 3, "--id", "x")
        parked = wait_for(lambda: (lambda r: len(r) >= 3 and r)(
            [r for r in self.dump("retry.30m", 0, 2000) if r["job_id"].startswith("x-")]),
            30, "3 parked")
        self.assertEqual(len(parked), 3)
        sent = [r for r in self.dump("dispatch", 0, 1000) if r["source_ip"] == "127.0.0.5"]
        self.assertFalse([r for r in sent if r["job_id"].startswith("x-")], sent)

    def test_halved_rate_stays_halved_across_a_sigkill_then_recovers(self):
        self.start_scheduler()
        halved_at = time.time()
        self.defer()
        halved = 'sluice_shape_rate_per_second{site="google",source="127.0.0.2"} 2.5'
        wait_for(lambda: halved in self.metrics(), 20, "halved rate")
        self.assertEqual(self.state("google").get("127.0.0.2", {}).get("rate"), 2.5)
        self.kill_and_restart()
        m = self.metrics()
        self.assertIn(halved, m)
        self.assertIn('sluice_shape_state{site="google",source="127.0.0.2",state="throttled"} 1', m)
        # Dispatches carry the halved rate.
        self.produce("--to", "a@gmail.com", "--count", 4, "--id", "g")
        recs = self.dump("dispatch", 4)
        self.assertEqual({r["rate_per_sec"] for r in recs if r["source_ip"] == "127.0.0.2"}
                         or {2.5}, {2.5})
        # And it recovers as configured: 30 s after the halving, a tenth of
        # the rate every 3 s, back to 5/s.
        normal = 'sluice_shape_state{site="google",source="127.0.0.2",state="normal"} 1'
        wait_for(lambda: normal in self.metrics(), 60, "recovered")
        self.assertGreaterEqual(time.time() - halved_at, 30)
        self.assertIn('sluice_shape_rate_per_second{site="google",source="127.0.0.2"} 5',
                      self.metrics())

    def test_421_while_no_scheduler_runs_halves_once_one_starts(self):
        # A fleet that ran: its durable feedback group has committed its
        # place on the events topic (SIGTERM commits).
        self.start_scheduler()
        self.tool("event", "-c", self.cfg, "--type", "complained", "--tenant", "acme",
                  "--to", "early@x.test", "--site", "google", "--id", "early")
        wait_for(lambda: [x for x in self.dump("suppressions", 0, 2000)
                          if x["key"] == "acme/early@x.test"], 20, "the complaint read")
        self.assertEqual(self.sched.stop(), 0)
        # Gmail says slow down while no scheduler runs.
        self.defer()
        self.start_scheduler()
        halved = 'sluice_shape_rate_per_second{site="google",source="127.0.0.2"} 2.5'
        wait_for(lambda: halved in self.metrics(), 20, "the rate halved by the 421")
        # Once, not again at the next start (the durable group moved on, and
        # the state topic carries the halving).
        self.assertEqual(self.sched.stop(), 0)
        self.start_scheduler()
        m = self.metrics()
        self.assertIn(halved, m)


class TestLimitsAcrossRestart(SchedCase):
    # acme may send 6 a minute, 3 at once: after its burst the next token
    # comes 10 s later, whichever scheduler process hands it out.
    extra = "limits:\n  - { tenant: acme, max_message_rate: 6/m, burst: 3 }\n"
    state = TestStateAcrossRestart.state

    def test_tenant_cap_holds_across_a_sigkill(self):
        self.start_scheduler()
        self.produce("--to", "a@fast.test", "--count", 3, "--tenant", "acme", "--id", "a")
        self.dump("dispatch", 3)
        # The site's record (counts, and acme's spent bucket with them)
        # reaches the state topic within 100 ms.
        wait_for(lambda: sum(p["sent_today"] for p in self.state("fast.test").values()) == 3,
                 10, "the site's state written")
        self.sched.stop(sig=signal.SIGKILL)
        self.start_scheduler()
        self.produce("--to", "b@fast.test", "--count", 2, "--tenant", "acme", "--id", "b")
        recs = self.dump("dispatch", 5, 40000)
        at = sorted(r["send_at_ms"] for r in recs)
        # The bucket's promise across both processes: any n sends lie at
        # least (n - burst) / rate apart (a few ms of rounding aside). A
        # fresh bucket after the restart would send b-0 and b-1 at once.
        for i in range(len(at)):
            for j in range(i + 3, len(at)):
                self.assertGreaterEqual(at[j] - at[i], (j - i + 1 - 3) * 10000 - 50,
                                        ([r["job_id"] for r in recs], at, i, j))


if __name__ == "__main__":
    unittest.main()
