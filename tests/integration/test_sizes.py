"""The size budget, end to end, and what classify accepts from a producer.

One private pipeline per test: a dev broker, sluice-scheduler,
sluice-sender delivering to a sluice-testsink (route "*"), and
sluice-submit. Messages and jobs of every size from 900,000 to 1,100,000
octets, in steps that cross each limit (librdkafka's old 1,000,000 default,
sluice-submit's SIZE, scheduler.max_job_bytes), go in through sluice-submit,
through libsluice (`sluice send`) and straight onto the jobs topic; each
must end delivered, or refused at the entrance (552 5.3.4, a synchronous
libsluice error) or, on the jobs topic, REJECTED with a DLQ record: never
accepted and then lost.

Then the jobs-topic contract (docs/producing.md): fields the scheduler
fills are ignored when a producer sets them, and malformed jobs (a NUL in
a string, control characters or excess length in job_id, more than 100
recipients, an address that is not UTF-8) are REJECTED with their reason.
Jobs are encoded here by hand so that any byte can be put anywhere."""

import json
import os
import smtplib
import struct
import subprocess
import time
import unittest

from sluicetest import (bin_path, case_tmpdir, devbroker_control, pb_field, wait_for,
                        wait_listening, write_file)
from test_submit import PASSWORDS, submit_pipeline, tls_ctx

DEADLINE = 60
MAX_JOB = 1024 * 1024           # scheduler.max_job_bytes (the default)
SIZE = MAX_JOB - 32 * 1024      # sluice-submit's SIZE: budget.h, SL_BUDGET_ENVELOPE
SWEEP = [900000, 999600, 1000100, SIZE - 200, SIZE + 200, 1040000, MAX_JOB, 1100000]


# ---- a Job encoded by hand (proto/sluice/v1/job.proto) ----

def _bytes(field, value):
    return pb_field(field, 2, value)


def _uint(field, value):
    return pb_field(field, 0, value)


def encode_job(job_id, to, domain, raw=None, template_id=None, vars=None, mail_from="s@example.net",
               attempt=0, not_before_ms=0, site=None, mx=(), null_mx=False):
    b = _uint(1, 1) + _bytes(2, job_id) + _bytes(7, mail_from)
    for r in to:
        b += _bytes(8, r)
    b += _bytes(9, domain)
    if raw is not None:
        b += _bytes(10, raw)
    if template_id:
        b += _bytes(11, template_id)
    for k, v in (vars or {}).items():
        b += _bytes(12, _bytes(1, k) + _bytes(2, v))
    if attempt:
        b += _uint(13, attempt)
    b += _uint(14, int(time.time() * 1000))
    if not_before_ms:
        b += _uint(16, not_before_ms)
    if site:
        b += _bytes(18, site)
    for host in mx:
        b += _bytes(19, _bytes(1, host) + _uint(2, 10))
    if null_mx:
        b += _uint(20, 1)
    return b


def raw_message(to, size):
    """A message of exactly size octets (CRLF lines, no leading dots)."""
    head = ("From: s@example.net\r\nTo: %s\r\nSubject: size %d\r\n\r\n" % (to, size)).encode()
    body = bytearray()
    need = size - len(head)
    line = b"x" * 76 + b"\r\n"
    while need - len(body) > len(line):
        body += line
    rest = need - len(body)
    body += b"y" * (rest - 2) + b"\r\n"
    msg = head + bytes(body)
    assert len(msg) == size, (len(msg), size)
    return msg


def job_of_size(job_id, to, domain, size):
    """An encoded job of exactly size octets."""
    base = encode_job(job_id, [to], domain, raw=b"")
    pad = size - len(base)
    for _ in range(3):  # the raw field's length varint grows with it
        job = encode_job(job_id, [to], domain, raw=raw_message(to, max(pad, 64)))
        pad += size - len(job)
    assert len(job) == size, (len(job), size)
    return job


