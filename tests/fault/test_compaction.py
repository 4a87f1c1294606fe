"""Compaction on real Kafka: the latest state survives the log cleaner.

`sluice topics ensure` (harness.py) creates the suppressions, templates
and state topics; the Kafka admin API (ConfigCommand --describe) must
report cleanup.policy=compact on each, and not on the jobs topic. The test
then writes a history on each, a template put 20 times, two recipients
suppressed and removed again and again, and a warming IP's count of the
day written by a scheduler as it dispatches in two rounds, and makes the
log cleaner run soon (segment.ms 200, min.cleanable.dirty.ratio 0.01 on
those topics; a record appended after 200 ms rolls the segment, and only
closed segments are cleaned). It waits until every key that had more than
one record has exactly one left, the last one written, and then starts a
fresh scheduler and sender, which must act on the latest state only:

  - the template's last version is what reaches the sink;
  - the recipient whose last change was a removal is delivered, the one
    whose last change was an addition is SUPPRESSED;
  - the warming IP, whose cap for the day the first scheduler spent, takes
    no dispatch from the fresh scheduler.

Real Kafka only (SLUICE_KAFKA=real): the dev broker has no log cleaner.
"""

import collections
import os
import re
import subprocess
import time
import unittest

from harness import REAL, Cluster, log, wait_for
from sluicetest import bin_path

COMPACTED = ("suppressions", "templates", "state")
VERSIONS = 20
WARM_CAP = 6
TEMPLATE = "From: News <news@example.net>\nSubject: news v%d\n\nversion %d\n"


def last_by_key(records):
    """key -> (count, offset of the last record, its record)."""
    books = {}
    for rec in records:
        k = (rec.get("partition"), rec.get("key"))
        n, off, last = books.get(k, (0, -1, None))
        if rec["offset"] > off:
            off, last = rec["offset"], rec
        books[k] = (n + 1, off, last)
    return books


