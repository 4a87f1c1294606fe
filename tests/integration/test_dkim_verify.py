"""Independent verification of sluice's DKIM signatures with dkimpy.

Keys are generated at test time with the openssl command (RSA 2048 and
Ed25519); the DNS TXT records are built here from `openssl pkey -pubout`
(not from sluice's own code), and dkimpy verifies through a dnsfunc that
serves them. Signing goes through the unit-test binary's tool mode:
    test_dkim sign UNIXTIME DOMAIN:SELECTOR:ALG:KEYFILE... <msg >signed

dkimpy may live only in the system interpreter (Debian's python3-dkim);
verification then runs in a child /usr/bin/python3.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import bin_path  # noqa: E402

DEADLINE = 30  # seconds for any one child process

VERIFY_SCRIPT = r"""
import json, sys, dkim
req = json.load(sys.stdin)
recs = {k.encode(): v.encode() for k, v in req["records"].items()}
def dnsfunc(name, timeout=5):
    name = name if name.endswith(b".") else name + b"."
    return recs.get(name)
msg = open(req["path"], "rb").read()
d = dkim.DKIM(msg)
out = []
for i in range(req["n"]):
    try:
        out.append(bool(d.verify(idx=i, dnsfunc=dnsfunc)))
    except dkim.DKIMException:
        out.append(False)  # a mismatch dkimpy reports by raising
