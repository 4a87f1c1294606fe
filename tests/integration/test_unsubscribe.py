"""One-click unsubscribe (RFC 8058) end to end: a real dev broker,
sluice-scheduler, sluice-sender (DKIM-signing with a key made here) and
sluice-api (HTTPS) deliver to a sluice-testsink.

A bulk job of two recipients reaches the sink as two transactions, each
message with its recipient's own List-Unsubscribe (https and mailto) and
List-Unsubscribe-Post; dkimpy verifies each signature against a TXT record
built here from `openssl pkey -pubout`, and its h= names both fields. A
transactional job has neither field; a raw message with its own
List-Unsubscribe keeps it and goes as one transaction. A GET of the link shows a page and
unsubscribes nobody; a POST of List-Unsubscribe=One-Click publishes one
UNSUBSCRIBED event, the scheduler suppresses the recipient for the tenant,
and the next campaign's job to them ends SUPPRESSED while the recipient
who only saw the page still gets mail. A forged token is 404 and publishes
nothing."""

import email
import email.policy
import http.client
import json
import os
import re
import subprocess
import unittest

from sluicetest import Pipeline, bin_path, case_tmpdir, make_cert, wait_for, wait_listening
from sluicetest import dump_topic, free_port, write_file
from test_api import KEY, key_hash
from test_dkim_verify import VERIFIER, VERIFY_SCRIPT
from test_submit import tls_ctx

DEADLINE = 30


