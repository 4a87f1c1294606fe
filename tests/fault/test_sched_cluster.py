"""The scheduler as a cluster, on real Kafka (SLUICE_KAFKA=real; ctest
label `kafka`): three scheduler processes share the sited partitions, and
a site's shaping state follows the site when its owner is SIGKILLed and
its partition moves to another running scheduler. Measured at the sink."""

import collections
import subprocess
import time
import unittest

from harness import REAL, Cluster, bin_path, log, wait_for
import dnstest
from test_sender_conn_cap import ADDRS, HOSTS, Sinks, peak_connections, read_lines


def topics_ready(c):
    """Just created topics take a moment to be known to every broker."""
    for t in ("suppressions", "sited", "state", "events"):
        c.watermarks("fault." + t)


@unittest.skipUnless(REAL, "needs SLUICE_KAFKA=real (a real Kafka cluster)")
class TestSiteStateFollowsTheSite(unittest.TestCase):
    def test_warmup_cap_holds_across_a_sigkill_of_the_owner(self):
        today = time.strftime("%Y-%m-%d", time.gmtime())
        # One site (domains=1), jobs from the pool "warm" whose only IP,
        # 127.0.0.3, may send 300 a day, at 20/s: the owner is killed half
        # way and its partition moves to one of the two others.
        c = Cluster("sched-warmup", partitions=4, domains=1, ips=1,
                    pools_yaml="  warm:\n    - { ip: 127.0.0.3, ehlo: mta3.example.net,\n"
                               "        warmup: { start: %s, per_day: [300] } }\n" % today,
                    shaping="{ max_message_rate: 20/s, max_connections: 4 }",
                    retry="{ delays: [1s, 2s, 5s], expiry: 10m }")
        self.addCleanup(c.close)
        names = start_three(c)
        specs = c.job_specs(450, "w")
        for s in specs:
            s["pool"] = "warm"
        c.publish(specs)

        def from_warm():
            return [m for m in c.sink.messages() if m.get("peer", "").startswith("127.0.0.3")]
        wait_for(lambda: len(from_warm()) >= 120, 60, "120 at the sink")
        series = 'sluice_shape_dispatched_total{site="d0.test",source="127.0.0.3"}'
        owner = [n for n in names if c.metric(n, series) > 0]
        self.assertEqual(len(owner), 1, owner)
        log("owner %s; %d at the sink" % (owner[0], len(from_warm())))
        c.kill(owner[0])
        others = [n for n in names if n != owner[0]]
        # The partition moves (session timeout) and the new owner goes on.
        wait_for(lambda: sum(c.metric(n, series) for n in others) > 0, 60, "a new owner")
        c.start_scheduler(owner[0])
        # The cap is spent: the rest waits on the retry topics. (Jobs a
        # killed stage had not committed are repeated, and a repeated
        # dispatch counts against the cap even when the sender's ledger
        # skips it: the cap errs on the safe side.)
        c.wait_quiet(quiet=5.0, timeout=90)
        got = from_warm()
        ids = collections.Counter(m.get("message_id", "") for m in got)
        log("dispatched: %s; at the sink from 127.0.0.3: %d messages, %d distinct" % (
            {n: c.metric(n, series) for n in names}, len(got), len(ids)))
        self.assertLessEqual(len(got), 300)
        self.assertGreaterEqual(len(ids), 200)
    def test_halved_rate_follows_the_site_to_a_scheduler_that_missed_the_reply(self):
        c = Cluster("sched-backoff", partitions=4, domains=1, ips=1,
                    shaping="{ max_message_rate: 20/s, max_connections: 4 }")
        self.addCleanup(c.close)
        topics_ready(c)
        c.start_scheduler("sched-1")
        rate = 'sluice_shape_rate_per_second{site="d0.test",source="127.0.0.1"}'

        def reply_421():
            # The live feedback tail starts at the end once assigned, a
            # moment after /readyz: say it again until it is heard.
            r = subprocess.run([bin_path("sched_tool"), "event", "-c", c.cfg, "--type",
                                "deferred", "--site", "d0.test", "--source-ip", "127.0.0.1",
                                "--code", "421", "--enh", "4.7.28", "--to", "a@d0.test",
                                "--reply", "421-4.7.28 Our system has detected an unusual rate"],
                               capture_output=True, text=True, timeout=60, env=c.env)
            self.assertEqual(r.returncode, 0, r.stderr)
            try:
                return wait_for(lambda: 0 < c.metric("sched-1", rate) < 20 and
                                c.metric("sched-1", rate), 3, "halved on sched-1")
            except AssertionError:
                return None
        halved = wait_for(reply_421, 60, "a 421 heard by sched-1")
        log("sched-1 halved to %g/s" % halved)
        # Two schedulers that start now never see that reply (their live
        # feedback starts at the end); the site moves to one of them when
        # sched-1 is killed, and its state comes along.
        c.start_scheduler("sched-2")
        c.start_scheduler("sched-3")
        c.kill("sched-1")

        def halved_elsewhere():
            for n in ("sched-2", "sched-3"):
                m = c.metrics(n)
                if (rate + " %g" % halved) in m and ('sluice_shape_state{site="d0.test",'
                                             'source="127.0.0.1",state="throttled"} 1') in m:
                    return n
            return None
        owner = wait_for(halved_elsewhere, 60, "the halved rate on the new owner")
        log("%s, which never heard the reply, owns the site with the halved rate" % owner)


