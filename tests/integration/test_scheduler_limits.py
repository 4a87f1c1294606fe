"""Integration test of per-tenant limits in sluice-scheduler's shape stage
(real dev broker, real scheduler): a tenant over its cap is paced at the
cap and never delays another tenant's jobs to the same site."""

import unittest

from sluicetest import wait_for
from test_scheduler import SchedCase


class TestTenantLimits(SchedCase):
    extra = ("limits:\n"
             "  - { tenant: acme, max_message_rate: 2/s, burst: 1 }\n"
             "  - { tenant: beta, campaign: \"*\", max_message_rate: 1000/s }\n")

    def test_capped_tenant_is_paced_and_blocks_nobody(self):
        self.start_scheduler()
        self.produce("--to", "a@fast.test", "--count", 20, "--tenant", "acme", "--id", "acme")
        self.produce("--to", "b@fast.test", "--count", 3, "--tenant", "beta",
                     "--campaign", "spring", "--id", "beta")
        # acme's 20 jobs at 2/s (burst 1) take 9.5 s to go out; beta's 3,
        # queued behind them in the same site, must not wait for that.
        recs = sorted(self.dump("dispatch", 23, 30000), key=lambda r: r["send_at_ms"])
        at = [r["send_at_ms"] for r in recs if r["job_id"].startswith("acme")]
        beta = [r for r in recs if r["job_id"].startswith("beta")]
        self.assertEqual(len(at), 20)
        self.assertEqual(len(beta), 3)
        for r in beta:
            self.assertLessEqual(r["send_at_ms"], r["ts"] + 1000, r)
            self.assertLess(r["send_at_ms"], at[-1] - 1000, (r, at))
        gaps = [b - a for a, b in zip(at, at[1:])]
        self.assertGreaterEqual(min(gaps), 450, gaps)
        self.assertGreaterEqual(at[-1] - at[0], 9000)

if __name__ == "__main__":
    unittest.main()
