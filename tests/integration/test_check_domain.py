"""`sluice check-domain DOMAIN` (#19) against a real resolver: dnsmasq
serves a zone built in the test (--txt-record, --host-record,
--ptr-record) and the MTA-STS policy is served over HTTPS by a local
server whose certificate comes from a CA made here (--ca-file).

A correct setup passes every item and exits 0: SPF through a:, include:
and -all for the pool addresses 127.0.0.2 and 127.0.0.3, an RSA key split
over several TXT strings and an Ed25519 key both matching the configured
private keys, DMARC p=reject with rua and strict DKIM alignment,
forward-confirmed PTRs equal to the EHLO names, an MTA-STS enforce policy
and TLS-RPT. A broken setup fails or warns item by item, and exits 1.
Bad usage and a bad config exit 2."""

import base64
import http.server
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import threading
import unittest

from sluicetest import Proc, case_tmpdir, free_port, run_sluice, wait_for

DNSMASQ = "/usr/sbin/dnsmasq"


def dns_answers(port, name="probe.test"):
    """True when a DNS server answers a query on 127.0.0.1:port (UDP)."""
    q = struct.pack(">HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 16, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(q, ("127.0.0.1", port))
            return s.recv(4096)[:2] == b"\x51\x51"
        except OSError:
            return False


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def keygen(d, name, alg):
    path = os.path.join(d, name + ".pem")
    if alg == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    else:
        openssl("genpkey", "-algorithm", "ed25519", "-out", path)
    return path


def dkim_p(path, alg):
    """The p= value of a key: SPKI DER for RSA, the raw 32 octets for Ed25519."""
    der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=30).stdout
    return base64.b64encode(der[-32:] if alg == "ed25519" else der).decode()


def txt(name, value):
    """A --txt-record of one TXT record, split into character-strings of at
    most 200 octets (the RSA key needs several). On dnsmasq's command line
    a comma separates the strings and quotes are literal."""
    assert "," not in value
    parts = [value[i:i + 200] for i in range(0, len(value), 200)]
    return "--txt-record=%s,%s" % (name, ",".join(parts))


