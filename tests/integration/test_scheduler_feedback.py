"""Integration tests of the scheduler's feedback stage against a real dev
broker and the real sluice-scheduler: complaints suppress and count, a
bounce can disable a source IP (Microsoft's banned-IP reply), and a
sender's "every MX is down from this IP" deferral stops that (site, IP)
until the sender's next probe."""

import subprocess
import time
import unittest

from sluicetest import bin_path, wait_for
from test_scheduler import SchedCase


class TestFeedback(SchedCase):
    sites = "  microsoft: { mx: [\"*.protection.outlook.com\"], domains: [outlook.test] }\n"

    def event(self, *args):
        r = self.tool("event", "-c", self.cfg, *args)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_complaint_suppresses_and_counts(self):
        self.start_scheduler()
        self.event("--type", "complained", "--tenant", "acme", "--to", "Angry@x.test",
                   "--site", "microsoft", "--id", "c")
        sup = wait_for(lambda: [s for s in self.dump("suppressions", 0, 2000)
                                if s["key"] == "acme/angry@x.test"], 20, "suppression")
        self.assertEqual(len(sup), 1)
        want = 'sluice_complaints_total{site="microsoft"} 1'
        wait_for(lambda: want in self.metrics(), 10, "complaint counter")
        self.assertIn('sluice_suppressions_added_total{reason="complaint"} 1', self.metrics())
        # The next job to that recipient of that tenant stops at classify.
        self.produce("--to", "angry@x.test", "--tenant", "acme", "--id", "again")
        wait_for(lambda: any(e.get("event", {}).get("job_id") == "again-0" and
                             e["event"]["type"] == "SUPPRESSED"
                             for e in self.dump("events", 0, 2000)), 20, "SUPPRESSED again-0")

    def test_complaint_while_no_scheduler_runs_suppresses_once_one_starts(self):
        # The fleet's feedback group is committed and starts at the
        # beginning: a complaint published while every scheduler is down is
        # read by the first one to start.
        self.event("--type", "complained", "--tenant", "acme", "--to", "early@x.test",
                   "--site", "microsoft", "--id", "early")
        self.start_scheduler()
        wait_for(lambda: [s for s in self.dump("suppressions", 0, 2000)
                          if s["key"] == "acme/early@x.test"], 20, "suppression")
        # A restart does not read it again (the group's offset is
        # committed), and a complaint that arrives while it is down is
        # read after it.
        self.sched.stop()
        self.event("--type", "complained", "--tenant", "acme", "--to", "late@x.test",
                   "--site", "microsoft", "--id", "late")
        self.start_scheduler()
        wait_for(lambda: [s for s in self.dump("suppressions", 0, 2000)
                          if s["key"] == "acme/late@x.test"], 20, "second suppression")
        wait_for(lambda: 'sluice_complaints_total{site="microsoft"} 1' in self.metrics(), 10,
                 "one complaint counted by the restarted scheduler")
        self.produce("--to", "early@x.test", "--tenant", "acme", "--id", "again")
        wait_for(lambda: any(e.get("event", {}).get("job_id") == "again-0" and
                             e["event"]["type"] == "SUPPRESSED"
                             for e in self.dump("events", 0, 2000)), 20, "SUPPRESSED again-0")

    def test_banned_ip_bounce_disables_the_ip(self):
        self.start_scheduler()
        self.event("--type", "bounced", "--site", "microsoft", "--source-ip", "127.0.0.2",
                   "--code", 550, "--enh", "5.7.606", "--to", "a@outlook.test",
                   "--reply", "550 5.7.606 Access denied, banned sending IP [127.0.0.2]")
        want = 'sluice_shape_state{site="microsoft",source="127.0.0.2",state="disabled"} 1'
        wait_for(lambda: want in self.metrics(), 20, "IP disabled")
        self.produce("--to", "a@outlook.test", "--count", 6, "--id", "m")
        recs = self.dump("dispatch", 6)
        self.assertEqual({r["source_ip"] for r in recs}, {"127.0.0.3"})
        shaping = [e["event"] for e in self.dump("events", 0, 3000)
                   if e.get("event", {}).get("type") == "SHAPING"]
        self.assertTrue(any("disabled" in e.get("reason", "") for e in shaping), shaping)
        # Another site keeps both IPs.
        self.produce("--to", "a@other.test", "--count", 4, "--id", "o")
        other = [r for r in self.dump("dispatch", 10) if r["site"] == "other.test"]
        self.assertEqual({r["source_ip"] for r in other}, {"127.0.0.2", "127.0.0.3"})

    def shaping_show(self):
        r = subprocess.run([bin_path("sluice"), "shaping", "-c", self.cfg, "show"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_destination_down_suspends_the_pair_until_the_probe(self):
        self.start_scheduler()
        down_ms = 6000
        t0 = time.time()
        self.event("--type", "deferred", "--site", "down.test", "--source-ip", "127.0.0.2",
                   "--to", "a@down.test", "--down-for-ms", down_ms,
                   "--reply", "127.0.0.1:1: connection refused")
        want = 'sluice_shape_suspended_until_seconds{site="down.test",source="127.0.0.2",' \
               'cause="destination-down"}'
        wait_for(lambda: want in self.metrics(), 20, "pair suspended")
        until = float([line.split()[-1] for line in self.metrics().splitlines()
                       if line.startswith(want)][0])
        self.assertAlmostEqual(until, t0 + down_ms / 1000.0, delta=5)
        out = self.shaping_show()
        row = [line for line in out.splitlines() if line.startswith("down.test ")
               and "127.0.0.2" in line]
        self.assertEqual(len(row), 1, out)
        self.assertIn("suspended", row[0])
        self.assertIn("destination down until", row[0])
        # A second report a little later extends the suspension.
        self.event("--type", "deferred", "--site", "down.test", "--source-ip", "127.0.0.2",
                   "--to", "a@down.test", "--down-for-ms", down_ms + 2000,
                   "--reply", "127.0.0.1:1: connection refused")
        until = wait_for(lambda: [float(line.split()[-1]) for line in self.metrics().splitlines()
                                  if line.startswith(want) and
                                  float(line.split()[-1]) > until + 1], 20, "extended")[0]
        # While it lasts, the down site's jobs all go by the other IP; another
        # site keeps both.
        self.produce("--to", "a@down.test", "--count", 6, "--id", "d")
        self.produce("--to", "a@up.test", "--count", 4, "--id", "u")
        recs = self.dump("dispatch", 10)
        # Those dispatched while it lasted (all of them, unless the machine
        # is very slow) went by the other IP.
        down = [r for r in recs if r["site"] == "down.test" and r["ts"] < until * 1000]
        up = [r for r in recs if r["site"] == "up.test"]
        self.assertTrue(down, recs)
        self.assertEqual({r["source_ip"] for r in down}, {"127.0.0.3"})
        self.assertEqual({r["source_ip"] for r in up}, {"127.0.0.2", "127.0.0.3"})
        shaping = [e["event"] for e in self.dump("events", 0, 3000)
                   if e.get("event", {}).get("type") == "SHAPING"]
        self.assertTrue(any("destination down until" in e.get("reason", "") and
                            e.get("source_ip") == "127.0.0.2" for e in shaping), shaping)
        # When it ends, dispatching to the pair resumes: the probe.
        wait_for(lambda: 'sluice_shape_state{site="down.test",source="127.0.0.2",'
                 'state="normal"} 1' in self.metrics(), 30, "suspension over")
        self.assertNotIn(want, self.metrics())
        self.produce("--to", "a@down.test", "--count", 4, "--id", "p")
        later = [r for r in self.dump("dispatch", 14) if r["job_id"].startswith("p-")]
        self.assertIn("127.0.0.2", {r["source_ip"] for r in later})
        # Nothing went to the pair before its suspension ended.
        for r in self.dump("dispatch", 14):
            if r["site"] == "down.test" and r["source_ip"] == "127.0.0.2":
                self.assertGreaterEqual(r["ts"], until * 1000 - 1, r)

    def test_every_ip_down_holds_the_site_then_sends(self):
        self.start_scheduler()
        for ip in ("127.0.0.2", "127.0.0.3"):
            self.event("--type", "deferred", "--site", "dead.test", "--source-ip", ip,
                       "--to", "a@dead.test", "--down-for-ms", 5000,
                       "--reply", "connection timed out")
        untils = []
        for ip in ("127.0.0.2", "127.0.0.3"):
            want = 'sluice_shape_suspended_until_seconds{site="dead.test",source="%s",' \
                   'cause="destination-down"}' % ip
            untils += wait_for(lambda: [float(line.split()[-1]) for line in
                                        self.metrics().splitlines() if line.startswith(want)],
                               20, "suspended " + ip)
        self.produce("--to", "a@dead.test", "--count", 3, "--id", "dead")
        self.produce("--to", "a@alive.test", "--count", 3, "--id", "alive")
        first = self.dump("dispatch", 3)
        self.assertEqual({r["site"] for r in first}, {"alive.test"})
        # Held in shape (not dispatched to a sender that would only defer
        # them) until the suspension ends, then dispatched.
        self.assertEqual(len([r for r in self.dump("dispatch", 0, 1000)
                              if r["site"] == "dead.test"]), 0)
        recs = self.dump("dispatch", 6, 30000)
        dead = [r for r in recs if r["site"] == "dead.test"]
        self.assertEqual(len(dead), 3)
        for r in dead:
            self.assertGreaterEqual(r["ts"], min(untils) * 1000 - 1, r)


class TestDownParking(SchedCase):
    extra = """
scheduler: { max_buffered: 10 }
"""

    def test_excess_of_a_down_site_parks_for_the_outage_not_the_longest_delay(self):
        self.start_scheduler()
        for ip in ("127.0.0.2", "127.0.0.3"):
            r = self.tool("event", "-c", self.cfg, "--type", "deferred", "--site", "dead.test",
                          "--source-ip", ip, "--to", "a@dead.test", "--down-for-ms", 20000,
                          "--reply", "connection refused")
            self.assertEqual(r.returncode, 0, r.stderr)
        for ip in ("127.0.0.2", "127.0.0.3"):
            wait_for(lambda: 'sluice_shape_state{site="dead.test",source="%s",'
                     'state="suspended"} 1' % ip in self.metrics(), 20, "suspended " + ip)
        self.produce("--to", "a@dead.test", "--count", 30, "--id", "dead")
        # Shape holds max_buffered; the rest waits in Kafka on the shortest
        # retry topic that covers the outage (1m), not the longest (30m).
        parked = wait_for(lambda: (lambda r: len(r) >= 20 and r)(
            self.dump("retry.1m", 0, 2000)), 30, "20 parked on retry.1m")
        self.assertEqual(len(parked), 20)
        self.assertEqual(self.dump("retry.30m", 0, 1000), [])
        self.assertEqual(self.dump("dispatch", 0, 1000), [])


if __name__ == "__main__":
    unittest.main()
