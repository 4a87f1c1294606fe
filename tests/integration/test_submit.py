"""Integration tests of sluice-submit, the SMTP submission relay, against a
real dev broker: STARTTLS and implicit TLS, AUTH PLAIN and LOGIN only over
TLS, the relay policy (530, 535/421, 550 5.7.1, 451 4.7.1), the strict
parser's rejections (nothing published), SIZE and recipient limits, the
451 when Kafka cannot acknowledge, and --hash-password.

Talks to it with Python's smtplib (and swaks when installed). Every test
gets its own broker, ports and config; jobs are read back with
`sluice events --jobs`."""

import base64
import json
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

from sluicetest import (Pipeline, Proc, bin_path, free_port, make_cert, run_sluice, start_devbroker,
                        wait_for, write_file)

DEADLINE = 60
PASSWORDS = {"alice": "correct horse battery", "bob": "b0b-secret", "carol": "carol pw"}
HASHES = {}


def hash_password(pw):
    r = subprocess.run([bin_path("sluice-submit"), "--hash-password"], input=pw + "\n",
                       capture_output=True, text=True, timeout=DEADLINE)
    if r.returncode != 0:
        raise AssertionError("--hash-password failed: %s" % r.stderr)
    return r.stdout.strip()


def submit_pipeline(case, tmp, extra="", control=False):
    """A Pipeline (see sluicetest) whose sluice-submit section listens with
    STARTTLS on a free port, with a fresh certificate and alice as its one
    user (domains=example.net); returns (port, pipeline)."""
    cert, key = make_cert(tmp)
    users = write_file(tmp, "users", "alice:%s domains=example.net\n"
                       % hash_password(PASSWORDS["alice"]))
    port = free_port()
    return port, Pipeline(case, tmp, "submit:\n  listen: [\"127.0.0.1:%d starttls\"]\n"
                          "  cert: %s\n  key: %s\n  users: %s\n" % (port, cert, key, users)
                          + extra, control=control)


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(frm="alice@example.net", to="x@example.com", subject="hello", body="Hi.\r\n"):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%f@example.net>\r\n\r\n%s"
            % (frm, to, subject, time.time(), body))


class SubmitCase(unittest.TestCase):
    extra_args = ()

    @classmethod
    def setUpClass(cls):
        if not HASHES:
            for user, pw in PASSWORDS.items():
                HASHES[user] = hash_password(pw)

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-submit-")
        self.tmp = self._tmp.name
        self.addCleanup(self._tmp.cleanup)
        self.broker, self.bootstrap = start_devbroker(self.tmp)
        self.addCleanup(self.broker.stop)  # also when setUp fails half way
        self.cert, self.key = make_cert(self.tmp)
        self.users = self.write("users", "\n".join([
            "# test users",
            "alice:%s tenant=acme pool=p1 domains=example.net,*.example.net" % HASHES["alice"],
            "bob:%s domains=example.org check_from=no" % HASHES["bob"],
            "carol:%s domains=example.com rate=2" % HASHES["carol"],
            ""]))
        self.p587, self.p465, self.pmetrics = free_port(), free_port(), free_port()
        self.cfg = self.write("sluice.yaml", (
            "kafka:\n  bootstrap: %s\n"
            "submit:\n"
            "  listen: [\"127.0.0.1:%d starttls\", \"127.0.0.1:%d tls\"]\n"
            "  cert: %s\n  key: %s\n  users: %s\n"
            "  max_message_size: 20000\n  max_recipients: 3\n"
            "  idle_timeout: 30s\n"
            "metrics: { listen: 127.0.0.1:%d }\n")
            % (self.bootstrap, self.p587, self.p465, self.cert, self.key, self.users,
               self.pmetrics))
        self.submit = self.start_submit()
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        if self.submit.alive():
            rc = self.submit.stop(timeout=20)
            self.assertEqual(rc, 0, self.submit.output())

    def start_submit(self, *extra):
        args = ["-c", self.cfg, "--hostname", "submit.test", "--ack-timeout", "3s",
                "--auth-fail-delay", "0"] + list(self.extra_args) + list(extra)
        proc = Proc("sluice-submit", args, tmpdir=self.tmp)
        self.addCleanup(proc.stop)

        def listening():
            if not proc.alive():
                raise AssertionError("sluice-submit exited early\n" + proc.output())
            for port in (self.p587, self.p465):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return False
            return True

        wait_for(listening, 20, "sluice-submit listening")
        return proc

    def write(self, name, text):
        return write_file(self.tmp, name, text)

    def sluice(self, *args, timeout=DEADLINE):
        return run_sluice(*args, timeout=timeout)

    def jobs(self):
        r = self.sluice("events", "-c", self.cfg, "--jobs")
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(line) for line in r.stdout.splitlines()]

    def smtp_587(self, login=None):
        c = smtplib.SMTP("127.0.0.1", self.p587, local_hostname="client.test", timeout=20)
        self.clients.append(c)
        c.ehlo()
        c.starttls(context=tls_ctx())
        c.ehlo()
        if login:
            c.login(login, PASSWORDS[login])
        return c

    def smtp_465(self, login=None):
        c = smtplib.SMTP_SSL("127.0.0.1", self.p465, local_hostname="client.test",
                             context=tls_ctx(), timeout=20)
        self.clients.append(c)
        c.ehlo()
        if login:
            c.user, c.password = login, PASSWORDS[login]
            code, resp = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
            self.assertEqual(code, 235, resp)
        return c

    def send(self, c, frm, rcpts, msg):
        """MAIL, RCPT..., DATA by hand; returns DATA's (code, text)."""
        code, resp = c.mail(frm)
        self.assertEqual(code, 250, resp)
        for r in rcpts:
            code, resp = c.rcpt(r)
            self.assertEqual(code, 250, resp)
        code, resp = c.data(msg.encode())
        return code, resp.decode()


