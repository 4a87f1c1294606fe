"""The pipeline on real Kafka: every door to the sink, and its daemons killed.

SLUICE_KAFKA=real only (harness.py: one 3-node cluster for the file,
replication factor 3, min.insync.replicas 2; each scenario its own topics).
Small sizes: the whole file is meant to cost about 3 minutes.

- bulk: `sluice bulk` (libsluice) -> scheduler -> sender -> sink.
- submission: SMTP clients -> sluice-submit -> ... -> sink; sluice-submit
  SIGKILLed under load and started again: every message the clients were
  told was accepted (250) is delivered.
- api: POST /v1/messages -> sluice-api -> ... -> sink; sluice-api
  SIGKILLed under load and started again: every 202 is delivered.
- shaping: a site limited to RATE/s: the send times the scheduler planned
  within a tolerance of RATE/s, and the sink (t_us of each message) never
  faster than RATE/s over the run.
- retry: a greylisting sink answers each recipient's first RCPT with 450,
  then accepts: each job goes through the retry topic and is delivered
  once.
- suppression: suppressed recipients are never at the sink and end
  SUPPRESSED; the others are delivered.
- webhook: sluice-webhook SIGKILLed while it forwards the run's events to
  an HTTP endpoint: every event reaches the endpoint at least once.

Every scenario reconciles job by job (harness.reconcile: lost 0,
duplicates counted); the books of the doors are kept per recipient, each
job having its own.
"""

import http.client
import json
import os
import smtplib
import socket
import subprocess
import sys
import threading
import unittest

from harness import HERE, REAL, Cluster, log, wait_for
from sluicetest import bin_path, free_port

sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from test_api import KEY, key_hash  # noqa: E402
from test_submit import PASSWORDS, hash_password, make_cert, tls_ctx  # noqa: E402
from test_webhook import Endpoint  # noqa: E402

RATE = 20       # messages/s of the shaped site (one source IP)
TOLERANCE = 0.15


def door_books(c, ids_by_rcpt, scenario):
    """The books of a door, per recipient (one job each): every recipient a
    client was told was accepted has a final event and is at the sink."""
    r = c.reconcile(list(ids_by_rcpt.values()), scenario)
    copies = {}
    for m in c.sink.messages():
        for a in m.get("rcpt", []):
            copies[a] = copies.get(a, 0) + 1
    missing = [a for a in ids_by_rcpt if not copies.get(a)]
    r["missing_at_sink"] = missing
    r["duplicates_by_rcpt"] = sum(n - 1 for a, n in copies.items() if a in ids_by_rcpt and n > 1)
    log("%s: accepted=%d missing_at_sink=%d duplicates_by_rcpt=%d"
        % (scenario, len(ids_by_rcpt), len(missing), r["duplicates_by_rcpt"]))
    return r