def start_three(c):
    """Once the topics are ready: three schedulers and a sender; returns
    the schedulers' names."""
    topics_ready(c)
    names = ["sched-1", "sched-2", "sched-3"]
    for n in names:
        c.start_scheduler(n)
    c.start_sender()
    return names


def wire_times(sink, sources):
    """Arrival times (monotonic seconds, as the sink stamps them) of the
    messages the sink accepted from the given source IPs."""
    return sorted(m["t_us"] / 1e6 for m in sink.messages()
                  if m.get("peer", "").rsplit(":", 1)[0] in sources)


@unittest.skipUnless(REAL, "needs SLUICE_KAFKA=real (a real Kafka cluster)")
class TestRateHoldsWhileSchedulersDie(unittest.TestCase):
    def test_two_ips_at_20_per_second_give_40_per_second_through_kills(self):
        # One site, 20/s per source IP, two source IPs: 40/s at the wire.
        # Every 15 s one of the three schedulers (in turn, so the site's
        # owner is among them) is SIGKILLed and started again at once.
        sources = ("127.0.0.2", "127.0.0.3")
        # Static members: a restarted scheduler takes its partitions back
        # without a rebalance of the others.
        c = Cluster("sched-rate", partitions=4, domains=1, ips=0,
                    kafka_yaml="  static_membership: true\n",
                    pools_yaml="".join("    - { ip: %s, ehlo: mta%d.example.net }\n" % (ip, i + 2)
                                       for i, ip in enumerate(sources)),
                    shaping="{ max_message_rate: 20/s, max_connections: 4 }",
                    retry="{ delays: [1s, 2s, 5s], expiry: 10m }")
        self.addCleanup(c.close)
        names = start_three(c)
        # More than the 60 s measured can take, so the site never runs dry.
        c.publish(c.job_specs(4000, "r"))
        wait_for(lambda: len(wire_times(c.sink, sources)) >= 80, 120, "80 at the sink")
        t0 = time.monotonic()
        kills = []
        for k in range(4):
            due = t0 + 7.5 + 15 * k
            wait_for(lambda: time.monotonic() >= due, 30, "the kill time", interval=0.05)
            name = names[k % 3]
            c.kill(name)
            c.start_scheduler(name, wait_ready=False)
            kills.append(time.monotonic() - t0)
        wait_for(lambda: time.monotonic() >= t0 + 60, 30, "60 s", interval=0.1)
        times = [t - t0 for t in wire_times(c.sink, sources) if t0 <= t < t0 + 60]
        rate = len(times) / 60.0
        # Every 5-second window (sliding by 0.25 s) of the minute.
        worst, worst_at = 0, 0.0
        lo = 0
        for hi in range(len(times)):
            while times[hi] - times[lo] >= 5.0:
                lo += 1
            if hi - lo + 1 > worst:
                worst, worst_at = hi - lo + 1, times[lo]
        per_s = collections.Counter(int(t) for t in times)
        log("kills at %s s; %d messages in 60 s: %.1f/s; busiest 5 s window %d (%.1f/s) "
            "from %.1f s; per second: %s" % (["%.1f" % k for k in kills], len(times), rate,
                                             worst, worst / 5.0, worst_at,
                                             [per_s.get(i, 0) for i in range(60)]))
        self.assertGreaterEqual(rate, 36.0)
        self.assertLessEqual(rate, 44.0)
        self.assertLessEqual(worst, 250, "40/s over 5 s plus 25%")



