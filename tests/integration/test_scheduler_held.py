"""Integration tests of what shape does with the jobs it holds: a pool
that cannot send to a site does not hold back another pool's jobs to that
site, and a job that expires while held becomes EXPIRED instead of being
dispatched (so no sender can deliver it)."""

import time
import unittest

from sluicetest import wait_for
from test_scheduler import SchedCase


class TestUnusablePool(SchedCase):
    sites = "  microsoft: { mx: [\"*.protection.outlook.com\"], domains: [outlook.test] }\n"
    pools = "  banned:\n    - { ip: 127.0.0.4, ehlo: mta4.example.net }\n"

    def test_pool_whose_only_ip_is_disabled_delays_no_other_pool(self):
        self.start_scheduler()
        r = self.tool("event", "-c", self.cfg, "--type", "bounced", "--site", "microsoft",
                      "--source-ip", "127.0.0.4", "--code", 550, "--enh", "5.7.606",
                      "--to", "a@outlook.test",
                      "--reply", "550 5.7.606 Access denied, banned sending IP [127.0.0.4]")
        self.assertEqual(r.returncode, 0, r.stderr)
        want = 'sluice_shape_state{site="microsoft",source="127.0.0.4",state="disabled"} 1'
        wait_for(lambda: want in self.metrics(), 20, "IP disabled")
        # The banned pool's jobs first, in the same tenant and campaign, then
        # the default pool's: the latter go at once.
        self.produce("--to", "a@outlook.test", "--pool", "banned", "--count", 3, "--id", "b")
        self.produce("--to", "a@outlook.test", "--count", 3, "--id", "d")
        recs = self.dump("dispatch", 3)
        self.assertEqual(sorted(r["job_id"] for r in recs), ["d-0", "d-1", "d-2"])
        self.assertEqual({r["source_ip"] for r in recs} - {"127.0.0.2", "127.0.0.3"}, set())
        # The banned pool's jobs wait in Kafka, on the longest retry topic
        # (the IP is disabled for a day, longer than any delay), not in
        # shape and not on a sender.
        parked = wait_for(lambda: (lambda r: len(r) >= 3 and r)(
            self.dump("retry.30m", 0, 2000)), 30, "3 parked on retry.30m")
        self.assertEqual(sorted(r["job_id"] for r in parked), ["b-0", "b-1", "b-2"])
        self.assertEqual(len(self.dump("dispatch", 0, 1000)), 3)
        wait_for(lambda: "sluice_shape_buffered 0" in self.metrics(), 10, "nothing held")
        self.assertIn('sluice_shape_parked_total{site="microsoft",reason="pool-unusable"} 3',
                      self.metrics())


class TestExpiryWhileHeld(SchedCase):
    def test_job_expiring_while_held_is_expired_not_dispatched(self):
        self.start_scheduler()
        # slow.test: 1/s per source IP with a burst of 1, on the pool's two
        # IPs. The first job takes one IP's token; five jobs that expire
        # 1.5 s from now queue behind it: two go at once or a second
        # later, the last two no sooner than 2 s after the first job was
        # dispatched, which was after it was produced, before `expires`
        # was set: they cannot go before they expire, however slow or
        # fast the scheduler gets to them (2.5 s let a scheduler that
        # dispatched the first job within 0.5 s send them all).
        self.produce("--to", "a@slow.test", "--count", 1, "--id", "first")
        expires = int(time.time() * 1000) + 1500
        self.produce("--to", "a@slow.test", "--count", 5, "--id", "e",
                     "--expires-at-ms", expires)

        def outcomes():
            ev = [e["event"] for e in self.dump("events", 0, 1000) if "event" in e]
            exp = {e["job_id"] for e in ev if e["type"] == "EXPIRED"}
            disp = {r["job_id"]: r for r in self.dump("dispatch", 0, 1000)}
            done = exp | set(disp)
            return (exp, disp) if len([j for j in done if j.startswith("e-")]) == 5 else None

        expired, dispatched = wait_for(outcomes, 30, "every e- job dispatched or expired")
        self.assertIn("first-0", dispatched)
        self.assertTrue({"e-3", "e-4"} <= expired,
                        (expired, sorted(dispatched)))
        for jid in expired:
            self.assertNotIn(jid, dispatched)
        for jid, r in dispatched.items():
            if jid.startswith("e-"):
                self.assertLess(r["send_at_ms"], expires, r)
        ev = [e["event"] for e in self.dump("events", 0, 1000) if "event" in e]
        reasons = [e.get("reason", "") for e in ev if e["type"] == "EXPIRED"]
        self.assertTrue(all("expired while held" in r for r in reasons), reasons)
        # How many expire depends on how fast the scheduler got to them (at
        # least e-3 and e-4); the counter must say as many as the events.
        want = "sluice_shape_expired_total %d\n" % len(expired)
        wait_for(lambda: want in self.metrics(), 10, "expired counter %d" % len(expired))


if __name__ == "__main__":
    unittest.main()
