"""Fault scenario: broker faults during `sluice bulk` of 100,000 recipients.

The recipients reach the CLI through a FIFO at a steady pace, so that the
send lasts long enough for the faults to land in the middle of it:
injected Produce errors (NOT_LEADER_FOR_PARTITION and REQUEST_TIMED_OUT),
a broker taken down (its connections closed) with the leaders of its
partitions moved to the others, then 5 s of added round-trip time. The
CLI must exit 0 and report every row published, and the jobs topic must
hold every recipient exactly once: the idempotent producer's retries
write nothing twice, and what failed is produced again, not dropped.

SLUICE_BULK_FAULT_ROWS changes the size (default 100,000).
"""

import collections
import json
import os
import subprocess
import threading
import time
import unittest

from harness import Cluster, log, wait_for
from sluicetest import bin_path

ROWS = int(os.environ.get("SLUICE_BULK_FAULT_ROWS", "100000"))
PACE_S = 16.0  # the rows trickle in over this long
TEMPLATE = ("From: News <news@example.net>\n"
            "To: {{email}}\n"
            "Subject: Hello {{name}}\n"
            "\n"
            "Hi {{name}}.\n")


class Feeder(threading.Thread):
    """Writes the CSV into the FIFO at a steady pace; `written` counts rows."""

    def __init__(self, path, rows, seconds):
        super().__init__(daemon=True)
        self.path, self.rows, self.seconds = path, rows, seconds
        self.written = 0
        self.error = None

    def run(self):
        try:
            with open(self.path, "w") as f:
                f.write("email,name\n")
                chunk = max(1, self.rows // 200)
                t0 = time.monotonic()
                for i in range(0, self.rows, chunk):
                    n = min(chunk, self.rows - i)
                    f.write("".join("r%d@d%d.example,Name %d\n" % (k, k % 50, k)
                                    for k in range(i, i + n)))
                    f.flush()
                    self.written += n
                    due = t0 + self.seconds * self.written / self.rows
                    # Pacing, not synchronisation: the writer keeps a rate.
                    time.sleep(max(0.0, due - time.monotonic()))
        except Exception as e:  # surfaced by the test
            self.error = e


class BulkBrokerFaultTest(unittest.TestCase):
    def test_bulk_send_through_broker_faults(self):
        c = Cluster("bulk", partitions=8)
        try:
            tmpl = os.path.join(c.tmp, "t.eml")
            with open(tmpl, "w") as f:
                f.write(TEMPLATE)
            r = subprocess.run([bin_path("sluice"), "template", "put", "-c", c.cfg, "news", tmpl],
                               capture_output=True, text=True, timeout=60, env=c.env)
            self.assertEqual(r.returncode, 0, r.stderr)

            fifo = os.path.join(c.tmp, "rcpts.csv")
            os.mkfifo(fifo)
            out = open(os.path.join(c.tmp, "bulk.out"), "w+")
            self.addCleanup(out.close)
            err = open(os.path.join(c.tmp, "bulk.err"), "w+")
            self.addCleanup(err.close)
            bulk = subprocess.Popen(
                [bin_path("sluice"), "bulk", "-c", c.cfg, "--template", "news",
                 "--recipients", fifo, "--format", "csv", "--from", "news@example.net",
                 "--campaign", "faults", "--accepted-events", "off", "--no-progress", "--json"],
                stdout=out, stderr=err, env=c.env)
            feeder = Feeder(fifo, ROWS, PACE_S)
            feeder.start()

            def fed(frac):
                return lambda: feeder.written >= ROWS * frac or feeder.error
            wait_for(fed(0.1), 60, "10% of the rows fed")
            c.ctl.command("errors Produce 30 NOT_LEADER_FOR_PARTITION")
            c.ctl.command("errors Produce 10 REQUEST_TIMED_OUT")

            wait_for(fed(0.25), 60, "25% of the rows fed")
            c.broker_down()
            t0 = time.monotonic()
            wait_for(lambda: bulk.poll() is not None or time.monotonic() - t0 >= 4, 10,
                     "a 4 s outage", interval=0.2)
            c.broker_up()

            wait_for(fed(0.6), 60, "60% of the rows fed")
            c.ctl.command("rtt 2 5000")
            t0 = time.monotonic()
            wait_for(lambda: bulk.poll() is not None or time.monotonic() - t0 >= 5, 10,
                     "5 s of latency", interval=0.2)
            c.ctl.command("rtt 2 0")
            c.ctl.command("clear")

            feeder.join(timeout=120)
            self.assertIsNone(feeder.error)
            self.assertEqual(feeder.written, ROWS)
            rc = bulk.wait(timeout=300)
            out.seek(0)
            err.seek(0)
            report, errors = out.read(), err.read()
            self.assertEqual(rc, 0, "sluice bulk exited %d\n%s\n%s" % (rc, report, errors[-3000:]))
            summary = json.loads(report.strip().splitlines()[-1])
            log("bulk summary: %s" % summary)
            self.assertEqual(summary["published"], ROWS, summary)
            self.assertEqual(summary["rejected"], 0, summary)

            recs = c.dump("jobs", timeout_ms=5000)
            seen = collections.Counter()
            for rec in recs:
                for rcpt in rec["recipients"]:
                    seen[rcpt] += 1
            want = {"r%d@d%d.example" % (k, k % 50) for k in range(ROWS)}
            missing = want - set(seen)
            twice = {a: n for a, n in seen.items() if n > 1}
            line = ("scenario=bulk-broker-faults rows=%d stored=%d missing=%d duplicates=%d "
                    "bulk_seconds=%.1f" % (ROWS, len(recs), len(missing),
                                           sum(n - 1 for n in twice.values()),
                                           summary["seconds"]))
            log(line)
            if os.environ.get("SLUICE_FAULT_REPORT"):
                with open(os.environ["SLUICE_FAULT_REPORT"], "a") as f:
                    f.write(line + "\n")
            self.assertEqual(len(missing), 0, sorted(missing)[:10])
            self.assertEqual(twice, {}, list(twice.items())[:10])
            self.assertEqual(set(seen) - want, set())
            self.assertEqual(len(recs), ROWS)
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