def event(c, *args):
    """Publish one sender event with sched_tool (as a sender would)."""
    r = subprocess.run([bin_path("sched_tool"), "event", "-c", c.cfg] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=60, env=c.env)
    if r.returncode != 0:
        raise AssertionError("sched_tool event: %s" % r.stderr)


def until_heard(c, names, args, series, what, timeout=60):
    """Publish the event until every named scheduler shows `series` (each
    one's live feedback tail starts at the end once it is assigned, a
    moment after /readyz: say it again until it is heard)."""
    def heard():
        event(c, *args)
        try:
            return wait_for(lambda: all(series in c.metrics(n) for n in names), 3, what)
        except AssertionError:
            return None
    return wait_for(heard, timeout, what)


def arrivals(sink, source, since, until=None):
    """Sink arrival times (monotonic seconds) of messages from source."""
    return [t for t in wire_times(sink, (source,)) if t >= since and (until is None or t < until)]


def wire_windows(sink, start, end, first=False):
    """(rate from 127.0.0.1, rate from 127.0.0.2) of each 4-second window
    from start to end; with first, up to the first window in which
    127.0.0.2, never throttled, ran at full speed (16/s or more)."""
    out = []
    t = start
    while t + 4 <= end:
        wait_for(lambda: time.monotonic() >= t + 4, 30, "4 s at the wire", interval=0.1)
        one = len(arrivals(sink, "127.0.0.1", t, t + 4)) / 4.0
        two = len(arrivals(sink, "127.0.0.2", t, t + 4)) / 4.0
        log("%.1f/s from .1, %.1f/s from .2" % (one, two))
        out.append((one, two))
        if first and two >= 16.0:
            break
        t += 4
    return out