class SizesCase(unittest.TestCase):
    extra = ""

    def setUp(self):
        self.tmp = case_tmpdir(self, "sluice-sizes-")
        self.port, self.pipe = submit_pipeline(
            self, self.tmp, "sites:\n  google: { mx: [\"*.google.com\"], domains: [gmail.test] }\n"
            + self.extra, control=True)
        self.sink, self.cfg = self.pipe.sink, self.pipe.cfg

    def control(self, command):
        """One devbroker control command (fault injection)."""
        answer = devbroker_control(self.tmp, command)
        self.assertTrue(answer.startswith("ok"), answer)

    def write(self, name, text):
        return write_file(self.tmp, name, text)

    def start_pipeline(self, submit=False):
        self.pipe.start_roles()
        if not submit:
            return
        self.submit = self.pipe.start("sluice-submit", "--hostname", "submit.test",
                                      "--ack-timeout", "20s")
        wait_listening(self.submit, self.port, "sluice-submit")

    def logs(self):
        return self.pipe.logs()

    def publish(self, records, cfg=None):
        """records: dicts for fault_publish (payload bytes under "payload")."""
        lines = []
        for r in records:
            r = dict(r)
            if "payload" in r:
                r["payload_hex"] = r.pop("payload").hex()
            lines.append(json.dumps(r))
        p = subprocess.run([bin_path("fault_publish"), "-c", cfg or self.cfg],
                           input="\n".join(lines) + "\n", capture_output=True, text=True,
                           timeout=DEADLINE)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def dump(self, topic, count=0, timeout_ms=3000):
        r = subprocess.run([bin_path("sched_tool"), "dump", "-c", self.cfg, "--topic", topic,
                            "--count", str(count), "--timeout", str(timeout_ms)],
                           capture_output=True, text=True, timeout=DEADLINE)
        return [json.loads(line) for line in r.stdout.splitlines()]

    def delivered(self):
        return {r for m in self.sink.messages() for r in m["rcpt"]}

    def rejected(self):
        """job_id -> reason of every REJECTED event so far."""
        out = {}
        for r in self.dump("events"):
            e = r.get("event", {})
            if e.get("type") == "REJECTED" and e.get("job_id"):
                out[e["job_id"]] = e.get("reason", "")
        return out

    def dlq_reasons(self):
        return [r.get("headers", {}).get("reason", "") for r in self.dump("dlq")]

    def wait_outcomes(self, jobs, what):
        """jobs: job_id -> recipient. Each must be delivered or REJECTED."""
        def done():
            got, rej = self.delivered(), self.rejected()
            missing = [j for j, rc in jobs.items() if rc not in got and j not in rej]
            return not missing
        try:
            wait_for(done, DEADLINE, what)
        except AssertionError as e:
            raise AssertionError("%s\ndelivered %s\nrejected %s%s" % (
                e, sorted(self.delivered()), self.rejected(), self.logs()))
        return self.delivered(), self.rejected()


