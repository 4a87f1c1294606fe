"""sluice-sender under faults: shortened timeouts, a server that never
answers the final dot or drops the connection after it, slow greetings and
RCPTs, SIZE, failing STARTTLS, expiry, worker affinity and every address of
an MX host.

One devbroker, one loopback DNS server, several sluice-testsinks, a few
scripted SMTP peers (for what the sink cannot do: a slow greeting, a
STARTTLS that fails) and one sender (two workers) serve every test. The
sender's SMTP timeouts are cut to about a second by config
(shaping.default.timeouts), so every fault path takes seconds. Each test
uses its own domains and job ids.
"""

import json
import os
import socket
import tempfile
import threading
import time
import unittest

import dnstest
from sluicetest import accept_in_thread, start_sink, wait_for
from test_sender import SenderEnv, dispatch, by_rcpt


class ScriptedSmtp:
    """A tiny SMTP server for the faults sluice-testsink cannot play.

    mode "slow-greeting": the 220 comes `delay` seconds late.
    mode "starttls-454":  STARTTLS is offered and refused with 454.
    mode "starttls-junk": STARTTLS is offered, answered 220, and then
                          the server sends bytes that are not TLS.
    Otherwise it accepts every message in plain text; .messages lists the
    envelopes received, .starttls counts STARTTLS commands.
    """

    def __init__(self, mode, host="127.0.0.1", port=0, delay=3.0):
        self.mode, self.delay = mode, delay
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.messages, self.starttls, self.connections = [], 0, 0
        self.closed = False
        accept_in_thread(self.sock, self._accept)

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def _accept(self, c):
        self.connections += 1
        threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(20)
        f = c.makefile("rb")

        def say(line):
            c.sendall(line.encode() + b"\r\n")

        try:
            if self.mode == "slow-greeting":
                time.sleep(self.delay)
            say("220 scripted.test ESMTP")
            env = {"from": None, "rcpt": []}
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode("latin-1").strip()
                verb = cmd.split(" ")[0].upper()
                if verb in ("EHLO", "HELO"):
                    if self.mode.startswith("starttls"):
                        say("250-scripted.test\r\n250-PIPELINING\r\n250 STARTTLS")
                    else:
                        say("250-scripted.test\r\n250 PIPELINING")
                elif verb == "STARTTLS":
                    self.starttls += 1
                    if self.mode == "starttls-454":
                        say("454 4.7.0 TLS not available due to temporary reason")
                    else:
                        say("220 2.0.0 Ready to start TLS")
                        # Late enough not to arrive with the 220 (which the
                        # client discards); then wait for the client to go.
                        time.sleep(0.3)
                        c.sendall(b"this is not a TLS server hello\r\n" * 4)
                        while c.recv(4096):
                            pass
                        return
                elif verb == "MAIL":
                    env = {"from": cmd, "rcpt": []}
                    say("250 2.1.0 Ok")
                elif verb == "RCPT":
                    env["rcpt"].append(cmd[cmd.index("<") + 1:cmd.rindex(">")])
                    say("250 2.1.5 Ok")
                elif verb == "DATA":
                    say("354 End data with <CR><LF>.<CR><LF>")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    self.messages.append(env)
                    say("250 2.0.0 Ok: queued")
                elif verb == "RSET":
                    say("250 2.0.0 Ok")
                elif verb == "QUIT":
                    say("221 2.0.0 Bye")
                    return
                else:
                    say("502 5.5.2 Error: command not recognized")
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.sock.close()


def fnv1a(key):
    """The sender's worker hash (sender/main.c hash_key)."""
    h = 2166136261
    for b in key.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


TIMEOUTS = ("{ connect: 1s, greeting: 1s, ehlo: 1s, mail: 1s, rcpt: 1s, data: 1s, "
            "data_block: 2s, dot: 1500ms, quit: 1s }")


