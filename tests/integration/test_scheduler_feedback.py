"""Integration tests of the scheduler's feedback stage against a real dev
broker and the real sluice-scheduler: complaints suppress and count, and a
bounce can disable a source IP (Microsoft's banned-IP reply)."""

import unittest

from sluicetest import wait_for
from test_scheduler import SchedCase


class TestFeedback(SchedCase):
    sites = "  microsoft: { mx: [\"*.protection.outlook.com\"], domains: [outlook.test] }\n"

    def event(self, *args):
        r = self.tool("event", "-c", self.cfg, *args)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_complaint_suppresses_and_counts(self):
        self.start_scheduler()
        self.event("--type", "complained", "--tenant", "acme", "--to", "Angry@x.test",
                   "--site", "microsoft", "--id", "c")
        sup = wait_for(lambda: [s for s in self.dump("suppressions", 0, 2000)
                                if s["key"] == "acme/angry@x.test"], 20, "suppression")
        self.assertEqual(len(sup), 1)
        want = 'sluice_complaints_total{site="microsoft"} 1'
        wait_for(lambda: want in self.metrics(), 10, "complaint counter")
        self.assertIn('sluice_suppressions_added_total{reason="complaint"} 1', self.metrics())
        # The next job to that recipient of that tenant stops at classify.
        self.produce("--to", "angry@x.test", "--tenant", "acme", "--id", "again")
        wait_for(lambda: any(e.get("event", {}).get("job_id") == "again-0" and
                             e["event"]["type"] == "SUPPRESSED"
                             for e in self.dump("events", 0, 2000)), 20, "SUPPRESSED again-0")

    def test_banned_ip_bounce_disables_the_ip(self):
        self.start_scheduler()
        self.event("--type", "bounced", "--site", "microsoft", "--source-ip", "127.0.0.2",
                   "--code", 550, "--enh", "5.7.606", "--to", "a@outlook.test",
                   "--reply", "550 5.7.606 Access denied, banned sending IP [127.0.0.2]")
        want = 'sluice_shape_state{site="microsoft",source="127.0.0.2",state="disabled"} 1'
        wait_for(lambda: want in self.metrics(), 20, "IP disabled")
        self.produce("--to", "a@outlook.test", "--count", 6, "--id", "m")
        recs = self.dump("dispatch", 6)
        self.assertEqual({r["source_ip"] for r in recs}, {"127.0.0.3"})
        shaping = [e["event"] for e in self.dump("events", 0, 3000)
                   if e.get("event", {}).get("type") == "SHAPING"]
        self.assertTrue(any("disabled" in e.get("reason", "") for e in shaping), shaping)
        # Another site keeps both IPs.
        self.produce("--to", "a@other.test", "--count", 4, "--id", "o")
        other = [r for r in self.dump("dispatch", 10) if r["site"] == "other.test"]
        self.assertEqual({r["source_ip"] for r in other}, {"127.0.0.2", "127.0.0.3"})


if __name__ == "__main__":
    unittest.main()
