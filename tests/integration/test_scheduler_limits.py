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
        self.produce("--to", "a@fast.test", "--count", 10, "--tenant", "acme", "--id", "acme")
        self.produce("--to", "b@fast.test", "--count", 3, "--tenant", "beta",
                     "--campaign", "spring", "--id", "beta")

        def beta_out():
            recs = self.dump("dispatch", 0, 1500)
            return recs if sum(r["job_id"].startswith("beta") for r in recs) == 3 else None
        recs = wait_for(beta_out, 20, "beta's dispatches")
        acme = [r for r in recs if r["job_id"].startswith("acme")]
        beta = [r for r in recs if r["job_id"].startswith("beta")]
        # acme is held to its 2/s (burst 1) while beta, queued behind it in
        # the same site, went out at once.
        self.assertLess(len(acme), 10)
        self.assertLessEqual(max(r["send_at_ms"] for r in beta),
                             min(r["ts"] for r in beta) + 1000)
        acme = sorted(self.dump("dispatch", 13, 20000), key=lambda r: r["send_at_ms"])
        at = [r["send_at_ms"] for r in acme if r["job_id"].startswith("acme")]
        self.assertEqual(len(at), 10)
        gaps = [b - a for a, b in zip(at, at[1:])]
        self.assertGreaterEqual(min(gaps), 450, gaps)
        self.assertGreaterEqual(at[-1] - at[0], 4000)


if __name__ == "__main__":
    unittest.main()