class TestSenderFaults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpd = tempfile.TemporaryDirectory(prefix="sluice-sender-faults-")
        tmp = cls.tmpd.name
        cls.sink = start_sink(os.path.join(tmp, "a"))
        port = cls.sink.port
        # MX deliveries all go to one port (SLUICE_SENDER_MX_PORT), so the
        # MX peers below share the sink's port on other loopback addresses.
        try:
            cls.sink6 = start_sink(os.path.join(tmp, "v6"), ["--listen", "[::1]:%d" % port])
        except AssertionError:
            cls.sink6 = None  # no IPv6 loopback here: the AAAA case is skipped
        cls.big_sink = start_sink(os.path.join(tmp, "size"), ["--max-size", "2000"])
        cls.slow_route = ScriptedSmtp("slow-greeting")
        cls.slow_mx = ScriptedSmtp("slow-greeting", host="127.0.0.3", port=port)
        cls.tls454 = ScriptedSmtp("starttls-454")
        cls.tlsjunk = ScriptedSmtp("starttls-junk")
        cls.dns = dnstest.DnsServer({
            "slowmx.test": {"MX": [(10, "slow.mx.test"), (20, "live.mx.test")]},
            "slow.mx.test": {"A": ["127.0.0.3"]},
            "live.mx.test": {"A": ["127.0.0.1"]},
            # 127.0.0.2 and 127.0.0.5 have no listener: refused at once.
            "multia.test": {"MX": [(10, "multi.mx.test"), (20, "dead.mx.test")]},
            "multi.mx.test": {"A": ["127.0.0.2", "127.0.0.1"]},
            "dead.mx.test": {"A": ["127.0.0.5"]},
            "dual.test": {"MX": [(10, "dual.mx.test"), (20, "dead.mx.test")]},
            "dual.mx.test": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        })
        _, dport = cls.dns.start()
        extra = ("dns:\n  servers: [\"127.0.0.1:%d\"]\n  timeout: 1s\n  tries: 1\n"
                 "shaping:\n  default: { max_message_rate: 0, timeouts: %s }\n"
                 % (dport, TIMEOUTS))
        cls.e = SenderEnv(tmp, extra_yaml=extra, workers=2)
        # Debug level: test_one_key_one_worker reads the per-message outcome
        # lines, which are debug lines (the events carry the detail).
        cls.e.start_sender(env={"SLUICE_SENDER_MX_PORT": str(port), "SLUICE_LOG_LEVEL": "debug"})

    @classmethod
    def tearDownClass(cls):
        # SIGTERM drains and exits 0 even after all these faults (and, in
        # a sanitizer build, without a report).
        rc = cls.e.sender.stop(timeout=20)
        err = cls.e.sender.stderr()
        cls.e.stop()
        for s in (cls.sink, cls.sink6, cls.big_sink):
            if s:
                s.stop()
        for s in (cls.slow_route, cls.slow_mx, cls.tls454, cls.tlsjunk):
            s.close()
        cls.dns.stop()
        cls.tmpd.cleanup()
        if rc != 0 or "runtime error:" in err or "Sanitizer" in err:
            raise AssertionError("sluice-sender exited %s\n%s" % (rc, err[-4000:]))

    def retry_records(self, job_ids, n, timeout=20):
        def got():
            rs = [r for r in self.e.dump("retry.1m", 0, 1500) if r.get("job_id") in job_ids]
            return rs if len(rs) >= n else None
        return wait_for(got, timeout, "%d retry records of %s" % (n, job_ids), interval=0.3)

    def test_final_dot_never_answered_defers_as_possible_duplicate(self):
        t0 = time.monotonic()
        self.e.publish([dispatch("na-1", ["noanswer1@na.test"], self.sink.address, site="na")])
        ev = self.e.wait_events({"na-1"}, 1)[0]
        self.assertEqual(ev["type"], "DEFERRED", self.e.sender.output())
        self.assertTrue(ev.get("possible_duplicate"), ev)
        self.assertIn("timeout", ev["reply"])
        # The configured 1.5 s dot timeout, not RFC 5321's ten minutes.
        self.assertLess(time.monotonic() - t0, 15)
        r = self.retry_records({"na-1"}, 1)[0]
        self.assertEqual(r["recipients"], ["noanswer1@na.test"])
        self.assertEqual(r["attempt"], 1)

    def test_disconnect_after_data_defers_every_recipient(self):
        self.e.publish([dispatch("dc-1", ["good@dc.test", "disconnect1@dc.test"],
                                 self.sink.address, site="dc")])
        ev = by_rcpt(self.e.wait_events({"dc-1"}, 2))
        for r in ("good@dc.test", "disconnect1@dc.test"):
            self.assertEqual(ev[r]["type"], "DEFERRED", self.e.sender.output())
            # The dot went out: the server may have kept it.
            self.assertTrue(ev[r].get("possible_duplicate"), ev[r])
        rec = self.retry_records({"dc-1"}, 1)[0]
        self.assertEqual(sorted(rec["recipients"]), ["disconnect1@dc.test", "good@dc.test"])

    def test_slow_rcpt_beyond_timeout_defers(self):
        self.e.publish([dispatch("sr-1", ["slow4000@sr.test", "other@sr.test"],
                                 self.sink.address, site="sr")])
        ev = by_rcpt(self.e.wait_events({"sr-1"}, 2))
        for r in ("slow4000@sr.test", "other@sr.test"):
            self.assertEqual(ev[r]["type"], "DEFERRED", self.e.sender.output())
            self.assertFalse(ev[r].get("possible_duplicate"), ev[r])
        self.assertIn("timeout", ev["other@sr.test"]["reply"])
        self.retry_records({"sr-1"}, 1)

    def test_slow_greeting_defers_or_tries_next_mx(self):
        self.e.publish([
            dispatch("sg-1", ["u1@sg.test"], self.slow_route.address, site="sg"),
            dispatch("sg-2", ["u2@slowmx.test"], "", domain="slowmx.test", site="sgmx"),
        ])
        ev = by_rcpt(self.e.wait_events({"sg-1", "sg-2"}, 2))
        out = self.e.sender.output()
        # The only host greets too late: deferred.
        self.assertEqual(ev["u1@sg.test"]["type"], "DEFERRED", out)
        self.assertIn("timeout", ev["u1@sg.test"]["reply"])
        self.assertEqual(self.slow_route.messages, [])
        # A slow first MX: the next MX by preference takes it.
        self.assertEqual(ev["u2@slowmx.test"]["type"], "DELIVERED", out)
        self.assertEqual(ev["u2@slowmx.test"]["mx_host"], "live.mx.test")
        self.assertGreaterEqual(self.slow_mx.connections, 1)

    def test_message_above_size_limit_bounces_unsent(self):
        big = ("From: <sender@example.net>\r\nTo: <b1@size.test>\r\nSubject: big\r\n\r\n"
               + ("x" * 70 + "\r\n") * 80)
        small = "From: <sender@example.net>\r\nTo: <b2@size.test>\r\nSubject: s\r\n\r\nhi\r\n"
        self.e.publish([
            dispatch("sz-1", ["b1@size.test"], self.big_sink.address, site="size", raw=big),
            dispatch("sz-2", ["b2@size.test"], self.big_sink.address, site="size", raw=small),
        ])
        ev = by_rcpt(self.e.wait_events({"sz-1", "sz-2"}, 2))
        b = ev["b1@size.test"]
        self.assertEqual(b["type"], "BOUNCED", self.e.sender.output())
        self.assertEqual(b["smtp_code"], 552)
        self.assertEqual(b["enhanced_code"], "5.3.4")
        self.assertEqual(ev["b2@size.test"]["type"], "DELIVERED")
        self.assertEqual([m["rcpt"] for m in self.big_sink.messages()], [["b2@size.test"]])

    def test_failed_starttls_plain_when_opportunistic_deferred_when_required(self):
        jobs = []
        for srv, tag in ((self.tls454, "t454"), (self.tlsjunk, "tjunk")):
            jobs.append(dispatch(tag + "-o", ["o@%s.test" % tag], srv.address,
                                 site=tag + "o", tls="opportunistic"))
            jobs.append(dispatch(tag + "-r", ["r@%s.test" % tag], srv.address,
                                 site=tag + "r", tls="required"))
        self.e.publish(jobs)
        ids = {"t454-o", "t454-r", "tjunk-o", "tjunk-r"}
        ev = by_rcpt(self.e.wait_events(ids, 4))
        out = self.e.sender.output()
        for srv, tag in ((self.tls454, "t454"), (self.tlsjunk, "tjunk")):
            o, r = ev["o@%s.test" % tag], ev["r@%s.test" % tag]
            self.assertEqual(o["type"], "DELIVERED", out)
            self.assertEqual(o.get("tls_protocol", ""), "")
            self.assertEqual(r["type"], "DEFERRED", out)
            got = [m["rcpt"] for m in srv.messages]
            self.assertIn(["o@%s.test" % tag], got)
            self.assertNotIn(["r@%s.test" % tag], got)
            self.assertGreaterEqual(srv.starttls, 2)

    def test_expired_instead_of_retry(self):
        now = int(time.time() * 1000)
        self.e.publish([
            # Next attempt (1 min) past the job's own expiry.
            dispatch("ex-1", ["tempfail1@ex.test"], self.sink.address, site="ex",
                     expires_at_ms=now + 20000),
            # No expires_at: created + retry.expiry (72h) is 20 s away.
            dispatch("ex-2", ["tempfail2@ex.test"], self.sink.address, site="ex",
                     created_at_ms=now - 72 * 3600 * 1000 + 20000),
            # Control: far from expiry, retried.
            dispatch("ex-3", ["tempfail3@ex.test"], self.sink.address, site="ex",
                     created_at_ms=now),
        ])
        ev = by_rcpt(self.e.wait_events({"ex-1", "ex-2", "ex-3"}, 3))
        self.assertEqual(ev["tempfail1@ex.test"]["type"], "EXPIRED", self.e.sender.output())
        self.assertEqual(ev["tempfail2@ex.test"]["type"], "EXPIRED")
        self.assertEqual(ev["tempfail1@ex.test"]["smtp_code"], 451)
        self.assertEqual(ev["tempfail3@ex.test"]["type"], "DEFERRED")
        self.retry_records({"ex-3"}, 1)
        rs = [r["job_id"] for r in self.e.dump("retry.1m", 0, 2000)]
        self.assertNotIn("ex-1", rs)
        self.assertNotIn("ex-2", rs)

    def test_one_key_one_worker(self):
        # Sites whose key (source IP + "/" + site) hashes to each worker.
        sites = {0: [], 1: []}
        i = 0
        while len(sites[0]) < 2 or len(sites[1]) < 2:
            s = "aff%d" % i
            w = fnv1a("127.0.0.1/" + s) % 2
            if len(sites[w]) < 2:
                sites[w].append(s)
            i += 1
        jobs, want = [], {}
        for w, ss in sites.items():
            for s in ss:
                for k in range(4):
                    jid = "af-%s-%d" % (s, k)
                    jobs.append(dispatch(jid, ["a%d@%s.test" % (k, s)], self.sink.address,
                                         site=s))
                    want[jid] = w
        self.e.publish(jobs)
        self.e.wait_events(set(want), len(want))

        def logged():
            seen = {}
            for line in self.e.sender.stderr().splitlines():
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                msg = o.get("msg", "")
                if o.get("job_id") in want and msg.startswith("DELIVERED ") and " worker=" in msg:
                    seen[o["job_id"]] = int(msg.split(" worker=")[1].split(" ")[0])
            return seen if len(seen) == len(want) else None
        seen = wait_for(logged, 10, "a delivery log line per job")
        self.assertEqual(seen, want)

    def test_every_address_of_an_mx_host_before_the_next(self):
        d1 = dispatch("ad-1", ["m1@multia.test"], "", domain="multia.test", site="adm")
        # An IPv6 address needs an IPv6 (or no) source address.
        d2 = dispatch("ad-2", ["m2@dual.test"], "", domain="dual.test", site="add",
                      source_ip="")
        self.e.publish([d1, d2] if self.sink6 else [d1])
        ids = {"ad-1", "ad-2"} if self.sink6 else {"ad-1"}
        ev = by_rcpt(self.e.wait_events(ids, len(ids)))
        out = self.e.sender.output()
        a = ev["m1@multia.test"]
        self.assertEqual(a["type"], "DELIVERED", out)
        self.assertEqual(a["mx_host"], "multi.mx.test")
        self.assertEqual(a["mx_ip"], "127.0.0.1")
        # The first (dead) address was tried before.
        self.assertIn("[127.0.0.2] failed", out)
        if not self.sink6:
            self.skipTest("no IPv6 loopback: the A + AAAA case was not run")
        b = ev["m2@dual.test"]
        self.assertEqual(b["type"], "DELIVERED", out)
        self.assertEqual(b["mx_host"], "dual.mx.test")
        self.assertEqual(b["mx_ip"], "::1")
        self.assertIn(["m2@dual.test"], [m["rcpt"] for m in self.sink6.messages()])


if __name__ == "__main__":
    unittest.main()
