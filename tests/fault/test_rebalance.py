"""Fault scenario: consumer-group churn.

Two senders and two schedulers run while a third member of each joins and
leaves every few seconds (started, then drained with SIGTERM), so both
groups rebalance again and again under load. Nothing is lost; the
duplicates that eager rebalances cause are counted and reported, and each
is flagged possible_duplicate.
"""

import time
import unittest

from harness import JOBS, Cluster, log, wait_for


class RebalanceTest(unittest.TestCase):
    def test_members_join_and_leave(self):
        c = Cluster("rebalance")
        try:
            for n in ("sched-a", "sched-b"):
                c.start_scheduler(n, wait_ready=False)
            for n in ("sender-a", "sender-b"):
                c.start_sender(n, wait_ready=False)
            for n in ("sched-a", "sched-b", "sender-a", "sender-b"):
                c.wait_ready(n)
            specs = c.job_specs(JOBS, "reb")
            ids = [s["job_id"] for s in specs]
            seconds = 20 + JOBS / 1000.0
            pub = c.publish_paced(specs, seconds)
            t_end = time.monotonic() + seconds
            k = 0
            # A member joins, works a few seconds, leaves; repeat while the
            # load lasts, alternating senders and schedulers, and at least
            # three times: a member's drain has no fixed length (a scheduler
            # that joined seconds ago may still be restoring site state),
            # so the load's length alone does not bound the count.
            while time.monotonic() < t_end or k < 3:
                k += 1
                if k % 2:
                    name = "sender-x%d" % k
                    c.start_sender(name, wait_ready=False)
                else:
                    name = "sched-x%d" % k
                    c.start_scheduler(name, wait_ready=False)
                t0 = time.monotonic()
                wait_for(lambda: c.assert_alive("sched-a", "sched-b", "sender-a", "sender-b")
                         or time.monotonic() - t0 >= 3, 10, "a member's few seconds",
                         interval=0.25)
                self.assertEqual(c.term(name), 0, c.output())
            pub.join(timeout=300)
            self.assertIsNone(pub.error, "publishing failed: %s" % pub.error)
            c.wait_final(ids, 240, check_alive=("sched-a", "sched-b", "sender-a", "sender-b"))
            c.wait_quiet()
            r = c.reconcile(ids, "rebalance")
            log("members joined and left %d times" % k)
            self.assertEqual(r["lost"], 0, r)
            self.assertEqual(r["phantom"], [], r)
            self.assertEqual(r["conflicting"], [], r)
            # What remains is two senders delivering two copies of a job a
            # scheduler read again after its partition moved: each such copy
            # is announced (Dispatch.repeat becomes possible_duplicate).
            d = c.duplicates(r)
            log("duplicates: %d jobs, unflagged %s" % (len(d["before"]) + len(d["in_flight"]),
                                                      d["unflagged"][:5]))
            self.assertEqual(d["unflagged"], [], "duplicates without possible_duplicate")
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
