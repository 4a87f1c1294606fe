"""Integration tests of sluice-scheduler: a real dev broker, the real
scheduler, Jobs produced with sched_tool and the dispatch / DLQ / events /
retry topics read back with it.

Every test gets its own devbroker (random ports) and config file."""

import collections
import json
import subprocess
import tempfile
import time
import unittest
import urllib.request

from sluicetest import Proc, bin_path, free_port, http_ready, start_devbroker, wait_for, write_file

DEADLINE = 60


BASE = """
pools:
  default:
    - { ip: 127.0.0.2, ehlo: mta1.example.net }
    - { ip: 127.0.0.3, ehlo: mta2.example.net }
%(pools)s
sites:
  google: { mx: ["*.google.com"], domains: [gmail.com] }
  slow:   { mx: ["*.slow.example"], domains: [slow.test] }
%(sites)sshaping:
  default: { max_message_rate: 1000/s }
  google:  { max_message_rate: 5/s, max_connections: 3, tls: required }
  slow:    { max_message_rate: 1/s, burst: 1 }
routes:
  "*.test": 127.0.0.1:2525
%(retry)s
"""


def warm_pools(plain=True):
    """The pool "warm": 127.0.0.5 warming up since today (3 a day, then
    10), with the plain 127.0.0.4 beside it unless plain is False."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    return ("  warm:\n" + ("    - { ip: 127.0.0.4, ehlo: a.example.net }\n" if plain else "")
            + "    - { ip: 127.0.0.5, ehlo: b.example.net,\n"
            "        warmup: { start: %s, per_day: [3, 10] } }\n" % today)


def count_by_ip(recs):
    """Dispatch records counted by source_ip."""
    return dict(collections.Counter(r["source_ip"] for r in recs))


class SchedCase(unittest.TestCase):
    extra = ""
    pools = ""
    sites = ""  # more lines of the sites: mapping
    retry = "retry: { delays: [1m, 5m, 30m], expiry: 72h }"

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-sched-")
        self.tmp = self._tmp.name
        base = BASE % {"pools": self.pools, "sites": self.sites, "retry": self.retry}
        pre = self.write("broker.yaml", "kafka:\n  bootstrap: 127.0.0.1:1\n" + base + self.extra)
        self.broker, self.bootstrap = start_devbroker(self.tmp, cfg=pre)
        self.metrics_port = free_port()
        self.cfg = self.write("sluice.yaml", (
            "kafka:\n  bootstrap: %s\n  session_timeout_ms: 6000\n"
            "  heartbeat_interval_ms: 1000\n  commit_interval_ms: 200\n"
            "metrics: { listen: 127.0.0.1:%d }\n" % (self.bootstrap, self.metrics_port))
            + base + self.extra)
        self.sched = None

    def tearDown(self):
        if self.sched:
            self.sched.stop()
        self.broker.stop()
        self._tmp.cleanup()

    def write(self, name, text):
        return write_file(self.tmp, name, text)

    def start_scheduler(self, *args):
        self.sched = Proc("sluice-scheduler", ["-c", self.cfg] + list(args), tmpdir=self.tmp)
        wait_for(lambda: self.ready() or self.check_alive(), 30, "scheduler /readyz")

    def check_alive(self):
        if not self.sched.alive():
            raise AssertionError("scheduler exited\n" + self.sched.output())
        return False

    def ready(self):
        return http_ready(self.metrics_port)

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                    timeout=5) as r:
            return r.read().decode()

    def tool(self, *args, timeout=DEADLINE):
        r = subprocess.run([bin_path("sched_tool")] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=timeout)
        return r

    def defer(self, source_ip="127.0.0.2",
              reply="421-4.7.28 Our system has detected an unusual rate"):
        """A DEFERRED event from google's MX: 421 4.7.28, its rate-limit reply."""
        r = self.tool("event", "-c", self.cfg, "--type", "deferred", "--site", "google",
                      "--source-ip", source_ip, "--code", 421, "--enh", "4.7.28", "--reply", reply)
        self.assertEqual(r.returncode, 0, r.stderr)

    def produce(self, *args):
        r = self.tool("produce", "-c", self.cfg, *args)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def dump(self, topic, count, timeout_ms=20000):
        r = self.tool("dump", "-c", self.cfg, "--topic", topic, "--count", count,
                      "--timeout", timeout_ms)
        recs = [json.loads(line) for line in r.stdout.splitlines()]
        if count and len(recs) < count:
            raise AssertionError("%d of %d records on %s\n%s" % (
                len(recs), count, topic, self.sched.output() if self.sched else ""))
        return recs


