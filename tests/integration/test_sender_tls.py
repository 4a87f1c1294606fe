"""sluice-sender TLS (issue #19): the `verify` policy against receivers whose
certificates come from a test CA made here, the expiry of the opportunistic
plain-text fallback, and the TLS outcome in the events.

One devbroker, one loopback DNS server (the MX names), three sluice-testsink
receivers (a CA-signed certificate for its MX name, a CA-signed certificate
for another name, a self-signed one), a plain sink, a scripted SMTP server
whose TLS handshakes always fail, and one sender trusting only the test CA.
"""

import os
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import dnstest
from sluicetest import start_sink, wait_for
from test_sender import SenderEnv, dispatch, by_rcpt

FALLBACK_S = 8


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def make_certs(d, signed=(("good", "DNS:mx.good.test"), ("wrong", "DNS:other.test")),
               self_host="mx.self.test"):
    """A test CA ("ca": its PEM), a certificate it signs for each (name,
    subjectAltName) of signed, and a self-signed one ("self") for
    self_host: name -> (cert, key)."""
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=sluice test CA", "-days", "2", "-keyout", ca_key, "-out", ca,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    out = {"ca": ca}
    for name, san in signed:
        key, csr, crt = (os.path.join(d, name + x) for x in (".key", ".csr", ".pem"))
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=" + name, "-keyout", key, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                "-days", "2", "-extfile", ext, "-out", crt)
        out[name] = (crt, key)
    key, crt = os.path.join(d, "self.key"), os.path.join(d, "self.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=" + self_host, "-addext", "subjectAltName=DNS:" + self_host,
            "-days", "2", "-keyout", key, "-out", crt)
    out["self"] = (crt, key)
    return out


