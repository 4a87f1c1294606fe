"""Dead, silent and slow receivers: the sender defers cheaply, never starves
other sites and never floods its log.

Each test runs the real pipeline (dev broker, sluice-scheduler with its
retry stage, sluice-sender) with `sluice send` as the producer and
`sluice events` as the reader. Domains under down.test are routed to a
loopback port that plays the fault; everything else goes to a
sluice-testsink. The faults:

  refuse     nothing listens on the port: connect is refused at once.
  blackhole  a listener with backlog 0 whose one accept slot the test
             fills and never accepts: Linux drops further SYNs, so the
             sender's connect times out, exactly like a firewalled host.
             (A TEST-NET address would do it too, but traffic must stay on
             loopback, and this is deterministic there.)
  tarpit     accepts and never says a word (the greeting times out).
  slowdata   greets and accepts the envelope but never answers DATA.
  greylist   sluice-testsink --greylist: 450 4.7.1 to the first attempt.

Each asserts DEFERRED events with the reason within seconds, the sender's
CPU time during the outage (from /proc/PID/stat) and its log bytes under a
bound, and, once a sink listens on the port again, every job delivered
exactly once; after the greylisting run, the sender forgets its idle
destinations (sender.idle_state_timeout) and the metric series of the
pairs it forgot, reply codes included. Another keeps a tarpit busy with
several times sender.max_inflight jobs while 200 jobs for another site go
through. A last one watches the scheduler: a site whose only MX refuses is
suspended in shape (sluice shaping show) until the probe is due, nothing is
dispatched to it meanwhile, and its jobs are delivered once it listens.
SMTP timeouts are cut to a second and the destination backoff to 500 ms
(at most 2 s), so every phase takes seconds.
"""

import json
import os
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

from sluicetest import (Proc, accept_in_thread, free_port, pipeline_yaml, run_sluice,
                        start_devbroker, start_sink, wait_for)

TIMEOUTS = ("{ connect: 1s, greeting: 1s, ehlo: 1s, mail: 1s, rcpt: 1s, data: 1s, "
            "data_block: 2s, dot: 2s, quit: 1s, idle: 1s }")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); after the ")" the
    # first field is the third.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Fault:
    """A loopback port that misbehaves in one way; close() frees the port."""

    def __init__(self, mode, port):
        self.mode, self.port = mode, port
        self.socks = []
        self.lsock = None
        if mode == "refuse":
            return
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        if mode == "blackhole":
            self.lsock.listen(0)
            filler = socket.create_connection(("127.0.0.1", port), timeout=2)
            self.socks.append(filler)
            return
        self.lsock.listen(64)
        accept_in_thread(self.lsock, self._accept)

    def _accept(self, c):
        self.socks.append(c)
        if self.mode == "slowdata":
            threading.Thread(target=self._slowdata, args=(c,), daemon=True).start()
            # tarpit: hold the connection and never speak

    def _slowdata(self, c):
        try:
            c.sendall(b"220 slow.test ESMTP\r\n")
            f = c.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line.split(b" ")[0].strip().upper()
                if verb in (b"EHLO", b"HELO"):
                    c.sendall(b"250-slow.test\r\n250 PIPELINING\r\n")
                elif verb in (b"MAIL", b"RCPT", b"RSET"):
                    c.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == b"DATA":
                    pass  # never answered: the sender's data timeout fires
                elif verb == b"QUIT":
                    c.sendall(b"221 2.0.0 Bye\r\n")
                    return
        except OSError:
            pass

    def close(self):
        if self.lsock:
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave the port listening until accept() returned.
            try:
                self.lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