@unittest.skipUnless(REAL, "needs SLUICE_KAFKA=real (a real Kafka cluster)")
class TestBackoffAtTheWire(unittest.TestCase):
    def test_halved_rate_stays_halved_across_a_restart_of_the_owner_then_recovers(self):
        # One site at 20/s per IP from two IPs. A 421 halves 127.0.0.1 only;
        # its owner is SIGKILLed and restarted (a static member: it takes
        # its partition back and restores the site's state from the state
        # topic); the sink sees 10/s from .1 and 20/s from .2, and after
        # recover_after .1 climbs back to 20/s.
        recover_s = 40
        c = Cluster("sched-halve", partitions=4, domains=1, ips=2,
                    kafka_yaml="  static_membership: true\n",
                    shaping="{ max_message_rate: 20/s, max_connections: 4 }",
                    retry="{ delays: [1s, 2s, 5s], expiry: 10m }",
                    extra_yaml="backoff:\n  - { match: '^421 4\\.7\\.28', action: halve, "
                               "floor: 1/s, recover_after: %ds }\n" % recover_s)
        self.addCleanup(c.close)
        topics_ready(c)
        names = ["sched-1", "sched-2", "sched-3"]
        for n in names:
            c.start_scheduler(n)
        c.start_sender()
        # More than the test can send, so the site never runs dry.
        c.publish(c.job_specs(5000, "h"))
        wait_for(lambda: len(arrivals(c.sink, "127.0.0.1", 0)) >= 40, 60, "40 from .1 at the sink")
        sent = 'sluice_shape_dispatched_total{site="d0.test",source="127.0.0.1"}'
        owner = [n for n in names if c.metric(n, sent) > 0]
        self.assertEqual(len(owner), 1, owner)
        owner = owner[0]
        halved = 'sluice_shape_rate_per_second{site="d0.test",source="127.0.0.1"} 10\n'
        until_heard(c, [owner], ["--type", "deferred", "--site", "d0.test",
                                 "--source-ip", "127.0.0.1", "--code", 421, "--enh", "4.7.28",
                                 "--to", "a@d0.test",
                                 "--reply", "421-4.7.28 Our system has detected an unusual rate"],
                    halved, "the 421 heard by the owner")
        halved_at = time.monotonic()

        def written():
            recs = [r for r in c.dump("state") if r.get("site") == "d0.test"]
            return recs and recs[-1].get("pairs", {}).get("127.0.0.1", {}).get("rate") == 10
        # The owner writes the change to the state topic within 100 ms.
        wait_for(written, 30, "the halved rate on the state topic")
        c.kill(owner)
        c.start_scheduler(owner, wait_ready=False)
        c.wait_ready(owner)
        # The restarted owner shapes the site again, with the halved rate.
        wait_for(lambda: c.metric(owner, sent) > 0, 60, "the restarted owner dispatching")
        m = c.metrics(owner)
        self.assertIn(halved, m)
        self.assertIn('sluice_shape_state{site="d0.test",source="127.0.0.1",state="throttled"} 1',
                      m)
        # At the wire, in 4-second windows until recover_after ends: .1
        # never above its halved rate, and 10/s whenever the site runs at
        # full speed (.2 at 20/s: a machine short of CPU can slow both).
        wins = wire_windows(c.sink, time.monotonic(), halved_at + recover_s - 1)
        full = [w for w in wins if w[1] >= 16.0]
        self.assertTrue(full, ("the site never ran at full speed before recover_after ended",
                               wins))
        # The first window may also carry what the killed incarnation had
        # dispatched after its last state record (the sender still sends
        # it): below the unhalved 20/s there, 10/s + 25% in every later one,
        # and 10/s + 10% over them all.
        self.assertLess(wins[0][0], 20.0, wins)
        for one, two in wins[1:]:
            self.assertLessEqual(one, 12.5, wins)
        self.assertLessEqual(sum(w[0] for w in wins) / len(wins), 11.0, wins)
        for one, two in full:
            self.assertGreaterEqual(one, 7.5, wins)
        # Recovery as configured: not before recover_after, then back to 20/s.
        normal = 'sluice_shape_state{site="d0.test",source="127.0.0.1",state="normal"} 1'
        wait_for(lambda: normal in c.metrics(owner), recover_s + 60, "recovered")
        self.assertGreaterEqual(time.monotonic() - halved_at, recover_s - 1)
        self.assertIn('sluice_shape_rate_per_second{site="d0.test",source="127.0.0.1"} 20\n',
                      c.metrics(owner))
        back = wire_windows(c.sink, time.monotonic(), time.monotonic() + 30, first=True)
        self.assertGreaterEqual(back[-1][1], 16.0, ("never at full speed after the recovery",
                                                    back))
        self.assertGreaterEqual(back[-1][0], 16.0, back)
        self.assertLessEqual(back[-1][0], 25.0, back)


