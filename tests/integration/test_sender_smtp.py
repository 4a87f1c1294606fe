"""sluice-sender SMTP behaviour (issue #3) against sluice-testsink: MX
fallback, implicit and null MX, DNS failures, STARTTLS policies, PIPELINING
and lock-step servers, connection reuse, 452 resend, SMTPUTF8, pacing, DKIM,
SOCKS5 egress and metrics.

One devbroker, one loopback DNS server, several sinks and one sender (two
workers) serve every test; each test uses its own domains and job ids.
"""

import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import unittest
import urllib.request

import dnstest
from sluicetest import accept_in_thread, free_port, start_sink
from test_sender import SenderEnv, dispatch, by_rcpt


class Socks5Proxy:
    """A minimal SOCKS5 CONNECT proxy (no auth) that counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connects = []
        accept_in_thread(self.sock, self._accept)

    def _accept(self, c):
        threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.recv(3)
            c.sendall(b"\x05\x00")
            req = c.recv(10)
            ip = socket.inet_ntoa(req[4:8])
            port = int.from_bytes(req[8:10], "big")
            self.connects.append((ip, port))
            up = socket.create_connection((ip, port))
            c.sendall(b"\x05\x00\x00\x01" + req[4:10])
            def pump(a, b):
                try:
                    while True:
                        d = a.recv(65536)
                        if not d:
                            break
                        b.sendall(d)
                except OSError:
                    pass
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            threading.Thread(target=pump, args=(up, c), daemon=True).start()
            pump(c, up)
        except OSError:
            pass

    def close(self):
        self.sock.close()


class TestSenderSmtp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpd = tempfile.TemporaryDirectory(prefix="sluice-sender-smtp-")
        tmp = cls.tmpd.name
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
                        "-days", "2", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=60)
        dkim_key = os.path.join(tmp, "dkim.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", dkim_key],
                       check=True, capture_output=True, timeout=60)
        cls.sink = start_sink(os.path.join(tmp, "a"))
        cls.tls_sink = start_sink(os.path.join(tmp, "tls"),
                                  ["--tls-cert", cert, "--tls-key", key])
        cls.strict_sink = start_sink(os.path.join(tmp, "strict"),
                                     ["--no-pipelining", "--no-smtputf8", "--max-rcpt", "2"])
        cls.dns = dnstest.DnsServer({
            "mx.test": {"MX": [(10, "dead.mx.test"), (20, "live.mx.test")]},
            "dead.mx.test": {"A": ["127.0.0.2"]},
            "live.mx.test": {"A": ["127.0.0.1"]},
            "implicit.test": {"A": ["127.0.0.1"]},
            "nullmx.test": {"MX": [(0, ".")]},
            "servfail.test": "SERVFAIL",
        })
        _, dport = cls.dns.start()
        extra = ("dns:\n  servers: [\"127.0.0.1:%d\"]\n  timeout: 1s\n  tries: 1\n"
                 "dkim:\n  - { domain: example.net, selector: e1, key: %s, "
                 "algorithm: ed25519-sha256 }\n"
                 "metrics: { listen: \"127.0.0.1:%d\" }\n" % (dport, dkim_key, free_port()))
        cls.e = SenderEnv(tmp, extra_yaml=extra, workers=2)
        cls.proxy = Socks5Proxy()
        cls.e.start_sender(env={"SLUICE_SENDER_MX_PORT": str(cls.sink.port)})

    @classmethod
    def tearDownClass(cls):
        cls.e.stop()
        for s in (cls.sink, cls.tls_sink, cls.strict_sink):
            s.stop()
        cls.dns.stop()
        cls.proxy.close()
        cls.tmpd.cleanup()

    def test_mx_fallback_implicit_null_and_servfail(self):
        self.e.publish([
            dispatch("mx-1", ["u1@mx.test"], "", domain="mx.test"),
            dispatch("mx-2", ["u2@implicit.test"], "", domain="implicit.test"),
            dispatch("mx-3", ["u3@nullmx.test"], "", domain="nullmx.test"),
            dispatch("mx-4", ["u4@servfail.test"], "", domain="servfail.test"),
        ])
        ev = by_rcpt(self.e.wait_events({"mx-1", "mx-2", "mx-3", "mx-4"}, 4))
        out = self.e.sender.output()
        self.assertEqual(ev["u1@mx.test"]["type"], "DELIVERED", out)
        self.assertEqual(ev["u1@mx.test"]["mx_host"], "live.mx.test")
        self.assertEqual(ev["u1@mx.test"]["mx_ip"], "127.0.0.1")
        self.assertEqual(ev["u2@implicit.test"]["type"], "DELIVERED", out)
        self.assertEqual(ev["u2@implicit.test"]["mx_host"], "implicit.test")
        self.assertEqual(ev["u3@nullmx.test"]["type"], "BOUNCED")
        self.assertEqual(ev["u3@nullmx.test"]["enhanced_code"], "5.1.10")
        self.assertEqual(ev["u3@nullmx.test"]["bounce_class"], "bad-domain")
        self.assertEqual(ev["u4@servfail.test"]["type"], "DEFERRED")
        # SERVFAIL never falls back to the A record.
        self.assertEqual(self.dns.count("servfail.test", "A"), 0)

    def test_starttls_policies(self):
        self.e.publish([
            dispatch("tls-1", ["t1@tls.test"], self.tls_sink.address, tls="opportunistic"),
            dispatch("tls-2", ["t2@tls.test"], self.tls_sink.address, tls="required"),
            dispatch("tls-3", ["t3@plain.test"], self.sink.address, tls="required"),
            dispatch("tls-4", ["t4@tls.test"], self.tls_sink.address, tls="disabled"),
        ])
        ev = by_rcpt(self.e.wait_events({"tls-1", "tls-2", "tls-3", "tls-4"}, 4))
        out = self.e.sender.output()
        for r in ("t1@tls.test", "t2@tls.test"):
            self.assertEqual(ev[r]["type"], "DELIVERED", out)
            self.assertTrue(ev[r]["tls_protocol"] in ("TLSv1.2", "TLSv1.3"), ev[r])
            self.assertTrue(ev[r]["tls_cipher"])
        # Required but not offered: deferred, never sent in plain text.
        self.assertEqual(ev["t3@plain.test"]["type"], "DEFERRED")
        self.assertNotIn("t3@plain.test", json.dumps(self.sink.messages()))
        self.assertEqual(ev["t4@tls.test"]["type"], "DELIVERED")
        self.assertEqual(ev["t4@tls.test"].get("tls_protocol", ""), "")
        tls_msgs = {m["rcpt"][0]: m for m in self.tls_sink.messages()}
        self.assertTrue(tls_msgs["t1@tls.test"]["tls"])
        self.assertFalse(tls_msgs["t4@tls.test"]["tls"])

    def test_lockstep_reuse_452_and_smtputf8(self):
        s = self.strict_sink
        jobs = [dispatch("ls-%d" % i, ["r%d@reuse.test" % i], s.address, max_connections=1,
                         max_messages_per_connection=10, site="reuse")
                for i in range(4)]
        jobs.append(dispatch("ls-452", ["a@many.test", "b@many.test", "c@many.test"],
                             s.address, site="many"))
        jobs.append(dispatch("ls-utf8", ["jos\u00e9@utf8.test"], s.address, site="utf8"))
        self.e.publish(jobs)
        ids = {"ls-0", "ls-1", "ls-2", "ls-3", "ls-452", "ls-utf8"}
        ev = by_rcpt(self.e.wait_events(ids, 8))
        out = self.e.sender.output()
        for i in range(4):
            self.assertEqual(ev["r%d@reuse.test" % i]["type"], "DELIVERED", out)
        msgs = s.messages()
        reuse = [m for m in msgs if m["rcpt"][0].endswith("@reuse.test")]
        self.assertEqual(len(reuse), 4)
        # One connection carried all four (max_connections 1, RSET between).
        self.assertEqual(len({m["peer"] for m in reuse}), 1, reuse)
        # 452 after two recipients: the third went in a second transaction.
        for r in ("a@many.test", "b@many.test", "c@many.test"):
            self.assertEqual(ev[r]["type"], "DELIVERED", out)
        many = [m["rcpt"] for m in msgs if m["rcpt"][0].endswith("@many.test")]
        self.assertEqual(sorted(len(x) for x in many), [1, 2], many)
        # No SMTPUTF8 at the server: bounced 5.6.7 without trying.
        u = ev["jos\u00e9@utf8.test"]
        self.assertEqual(u["type"], "BOUNCED")
        self.assertEqual(u["enhanced_code"], "5.6.7")

    def test_pacing_when_behind(self):
        # Five messages all overdue at 4/s: they leave 250 ms apart, not at once.
        jobs = [dispatch("pace-%d" % i, ["p%d@pace.test" % i], self.sink.address, rate=4.0,
                         send_at_ms=1, site="pace") for i in range(5)]
        self.e.publish(jobs)
        evs = self.e.wait_events({"pace-%d" % i for i in range(5)}, 5)
        ts = sorted(ev["timestamp_ms"] for ev in evs)
        self.assertTrue(all(ev["type"] == "DELIVERED" for ev in evs), evs)
        self.assertGreaterEqual(ts[-1] - ts[0], 900, ts)

    def test_send_at_in_the_future_is_honoured(self):
        import time
        at = int(time.time() * 1000) + 1500
        self.e.publish([dispatch("later-1", ["l1@later.test"], self.sink.address,
                                 send_at_ms=at, site="later")])
        ev = self.e.wait_events({"later-1"}, 1)[0]
        self.assertEqual(ev["type"], "DELIVERED")
        self.assertGreaterEqual(ev["timestamp_ms"], at)

    def test_dkim_signed_and_socks5(self):
        self.e.publish([dispatch("dk-1", ["d1@dkim.test"], self.sink.address, site="dkim"),
                        dispatch("sx-1", ["s1@socks.test"], self.sink.address, site="socks",
                                 socks5="127.0.0.1:%d" % self.proxy.port)])
        ev = by_rcpt(self.e.wait_events({"dk-1", "sx-1"}, 2))
        self.assertEqual(ev["d1@dkim.test"]["type"], "DELIVERED", self.e.sender.output())
        self.assertEqual(ev["s1@socks.test"]["type"], "DELIVERED", self.e.sender.output())
        m = [m for m in self.sink.messages() if m["rcpt"] == ["d1@dkim.test"]][0]
        with open(os.path.join(self.sink.dir, m["file"]), "rb") as f:
            body = f.read()
        self.assertIn(b"DKIM-Signature: v=1; a=ed25519-sha256", body)
        self.assertIn(b"s=e1", body)
        self.assertIn(("127.0.0.1", self.sink.port), self.proxy.connects)

    def test_metrics(self):
        self.e.publish([dispatch("mt-1", ["m1@metrics.test"], self.sink.address,
                                 site="metrics")])
        self.e.wait_events({"mt-1"}, 1)
        port = None
        for line in self.e.sender.stderr().splitlines():
            mm = re.search(r"metrics on port (\d+)", line)
            if mm:
                port = int(mm.group(1))
        self.assertIsNotNone(port, self.e.sender.output())
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read()
        text = text.decode()
        self.assertRegex(text, r'sluice_sender_delivered_total\{site="metrics",'
                               r'source="127.0.0.1"\} 1')
        self.assertIn("sluice_sender_queue_wait_seconds", text)
        self.assertIn("sluice_sender_connections_total", text)
        self.assertIn("sluice_sender_smtp_seconds", text)
        self.assertRegex(text, r'sluice_sender_transactions_total\{site="metrics",'
                               r'source="127.0.0.1",tls="no"\} 1')

    def test_template_rendered_per_recipient(self):
        body = ("From: News <news@example.net>\r\nTo: {{email}}\r\n"
                "Subject: Hi {{ name }}\r\n\r\nDear {{name}}, code {{code}}.\r\n")
        self.e.publish([{"template": {"id": "welcome", "body": body}}])
        d = dispatch("tp-1", ["t1@tmpl.test"], self.sink.address, site="tmpl")
        del d["raw"]
        d.update(template_id="welcome", vars={"email": "t1@tmpl.test", "name": "Ann",
                                               "code": "42"})
        missing = dispatch("tp-2", ["t2@tmpl.test"], self.sink.address, site="tmpl")
        del missing["raw"]
        missing.update(template_id="welcome", vars={"email": "t2@tmpl.test"})
        self.e.publish([d, missing])
        ev = by_rcpt(self.e.wait_events({"tp-1", "tp-2"}, 2))
        self.assertEqual(ev["t1@tmpl.test"]["type"], "DELIVERED", self.e.sender.output())
        # A variable the recipient lacks is never rendered blank.
        self.assertEqual(ev["t2@tmpl.test"]["type"], "BOUNCED")
        self.assertEqual(ev["t2@tmpl.test"]["bounce_class"], "content")
        m = [m for m in self.sink.messages() if m["rcpt"] == ["t1@tmpl.test"]][0]
        self.assertEqual(m["message_id"], "<tp-1@example.net>")
        with open(os.path.join(self.sink.dir, m["file"]), "rb") as f:
            text = f.read()
        self.assertIn(b"Subject: Hi Ann\r\n", text)
        self.assertIn(b"Dear Ann, code 42.", text)

    def test_unknown_template_fails_at_once(self):
        """A job naming a template nobody stored used to defer (451) and
        retry until it expired; it bounces now, saying which template."""
        self.e.publish([{"template": {"id": "known", "body": "From: a@example.net\r\n\r\nx\r\n"}}])
        d = dispatch("tp-nx", ["nx@tmpl.test"], self.sink.address, site="tmpl")
        del d["raw"]
        d.update(template_id="never-stored", vars={"email": "nx@tmpl.test"})
        self.e.publish([d])
        ev = by_rcpt(self.e.wait_events({"tp-nx"}, 1))
        e = ev["nx@tmpl.test"]
        self.assertEqual(e["type"], "BOUNCED", e)
        self.assertIn("never-stored", json.dumps(e))
        self.assertEqual([m for m in self.sink.messages() if "nx@tmpl.test" in m["rcpt"]], [])


if __name__ == "__main__":
    unittest.main()
