"""sluice-api against a real dev broker over real HTTPS (a certificate made
by openssl at test time): API keys, POST /v1/messages answered only once the
jobs are on the jobs topic (read back with `sluice events --jobs`),
idempotent retries, per-recipient errors, the MIME of an inline message
(parsed by Python's email package), limits and the usual daemon endpoints."""

import base64
import email
import email.policy
import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import unittest
import urllib.request

from sluicetest import Proc, bin_path, dump_topic, free_port, http_ready, wait_for, write_file
from test_devbroker import DevBroker
from test_submit import make_cert, tls_ctx

DEADLINE = 30
KEY = "sk_test_acme_0123456789abcdef0123456789abcdef"
SLOW_KEY = "sk_test_slow_0123456789abcdef0123456789abcdef"
ADMIN_KEY = "sk_test_ops_0123456789abcdef0123456789abcdef0"


def key_hash(key):
    r = subprocess.run([bin_path("sluice-api"), "--hash-key"], input=key + "\n",
                       capture_output=True, text=True, timeout=DEADLINE)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class ApiCase(unittest.TestCase):
    broker_args = ()
    ack_timeout = "10s"

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-api-")
        self.tmp = self._tmp.name
        self.addCleanup(self._tmp.cleanup)
        self.broker = DevBroker(self.tmp, self.broker_args)
        self.addCleanup(self.broker.stop)
        self.bootstrap = self.broker.bootstrap
        cert, key = make_cert(self.tmp)
        self.keys = keys = self.write("keys", "\n".join([
            "# test keys",
            "%s tenant=acme domains=example.net,*.example.net" % key_hash(KEY),
            "%s tenant=slow domains=example.org rate=3" % key_hash(SLOW_KEY),
            "%s tenant=ops admin=yes" % key_hash(ADMIN_KEY),
            ""]))
        self.port, self.pmetrics = free_port(), free_port()
        self.cfg = self.write("sluice.yaml", (
            "kafka:\n  bootstrap: %s\n"
            "api:\n  listen: 127.0.0.1:%d\n  cert: %s\n  key: %s\n  keys: %s\n"
            "  max_body: 4MB\n  ack_timeout: %s\n"
            "metrics: { listen: 127.0.0.1:%d }\n")
            % (self.bootstrap, self.port, cert, key, keys, self.ack_timeout, self.pmetrics))
        self.api = Proc("sluice-api", ["-c", self.cfg], tmpdir=self.tmp)
        self.addCleanup(self.api.stop)

        def ready():
            if not self.api.alive():
                raise AssertionError("sluice-api exited early\n" + self.api.output())
            return http_ready(self.pmetrics)

        wait_for(ready, 20, "sluice-api ready")

    def tearDown(self):
        if self.api.alive():
            self.assertEqual(self.api.stop(timeout=20), 0, self.api.output())

    def write(self, name, text):
        return write_file(self.tmp, name, text)

    def post(self, body, key=KEY, headers=None, path="/v1/messages", method="POST", port=None):
        c = http.client.HTTPSConnection("127.0.0.1", port or self.port, context=tls_ctx(),
                                        timeout=DEADLINE)
        h = {"Content-Type": "application/json"}
        if key is not None:
            h["Authorization"] = "Bearer " + key
        h.update(headers or {})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if body is None:
            data = None
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read()
        c.close()
        return r.status, dict(r.getheaders()), json.loads(text) if text else None

    def jobs(self):
        env = dict(os.environ)
        env.pop("SLUICE_CONFIG", None)
        r = subprocess.run([bin_path("sluice"), "events", "-c", self.cfg, "--jobs"],
                           capture_output=True, text=True, timeout=DEADLINE, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(line) for line in r.stdout.splitlines()]

    def dump(self, topic):
        return dump_topic(self.cfg, topic, 20000)

    def metric(self, name, port=None):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port or self.pmetrics),
                                    timeout=5) as r:
            text = r.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(name))


