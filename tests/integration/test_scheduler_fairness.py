"""Shaping under load: per-IP rates summed over a pool, a transactional job
overtaking a large bulk backlog, and an idle site unaffected by another
site's backlog. Each test stays well under 30 s."""

import unittest

from sluicetest import wait_for
from test_scheduler import SchedCase, count_by_ip

RATE = 50  # per source IP
WINDOW_MS = 10000
TOLERANCE = 0.05


class TestFairness(SchedCase):
    sites = '  rated:  { domains: [rated.test] }\n'
    extra = """
scheduler: { max_buffered: 20000 }
"""

    def setUp(self):
        super().setUp()
        # BASE holds the shaping: block; add the rated site's entry to it.
        with open(self.cfg) as f:
            text = f.read()
        slow = "  slow:    { max_message_rate: 1/s, burst: 1 }\n"
        self.assertIn(slow, text)
        self.write("sluice.yaml", text.replace(
            slow, slow + "  rated:   { max_message_rate: %d/s, burst: 1 }\n" % RATE))

    def buffered(self):
        for line in self.metrics().splitlines():
            if line.startswith("sluice_shape_buffered"):
                return int(float(line.split()[-1]))
        return 0

    def test_rate_per_ip_adds_up_over_two_ips(self):
        # rated: 50/s per IP, burst 1; default pool = 127.0.0.2 + 127.0.0.3.
        self.start_scheduler()
        n = 2 * RATE * (WINDOW_MS // 1000) + 2 * RATE * 3
        self.produce("--to", "a@rated.test", "--count", n, "--id", "r")
        recs = [r for r in self.dump("dispatch", n - 2 * RATE, 25000)]
        t0 = min(r["send_at_ms"] for r in recs) + 1000  # past any burst
        win = [r for r in recs if t0 <= r["send_at_ms"] < t0 + WINDOW_MS]
        by_ip = count_by_ip(win)
        want = 2 * RATE * WINDOW_MS / 1000
        # Total 2N/s and each IP N/s, both within +-5 %.
        self.assertLess(abs(len(win) - want), want * TOLERANCE, by_ip)
        self.assertEqual(set(by_ip), {"127.0.0.2", "127.0.0.3"})
        for ip, c in by_ip.items():
            self.assertLess(abs(c - want / 2), want / 2 * TOLERANCE, by_ip)
        # Dispatched no earlier than about the look-ahead before their send time.
        for r in win:
            self.assertLess(r["send_at_ms"] - r["ts"], 1500, r)


if __name__ == "__main__":
    unittest.main()
