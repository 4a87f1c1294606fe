"""`sluice dlq list|show|replay|drop` against a real scheduler that put
records on the DLQ: every record listed with its reason, a Job replayed to
the jobs topic (and classified again), what cannot be replayed refused with
its reason, and dropped records gone from `list` but kept by `list --all`."""

import json
import unittest

from sluicetest import run_sluice, wait_for
from test_scheduler import SchedCase


class TestDlq(SchedCase):
    def sluice(self, *args):
        return run_sluice("dlq", *args, "-c", self.cfg)

    def listed(self, *extra):
        r = self.sluice("list", "--json", *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(l) for l in r.stdout.splitlines()]

    def test_list_show_replay_drop(self):
        self.assertEqual(self.listed(), [])
        self.start_scheduler()
        self.produce("--garbage", "--to", "x@bad.test")
        self.produce("--to", "bad address@bad.test", "--id", "a")
        recs = wait_for(lambda: (lambda l: l if len(l) >= 2 else None)(self.listed()), 30,
                        "two DLQ records")
        by_reason = {r["reason"]: r for r in recs}
        self.assertEqual(sorted(by_reason), ["invalid recipient address", "malformed protobuf"])
        bad = by_reason["invalid recipient address"]
        self.assertEqual(bad["job_id"], "a-0")
        self.assertEqual(bad["source_topic"].split(".")[-1], "jobs")
        garbage = by_reason["malformed protobuf"]
        pos = lambda r: "%d:%d" % (r["partition"], r["offset"])

        # Text output: one line per record, reason quoted.
        r = self.sluice("list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.splitlines()), 2, r.stdout)
        self.assertIn('"invalid recipient address"', r.stdout)

        r = self.sluice("show", pos(bad))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"reason +invalid recipient address")
        self.assertRegex(r.stdout, r"job +a-0")
        r = self.sluice("show", "0:999999")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no record 0:999999", r.stderr)
        r = self.sluice("show", "nonsense")
        self.assertEqual(r.returncode, 2)

        # What is not a Job is refused with its reason, and stays pending.
        r = self.sluice("replay", pos(garbage))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("not replayed", r.stderr)
        # A Job goes back to the jobs topic: the scheduler classifies it
        # again (and, its address being bad, puts it back on the DLQ).
        r = self.sluice("replay", pos(bad))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("replayed 1, refused 0", r.stdout)
        again = wait_for(lambda: [x for x in self.listed() if x["job_id"] == "a-0"
                                  and pos(x) != pos(bad)] or None, 30,
                         "the replayed job back on the DLQ")
        pending = [pos(x) for x in self.listed()]
        self.assertIn(pos(garbage), pending)
        # The cursor of a partition cannot pass the pending record before it.
        if garbage["partition"] == bad["partition"]:
            self.assertIn(pos(bad), pending)
            self.assertIn("stays listed", r.stdout)
        else:
            self.assertNotIn(pos(bad), pending)
        self.assertEqual(len(again), 1)

        r = self.sluice("drop", "--all-pending")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.listed(), [])
        self.assertEqual(len(self.listed("--all")), 3)
        r = self.sluice("drop")
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main()
