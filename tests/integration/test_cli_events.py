"""`sluice events` as an operator follows an incident (#23 item 9):
--follow starts at the end (what is already there is not replayed) unless
--since says otherwise, and output is in time order even when the topic
holds events out of order."""

import json
import subprocess
import time
import unittest

from sluicetest import Proc, bin_path, wait_for
from test_producer import ProducerCase


class TestEventsFollow(ProducerCase):
    def event(self, job, to, at_ms=0, code=250):
        args = [bin_path("sched_tool"), "event", "-c", self.cfg, "--type", "delivered",
                "--site", "s", "--source-ip", "127.0.0.2", "--code", str(code), "--enh",
                "2.0.0", "--reply", "ok", "--id", job, "--to", to]
        if at_ms:
            args += ["--created-at-ms", str(at_ms)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

    def follower(self, *extra):
        p = Proc(bin_path("sluice"), ["events", "-c", self.cfg, "--json", "--follow",
                                      "--timeout", "60s", *extra], tmpdir=self.tmp)
        self.addCleanup(p.stop)
        wait_for(lambda: "following" in p.stderr() or
                 (p.alive() or self.fail(p.output())) and False, 30, "the follower to read")
        return p

    def lines(self, p):
        return [json.loads(l) for l in p.stdout().splitlines()]

    def test_follow_starts_at_the_end(self):
        self.event("old-1", "a@one.example")
        self.event("old-2", "b@two.example")
        p = self.follower()
        self.assertIn("from its end", p.stderr())
        self.event("new-1", "c@one.example")
        got = wait_for(lambda: self.lines(p) or None, 30, "the new event\n" + p.output())
        self.assertEqual([e["job_id"] for e in got], ["new-1"])

    def test_follow_since_reads_what_is_there(self):
        self.event("old-1", "a@one.example")
        p = self.follower("--since", "10m")
        got = wait_for(lambda: self.lines(p) or None, 30, "the old event\n" + p.output())
        self.assertEqual([e["job_id"] for e in got], ["old-1"])

    def test_output_in_time_order(self):
        now = int(time.time() * 1000)
        # Written newest first, into one partition (same key): reading
        # order is the reverse of time order.
        for i, back in enumerate((1000, 3000, 2000, 5000, 4000)):
            self.event("j", "r%d@one.example" % i, at_ms=now - back)
        r = self.sluice("events", "-c", self.cfg, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        stamps = [json.loads(l)["timestamp_ms"] for l in r.stdout.splitlines()]
        self.assertEqual(len(stamps), 5, r.stdout)
        self.assertEqual(stamps, sorted(stamps))
        r = self.sluice("events", "-c", self.cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        recipients = [l.split()[3] for l in r.stdout.splitlines()]
        self.assertEqual(recipients, ["r%d@one.example" % i for i in (3, 4, 1, 2, 0)])


if __name__ == "__main__":
    unittest.main()