class CheckDomain(unittest.TestCase):
    def setUp(self):
        self.dir = case_tmpdir(self, "sluice-test-checkdom-")

    def dnsmasq(self, domain, records):
        """dnsmasq on a free port, answering for domain alone (NXDOMAIN for
        the names it does not hold, rather than REFUSED for want of an
        upstream server)."""
        port = free_port()
        proc = Proc(DNSMASQ, ["-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
                              "--port=%d" % port, "--listen-address=127.0.0.1",
                              "--bind-interfaces", "--pid-file=", "--user=root", "--local=/%s/" % domain,
                              "--local=/0.0.127.in-addr.arpa/"] + records,
                    tmpdir=self.dir)
        self.addCleanup(proc.stop)
        wait_for(lambda: dns_answers(port, "probe." + domain) or not proc.alive(), timeout=15,
                 what="dnsmasq answering")
        self.assertTrue(proc.alive(), proc.output())
        return port

    def config(self, name, pools, dkim):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write("pools:\n  default:\n")
            for ip, ehlo in pools:
                f.write("    - { ip: %s, ehlo: %s }\n" % (ip, ehlo))
            f.write("dkim:\n")
            for domain, sel, key, alg in dkim:
                f.write("  - { domain: %s, selector: %s, key: %s, algorithm: %s }\n"
                        % (domain, sel, key, alg))
        return path

    def https_policy(self, host, policy):
        """Serve policy at https://HOST/.well-known/mta-sts.txt on port 443 of
        a loopback address of its own; returns (address, CA file)."""
        d = self.dir
        ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
        key, csr, cert = (os.path.join(d, n) for n in ("srv.key", "srv.csr", "srv.pem"))
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", "/CN=sluice test CA", "-days", "2", "-keyout", ca_key,
                "-out", ca)
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", "/CN=" + host, "-addext", "subjectAltName=DNS:" + host,
                "-keyout", key, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                "-days", "2", "-copy_extensions", "copy", "-out", cert)
        body = policy.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        addr = "127.%d.%d.%d" % (random.randint(20, 250), random.randint(1, 250),
                                 random.randint(1, 250))
        try:
            srv = http.server.ThreadingHTTPServer((addr, 443), Handler)
        except OSError as e:
            self.skipTest("cannot listen on %s:443 for the MTA-STS policy: %s" % (addr, e))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return addr, ca

    def check(self, *args):
        r = run_sluice("check-domain", "--json", *args, timeout=120)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        return r.returncode, json.loads(r.stdout), r

    def test_correct_setup_passes_every_item(self):
        rsa = keygen(self.dir, "s1", "rsa")
        ed = keygen(self.dir, "e1", "ed25519")
        addr, ca = self.https_policy("mta-sts.good.test",
                                     "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\n"
                                     "mx: *.mx.good.test\r\nmax_age: 86400\r\n")
        records = [
            "--mx-host=good.test,mx.good.test,10", "--mx-host=good.test,b.mx.good.test,20",
            txt("good.test", "v=spf1 a:mta1.good.test include:_spf.good.test -all"),
            txt("good.test", "google-site-verification=not-spf"),
            txt("_spf.good.test", "v=spf1 ip4:127.0.0.3 -all"),
            "--host-record=mta1.good.test,127.0.0.2",
            "--host-record=mta2.good.test,127.0.0.3",
            txt("s1._domainkey.good.test", "v=DKIM1; k=rsa; p=" + dkim_p(rsa, "rsa")),
            txt("e1._domainkey.good.test", "v=DKIM1; k=ed25519; p=" + dkim_p(ed, "ed25519")),
            txt("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s; rua=mailto:dmarc@good.test"),
            txt("_mta-sts.good.test", "v=STSv1; id=20261205"),
            "--host-record=mta-sts.good.test,%s" % addr,
            txt("_smtp._tls.good.test", "v=TLSRPTv1; rua=mailto:tlsrpt@good.test"),
        ]
        port = self.dnsmasq("good.test", records)
        cfg = self.config("good.yaml",
                          [("127.0.0.2", "mta1.good.test"), ("127.0.0.3", "mta2.good.test")],
                          [("good.test", "s1", rsa, "rsa-sha256"),
                           ("good.test", "e1", ed, "ed25519-sha256")])
        rc, out, r = self.check("-c", cfg, "--dns-server", "127.0.0.1:%d" % port,
                                "--ca-file", ca, "Good.Test.")
        items = {(c["check"], c["subject"]): c for c in out["checks"]}
        want = [("spf", "good.test"), ("spf", "127.0.0.2"), ("spf", "127.0.0.3"),
                ("dkim", "s1._domainkey.good.test"), ("dkim", "e1._domainkey.good.test"),
                ("dmarc", "good.test"), ("dmarc-rua", "good.test"),
                ("dmarc-alignment", "good.test"), ("ptr", "127.0.0.2"), ("ptr", "127.0.0.3"),
                ("mta-sts", "good.test"), ("tls-rpt", "good.test")]
        self.assertEqual(sorted(items), sorted(want), r.stdout)
        for key in want:
            self.assertEqual(items[key]["status"], "pass", items[key])
        self.assertEqual((rc, out["result"], out["fail"], out["warn"], out["domain"]),
                         (0, "pass", 0, 0, "good.test"))
        self.assertIn("include:_spf.good.test", items[("spf", "127.0.0.3")]["detail"])
        self.assertIn("enforce", items[("mta-sts", "good.test")]["detail"])

        # The table: one line per item and the tally, same exit status.
        t = run_sluice("check-domain", "-c", cfg, "--dns-server", "127.0.0.1:%d" % port,
                       "--ca-file", ca, "good.test", timeout=120)
        self.assertEqual(t.returncode, 0, t.stdout + t.stderr)
        self.assertIn("good.test: 12 pass, 0 warn, 0 fail", t.stdout)
        self.assertRegex(t.stdout, r"ptr\s+127\.0\.0\.3\s+pass\s+mta2\.good\.test")

        # An MX host the policy does not name ("*." covers one label only),
        # and an SPF record ending in +all: MTA-STS fails, SPF warns.
        port2 = self.dnsmasq("good.test", [
            "--mx-host=good.test,a.b.mx.good.test,30",
            txt("good.test", "v=spf1 ip4:127.0.0.9 +all")] + records[:2] + records[3:])
        rc, out, _ = self.check("-c", cfg, "--dns-server", "127.0.0.1:%d" % port2,
                                "--ca-file", ca, "good.test")
        items = {(c["check"], c["subject"]): c for c in out["checks"]}
        self.assertEqual(items[("mta-sts", "good.test")]["status"], "fail")
        self.assertIn("a.b.mx.good.test is not in the policy",
                      items[("mta-sts", "good.test")]["detail"])
        self.assertEqual(items[("spf", "good.test")]["status"], "warn")
        self.assertEqual(items[("spf", "127.0.0.2")]["status"], "pass")
        self.assertEqual((rc, out["fail"], out["warn"]), (1, 1, 1))

        # Without the test CA the policy cannot be fetched: MTA-STS fails.
        rc, out, _ = self.check("-c", cfg, "--dns-server", "127.0.0.1:%d" % port, "good.test")
        sts = [c for c in out["checks"] if c["check"] == "mta-sts"][0]
        self.assertEqual((rc, sts["status"]), (1, "fail"), sts)
        self.assertIn("policy not fetched", sts["detail"])

    def test_broken_setup_fails_item_by_item(self):
        key = keygen(self.dir, "k1", "ed25519")
        other = keygen(self.dir, "other", "ed25519")
        unpublished = keygen(self.dir, "k2", "ed25519")
        port = self.dnsmasq("bad.test", [
            txt("bad.test", "v=spf1 ip4:127.0.0.2 ~all"),          # 127.0.0.3 missing
            txt("k1._domainkey.bad.test", "v=DKIM1; k=ed25519; p=" + dkim_p(other, "ed25519")),
            "--host-record=mta1.bad.test,127.0.0.2",               # PTR not the EHLO name
            "--ptr-record=3.0.0.127.in-addr.arpa,ghost.bad.test",  # not forward-confirmed
            "--host-record=ghost.bad.test,127.0.0.9",
            txt("_smtp._tls.bad.test", "v=TLSRPTv1"),              # no rua
        ])
        cfg = self.config("bad.yaml",
                          [("127.0.0.2", "mail.bad.test"), ("127.0.0.3", "mta2.bad.test")],
                          [("bad.test", "k1", key, "ed25519-sha256"),
                           ("bad.test", "k2", unpublished, "ed25519-sha256")])
        rc, out, r = self.check("-c", cfg, "--dns-server", "127.0.0.1:%d" % port, "bad.test")
        got = {(c["check"], c["subject"]): (c["status"], c["detail"]) for c in out["checks"]}
        want = {
            ("spf", "bad.test"): ("pass", "v=spf1"),
            ("spf", "127.0.0.2"): ("pass", "ip4:127.0.0.2"),
            ("spf", "127.0.0.3"): ("fail", "softfail"),
            ("dkim", "k1._domainkey.bad.test"): ("fail", "does not match"),
            ("dkim", "k2._domainkey.bad.test"): ("fail", "no DKIM key record"),
            ("dmarc", "bad.test"): ("fail", "no DMARC record"),
            ("ptr", "127.0.0.2"): ("warn", "EHLO name is mail.bad.test"),
            ("ptr", "127.0.0.3"): ("fail", "ghost.bad.test does not resolve back"),
            ("mta-sts", "bad.test"): ("warn", "no MTA-STS record"),
            ("tls-rpt", "bad.test"): ("fail", "no rua="),
        }
        self.assertEqual(sorted(got), sorted(want), r.stdout)
        for k, (status, words) in want.items():
            self.assertEqual(got[k][0], status, (k, got[k]))
            self.assertIn(words, got[k][1], k)
        self.assertEqual((rc, out["result"], out["fail"], out["warn"]), (1, "fail", 6, 2))

        # Two SPF records, a DMARC p=none without rua: fail, warn, warn.
        port = self.dnsmasq("bad.test", [
            txt("bad.test", "v=spf1 ip4:127.0.0.2 -all"),
            txt("bad.test", "v=spf1 ip4:127.0.0.3 -all"),
            txt("_dmarc.bad.test", "v=DMARC1; p=none"),
        ])
        rc, out, _ = self.check("-c", cfg, "--dns-server", "127.0.0.1:%d" % port, "bad.test")
        got = {(c["check"], c["subject"]): (c["status"], c["detail"]) for c in out["checks"]}
        self.assertEqual(got[("spf", "bad.test")][0], "fail")
        self.assertIn("2 SPF records", got[("spf", "bad.test")][1])
        self.assertNotIn(("spf", "127.0.0.2"), got)
        self.assertEqual(got[("dmarc", "bad.test")][0], "warn")
        self.assertEqual(got[("dmarc-rua", "bad.test")][0], "warn")
        self.assertEqual(rc, 1)

    def test_unreachable_resolver_fails_every_item(self):
        # Nothing listens there: every lookup fails, and a failed lookup is
        # a fail with the resolver's reason, never a pass or a warning.
        cfg = self.config("c.yaml", [("127.0.0.2", "mta1.x.test")], [])
        rc, out, r = self.check("-c", cfg, "--dns-server", "127.0.0.1:%d" % free_port(),
                                "x.test")
        self.assertEqual((rc, out["result"], out["pass"], out["warn"]), (1, "fail", 0, 0))
        spf = [c for c in out["checks"] if c["check"] == "spf"][0]
        self.assertIn("TXT lookup of x.test failed: ", spf["detail"])

    def test_bad_usage_and_config_exit_2(self):
        cfg = os.path.join(self.dir, "broken.yaml")
        with open(cfg, "w") as f:
            f.write("pools: [not a mapping\n")
        for args, words in [((), "usage"), (("a.test", "b.test"), "usage"),
                            (("--frob", "a.test"), "usage"),
                            (("bad_domain!",), "not a domain name"),
                            (("-c", cfg, "a.test"), "broken.yaml"),
                            (("--dns-server", "not an address", "a.test"), "DNS server")]:
            r = run_sluice("check-domain", *args)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertIn(words, r.stderr, args)
        r = run_sluice("check-domain", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("MTA-STS", r.stdout)


if __name__ == "__main__":
    unittest.main()