class Pipeline:
    """Dev broker, scheduler and sender on one config."""

    def __init__(self, tmp, down_port, sink, sender_extra="", timeouts=TIMEOUTS,
                 backoff=("500ms", "2s")):
        self.tmp = tmp
        self.backoff = backoff
        self.procs = []
        self.broker, self.bootstrap = start_devbroker(tmp, ["--brokers", "1"])
        self.cfg = os.path.join(tmp, "sluice.yaml")
        self.sender_cfg = os.path.join(tmp, "sender.yaml")
        self.metrics_port = free_port()
        self.sched_metrics_port = free_port()
        self._write(self.cfg, down_port, sink, sender_extra, timeouts,
                    "metrics: { listen: \"127.0.0.1:%d\" }\n" % self.sched_metrics_port)
        self._write(self.sender_cfg, down_port, sink, sender_extra, timeouts,
                    "metrics: { listen: \"127.0.0.1:%d\" }\n" % self.metrics_port)
        self.env = dict(os.environ, SLUICE_LOG_FORMAT="json")
        self.env.pop("SLUICE_KAFKA_BOOTSTRAP", None)
        self.env.pop("SLUICE_LOG_LEVEL", None)
        self.sched = Proc("sluice-scheduler", ["-c", self.cfg], tmpdir=tmp, env=self.env)
        self.sender = Proc("sluice-sender", ["-c", self.sender_cfg], tmpdir=tmp, env=self.env)

    def _write(self, path, down_port, sink, sender_extra, timeouts, more):
        with open(path, "w") as f:
            f.write(pipeline_yaml(self.bootstrap, sink.address,
                                  routes="  \"*.down.test\": 127.0.0.1:%d\n" % down_port,
                                  retry="[1s, 2s]") +
                    "shaping:\n"
                    "  default: { max_message_rate: 0, max_connections: 4, "
                    "max_messages_per_connection: 100, timeouts: %s }\n"
                    "sender:\n"
                    "  workers: 1\n"
                    "  max_inflight: 20\n"
                    "  drain_timeout: 3s\n"
                    "  destination_backoff_initial: %s\n"
                    "  destination_backoff_max: %s\n"
                    "%s%s"
                    % (timeouts, self.backoff[0], self.backoff[1], sender_extra, more))

    def metric(self, name, port=None):
        """The sum of a metric's samples on the sender's /metrics (or the
        process's on port); name may include the start of the labels."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics"
                                        % (port or self.metrics_port), timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                   if l.startswith(name + "{") or l.startswith(name + " ")
                   or ("{" in name and l.startswith(name)))

    def sched_metric(self, name):
        return self.metric(name, self.sched_metrics_port)

    def shaping(self):
        """`sluice shaping show --json`: a list, one dict per (site, source IP)."""
        return json.loads(self.sluice("shaping", "-c", self.cfg, "show", "--json"))

    def sluice(self, *args, timeout=60):
        r = run_sluice(*args, env=self.env, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError("sluice %s: %s%s" % (args[0], r.stdout, r.stderr))
        return r.stdout

    def send(self, rcpts):
        body = os.path.join(self.tmp, "body.txt")
        with open(body, "w") as f:
            f.write("hello\n")
        # Every recipient in a domain of its own: one job each.
        out = self.sluice("send", "-c", self.cfg, "--from", "ops@example.net",
                          "--to", ",".join(rcpts), "--subject", "destinations",
                          "--body-file", body)
        # "JOB_ID accepted DOMAIN RCPT" per job
        return [l.split()[0] for l in out.splitlines() if " accepted " in l]

    def events(self, types):
        out = self.sluice("events", "-c", self.cfg, "--json", "--type", types)
        return [json.loads(l) for l in out.splitlines() if l.strip()]

    def stop(self):
        rcs = {}
        for p in (self.sender, self.sched):
            rcs[p.name] = p.stop(20)
        self.broker.stop()
        return rcs


class DestCase(unittest.TestCase):
    sender_extra = ""
    timeouts = TIMEOUTS
    backoff = ("500ms", "2s")

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-dest-")
        self.tmp = self._tmp.name
        self.sink = start_sink(os.path.join(self.tmp, "sink"))
        self.addCleanup(self.sink.stop)
        self.down_port = free_port()
        self.fault = None
        self.back = None
        self.p = Pipeline(self.tmp, self.down_port, self.sink, self.sender_extra, self.timeouts,
                          self.backoff)

    def tearDown(self):
        rcs = self.p.stop()
        err = self.p.sender.stderr()
        if self.fault:
            self.fault.close()
        if self.back:
            self.back.stop()
        self._tmp.cleanup()
        self.assertEqual(rcs["sluice-sender"], 0, err[-3000:])
        self.assertNotIn("runtime error:", err)
        self.assertNotIn("Sanitizer", err)

    def outage(self, mode, reason, n=10, sink_args=()):
        """n jobs to a destination that fails in `mode`: deferred with
        `reason` promptly, cheaply and quietly; delivered once it is back."""
        if mode == "greylist":
            self.back = start_sink(os.path.join(self.tmp, "back"),
                                   ["--listen", "127.0.0.1:%d" % self.down_port, "--greylist"])
        else:
            self.fault = Fault(mode, self.down_port)
        rcpts = ["u%d@d%d.down.test" % (i, i) for i in range(n)]
        jobs = self.p.send(rcpts)
        self.assertEqual(len(jobs), n)

        def deferred():
            ev = [e for e in self.p.events("DEFERRED") if e["recipient"] in rcpts]
            return ev if len({e["recipient"] for e in ev}) == n else None
        ev = wait_for(deferred, 30, "a DEFERRED event for each of %d jobs\n%s"
                      % (n, self.p.sender.stderr()[-3000:]), interval=0.3)
        for e in ev:
            self.assertIn(reason, e.get("reply", ""), e)
            self.assertTrue(e.get("retry_topic"), e)
        cpu_g, t_g = cpu_seconds(self.p.sender.pid), time.monotonic()

        if mode != "greylist":
            # The outage goes on: the sender retries on the retry schedule and
            # probes the destination, but neither spins nor writes per attempt.
            cpu0, log0, t0 = cpu_seconds(self.p.sender.pid), len(self.p.sender.stderr()), \
                time.monotonic()
            def retried():
                ev = [e for e in self.p.events("DEFERRED") if e["recipient"] in rcpts]
                return len(ev) >= 2 * n or None
            wait_for(retried, 30, "the retries deferred again", interval=0.5)
            time.sleep(2)  # a measuring window, not a synchronisation
            spent = cpu_seconds(self.p.sender.pid) - cpu0
            elapsed = time.monotonic() - t0
            sys.stderr.write("%s: sender CPU %.2f s in %.1f s of outage, log +%d bytes\n"
                             % (mode, spent, elapsed, len(self.p.sender.stderr()) - log0))
            self.assertLess(spent, 0.35 * elapsed + 0.5,
                            "sender used %.2f s of CPU in %.1f s of outage" % (spent, elapsed))
            self.assertLess(len(self.p.sender.stderr()) - log0, 20000,
                            self.p.sender.stderr()[-3000:])
            if mode != "slowdata":  # a host slow at DATA is up: it greeted
                downs = [e for e in self.p.events("DEFERRED") if e["recipient"] in rcpts and
                         e.get("destination_down_until_ms")]
                self.assertTrue(downs, "no DEFERRED event says when the probe is due")
            self.fault.close()
            self.fault = None
            self.back = start_sink(os.path.join(self.tmp, "back"),
                                   ["--listen", "127.0.0.1:%d" % self.down_port] + list(sink_args))

        def delivered():
            ev = [e for e in self.p.events("DELIVERED") if e["recipient"] in rcpts]
            return ev if len({e["recipient"] for e in ev}) == n else None
        ev = wait_for(delivered, 40, "every job delivered once the destination is back\n%s"
                      % self.p.sender.stderr()[-3000:], interval=0.5)
        self.assertEqual(sorted(e["recipient"] for e in ev), sorted(rcpts), "one DELIVERED each")
        got = sorted(r for m in self.back.messages() for r in m["rcpt"])
        self.assertEqual(got, sorted(rcpts), "each message received exactly once")
        if mode == "greylist":
            # Waiting out the retry delay costs nothing either.
            spent, elapsed = cpu_seconds(self.p.sender.pid) - cpu_g, time.monotonic() - t_g
            sys.stderr.write("greylist: sender CPU %.2f s in %.1f s until delivered\n"
                             % (spent, elapsed))
            self.assertLess(spent, 0.35 * elapsed + 0.5,
                            "sender used %.2f s of CPU in %.1f s of greylisting"
                            % (spent, elapsed))
        # The log names the condition, never each message.
        log = self.p.sender.stderr()
        self.assertLess(len(log), 40000, log[-3000:])
        return log


class TestOutages(DestCase):
    # The cap (TestNoHeadOfLineBlocking) would defer some of the first burst
    # as busy; here every deferral must carry the destination's own reason.
    sender_extra = "  max_inflight_per_destination: 20\n  idle_state_timeout: 3s\n"

    def test_refused(self):
        log = self.outage("refuse", "connection refused")
        self.assertGreaterEqual(self.p.metric("sluice_sender_destination_state_changes_total"), 2)
        self.assertEqual(log.count("connection refused\""), 1, log[-3000:])

    def test_blackhole(self):
        self.outage("blackhole", "timeout")

    def test_tarpit(self):
        self.outage("tarpit", "timeout in state greeting")

    def test_slow_data(self):
        self.outage("slowdata", "timeout")

    def test_greylisting(self):
        self.outage("greylist", "greylisted")
        # Quiet for sender.idle_state_timeout: the destinations it knew
        # (the greylisting host, the sink) are forgotten.
        wait_for(lambda: (self.p.metric("sluice_sender_destinations_known") or 0) >= 1, 2,
                 "the destinations just used to be known")
        self.assertGreaterEqual(self.p.metric("sluice_sender_replies_total"), 2 * 10)
        wait_for(lambda: self.p.metric("sluice_sender_destinations_known") == 0, 30,
                 "idle destination state freed")
        # And the per-(site, source IP) series of the pairs it forgot: a
        # sender that met many sites keeps series only for those in use.
        # (outage() saw every job DELIVERED, so these series existed; the
        # reply codes too: 450 from the greylisting host, then 250.)
        wait_for(lambda: self.p.metric("sluice_sender_delivered_total") == 0 and
                 self.p.metric("sluice_sender_attempts_total") == 0 and
                 self.p.metric("sluice_sender_replies_total") == 0, 30,
                 "the forgotten pairs' series dropped, reply codes included")


class TestNoHeadOfLineBlocking(DestCase):
    # The tarpit's connections never time out during the test (a 2 minute
    # greeting timeout): without the per-destination cap its dispatches
    # would hold the sender's whole window and nothing else would move.
    sender_extra = "  max_inflight_per_destination: 5\n"
    timeouts = TIMEOUTS.replace("greeting: 1s", "greeting: 2m")

    def test_tarpit_does_not_starve_other_sites(self):
        self.fault = Fault("tarpit", self.down_port)
        stuck = ["t%d@s%d.down.test" % (i, i) for i in range(100)]   # 5x max_inflight
        self.p.send(stuck)
        others = ["o%d@o%d.ok.test" % (i, i) for i in range(200)]
        self.p.send(others)
        wait_for(lambda: len(self.sink.messages()) >= 200 or None, 60,
                 "the other site's 200 jobs delivered while the tarpit holds its backlog\n%s"
                 % self.p.sender.stderr()[-3000:], interval=0.3)
        got = sorted(r for m in self.sink.messages() for r in m["rcpt"])
        self.assertEqual(got, sorted(others))
        busy = [e for e in self.p.events("DEFERRED") if "busy" in e.get("reply", "")]
        self.assertTrue(busy, "dispatches beyond the cap were deferred as busy")


class TestEveryMxDownSuspendsTheSite(DestCase):
    """The real scheduler and sender, end to end: the sender's DEFERRED
    events say every MX of the site is down (destination_down_until_ms), so
    shape suspends that (site, source IP) until the probe is due and the
    site's jobs wait in the scheduler, not in the sender. A longer backoff
    (4 to 8 s the first time) leaves a suspension long enough to watch."""
    backoff = ("8s", "16s")
    sender_extra = "  max_inflight_per_destination: 20\n"

    def test_site_suspended_while_down_then_delivered_once(self):
        site = "only.down.test"
        n = 6
        rcpts = ["u%d@%s" % (i, site) for i in range(n)]
        for r in rcpts:          # one job each, all of one site
            self.assertEqual(len(self.p.send([r])), 1)

        def deferred():
            ev = [e for e in self.p.events("DEFERRED") if e["recipient"] in rcpts]
            return ev if len({e["recipient"] for e in ev}) == n else None
        ev = wait_for(deferred, 30, "a DEFERRED event for each job\n%s"
                      % self.p.sender.stderr()[-3000:], interval=0.3)
        for e in ev:
            self.assertIn("connection refused", e.get("reply", ""), e)
            self.assertTrue(e.get("retry_topic"), e)
            self.assertEqual(e.get("site"), site, e)
        self.assertTrue(any(e.get("destination_down_until_ms") for e in ev), ev)

        # Shape suspends the pair until the probe is due.
        def suspended():
            rows = [r for r in self.p.shaping()
                    if r["site"] == site and r["source"] == "127.0.0.1"]
            return rows[0] if rows and rows[0]["state"] == "suspended" else None
        row = wait_for(suspended, 20, "shape suspending (%s, 127.0.0.1)" % site, interval=0.2)
        self.assertEqual(row["cause"], "destination-down", row)
        until, t_obs = row["until_ms"] / 1000.0, time.time()
        self.assertGreater(until, t_obs, row)

        # While it lasts, shape dispatches nothing for the pair, so nothing
        # new reaches the sender and no connection is opened; only what was
        # already on its way when the scheduler heard may still arrive, at
        # most one dispatch per job, each deferred without a connection.
        pair = '{site="%s",source="127.0.0.1"' % site
        d0 = self.p.sched_metric("sluice_shape_dispatched_total" + pair)
        a0 = self.p.metric("sluice_sender_attempts_total" + pair)
        c0 = self.p.metric("sluice_sender_connections_total")
        end = until - 0.3
        # The jobs come back from the 1 s retry topic meanwhile (the
        # suspension lasts at least 4 s from the deferral) and wait: in
        # shape, or parked again on a retry topic that fits the suspension.
        def held_now():
            return (self.p.sched_metric("sluice_shape_buffered") or 0) + \
                (self.p.sched_metric('sluice_shape_parked_total{site="%s"' % site) or 0)
        wait_for(lambda: held_now() >= 1 or time.time() >= end, max(end - time.time(), 0) + 5,
                 "the retried jobs", interval=0.1)
        held = held_now()
        wait_for(lambda: time.time() >= end, max(end - time.time(), 0) + 5,
                 "the end of the suspension", interval=0.05)
        d1 = self.p.sched_metric("sluice_shape_dispatched_total" + pair)
        a1 = self.p.metric("sluice_sender_attempts_total" + pair)
        c1 = self.p.metric("sluice_sender_connections_total")
        sys.stderr.write("watched %.1f s of suspension: held %d, dispatched %d, sender "
                         "attempts %d, connections %d\n"
                         % (end - t_obs, held, d1 - d0, a1 - a0, c1 - c0))
        self.assertGreaterEqual(held, 1, "no job of the site came back to shape to wait")
        self.assertEqual(d1, d0, "shape dispatched to a suspended pair")
        self.assertLessEqual(a1 - a0, n)
        self.assertEqual(c1, c0, "a connection to a destination that is down")

        # A listener appears: the probe at the end of the suspension (or the
        # next one) succeeds and every job is delivered, once.
        self.back = start_sink(os.path.join(self.tmp, "back"),
                               ["--listen", "127.0.0.1:%d" % self.down_port])

        def delivered():
            ev = [e for e in self.p.events("DELIVERED") if e["recipient"] in rcpts]
            return ev if len({e["recipient"] for e in ev}) == n else None
        ev = wait_for(delivered, 60, "every job delivered once the destination is back\n%s"
                      % self.p.sender.stderr()[-3000:], interval=0.5)
        self.assertEqual(sorted(e["recipient"] for e in ev), sorted(rcpts), "one DELIVERED each")
        got = sorted(r for m in self.back.messages() for r in m["rcpt"])
        self.assertEqual(got, sorted(rcpts), "each message received exactly once")
        self.assertGreaterEqual(self.p.metric('sluice_sender_destination_state_changes_total'
                                              '{to="up"'), 1)
        wait_for(lambda: [r for r in self.p.shaping() if r["site"] == site and
                          r["source"] == "127.0.0.1" and r["state"] == "normal"], 20,
                 "the pair back to normal")


if __name__ == "__main__":
    unittest.main()
