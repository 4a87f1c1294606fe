"""VERP and the inbound role (issue #18), end to end with real processes.

A dev broker (one partition, so the scheduler's feedback stage reads the
events in the order they were published), sluice-scheduler and
sluice-sender with VERP on deliver to a sluice-testsink; the return paths
the sink received are real tokens. A real SMTP client (smtplib) then sends
to sluice-inbound what receivers send later: a DSN to one return path and
an ARF report to the feedback-loop mailbox. Both addresses end up
suppressed for the tenant (the next job to each is SUPPRESSED) and the
BOUNCED and COMPLAINED events are there. A bounce whose token was minted
with another key is accepted and ignored (the address is not suppressed), a
delayed DSN publishes nothing, RCPT to a foreign domain is refused (never a
relay), and a mail to unsub+TOKEN publishes UNSUBSCRIBED.
"""

import base64
import hashlib
import hmac
import os
import smtplib
import subprocess
import tempfile
import unittest

from sluicetest import Proc, bin_path, free_port, start_sink, wait_for, wait_listening
from sluicetest import dump_topic, read_first_line, sched_tool, write_file

TENANT = "acme"
KEY = b"inbound-test-key-0123456789abcdef"
FINAL = {"DELIVERED", "BOUNCED", "EXPIRED", "SUPPRESSED", "REJECTED", "CANCELLED"}
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "inbound")


def mint(key, purpose, fields):
    """common/token.c's format: lowercase unpadded base32 of payload || the
    first 10 bytes of HMAC-SHA256(key, purpose NUL payload)."""
    payload = "\x1f".join(fields).encode()
    tag = hmac.new(key, purpose.encode() + b"\0" + payload, hashlib.sha256).digest()[:10]
    return base64.b32encode(payload + tag).decode().lower().rstrip("=")


def token_fields(tok):
    raw = base64.b32decode(tok.upper() + "=" * (-len(tok) % 8))
    return raw[:-10].decode().split("\x1f")


def dsn(return_path, rcpt, action="failed", status="5.1.1",
        diag="550 5.1.1 <%s>: Recipient address rejected: User unknown"):
    """A DSN shaped like Postfix's (tests/data/inbound/dsn-postfix.eml)."""
    return ("From: MAILER-DAEMON@mx.x.test (Mail Delivery System)\n"
            "To: %s\n"
            "Subject: Undelivered Mail Returned to Sender\n"
            "MIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
            "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
            "--B\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; mx.x.test\n\n"
            "Final-Recipient: rfc822; %s\nAction: %s\nStatus: %s\n"
            "Diagnostic-Code: smtp; %s\n\n"
            "--B\nContent-Type: text/rfc822-headers\n\n"
            "Return-Path: <%s>\nTo: %s\nSubject: news\n\n"
            "--B--\n" % (return_path, rcpt, action, status,
                         diag % rcpt if "%s" in diag else diag, return_path, rcpt))


def arf(return_path, rcpt):
    """An ARF report shaped like Yahoo's (tests/data/inbound/arf-yahoo.eml)."""
    with open(os.path.join(DATA, "arf-yahoo.eml")) as f:
        text = f.read()
    return (text.replace("bounce+abcdef@bounce.example.net", return_path)
            .replace("reader@yahoo.com", rcpt)
            .replace("fbl@fbl.example.net", "fbl@fbl.test"))


