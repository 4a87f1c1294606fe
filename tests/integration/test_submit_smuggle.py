"""SMTP smuggling: sluice-submit must end DATA only at CRLF.CRLF.

A message that carries another end-of-data sequence (`\\n.\\n`, `\\r.\\r`,
`\\n.\\r\\n`, `\\r\\n.\\n`, `\\r.\\r\\n`) followed by smuggled commands
(MAIL, RCPT, DATA of a second message) is sent with swaks exactly as
written (--no-data-fixup). A lenient server would see two messages and
publish the smuggled one; sluice-submit must refuse the whole DATA with a
5xx (bare CR / bare LF) and publish nothing, and the smuggled recipient
must never appear on the jobs topic. A clean swaks message afterwards is
still accepted, so the refusals came from the framing rules, not from a
broken setup."""

import os
import shutil
import subprocess
import unittest

from test_submit import DEADLINE, PASSWORDS, SubmitCase

SEQUENCES = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
}


def smuggling_message(seq):
    return (b"From: alice@example.net\r\n"
            b"To: x@example.com\r\n"
            b"Subject: smuggle\r\n"
            b"\r\n"
            b"first message" + seq +
            b"MAIL FROM:<alice@example.net>\r\n"
            b"RCPT TO:<smuggled@example.org>\r\n"
            b"DATA\r\n"
            b"From: alice@example.net\r\n"
            b"Subject: smuggled\r\n"
            b"\r\n"
            b"smuggled body\r\n"
            b".\r\n")


class TestSubmitSmuggling(SubmitCase):
    def swaks(self, data_path, rcpt):
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.p587), "--tls",
             "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORDS["alice"],
             "--from", "alice@example.net", "--to", rcpt, "--ehlo", "swaks.test",
             "--data", "@" + data_path, "--no-data-fixup"],
            capture_output=True, text=True, timeout=DEADLINE)

    def test_other_end_of_data_sequences_are_refused(self):
        if not shutil.which("swaks"):
            self.skipTest("swaks not installed")
        for name, seq in SEQUENCES.items():
            with self.subTest(sequence=name):
                path = os.path.join(self.tmp, "smuggle-%s.eml" % name.replace(".", "_"))
                with open(path, "wb") as f:
                    f.write(smuggling_message(seq))
                r = self.swaks(path, "x@example.com")
                out = r.stdout + r.stderr
                # swaks exits non-zero when DATA is refused; the server's
                # answer to the end of DATA is a permanent 5xx.
                self.assertNotEqual(r.returncode, 0, out)
                self.assertRegex(out, r"<~?\*? +5\d\d 5\.", out)
                self.assertNotIn("queued as", out)
        self.assertEqual(self.jobs(), [], "a smuggling attempt reached Kafka")

        # A clean message through the same path is accepted: exactly one job,
        # and never the smuggled recipient.
        path = os.path.join(self.tmp, "clean.eml")
        with open(path, "wb") as f:
            f.write(b"From: alice@example.net\r\nTo: x@example.com\r\nSubject: clean\r\n"
                    b"\r\nclean body\r\n.\r\n")
        r = self.swaks(path, "clean@example.com")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("250 2.0.0 Ok: queued as", r.stdout)
        jobs = self.jobs()
        self.assertEqual([j["recipients"] for j in jobs], [["clean@example.com"]])
        self.assertNotIn("smuggled", "".join(j["raw"] for j in jobs))


if __name__ == "__main__":
    unittest.main()
