"""Integration tests of the scheduler's CLI commands: `sluice suppress`
(add, remove, list, import on the suppressions topic, honoured by a running
scheduler) and `sluice shaping show` (the scheduler's live state)."""

import json
import unittest

from sluicetest import run_sluice, wait_for
from test_scheduler import DEADLINE, SchedCase


class TestCli(SchedCase):
    def sluice(self, *args, input=None):
        return run_sluice(*args, timeout=DEADLINE, input=input)

    def test_suppress_add_remove_list_import(self):
        r = self.sluice("suppress", "-c", self.cfg, "--tenant", "acme", "add", "A@x.test",
                        "b@x.test", "--reason", "complaint")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.sluice("suppress", "-c", self.cfg, "--tenant", "acme", "import", "-",
                        input="# list\nc@x.test,extra column\n\n d@x.test \n")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.sluice("suppress", "-c", self.cfg, "--tenant", "acme", "remove", "b@x.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.sluice("suppress", "-c", self.cfg, "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), ["acme/a@x.test complaint",
                                                 "acme/c@x.test import",
                                                 "acme/d@x.test import"])
        r = self.sluice("suppress", "-c", self.cfg, "add", "not an address")
        self.assertEqual(r.returncode, 2)
        # The scheduler honours the list.
        self.start_scheduler()
        self.produce("--to", "a@x.test,b@x.test", "--tenant", "acme", "--id", "j")
        d = self.dump("dispatch", 1)
        self.assertEqual(d[0]["recipients"], ["b@x.test"])

    def test_suppress_import_csv_header_and_remove_unknown(self):
        """A CSV with a header failed whole without a line number; removing
        an address never suppressed reported "removed 1 address"."""
        r = self.sluice("suppress", "-c", self.cfg, "--tenant", "acme", "import", "-",
                        input="email,name\ne@x.test,E\nf@x.test,F\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("suppressed 2 addresses", r.stdout)
        r = self.sluice("suppress", "-c", self.cfg, "--tenant", "acme", "import", "-",
                        input="email\ng@x.test\nnot an address\n")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("-:3: invalid address 'not an address'", r.stderr)
        r = self.sluice("suppress", "-c", self.cfg, "--tenant", "acme", "remove",
                        "never@x.test", "E@x.test")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("never@x.test is not suppressed for tenant 'acme'", r.stderr)
        self.assertIn("removed 1 address ", r.stdout)
        r = self.sluice("suppress", "-c", self.cfg, "list")
        self.assertEqual(r.stdout.splitlines(), ["acme/f@x.test import"])

    def test_shaping_show(self):
        self.start_scheduler()
        self.produce("--to", "a@gmail.com", "--count", 2, "--id", "g")
        self.dump("dispatch", 2)
        self.defer("127.0.0.3", "421 4.7.28 unusual rate")

        def show():
            r = self.sluice("shaping", "-c", self.cfg, "show")
            self.assertEqual(r.returncode, 0, r.stderr)
            return "throttled" in r.stdout and r.stdout

        out = wait_for(show, 20, "throttled pair in shaping show")
        rows = [line.split() for line in out.splitlines()]
        self.assertEqual(rows[0], ["SITE", "SOURCE", "STATE", "RATE", "DETAIL"])
        self.assertIn(["google", "127.0.0.2", "normal", "5/s"], rows)
        self.assertIn(["google", "127.0.0.3", "throttled", "2.5/s"], rows)


class TestQueue(SchedCase):
    extra = """
scheduler: { max_buffered: 10 }
"""
    sluice = TestCli.sluice

    def test_queue_shows_what_waits_on_retry_topics(self):
        """Nothing showed what waits where; `sluice queue` counts the jobs on
        each retry topic past the retry stage's committed offset, per site."""
        r = self.sluice("queue", "-c", self.cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("0 job(s) waiting", r.stdout)
        self.start_scheduler()
        # A slow site (1/s) with more jobs than shaping keeps in memory: the
        # excess is parked on a retry topic, never tried yet.
        self.produce("--to", "a@slow.test", "--count", 40, "--id", "s")

        def waiting():
            r = self.sluice("queue", "-c", self.cfg, "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            rows = [json.loads(l) for l in r.stdout.splitlines()]
            return [x for x in rows if x["waiting"] > 0] or None

        rows = wait_for(waiting, 30, "jobs waiting on a retry topic")
        for x in rows:
            self.assertIn(".retry.", "." + x["topic"])
            self.assertEqual(x["site"], "slow")
            self.assertEqual((x["parked"], x["deferred"]), (x["waiting"], 0), x)
            self.assertGreater(x["next_due_ms"], 0)
        r = self.sluice("queue", "-c", self.cfg)
        self.assertRegex(r.stdout, r"\bslow\b")


if __name__ == "__main__":
    unittest.main()
