"""Integration tests for sluice-testsink (and so for common/smtp_server over
real sockets): recording, STARTTLS, the fault rules, strict framing, the
counters. Talks to it with smtplib, raw sockets and swaks."""

import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

from sluicetest import Proc, bin_path, make_cert, start_sink, wait_for

MSG = ("From: a@x.test\r\nTo: b@y.test\r\nMessage-ID: <m-{n}@x.test>\r\n"
       "Subject: test {n}\r\n\r\n.leading dot\r\nbody {n}\r\n")


def raw_session(port, data, timeout=5.0, expect_close=True):
    """Send data after the banner; return everything the server said until
    it closed (or until timeout when expect_close is False)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        out += s.recv(4096)
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not expect_close and out.endswith(b"\r\n"):
                s.settimeout(0.3)
    finally:
        s.close()
    return out.decode("latin-1")


class SinkTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sluice-sink-test-")
        self.sinks = []

    def tearDown(self):
        try:
            for s in self.sinks:
                # A clean exit after SIGTERM, and nothing from the
                # sanitizers when built with them.
                rc = s.stop()
                err = s.proc.stderr()
                self.assertEqual(rc, 0, s.proc.output())
                self.assertNotIn("runtime error", err)
                self.assertNotIn("AddressSanitizer", err)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def sink(self, *args):
        s = start_sink(self.tmp, list(args))
        self.sinks.append(s)
        return s

    def smtp(self, sink, timeout=10):
        c = smtplib.SMTP(sink.host, sink.port, timeout=timeout)
        self.addCleanup(lambda: c.close())
        return c

    def test_records_message_and_log(self):
        sink = self.sink()
        c = self.smtp(sink)
        refused = c.sendmail("a@x.test", ["b@y.test", "c@y.test"], MSG.format(n=1))
        self.assertEqual(refused, {})
        c.sendmail("", ["d@y.test"], MSG.format(n=2))
        c.quit()
        msgs = sink.wait_messages(2)
        m = msgs[0]
        self.assertEqual(m["from"], "a@x.test")
        self.assertEqual(m["rcpt"], ["b@y.test", "c@y.test"])
        self.assertEqual(m["message_id"], "<m-1@x.test>")
        self.assertEqual(m["size"], len(MSG.format(n=1)))
        self.assertFalse(m["tls"])
        self.assertEqual(m["peer"].split(":")[0], "127.0.0.1")
        self.assertEqual(m["local"], "127.0.0.1:%d" % sink.port)
        self.assertEqual(msgs[1]["from"], "")
        with open(os.path.join(sink.dir, m["file"]), "rb") as f:
            data = f.read()
        head, _, body = data.partition(b"\r\n")
        self.assertEqual(head, b'X-Sink-Envelope: {"from":"a@x.test","rcpt":["b@y.test","c@y.test"]}')
        # Dot-unstuffed, exactly as the client meant it.
        self.assertEqual(body, MSG.format(n=1).encode())
        self.assertEqual(sorted(os.listdir(sink.dir)), ["00000001.eml", "00000002.eml"])

    def test_starttls(self):
        cert, key = make_cert(self.tmp)
        sink = self.sink("--tls-cert", cert, "--tls-key", key)
        c = self.smtp(sink)
        c.ehlo("client.test")
        self.assertTrue(c.has_extn("starttls"))
        self.assertFalse(c.has_extn("auth"))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        code, _ = c.starttls(context=ctx)
        self.assertEqual(code, 220)
        c.ehlo("client.test")
        self.assertFalse(c.has_extn("starttls"))
        c.sendmail("a@x.test", ["b@y.test"], MSG.format(n=3))
        c.quit()
        m = sink.wait_messages(1)[0]
        self.assertTrue(m["tls"])
        self.assertIn(m["tls_version"], ("TLSv1.2", "TLSv1.3"))

    def test_implicit_tls(self):
        cert, key = make_cert(self.tmp)
        sink = self.sink("--tls-cert", cert, "--tls-key", key, "--implicit-tls")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = smtplib.SMTP_SSL(sink.host, sink.port, context=ctx, timeout=10)
        self.addCleanup(c.close)
        c.sendmail("a@x.test", ["b@y.test"], MSG.format(n=4))
        c.quit()
        self.assertTrue(sink.wait_messages(1)[0]["tls"])

    def test_rcpt_faults(self):
        sink = self.sink()
        c = self.smtp(sink)
        refused = c.sendmail("a@x.test", ["ok@y.test", "tempfail1@y.test", "PermFail@y.test"],
                             MSG.format(n=5))
        self.assertEqual(refused["tempfail1@y.test"][0], 451)
        self.assertTrue(refused["tempfail1@y.test"][1].startswith(b"4.3.0"))
        self.assertEqual(refused["PermFail@y.test"][0], 550)
        self.assertTrue(refused["PermFail@y.test"][1].startswith(b"5.1.1"))
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            c.sendmail("a@x.test", ["permfail@y.test"], MSG.format(n=6))
        c.quit()
        msgs = sink.wait_messages(1)
        self.assertEqual(msgs[0]["rcpt"], ["ok@y.test"])
        self.assertEqual(len(sink.messages()), 1)

    def test_421_closes(self):
        sink = self.sink()
        out = raw_session(sink.port, b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<421@y.test>\r\n"
                                     b"RCPT TO:<b@y.test>\r\n")
        self.assertIn("421 4.7.0", out)
        self.assertNotIn("250 2.1.5", out)

    def test_datafail(self):
        sink = self.sink()
        c = self.smtp(sink)
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            c.sendmail("a@x.test", ["datafail@y.test"], MSG.format(n=7))
        self.assertEqual(cm.exception.smtp_code, 554)
        self.assertTrue(cm.exception.smtp_error.startswith(b"5.6.0"))
        # The connection stays usable.
        c.sendmail("a@x.test", ["b@y.test"], MSG.format(n=8))
        c.quit()
        self.assertEqual(len(sink.wait_messages(1)), 1)

    def test_slow(self):
        sink = self.sink()
        c = self.smtp(sink)
        t0 = time.monotonic()
        c.sendmail("a@x.test", ["slow400@y.test"], MSG.format(n=9))
        elapsed = time.monotonic() - t0
        c.quit()
        # RCPT and end of DATA both wait 400 ms.
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 8)

    def test_disconnect_and_noanswer(self):
        sink = self.sink()
        c = self.smtp(sink)
        with self.assertRaises(smtplib.SMTPServerDisconnected):
            c.sendmail("a@x.test", ["disconnect@y.test"], MSG.format(n=10))
        c2 = self.smtp(sink, timeout=1.0)
        t0 = time.monotonic()
        with self.assertRaises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
            c2.sendmail("a@x.test", ["noanswer@y.test"], MSG.format(n=11))
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        c2.close()
        self.assertEqual(sink.messages(), [])
        # The sink survives both and still accepts mail.
        c3 = self.smtp(sink)
        c3.sendmail("a@x.test", ["b@y.test"], MSG.format(n=12))
        c3.quit()
        sink.wait_messages(1)

    def test_greeting_421(self):
        sink = self.sink("--greeting", "421")
        with self.assertRaises(smtplib.SMTPConnectError) as cm:
            smtplib.SMTP(sink.host, sink.port, timeout=5)
        self.assertEqual(cm.exception.smtp_code, 421)

    def test_max_rcpt_and_flags(self):
        sink = self.sink("--max-rcpt", "2", "--no-pipelining", "--no-smtputf8")
        c = self.smtp(sink)
        c.ehlo("c")
        self.assertFalse(c.has_extn("pipelining"))
        self.assertFalse(c.has_extn("smtputf8"))
        self.assertTrue(c.has_extn("enhancedstatuscodes"))
        refused = c.sendmail("a@x.test", ["a@y.test", "b@y.test", "c@y.test"], MSG.format(n=13))
        self.assertEqual(refused["c@y.test"][0], 452)
        self.assertTrue(refused["c@y.test"][1].startswith(b"4.5.3"))
        c.quit()

    def test_rules_file(self):
        rules = os.path.join(self.tmp, "rules")
        with open(rules, "w") as f:
            f.write("# test rules\n"
                    "*@yahoo.test  rcpt 421 4.7.0 [TS01] deferred\n"
                    "bounce*@*     rcpt 550 5.1.1 no such account\n"
                    "*@spam.test   data 554 5.7.1 spam\n")
        sink = self.sink("--rules", rules)
        c = self.smtp(sink)
        refused = c.sendmail("a@x.test", ["bounce7@z.test", "ok@z.test"], MSG.format(n=14))
        self.assertEqual(refused["bounce7@z.test"], (550, b"5.1.1 no such account"))
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            c.sendmail("a@x.test", ["x@spam.test"], MSG.format(n=15))
        self.assertEqual(cm.exception.smtp_code, 554)
        with self.assertRaises((smtplib.SMTPRecipientsRefused, smtplib.SMTPServerDisconnected)):
            c.sendmail("a@x.test", ["x@yahoo.test"], MSG.format(n=16))
        self.assertEqual(len(sink.wait_messages(1)), 1)

    def test_bare_lf_rejected(self):
        sink = self.sink()
        out = raw_session(sink.port, b"EHLO c\nMAIL FROM:<a@x.test>\r\n")
        self.assertIn("500 5.5.2 Bare LF/CR not allowed", out)
        self.assertNotIn("250", out)
        # In DATA: a bare LF (even as "\n.\n") never ends the message and
        # the message is refused, not recorded.
        out = raw_session(sink.port, b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
                                     b"DATA\r\nx\n.\nMAIL FROM:<evil@x.test>\r\n.\r\nQUIT\r\n")
        self.assertIn("550 5.6.0", out)
        self.assertNotIn("250 2.0.0 Ok: queued", out)
        self.assertEqual(sink.messages(), [])

    @unittest.skipUnless(shutil.which("swaks"), "swaks not installed")
    def test_swaks_raw_bare_lf(self):
        sink = self.sink()
        data = os.path.join(self.tmp, "bare-lf.eml")
        with open(data, "wb") as f:
            # --no-data-fixup sends the bytes as they are, final dot included.
            f.write(b"Subject: bare\n\nline one\n.\nline two\r\n.\r\n")
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(sink.port),
                            "--from", "a@x.test", "--to", "b@y.test", "--data", "@" + data,
                            "--no-data-fixup", "--timeout", "10"],
                           capture_output=True, timeout=60, text=True, errors="replace")
        self.assertIn("550 5.6.0", r.stdout + r.stderr)
        self.assertEqual(sink.messages(), [])
        # And a well-formed message through swaks is accepted.
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(sink.port),
                            "--from", "a@x.test", "--to", "b@y.test", "--pipeline",
                            "--timeout", "10"],
                           capture_output=True, timeout=60, text=True, errors="replace")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        sink.wait_messages(1)

    def test_pipelined_batch(self):
        sink = self.sink()
        batch = (b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<permfail@y.test>\r\n"
                 b"DATA\r\nSubject: p\r\n\r\nhi\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\n"
                 b"DATA\r\nSubject: q\r\n\r\nho\r\n.\r\nQUIT\r\n")
        out = raw_session(sink.port, batch)
        codes = [line[:3] for line in out.split("\r\n") if line and line[3:4] == " "]
        self.assertEqual(codes, ["220", "250", "250", "250", "550", "354", "250", "250", "250",
                                 "354", "250", "221"])
        self.assertEqual([m["rcpt"] for m in sink.wait_messages(2)], [["b@y.test"], ["c@y.test"]])

    def test_idle_timeout(self):
        sink = self.sink("--idle-timeout", "300ms")
        out = raw_session(sink.port, b"EHLO c\r\n", timeout=10)
        self.assertIn("421 4.4.2", out)

    def test_counters_on_signals(self):
        sink = self.sink()
        c = self.smtp(sink)
        c.sendmail("a@x.test", ["b@y.test"], MSG.format(n=17))
        c.quit()
        sink.wait_messages(1)
        sink.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "messages=1" in sink.proc.stdout(), 10, "SIGUSR1 counters")
        self.assertTrue(sink.proc.alive())
        sink.stop()
        self.assertEqual(sink.proc.returncode, 0)
        self.assertEqual(sink.proc.stdout().count("messages=1"), 2)
        self.assertIn("connections=1 ", sink.proc.stdout())



class CaptureTest(unittest.TestCase):
    """`sluice capture` shares the engine; check it records in arrival order."""

    def test_capture_writes_sorted_files(self):
        try:
            bin_path("sluice")
        except AssertionError:
            self.skipTest("sluice not built")
        with tempfile.TemporaryDirectory(prefix="sluice-capture-test-") as tmp:
            maildir = os.path.join(tmp, "mail", "new")
            port_file = os.path.join(tmp, "port")
            with Proc("sluice", ["capture", "--listen", "127.0.0.1:0", "--dir", maildir,
                                 "--port-file", port_file], tmpdir=tmp) as p:
                wait_for(lambda: os.path.exists(port_file) or not p.alive(), 10, "capture port")
                self.assertTrue(p.alive(), p.output())
                with open(port_file) as f:
                    port = int(f.read())
                self.assertIn("writing messages to " + maildir, p.stdout())
                c = smtplib.SMTP("127.0.0.1", port, timeout=10)
                for n in range(5):
                    c.sendmail("a@x.test", ["b@y.test"], MSG.format(n=n))
                c.quit()
                names = wait_for(lambda: (lambda l: l if len(l) == 5 else None)(
                    sorted(x for x in os.listdir(maildir) if x.endswith(".eml"))),
                    10, "5 captured files")
                for n, name in enumerate(names):
                    with open(os.path.join(maildir, name), "rb") as f:
                        data = f.read()
                    self.assertIn(("Subject: test %d\r\n" % n).encode(), data)
                    self.assertTrue(data.startswith(b"X-Sluice-Envelope: {"))
                self.assertEqual(p.stop(), 0, p.output())


if __name__ == "__main__":
    unittest.main()
