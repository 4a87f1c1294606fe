"""sluice-sender MTA-STS (RFC 8461, issue #19): policies served by a local
HTTPS server whose certificate comes from a test CA, `_mta-sts` TXT records
and MX hosts from the loopback DNS server, receivers on loopback addresses
sharing one port (SLUICE_SENDER_MX_PORT) so each MX host is a receiver of
its own.

- enforce + a CA-signed certificate naming the MX: delivered, verified;
- enforce + a self-signed certificate, or one for another name: deferred,
  nothing sent;
- enforce + an MX host the policy does not name: that host is not used (the
  next matching one is), and with no matching host at all: deferred;
- testing + a self-signed certificate: delivered, the failure in the event;
- no TXT record: no policy, delivered as usual;
- one fetch per domain while its policy is cached.
"""

import datetime
import http.server
import json
import os
import ssl
import subprocess
import tempfile
import threading
import unittest
import urllib.request

import dnstest
from sluicetest import bin_path, free_port, start_sink, wait_for
from test_sender import SenderEnv, dispatch, by_rcpt
from test_sender_tls import make_certs as tls_certs

POLICIES = {
    "enforce.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.enforce.test\r\nmax_age: 86400\r\n",
    "selfsig.test": "version: STSv1\nmode: enforce\nmx: mx.selfsig.test\nmax_age: 86400\n",
    "wrongname.test": "version: STSv1\nmode: enforce\nmx: *.wrongname.test\nmax_age: 86400\n",
    "mixed.test": "version: STSv1\nmode: enforce\nmx: mx.enforce.test\nmax_age: 86400\n",
    "nomatch.test": "version: STSv1\nmode: enforce\nmx: mx.enforce.test\nmax_age: 86400\n",
    "testing.test": "version: STSv1\nmode: testing\nmx: mx.selfsig.test\nmax_age: 86400\n",
    "badpolicy.test": "version: STSv1\nmode: enforce\nmax_age: 86400\n",
}


def make_certs(d):
    """A test CA; CA-signed certificates for mx.enforce.test, mx.evil.test,
    other.test and the policy host names; a self-signed one."""
    web = ",".join("DNS:mta-sts." + dom
                   for dom in list(POLICIES) + ["nosts.test", "rotate.test", "missing.test"])
    return tls_certs(d, signed=(("good", "DNS:mx.enforce.test"), ("evil", "DNS:mx.evil.test"),
                                ("wrong", "DNS:other.test"), ("web", web)),
                     self_host="mx.selfsig.test")


class PolicyServer:
    """HTTPS on 127.0.0.1: serves policies (domain -> text; may change while
    it runs) by the Host header at /.well-known/mta-sts.txt, and counts the
    fetches per domain."""

    def __init__(self, cert, key, policies):
        self.fetches = {}
        self.policies = policies
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = self.headers.get("Host", "").split(":")[0]
                dom = host[len("mta-sts."):] if host.startswith("mta-sts.") else ""
                srv.fetches[dom] = srv.fetches.get(dom, 0) + 1
                body = srv.policies.get(dom)
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()