json.dump(out, sys.stdout)
"""


def find_verifier():
    for py in (sys.executable, "/usr/bin/python3", "python3"):
        try:
            r = subprocess.run([py, "-c", "import dkim, nacl"], capture_output=True,
                               timeout=DEADLINE)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return py
    return None


VERIFIER = find_verifier()

SIMPLE = (b"From: Sluice News <news@example.net>\r\n"
          b"To: rcpt@example.org\r\n"
          b"Subject: Hello\r\n"
          b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
          b"Message-ID: <01HJOB.1@example.net>\r\n"
          b"\r\n"
          b"Hello there.\r\n")

# Non-ASCII raw (SMTPUTF8) and encoded, long folded headers, white space
# runs and trailing white space, dot lines, trailing blank lines.
TRICKY = ("From: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <news@example.net>\r\n"
          "To: \"Zoë Ångström\" <zoe@example.org>,\r\n"
          "   second@example.org,\r\n"
          "\tthird@example.org\r\n"
          "Cc:   cc@example.org   \r\n"
          "Subject: Grüße aus Köln — a subject long enough that it had to be\r\n"
          " folded  over \t several\r\n"
          "  lines to stay under the limit\r\n"
          "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
          "Message-ID: <01HJOB.2@example.net>\r\n"
          "MIME-Version: 1.0\r\n"
          "Content-Type: text/plain; charset=utf-8\r\n"
          "Content-Transfer-Encoding: 8bit\r\n"
          "List-Unsubscribe: <mailto:unsub@example.net?subject=u>,\r\n"
          " <https://example.net/u/01HJOB>\r\n"
          "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
          "X-Campaign: not signed\r\n"
          "\r\n"
          "Grüße,  \r\n"
          "\t indented   line \t\r\n"
          ".a dot line\r\n"
          "..two dots\r\n"
          "\r\n"
          "last line\r\n"
          "\r\n"
          "\r\n"
          "   \r\n"
          "\r\n").encode("utf-8")

MULTIPART = (b"From: news@example.net\r\n"
             b"To: rcpt@example.org\r\n"
             b"Subject: multipart\r\n"
             b"MIME-Version: 1.0\r\n"
             b"Content-Type: multipart/alternative; boundary=\"b1\"\r\n"
             b"\r\n"
             b"--b1\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
             b"--b1\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
             b"--b1--\r\n")

EMPTY_BODY = b"From: news@example.net\r\nSubject: nothing\r\n\r\n"


class DkimVerifyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if VERIFIER is None:
            raise unittest.SkipTest("python3-dkim (dkimpy) with nacl is not installed")
        cls.tmp = tempfile.TemporaryDirectory(prefix="sluice-dkim-")
        d = cls.tmp.name
        cls.rsa = os.path.join(d, "rsa.pem")
        cls.ed = os.path.join(d, "ed.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", cls.rsa],
                       check=True, capture_output=True, timeout=DEADLINE)
        subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", cls.ed],
                       check=True, capture_output=True, timeout=DEADLINE)
        cls.records = {
            "s1._domainkey.example.net.": cls.txt(cls.rsa, "rsa"),
            "e1._domainkey.example.net.": cls.txt(cls.ed, "ed25519"),
        }
        cls.tool = bin_path("test_dkim")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @staticmethod
    def txt(path, kind):
        der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True, timeout=DEADLINE).stdout
        if kind == "ed25519":
            der = der[-32:]  # SPKI of Ed25519: a 12-byte prefix, then the raw key
        return "v=DKIM1; k=%s; p=%s" % (kind, base64.b64encode(der).decode())

    def sign(self, msg, keys):
        specs = []
        for k in keys:
            if k == "rsa":
                specs.append("example.net:s1:rsa-sha256:" + self.rsa)
            else:
                specs.append("example.net:e1:ed25519-sha256:" + self.ed)
        r = subprocess.run([self.tool, "sign", str(int(time.time()))] + specs, input=msg,
                           capture_output=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        self.assertTrue(r.stdout.endswith(msg), "the message bytes must follow unchanged")
        return r.stdout

    def verify(self, signed, n):
        path = os.path.join(self.tmp.name, "msg-%d.eml" % time.monotonic_ns())
        with open(path, "wb") as f:
            f.write(signed)
        req = json.dumps({"path": path, "n": n, "records": self.records})
        r = subprocess.run([VERIFIER, "-c", VERIFY_SCRIPT], input=req.encode(),
                           capture_output=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        return json.loads(r.stdout)

    def check(self, msg):
        for keys in (["rsa"], ["ed25519"], ["rsa", "ed25519"]):
            with self.subTest(keys=keys):
                signed = self.sign(msg, keys)
                self.assertEqual(signed.count(b"DKIM-Signature:"), len(keys))
                self.assertEqual(self.verify(signed, len(keys)), [True] * len(keys))

    def test_simple(self):
        self.check(SIMPLE)

    def test_non_ascii_folded_trailing_blank_lines(self):
        self.check(TRICKY)

    def test_multipart(self):
        self.check(MULTIPART)

    def test_empty_body(self):
        self.check(EMPTY_BODY)

    def test_rendered_long_line(self):
        # A long variable value in a template's body: rendering re-encodes
        # the part as quoted-printable (no line over 998 octets, RFC 5322
        # section 2.1.1), and folds a long header line; the signature made
        # over that form verifies, and a MIME parser gets the values back.
        import email
        import email.policy
        tmpl = os.path.join(self.tmp.name, "long.tmpl")
        with open(tmpl, "wb") as f:
            f.write(b"From: news@example.net\nTo: rcpt@example.org\nSubject: {{subject}}\n"
                    b"MIME-Version: 1.0\n"
                    b"Content-Type: multipart/alternative; boundary=\"b1\"\n\n"
                    b"--b1\nContent-Type: text/plain; charset=utf-8\n"
                    b"Content-Transfer-Encoding: 8bit\n\nToken: {{token}}\n"
                    b"--b1\nContent-Type: text/html\n\n<p>short</p>\n--b1--\n")
        value = ("Grüße=%d " % 7) * 400  # 4,400 octets, '=' and UTF-8 included
        subject = "a rather long subject " * 60  # 1,320 octets: folded
        r = subprocess.run([bin_path("test_template"), "render", tmpl, "token=" + value,
                            "subject=" + subject],
                           capture_output=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        msg = r.stdout
        self.assertLessEqual(max(len(line) for line in msg.split(b"\r\n")), 998)
        self.assertIn(b"Content-Transfer-Encoding: quoted-printable", msg)
        self.check(msg)
        parsed = email.message_from_bytes(msg, policy=email.policy.default)
        self.assertEqual(parsed["Subject"], subject)
        plain = parsed.get_body(preferencelist=("plain",)).get_content()
        # The CRLF before a boundary belongs to the boundary (RFC 2046).
        self.assertEqual(plain, "Token: %s" % value)

    def test_tampering_detected(self):
        # The verifier really checks: changed body, changed signed header,
        # an added From (over-signing) all fail; an unsigned header may
        # change and relaxed white-space changes pass.
        signed = self.sign(TRICKY, ["rsa", "ed25519"])
        cases = [
            (signed.replace(b"last line", b"last linE"), False),
            (signed.replace(b"Subject: Gr", b"Subject: gR"), False),
            (signed.replace(b"\r\n\r\nGr", b"\r\nFrom: evil@example.com\r\n\r\nGr", 1), False),
            (signed.replace(b"X-Campaign: not signed", b"X-Campaign: changed"), True),
            (signed.replace(b"last line\r\n", b"last    line  \r\n"), True),
            (signed + b"\r\n\r\n", True),
        ]
        for i, (msg, ok) in enumerate(cases):
            with self.subTest(case=i):
                self.assertNotEqual(msg, signed)
                self.assertEqual(self.verify(msg, 2), [ok, ok])


if __name__ == "__main__":
    unittest.main()
