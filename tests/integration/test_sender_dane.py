"""sluice-sender DANE (RFC 7672, issue #19): TLSA records in a DNSSEC-signed
zone decide how the sender authenticates an MX host.

The zone dane.example is made and signed here (ldns-keygen, ldns-signzone from
ldnsutils) and served by a real `unbound` daemon as an authoritative zone;
the sender's libunbound forwards to it and validates with the zone's own DS
record as its trust anchor. One record set is tampered with after signing,
so that its signature is bogus. c-ares (the MX host's addresses) asks the
same daemon. Receivers: a sluice-testsink with STARTTLS and a self-signed
certificate, and a plain sink. (Not a zone under .test: libunbound, like
unbound, answers .test itself as a locally served empty zone.) It runs in a few seconds, so it is an
ordinary integration test.

  mx.dane.example      TLSA 3 1 1 of the sink's key           -> delivered, "dane"
  wrong.dane.example   TLSA 3 1 1 of another key              -> deferred, no match
  bogus.dane.example   TLSA altered after signing             -> deferred, bogus
  plain.dane.example   TLSA, but the receiver has no STARTTLS -> deferred, never plain
  pkix.dane.example    only a PKIX-EE(1) record (unusable)    -> TLS without checks
  notlsa.dane.example  secure, no TLSA                        -> delivered, site policy
  mx.unsigned.example  TLSA of another key, in an unsigned zone -> delivered, site policy
"""

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import urllib.request

from sluicetest import Proc, free_port, make_cert, start_sink, wait_for
from test_sender import SenderEnv, dispatch, by_rcpt


def run(*args, cwd=None):
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=60,
                          cwd=cwd).stdout


def spki_sha256(cert):
    """The data of a TLSA 3 1 1 record for a PEM certificate."""
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"], check=True,
                         capture_output=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True, timeout=30).stdout
    return hashlib.sha256(der).hexdigest()


def sign_zone(d, records):
    """Writes and signs dane.example in d; returns (signed zone, trust anchor)."""
    zone = os.path.join(d, "dane.example.zone")
    with open(zone, "w") as f:
        f.write("$ORIGIN dane.example.\n$TTL 300\n"
                "@ IN SOA ns.dane.example. hostmaster.dane.example. 1 3600 600 86400 60\n"
                "@ IN NS ns.dane.example.\nns IN A 127.0.0.1\n")
        f.write("".join(r + "\n" for r in records))
    ksk = run("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", "dane.example", cwd=d).strip()
    zsk = run("ldns-keygen", "-a", "ECDSAP256SHA256", "dane.example", cwd=d).strip()
    signed = zone + ".signed"
    run("ldns-signzone", "-f", signed, zone, ksk, zsk, cwd=d)
    return signed, os.path.join(d, ksk + ".ds")


def tamper(signed, name, old, new):
    """Changes the rdata of one record after signing: its RRSIG no longer
    matches, and a validating resolver calls the answer bogus."""
    with open(signed) as f:
        lines = f.read().splitlines()
    hit = 0
    for i, line in enumerate(lines):
        fields = line.split()
        if fields and fields[0] == name and "TLSA" in fields and old in line:
            lines[i] = line.replace(old, new)
            hit += 1
    assert hit == 1, "record %s not found in the signed zone" % name
    with open(signed, "w") as f:
        f.write("\n".join(lines) + "\n")


class Unbound:
    """The unbound daemon serving a zone file authoritatively on a free
    port (UDP and TCP); it does not validate: the sender does."""

    def __init__(self, d, zones):
        self.port = free_port()
        conf = os.path.join(d, "unbound.conf")
        with open(conf, "w") as f:
            f.write("server:\n  interface: 127.0.0.1\n  port: %d\n  do-ip6: no\n"
                    "  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n"
                    "  directory: \"%s\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n"
                    "  verbosity: 1\n  access-control: 127.0.0.0/8 allow\n"
                    "  module-config: \"iterator\"\n"
                    "remote-control:\n  control-enable: no\n"
                    % (self.port, d))
            for name, path in zones:
                f.write("auth-zone:\n  name: \"%s\"\n  zonefile: \"%s\"\n"
                        "  for-downstream: yes\n  for-upstream: yes\n  fallback-enabled: no\n"
                        % (name, path))
        self.proc = Proc(shutil.which("unbound") or "/usr/sbin/unbound", ["-d", "-c", conf],
                         tmpdir=d)

        def answers():
            if not self.proc.alive():
                raise AssertionError("unbound exited: " + self.proc.output())
            # drill comes with ldnsutils, like the signing tools.
            try:
                r = subprocess.run(["drill", "-p", str(self.port), "ns.dane.example",
                                    "@127.0.0.1", "A"], capture_output=True, text=True,
                                   timeout=5)
            except subprocess.TimeoutExpired:
                return False
            return re.search(r"^ns\.dane\.example\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1$",
                             r.stdout, re.M) is not None
        wait_for(answers, 20, "unbound answering on port %d" % self.port, interval=0.2)

    def stop(self):
        self.proc.stop()