class TestPlainPath(SchedCase):
    def test_sites_ips_and_pacing(self):
        self.start_scheduler()
        self.produce("--to", "a@gmail.com", "--count", 20, "--id", "g")
        self.produce("--to", "b@foo.test,c@foo.test", "--count", 2, "--id", "t")
        recs = self.dump("dispatch", 22)
        google = [r for r in recs if r["site"] == "google"]
        routed = [r for r in recs if r["site"] == "foo.test"]
        self.assertEqual(len(google), 20)
        self.assertEqual(len(routed), 2)
        for r in google:
            self.assertEqual(r["key"], "%s/google" % r["source_ip"])
            self.assertEqual(r["rate_per_sec"], 5)
            self.assertEqual(r["max_connections"], 3)
            self.assertEqual(r["tls"], 1)
            self.assertEqual(r["route"], "")
        for r in routed:
            self.assertEqual(r["route"], "127.0.0.1:2525")
            self.assertEqual(r["recipients"], ["b@foo.test", "c@foo.test"])
        # Equal weights: both IPs share the site evenly.
        by_ip = {}
        for r in google:
            by_ip.setdefault(r["source_ip"], []).append(r["send_at_ms"])
        self.assertEqual(sorted(by_ip), ["127.0.0.2", "127.0.0.3"])
        self.assertEqual([len(v) for v in by_ip.values()], [10, 10])
        # Per IP: a burst of 5 then one every 200 ms (5/s).
        for ip, times in by_ip.items():
            times.sort()
            self.assertGreaterEqual(times[-1] - times[0], (10 - 5) * 200 - 5, ip)
            for a, b in zip(times[5:], times[6:]):
                self.assertGreaterEqual(b - a, 195, ip)

    def test_rejections_go_to_dlq_with_event(self):
        self.start_scheduler()
        self.produce("--garbage", "--to", "x@bad.test")
        self.produce("--version", 99, "--to", "y@bad.test", "--id", "v")
        self.produce("--to", "bad address@bad.test", "--id", "a")
        self.produce("--to", "ok@fine.test", "--id", "ok")
        dlq = self.dump("dlq", 3)
        reasons = sorted(r["headers"]["reason"] for r in dlq)
        self.assertEqual(reasons, ["invalid recipient address", "malformed protobuf",
                                   "unsupported wire version"])
        events = [r["event"] for r in self.dump("events", 3)]
        self.assertTrue(all(e["type"] == "REJECTED" for e in events))
        self.assertIn("a-0", [e.get("job_id") for e in events])
        # The partition did not stall: the good job behind them went on.
        ok = self.dump("dispatch", 1)
        self.assertEqual(ok[0]["job_id"], "ok-0")

    def test_sigterm_drains_and_exits_zero(self):
        self.start_scheduler()
        self.produce("--to", "a@slow.test", "--count", 5, "--id", "s")
        self.dump("dispatch", 1)
        self.assertEqual(self.sched.stop(timeout=30), 0, self.sched.output())
        # Nothing lost: every job is either dispatched or parked on a retry topic.
        disp = self.dump("dispatch", 0, 3000)
        parked = self.dump("retry.1m", 0, 3000)
        ids = sorted({r["job_id"] for r in disp + parked})
        self.assertEqual(ids, ["s-%d" % i for i in range(5)])


class TestRepeatWindow(SchedCase):
    """A scheduler SIGKILLed before it ever committed: the next owner reads
    its partitions again from the start, and what it dispatches again is
    flagged repeat (possible_duplicate on the sender's events), because the
    first owner committed where it started as it was assigned."""

    def setUp(self):
        super().setUp()
        # Never a commit of its own within the test: only the one at its
        # assignment.
        with open(self.cfg) as f:
            text = f.read()
        self.cfg = self.write("sluice.yaml", text.replace("commit_interval_ms: 200",
                                                          "commit_interval_ms: 600000"))

    def test_repeats_after_a_kill_before_the_first_commit_are_flagged(self):
        self.start_scheduler()
        # Straight to the sited topic: only shape's window is at stake (a
        # killed classify stage makes new sited copies of its own).
        self.produce("--topic", "sited", "--key", "fast.test", "--to", "a@fast.test",
                     "--count", 5, "--id", "r")
        first = self.dump("dispatch", 5)
        self.assertEqual([r["repeat"] for r in first], [False] * 5)
        self.sched.kill()
        self.start_scheduler()
        # Each job twice: the first copy plain, the second flagged.
        copies = collections.defaultdict(list)
        for r in self.dump("dispatch", 10, 60000):
            copies[r["job_id"]].append(r["repeat"])
        self.assertEqual({j: sorted(v) for j, v in copies.items()},
                         {"r-%d" % i: [False, True] for i in range(5)}, self.sched.output())
        self.assertIn("sluice_shape_repeat_total 5\n", self.metrics())
        self.assertEqual(len(self.dump("dispatch", 0, 2000)), 10)