@unittest.skipUnless(REAL, "needs SLUICE_KAFKA=real (a real Kafka cluster)")
class TestComplaintWhileTheFleetIsDown(unittest.TestCase):
    def test_complaint_published_while_no_scheduler_runs_suppresses_once_they_start(self):
        c = Cluster("sched-complaint", partitions=4, domains=1, ips=2,
                    shaping="{ max_message_rate: 100/s, max_connections: 4 }")
        self.addCleanup(c.close)
        topics_ready(c)
        names = ["sched-1", "sched-2", "sched-3"]
        for n in names:
            c.start_scheduler(n)
        c.start_sender()

        def job(jid, to):
            return {"job_id": jid, "to": [to], "domain": "d0.test", "tenant": "acme",
                    "raw": "From: F <sender@example.net>\r\nTo: %s\r\nSubject: %s\r\n\r\n"
                           "body\r\n" % (to, jid)}
        # The address receives mail while the fleet runs.
        c.publish([job("before", "early@d0.test")])
        c.wait_final(["before"], 60)
        self.assertEqual(c.sink_counts()["before"], 1)
        # Every scheduler stops (SIGTERM commits the feedback group's place).
        for n in names:
            self.assertEqual(c.term(n), 0)
        event(c, "--type", "complained", "--tenant", "acme", "--to", "early@d0.test",
              "--site", "d0.test", "--id", "early")
        for n in names:
            c.start_scheduler(n)
        wait_for(lambda: [s for s in c.dump("suppressions")
                          if s.get("key") == "acme/early@d0.test"], 60, "the suppression")
        # Every classify has it loaded before the next jobs come.
        wait_for(lambda: all(c.metric(n, "sluice_suppressions") >= 1 for n in names), 30,
                 "the suppression loaded everywhere")
        c.publish([job("after", "early@d0.test"), job("other", "other@d0.test")])
        tail = c.wait_final(["after", "other"], 60)
        self.assertEqual([e["type"] for e in tail.finals["after"]], ["SUPPRESSED"])
        self.assertEqual(tail.finals["other"][0]["type"], "DELIVERED")
        c.wait_quiet(quiet=3.0, timeout=60)
        counts = c.sink_counts()
        self.assertEqual(counts["other"], 1)
        self.assertEqual(counts["after"], 0, "a suppressed job reached the SMTP server")
        self.assertEqual(counts["before"], 1)


