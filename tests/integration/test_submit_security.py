"""Security checks of sluice-submit with tools written by others: openssl
s_client (only TLS 1.2 and 1.3 on 587 and 465), swaks with raw DATA (SMTP
smuggling never yields a second message), raw sockets (bytes pipelined
after STARTTLS are discarded, CR/LF inside MAIL/RCPT parameters refused)
and a crowd of idle connections that must not stop a legitimate session.

The full-size runs (testssl.sh scans, 10,000 idle connections) are too slow
for ctest; they run when SLUICE_SECURITY_FULL=1 (scripts/security.sh)."""

import json
import os
import re
import resource
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

from sluicetest import wait_for
from test_submit import PASSWORDS, SubmitCase, message, tls_ctx

FULL = os.environ.get("SLUICE_SECURITY_FULL") == "1"
# ctest opens 2,000 idle sessions (more than the engine's old fixed cap of
# 1,000, which turned every client away); SLUICE_SECURITY_FULL=1 opens the
# 10,000 of the security checks.
IDLE_CONNECTIONS = int(os.environ.get("SLUICE_SECURITY_IDLE", "10000" if FULL else "2000"))
AUTH_PLAIN_ALICE = "AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ=="  # \0alice\0correct horse battery


def raise_nofile(want):
    """Raise our soft RLIMIT_NOFILE for the crowd's sockets (sluice-submit
    raises its own to the hard limit). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_reply(f):
    """One (multi-line) SMTP reply from a file object: (code, text)."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed after %r" % lines)
        lines.append(line.decode(errors="replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return int(lines[-1][:3]), "\n".join(lines)


def greeted(case, s, ehlo):
    """Take the greeting on the connected socket s and say EHLO ehlo (s is
    closed at case's cleanup); returns the socket's reading file."""
    case.addCleanup(s.close)
    f = s.makefile("rb")
    case.assertEqual(read_reply(f)[0], 220)
    s.sendall(b"EHLO " + ehlo + b"\r\n")
    case.assertEqual(read_reply(f)[0], 250)
    return f


def authed_tls(case, port, ehlo=b"raw.test"):
    """A raw TLS socket on an implicit-TLS port, past EHLO and authenticated
    as alice (closed at case's cleanup); (sock, file)."""
    s = tls_ctx().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    f = greeted(case, s, ehlo)
    s.sendall(b"AUTH PLAIN " + AUTH_PLAIN_ALICE.encode() + b"\r\n")
    case.assertEqual(read_reply(f)[0], 235)
    return s, f


class SecurityCase(SubmitCase):
    max_per_ip = 100000

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.nofile = raise_nofile(IDLE_CONNECTIONS + 2000)

    def start_submit(self, *extra):
        # One client IP opens the crowd: lift the per-IP cap in the config.
        with open(self.cfg) as f:
            text = f.read()
        if "max_connections_per_ip" not in text:
            text = text.replace("  idle_timeout: 30s\n", "  idle_timeout: 30s\n"
                                "  max_connections_per_ip: %d\n" % self.max_per_ip)
            with open(self.cfg, "w") as f:
                f.write(text)
        return super().start_submit(*extra)

    def authed_tls(self, port=None):
        """A raw TLS socket on 465, authenticated as alice; (sock, file)."""
        return authed_tls(self, port or self.p465)

    def metric(self, name):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.pmetrics,
                                      timeout=10).read().decode()
        m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
        return float(m.group(1)) if m else 0.0


class TestTlsVersions(SecurityCase):
    def s_client(self, port, version, starttls):
        args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-brief",
                "-servername", "localhost", version]
        if version in ("-tls1", "-tls1_1"):
            args += ["-cipher", "DEFAULT@SECLEVEL=0"]  # let the client offer it
        if starttls:
            args += ["-starttls", "smtp"]
        r = subprocess.run(args, input=b"", capture_output=True, timeout=20)
        out = (r.stdout + r.stderr).decode(errors="replace")
        m = re.search(r"Protocol version: (\S+)", out)
        return m.group(1) if m else None, out

    def test_only_tls12_and_tls13(self):
        for port, starttls in ((self.p587, True), (self.p465, False)):
            for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
                got, out = self.s_client(port, flag, starttls)
                self.assertEqual(got, want, "port %d %s:\n%s" % (port, flag, out))
            for flag in ("-tls1", "-tls1_1"):
                got, out = self.s_client(port, flag, starttls)
                self.assertIsNone(got, "port %d accepted %s:\n%s" % (port, flag, out))
        # The server is still fine after the refused handshakes.
        self.smtp_587(login="alice").quit()