class TestShaping(SchedCase):
    extra = """
scheduler: { max_buffered: 10 }
"""

    def test_slow_site_never_delays_another(self):
        self.start_scheduler()
        self.produce("--to", "a@slow.test", "--count", 8, "--id", "slow")
        self.produce("--to", "b@fast.test", "--count", 3, "--id", "fast")
        recs = self.dump("dispatch", 3 + 2, 20000)
        fast = [r for r in self.dump("dispatch", 0, 5000) if r["site"] == "fast.test"]
        self.assertEqual(len(fast), 3)
        slow = [r for r in self.dump("dispatch", 0, 5000) if r["site"] == "slow.test"]
        # The fast site went out long before the slow site's backlog cleared.
        self.assertLess(max(r["ts"] for r in fast), min(r["ts"] for r in fast) + 3000)
        self.assertLess(len(slow), 8)
        del recs

    def test_transactional_ahead_of_bulk(self):
        self.start_scheduler()
        self.produce("--to", "a@slow.test", "--count", 6, "--id", "bulk")
        self.produce("--to", "a@slow.test", "--count", 1, "--id", "tx",
                     "--priority", "transactional")
        recs = self.dump("dispatch", 7, 30000)
        order = [r["job_id"] for r in recs]
        # Bulk jobs already within the look-ahead went first; the
        # transactional one overtook every bulk job still queued.
        self.assertLess(order.index("tx-0"), order.index("bulk-5"), order)
        self.assertEqual(order[order.index("tx-0") + 1:],
                         sorted(order[order.index("tx-0") + 1:], key=lambda x: int(x[5:])))

    def test_excess_is_parked_on_retry(self):
        self.start_scheduler()
        self.produce("--to", "a@slow.test", "--count", 30, "--id", "p")
        parked = self.dump("retry.1m", 15, 20000)
        now = time.time() * 1000
        for r in parked:
            self.assertEqual(r["key"], "slow")
            self.assertGreater(r["not_before_ms"], now + 30000)
        m = wait_for(lambda: "sluice_shape_parked_total" in self.metrics() and self.metrics(),
                     10, "parked metric")
        self.assertIn('sluice_shape_parked_total{site="slow",reason="over-bound"}', m)

    def test_backoff_halves_on_rate_limit_reply(self):
        self.start_scheduler()
        self.produce("--to", "a@gmail.com", "--count", 2, "--id", "g")
        self.dump("dispatch", 2)
        self.defer()
        want = 'sluice_shape_rate_per_second{site="google",source="127.0.0.2"} 2.5'
        wait_for(lambda: want in self.metrics(), 20, "halved rate")
        m = self.metrics()
        self.assertIn('sluice_shape_state{site="google",source="127.0.0.2",state="throttled"} 1', m)
        self.assertIn('sluice_shape_rate_per_second{site="google",source="127.0.0.3"} 5', m)
        def shaping_events():
            return [e["event"] for e in self.dump("events", 0, 3000)
                    if e.get("event", {}).get("type") == "SHAPING"]
        shaping = wait_for(shaping_events, 20, "SHAPING event")
        self.assertEqual(len(shaping), 1, shaping)
        self.assertEqual(shaping[0]["source_ip"], "127.0.0.2")
        self.assertEqual(shaping[0]["rate_per_sec"], 2.5)


class TestWarmup(SchedCase):
    def setUp(self):
        self.pools = warm_pools()
        super().setUp()

    def test_warmup_cap_moves_the_rest_to_other_ips(self):
        self.start_scheduler()
        self.produce("--to", "a@fast.test", "--count", 12, "--pool", "warm", "--id", "w")
        by_ip = count_by_ip(self.dump("dispatch", 12))
        self.assertEqual(by_ip, {"127.0.0.4": 9, "127.0.0.5": 3})

    def test_warmup_count_survives_restart(self):
        # Today the warming IP already sent two dispatches (one of them to
        # two recipients: one dispatch, two events) before this scheduler
        # started: the count is rebuilt from the events topic.
        for job, rcpt in (("x-0", "a@fast.test"), ("x-0", "b@fast.test"), ("y-0", "c@fast.test")):
            r = self.tool("event", "-c", self.cfg, "--type", "delivered", "--site", "fast.test",
                          "--source-ip", "127.0.0.5", "--to", rcpt, "--id", job)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.start_scheduler()
        self.produce("--to", "a@fast.test", "--count", 12, "--pool", "warm", "--id", "w")
        by_ip = count_by_ip(self.dump("dispatch", 12))
        self.assertEqual(by_ip, {"127.0.0.4": 11, "127.0.0.5": 1})


