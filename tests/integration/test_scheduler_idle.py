"""Integration test of the scheduler's idle freeing: shape forgets the
state of sites and (site, IP) pairs that have been quiet for
scheduler.idle_state_timeout, so its memory follows the sites in use, but
keeps what still matters (here a suspension) until it is over."""

import re
import unittest

from sluicetest import wait_for
from test_scheduler import SchedCase, count_by_ip, warm_pools


def gauge(text, name):
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


class TestIdle(SchedCase):
    extra = """
scheduler: { idle_state_timeout: 3s }
limits:
  - { tenant: "*", campaign: "*", max_message_rate: 1000/s }
"""

    def test_quiet_sites_are_freed_but_not_a_suspension(self):
        self.start_scheduler()
        # A suspension that outlives the quiet period.
        r = self.tool("event", "-c", self.cfg, "--type", "deferred", "--site", "held.test",
                      "--source-ip", "127.0.0.2", "--to", "a@held.test", "--down-for-ms", 10000,
                      "--reply", "connection refused")
        self.assertEqual(r.returncode, 0, r.stderr)
        held = 'sluice_shape_state{site="held.test",source="127.0.0.2",state="suspended"} 1'
        wait_for(lambda: held in self.metrics(), 20, "held.test suspended")
        # 60 sites (each domain under the *.test route is its own site), two
        # IPs each.
        self.produce("--to", "u@x.test", "--domains", 60, "--count", 60, "--id", "m",
                     "--tenant", "acme", "--campaign", "spring")
        self.produce("--to", "u@y.test", "--count", 1, "--id", "y",
                     "--tenant", "acme", "--campaign", "fall")
        self.dump("dispatch", 61)
        wait_for(lambda: (gauge(self.metrics(), "sluice_shape_sites") or 0) >= 62 and
                 (gauge(self.metrics(), "sluice_shape_pairs") or 0) >= 123, 10,
                 "62 sites and 123 pairs held")
        # Quiet: the 60 sites go, with their series; the suspended pair stays.
        text = wait_for(lambda: (lambda t: gauge(t, "sluice_shape_sites") == 1 and t)(
            self.metrics()), 20, "idle sites freed")
        self.assertEqual(gauge(text, "sluice_shape_pairs"), 1)
        self.assertIn(held, text)
        self.assertNotIn('site="d0.s0.x.test"', text)
        self.assertGreaterEqual(
            gauge(text, 'sluice_shape_idle_freed_total{kind="site"}'), 61)
        # The two campaigns' limit buckets went too.
        wait_for(lambda: gauge(self.metrics(),
                               'sluice_shape_idle_freed_total{kind="limit"}') == 2, 10,
                 "limit buckets freed")
        # Once the suspension is over and quiet in turn, it goes too.
        wait_for(lambda: gauge(self.metrics(), "sluice_shape_sites") == 0, 30,
                 "held.test freed after its suspension")
        # A site that comes back starts afresh and is dispatched.
        self.produce("--to", "u@x.test", "--domains", 1, "--count", 2, "--id", "again")
        again = [r for r in self.dump("dispatch", 63) if r["job_id"].startswith("again-")]
        self.assertEqual(len(again), 2)


class TestIdleWarmup(SchedCase):
    extra = """
scheduler: { idle_state_timeout: 2s }
"""

    def setUp(self):
        self.pools = warm_pools()
        super().setUp()

    def test_a_warming_ips_count_of_today_is_kept(self):
        self.start_scheduler()
        self.produce("--to", "a@fast.test", "--count", 4, "--pool", "warm", "--id", "a")
        first = self.dump("dispatch", 4)
        self.assertEqual(sorted(r["source_ip"] for r in first),
                         ["127.0.0.4", "127.0.0.4", "127.0.0.5", "127.0.0.5"])
        # Quiet: the plain IP's pair goes, the warming one (2 of 3 sent
        # today) stays, and with it the site.
        cold = 'sluice_shape_state{site="fast.test",source="127.0.0.4",state="normal"}'
        warm = 'sluice_shape_state{site="fast.test",source="127.0.0.5",state="normal"} 1'
        text = wait_for(lambda: (lambda t: cold not in t and t)(self.metrics()), 20,
                        "the plain pair freed")
        self.assertIn(warm, text)
        self.assertEqual(gauge(text, "sluice_shape_sites"), 1)
        self.assertEqual(gauge(text, "sluice_shape_pairs"), 1)
        # The cap still counts what was sent: one more, the rest elsewhere.
        self.produce("--to", "a@fast.test", "--count", 12, "--pool", "warm", "--id", "b")
        later = [r for r in self.dump("dispatch", 16) if r["job_id"].startswith("b-")]
        self.assertEqual(count_by_ip(later), {"127.0.0.4": 11, "127.0.0.5": 1})


if __name__ == "__main__":
    unittest.main()
