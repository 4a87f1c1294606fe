"""End to end through the SMTP door: a message submitted to sluice-submit
(STARTTLS + AUTH PLAIN) goes through a real dev broker, sluice-scheduler and
sluice-sender to a sluice-testsink (route "*"), and the body that arrives
is byte for byte the body that was submitted. Headers may gain Received,
Message-ID or DKIM-Signature fields on the way; the body (after the first
empty line) must not change at all: no re-wrapping, no trailing-space
trimming, dot-stuffing undone exactly once, 8-bit octets kept."""

import os
import smtplib
import unittest

from sluicetest import case_tmpdir, wait_listening
from test_submit import PASSWORDS, submit_pipeline, tls_ctx

DEADLINE = 25

# Lines chosen to break a careless relay: leading dots (stuffed on the wire),
# a lone "." inside text, "From " at line start, trailing blanks, empty lines,
# UTF-8 octets, a 998-octet line (the RFC 5322 maximum) and a tab.
BODY = (b"Hello,\r\n"
        b"\r\n"
        b".leading dot\r\n"
        b"..two dots\r\n"
        b" .\r\n"
        b"From the start of a line\r\n"
        b"trailing blanks   \r\n"
        b"\ttab first\r\n"
        b"\r\n"
        b"\r\n"
        + "Grüße, Ωμέγα, 日本語\r\n".encode("utf-8")
        + b"x" * 998 + b"\r\n"
        b"-- \r\n"
        b"last line\r\n")


class SubmitEndToEndTest(unittest.TestCase):
    def setUp(self):
        self.tmp = case_tmpdir(self, "sluice-submit-e2e-")
        self.port, self.pipe = submit_pipeline(self, self.tmp)
        self.sink = self.pipe.sink
        self.pipe.start_roles()
        self.submit = self.pipe.start("sluice-submit", "--hostname", "submit.test",
                                      "--ack-timeout", "10s")
        wait_listening(self.submit, self.port, "sluice-submit")

    def logs(self):
        return self.pipe.logs()

    def test_body_arrives_byte_exact(self):
        headers = (b"From: Alice <alice@example.net>\r\n"
                   b"To: <bob@e2e.test>\r\n"
                   b"Subject: byte exact\r\n"
                   b"MIME-Version: 1.0\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\n"
                   b"Content-Transfer-Encoding: 8bit\r\n")
        msg = headers + b"\r\n" + BODY
        with smtplib.SMTP("127.0.0.1", self.port, timeout=DEADLINE) as s:
            s.starttls(context=tls_ctx())
            s.login("alice", PASSWORDS["alice"])
            refused = s.sendmail("alice@example.net", ["bob@e2e.test"], msg,
                                 mail_options=["BODY=8BITMIME"])
            self.assertEqual(refused, {})

        try:
            got = self.sink.wait_messages(1, DEADLINE)
        except AssertionError as e:
            raise AssertionError("%s%s" % (e, self.logs()))
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["rcpt"], ["bob@e2e.test"])
        self.assertEqual(got[0]["from"], "alice@example.net")
        with open(os.path.join(self.sink.dir, got[0]["file"]), "rb") as f:
            data = f.read()
        # Drop the sink's own X-Sink-Envelope line, then split head and body.
        self.assertTrue(data.startswith(b"X-Sink-Envelope: "), data[:200])
        data = data.split(b"\r\n", 1)[1]
        head, sep, body = data.partition(b"\r\n\r\n")
        self.assertEqual(sep, b"\r\n\r\n", data[:500])
        self.assertEqual(body, BODY)
        # The submitted header fields are all still there, unchanged.
        head_lines = set(head.split(b"\r\n"))
        for line in headers.rstrip(b"\r\n").split(b"\r\n"):
            self.assertIn(line, head_lines, head)
        self.assertIn(b"Received: from ", head)


if __name__ == "__main__":
    unittest.main()