class UnsubscribeTest(unittest.TestCase):
    def setUp(self):
        if VERIFIER is None:
            self.skipTest("python3-dkim (dkimpy) is not installed")
        self.tmp = case_tmpdir(self, "sluice-unsub-")
        cert, key = make_cert(self.tmp)
        keys = write_file(self.tmp, "keys", "%s tenant=acme domains=example.net\n" % key_hash(KEY))
        secret = write_file(self.tmp, "token.key", "0123456789abcdef0123456789abcdef\n")
        self.dkim_key = os.path.join(self.tmp, "dkim.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", self.dkim_key],
                       check=True, capture_output=True, timeout=DEADLINE)
        self.port = free_port()
        self.base = "https://127.0.0.1:%d" % self.port
        self.pipe = Pipeline(self, self.tmp, (
            "api:\n  listen: 127.0.0.1:%d\n  cert: %s\n  key: %s\n  keys: %s\n"
            "dkim:\n  - { domain: example.net, selector: s1, key: %s, algorithm: rsa-sha256 }\n"
            "tokens:\n  secret_file: %s\n"
            "unsubscribe:\n  url: %s\n  mailto_domain: bounce.example.net\n"
            % (self.port, cert, key, keys, self.dkim_key, secret, self.base)))
        self.sink = self.pipe.sink
        self.pipe.start_roles()
        wait_listening(self.pipe.start("sluice-api"), self.port, "sluice-api")
        self.body = write_file(self.tmp, "body.txt", "Hello.\n")

    def send(self, to, campaign, *extra):
        r = subprocess.run([bin_path("sluice"), "send", "-c", self.pipe.cfg,
                            "--from", "news@example.net", "--to", to, "--subject", "News",
                            "--body-file", self.body, "--tenant", "acme",
                            "--campaign", campaign] + list(extra),
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return [line.split()[0] for line in r.stdout.splitlines()]

    def received(self, n):
        """The first n messages at the sink, parsed: {rcpt: (envelope, message, bytes)}."""
        try:
            got = self.sink.wait_messages(n, DEADLINE)
        except AssertionError as e:
            raise AssertionError("%s%s" % (e, self.pipe.logs()))
        out = {}
        for m in got:
            with open(os.path.join(self.sink.dir, m["file"]), "rb") as f:
                data = f.read().split(b"\r\n", 1)[1]  # the sink's envelope line
            out.setdefault(m["rcpt"][0], []).append(
                (m, email.message_from_bytes(data, policy=email.policy.default), data))
        return out

    def dkim_verify(self, data):
        der = subprocess.run(["openssl", "pkey", "-in", self.dkim_key, "-pubout", "-outform",
                              "DER"], check=True, capture_output=True, timeout=DEADLINE).stdout
        import base64
        rec = "v=DKIM1; k=rsa; p=%s" % base64.b64encode(der).decode()
        path = os.path.join(self.tmp, "verify-%d.eml" % len(os.listdir(self.tmp)))
        with open(path, "wb") as f:
            f.write(data)
        req = json.dumps({"path": path, "n": 1, "records": {"s1._domainkey.example.net.": rec}})
        r = subprocess.run([VERIFIER, "-c", VERIFY_SCRIPT], input=req.encode(),
                           capture_output=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        return json.loads(r.stdout) == [True]

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=tls_ctx(),
                                        timeout=DEADLINE)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read().decode("utf-8", "replace")
        c.close()
        return r, data

    def dump(self, topic):
        return dump_topic(self.pipe.cfg, topic)

    def events(self):
        return [x.get("event", {}) for x in self.dump("events")]

    def test_one_click_unsubscribe(self):
        self.send("ann@list.test,bob@list.test", "c1", "--meta", "list=news")
        got = self.received(2)
        self.assertEqual(set(got), {"ann@list.test", "bob@list.test"})
        links = {}
        for rcpt, [(env, msg, data)] in got.items():
            # One transaction per recipient: the header names only them.
            self.assertEqual(env["rcpt"], [rcpt])
            lu = str(msg["List-Unsubscribe"])
            m = re.fullmatch(r"<(https://[^>]+/u/([a-z0-9]+))>,\s*<mailto:unsub\+([a-z0-9]+)"
                             r"@bounce\.example\.net>", lu)
            self.assertIsNotNone(m, lu)
            self.assertTrue(m.group(1).startswith(self.base + "/u/"), lu)
            self.assertEqual(m.group(2), m.group(3))
            self.assertEqual(str(msg["List-Unsubscribe-Post"]), "List-Unsubscribe=One-Click")
            links[rcpt] = m.group(1)
            sig = str(msg["DKIM-Signature"])
            h = re.search(r"h=([^;]+)", sig).group(1)
            signed = {f.strip().lower() for f in re.sub(r"\s", "", h).split(":")}
            self.assertIn("list-unsubscribe", signed)
            self.assertIn("list-unsubscribe-post", signed)
            self.assertTrue(self.dkim_verify(data), "dkimpy rejects the signature of " + rcpt)
        self.assertNotEqual(links["ann@list.test"], links["bob@list.test"])

        # Transactional mail carries neither field (and is still signed).
        self.send("carl@list.test", "c1", "--transactional")
        carl = self.received(3)["carl@list.test"][0]
        self.assertIsNone(carl[1]["List-Unsubscribe"])
        self.assertIsNone(carl[1]["List-Unsubscribe-Post"])
        self.assertTrue(self.dkim_verify(carl[2]))

        # A raw message with its own List-Unsubscribe keeps it, and goes to
        # its recipients in one transaction.
        raw = write_file(self.tmp, "raw.eml",
                         "From: news@example.net\nTo: list@list.test\nSubject: own\n"
                         "List-Unsubscribe: <mailto:leave@example.net>\n\nHi.\n")
        r = subprocess.run([bin_path("sluice"), "send", "-c", self.pipe.cfg, "--from",
                            "news@example.net", "--to", "dan@list.test,eve@list.test",
                            "--raw-file", raw, "--tenant", "acme"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stderr)
        [(env, own, own_data)] = self.received(4)["dan@list.test"]
        self.assertEqual(sorted(env["rcpt"]), ["dan@list.test", "eve@list.test"])
        self.assertEqual(own.get_all("List-Unsubscribe"), ["<mailto:leave@example.net>"])
        self.assertIsNone(own["List-Unsubscribe-Post"])
        self.assertTrue(self.dkim_verify(own_data))

        # A forged token: 404, nothing published. So is a token with one
        # character changed.
        ann_path = links["ann@list.test"][len(self.base):]
        bob_path = links["bob@list.test"][len(self.base):]
        flip = "b" if ann_path[-1] != "b" else "c"
        for bad in ("/u/forged", ann_path[:-1] + flip):
            r, _ = self.request("POST", bad, "List-Unsubscribe=One-Click",
                                {"Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual(r.status, 404, bad)

        # GET shows a confirmation page that POSTs; it unsubscribes nobody.
        r, page = self.request("GET", ann_path)
        self.assertEqual(r.status, 200)
        self.assertIn('method="post"', page)
        self.assertIn('name="List-Unsubscribe" value="One-Click"', page)
        self.assertIsNone(r.getheader("Set-Cookie"))

        # The one-click POST: 200 at once, no cookie, no redirect.
        r, _ = self.request("POST", bob_path, "List-Unsubscribe=One-Click",
                            {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.getheader("Set-Cookie"))
        self.assertIsNone(r.getheader("Location"))

        unsub = wait_for(lambda: [e for e in self.events() if e.get("type") == "UNSUBSCRIBED"],
                         DEADLINE, "the UNSUBSCRIBED event")
        self.assertEqual(len(unsub), 1, unsub)  # not the forged ones, not the GET
        self.assertEqual(unsub[0]["recipient"], "bob@list.test")
        self.assertEqual(unsub[0]["tenant"], "acme")
        self.assertEqual(unsub[0]["campaign"], "c1")
        self.assertEqual(unsub[0].get("meta"), {"list": "news"})

        # The scheduler suppresses bob for acme: the next campaign's job
        # to him ends SUPPRESSED; ann, who only looked at the page, gets it.
        wait_for(lambda: [x for x in self.dump("suppressions")
                          if x["key"] == "acme/bob@list.test"], DEADLINE, "bob's suppression")
        jid = self.send("bob@list.test", "c2")[0]
        wait_for(lambda: any(e.get("job_id") == jid and e.get("type") == "SUPPRESSED"
                             for e in self.events()), DEADLINE, "SUPPRESSED " + jid)
        self.send("ann@list.test", "c2")
        wait_for(lambda: len(self.received(5)["ann@list.test"]) == 2 or None, DEADLINE,
                 "ann's second message")



if __name__ == "__main__":
    unittest.main()