def simple(rcpts, **kw):
    body = {"sender": "news@example.net", "template_id": "welcome",
            "recipients": [{"address": a, "substitutions": {"name": a.split("@")[0]}}
                           for a in rcpts]}
    body.update(kw)
    return body


class TestApi(ApiCase):
    def test_bad_or_missing_key_is_401(self):
        status, hdrs, body = self.post(simple(["a@example.com"]), key="sk_wrong")
        self.assertEqual(status, 401)
        self.assertIn("Bearer", hdrs.get("WWW-Authenticate", ""))
        self.assertEqual(body["status"], 401)
        status, _, _ = self.post(simple(["a@example.com"]), key=None)
        self.assertEqual(status, 401)
        self.assertEqual(self.jobs(), [])
        self.assertGreaterEqual(self.metric("sluice_api_auth_failures_total"), 1)

    def test_202_job_ids_are_on_the_jobs_topic(self):
        rcpts = ["a@example.com", "b@example.com", "c@other.example"]
        status, _, body = self.post(simple(rcpts, campaign="spring", priority="bulk"))
        self.assertEqual(status, 202, body)
        self.assertEqual(body["accepted"], 3)
        ids = [r["job_id"] for r in body["recipients"]]
        self.assertEqual(len(set(ids)), 3)
        # Answered only after Kafka acknowledged: every job is readable now.
        jobs = {j["job_id"]: j for j in self.jobs()}
        self.assertEqual(set(jobs), set(ids))
        for r in body["recipients"]:
            j = jobs[r["job_id"]]
            self.assertEqual(j["recipients"], [r["address"]])
            self.assertEqual(j["tenant"], "acme")
            self.assertEqual(j["campaign"], "spring")
            self.assertEqual(j["template_id"], "welcome")
            self.assertEqual(j["vars"], {"name": r["address"].split("@")[0]})
            self.assertNotIn("transactional", j)  # bulk unless said otherwise

    def test_transactional_switch(self):
        status, _, body = self.post(simple(["a@example.com"], transactional=True))
        self.assertEqual(status, 202, body)
        jobs = {j["job_id"]: j for j in self.jobs()}
        self.assertIs(jobs[body["recipients"][0]["job_id"]]["transactional"], True)
        status, _, body = self.post(simple(["b@example.com"], transactional="yes"))
        self.assertEqual(status, 400)
        self.assertEqual(body["field"], "transactional")

    def test_idempotent_retry_publishes_no_new_job(self):
        req = simple(["a@example.com", "b@example.com"])
        s1, _, b1 = self.post(req, headers={"Idempotency-Key": "order-42"})
        self.assertEqual(s1, 202, b1)
        ids = [r["job_id"] for r in b1["recipients"]]
        s2, _, b2 = self.post(req, headers={"Idempotency-Key": "order-42"})
        self.assertEqual(s2, 202, b2)
        self.assertEqual([r["job_id"] for r in b2["recipients"]], ids)
        # Published once: the retry answers the acknowledged ids again.
        self.assertEqual(sorted(j["job_id"] for j in self.jobs()), sorted(ids))
        # Another key is another request.
        s3, _, b3 = self.post(req, headers={"Idempotency-Key": "order-43"})
        self.assertEqual(s3, 202, b3)
        self.assertTrue(set(ids).isdisjoint(r["job_id"] for r in b3["recipients"]))

    def test_ten_thousand_recipients(self):
        rcpts = ["user%d@d%d.example.com" % (i, i % 50) for i in range(10000)]
        status, _, body = self.post(simple(rcpts))
        self.assertEqual(status, 202, body)
        self.assertEqual(body["accepted"], 10000)
        ids = [r["job_id"] for r in body["recipients"]]
        self.assertEqual(len(set(ids)), 10000)
        self.assertEqual({j["job_id"] for j in self.jobs()}, set(ids))
        status, _, body = self.post(simple(rcpts + ["one.more@example.com"]))
        self.assertEqual(status, 400, body)
        self.assertEqual(body["field"], "recipients")

    def test_per_recipient_errors(self):
        status, _, body = self.post(simple(["good@example.com", "bad@exa mple.com",
                                            "also@example.com"]))
        self.assertEqual(status, 202, body)
        self.assertEqual((body["accepted"], body["rejected"]), (2, 1))
        bad = body["recipients"][1]
        self.assertNotIn("job_id", bad)
        self.assertIn("address", bad["error"])
        ids = {r["job_id"] for r in body["recipients"] if "job_id" in r}
        self.assertEqual({j["job_id"] for j in self.jobs()}, ids)
        status, _, body = self.post(simple(["bad@exa mple.com"]))
        self.assertEqual(status, 422, body)

    def test_inline_message_mime(self):
        pdf = bytes(range(256)) * 40
        req = {
            "sender": "news@mail.example.net",
            "recipients": [{"address": "ann@example.com",
                            "substitutions": {"name": "Ann", "city": "Zürich"},
                            "metadata": {"customer": "17"}}],
            "content": {
                "from_name": "Café Ünïcode",
                "subject": "Grüße aus Köln",
                "text": "Hello {{name}} from {{city}}!\n",
                "html": "<p>Hello <b>{{name}}</b></p>",
                "headers": {"List-Unsubscribe": "<mailto:u@example.net>"},
                "attachments": [{"filename": "report.pdf", "content_type": "application/pdf",
                                 "content": base64.b64encode(pdf).decode()}],
            },
        }
        status, _, body = self.post(req)
        self.assertEqual(status, 202, body)
        jid = body["recipients"][0]["job_id"]
        job = [j for j in self.jobs() if j["job_id"] == jid][0]
        self.assertEqual(job["meta"], {"customer": "17"})
        raw = job["raw"].encode() if isinstance(job["raw"], str) else bytes(job["raw"])
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(str(msg["Subject"]), "Grüße aus Köln")
        self.assertEqual(msg["To"], "ann@example.com")
        self.assertEqual(msg["From"].addresses[0].display_name, "Café Ünïcode")
        self.assertEqual(msg["List-Unsubscribe"], "<mailto:u@example.net>")
        self.assertEqual(msg.get_content_type(), "multipart/mixed")
        alt, att = msg.get_payload()
        self.assertEqual(alt.get_content_type(), "multipart/alternative")
        text, html = alt.get_payload()
        self.assertEqual(text.get_content().replace("\r\n", "\n"), "Hello Ann from Zürich!\n")
        self.assertEqual(html.get_content_type(), "text/html")
        self.assertIn("<b>Ann</b>", html.get_content())
        self.assertEqual(att.get_filename(), "report.pdf")
        self.assertEqual(att["Content-Transfer-Encoding"], "base64")
        self.assertEqual(att.get_content(), pdf)
        long = [line for line in raw.split(b"\r\n") if len(line) > 78]
        self.assertEqual(long, [])

    def test_bad_requests_name_the_field(self):
        status, _, body = self.post(simple(["a@example.com"], colour="blue"))
        self.assertEqual(status, 400)
        self.assertEqual(body["field"], "colour")
        status, _, body = self.post(b"{not json")
        self.assertEqual(status, 400)
        status, _, body = self.post({"sender": "news@example.net",
                                     "recipients": [{"address": "a@example.com"}]})
        self.assertEqual(status, 400)
        self.assertIn("template_id", body["detail"])
        status, _, body = self.post(simple(["a@example.com"], sender="x@example.com"))
        self.assertEqual(status, 403)
        self.assertEqual(body["field"], "sender")
        status, _, body = self.post(b"x" * (5 * 1024 * 1024))
        self.assertEqual(status, 413)
        self.assertEqual(self.jobs(), [])

    def test_rate_limit_429_with_retry_after(self):
        req = simple(["a@example.com", "b@example.com"], sender="n@example.org")
        status, _, body = self.post(req, key=SLOW_KEY)
        self.assertEqual(status, 202, body)
        status, hdrs, body = self.post(req, key=SLOW_KEY)
        self.assertEqual(status, 429, body)
        self.assertGreaterEqual(int(hdrs["Retry-After"]), 1)
        self.assertEqual(len(self.jobs()), 2)

    def test_sighup_reloads_keys(self):
        new = "sk_test_new_0123456789abcdef0123456789abcdef00"
        self.assertEqual(self.post(simple(["a@example.com"]), key=new)[0], 401)
        with open(self.keys, "a") as f:
            f.write("%s tenant=newco domains=example.net\n" % key_hash(new))
        self.api.send_signal(signal.SIGHUP)
        wait_for(lambda: self.post(simple(["a@example.com"]), key=new)[0] == 202, 10,
                 "the new key accepted")
        # A broken file keeps the keys in force.
        with open(self.keys, "a") as f:
            f.write("garbage\n")
        self.api.send_signal(signal.SIGHUP)
        wait_for(lambda: "keys file not reloaded" in self.api.output(), 10, "the reload refused")
        self.assertEqual(self.post(simple(["b@example.com"]), key=new)[0], 202)
        self.assertEqual({j["tenant"] for j in self.jobs()}, {"newco"})

    def test_metrics(self):
        status, _, body = self.post(simple(["a@example.com"]))
        self.assertEqual(status, 202, body)
        self.assertEqual(self.metric("sluice_api_recipients_accepted_total"), 1)
        self.assertGreaterEqual(self.metric('sluice_api_requests_total{code="202"}'), 1)
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.pmetrics,
                                    timeout=5) as r:
            self.assertEqual(r.status, 200)
            self.assertIn("api kafka poll", r.read().decode())

    def test_campaign_and_site_control_records(self):
        for action in ("suspend", "resume", "cancel"):
            status, _, body = self.post({"reason": "wrong list"} if action == "suspend" else b"",
                                        path="/v1/campaigns/spring/" + action)
            self.assertEqual(status, 202, body)
            self.assertEqual(body["action"], action)
        status, _, body = self.post(b"", path="/v1/sites/gmail/suspend")
        self.assertEqual(status, 403, body)  # a tenant's key may not stop a shared site
        status, _, body = self.post(b"", key=ADMIN_KEY, path="/v1/sites/gmail/suspend")
        self.assertEqual(status, 202, body)
        status, _, body = self.post(b"", key=ADMIN_KEY, path="/v1/sites/gmail/cancel")
        self.assertEqual(status, 404, body)
        status, _, body = self.post(b"", key=ADMIN_KEY, path="/v1/sites/gmail/purge")
        self.assertEqual(status, 202, body)
        status, _, body = self.post(b"", path="/v1/campaigns/spring/purge")
        self.assertEqual(status, 404, body)
        status, _, body = self.post(b"", key="sk_wrong", path="/v1/campaigns/spring/cancel")
        self.assertEqual(status, 401, body)
        # One key's records keep their order (one partition); keys do not.
        recs = sorted(self.dump("control"), key=lambda r: r["key"])
        self.assertEqual([(r["key"], r["scope"], r["action"], r["tenant"], r["target"])
                          for r in recs],
                         [("campaign/acme/spring", 1, 1, "acme", "spring"),
                          ("campaign/acme/spring", 1, 2, "acme", "spring"),
                          ("campaign/acme/spring", 1, 3, "acme", "spring"),
                          ("purge/site/gmail", 2, 4, "ops", "gmail"),
                          ("site/gmail", 2, 1, "ops", "gmail")])
        self.assertEqual(recs[0]["reason"], "wrong list")
        self.assertEqual({r["origin"] for r in recs}, {"api"})

    def test_campaign_get_counts_and_state(self):
        status, _, body = self.post(simple(["a@example.com", "b@example.com", "c@example.com"],
                                           campaign="spring"))
        self.assertEqual(status, 202, body)
        status, _, body = self.post(b"", path="/v1/campaigns/spring", method="GET")
        self.assertEqual(status, 200, body)
        self.assertEqual((body["tenant"], body["campaign"], body["state"]),
                         ("acme", "spring", "active"))
        # The ACCEPTED events of the three jobs; none has a final event yet.
        self.assertEqual(body["counts"]["accepted"], 3)
        self.assertEqual(body["counts"]["queued"], 3)
        self.assertEqual(body["counts"]["delivered"], 0)
        self.assertEqual(body["counts"]["unsubscribed"], 0)
        # An unsubscribe (published by whatever serves the one-click link)
        # is counted, once however often it is repeated, and is no final
        # event: the job stays queued.
        jid = body and self.jobs()[0]["job_id"]
        for _ in range(2):
            r = subprocess.run([bin_path("sched_tool"), "event", "-c", self.cfg, "--type",
                                "unsubscribed", "--id", jid, "--tenant", "acme",
                                "--campaign", "spring", "--to", "a@example.com"],
                               capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(r.returncode, 0, r.stderr)
        status, _, body = self.post(b"", path="/v1/campaigns/spring", method="GET")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["counts"]["unsubscribed"], 1)
        self.assertEqual(body["counts"]["queued"], 3)
        status, _, body = self.post({"reason": "wrong list"}, path="/v1/campaigns/spring/suspend")
        self.assertEqual(status, 202, body)
        status, _, body = self.post(b"", path="/v1/campaigns/spring", method="GET")
        self.assertEqual((body["state"], body["reason"]), ("suspended", "wrong list"))
        # Another tenant's campaign of the same name is another campaign.
        status, _, body = self.post(b"", key=ADMIN_KEY, path="/v1/campaigns/spring",
                                    method="GET")
        self.assertEqual(status, 200, body)
        self.assertEqual((body["state"], body["counts"]["accepted"]), ("active", 0))
        status, _, body = self.post(b"", path="/v1/campaigns/spring", method="DELETE")
        self.assertEqual(status, 405, body)

    def test_suppressions(self):
        path = "/v1/suppressions/Ann%40Example.COM"
        status, _, body = self.post(None, path=path, method="GET")
        self.assertEqual(status, 404, body)
        status, _, body = self.post({"reason": "asked by phone"}, path=path, method="PUT")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["address"], "ann@example.com")
        status, _, body = self.post(None, path=path, method="GET")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["reason"], "asked by phone")
        # Another tenant's list is another list.
        status, _, _ = self.post(None, key=SLOW_KEY, path=path, method="GET")
        self.assertEqual(status, 404)
        status, _, body = self.post(None, path=path, method="DELETE")
        self.assertEqual(status, 204, body)
        status, _, _ = self.post(None, path=path, method="GET")
        self.assertEqual(status, 404)
        recs = self.dump("suppressions")
        self.assertEqual([r["key"] for r in recs], ["acme/ann@example.com"] * 2)
        self.assertEqual(recs[0]["reason"], "asked by phone")
        self.assertTrue(recs[1].get("tombstone"))
        status, _, body = self.post(None, path="/v1/suppressions/not-an-address", method="PUT")
        self.assertEqual(status, 400, body)
        # The record is the one `sluice suppress list` reads.
        env = dict(os.environ)
        env.pop("SLUICE_CONFIG", None)
        self.post({"reason": "x"}, path=path, method="PUT")
        r = subprocess.run([bin_path("sluice"), "suppress", "-c", self.cfg, "--tenant", "acme",
                            "list"], capture_output=True, text=True, timeout=DEADLINE, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("acme/ann@example.com x", r.stdout)

    def test_suppressed_recipients_reported_at_request_time(self):
        # Suppressed through this API (at once) and with `sluice suppress`
        # (read from the topic within a tick).
        status, _, _ = self.post({"reason": "asked"}, path="/v1/suppressions/Ann%40Example.com",
                                 method="PUT")
        self.assertEqual(status, 200)
        env = dict(os.environ)
        env.pop("SLUICE_CONFIG", None)
        r = subprocess.run([bin_path("sluice"), "suppress", "-c", self.cfg, "--tenant", "acme",
                            "add", "bob@example.com"], capture_output=True, text=True,
                           timeout=DEADLINE, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: self.metric("sluice_api_suppressions") >= 2, 20, "both suppressions read")
        status, _, body = self.post(simple(["ann@example.com", "carl@example.com",
                                            "BOB@example.com"]))
        self.assertEqual(status, 202, body)
        self.assertEqual((body["accepted"], body["rejected"]), (1, 2))
        for i in (0, 2):
            self.assertNotIn("job_id", body["recipients"][i])
            self.assertIn("suppressed", body["recipients"][i]["error"])
        self.assertEqual([j["job_id"] for j in self.jobs()], [body["recipients"][1]["job_id"]])
        # Another tenant's list is another list; a removal applies at once.
        status, _, body = self.post(simple(["ann@example.com"], sender="n@example.org"),
                                    key=SLOW_KEY)
        self.assertEqual((status, body["accepted"]), (202, 1), body)
        status, _, _ = self.post(None, path="/v1/suppressions/ann%40example.com",
                                 method="DELETE")
        self.assertEqual(status, 204)
        status, _, body = self.post(simple(["ann@example.com"]))
        self.assertEqual((status, body["accepted"]), (202, 1))

    def test_suppression_import(self):
        addrs = ["u%d@example.com" % i for i in range(500)]
        status, _, body = self.post({"addresses": addrs + ["bad@exa mple.com"]},
                                    path="/v1/suppressions")
        self.assertEqual(status, 400, body)
        self.assertIn("addresses[500]", body["detail"])
        self.assertEqual(self.dump("suppressions"), [])
        status, _, body = self.post({"addresses": addrs, "reason": "old list"},
                                    path="/v1/suppressions")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["suppressed"], 500)
        recs = self.dump("suppressions")
        self.assertEqual(sorted(r["key"] for r in recs), sorted("acme/" + a for a in addrs))
        self.assertEqual({r["reason"] for r in recs}, {"old list"})