@unittest.skipUnless(REAL, "the real-Kafka tier (SLUICE_KAFKA=real)")
class PipelineTest(unittest.TestCase):
    def cluster(self, name, **kw):
        c = Cluster(name, **kw)
        self.addCleanup(c.close)
        return c

    def assert_books(self, r, duplicates=0):
        self.assertEqual(r["lost"], 0, r)
        self.assertEqual(r["phantom"], [], r)
        self.assertEqual(r["conflicting"], [], r)
        if duplicates is not None:
            self.assertEqual(r["duplicates"], duplicates, r)

    # ---- libsluice ----

    def test_bulk_end_to_end(self):
        n = 400
        c = self.cluster("pipe-bulk")
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        tmpl = os.path.join(c.tmp, "t.eml")
        with open(tmpl, "w") as f:
            f.write("From: News <news@example.net>\nTo: {{email}}\nSubject: Hi {{name}}\n\n"
                    "Hi {{name}}.\n")
        r = subprocess.run([bin_path("sluice"), "template", "put", "-c", c.cfg, "news", tmpl],
                           capture_output=True, text=True, timeout=60, env=c.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        rcpts = os.path.join(c.tmp, "rcpts.csv")
        with open(rcpts, "w") as f:
            f.write("email,name\n" + "".join("b%d@d%d.test,N%d\n" % (i, i % 8, i)
                                             for i in range(n)))
        r = subprocess.run([bin_path("sluice"), "bulk", "-c", c.cfg, "--template", "news",
                            "--recipients", rcpts, "--format", "csv", "--from",
                            "news@example.net", "--campaign", "pipe", "--no-progress", "--json"],
                           capture_output=True, text=True, timeout=120, env=c.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(summary["published"], n, summary)
        # The job ids are the ones libsluice wrote to the jobs topic.
        jobs = c.dump("jobs", timeout_ms=60000, count=n)
        ids = [j["job_id"] for j in jobs]
        self.assertEqual(len(set(ids)), n, "jobs on the topic: %d" % len(ids))
        c.wait_final(ids, 120, check_alive=("sched-1", "sender-1"))
        c.wait_quiet()
        books = c.reconcile(ids, "pipe-bulk")
        self.assert_books(books)
        self.assertEqual(books["final"], {"DELIVERED": n}, books)
        got = sorted(a for m in c.sink.messages() for a in m["rcpt"])
        self.assertEqual(got, sorted("b%d@d%d.test" % (i, i % 8) for i in range(n)))

    # ---- shaping, retry, suppression ----

    def test_shaping_rate_at_sink(self):
        n = RATE * 12
        # One recipient domain, the rated site, and one source IP: the
        # site's limit is the rate at the sink.
        c = self.cluster("pipe-shape", ips=1, domains=1,
                         extra_yaml="sites:\n  rated: { domains: [d0.test] }\n")
        with open(c.cfg) as f:
            text = f.read()
        text = text.replace("shaping:\n", "shaping:\n  rated: { max_message_rate: %d/s, "
                            "burst: 1 }\n" % RATE, 1)
        with open(c.cfg, "w") as f:
            f.write(text)
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        specs = c.job_specs(n, "shape")
        ids = [s["job_id"] for s in specs]
        c.publish(specs)
        c.wait_final(ids, 120, check_alive=("sched-1", "sender-1"))
        c.wait_quiet()
        books = c.reconcile(ids, "pipe-shape")
        self.assert_books(books)
        self.assertEqual(books["final"], {"DELIVERED": n}, books)
        # The scheduler's pacing: the send times it gave the jobs, past the
        # first second (the burst), within the tolerance both ways.
        plan = sorted(r["send_at_ms"] for r in c.dump("dispatch", timeout_ms=30000, count=n))
        self.assertEqual(len(plan), n)
        t0 = plan[0] + 1000
        planned = sum(1 for t in plan if t0 <= t < t0 + 8000) / 8.0
        # At the receiving server: never faster than the limit. From the
        # first message to the last, the sink saw at most RATE/s (plus the
        # burst of one). A sender slowed by a busy machine only makes the
        # span longer; speed is not asserted, the limit is.
        ts = sorted(m["t_us"] for m in c.sink.messages())
        span = (ts[-1] - ts[0]) / 1e6
        at_sink = (len(ts) - 1) / span
        w0 = ts[0] + 1000000
        win = sum(1 for t in ts if w0 <= t < w0 + 8000000) / 8.0
        log("pipe-shape: limit %d/s; planned %.1f/s; at the sink %.1f/s over the run (%d in "
            "%.1f s), %.1f/s over 8 s past the first second" % (RATE, planned, at_sink, len(ts),
                                                               span, win))
        self.assertLess(abs(planned - RATE), RATE * TOLERANCE, "planned %.1f/s" % planned)
        self.assertLess(at_sink, RATE * (1 + TOLERANCE), "%.1f/s at the sink" % at_sink)

    def test_retry_after_4xx(self):
        n = 100
        c = self.cluster("pipe-retry", sink_args=["--greylist"])
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        specs = c.job_specs(n, "retry")
        ids = [s["job_id"] for s in specs]
        c.publish(specs)
        tail = c.wait_final(ids, 120, check_alive=("sched-1", "sender-1"))
        c.wait_quiet()
        books = c.reconcile(ids, "pipe-retry")
        self.assert_books(books)
        self.assertEqual(books["final"], {"DELIVERED": n}, books)
        # Each job was deferred first (the 450), then delivered from the
        # retry topic on a later attempt.
        deferred = {e["job_id"] for e in tail.events if e.get("type") == "DEFERRED"}
        self.assertEqual(deferred, set(ids))
        for i in ids:
            ev = tail.finals[i][0]
            self.assertGreaterEqual(ev.get("attempt", 0), 1, ev)
        # The first retry topic (retry.delays[0] = 1s) held every job once.
        retried = c.dump("retry.1s", timeout_ms=20000, count=n)
        self.assertEqual(sorted(j["job_id"] for j in retried), sorted(ids))

    def test_suppressed_never_delivered(self):
        n = 200
        c = self.cluster("pipe-suppress")
        gone = ["u%d@d%d.test" % (i, i % 8) for i in range(0, n, 10)]
        r = subprocess.run([bin_path("sluice"), "suppress", "-c", c.cfg, "add"] + gone,
                           capture_output=True, text=True, timeout=60, env=c.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        specs = c.job_specs(n, "supp")
        ids = [s["job_id"] for s in specs]
        c.publish(specs)
        c.wait_final(ids, 120, check_alive=("sched-1", "sender-1"))
        c.wait_quiet()
        books = c.reconcile(ids, "pipe-suppress", expect_final=lambda i: (
            "SUPPRESSED" if int(i.rsplit("-", 1)[1]) % 10 == 0 else "DELIVERED"))
        self.assert_books(books)
        self.assertEqual(books["wrong"], [], books)
        self.assertEqual(books["final"], {"DELIVERED": n - len(gone), "SUPPRESSED": len(gone)})
        at_sink = {a for m in c.sink.messages() for a in m["rcpt"]}
        self.assertEqual(at_sink & set(gone), set())

    # ---- the doors, and their daemons SIGKILLed ----

    def start_door(self, c, name, binary, args, port):
        p = c._start(name, binary, args, wait_ready=False)

        def listening():
            if not p.alive():
                raise AssertionError("%s exited\n%s" % (name, p.output()[-3000:]))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, 30, "%s listening" % name, interval=0.1)
        return p

    def test_submit_sigkill(self):
        clients, per_client = 4, 60
        c = self.cluster("pipe-submit")
        cert, key = make_cert(c.tmp)
        users = os.path.join(c.tmp, "users")
        with open(users, "w") as f:
            f.write("alice:%s domains=example.net\n" % hash_password(PASSWORDS["alice"]))
        port = free_port()
        with open(c.cfg, "a") as f:
            f.write("submit:\n  listen: [\"127.0.0.1:%d starttls\"]\n  cert: %s\n  key: %s\n"
                    "  users: %s\n" % (port, cert, key, users))
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        args = ["--hostname", "submit.test", "--ack-timeout", "10s"]
        self.start_door(c, "submit-1", "sluice-submit", args, port)
        accepted = {}  # recipient -> job id, for every 250
        lock = threading.Lock()
        errors = []

        def client(k):
            i = 0
            while i < per_client:
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                        s.starttls(context=tls_ctx())
                        s.login("alice", PASSWORDS["alice"])
                        while i < per_client:
                            to = "c%d-%d@d%d.test" % (k, i, i % 8)
                            msg = ("From: alice@example.net\r\nTo: %s\r\nSubject: s %d\r\n\r\n"
                                   "body\r\n" % (to, i))
                            s.mail("alice@example.net")
                            code, _ = s.rcpt(to)
                            if code != 250:
                                raise smtplib.SMTPException("RCPT %d" % code)
                            code, text = s.data(msg.encode())
                            i += 1  # answered: the next message, whatever the answer
                            if code == 250:
                                jid = text.decode().rsplit(" ", 1)[1]
                                with lock:
                                    accepted[to] = jid
                except (OSError, smtplib.SMTPException) as e:
                    # The daemon was killed under this client: the message
                    # in flight was never acknowledged; go on with the next.
                    with lock:
                        errors.append(repr(e))
                    i += 1
                    wait_for(lambda: _listening(port), 60, "sluice-submit back", interval=0.1)

        threads = [threading.Thread(target=client, args=(k,), daemon=True)
                   for k in range(clients)]
        for t in threads:
            t.start()
        total = clients * per_client
        wait_for(lambda: len(accepted) >= total // 3, 120, "a third accepted", interval=0.05)
        c.kill("submit-1")
        self.start_door(c, "submit-2", "sluice-submit", args, port)
        for t in threads:
            t.join(timeout=180)
        self.assertFalse(any(t.is_alive() for t in threads))
        log("pipe-submit: accepted=%d of %d, client errors at the kill: %d"
            % (len(accepted), total, len(errors)))
        self.assertGreater(len(accepted), total // 2)
        c.wait_final(list(accepted.values()), 120, check_alive=("sched-1", "sender-1"))
        c.wait_quiet()
        books = door_books(c, accepted, "pipe-submit-sigkill")
        self.assert_books(books, duplicates=None)
        self.assertEqual(books["missing_at_sink"], [], books)

    def test_api_sigkill(self):
        batches, per_batch = 40, 5
        c = self.cluster("pipe-api")
        cert, key = make_cert(c.tmp)
        keys = os.path.join(c.tmp, "keys")
        with open(keys, "w") as f:
            f.write("%s tenant=acme domains=example.net\n" % key_hash(KEY))
        port = free_port()
        with open(c.cfg, "a") as f:
            f.write("api:\n  listen: 127.0.0.1:%d\n  cert: %s\n  key: %s\n  keys: %s\n"
                    % (port, cert, key, keys))
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        self.start_door(c, "api-1", "sluice-api", [], port)
        accepted = {}
        refused = []

        def post(b):
            rcpts = ["a%d-%d@d%d.test" % (b, k, k % 8) for k in range(per_batch)]
            req = {"sender": "news@example.net", "campaign": "pipe",
                   "recipients": [{"address": a} for a in rcpts],
                   "content": {"subject": "s", "text": "body %d\n" % b}}
            try:
                h = http.client.HTTPSConnection("127.0.0.1", port, context=tls_ctx(), timeout=30)
                h.request("POST", "/v1/messages", body=json.dumps(req).encode(),
                          headers={"Authorization": "Bearer " + KEY})
                resp = h.getresponse()
                body = json.loads(resp.read() or b"null")
                h.close()
            except (OSError, http.client.HTTPException, ValueError) as e:
                refused.append(repr(e))
                return
            if resp.status != 202:
                refused.append((resp.status, body))
                return
            for a, res in zip(rcpts, body["recipients"]):
                accepted[a] = res["job_id"]

        for b in range(batches):
            if b == batches // 2:
                # A POST in flight while the daemon dies.
                t = threading.Thread(target=post, args=(b,), daemon=True)
                t.start()
                c.kill("api-1")
                t.join(timeout=60)
                self.start_door(c, "api-2", "sluice-api", [], port)
                continue
            post(b)
        log("pipe-api: accepted=%d refused=%d %s" % (len(accepted), len(refused), refused[:3]))
        self.assertGreaterEqual(len(accepted), (batches - 1) * per_batch)
        c.wait_final(list(accepted.values()), 120, check_alive=("sched-1", "sender-1"))
        c.wait_quiet()
        books = door_books(c, accepted, "pipe-api-sigkill")
        self.assert_books(books, duplicates=None)
        self.assertEqual(books["missing_at_sink"], [], books)

    def test_webhook_sigkill(self):
        n = 300
        ep = Endpoint()
        self.addCleanup(ep.close)
        c = self.cluster("pipe-webhook",
                         extra_yaml="webhook:\n  endpoints:\n    - { url: \"%s\", secret: "
                         "\"s3cret-key\", batch_size: 20, timeout: 5s }\n" % ep.url)
        c.start_scheduler("sched-1")
        c.start_sender("sender-1")
        self.start_hook(c, "webhook-1")
        specs = c.job_specs(n, "hook")
        ids = [s["job_id"] for s in specs]
        pub = c.publish_paced(specs, 8)
        wait_for(lambda: len(ep.job_ids() & set(ids)) >= n // 4, 120,
                 "a quarter of the jobs' events at the endpoint", interval=0.05)
        c.kill("webhook-1")
        self.start_hook(c, "webhook-2")
        pub.join(timeout=120)
        self.assertIsNone(pub.error, "publishing failed: %s" % pub.error)
        tail = c.wait_final(ids, 120, check_alive=("sched-1", "sender-1", "webhook-2"))
        c.wait_quiet()
        books = c.reconcile(ids, "pipe-webhook-sigkill")
        self.assert_books(books)
        # Every event of the run reaches the endpoint at least once.
        key = lambda e: (e.get("job_id"), e.get("type"), e.get("attempt", 0))  # noqa: E731
        want = {key(e) for e in tail.events if e.get("job_id") in set(ids)}

        def all_there():
            with ep.lock:
                got = {key(e) for e in ep.events}
            all_there.missing = want - got
            return not all_there.missing
        try:
            wait_for(all_there, 60, "every event at the endpoint", interval=0.2)
        except AssertionError:
            raise AssertionError("%d events never reached the endpoint: %s"
                                 % (len(all_there.missing), sorted(all_there.missing)[:5]))
        with ep.lock:
            extra = len(ep.events) - len({key(e) for e in ep.events})
        log("pipe-webhook-sigkill: events=%d at the endpoint again after the kill: %d"
            % (len(want), extra))

    def start_hook(self, c, name):
        return c._start(name, "sluice-webhook", [])


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main()
