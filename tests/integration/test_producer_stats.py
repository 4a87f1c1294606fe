"""Integration tests of `sluice stats` on a dev broker. The events are the
producer's ACCEPTED events (the other outcomes are covered by the unit test
of the counting, test_stats_count)."""

import json
import subprocess
import unittest

from sluicetest import bin_path
from test_producer import ProducerCase


class TestStats(ProducerCase):
    def send(self, to, campaign):
        body = self.write("body.txt", "hi\n")
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net", "--to", to,
                        "--subject", "s", "--body-file", body, "--campaign", campaign)
        self.assertEqual(r.returncode, 0, r.stderr)

    def stats(self, *extra):
        r = self.sluice("stats", "-c", self.cfg, *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_counts_by_campaign(self):
        self.send("a@one.example,b@one.example,c@two.example", "spring")
        self.send("d@two.example", "summer")
        d = json.loads(self.stats("--json"))
        self.assertEqual(d["groups"], [])
        self.assertEqual(d["total"]["accepted"], 4)
        self.assertEqual(d["total"]["delivered"], 0)
        self.assertIsNone(d["total"]["latency_ms"])
        self.assertEqual(d["duplicates"], 0)
        d = json.loads(self.stats("--json", "--by", "campaign"))
        self.assertEqual({g["group"]: g["accepted"] for g in d["groups"]},
                         {"spring": 3, "summer": 1})
        d = json.loads(self.stats("--json", "--campaign", "summer"))
        self.assertEqual(d["total"]["accepted"], 1)
        d = json.loads(self.stats("--json", "--since", "2099-01-01"))
        self.assertEqual(d["total"]["accepted"], 0)
        table = self.stats("--by", "campaign").splitlines()
        self.assertIn("ACCEPTED", table[0])
        self.assertIn("P99", table[0])
        rows = {l.split()[0]: l.split() for l in table[1:] if l.strip()}
        self.assertEqual(rows["spring"][1], "3")
        self.assertEqual(rows["total"][1], "4")

    def test_by_site_counts_accepted_where_the_job_went(self):
        """ACCEPTED events name no site (the job is not routed yet): --by site
        put them all in a '-' row. They count now in the site a later event
        of the same job and recipient names; never routed: "(unrouted)"."""
        body = self.write("body.txt", "hi\n")
        ids = {}
        for to in ("a@one.example", "b@two.example", "c@three.example"):
            r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net", "--to", to,
                            "--subject", "s", "--body-file", body, "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            ids[to] = json.loads(r.stdout)["job_id"]
        for to, site, etype in (("a@one.example", "one", "delivered"),
                                ("b@two.example", "two", "deferred")):
            r = subprocess.run([bin_path("sched_tool"), "event", "-c", self.cfg, "--type", etype,
                                "--site", site, "--source-ip", "127.0.0.2", "--code", "250",
                                "--enh", "2.0.0", "--reply", "ok", "--id", ids[to], "--to", to],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
        d = json.loads(self.stats("--json", "--by", "site"))
        got = {g["group"]: (g["accepted"], g["delivered"], g["deferred"]) for g in d["groups"]}
        self.assertEqual(got, {"one": (1, 1, 0), "two": (1, 0, 1), "(unrouted)": (1, 0, 0)})
        self.assertEqual(d["total"]["accepted"], 3)

    def test_bad_usage(self):
        for args in (["--by", "planet"], ["--since", "soon"], ["extra"]):
            r = self.sluice("stats", "-c", self.cfg, *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertTrue(r.stderr.strip())


if __name__ == "__main__":
    unittest.main()