class TestApiShaping(ApiCase):
    def test_shaping_is_what_the_scheduler_wrote(self):
        status, _, body = self.post(b"", key=ADMIN_KEY, path="/v1/shaping", method="GET")
        self.assertEqual((status, body), (200, {"sites": []}))
        status, _, body = self.post(b"", path="/v1/shaping", method="GET")
        self.assertEqual(status, 403, body)  # sites are every tenant's: admin keys only
        # A real scheduler halves google's rate for 127.0.0.2 on a 421 and
        # writes the site's state to the state topic.
        cfg = self.write("sched.yaml", (
            "kafka:\n  bootstrap: %s\n"
            "pools:\n  default:\n    - { ip: 127.0.0.2, ehlo: mta1.example.net }\n"
            "sites:\n  google: { mx: [\"*.google.com\"], domains: [gmail.com] }\n"
            "shaping:\n  google: { max_message_rate: 5/s }\n") % self.bootstrap)
        sched = Proc("sluice-scheduler", ["-c", cfg], tmpdir=self.tmp)
        self.addCleanup(sched.stop)
        want = {"source_ip": "127.0.0.2", "state": "throttled", "sent_today": 0}

        def shaped():
            if not sched.alive():
                raise AssertionError("scheduler exited\n" + sched.output())
            r = subprocess.run([bin_path("sched_tool"), "event", "-c", cfg, "--type", "deferred",
                                "--site", "google", "--source-ip", "127.0.0.2", "--code", "421",
                                "--enh", "4.7.28", "--reply", "421-4.7.28 unusual rate"],
                               capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(r.returncode, 0, r.stderr)
            _, _, b = self.post(b"", key=ADMIN_KEY, path="/v1/shaping", method="GET")
            return b["sites"] and b

        body = wait_for(shaped, 60, "google's state in GET /v1/shaping")
        self.assertEqual([s["site"] for s in body["sites"]], ["google"])
        src = body["sites"][0]["sources"]
        self.assertEqual(len(src), 1, src)
        # Halved once per 421 the scheduler heard (it may have missed the
        # first ones while joining), down to the floor of 1/s.
        self.assertTrue(1.0 <= src[0].pop("rate_per_sec") <= 2.5, src)
        self.assertEqual(src[0], want)


class TestApiKafkaDown(ApiCase):
    broker_args = ("--brokers", "1")
    ack_timeout = "2s"

    def test_503_then_an_idempotent_retry_gets_the_same_ids(self):
        req = simple(["a@example.com", "b@example.org"])
        hdr = {"Idempotency-Key": "batch-7"}
        self.assertEqual(self.broker.command("broker down 1"), "ok broker 1 down")
        status, hdrs, body = self.post(req, headers=hdr)
        self.assertEqual(status, 503, body)
        self.assertEqual(hdrs["Retry-After"], "1")
        self.assertEqual(self.broker.command("broker up 1"), "ok broker 1 up")
        status, _, body = wait_for(
            lambda: (lambda r: r if r[0] == 202 else None)(self.post(req, headers=hdr)),
            DEADLINE, "202 once Kafka is back")
        ids = {r["job_id"] for r in body["recipients"]}
        self.assertEqual(len(ids), 2)
        # Whatever the first attempt left in flight carries the same ids.
        wait_for(lambda: {j["job_id"] for j in self.jobs()} == ids, DEADLINE,
                 "only the answered job ids on the jobs topic")


class TestApiIdempotencyAcrossInstances(ApiCase):
    """Two sluice-api instances on one broker, as behind a load balancer:
    the Idempotency-Key record one writes to the idempotency topic is what
    the other (and the first after a restart) answers a retry from."""

    def start_api(self, name):
        port, pmetrics = free_port(), free_port()
        with open(self.cfg) as f:
            text = f.read()
        text = text.replace("127.0.0.1:%d\n" % self.port, "127.0.0.1:%d\n" % port)
        text = text.replace("127.0.0.1:%d }" % self.pmetrics, "127.0.0.1:%d }" % pmetrics)
        cfg = self.write(name + ".yaml", text)
        api = Proc("sluice-api", ["-c", cfg], tmpdir=self.tmp)
        self.addCleanup(api.stop)
        def ready():
            if not api.alive():
                raise AssertionError(name + " exited early\n" + api.output())
            return http_ready(pmetrics)

        wait_for(ready, 20, name + " ready")
        return api, port, pmetrics

    def test_retry_on_another_instance_and_after_a_restart(self):
        api2, port2, metrics2 = self.start_api("api2")
        req = simple(["a@example.com", "b@example.com", "not an address"], campaign="spring")
        hdr = {"Idempotency-Key": "order-4711"}
        s1, _, b1 = self.post(req, headers=hdr)
        self.assertEqual(s1, 202, b1)
        self.assertEqual((b1["accepted"], b1["rejected"]), (2, 1))
        ids = [r.get("job_id") for r in b1["recipients"]]
        self.assertEqual(self.jobs_published(), sorted(i for i in ids if i))
        # The retry reaches the other instance: same answer, nothing published.
        s2, _, b2 = self.post(req, headers=hdr, port=port2)
        self.assertEqual(s2, 202, b2)
        self.assertEqual(b2, b1)
        self.assertEqual(self.jobs_published(), sorted(i for i in ids if i))
        self.assertEqual(self.metric('sluice_api_idempotent_replays_total{result="same"}',
                                     metrics2), 1)
        # The same key with another body is refused, naming the header.
        other = simple(["c@example.com"])
        s3, _, b3 = self.post(other, headers=hdr, port=port2)
        self.assertEqual(s3, 422, b3)
        self.assertEqual(b3["field"], "Idempotency-Key")
        # The first instance restarts: it reads the record back.
        self.assertEqual(self.api.stop(timeout=20), 0, self.api.output())
        self.api = Proc("sluice-api", ["-c", self.cfg], tmpdir=self.tmp)
        self.addCleanup(self.api.stop)
        wait_for(lambda: http_ready(self.pmetrics), 20, "sluice-api ready again")
        s4, _, b4 = self.post(req, headers=hdr)
        self.assertEqual(s4, 202, b4)
        self.assertEqual(b4, b1)
        s5, _, b5 = self.post(other, headers=hdr)
        self.assertEqual(s5, 422, b5)
        self.assertEqual(self.jobs_published(), sorted(i for i in ids if i))
        # 10,000 recipients, half refused: the record of the refusals fits
        # the topic, and the other instance answers them all again.
        big = simple(["u%d@example.com" % i if i % 2 else "bad %d" % i for i in range(10000)])
        s6, _, b6 = self.post(big, headers={"Idempotency-Key": "big"})
        self.assertEqual((s6, b6["accepted"]), (202, 5000))
        s7, _, b7 = self.post(big, headers={"Idempotency-Key": "big"}, port=port2)
        self.assertEqual(s7, 202)
        self.assertEqual(b7, b6)
        self.assertEqual(self.metric('sluice_api_idempotent_replays_total{result="same"}',
                                     metrics2), 2)
        self.assertEqual(api2.stop(timeout=20), 0, api2.output())

    def test_the_race_of_two_instances_costs_at_most_a_second_copy(self):
        # Both instances get the key at once, before either recorded it:
        # both may publish, under the same job ids (docs/api.md).
        _, port2, _ = self.start_api("api2")
        req = simple(["a@example.com", "b@example.com"])
        hdr = {"Idempotency-Key": "race-1"}
        answers = [None, None]

        def send(i, port):
            answers[i] = self.post(req, headers=hdr, port=port)

        threads = [threading.Thread(target=send, args=(i, p))
                   for i, p in enumerate((self.port, port2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
        (s1, _, b1), (s2, _, b2) = answers
        self.assertEqual((s1, s2), (202, 202), (b1, b2))
        ids = [r["job_id"] for r in b1["recipients"]]
        self.assertEqual([r["job_id"] for r in b2["recipients"]], ids)
        first = self.jobs_published()
        for i in ids:
            self.assertIn(first.count(i), (1, 2), first)
        self.assertEqual(set(first), set(ids))
        # Once recorded, a retry anywhere adds nothing.
        for port in (self.port, port2):
            s, _, b = self.post(req, headers=hdr, port=port)
            self.assertEqual((s, [r["job_id"] for r in b["recipients"]]), (202, ids))
        self.assertEqual(self.jobs_published(), first)

    def jobs_published(self):
        """Every record on the jobs topic, by job id (a repeat shows twice)."""
        return sorted(j["job_id"] for j in self.jobs())


class TestApiCommandLine(unittest.TestCase):
    def test_new_key_hash_round_trip(self):
        r = subprocess.run([bin_path("sluice-api"), "--new-key"], capture_output=True,
                           text=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
        self.assertEqual(key_hash(lines["key"].strip()), lines["hash"].strip())

    def test_plain_http_needs_allow_plain(self):
        with tempfile.TemporaryDirectory() as d:
            keys = write_file(d, "keys", "")
            cfg = write_file(d, "c.yaml", "api:\n  listen: 127.0.0.1:%d\n  keys: %s\n"
                             % (free_port(), keys))
            r = subprocess.run([bin_path("sluice-api"), "-c", cfg], capture_output=True,
                               text=True, timeout=DEADLINE)
            self.assertEqual(r.returncode, 2)
            self.assertIn("allow_plain", r.stderr)

    def test_bad_keys_file_exits_2(self):
        with tempfile.TemporaryDirectory() as d:
            keys = write_file(d, "keys", "%s tenant=a colour=blue\n" % ("ab" * 32))
            cfg = write_file(d, "c.yaml", "api:\n  listen: 127.0.0.1:%d\n  keys: %s\n"
                             "  allow_plain: true\n" % (free_port(), keys))
            r = subprocess.run([bin_path("sluice-api"), "-c", cfg], capture_output=True,
                               text=True, timeout=DEADLINE)
            self.assertEqual(r.returncode, 2)
            self.assertIn("keys:1: unknown field 'colour'", r.stderr)


if __name__ == "__main__":
    unittest.main()