class TestSmuggling(SecurityCase):
    # The end-of-data lookalikes of the SMTP smuggling research
    # (SEC Consult, 2023): a receiver that takes any of them for the end of
    # DATA would run the MAIL FROM that follows as a second message.
    VARIANTS = {"lf-dot-lf": b"\n.\n", "cr-dot-cr": b"\r.\r", "lf-dot-crlf": b"\n.\r\n",
                "crlf-dot-cr": b"\r\n.\r", "crlf-dot-lf": b"\r\n.\n", "cr-dot-crlf": b"\r.\r\n"}

    def test_smuggled_second_message_never_sent(self):
        if not shutil.which("swaks"):
            self.skipTest("swaks not installed")
        for name, eod in self.VARIANTS.items():
            data = (b"From: alice@example.net\r\nTo: a@example.com\r\nSubject: smuggle "
                    + name.encode() + b"\r\n\r\nfirst\r\n" + eod
                    + b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<victim@example.org>\r\n"
                    b"DATA\r\nFrom: alice@example.net\r\nSubject: smuggled\r\n\r\nsecond\r\n.")
            path = self.write("data-" + name, "")
            with open(path, "wb") as f:
                f.write(data)
            r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.p465),
                                "--tlsc", "--auth", "PLAIN", "--auth-user", "alice",
                                "--auth-password", PASSWORDS["alice"],
                                "--from", "alice@example.net", "--to", "a@example.com",
                                "--data", "@" + path, "--no-data-fixup", "--ehlo", "swaks.test"],
                               capture_output=True, timeout=30)
            out = r.stdout.decode(errors="replace")
            # --no-data-fixup sends the file as it is plus one CRLF, so the
            # file carries its own final dot: one message holding a bare CR
            # or LF, which the strict framing rejects.
            self.assertRegex(out, r"<~?\*+ 5\d\d ", "%s:\n%s" % (name, out))
            self.assertIn(" 221 ", out, "%s: the session did not end cleanly:\n%s" % (name, out))
            self.assertNotIn("queued as", out, name)
        jobs = self.jobs()
        self.assertEqual(jobs, [], "smuggling produced messages: %r"
                         % [(j["recipients"], j["raw"][-60:]) for j in jobs])
        self.assertEqual(self.metric('sluice_submit_messages_total{result="accepted"}'), 0)
        # A clean message still goes through afterwards.
        code, resp = self.send(self.smtp_465(login="alice"), "alice@example.net",
                               ["ok@example.com"], message())
        self.assertEqual(code, 250, resp)
        [job] = self.jobs()
        self.assertEqual(job["recipients"], ["ok@example.com"])

    def test_pipelined_after_starttls_discarded(self):
        raw = socket.create_connection(("127.0.0.1", self.p587), timeout=10)
        f = greeted(self, raw, b"raw.test")
        # Everything after STARTTLS in the same packet is plaintext an
        # attacker in the path could have added (CVE-2011-0411).
        raw.sendall(b"STARTTLS\r\nAUTH PLAIN " + AUTH_PLAIN_ALICE.encode()
                    + b"\r\nMAIL FROM:<alice@example.net>\r\nQUIT\r\n")
        code, text = read_reply(f)
        self.assertEqual(code, 220, text)
        s = tls_ctx().wrap_socket(raw)
        self.addCleanup(s.close)
        tf = s.makefile("rb")
        s.sendall(b"EHLO raw.test\r\n")
        code, text = read_reply(tf)
        self.assertEqual(code, 250, text)
        self.assertIn("AUTH PLAIN LOGIN", text, "the first reply after TLS is not EHLO's")
        # Not authenticated by the injected AUTH, and no MAIL was started.
        s.sendall(b"MAIL FROM:<alice@example.net>\r\n")
        code, text = read_reply(tf)
        self.assertEqual(code, 530, text)
        s.sendall(b"NOOP\r\n")
        self.assertEqual(read_reply(tf)[0], 250)

    def test_crlf_in_mail_and_rcpt_parameters_refused(self):
        cases = [
            b"MAIL FROM:<alice@example.net> BODY=8BITMIME\rRCPT TO:<evil@example.org>\r\n",
            b"MAIL FROM:<alice@example.net> SIZE=100\nRCPT TO:<evil@example.org>\r\n",
            b"MAIL FROM:<alice@example.net\r>\r\n",
            b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<a@example.com> NOTIFY=NEVER\rDATA\r\n",
            b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<a@example.com\n> ORCPT=rfc822;x\r\n",
        ]
        for raw in cases:
            s, f = self.authed_tls()
            s.sendall(raw)
            replies = []
            try:
                while True:
                    replies.append(read_reply(f))
            except (ConnectionError, OSError):
                pass
            codes = [c for c, _ in replies]
            self.assertTrue(codes and codes[-1] == 500 and "Bare" in replies[-1][1],
                            "%r -> %r" % (raw, replies))
            self.assertNotIn(354, codes, raw)
            # Only the well-formed MAIL before the bad line may have been taken.
            self.assertLessEqual(len(codes), 2, raw)
        self.assertEqual(self.jobs(), [])