@unittest.skipUnless(REAL, "the log cleaner of a real Kafka (SLUICE_KAFKA=real)")
class CompactionTest(unittest.TestCase):
    def cli(self, *args):
        r = subprocess.run([bin_path("sluice"), args[0], "-c", self.c.cfg] + list(args[1:]),
                           capture_output=True, text=True, timeout=60, env=self.c.env)
        self.assertEqual(r.returncode, 0, "sluice %s: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def dispatches(self, prefix):
        """source IP -> dispatches of the jobs whose id starts with prefix."""
        by_ip = collections.Counter()
        for rec in self.c.dump("dispatch"):
            if rec.get("job_id", "").startswith(prefix):
                by_ip[rec.get("source_ip")] += 1
        return by_ip

    def warm_jobs(self, prefix, n):
        return [{"job_id": "%s-%03d" % (prefix, i), "to": ["w%d@warm.test" % i],
                 "domain": "warm.test", "pool": "warm",
                 "raw": "From: W <w@example.net>\r\nSubject: w\r\n\r\nw %d\r\n" % i}
                for i in range(n)]

    def test_fresh_daemons_load_the_latest_state_after_cleaning(self):
        today = time.strftime("%Y-%m-%d", time.gmtime())
        c = self.c = Cluster(
            "compaction", store=True,
            pools_yaml=("  warm:\n"
                        "    - { ip: 127.0.0.4, ehlo: a.example.net }\n"
                        "    - { ip: 127.0.0.5, ehlo: b.example.net,\n"
                        "        warmup: { start: %s, per_day: [%d, 1000] } }\n"
                        % (today, WARM_CAP)))
        self.addCleanup(c.close)

        # 1. The policy, as the broker reports it.
        cfgs = c.real.topic_configs()
        for s in COMPACTED:
            self.assertEqual(cfgs.get(c.topic(s), {}).get("cleanup.policy"), "compact",
                             "%s: %s" % (s, cfgs.get(c.topic(s))))
        self.assertNotEqual(cfgs.get(c.topic("jobs"), {}).get("cleanup.policy"), "compact")

        # 2. History. A template put VERSIONS times.
        tmpl = os.path.join(c.tmp, "news.eml")
        for v in range(1, VERSIONS + 1):
            with open(tmpl, "w") as f:
                f.write(TEMPLATE % (v, v))
            self.cli("template", "put", "news", tmpl)
        # Two recipients suppressed and removed five times; then one of them
        # suppressed again.
        for _ in range(5):
            self.cli("suppress", "add", "gone@d1.test", "back@d2.test")
            self.cli("suppress", "remove", "gone@d1.test", "back@d2.test")
        self.cli("suppress", "add", "gone@d1.test")
        # The warming IP's count, written as the first scheduler dispatches
        # (no sender yet: no DELIVERED event to rebuild it from), in two
        # rounds so the site's state is written more than once.
        c.start_scheduler("sched-1")
        for rnd, n in (("wa", 4), ("wb", 8)):
            c.publish(self.warm_jobs(rnd, n))
            wait_for(lambda: sum(self.dispatches(rnd).values()) == n, 60,
                     "%d dispatches of round %s" % (n, rnd), interval=0.5)
        spent = self.dispatches("wa")["127.0.0.5"] + self.dispatches("wb")["127.0.0.5"]
        self.assertEqual(spent, WARM_CAP, "the first scheduler spends the warm-up cap")
        self.assertEqual(c.term("sched-1"), 0, c.output())

        # A cleaner that runs within seconds on the compacted topics. Set
        # only now, so that the whole history is still there below: the
        # segment that holds it rolls at the next append.
        for s in COMPACTED:
            r = c.real.tool("configs", "--bootstrap-server", c.bootstrap, "--alter",
                            "--entity-type", "topics", "--entity-name", c.topic(s),
                            "--add-config", "segment.ms=200,min.cleanable.dirty.ratio=0.01")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        before = {s: last_by_key(c.dump(s)) for s in COMPACTED}
        repeated = {s: {k: v for k, v in b.items() if v[0] > 1} for s, b in before.items()}
        for s in COMPACTED:
            self.assertTrue(repeated[s], "%s has no key written twice: %s" % (s, before[s]))
        log("keys written more than once: %s" %
            {s: {k[1]: v[0] for k, v in r.items()} for s, r in repeated.items()})

        # 3. Wait for the cleaner. Each look first appends a tombstone of a
        # key of its own to each topic, which rolls the segment that holds
        # the history (older than segment.ms): only closed segments are
        # cleaned.
        rolls = [0]

        def cleaned():
            rolls[0] += 1
            c.publish([{"tombstone": True, "topic": s, "key": "roll-%d" % rolls[0]}
                       for s in COMPACTED])
            for s in COMPACTED:
                now = last_by_key(c.dump(s))
                for k, (_, off, _) in repeated[s].items():
                    if k not in now or now[k][0] != 1 or now[k][1] != off:
                        cleaned.left = (s, k[1], now.get(k, (0,))[0])
                        return False
            return True
        cleaned.left = None
        t0 = time.monotonic()
        wait_for(cleaned, 240, "the log cleaner to leave one record a key", interval=2)
        log("compacted after %.0fs (%d rolls)" % (time.monotonic() - t0, rolls[0]))

        # 4. A fresh scheduler and sender.
        c.start_scheduler("sched-2")
        c.start_sender("sender-2")
        jobs = [{"job_id": "tmpl-0", "to": ["reader@d3.test"], "domain": "d3.test",
                 "template_id": "news"},
                {"job_id": "back-0", "to": ["back@d2.test"], "domain": "d2.test",
                 "raw": "From: B <b@example.net>\r\nSubject: back\r\n\r\nback\r\n"},
                {"job_id": "gone-0", "to": ["gone@d1.test"], "domain": "d1.test",
                 "raw": "From: G <g@example.net>\r\nSubject: gone\r\n\r\ngone\r\n"}]
        c.publish(jobs + self.warm_jobs("wc", 8))
        ids = [j["job_id"] for j in jobs] + ["wc-%03d" % i for i in range(8)]
        c.wait_final(ids, 120, check_alive=("sched-2", "sender-2"))
        r = c.reconcile(ids, "compaction", expect_final=lambda i: (
            "SUPPRESSED" if i.startswith("gone") else "DELIVERED"))
        self.assertEqual(r["lost"], 0, r)
        self.assertEqual(r["wrong"], [], r)
        subjects = []
        for fn in sorted(os.listdir(c.sink.dir)):
            with open(os.path.join(c.sink.dir, fn), "rb") as f:
                msg = f.read().decode("utf-8", "replace")
            if "tmpl-0@" in msg:
                subjects += re.findall(r"^Subject: (.*?)\r?$", msg, re.M)
        self.assertEqual(subjects, ["news v%d" % VERSIONS])
        self.assertEqual(self.dispatches("wc").get("127.0.0.5", 0), 0,
                         "the fresh scheduler knows the warm-up cap is spent: %s"
                         % self.dispatches("wc"))


if __name__ == "__main__":
    unittest.main()