class TestSenderMtaSts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpd = tempfile.TemporaryDirectory(prefix="sluice-sender-mtasts-")
        tmp = cls.tmpd.name
        cls.certs = make_certs(tmp)
        cls.web = PolicyServer(*cls.certs["web"], POLICIES)
        # Each MX host on its own loopback address, all on one port.
        port = free_port()
        cls.sinks = {}
        for name, ip in (("good", "127.0.0.2"), ("self", "127.0.0.3"), ("wrong", "127.0.0.4"),
                         ("evil", "127.0.0.5")):
            crt, key = cls.certs[name]
            cls.sinks[name] = start_sink(os.path.join(tmp, name), ["--tls-cert", crt,
                                                                   "--tls-key", key],
                                         host=ip, port=port)
        records = {
            "mx.enforce.test": {"A": ["127.0.0.2"]},
            "mx.selfsig.test": {"A": ["127.0.0.3"]},
            "mx.wrongname.test": {"A": ["127.0.0.4"]},
            "mx.evil.test": {"A": ["127.0.0.5"]},
            "enforce.test": {"MX": [(10, "mx.enforce.test")]},
            "selfsig.test": {"MX": [(10, "mx.selfsig.test")]},
            "wrongname.test": {"MX": [(10, "mx.wrongname.test")]},
            "mixed.test": {"MX": [(5, "mx.evil.test"), (10, "mx.enforce.test")]},
            "nomatch.test": {"MX": [(10, "mx.evil.test")]},
            "testing.test": {"MX": [(10, "mx.selfsig.test")]},
            "badpolicy.test": {"MX": [(10, "mx.selfsig.test")]},
            "nosts.test": {"MX": [(10, "mx.selfsig.test")]},
            # A TXT record, but the policy server answers 404.
            "missing.test": {"MX": [(10, "mx.selfsig.test")]},
            "_mta-sts.missing.test": {"TXT": ["v=STSv1; id=1;"]},
            "mta-sts.missing.test": {"A": ["127.0.0.1"]},
        }
        for dom in POLICIES:
            records["_mta-sts." + dom] = {"TXT": ["v=STSv1; id=20261205a;"]}
            records["mta-sts." + dom] = {"A": ["127.0.0.1"]}
        cls.dns = dnstest.DnsServer(records)
        _, dport = cls.dns.start()
        extra = "dns:\n  servers: [\"127.0.0.1:%d\"]\n  timeout: 1s\n  tries: 1\n" % dport
        cls.metrics_port = free_port()
        extra += "metrics:\n  listen: 127.0.0.1:%d\n" % cls.metrics_port
        cls.e = SenderEnv(tmp, extra_yaml=extra, workers=2)
        with open(cls.e.cfg) as f:
            text = f.read()
        text = text.replace("  instance_id: sender-t\n",
                            "  instance_id: sender-t\n  tls_ca_file: %s\n"
                            "  mta_sts_fetch_timeout: 5s\n" % cls.certs["ca"], 1)
        with open(cls.e.cfg, "w") as f:
            f.write(text)
        cls.e.start_sender(env={"SLUICE_SENDER_MX_PORT": str(port),
                                "SLUICE_SENDER_MTASTS_PORT": str(cls.web.port)})

    @classmethod
    def tearDownClass(cls):
        cls.e.stop()
        for s in cls.sinks.values():
            s.stop()
        cls.web.stop()
        cls.dns.stop()
        cls.tmpd.cleanup()

    def wait_events(self, job_ids, n, timeout=40):
        def got():
            evs = [x["event"] for x in self.e.dump("events", 0, 1500)]
            evs = [ev for ev in evs if ev.get("job_id") in job_ids]
            return evs if len(evs) >= n else None
        return wait_for(got, timeout, "%d events of %s" % (n, job_ids), interval=0.3)

    def rcpts(self, name):
        return [r for m in self.sinks[name].messages() for r in m["rcpt"]]

    def test_policies(self):
        specs = [
            ("s-enforce", "a@enforce.test"), ("s-self", "b@selfsig.test"),
            ("s-wrong", "c@wrongname.test"), ("s-mixed", "d@mixed.test"),
            ("s-nomatch", "e@nomatch.test"), ("s-testing", "f@testing.test"),
            ("s-none", "g@nosts.test"), ("s-bad", "h@badpolicy.test"),
            ("s-missing", "j@missing.test"),
            # A second message to a cached domain: no second fetch.
            ("s-enforce2", "i@enforce.test"),
        ]
        self.e.publish([dispatch(j, [r], "", site=r.split("@")[1]) for j, r in specs])
        ids = {j for j, _ in specs}
        ev = by_rcpt(self.wait_events(ids, len(specs)))
        out = self.e.sender.output()

        g = ev["a@enforce.test"]
        self.assertEqual(g["type"], "DELIVERED", out)
        self.assertEqual(g["tls_policy"], "mta-sts-enforce")
        self.assertIs(g["tls_verified"], True)
        self.assertEqual(g["mx_host"], "mx.enforce.test")
        self.assertIn("a@enforce.test", self.rcpts("good"))
        self.assertEqual(ev["i@enforce.test"]["type"], "DELIVERED", out)

        # enforce: a self-signed certificate and one for another name defer.
        s = ev["b@selfsig.test"]
        self.assertEqual(s["type"], "DEFERRED", out)
        self.assertEqual(s["tls_policy"], "mta-sts-enforce")
        self.assertIn("certificate verify failed: self-signed certificate", s["tls_failure"])
        w = ev["c@wrongname.test"]
        self.assertEqual(w["type"], "DEFERRED", out)
        self.assertIn("certificate verify failed: hostname mismatch", w["tls_failure"])
        self.assertNotIn("b@selfsig.test", self.rcpts("self"))
        self.assertNotIn("c@wrongname.test", self.rcpts("wrong"))

        # enforce: the preferred MX is not in the policy and is skipped.
        m = ev["d@mixed.test"]
        self.assertEqual(m["type"], "DELIVERED", out)
        self.assertEqual(m["mx_host"], "mx.enforce.test")
        self.assertIn("d@mixed.test", self.rcpts("good"))
        n = ev["e@nomatch.test"]
        self.assertEqual(n["type"], "DEFERRED", out)
        self.assertIn("no MX host of nomatch.test matches its MTA-STS policy", n["reply"])
        self.assertIn("mx.evil.test does not match", n["tls_failure"])
        self.assertEqual(self.rcpts("evil"), [])
        with open(self.sinks["evil"].log_path) as f:
            self.assertEqual(f.read().strip(), "", "mx.evil.test was connected to")

        # testing: delivered, and what enforce would refuse is reported.
        t = ev["f@testing.test"]
        self.assertEqual(t["type"], "DELIVERED", out)
        self.assertEqual(t["tls_policy"], "mta-sts-testing")
        self.assertIs(t["tls_verified"], False)
        self.assertIn("MTA-STS testing: self-signed certificate", t["tls_failure"])
        self.assertIn("f@testing.test", self.rcpts("self"))

        # No policy, a policy that does not parse, and one that cannot be
        # fetched: delivered as usual, and the failure logged.
        for r in ("g@nosts.test", "h@badpolicy.test", "j@missing.test"):
            self.assertEqual(ev[r]["type"], "DELIVERED", out)
            self.assertEqual(ev[r]["tls_policy"], "opportunistic")
        self.assertIn("bad policy at https://mta-sts.badpolicy.test", out)
        self.assertIn("no mx", out)
        self.assertIn("policy fetch https://mta-sts.missing.test:%d/.well-known/mta-sts.txt: "
                      "HTTP status 404" % self.web.port, out)

        self.assertEqual(self.web.fetches.get("enforce.test"), 1)
        self.assertNotIn("nosts.test", self.web.fetches)
        self.assertEqual(self.dns.count("_mta-sts.enforce.test", "TXT"), 1)

        m = self.metrics()
        self.assertEqual(m.get('sluice_sender_mtasts_fetches_total{result="ok"}'), 6, m)
        self.assertEqual(m.get('sluice_sender_mtasts_fetches_total{result="none"}'), 1, m)
        self.assertEqual(m.get('sluice_sender_mtasts_fetches_total{result="error"}'), 2, m)
        self.assertEqual(m.get('sluice_sender_mtasts_deferrals_total{reason="mx_mismatch"}'), 1, m)
        self.assertEqual(m.get("sluice_sender_mtasts_policies"), 9, m)

        self.check_report(ev)

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                    timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("sluice_sender_mtasts_"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def check_report(self, ev):
        """`sluice tls-report` over the day of these events: an RFC 8460
        report whose counts and result types match what happened."""
        ts = ev["a@enforce.test"]["timestamp_ms"] / 1000
        day = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d")
        r = subprocess.run([bin_path("sluice"), "tls-report", "-c", self.e.cfg, "--day", day,
                            "--org", "Example Org", "--contact", "tls@example.net",
                            "--timeout", "30s"],
                           capture_output=True, text=True, timeout=60, env=self.e.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = json.loads(r.stdout)
        self.assertEqual(rep["organization-name"], "Example Org")
        self.assertEqual(rep["contact-info"], "tls@example.net")
        self.assertEqual(rep["date-range"], {"start-datetime": day + "T00:00:00Z",
                                             "end-datetime": day + "T23:59:59Z"})
        self.assertTrue(rep["report-id"].startswith(day))
        pol = {(p["policy"]["policy-domain"], p["policy"]["policy-type"]): p
               for p in rep["policies"]}

        def summary(dom, typ):
            s = pol[(dom, typ)]["summary"]
            return s["total-successful-session-count"], s["total-failure-session-count"]

        def results(dom, typ):
            return sorted((d["result-type"], d["failed-session-count"])
                          for d in pol[(dom, typ)].get("failure-details", []))

        self.assertEqual(summary("enforce.test", "sts"), (2, 0))
        self.assertEqual(pol[("enforce.test", "sts")]["policy"]["mx-host"], ["mx.enforce.test"])
        self.assertIn("mode: enforce", pol[("enforce.test", "sts")]["policy"]["policy-string"])
        self.assertEqual(summary("mixed.test", "sts"), (1, 0))
        self.assertEqual(summary("selfsig.test", "sts"), (0, 1))
        self.assertEqual(results("selfsig.test", "sts"), [("certificate-not-trusted", 1)])
        d = pol[("selfsig.test", "sts")]["failure-details"][0]
        self.assertEqual(d["receiving-mx-hostname"], "mx.selfsig.test")
        self.assertEqual(d["receiving-ip"], "127.0.0.3")
        self.assertEqual(d["sending-mta-ip"], "127.0.0.1")
        self.assertEqual(results("wrongname.test", "sts"), [("certificate-host-mismatch", 1)])
        self.assertEqual(results("nomatch.test", "sts"), [("validation-failure", 1)])
        self.assertEqual(summary("testing.test", "sts"), (0, 1))
        self.assertIn("mode: testing", pol[("testing.test", "sts")]["policy"]["policy-string"])
        self.assertEqual(results("testing.test", "sts"), [("certificate-not-trusted", 1)])
        self.assertEqual(summary("nosts.test", "no-policy-found"), (1, 0))
        self.assertNotIn("policy-string", pol[("nosts.test", "no-policy-found")]["policy"])

        # Another day has nothing; a bad day is a usage error.
        r = subprocess.run([bin_path("sluice"), "tls-report", "-c", self.e.cfg, "--day",
                            "2001-01-01", "--timeout", "30s"],
                           capture_output=True, text=True, timeout=60, env=self.e.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["policies"], [])
        r = subprocess.run([bin_path("sluice"), "tls-report", "-c", self.e.cfg, "--day",
                            "2026-02-30"], capture_output=True, text=True, timeout=60,
                           env=self.e.env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a date", r.stderr)


class TestMtaStsRefresh(unittest.TestCase):
    """A cached policy is kept while its TXT id stays the same, and fetched
    anew once the id changes (sender.mta_sts_recheck cut to 1 s, the TXT
    record's TTL to 1 s)."""

    @classmethod
    def setUpClass(cls):
        cls.tmpd = tempfile.TemporaryDirectory(prefix="sluice-sender-mtasts-r-")
        tmp = cls.tmpd.name
        cls.certs = make_certs(tmp)
        cls.policies = {"rotate.test": "version: STSv1\nmode: enforce\nmx: mx.other.test\n"
                                       "max_age: 86400\n"}
        cls.web = PolicyServer(*cls.certs["web"], cls.policies)
        port = free_port()
        crt, key = cls.certs["good"]
        cls.sink = start_sink(os.path.join(tmp, "good"), ["--tls-cert", crt, "--tls-key", key],
                              host="127.0.0.2", port=port)
        cls.dns = dnstest.DnsServer({
            "mx.enforce.test": {"A": ["127.0.0.2"]},
            "rotate.test": {"MX": [(10, "mx.enforce.test")]},
            "_mta-sts.rotate.test": {"TXT": ["v=STSv1; id=one;"], "ttl": 1},
            "mta-sts.rotate.test": {"A": ["127.0.0.1"]},
        })
        _, dport = cls.dns.start()
        extra = "dns:\n  servers: [\"127.0.0.1:%d\"]\n  timeout: 1s\n  tries: 1\n" % dport
        cls.e = SenderEnv(tmp, extra_yaml=extra, workers=1)
        with open(cls.e.cfg) as f:
            text = f.read()
        text = text.replace("  instance_id: sender-t\n",
                            "  instance_id: sender-t\n  tls_ca_file: %s\n"
                            "  mta_sts_recheck: 1s\n" % cls.certs["ca"], 1)
        with open(cls.e.cfg, "w") as f:
            f.write(text)
        cls.e.start_sender(env={"SLUICE_SENDER_MX_PORT": str(port),
                                "SLUICE_SENDER_MTASTS_PORT": str(cls.web.port)})
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.e.stop()
        cls.sink.stop()
        cls.web.stop()
        cls.dns.stop()
        cls.tmpd.cleanup()

    def probe(self):
        """One message to rotate.test; its event."""
        TestMtaStsRefresh.n += 1
        job = "rot-%d" % self.n
        self.e.publish([dispatch(job, ["p%d@rotate.test" % self.n], "", site="rotate.test")])
        return self.e.wait_events({job}, 1, timeout=40)[0]

    def test_refresh_on_id_change(self):
        ev = self.probe()
        self.assertEqual(ev["type"], "DEFERRED", self.e.sender.output())
        self.assertIn("no MX host of rotate.test matches", ev["reply"])
        self.assertEqual(self.web.fetches.get("rotate.test"), 1)

        # The policy changes but its id does not: after rechecks of the TXT
        # record the cached policy still holds, and is not fetched again.
        self.policies["rotate.test"] = ("version: STSv1\nmode: enforce\nmx: mx.enforce.test\n"
                                        "max_age: 86400\n")
        def rechecked():
            ev = self.probe()
            self.assertEqual(ev["type"], "DEFERRED", ev)
            return self.dns.count("_mta-sts.rotate.test", "TXT") >= 3
        wait_for(rechecked, 60, "two rechecks of the TXT record")
        self.assertEqual(self.web.fetches.get("rotate.test"), 1)

        # A new id: the new policy is fetched and mail flows.
        self.dns.set("_mta-sts.rotate.test", {"TXT": ["v=STSv1; id=two;"], "ttl": 1})
        def delivered():
            ev = self.probe()
            return ev if ev["type"] == "DELIVERED" else None
        ev = wait_for(delivered, 60, "delivery under the new policy")
        self.assertEqual(ev["tls_policy"], "mta-sts-enforce")
        self.assertIs(ev["tls_verified"], True)
        self.assertEqual(self.web.fetches.get("rotate.test"), 2)
        self.assertIn(ev["recipient"], [r for m in self.sink.messages() for r in m["rcpt"]])


if __name__ == "__main__":
    unittest.main()
