"""Integration tests of `sluice events`: reading the events topic to its
end, filters, --count, --follow and --timeout. The events come from
`sluice send` (libsluice publishes one ACCEPTED event per recipient once
the job is acknowledged)."""

import json
import os
import subprocess
import time
import unittest

from sluicetest import Proc, bin_path, wait_for
from test_producer import ProducerCase


class TestEvents(ProducerCase):
    def send(self, to, campaign="c1", tenant="t1"):
        body = self.write("body.txt", "hi\n")
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net", "--to", to,
                        "--subject", "s", "--body-file", body, "--campaign", campaign,
                        "--tenant", tenant)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return [line.split(" ")[0] for line in r.stdout.splitlines()]

    def test_empty_topic_ends_at_once(self):
        t0 = time.monotonic()
        r = self.sluice("events", "-c", self.cfg, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertLess(time.monotonic() - t0, 15)

    def test_filters(self):
        ids1 = self.send("a@one.example,b@one.example", campaign="spring")
        ids2 = self.send("c@two.example", campaign="summer", tenant="t2")
        every = self.events()
        self.assertEqual(len(every), 3)
        self.assertTrue(all(e["type"] == "ACCEPTED" for e in every))
        self.assertEqual(sorted(e["recipient"] for e in self.events("--campaign", "spring")),
                         ["a@one.example", "b@one.example"])
        self.assertEqual([e["recipient"] for e in self.events("--tenant", "t2")],
                         ["c@two.example"])
        self.assertEqual([e["job_id"] for e in self.events("--job", ids2[0])], ids2)
        self.assertEqual(len(self.events("--job", "%s,%s" % (ids1[0], ids2[0]))), 3)
        self.assertEqual(len(self.events("--recipient", "B@ONE.example")), 1)
        self.assertEqual(self.events("--type", "DELIVERED,BOUNCED"), [])
        self.assertEqual(len(self.events("--type", "EVENT_ACCEPTED")), 3)
        self.assertEqual(len(self.events("--count", "2")), 2)
        self.assertEqual(len(self.events("--since", "10m")), 3)
        self.assertEqual(self.events("--since", str(int(time.time() * 1000) + 60000)), [])
        self.assertEqual(len(self.events("--since", "2020-01-01")), 3)

    def test_human_format(self):
        [job] = self.send("a@one.example")
        r = self.sluice("events", "-c", self.cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        [line] = r.stdout.splitlines()
        self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ACCEPTED +%s a@one.example"
                         % job)

    def test_human_format_escapes_quotes_in_replies(self):
        r = subprocess.run([bin_path("sched_tool"), "event", "-c", self.cfg, "--type", "bounced",
                            "--site", "s", "--source-ip", "127.0.0.2", "--code", "550",
                            "--enh", "5.1.1", "--reply", 'no such user "bob" \\ here',
                            "--id", "q1", "--to", "bob@one.example"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.sluice("events", "-c", self.cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.rstrip("\n").endswith(
            r'550 5.1.1 "no such user \"bob\" \\ here"'), r.stdout)

    def test_follow_waits_for_new_events(self):
        follower = Proc(bin_path("sluice"),
                        ["events", "-c", self.cfg, "--json", "--follow", "--count", "2",
                         "--type", "accepted", "--timeout", "60s"], tmpdir=self.tmp)
        try:
            # It starts at the end: what is sent before it reads is not its.
            wait_for(lambda: "following" in follower.stderr(), 30, "the follower to read")
            ids = self.send("a@one.example")
            ids += self.send("b@two.example")
            wait_for(lambda: not follower.alive(), 60, "follower to see 2 events")
            self.assertEqual(follower.wait(), 0, follower.output())
            got = [json.loads(l) for l in follower.stdout().splitlines()]
            self.assertEqual(sorted(e["job_id"] for e in got), sorted(ids))
        finally:
            follower.stop()

    def test_timeout_without_count_reached_fails(self):
        self.send("a@one.example")
        t0 = time.monotonic()
        r = self.sluice("events", "-c", self.cfg, "--json", "--follow", "--since", "10m",
                        "--count", "5", "--timeout", "2s")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stdout.splitlines()), 1)
        self.assertLess(time.monotonic() - t0, 20)

    def test_bad_usage(self):
        for args in (["--type", "NOPE"], ["--since", "yesterday"], ["--count", "0"],
                     ["--timeout", "x"], ["extra"]):
            r = self.sluice("events", "-c", self.cfg, *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertTrue(r.stderr.strip())
        r = self.sluice("events", "-c", os.path.join(self.tmp, "missing.yaml"))
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main()