class BrokenTlsServer:
    """An SMTP server that offers STARTTLS, answers it with 220 and then
    sends bytes that are not TLS, so every handshake fails; in plain text it
    accepts mail. Counts STARTTLS commands and records recipients."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.starttls = 0
        self.rcpts = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            c.sendall(b"220 broken.test ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO"):
                    c.sendall(b"250-broken.test\r\n250 STARTTLS\r\n")
                elif cmd == b"STARTTLS":
                    with self.lock:
                        self.starttls += 1
                    c.sendall(b"220 2.0.0 go ahead\r\n")
                    c.sendall(b"this is not a TLS record\r\n" * 4)
                    return
                elif cmd.startswith(b"RCPT"):
                    with self.lock:
                        self.rcpts.append(line.strip()[8:].strip(b"<>").decode())
                    c.sendall(b"250 2.1.5 ok\r\n")
                elif cmd == b"DATA":
                    c.sendall(b"354 go\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    c.sendall(b"250 2.0.0 queued\r\n")
                elif cmd == b"QUIT":
                    c.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    c.sendall(b"250 2.0.0 ok\r\n")
        except OSError:
            pass
        finally:
            c.close()

    def count(self):
        with self.lock:
            return self.starttls

    def close(self):
        self.sock.close()


class TestSenderTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpd = tempfile.TemporaryDirectory(prefix="sluice-sender-tls-")
        tmp = cls.tmpd.name
        cls.certs = make_certs(tmp)
        cls.sinks = {}
        for name in ("good", "wrong", "self"):
            crt, key = cls.certs[name]
            cls.sinks[name] = start_sink(os.path.join(tmp, name),
                                         ["--tls-cert", crt, "--tls-key", key])
        cls.plain = start_sink(os.path.join(tmp, "plain"))
        cls.broken = BrokenTlsServer()
        cls.dns = dnstest.DnsServer({
            "mx.good.test": {"A": ["127.0.0.1"]},
            "mx.wrong.test": {"A": ["127.0.0.1"]},
            "mx.self.test": {"A": ["127.0.0.1"]},
        })
        _, dport = cls.dns.start()
        extra = "dns:\n  servers: [\"127.0.0.1:%d\"]\n  timeout: 1s\n  tries: 1\n" % dport
        cls.e = SenderEnv(tmp, extra_yaml=extra, workers=1)
        # The sender trusts the test CA only, and falls back briefly.
        with open(cls.e.cfg) as f:
            text = f.read()
        text = text.replace("  instance_id: sender-t\n",
                            "  instance_id: sender-t\n  tls_ca_file: %s\n"
                            "  tls_fallback_expiry: %ds\n" % (cls.certs["ca"], FALLBACK_S), 1)
        with open(cls.e.cfg, "w") as f:
            f.write(text)
        cls.e.start_sender()

    @classmethod
    def tearDownClass(cls):
        cls.e.stop()
        for s in list(cls.sinks.values()) + [cls.plain]:
            s.stop()
        cls.broken.close()
        cls.dns.stop()
        cls.tmpd.cleanup()

    def wait_events(self, job_ids, n, timeout=40):
        def got():
            evs = [x["event"] for x in self.e.dump("events", 0, 1500)]
            evs = [ev for ev in evs if ev.get("job_id") in job_ids]
            return evs if len(evs) >= n else None
        return wait_for(got, timeout, "%d events of %s" % (n, job_ids), interval=0.3)

    def route(self, name, host):
        return "%s:%d" % (host, self.sinks[name].port)

    def test_verify(self):
        self.e.publish([
            dispatch("v-good", ["a@good.test"], self.route("good", "mx.good.test"),
                     tls="verify", site="good"),
            dispatch("v-wrong", ["b@wrong.test"], self.route("wrong", "mx.wrong.test"),
                     tls="verify", site="wrong"),
            dispatch("v-self", ["c@self.test"], self.route("self", "mx.self.test"),
                     tls="verify", site="self"),
            # The same receivers under the other policies: delivered, and the
            # verification result reported.
            dispatch("o-self", ["d@self.test"], self.route("self", "mx.self.test"),
                     tls="opportunistic", site="self"),
            dispatch("r-wrong", ["e@wrong.test"], self.route("wrong", "mx.wrong.test"),
                     tls="required", site="wrong"),
            dispatch("o-plain", ["f@plain.test"], self.plain.address, tls="opportunistic"),
            dispatch("v-plain", ["g@plain.test"], self.plain.address, tls="verify"),
        ])
        ids = {"v-good", "v-wrong", "v-self", "o-self", "r-wrong", "o-plain", "v-plain"}
        ev = by_rcpt(self.wait_events(ids, 7))
        out = self.e.sender.output()

        g = ev["a@good.test"]
        self.assertEqual(g["type"], "DELIVERED", out)
        self.assertEqual(g["tls_policy"], "verify")
        self.assertIn(g["tls_protocol"], ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(g["tls_cipher"])
        self.assertIs(g["tls_verified"], True)
        self.assertEqual(g["tls_verify_result"], "ok")
        self.assertNotIn("tls_failure", g)
        self.assertEqual([m["rcpt"] for m in self.sinks["good"].messages()], [["a@good.test"]])

        # A CA-signed certificate for another name, and a self-signed one:
        # deferred with the reason, nothing sent.
        w = ev["b@wrong.test"]
        self.assertEqual(w["type"], "DEFERRED", out)
        self.assertIn("certificate verify failed: hostname mismatch", w["reply"])
        self.assertIn("certificate verify failed: hostname mismatch", w["tls_failure"])
        self.assertEqual(w["tls_policy"], "verify")
        s = ev["c@self.test"]
        self.assertEqual(s["type"], "DEFERRED", out)
        self.assertIn("certificate verify failed: self-signed certificate", s["reply"])
        self.assertIn("certificate verify failed: self-signed certificate", s["tls_failure"])
        self.assertNotIn(["b@wrong.test"], [m["rcpt"] for m in self.sinks["wrong"].messages()])
        self.assertNotIn(["c@self.test"], [m["rcpt"] for m in self.sinks["self"].messages()])

        o = ev["d@self.test"]
        self.assertEqual(o["type"], "DELIVERED", out)
        self.assertEqual(o["tls_policy"], "opportunistic")
        self.assertIn(o["tls_protocol"], ("TLSv1.2", "TLSv1.3"))
        self.assertIs(o["tls_verified"], False)
        self.assertIn("self-signed", o["tls_verify_result"])
        r = ev["e@wrong.test"]
        self.assertEqual(r["type"], "DELIVERED", out)
        self.assertEqual(r["tls_policy"], "required")
        self.assertIs(r["tls_verified"], False)
        self.assertEqual(r["tls_verify_result"], "hostname mismatch")

        p = ev["f@plain.test"]
        self.assertEqual(p["type"], "DELIVERED", out)
        self.assertEqual(p.get("tls_protocol", ""), "")
        self.assertNotIn("tls_verified", p)
        self.assertEqual(p["tls_failure"], "STARTTLS not offered")
        v = ev["g@plain.test"]
        self.assertEqual(v["type"], "DEFERRED", out)
        self.assertIn("does not offer STARTTLS", v["tls_failure"])
        self.assertNotIn("g@plain.test", [m["rcpt"][0] for m in self.plain.messages()])

    def test_fallback_expires(self):
        b = self.broken
        route = "127.0.0.1:%d" % b.port
        # One message per connection, so every message opens its own and
        # shows whether STARTTLS is tried.
        kw = dict(tls="opportunistic", site="broken", max_messages_per_connection=1)
        self.e.publish([dispatch("fb-1", ["x1@broken.test"], route, **kw)])
        e1 = self.wait_events({"fb-1"}, 1)[0]
        t_fallback = time.time()
        self.assertEqual(e1["type"], "DELIVERED", self.e.sender.output())
        self.assertEqual(e1.get("tls_protocol", ""), "")
        self.assertIn("plain text for %ds after a failed TLS handshake" % FALLBACK_S,
                      e1["tls_failure"])
        self.assertEqual(b.count(), 1)
        # Within the fallback: plain text at once, no STARTTLS; and one due
        # after it ends (the sender never sends before send_at): STARTTLS
        # again, which fails again and falls back again.
        later = int((t_fallback + FALLBACK_S + 2) * 1000)
        self.e.publish([dispatch("fb-2", ["x2@broken.test"], route, **kw),
                        dispatch("fb-3", ["x3@broken.test"], route, send_at_ms=later, **kw)])
        e2 = self.wait_events({"fb-2"}, 1)[0]
        self.assertEqual(e2["type"], "DELIVERED")
        self.assertIn("plain text for", e2["tls_failure"])
        if time.time() < t_fallback + FALLBACK_S - 1:
            self.assertEqual(b.count(), 1)
        e3 = self.wait_events({"fb-3"}, 1, timeout=FALLBACK_S + 40)[0]
        self.assertEqual(e3["type"], "DELIVERED")
        self.assertEqual(b.count(), 2)
        self.assertIn("plain text for", e3["tls_failure"])
        self.assertEqual(sorted(b.rcpts), ["x1@broken.test", "x2@broken.test", "x3@broken.test"])


if __name__ == "__main__":
    unittest.main()