class TestMxRollup(SchedCase):
    def setUp(self):
        import dnstest
        self.dns = dnstest.DnsServer({
            "corp.example": {"MX": [(10, "aspmx.l.google.com"), (20, "alt1.aspmx.l.google.com")]},
            "other.example": {"MX": [(20, "MX2.other.example"), (10, "mx1.other.example")]},
            "nullmx.example": {"MX": [(0, ".")]},
            "noemail.example": {"A": ["127.0.0.1"]},
            "servfail.example": "SERVFAIL",
        })
        host, port = self.dns.start()
        self.extra = "dns: { servers: [\"%s:%d\"], timeout: 1s, tries: 1 }\n" % (host, port)
        super().setUp()

    def tearDown(self):
        super().tearDown()
        self.dns.stop()

    def test_sites_from_mx(self):
        self.start_scheduler()
        self.produce("--to", "a@corp.example", "--count", 3, "--id", "corp")
        self.produce("--to", "a@other.example", "--id", "other")
        self.produce("--to", "a@nullmx.example", "--id", "null")
        self.produce("--to", "a@noemail.example", "--id", "implicit")
        self.produce("--to", "a@servfail.example", "--id", "sf")
        recs = {r["job_id"]: r for r in self.dump("dispatch", 6, 30000)}
        self.assertEqual(recs["corp-0"]["site"], "google")
        self.assertEqual(recs["corp-0"]["mx"], ["aspmx.l.google.com", "alt1.aspmx.l.google.com"])
        self.assertEqual(recs["other-0"]["site"], "mx1.other.example,mx2.other.example")
        self.assertEqual(recs["null-0"]["site"], "nullmx.example")
        self.assertTrue(recs["null-0"]["null_mx"])
        self.assertEqual(recs["implicit-0"]["site"], "noemail.example")
        self.assertEqual(recs["implicit-0"]["mx"], [])
        # A temporary DNS failure parks the job instead of holding the partition.
        parked = self.dump("retry.1m", 1, 20000)
        self.assertEqual(parked[0]["job_id"], "sf-0")
        self.assertEqual(parked[0]["key"], "servfail.example")
        # The TTL cache: three jobs, one query.
        self.assertEqual(self.dns.count("corp.example", "MX"), 1)


class TestRetryAndSuppression(SchedCase):
    def test_retry_waits_until_due_then_republishes(self):
        self.start_scheduler("--stages", "retry")
        due = int(time.time() * 1000) + 3000
        self.produce("--topic", "retry.1m", "--key", "google", "--to", "a@gmail.com",
                     "--not-before-ms", due, "--id", "r")
        self.produce("--topic", "retry.1m", "--key", "google", "--to", "a@gmail.com",
                     "--created-at-ms", 1000, "--id", "old")
        jobs = self.dump("jobs", 1, 20000)
        self.assertEqual(jobs[0]["job_id"], "r-0")
        self.assertGreaterEqual(jobs[0]["ts"], due)
        self.assertEqual(jobs[0]["key"], "gmail.com")
        ev = [e["event"] for e in self.dump("events", 1)]
        self.assertEqual(ev[0]["type"], "EXPIRED")
        self.assertEqual(ev[0]["job_id"], "old-0")

    def test_suppressed_recipients_and_hard_bounce(self):
        r = self.tool("suppress", "-c", self.cfg, "--tenant", "acme", "--to", "gone@x.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.start_scheduler()
        self.produce("--to", "gone@x.test,here@x.test", "--tenant", "acme", "--id", "s")
        d = self.dump("dispatch", 1)
        self.assertEqual(d[0]["recipients"], ["here@x.test"])
        ev = [e["event"] for e in self.dump("events", 1)]
        self.assertEqual(ev[0]["type"], "SUPPRESSED")
        self.assertEqual(ev[0]["recipient"], "gone@x.test")
        # A hard invalid-recipient bounce suppresses the address automatically.
        r = self.tool("event", "-c", self.cfg, "--type", "bounced", "--tenant", "acme",
                      "--to", "here@x.test", "--code", 550, "--enh", "5.1.1",
                      "--reply", "550 5.1.1 no such user", "--bounce-class",
                      "invalid-recipient", "--hard", "--id", "b")
        self.assertEqual(r.returncode, 0, r.stderr)
        sup = self.dump("suppressions", 2)
        self.assertIn("acme/here@x.test", [s["key"] for s in sup])
        self.produce("--to", "here@x.test", "--tenant", "acme", "--id", "again")
        wait_for(lambda: any(e.get("event", {}).get("job_id") == "again-0" and
                             e["event"]["type"] == "SUPPRESSED"
                             for e in self.dump("events", 0, 2000)), 20, "SUPPRESSED again-0")


if __name__ == "__main__":
    unittest.main()