@unittest.skipUnless(REAL, "needs SLUICE_KAFKA=real (a real Kafka cluster)")
class TestHeldJobsAtTheWire(unittest.TestCase):
    """Three schedulers, one sender, two source IPs in the default pool and
    a pool "banned" of one IP; the site "slow" sends 1/s."""

    @classmethod
    def setUpClass(cls):
        cls.c = Cluster("sched-held", partitions=4, domains=1, ips=2,
                        pools_yaml="  banned:\n    - { ip: 127.0.0.4, ehlo: mta4.example.net }\n",
                        shaping="{ max_message_rate: 100/s, max_connections: 4 }\n"
                                "  slow: { max_message_rate: 1/s, burst: 1, max_connections: 1 }",
                        retry="{ delays: [1s, 2s, 5s], expiry: 10m }",
                        extra_yaml="sites:\n  slow: { mx: ['*.slow.example'], "
                                   "domains: [slow.test] }\n"
                                   "backoff:\n  - { match: '^550 5\\.7\\.606', action: disable_ip, "
                                   "duration: 24h }\n")
        try:
            topics_ready(cls.c)
            cls.names = ["sched-1", "sched-2", "sched-3"]
            for n in cls.names:
                cls.c.start_scheduler(n)
            cls.c.start_sender()
        except BaseException:
            cls.c.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def test_pool_whose_only_ip_is_disabled_delays_no_other_pool(self):
        c = self.c
        until_heard(c, self.names, ["--type", "bounced", "--site", "d0.test",
                                    "--source-ip", "127.0.0.4", "--code", 550, "--enh", "5.7.606",
                                    "--to", "a@d0.test",
                                    "--reply", "550 5.7.606 Access denied, banned sending IP"],
                    'sluice_shape_state{site="d0.test",source="127.0.0.4",state="disabled"} 1',
                    "127.0.0.4 disabled for d0.test")
        banned = c.job_specs(3, "ban")
        for s in banned:
            s["pool"] = "banned"
        default = c.job_specs(20, "def")
        # The banned pool's jobs first, in the same site's order.
        c.publish(banned + default)
        ids = [s["job_id"] for s in default]
        wait_for(lambda: all(c.sink_counts().get(i) for i in ids), 60,
                 "the default pool's 20 at the sink")
        parked = 'sluice_shape_parked_total{site="d0.test",reason="pool-unusable"}'
        wait_for(lambda: sum(c.metric(n, parked) for n in self.names) >= 3, 30,
                 "the banned pool's jobs parked")
        peers = {m.get("peer", "").rsplit(":", 1)[0] for m in c.sink.messages()
                 if m.get("message_id", "").strip("<>").startswith("def-")}
        self.assertEqual(peers - {"127.0.0.1", "127.0.0.2"}, set(), peers)
        counts = c.sink_counts()
        self.assertEqual([s["job_id"] for s in banned if counts.get(s["job_id"])], [])
        self.assertFalse([m for m in c.sink.messages()
                          if m.get("peer", "").startswith("127.0.0.4:")])

    def test_job_expiring_while_held_is_expired_and_never_reaches_the_server(self):
        c = self.c

        def job(jid, expires=0):
            s = {"job_id": jid, "to": ["a@slow.test"], "domain": "slow.test",
                 "raw": "From: F <sender@example.net>\r\nTo: a@slow.test\r\nSubject: %s\r\n\r\n"
                        "body\r\n" % jid}
            if expires:
                s["expires_at_ms"] = expires
            return s
        # slow: 1/s, burst 1, per source IP: 2/s from the two. "first" and
        # e-0 take the tokens; eight jobs that expire 2.5 s from now queue
        # behind, two a second: e-5 and later cannot go before they expire.
        expires = int(time.time() * 1000) + 2500
        ids = ["e-%d" % i for i in range(8)]
        c.publish([job("first")] + [job(i, expires) for i in ids])
        tail = c.wait_final(["first"] + ids, 60)
        final = {i: tail.finals[i][0] for i in ["first"] + ids}
        expired = {i for i, e in final.items() if e["type"] == "EXPIRED"}
        delivered = {i for i, e in final.items() if e["type"] == "DELIVERED"}
        log("expired %s, delivered %s" % (sorted(expired), sorted(delivered)))
        self.assertIn("first", delivered)
        self.assertTrue({"e-5", "e-6", "e-7"} <= expired, final)
        self.assertEqual(expired | delivered, set(final), final)
        for i in ("e-5", "e-6", "e-7"):
            self.assertIn("expired while held", final[i].get("reason", ""), final[i])
        # Nothing late: the books are quiet, and the SMTP server saw every
        # delivered job and no expired one.
        c.wait_quiet(quiet=3.0, timeout=60)
        counts = c.sink_counts()
        self.assertEqual({i for i in expired if counts.get(i)}, set(),
                         "an expired job reached the SMTP server")
        self.assertEqual({i for i in delivered if not counts.get(i)}, set())