class TestSenderDane(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpd = tempfile.TemporaryDirectory(prefix="sluice-sender-dane-")
        tmp = cls.tmpd.name
        for name in ("sink", "other", "zone"):
            os.mkdir(os.path.join(tmp, name))
        crt, key = make_cert(os.path.join(tmp, "sink"))
        other, _ = make_cert(os.path.join(tmp, "other"))
        cls.sink = start_sink(os.path.join(tmp, "sink"), ["--tls-cert", crt, "--tls-key", key])
        cls.plain = start_sink(os.path.join(tmp, "plainsink"))
        p, pp = cls.sink.port, cls.plain.port
        good, bad = spki_sha256(crt), spki_sha256(other)
        records = []
        for host in ("mx", "wrong", "bogus", "plain", "notlsa", "pkix"):
            records.append("%s IN A 127.0.0.1" % host)
        records += [
            "_%d._tcp.mx IN TLSA 3 1 1 %s" % (p, good),
            "_%d._tcp.wrong IN TLSA 3 1 1 %s" % (p, bad),
            "_%d._tcp.bogus IN TLSA 3 1 1 %s" % (p, good),
            "_%d._tcp.plain IN TLSA 3 1 1 %s" % (pp, good),
            "_%d._tcp.pkix IN TLSA 1 1 1 %s" % (p, bad),
        ]
        zdir = os.path.join(tmp, "zone")
        signed, anchor = sign_zone(zdir, records)
        # The bogus record keeps the sink's right digest but for one digit:
        # what fails is the signature, not the match.
        flipped = ("0" if good[0] != "0" else "1") + good[1:]
        tamper(signed, "_%d._tcp.bogus.dane.example." % p, good, flipped)
        # Insecure (unsigned) means no DANE, whatever the TLSA records say.
        unsigned = os.path.join(zdir, "unsigned.example.zone")
        with open(unsigned, "w") as f:
            f.write("$ORIGIN unsigned.example.\n$TTL 300\n"
                    "@ IN SOA ns.unsigned.example. hostmaster.unsigned.example. 1 3600 600 86400 60\n"
                    "@ IN NS ns.unsigned.example.\nns IN A 127.0.0.1\nmx IN A 127.0.0.1\n"
                    "_%d._tcp.mx IN TLSA 3 1 1 %s\n" % (p, bad))
        cls.dns = Unbound(zdir, [("dane.example.", signed), ("unsigned.example.", unsigned)])
        cls.anchor = anchor
        cls.metrics_port = free_port()
        extra = ("dns:\n  servers: [\"127.0.0.1:%d\"]\n  timeout: 1s\n  tries: 2\n"
                 "metrics: { listen: \"127.0.0.1:%d\" }\n" % (cls.dns.port, cls.metrics_port))
        cls.e = SenderEnv(tmp, extra_yaml=extra, workers=1)
        with open(cls.e.cfg) as f:
            text = f.read()
        text = text.replace("  instance_id: sender-t\n",
                            "  instance_id: sender-t\n  dane: true\n"
                            "  dane_resolver: 127.0.0.1:%d\n  dane_trust_anchor: %s\n"
                            % (cls.dns.port, anchor), 1)
        with open(cls.e.cfg, "w") as f:
            f.write(text)
        cls.e.start_sender()

    @classmethod
    def tearDownClass(cls):
        cls.e.stop()
        cls.sink.stop()
        cls.plain.stop()
        cls.dns.stop()
        cls.tmpd.cleanup()

    def metric(self, name):
        """The sum of a metric's samples on the sender's /metrics."""
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                    timeout=5) as r:
            text = r.read().decode()
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                   if l.startswith(name + "{") or l.startswith(name + " ")
                   or ("{" in name and l.startswith(name)))

    def test_dane(self):
        p, pp = self.sink.port, self.plain.port
        self.e.publish([
            dispatch("d-good", ["a@mx.dane.example"], "mx.dane.example:%d" % p, site="dane"),
            dispatch("d-wrong", ["b@wrong.dane.example"], "wrong.dane.example:%d" % p, site="dane"),
            dispatch("d-bogus", ["c@bogus.dane.example"], "bogus.dane.example:%d" % p, site="dane"),
            dispatch("d-plain", ["d@plain.dane.example"], "plain.dane.example:%d" % pp, site="dane"),
            dispatch("d-none", ["e@notlsa.dane.example"], "notlsa.dane.example:%d" % p, site="dane"),
            dispatch("d-insecure", ["f@unsigned.example"], "mx.unsigned.example:%d" % p,
                     site="dane"),
            dispatch("d-pkix", ["g@pkix.dane.example"], "pkix.dane.example:%d" % p, site="dane"),
        ])
        ids = {"d-good", "d-wrong", "d-bogus", "d-plain", "d-none", "d-insecure", "d-pkix"}
        ev = by_rcpt(self.e.wait_events(ids, 7, timeout=60))
        out = self.e.sender.output()

        g = ev["a@mx.dane.example"]
        self.assertEqual(g["type"], "DELIVERED", out)
        self.assertEqual(g["tls_policy"], "dane", out)
        self.assertIn(g["tls_protocol"], ("TLSv1.2", "TLSv1.3"))
        # A self-signed certificate no CA vouches for: verified by DANE-EE.
        self.assertIs(g["tls_verified"], True)
        self.assertEqual(g["tls_verify_result"], "ok")
        self.assertIn(["a@mx.dane.example"], [m["rcpt"] for m in self.sink.messages()])

        w = ev["b@wrong.dane.example"]
        self.assertEqual(w["type"], "DEFERRED", out)
        self.assertEqual(w["tls_policy"], "dane")
        self.assertIn("certificate verify failed", w["reply"])
        self.assertIn("TLSA", w["tls_failure"])

        b = ev["c@bogus.dane.example"]
        self.assertEqual(b["type"], "DEFERRED", out)
        self.assertEqual(b["tls_policy"], "dane")
        self.assertIn("DANE", b["reply"])
        self.assertIn("bogus", b["reply"])
        self.assertIn("bogus", b["tls_failure"])

        n = ev["d@plain.dane.example"]
        self.assertEqual(n["type"], "DEFERRED", out)
        self.assertEqual(n["tls_policy"], "dane")
        self.assertIn("TLS is required by DANE", n["reply"])
        self.assertIn("does not offer STARTTLS", n["reply"])
        self.assertEqual(self.plain.messages(), [])

        o = ev["e@notlsa.dane.example"]
        self.assertEqual(o["type"], "DELIVERED", out)
        self.assertEqual(o["tls_policy"], "opportunistic")
        u = ev["f@unsigned.example"]
        self.assertEqual(u["type"], "DELIVERED", out)
        self.assertEqual(u["tls_policy"], "opportunistic")
        self.assertIs(u["tls_verified"], False)

        # Only unusable records (PKIX-EE): TLS is mandatory, the
        # certificate is not checked against them.
        k = ev["g@pkix.dane.example"]
        self.assertEqual(k["type"], "DELIVERED", out)
        self.assertEqual(k["tls_policy"], "dane")
        self.assertIn(k["tls_protocol"], ("TLSv1.2", "TLSv1.3"))
        self.assertIs(k["tls_verified"], False)

        rcpts = [m["rcpt"] for m in self.sink.messages()]
        self.assertNotIn(["b@wrong.dane.example"], rcpts)
        self.assertNotIn(["c@bogus.dane.example"], rcpts)

        # The answers are cached sender-wide: another message to the same
        # MX host needs no new lookup.
        hits = self.metric("sluice_sender_dane_cache_hits_total") or 0
        self.assertGreaterEqual(self.metric('sluice_sender_dane_lookups_total{result="usable"'), 1)
        self.assertGreaterEqual(self.metric('sluice_sender_dane_lookups_total{result="failed"'), 1)
        self.e.publish([dispatch("d-again", ["h@mx.dane.example"], "mx.dane.example:%d" % p,
                                 site="dane")])
        a = self.e.wait_events({"d-again"}, 1)[0]
        self.assertEqual(a["type"], "DELIVERED", out)
        self.assertEqual(a["tls_policy"], "dane")
        self.assertEqual(self.metric("sluice_sender_dane_cache_hits_total"), hits + 1)

        # The libunbound contexts and their threads end with the workers:
        # a clean exit (and, in the sanitizer build, no report).
        rc = self.e.sender.stop(timeout=30)
        self.assertEqual(rc, 0, self.e.sender.output())
        self.assertNotIn("Sanitizer", self.e.sender.stderr())

    def test_unusable_trust_anchor_stops_the_sender(self):
        """A trust anchor that cannot be read, or is not one, is a
        configuration error: exit 2 with the file named, before any mail."""
        garbage = os.path.join(self.tmpd.name, "garbage.ds")
        with open(garbage, "w") as f:
            f.write("example. IN A 192.0.2.1 ; no key here\n")
        with open(self.e.cfg) as f:
            text = f.read()
        for anchor in (os.path.join(self.tmpd.name, "missing.ds"), garbage):
            path = os.path.join(self.tmpd.name, "bad-anchor.yaml")
            with open(path, "w") as f:
                f.write(text.replace(self.anchor, anchor).replace(
                    "metrics: { listen: \"127.0.0.1:%d\" }" % self.metrics_port, ""))
            p = Proc("sluice-sender", ["-c", path], tmpdir=self.tmpd.name, env=self.e.env)
            try:
                rc = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.stop()
                raise AssertionError("the sender did not stop: " + p.output())
            self.assertEqual(rc, 2, p.output())
            self.assertIn(anchor, p.stderr(), p.output())


if __name__ == "__main__":
    unittest.main()
