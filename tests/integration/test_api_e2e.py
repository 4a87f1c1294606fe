"""End to end through the HTTP door: an inline message posted to sluice-api
with per-recipient substitutions and an attachment goes through a real dev
broker, sluice-scheduler and sluice-sender to a sluice-testsink (route
"*"); each recipient's copy, parsed by Python's email package, carries its
own substitutions, the alternative bodies and the attachment intact."""

import base64
import email
import email.policy
import http.client
import json
import os
import unittest

from sluicetest import Pipeline, case_tmpdir, free_port, wait_listening
from test_api import KEY, key_hash
from test_submit import make_cert, tls_ctx

DEADLINE = 30


class ApiEndToEndTest(unittest.TestCase):
    def setUp(self):
        self.tmp = case_tmpdir(self, "sluice-api-e2e-")
        cert, key = make_cert(self.tmp)
        keys = os.path.join(self.tmp, "keys")
        with open(keys, "w") as f:
            f.write("%s tenant=acme domains=example.net\n" % key_hash(KEY))
        self.port = free_port()
        self.pipe = Pipeline(self, self.tmp, "api:\n  listen: 127.0.0.1:%d\n  cert: %s\n"
                             "  key: %s\n  keys: %s\n" % (self.port, cert, key, keys))
        self.sink = self.pipe.sink
        self.pipe.start_roles()
        wait_listening(self.pipe.start("sluice-api"), self.port, "sluice-api")

    def logs(self):
        return self.pipe.logs()

    def test_inline_message_delivered_per_recipient(self):
        blob = os.urandom(5000)
        req = {
            "sender": "news@example.net",
            "campaign": "e2e",
            "recipients": [
                {"address": "ann@e2e.test", "substitutions": {"name": "Ann", "code": "A-1"}},
                {"address": "bob@other.test", "substitutions": {"name": "Bøb", "code": "B-2"}},
            ],
            "content": {
                "subject": "Your code, {{name}}",
                "text": "Hello {{name}}, your code is {{code}}.\n",
                "html": "<p>Hello {{name}}, your code is <b>{{code}}</b>.</p>",
                "attachments": [{"filename": "data.bin",
                                 "content": base64.b64encode(blob).decode()}],
            },
        }
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=tls_ctx(),
                                        timeout=DEADLINE)
        c.request("POST", "/v1/messages", body=json.dumps(req).encode(),
                  headers={"Authorization": "Bearer " + KEY})
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
        self.assertEqual(r.status, 202, body)
        try:
            got = self.sink.wait_messages(2, DEADLINE)
        except AssertionError as e:
            raise AssertionError("%s%s" % (e, self.logs()))
        by_rcpt = {m["rcpt"][0]: m for m in got}
        self.assertEqual(set(by_rcpt), {"ann@e2e.test", "bob@other.test"})
        for addr, name, code in (("ann@e2e.test", "Ann", "A-1"), ("bob@other.test", "Bøb", "B-2")):
            with open(os.path.join(self.sink.dir, by_rcpt[addr]["file"]), "rb") as f:
                data = f.read().split(b"\r\n", 1)[1]  # the sink's envelope line
            msg = email.message_from_bytes(data, policy=email.policy.default)
            self.assertEqual(str(msg["Subject"]), "Your code, " + name)
            self.assertEqual(msg["To"], addr)
            self.assertTrue(msg["Message-ID"])
            self.assertEqual(msg.get_content_type(), "multipart/mixed")
            alt, att = msg.get_payload()
            text, html = alt.get_payload()
            self.assertIn("Hello %s, your code is %s." % (name, code), text.get_content())
            self.assertIn("<b>%s</b>" % code, html.get_content())
            self.assertEqual(att.get_filename(), "data.bin")
            self.assertEqual(att.get_content(), blob)


if __name__ == "__main__":
    unittest.main()
