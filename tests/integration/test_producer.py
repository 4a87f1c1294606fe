"""Integration tests of the producer side: `sluice send` through libsluice
to a real (dev) broker, read back with `sluice events --jobs` and
`sluice events --json`.

Every test gets its own devbroker (random ports) and config file."""

import json
import os
import tempfile
import unittest

from sluicetest import devbroker_control, run_sluice, start_devbroker, write_file

DEADLINE = 60


class ProducerCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-producer-")
        self.tmp = self._tmp.name
        self.broker, self.bootstrap = start_devbroker(self.tmp, control=True)
        self.cfg = self.write("sluice.yaml", "kafka:\n  bootstrap: %s\n" % self.bootstrap)

    def tearDown(self):
        self.broker.stop()
        self._tmp.cleanup()

    def write(self, name, text, mode="w"):
        return write_file(self.tmp, name, text, mode)

    def sluice(self, *args, timeout=DEADLINE, input=None, binary=False):
        """Run `sluice ARGS`; binary=True keeps stdout as bytes (CRLF intact)."""
        return run_sluice(*args, timeout=timeout, input=input, binary=binary)

    def control(self, command):
        """One devbroker control command; returns its answer line."""
        answer = devbroker_control(self.tmp, command)
        self.assertTrue(answer.startswith("ok"), answer)
        return answer

    def jobs(self):
        r = self.sluice("events", "-c", self.cfg, "--jobs")
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(line) for line in r.stdout.splitlines()]

    def events(self, *extra):
        r = self.sluice("events", "-c", self.cfg, "--json", *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(line) for line in r.stdout.splitlines()]