@unittest.skipUnless(REAL, "needs SLUICE_KAFKA=real (a real Kafka cluster)")
class TestCapsAcrossTheCluster(unittest.TestCase):
    """Three schedulers and one sender. The domains d*.test go to the
    cluster's sink; three.test goes by MX to three sinks on 127.0.0.1, .2
    and .3 (one port), its three MX hosts of equal preference in a DNS
    server of the test. The tenant "capped" may send 20/s."""

    CAP = 20

    @classmethod
    def setUpClass(cls):
        cls.dns = None
        cls.sinks = None
        records = {"three.test": {"MX": [(10, h) for h in HOSTS]}}
        for h, a in zip(HOSTS, ADDRS):
            records[h] = {"A": [a]}
        cls.dns = dnstest.DnsServer(records)
        _, dport = cls.dns.start()
        cls.c = Cluster("sched-caps", partitions=4, domains=16, ips=1, route="d*.test",
                        shaping="{ max_message_rate: 1000/s, max_connections: 2, "
                                "max_messages_per_connection: 4 }",
                        extra_yaml="dns:\n  servers: [\"127.0.0.1:%d\"]\n  timeout: 1s\n"
                                   "  tries: 1\n"
                                   "limits:\n  - { tenant: capped, max_message_rate: %d/s }\n"
                                   % (dport, cls.CAP))
        try:
            cls.sinks = Sinks(cls.c.tmp)
            cls.c.env["SLUICE_SENDER_MX_PORT"] = str(cls.sinks.port)
            cls.names = start_three(cls.c)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        if cls.sinks:
            cls.sinks.stop()
        if cls.dns:
            cls.dns.stop()

    def test_site_with_three_equal_mx_hosts_gets_max_connections_from_one_ip(self):
        # Slow replies (150 ms a command) keep the connections busy, so
        # more would be opened if the cap allowed.
        c, n, cap = self.c, 60, 2
        specs = [{"job_id": "mx-%d" % i, "to": ["slow150-u%d@three.test" % i],
                  "domain": "three.test",
                  "raw": "From: F <sender@example.net>\r\nTo: u@three.test\r\n"
                         "Subject: mx-%d\r\n\r\nbody\r\n" % i} for i in range(n)]
        c.publish(specs)
        wait_for(lambda: len(self.sinks.messages()) >= n, 120,
                 "%d messages at the three MX sinks" % n, interval=0.2)
        msgs = self.sinks.messages()
        by_host = {a: sum(1 for m in msgs if m["local"].startswith(a + ":")) for a in ADDRS}
        peak = peak_connections(self.sinks.conn_logs, "127.0.0.1")
        opened = sum(1 for p in self.sinks.conn_logs for x in read_lines(p) if x["ev"] == "open")
        log("messages per MX address %s; %d connections opened; at most %d at once"
            % (by_host, opened, peak))
        # classify shuffled the three hosts: each one took mail.
        for a in ADDRS:
            self.assertGreater(by_host[a], 0, by_host)
        self.assertLessEqual(peak, cap, "connections from 127.0.0.1 at once: %d" % peak)
        self.assertEqual(peak, cap, "the cap is used")

    def test_tenant_cap_holds_for_the_cluster_not_per_scheduler(self):
        # The tenant's mail spreads over 16 sites, so over the sited
        # partitions of all three schedulers; each one used to allow the
        # whole cap over its own sites (3 x 20/s).
        c = self.c
        specs = c.job_specs(900, "cap")
        for s in specs:
            s["tenant"] = "capped"
        c.publish(specs)

        def times():
            return sorted(m["t_us"] / 1e6 for m in c.sink.messages()
                          if m.get("message_id", "").strip("<>").startswith("cap-"))
        # Past the buckets' first burst, then 10 s at the sink.
        wait_for(lambda: len(times()) >= 3 * self.CAP, 60, "the burst at the sink")
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() >= t0 + 10, 30, "10 s", interval=0.1)
        got = [t for t in times() if t0 <= t < t0 + 10]
        rate = len(got) / 10.0
        owners = {n: c.metric(n, "sluice_shape_dispatched_total") for n in self.names}
        log("tenant capped at %d/s: %.1f/s at the sink; dispatched per scheduler %s"
            % (self.CAP, rate, owners))
        # Every scheduler shaped some of it: the cap was the cluster's.
        self.assertEqual([n for n, v in owners.items() if v == 0], [], owners)
        self.assertLessEqual(rate, self.CAP * 1.15)
        # Each scheduler allows its share of the sited partitions' cap:
        # with the sites spread over them, close to the cap in all.
        self.assertGreaterEqual(rate, self.CAP * 0.5)


if __name__ == "__main__":
    unittest.main()