class TestSubmit(SubmitCase):
    def test_starttls_auth_plain_splits_by_domain(self):
        c = smtplib.SMTP("127.0.0.1", self.p587, local_hostname="client.test", timeout=20)
        self.clients.append(c)
        code, _ = c.ehlo()
        self.assertEqual(code, 250)
        self.assertTrue(c.has_extn("starttls"))
        self.assertFalse(c.has_extn("auth"), "AUTH offered before TLS")
        c.starttls(context=tls_ctx())
        c.ehlo()
        self.assertEqual(c.esmtp_features.get("auth", "").split(), ["PLAIN", "LOGIN"])
        code, resp = c.login("alice", PASSWORDS["alice"])  # PLAIN: smtplib's first choice
        self.assertEqual(code, 235, resp)
        code, resp = self.send(c, "alice@example.net",
                               ["a@example.com", "b@Example.COM", "c@example.org"],
                               message(to="a@example.com"))
        self.assertEqual(code, 250, resp)
        self.assertTrue(resp.startswith("2.0.0 Ok: queued as "), resp)
        ids = resp.split("queued as ")[1].split()
        self.assertEqual(len(ids), 2, resp)
        for i in ids:
            self.assertEqual(len(i), 26)

        jobs = {j["key"]: j for j in self.jobs()}
        self.assertEqual(sorted(jobs), ["example.com", "example.org"])
        self.assertEqual(sorted(j["job_id"] for j in jobs.values()), sorted(ids))
        j = jobs["example.com"]
        self.assertEqual(j["domain"], "example.com")
        self.assertEqual(sorted(j["recipients"]), ["a@example.com", "b@example.com"])
        self.assertEqual(jobs["example.org"]["recipients"], ["c@example.org"])
        self.assertEqual(j["mail_from"], "alice@example.net")
        self.assertEqual((j["tenant"], j["pool"]), ("acme", "p1"))
        raw = j["raw"]
        self.assertTrue(raw.startswith("Received: from client.test ([127.0.0.1])"), raw)
        self.assertIn("by submit.test (sluice-submit)", raw)
        self.assertIn("with ESMTPSA", raw)
        self.assertIn("\r\nFrom: alice@example.net\r\n", raw)
        self.assertTrue(raw.endswith("\r\nHi.\r\n"), raw)
        self.assertEqual(jobs["example.org"]["raw"], raw)

        # ACCEPTED events follow the acknowledgement.
        r = self.sluice("events", "-c", self.cfg, "--json", "--type", "accepted")
        self.assertEqual(r.returncode, 0, r.stderr)
        ev = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual(sorted(e["recipient"] for e in ev),
                         ["a@example.com", "b@example.com", "c@example.org"])

        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.pmetrics,
                                         timeout=10).read().decode()
        self.assertIn('sluice_submit_messages_total{result="accepted"} 1\n', metrics)
        self.assertIn("sluice_submit_jobs_total 2\n", metrics)
        self.assertIn('sluice_submit_auth_total{result="ok"} 1\n', metrics)

    def test_implicit_tls_auth_login(self):
        c = self.smtp_465()
        self.assertIn("auth", c.esmtp_features)
        self.assertFalse(c.has_extn("starttls"))
        c.user, c.password = "alice", PASSWORDS["alice"]
        code, resp = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
        self.assertEqual(code, 235, resp)
        code, resp = self.send(c, "alice@mail.example.net", ["z@example.com"],
                               message(frm="Alice <alice@mail.example.net>"))
        self.assertEqual(code, 250, resp)
        [job] = self.jobs()
        self.assertEqual(job["job_id"], resp.split()[-1])
        self.assertIn("for <z@example.com>;", job["raw"])

    def test_mail_before_auth_is_530(self):
        c = self.smtp_587()
        code, resp = c.mail("alice@example.net")
        self.assertEqual((code, resp.decode()[:5]), (530, "5.7.0"))
        # Before TLS, too, and AUTH there is refused.
        p = smtplib.SMTP("127.0.0.1", self.p587, timeout=20)
        self.clients.append(p)
        p.ehlo()
        code, resp = p.mail("alice@example.net")
        self.assertEqual((code, resp.decode()[:5]), (530, "5.7.0"))
        code, resp = p.docmd("AUTH", "PLAIN AGFsaWNlAHg=")
        self.assertEqual(code // 100, 5, resp)
        self.assertEqual(self.jobs(), [])

    def test_wrong_password_535_then_421(self):
        c = self.smtp_587()
        # smtplib's login() would try PLAIN then LOGIN: two failures a call.
        for i in range(2):
            code, resp = c.docmd("AUTH", "PLAIN " + base64.b64encode(
                b"\0alice\0wrong password").decode())
            self.assertEqual((code, resp.decode()[:5]), (535, "5.7.8"))
        code, resp = c.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0nobody\0guess").decode())
        self.assertEqual(code, 421, resp)
        with self.assertRaises(smtplib.SMTPServerDisconnected):
            c.noop()
        # The password never reaches the log; the failure does.
        wait_for(lambda: "failed to authenticate as alice" in self.submit.stderr(), 5,
                 "auth failure logged")
        self.assertNotIn("wrong password", self.submit.stderr())
        self.assertNotIn("guess", self.submit.stderr())
        # A good password still works on a new connection.
        self.smtp_587(login="alice")

    def test_sender_domain_not_allowed(self):
        c = self.smtp_587(login="alice")
        code, resp = c.mail("alice@example.org")
        self.assertEqual((code, resp.decode()[:5]), (550, "5.7.1"))
        # The envelope is fine but the From header is not.
        code, resp = c.mail("alice@example.net")
        self.assertEqual(code, 250)
        c.rcpt("x@example.com")
        code, resp = c.data(message(frm="ceo@bank.example").encode())
        self.assertEqual((code, resp.decode()[:5]), (550, "5.7.1"))
        # check_from=no lets bob's From header through.
        b = self.smtp_465(login="bob")
        code, resp = self.send(b, "bob@example.org", ["y@example.com"],
                               message(frm="news@elsewhere.example"))
        self.assertEqual(code, 250, resp)
        self.assertEqual(len(self.jobs()), 1)

    def test_bare_lf_in_data_publishes_nothing(self):
        c = self.smtp_587(login="alice")
        c.mail("alice@example.net")
        c.rcpt("x@example.com")
        code, _ = c.docmd("DATA")
        self.assertEqual(code, 354)
        c.send(b"From: alice@example.net\r\nSubject: x\r\n\r\nline one\nline two\r\n.\r\n")
        code, resp = c.getreply()
        self.assertEqual(code // 100, 5, resp)
        # The session goes on and a clean message still works.
        code, resp = self.send(c, "alice@example.net", ["x@example.com"], message())
        self.assertEqual(code, 250, resp)
        [job] = self.jobs()
        self.assertNotIn("line one", job["raw"])

    def test_strict_commands_and_nul_in_data(self):
        # A command ending in a bare LF is refused and the connection closed.
        with socket.create_connection(("127.0.0.1", self.p587), timeout=10) as sk:
            self.assertTrue(sk.recv(512).startswith(b"220 "))
            sk.sendall(b"EHLO client.test\n")
            out = b""
            while True:
                chunk = sk.recv(512)
                if not chunk:
                    break
                out += chunk
            self.assertTrue(out.startswith(b"500 5.5.2"), out)
        # Over 512 octets is a 5xx too.
        c = self.smtp_587(login="alice")
        code, resp = c.docmd("NOOP", "x" * 600)
        self.assertEqual(code // 100, 5, resp)
        # A NUL inside DATA rejects the message.
        c = self.smtp_587(login="alice")
        c.mail("alice@example.net")
        c.rcpt("x@example.com")
        self.assertEqual(c.docmd("DATA")[0], 354)
        c.send(b"From: alice@example.net\r\n\r\nnul \x00 here\r\n.\r\n")
        code, resp = c.getreply()
        self.assertEqual(code // 100, 5, resp)
        self.assertEqual(self.jobs(), [])

    def test_size_and_recipient_limits(self):
        c = self.smtp_587(login="alice")
        self.assertEqual(c.esmtp_features.get("size"), "20000")
        code, resp = c.mail("alice@example.net", ["SIZE=30000"])
        self.assertEqual(code, 552, resp)
        code, _ = c.mail("alice@example.net")
        self.assertEqual(code, 250)
        for i in range(3):
            self.assertEqual(c.rcpt("r%d@example.com" % i)[0], 250)
        code, resp = c.rcpt("r3@example.com")
        self.assertEqual(code, 452, resp)
        # Actual size over the limit, though undeclared.
        code, resp = c.data(message(body="x" * 900 + "\r\n") * 30)
        self.assertEqual(code, 552, resp)
        self.assertEqual(self.jobs(), [])

    def test_rate_limit_451(self):
        c = self.smtp_587(login="carol")
        for i in range(2):
            code, resp = self.send(c, "carol@example.com", ["x@example.net"],
                                   message(frm="carol@example.com"))
            self.assertEqual(code, 250, resp)
        code, resp = c.mail("carol@example.com")
        self.assertEqual((code, resp.decode()[:5]), (451, "4.7.1"))
        self.assertEqual(len(self.jobs()), 2)

    def test_kafka_down_451_within_timeout(self):
        c = self.smtp_587(login="alice")
        code, resp = self.send(c, "alice@example.net", ["x@example.com"], message())
        self.assertEqual(code, 250, resp)
        self.broker.kill()
        c.mail("alice@example.net")
        c.rcpt("y@example.com")
        t0 = time.monotonic()
        code, resp = c.data(message().encode())
        took = time.monotonic() - t0
        self.assertEqual((code, resp.decode()[:5]), (451, "4.3.0"))
        self.assertLess(took, 8.0)
        self.assertGreater(took, 2.0)
        # Still serving: a new session is answered.
        self.smtp_587(login="alice").quit()
        self.assertEqual(self.submit.stop(timeout=30), 0, self.submit.output())

    def test_sighup_reloads_users(self):
        with open(self.users, "a") as f:
            f.write("dave:%s domains=example.com\n" % HASHES["bob"])
        self.submit.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded 4 users" in self.submit.stderr(), 10, "users reloaded")
        c = smtplib.SMTP_SSL("127.0.0.1", self.p465, context=tls_ctx(), timeout=20)
        self.clients.append(c)
        code, resp = c.login("dave", PASSWORDS["bob"])
        self.assertEqual(code, 235, resp)
        # A broken file keeps the old table.
        with open(self.users, "a") as f:
            f.write("eve:nohash\n")
        self.submit.send_signal(signal.SIGHUP)
        wait_for(lambda: "not reloaded" in self.submit.stderr(), 10, "reload refused")
        self.smtp_587(login="alice")

    def test_swaks_submission(self):
        if not shutil.which("swaks"):
            self.skipTest("swaks not installed")
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.p587),
                            "--tls", "--auth", "LOGIN", "--auth-user", "alice",
                            "--auth-password", PASSWORDS["alice"], "--from", "alice@example.net",
                            "--to", "s@example.com", "--header", "From: alice@example.net",
                            "--ehlo", "swaks.test"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("250 2.0.0 Ok: queued as", r.stdout)
        [job] = self.jobs()
        self.assertEqual(job["recipients"], ["s@example.com"])


class TestHashPassword(unittest.TestCase):
    def test_round_trip(self):
        h = hash_password("s3cret pass")
        self.assertTrue(h.startswith("$argon2id$v=19$"), h)
        self.assertNotEqual(h, hash_password("s3cret pass"), "salt must differ")
        r = subprocess.run([bin_path("sluice-submit"), "--hash-password"], input="",
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 2)

    def test_bad_users_file_exits_2(self):
        with tempfile.TemporaryDirectory() as d:
            users = write_file(d, "users",
                               "alice:$argon2id$v=19$x domains=example.net\nbob:plain\n")
            cfg = write_file(d, "s.yaml", "kafka:\n  bootstrap: 127.0.0.1:1\nsubmit:\n"
                             "  listen: [\"127.0.0.1:%d plain\"]\n  users: %s\n"
                             % (free_port(), users))
            r = subprocess.run([bin_path("sluice-submit"), "-c", cfg], capture_output=True,
                               text=True, timeout=DEADLINE)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("users:2", r.stderr)


if __name__ == "__main__":
    unittest.main()