class TestSend(ProducerCase):
    def test_send_splits_by_domain_and_reports_acks(self):
        body = self.write("body.txt", "Hello,\nthis is a test.\n")
        r = self.sluice("send", "-c", self.cfg, "--from", "news@example.net",
                        "--to", "a@Example.COM, b@example.com", "--to", "c@bücher.de",
                        "--subject", "Grüße", "--body-file", body,
                        "--tenant", "acme", "--campaign", "spring", "--pool", "p1",
                        "--priority", "transactional", "--meta", "order=42", "--expire", "2h")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        accepted = {}
        for line in lines:
            job_id, status, domain, rcpts = line.split(" ")
            self.assertEqual(status, "accepted")
            self.assertEqual(len(job_id), 26)
            accepted[domain] = (job_id, rcpts.split(","))
        self.assertEqual(sorted(accepted), ["example.com", "xn--bcher-kva.de"])
        self.assertEqual(sorted(accepted["example.com"][1]), ["a@example.com", "b@example.com"])

        jobs = {j["domain"]: j for j in self.jobs()}
        self.assertEqual(sorted(jobs), ["example.com", "xn--bcher-kva.de"])
        j = jobs["example.com"]
        self.assertEqual(j["key"], "example.com")
        self.assertEqual(j["job_id"], accepted["example.com"][0])
        self.assertEqual(j["version"], 1)
        self.assertEqual(sorted(j["recipients"]), ["a@example.com", "b@example.com"])
        self.assertEqual(j["mail_from"], "news@example.net")
        self.assertEqual((j["tenant"], j["campaign"], j["pool"], j["priority"]),
                         ("acme", "spring", "p1", "transactional"))
        self.assertEqual(j["meta"], {"order": "42"})
        self.assertGreater(j["expires_at_ms"], j["created_at_ms"] + 7000 * 1000)
        raw = j["raw"]
        self.assertIn("Subject: =?UTF-8?B?", raw)
        self.assertIn("From: news@example.net\r\n", raw)
        self.assertTrue(raw.endswith("this is a test.\r\n"), raw)
        self.assertNotIn("\n\n", raw.replace("\r\n", ""))
        self.assertEqual(jobs["xn--bcher-kva.de"]["recipients"], ["c@xn--bcher-kva.de"])

        # One ACCEPTED event per recipient, after the ack.
        ev = self.events("--type", "accepted")
        self.assertEqual(sorted(e["recipient"] for e in ev),
                         ["a@example.com", "b@example.com", "c@xn--bcher-kva.de"])
        for e in ev:
            self.assertEqual(e["stage"], "producer")
            self.assertEqual(e["campaign"], "spring")
            self.assertEqual(e["meta"], {"order": "42"})

    def test_raw_file_gets_crlf_and_json_output(self):
        raw = self.write("msg.eml", "From: x@example.net\nTo: y@example.org\nSubject: raw\n\nbody\n")
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net",
                        "--to", "y@example.org", "--raw-file", raw, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["status"], "accepted")
        self.assertEqual(out["recipients"], ["y@example.org"])
        [job] = self.jobs()
        self.assertEqual(job["job_id"], out["job_id"])
        self.assertEqual(job["raw"],
                         "From: x@example.net\r\nTo: y@example.org\r\nSubject: raw\r\n\r\nbody\r\n")

    def test_raw_from_stdin(self):
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net",
                        "--to", "y@example.org", "--raw-file", "-",
                        input="From: x@example.net\r\n\r\nstdin body\r\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        [job] = self.jobs()
        self.assertIn("stdin body", job["raw"])

    def put_welcome(self):
        t = self.write("w.tmpl", "From: x@example.net\nTo: {{email}}\nSubject: Hi {{name}}\n\n"
                       "code {{code}}\n")
        r = self.sluice("template", "put", "-c", self.cfg, "welcome", t)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_template_send(self):
        self.put_welcome()
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net",
                        "--to", "y@example.org", "--template", "welcome",
                        "--var", "name=Yves", "--var", "code=a=b", "--var", "email=e@x.org")
        self.assertEqual(r.returncode, 0, r.stderr)
        [job] = self.jobs()
        self.assertEqual(job["template_id"], "welcome")
        self.assertEqual(job["vars"], {"name": "Yves", "code": "a=b", "email": "e@x.org"})
        self.assertNotIn("raw", job)

    def test_template_send_supplies_email_and_checks_first(self):
        """send --template used to publish jobs that bounced with "variable
        'email' is missing"; a missing template or variable published too."""
        self.put_welcome()
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net",
                        "--to", "y@example.org,z@example.org", "--template", "welcome",
                        "--var", "code=1")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("needs variable 'name'", r.stderr)
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net",
                        "--to", "y@example.org", "--template", "nope", "--var", "code=1")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("'nope' is not stored", r.stderr)
        self.assertEqual(self.jobs(), [])
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net",
                        "--to", "y@example.org,z@example.org", "--template", "welcome",
                        "--var", "code=1", "--var", "name=N")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        jobs = self.jobs()
        self.assertEqual(sorted((j["recipients"], j["vars"]["email"]) for j in jobs),
                         [(["y@example.org"], "y@example.org"),
                          (["z@example.org"], "z@example.org")])

    def test_invalid_addresses_exit_2_and_publish_nothing(self):
        body = self.write("body.txt", "hi\n")
        cases = [
            (["--to", "good@example.com,bad@exa mple.com"], "recipient 2"),
            (["--to", "user@localhost"], "not fully qualified"),
            (["--to", "a..b@example.com"], "consecutive dots"),
            (["--to", "x@[127.0.0.1]"], "address literals"),
        ]
        for extra, msg in cases:
            r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net",
                            "--subject", "s", "--body-file", body, *extra)
            self.assertEqual(r.returncode, 2, (extra, r.stdout, r.stderr))
            self.assertIn(msg, r.stderr)
            self.assertIn("invalid address", r.stderr)
            self.assertEqual(r.stdout, "")
        r = self.sluice("send", "-c", self.cfg, "--from", "not-an-address",
                        "--to", "y@example.org", "--subject", "s", "--body-file", body)
        self.assertEqual(r.returncode, 2)
        self.assertIn("from \"not-an-address\": missing '@'", r.stderr)
        # A header injection attempt through the subject is refused too.
        r = self.sluice("send", "-c", self.cfg, "--from", "x@example.net",
                        "--to", "y@example.org", "--subject", "s\r\nBcc: z@example.org",
                        "--body-file", body)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertEqual(self.jobs(), [])

    def test_bad_usage_and_config(self):
        body = self.write("body.txt", "hi\n")
        for args in (["send"],
                     ["send", "-c", self.cfg, "--from", "x@example.net", "--to", "y@example.org"],
                     ["send", "-c", self.cfg, "--from", "x@example.net", "--to", "y@example.org",
                      "--subject", "s", "--body-file", body, "--raw-file", body],
                     ["send", "-c", self.cfg, "--from", "x@example.net", "--to", "y@example.org",
                      "--subject", "s", "--body-file", body, "--priority", "urgent"],
                     ["send", "-c", self.cfg, "--from", "x@example.net", "--to", "y@example.org",
                      "--subject", "s", "--body-file", os.path.join(self.tmp, "missing")],
                     ["send", "-c", self.cfg, "--bogus"]):
            r = self.sluice(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertTrue(r.stderr.strip(), args)
        bad = self.write("bad.yaml", "kafka:\n  bootstrapp: x\n")
        r = self.sluice("send", "-c", bad, "--from", "x@example.net", "--to", "y@example.org",
                        "--subject", "s", "--body-file", body)
        self.assertEqual(r.returncode, 2)
        self.assertIn("bad.yaml:2", r.stderr)

    def test_unreachable_kafka_is_not_reported_accepted(self):
        body = self.write("body.txt", "hi\n")
        cfg = self.write("dead.yaml", "kafka:\n  bootstrap: 127.0.0.1:1\n")
        r = self.sluice("send", "-c", cfg, "--from", "x@example.net", "--to", "y@example.org",
                        "--subject", "s", "--body-file", body, "--timeout", "2s")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertNotIn("accepted", r.stdout)
        self.assertEqual(r.stderr,
                         "sluice send: cannot reach Kafka at 127.0.0.1:1: connection refused\n")


class TestSendFaults(ProducerCase):
    """What the broker does to a produce request is reported, never guessed."""

    def send(self, to):
        body = self.write("body.txt", "hi\n")
        return self.sluice("send", "-c", self.cfg, "--from", "x@example.net", "--to", to,
                           "--subject", "s", "--body-file", body, "--timeout", "30s")

    def test_retriable_errors_still_ack_once(self):
        self.control("errors Produce 3 NOT_LEADER_FOR_PARTITION")
        r = self.send("a@example.com")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(" accepted example.com", r.stdout)
        # Idempotence: the retried record is in the topic exactly once.
        self.assertEqual(len(self.jobs()), 1)

    def test_refused_record_is_reported_failed(self):
        self.control("errors Produce 10 MSG_SIZE_TOO_LARGE")
        r = self.send("a@example.com")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"^\S{26} failed example.com: too large")
        self.assertNotIn("accepted", r.stdout)


if __name__ == "__main__":
    unittest.main()