class TestSizeBudget(SizesCase):
    def test_submit_sizes_are_delivered_or_refused_at_once(self):
        self.start_pipeline(submit=True)
        accepted, refused = [], []
        with smtplib.SMTP("127.0.0.1", self.port, timeout=DEADLINE) as s:
            s.starttls(context=tls_ctx())
            s.login("alice", PASSWORDS["alice"])
            # SIZE says what it takes: within scheduler.max_job_bytes.
            self.assertEqual(int(s.esmtp_features["size"]), SIZE)
            # A declared size over it is refused at MAIL, before any DATA.
            code, text = s.mail("alice@example.net", ["SIZE=%d" % (SIZE + 1)])
            self.assertEqual((code, text[:5]), (552, b"5.3.4"), text)
            s.rset()
            for size in SWEEP:
                to = "r%d@sizes.test" % size
                # No SIZE= here: the limit must hold after DATA too.
                self.assertEqual(s.mail("alice@example.net")[0], 250)
                self.assertEqual(s.rcpt(to)[0], 250)
                code, text = s.data(raw_message(to, size))
                if code == 250:
                    accepted.append((size, to))
                else:
                    self.assertEqual((code, text[:5]), (552, b"5.3.4"), (size, text))
                    refused.append(size)
                    s.rset()
        self.assertEqual([sz for sz, _ in accepted], [sz for sz in SWEEP if sz <= SIZE])
        self.assertEqual(refused, [sz for sz in SWEEP if sz > SIZE])
        try:
            self.sink.wait_messages(len(accepted), DEADLINE)
        except AssertionError as e:
            raise AssertionError("%s%s" % (e, self.logs()))
        self.assertEqual(self.delivered(), {to for _, to in accepted})

    def test_libsluice_sizes_are_delivered_or_refused_at_once(self):
        self.start_pipeline()
        sent = {}
        for size in SWEEP:
            to = "l%d@sizes.test" % size
            path = os.path.join(self.tmp, "m%d.eml" % size)
            with open(path, "wb") as f:
                f.write(raw_message(to, size))
            r = subprocess.run([bin_path("sluice"), "send", "-c", self.cfg, "--from",
                                "s@example.net", "--to", to, "--raw-file", path, "--json"],
                               capture_output=True, text=True, timeout=DEADLINE)
            # 0: acknowledged; 2: refused before anything was published.
            # 1 (published, then refused by Kafka) must never happen.
            self.assertIn(r.returncode, (0, 2), (size, r.stdout, r.stderr))
            if r.returncode == 2:
                self.assertIn("too large", r.stderr, size)
                self.assertGreater(size, MAX_JOB - 1000, r.stderr)
            else:
                sent[json.loads(r.stdout.splitlines()[0])["job_id"]] = to
        self.assertGreaterEqual(len(sent), len([s for s in SWEEP if s < MAX_JOB - 1000]))
        got, rej = self.wait_outcomes(sent, "every acknowledged job delivered")
        self.assertEqual(rej, {}, "a job libsluice accepted was rejected later")
        self.assertEqual(got, set(sent.values()))

    def test_jobs_topic_sizes_end_delivered_or_rejected_to_dlq(self):
        self.start_pipeline()
        jobs, records = {}, []
        for size in SWEEP + [MAX_JOB + 1]:
            jid, to = "size-%d" % size, "j%d@jobs%d.test" % (size, size)
            jobs[jid] = to
            records.append({"payload": job_of_size(jid, to, "jobs%d.test" % size, size),
                            "key": "jobs%d.test" % size})
        self.publish(records)
        got, rej = self.wait_outcomes(jobs, "every job delivered or REJECTED")
        for size in SWEEP + [MAX_JOB + 1]:
            jid = "size-%d" % size
            if size <= MAX_JOB:
                self.assertIn(jobs[jid], got, (size, rej.get(jid)))
            else:
                self.assertNotIn(jobs[jid], got)
                self.assertIn("max_job_bytes", rej[jid])
        n_big = len([s for s in SWEEP + [MAX_JOB + 1] if s > MAX_JOB])
        dlq = self.dlq_reasons()
        self.assertEqual(len([r for r in dlq if "max_job_bytes" in r]), n_big, dlq)

    def test_dlq_takes_a_record_larger_than_any_topic_allows(self):
        # A producer configured for bigger records than this cluster's
        # budget: its 1.6 MB job is refused by classify, and the DLQ keeps
        # a cut copy and says so, instead of failing to publish it.
        self.start_pipeline()
        with open(self.cfg) as f:
            big = self.write("big.yaml", f.read() + "scheduler: { max_job_bytes: 4M }\n")
        payload = job_of_size("huge-1", "h@huge.test", "huge.test", 1600000)
        self.publish([{"payload": payload, "key": "huge.test"}], cfg=big)
        wait_for(lambda: "huge-1" in self.rejected(), DEADLINE, "REJECTED huge-1")
        dlq = wait_for(lambda: self.dump("dlq"), DEADLINE, "a DLQ record")
        h = dlq[0]["headers"]
        self.assertIn("max_job_bytes", h["reason"])
        self.assertEqual(h.get("truncated"), "true", h)
        self.assertEqual(h.get("original-length"), str(len(payload)), h)


class TestHandoff(SizesCase):
    def test_a_job_kafka_refuses_downstream_is_rejected_not_committed_silently(self):
        # The job is on the jobs topic before the scheduler starts; then
        # the broker refuses the next produce for good (as a topic with a
        # smaller max.message.bytes would): classify's publication to sited.
        self.publish([{"payload": encode_job("h-1", ["a@handoff.test"], "handoff.test",
                                             raw=b"x\r\n"), "key": "handoff.test"}])
        self.control("errors Produce 1 MSG_SIZE_TOO_LARGE")
        self.start_pipeline()
        rej = wait_for(lambda: self.rejected().get("h-1"), DEADLINE, "REJECTED h-1")
        self.assertIn("could not hand the job on", rej)
        self.assertIn("too large", rej)
        dlq = self.dump("dlq")
        self.assertEqual(len(dlq), 1, dlq)
        self.assertIn("could not hand the job on", dlq[0]["headers"]["reason"])
        self.assertEqual(dlq[0]["headers"]["source-topic"], "sluice.jobs")
        self.assertEqual(self.delivered(), set())