class TestInbound(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-inbound-")
        self.tmp = self._tmp.name
        self.sink = start_sink(self.tmp)
        self.addCleanup(self.sink.stop)
        self.keyfile = write_file(self.tmp, "token.key", KEY.decode() + "\n")
        pre = write_file(self.tmp, "broker.yaml", self.base("127.0.0.1:1"))
        port_file = os.path.join(self.tmp, "broker.port")
        self.broker = Proc("sluice-devbroker", ["-c", pre, "--port-file", port_file],
                           tmpdir=self.tmp)
        self.addCleanup(self.broker.stop)
        bootstrap = wait_for(lambda: read_first_line(port_file), 20, "devbroker port file")
        self.port = free_port()
        self.cfg = write_file(self.tmp, "sluice.yaml", self.base(bootstrap))
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop(30)
        self._tmp.cleanup()

    def base(self, bootstrap):
        return ("kafka:\n  bootstrap: \"%s\"\n  topic_prefix: inb.\n  partitions: 1\n"
                "  session_timeout_ms: 6000\n  heartbeat_interval_ms: 1000\n"
                "  commit_interval_ms: 200\n"
                "routes:\n  \"*\": %s\n"
                "pools:\n  default:\n    - { ip: 127.0.0.1, ehlo: localhost }\n"
                "shaping:\n  default: { max_message_rate: 10000/s, max_connections: 10 }\n"
                "retry: { delays: [1m, 5m], expiry: 1h }\n"
                "sender:\n  instance_id: sender-inb\n"
                "tokens:\n  secret_file: %s\n"
                "verp:\n  domain: Bounce.Test\n  tenants: { beta: bounce.beta.test }\n"
                "inbound:\n  listen: [\"127.0.0.1:%d\"]\n  fbl: [fbl@fbl.test]\n"
                % (bootstrap, self.sink.address, self.keyfile, getattr(self, "port", 1)))

    def produce(self, to, job):
        sched_tool("produce", "-c", self.cfg, "--to", to, "--tenant", TENANT, "--id", job)

    def logs(self):
        return "".join(p.output()[-3000:] for p in self.procs)

    def wait_events(self, pred, n, what):
        def got():
            ev = [r.get("event", {}) for r in dump_topic(self.cfg, "events")]
            ev = [e for e in ev if pred(e)]
            return ev if len(ev) >= n else None
        return wait_for(got, 40, "%s\n%s" % (what, self.logs()), interval=0.3)

    def final(self, job_id):
        return self.wait_events(lambda e: e.get("job_id") == job_id and e.get("type") in FINAL,
                                1, "a final event of " + job_id)[0]

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=20)
        self.addCleanup(s.close)
        s.ehlo("mx.x.test")
        return s

    def send(self, rcpt, text, sender=""):
        s = self.smtp()
        s.sendmail(sender, [rcpt], text.replace("\r\n", "\n").replace("\n", "\r\n").encode())
        s.quit()

    def test_verp_bounce_complaint_unsubscribe(self):
        for name in ("scheduler", "sender", "inbound"):
            self.procs.append(Proc("sluice-" + name, ["-c", self.cfg], tmpdir=self.tmp))
        wait_listening(self.procs[2], self.port, "sluice-inbound")

        # VERP: one job, two recipients, one transaction each with its own
        # return path, a token of the tenant, job id and recipient.
        self.produce("alice@x.test,bob@x.test", "j1")
        msgs = self.sink.wait_messages(2, 40)
        paths = {}
        for m in msgs:
            rcpt = m["rcpt"] if isinstance(m["rcpt"], str) else m["rcpt"][0]
            self.assertEqual(len(m["rcpt"]) if isinstance(m["rcpt"], list) else 1, 1, m)
            local, _, domain = m["from"].rpartition("@")
            self.assertEqual(domain, "bounce.test", m)
            self.assertTrue(local.startswith("bounce+"), m)
            self.assertEqual(token_fields(local[len("bounce+"):]), [TENANT, "j1-0", rcpt], m)
            paths[rcpt] = m["from"]
        self.assertEqual(set(paths), {"alice@x.test", "bob@x.test"})
        self.wait_events(lambda e: e.get("job_id") == "j1-0" and e.get("type") == "DELIVERED",
                         2, "both recipients DELIVERED")
        # A tenant with its own bounce domain (verp.tenants).
        sched_tool("produce", "-c", self.cfg, "--to", "erin@x.test", "--tenant", "beta",
                  "--id", "j5")
        m = wait_for(lambda: [m for m in self.sink.messages() if "erin@x.test" in m["rcpt"]],
                     40, "erin's message at the sink")[0]
        local, _, domain = m["from"].rpartition("@")
        self.assertEqual(domain, "bounce.beta.test", m)
        self.assertEqual(token_fields(local[len("bounce+"):]), ["beta", "j5-0", "erin@x.test"])
        # sluice-inbound serves that domain too.
        b_path = m["from"]

        # No relay: a foreign domain is refused, and so is an unknown
        # mailbox in ours.
        s = self.smtp()
        s.mail("")
        code, text = s.rcpt("victim@example.com")
        self.assertEqual(code, 550, text)
        self.assertIn(b"5.7.1", text)
        code, text = s.rcpt("postmaster2@bounce.test")
        self.assertEqual(code, 550, text)
        self.assertIn(b"5.1.1", text)
        code, text = s.rcpt(paths["alice@x.test"])
        self.assertEqual(code, 250, text)
        code, text = s.rcpt(b_path)
        self.assertEqual(code, 250, text)
        s.rset()
        s.quit()

        # A forged bounce (a token minted with another key) for carol, and a
        # delayed DSN for her with a real token: accepted, both ignored.
        forged = "bounce+%s@bounce.test" % mint(b"not-the-key-0123456789", "verp",
                                                 [TENANT, "j9-0", "carol@x.test"])
        self.send(forged, dsn(forged, "carol@x.test"))
        real_carol = "bounce+%s@bounce.test" % mint(KEY, "verp", [TENANT, "j9-0", "carol@x.test"])
        self.send(real_carol, dsn(real_carol, "carol@x.test", action="delayed", status="4.4.1",
                                  diag="451 4.4.1 timed out"))

        # The DSN for alice, the ARF report about bob to the FBL mailbox.
        self.send(paths["alice@x.test"], dsn(paths["alice@x.test"], "alice@x.test"))
        self.send("fbl@fbl.test", arf(paths["bob@x.test"], "bob@x.test"))

        # An unsubscribe by mail.
        unsub = "unsub+%s@bounce.test" % mint(KEY, "unsub",
                                              [TENANT, "dave@x.test", "winter", "news", "j7-0"])
        self.send(unsub, "From: dave@x.test\nTo: %s\nSubject: unsubscribe\n\nunsubscribe\n" % unsub,
                  sender="dave@x.test")

        b = self.wait_events(lambda e: e.get("type") == "BOUNCED" and e.get("stage") == "inbound",
                             1, "the inbound BOUNCED event")
        self.assertEqual(len(b), 1, b)
        self.assertEqual(b[0]["job_id"], "j1-0")
        self.assertEqual(b[0]["tenant"], TENANT)
        self.assertEqual(b[0]["recipient"], "alice@x.test")
        self.assertTrue(b[0].get("bounce_hard"), b[0])
        self.assertEqual(b[0]["bounce_class"], "invalid-recipient")
        self.assertEqual(b[0]["enhanced_code"], "5.1.1")
        c = self.wait_events(lambda e: e.get("type") == "COMPLAINED", 1, "the COMPLAINED event")
        self.assertEqual((c[0]["job_id"], c[0]["tenant"], c[0]["recipient"]),
                         ("j1-0", TENANT, "bob@x.test"))
        u = self.wait_events(lambda e: e.get("type") == "UNSUBSCRIBED", 1,
                             "the UNSUBSCRIBED event")
        self.assertEqual((u[0]["job_id"], u[0]["tenant"], u[0]["recipient"], u[0]["campaign"]),
                         ("j7-0", TENANT, "dave@x.test", "winter"))
        self.assertEqual(u[0].get("meta", {}).get("list"), "news", u[0])

        # Suppressed for the tenant: the next job to each stops there.
        want = {"%s/alice@x.test" % TENANT, "%s/bob@x.test" % TENANT}
        sup = wait_for(lambda: (lambda s: s if want <= s else None)(
            {r["key"] for r in dump_topic(self.cfg, "suppressions")}), 30, "alice and bob suppressed")
        self.assertNotIn("%s/carol@x.test" % TENANT, sup)
        self.produce("alice@x.test", "j2")
        self.produce("bob@x.test", "j3")
        self.produce("carol@x.test", "j4")
        self.assertEqual(self.final("j2-0")["type"], "SUPPRESSED")
        self.assertEqual(self.final("j3-0")["type"], "SUPPRESSED")
        self.assertEqual(self.final("j4-0")["type"], "DELIVERED")
        # Nothing was published for carol: the forged and the delayed DSN.
        ev = [r.get("event", {}) for r in dump_topic(self.cfg, "events")]
        self.assertEqual([e for e in ev if e.get("recipient") == "carol@x.test" and
                          e.get("stage") == "inbound"], [])
        self.assertIn("token does not open", self.procs[2].output())
        for p in reversed(self.procs):
            self.assertEqual(p.stop(30), 0, p.output()[-3000:])

    def test_bad_key_exits_2(self):
        """A sender with VERP on and sluice-inbound refuse to start on a key
        file that is missing or too short, naming the file, never the key."""
        short = write_file(self.tmp, "short.key", "tiny-secret\n")
        for key in (short, os.path.join(self.tmp, "missing.key")):
            cfg = write_file(self.tmp, "bad.yaml", open(self.cfg).read().replace(self.keyfile, key))
            for name in ("sluice-sender", "sluice-inbound"):
                r = subprocess.run([bin_path(name), "-c", cfg], capture_output=True, text=True,
                                   timeout=30)
                self.assertEqual(r.returncode, 2, (name, r.stdout, r.stderr))
                self.assertIn("tokens.secret_file", r.stderr, (name, r.stderr))
                self.assertIn(key, r.stderr, (name, r.stderr))
                self.assertNotIn("tiny-secret", r.stdout + r.stderr)
        # Without any domain to serve, sluice-inbound says so.
        cfg = write_file(self.tmp, "nodomain.yaml", open(self.cfg).read()
                         .replace("verp:\n  domain: Bounce.Test\n  tenants: { beta: bounce.beta.test }\n", "")
                         .replace("  fbl: [fbl@fbl.test]\n", ""))
        r = subprocess.run([bin_path("sluice-inbound"), "-c", cfg], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("inbound.domains", r.stderr)


if __name__ == "__main__":
    unittest.main()