class TestIdleCrowd(SecurityCase):
    def test_idle_connections_do_not_block_a_session(self):
        n = IDLE_CONNECTIONS
        if self.nofile < n + 500:
            self.skipTest("RLIMIT_NOFILE %d too low for %d connections" % (self.nofile, n))
        socks = []
        self.addCleanup(lambda: [x.close() for x in socks])
        # The start-up probes (a connection to each port) must be gone from
        # the sessions gauge first, or the crowd counts them too.
        wait_for(lambda: self.metric("sluice_submit_sessions") == 0, 20, "probe sessions closed")
        t0 = time.monotonic()
        # Spread the sources over 127.0.0.x so no source port range runs out.
        for i in range(n):
            sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sk.bind(("127.0.0.%d" % (2 + i % 200), 0))
            sk.settimeout(10)
            sk.connect(("127.0.0.1", self.p587))
            socks.append(sk)
        opened = time.monotonic() - t0
        # Wait until every connection is a session, or until the count
        # stops moving (the ones over a cap were answered 421 and closed).
        seen = {"v": -1, "t": time.monotonic()}

        def settled():
            self.assertTrue(self.submit.alive(), self.submit.output())
            v = self.metric("sluice_submit_sessions")
            if v != seen["v"]:
                seen["v"], seen["t"] = v, time.monotonic()
            return v >= n or time.monotonic() - seen["t"] > 3
        wait_for(settled, 60, "%d sessions open" % n)
        sessions = int(seen["v"])
        refused = sum(1 for sk in socks if self.refused(sk, sessions < n))

        t0 = time.monotonic()
        try:
            c = self.smtp_587(login="alice")
            code, resp = self.send(c, "alice@example.net", ["crowd@example.com"], message())
            c.quit()
        except (smtplib.SMTPException, OSError) as e:
            code, resp = None, repr(e)
        took = time.monotonic() - t0
        print("\nidle-crowd: %d connections opened in %.2fs, %d sessions, %d answered 421;"
              " STARTTLS+AUTH+send: %s %s in %.3fs"
              % (n, opened, sessions, refused, code, str(resp)[:60], took),
              flush=True)
        self.assertEqual(code, 250, resp)
        self.assertEqual((sessions, refused), (n, 0), "connections refused")
        # Blocked behind the crowd, the session would wait for idle_timeout
        # (30 s) to free a slot; the bound stays well below that, and well
        # above what a loaded machine takes for STARTTLS, AUTH and one send.
        self.assertLess(took, 15.0, "the session waited behind the idle crowd")
        self.assertEqual(len(self.jobs()), 1)

    @staticmethod
    def refused(sk, look):
        """True if the server answered sk with anything but its banner
        (a 421 for a connection over a cap). Only looks when told to."""
        if not look:
            return False
        sk.settimeout(0.5)
        try:
            banner = sk.recv(512)
        except socket.timeout:
            return False
        except OSError:
            return True
        return not banner.startswith(b"220 ")


@unittest.skipUnless(FULL, "testssl.sh scans run from scripts/security.sh")
class TestTestssl(SecurityCase):
    BAD = {"HIGH", "CRITICAL", "MEDIUM"}

    def scan(self, port, starttls):
        if not shutil.which("testssl"):
            self.skipTest("testssl.sh not installed")
        jf = os.path.join(self.tmp, "testssl-%d.json" % port)
        args = ["testssl", "--quiet", "--color", "0", "--warnings", "off", "--fast",
                "-p", "-s", "-U", "--nodns", "none", "--jsonfile", jf]
        if starttls:
            args += ["--starttls", "smtp"]
        args.append("127.0.0.1:%d" % port)
        t0 = time.monotonic()
        r = subprocess.run(args, capture_output=True, text=True, timeout=900)
        took = time.monotonic() - t0
        with open(jf) as f:
            findings = json.load(f)
        return findings, took, r.stdout

    def test_scans(self):
        for port, starttls, label in ((self.p587, True, "587 starttls"),
                                      (self.p465, False, "465 tls")):
            findings, took, out = self.scan(port, starttls)
            by_id = {x["id"]: x for x in findings}
            bad = [x for x in findings
                   if x.get("severity") in self.BAD or "VULNERABLE" in x.get("finding", "")
                   and "not vulnerable" not in x.get("finding", "")]
            offered = sorted(k for k in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")
                             if by_id.get(k, {}).get("finding", "").startswith("offered"))
            low = [(x["id"], x["severity"], x["finding"]) for x in findings
                   if x.get("severity") in ("LOW", "WARN")]
            print("\ntestssl %s: %.0fs, %d findings, protocols offered %s, bad %s, low/warn %s"
                  % (label, took, len(findings), offered,
                     [(x["id"], x["severity"], x["finding"]) for x in bad], low), flush=True)
            keep = os.environ.get("SLUICE_SECURITY_OUT")
            if keep:
                shutil.copy(os.path.join(self.tmp, "testssl-%d.json" % port),
                            os.path.join(keep, "testssl-%s.json" % label.split()[0]))
            self.assertEqual(bad, [], out)
            self.assertEqual(offered, ["TLS1_2", "TLS1_3"], out)


if __name__ == "__main__":
    unittest.main()