class TestJobContract(SizesCase):
    def test_scheduler_fields_set_by_a_producer_are_ignored(self):
        self.start_pipeline()
        evil = dict(attempt=7, not_before_ms=int(time.time() * 1000) + 3600000,
                    site="evil", mx=["mx.evil.example"], null_mx=False)
        recs = [
            # a domain of sites.*.domains, a routed domain, and null MX set
            {"payload": encode_job("f-site", ["a@gmail.test"], "gmail.test", raw=b"x\r\n",
                                   **evil), "key": "gmail.test"},
            {"payload": encode_job("f-route", ["b@routed.test"], "routed.test", raw=b"x\r\n",
                                   **evil), "key": "routed.test"},
            {"payload": encode_job("f-null", ["c@null.test"], "null.test", raw=b"x\r\n",
                                   null_mx=True, attempt=3), "key": "null.test"},
            # the retry stage's own mark keeps the attempt count
            {"payload": encode_job("f-retry", ["d@retry.test"], "retry.test", raw=b"x\r\n",
                                   attempt=2, mx=["mx.old.example"]),
             "key": "retry.test", "headers": {"sluice-retry": "2"}},
            # a mark that does not match the job's attempt is not one
            {"payload": encode_job("f-forged", ["e@forged.test"], "forged.test", raw=b"x\r\n",
                                   attempt=5), "key": "forged.test",
             "headers": {"sluice-retry": "1"}},
        ]
        self.publish(recs)
        disp = {}

        def all_dispatched():
            for r in self.dump("dispatch"):
                disp[r["job_id"]] = r
            return len(disp) == len(recs)
        wait_for(all_dispatched, DEADLINE, "every job dispatched")
        for jid in ("f-site", "f-route", "f-null", "f-retry", "f-forged"):
            d = disp[jid]
            self.assertEqual(d["mx"], [], d)
            self.assertFalse(d["null_mx"], d)
            self.assertEqual(d["not_before_ms"], 0, d)
            self.assertNotEqual(d["site"], "evil", d)
            self.assertEqual(d["attempt"], 2 if jid == "f-retry" else 0, d)
        self.assertEqual(disp["f-site"]["site"], "google")
        # And they are delivered, through the route, not to mx.evil.example.
        self.sink.wait_messages(len(recs), DEADLINE)

    def test_malformed_jobs_are_rejected_with_their_reason(self):
        self.start_pipeline()
        many = ["m%d@many.test" % i for i in range(101)]
        cases = {
            # job_id: (encoded job, words the reason must hold)
            "c-nul-rcpt": (encode_job("c-nul-rcpt", ["ok\x00x@nul.test"], "nul.test",
                                      raw=b"x\r\n"), "NUL byte in recipients"),
            "c-nul-var": (encode_job("c-nul-var", ["v@nul.test"], "nul.test", template_id="t1",
                                     vars={"name": "a\x00b"}), "NUL byte in vars"),
            "c-ctl-id\x01": (encode_job("c-ctl-id\x01", ["i@id.test"], "id.test", raw=b"x\r\n"),
                             "control character"),
            "c-crlf-id\r\nX-Evil: 1": (
                encode_job("c-crlf-id\r\nX-Evil: 1", ["i@id.test"], "id.test", raw=b"x\r\n"),
                "CR or LF"),
            "c-long-" + "i" * 250: (
                encode_job("c-long-" + "i" * 250, ["i@id.test"], "id.test", raw=b"x\r\n"),
                "longer than 255"),
            "c-many": (encode_job("c-many", many, "many.test", raw=b"x\r\n"),
                       "more than 100 recipients"),
        }
        # Not UTF-8: a byte 0xFF inside the local part.
        bad = encode_job("c-utf8", ["PLACEHOLDER@utf.test"], "utf.test", raw=b"x\r\n")
        bad = bad.replace(b"PLACEHOLDER", b"ab\xffcdefghij")  # the same length
        cases["c-utf8"] = (bad, "invalid recipient address")
        self.publish([{"payload": p, "key": "k%d" % i}
                      for i, (p, _) in enumerate(cases.values())]
                     + [{"payload": encode_job("c-good", ["g@good.test"], "good.test",
                                               raw=b"x\r\n"), "key": "good.test"}])
        try:
            rej = wait_for(lambda: (lambda r: r if len(r) >= len(cases) else None)(
                self.rejected()), DEADLINE, "every malformed job REJECTED")
        except AssertionError as e:
            raise AssertionError("%s\nrejected: %s%s" % (e, self.rejected(), self.logs()))
        for jid, (_, why) in cases.items():
            self.assertIn(jid, rej, rej)
            self.assertIn(why, rej[jid], jid)
        dlq = self.dlq_reasons()
        for _, why in cases.values():
            self.assertTrue(any(why in r for r in dlq), (why, dlq))
        # The good job behind them went on; nothing malformed reached the sink.
        self.sink.wait_messages(1, DEADLINE)
        self.assertEqual(self.delivered(), {"g@good.test"})


if __name__ == "__main__":
    unittest.main()
