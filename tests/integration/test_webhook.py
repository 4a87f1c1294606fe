"""sluice-webhook against the dev broker and a local HTTP endpoint.

The endpoint is a Python http.server that fails with 500 for the first N
requests (or while told to), then accepts. We assert that every published
event arrives at least once, that every request's X-Sluice-Signature is the
HMAC-SHA256 of "X-Sluice-Timestamp.body" with a fresh timestamp (the
receiver-side check docs/operations.md shows), that a batch the endpoint
refuses with 400 is tried webhook.max_attempts times, dead-lettered and
replayed by `sluice-webhook --replay`, that nothing is skipped after the endpoint
recovers, that a malformed record goes to the DLQ instead of stopping the
stream, and that events held back by a down endpoint survive a restart of
sluice-webhook (nothing is committed before a 2xx).
"""

import hashlib
import hmac
import http.server
import json
import os
import re
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

from sluicetest import Proc, bin_path, free_port, start_devbroker, wait_for

SECRET = b"s3cret-key"
TOLERANCE = 300  # seconds; what docs/operations.md tells receivers to accept


def verify(secret, headers, body, now=None):
    """The receiver-side check of docs/operations.md: a fresh timestamp,
    and the HMAC of "timestamp.body"."""
    ts = headers.get("X-Sluice-Timestamp", "")
    sig = headers.get("X-Sluice-Signature", "")
    if not ts.isdigit() or abs((now or time.time()) - int(ts)) > TOLERANCE:
        return False
    want = "sha256=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(sig, want)


class Endpoint:
    """A webhook receiver: records every request; fails while fail_left > 0
    or while down is set."""

    def __init__(self, fail_first=0, tls=None):
        self.lock = threading.Lock()
        self.reject = False  # answer 400: the batch itself is refused
        self.bodies = []  # every request body, in order
        self.tls = tls
        self.log = []  # (accepted, [(job_id, attempt, type)...]) per request, in order
        self.fail_left = fail_first
        self.down = False
        self.requests = 0
        self.failed = 0
        self.bad_signatures = 0
        self.events = []  # every event accepted (2xx), in order
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.requests += 1
                    outer.bodies.append(body)
                    if not verify(SECRET, self.headers, body):
                        outer.bad_signatures += 1
                    fail = outer.down or outer.reject or outer.fail_left > 0
                    if outer.fail_left > 0:
                        outer.fail_left -= 1
                    batch = json.loads(body)
                    outer.log.append((not fail, [(e.get("job_id"), e.get("attempt", 0),
                                                  e.get("type")) for e in batch]))
                    if fail:
                        outer.failed += 1
                    else:
                        outer.events.extend(batch)
                code = (400 if outer.reject else 500) if fail else 204
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "%s://127.0.0.1:%d/hook" % ("https" if self.tls else "http", self.port)

    def job_ids(self):
        with self.lock:
            return {e.get("job_id") for e in self.events}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WebhookTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sluice-webhook-test-")
        self.dir = self.tmp.name
        self.broker, self.bootstrap = start_devbroker(self.dir, ["--brokers", "1"])
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.stop()
        self.broker.stop()
        self.tmp.cleanup()

    def config(self, endpoints, extra=""):
        path = os.path.join(self.dir, "sluice.yaml")
        eps = "".join("    - { url: \"%s\", secret: \"%s\", batch_size: %d, timeout: 5s }\n"
                      % (url, SECRET.decode(), batch) for url, batch in endpoints)
        with open(path, "w") as f:
            f.write("kafka:\n"
                    "  bootstrap: \"%s\"\n"
                    "  partitions: 3\n"
                    "  session_timeout_ms: 6000\n"
                    "  heartbeat_interval_ms: 1000\n"
                    "  commit_interval_ms: 200\n"
                    "sender:\n"
                    "  drain_timeout: 3s\n"
                    "webhook:\n%s"
                    "  endpoints:\n%s" % (self.bootstrap, extra, eps))
        return path

    def publish(self, cfg, count, prefix, garbage=0):
        p = Proc("sluice-publish-events", ["-c", cfg, "--count", count, "--prefix", prefix,
                                           "--garbage", garbage], tmpdir=self.dir)
        rc = p.wait(60)
        self.assertEqual(rc, 0, p.output())
        p.stop()

    def start_webhook(self, cfg, env=None, args=()):
        p = Proc("sluice-webhook", ["-c", cfg, *args], tmpdir=self.dir, env=env)
        self.procs.append(p)
        return p

    def test_check_flag(self):
        cfg = self.config([("http://127.0.0.1:1/", 10)])
        p = Proc("sluice-webhook", ["-c", cfg, "--check"], tmpdir=self.dir)
        self.assertEqual(p.wait(20), 0, p.output())
        p.stop()
        self.assertIn("ok", p.stdout())
        bad = os.path.join(self.dir, "bad.yaml")
        with open(bad, "w") as f:
            f.write("webhook:\n  endpoints:\n    - { url: ftp://x/ }\n")
        p = Proc("sluice-webhook", ["-c", bad, "--check"], tmpdir=self.dir)
        self.assertEqual(p.wait(20), 2, p.output())
        p.stop()
        self.assertIn("bad.yaml:3", p.stderr())

    def test_retries_until_accepted_and_signs(self):
        ep = Endpoint(fail_first=3)
        self.addCleanup(ep.close)
        cfg = self.config([(ep.url, 7)])
        self.publish(cfg, 40, "a", garbage=2)
        wh = self.start_webhook(cfg)
        want = {"a-%d" % i for i in range(40)}
        wait_for(lambda: want <= ep.job_ids(), 60,
                 "all 40 events at the endpoint\n" + wh.output())
        self.assertGreaterEqual(ep.failed, 3)
        self.assertEqual(ep.bad_signatures, 0)
        self.assertTrue(all(e.get("type") for e in ep.events), ep.events[:2])
        # Batches respect batch_size: 40 events need at least 6 accepted POSTs.
        self.assertGreaterEqual(ep.requests - ep.failed, 6)
        # Events published while running arrive too.
        self.publish(cfg, 10, "b")
        wait_for(lambda: {"b-%d" % i for i in range(10)} <= ep.job_ids(), 30, "b events")
        self.assertEqual(wh.stop(20), 0, wh.output())
        self.assertIn("DLQ", wh.output())

    def test_signature_covers_timestamp(self):
        # The receiver-side check refuses a captured request replayed later,
        # and one whose timestamp was changed to look fresh.
        body = b'[{"type":"DELIVERED"}]'
        ts = str(int(time.time()))
        sig = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        good = {"X-Sluice-Timestamp": ts, "X-Sluice-Signature": sig}
        self.assertTrue(verify(SECRET, good, body))
        self.assertFalse(verify(SECRET, good, body, now=int(ts) + TOLERANCE + 1))
        forged = dict(good, **{"X-Sluice-Timestamp": str(int(ts) + 600)})
        self.assertFalse(verify(SECRET, forged, body, now=int(ts) + 600))

    def test_refused_batch_is_dead_lettered_then_replayed(self):
        ep = Endpoint()
        ep.reject = True
        self.addCleanup(ep.close)
        cfg = self.config([(ep.url, 100)], extra="  max_attempts: 3\n")
        mport = free_port()
        with open(cfg, "a") as f:
            f.write("metrics:\n  listen: 127.0.0.1:%d\n" % mport)
        self.publish(cfg, 5, "r")
        wh = self.start_webhook(cfg)
        def dead():
            return sum(int(n) for n in re.findall(r"HTTP 400 3 times for a batch of (\d+) events",
                                                  wh.stderr()))
        wait_for(lambda: dead() == 5, 60, "all 5 refused events dead-lettered\n" + wh.output())
        # Bounded: each distinct batch was tried exactly max_attempts times,
        # and nothing was accepted.
        with ep.lock:
            self.assertEqual(ep.requests, 3 * len(set(ep.bodies)), ep.requests)
        self.assertEqual(ep.job_ids(), set())
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            metrics = r.read().decode()
        self.assertIn('sluice_webhook_dead_lettered_total{endpoint="0"} 5\n', metrics)
        # The stream goes on: later events reach the endpoint once it accepts.
        ep.reject = False
        self.publish(cfg, 4, "s")
        wait_for(lambda: {"s-%d" % i for i in range(4)} <= ep.job_ids(), 60,
                 "events after the dead letters\n" + wh.output())
        self.assertFalse({"r-%d" % i for i in range(5)} & ep.job_ids())
        self.assertEqual(wh.stop(20), 0, wh.output())
        # Replay: the dead letters go to the endpoint that refused them.
        rp = self.start_webhook(cfg, args=["--replay"])
        wait_for(lambda: {"r-%d" % i for i in range(5)} <= ep.job_ids(), 60,
                 "replayed dead letters\n" + rp.output())
        self.assertEqual(ep.bad_signatures, 0)
        self.assertEqual(rp.stop(20), 0, rp.output())

    def test_down_endpoint_loses_nothing_across_restart(self):
        ok = Endpoint()
        down = Endpoint()
        down.down = True
        self.addCleanup(ok.close)
        self.addCleanup(down.close)
        cfg = self.config([(ok.url, 100), (down.url, 100)])
        self.publish(cfg, 30, "c")
        wh = self.start_webhook(cfg)
        # The healthy endpoint gets everything; the down one holds the
        # records, so none may be committed.
        wait_for(lambda: {"c-%d" % i for i in range(30)} <= ok.job_ids(), 30,
                 "events at the healthy endpoint\n" + wh.output())
        wait_for(lambda: down.failed >= 2, 30, "retries at the down endpoint")
        # SIGTERM while the endpoint is down: drain times out (3 s), exit 0,
        # nothing committed for the held records.
        self.assertEqual(wh.stop(30), 0, wh.output())
        self.assertIn("drain timeout", wh.output())
        self.assertIn("handed back undone", wh.output())
        self.assertEqual(down.job_ids(), set())
        down.down = False
        wh2 = self.start_webhook(cfg)
        wait_for(lambda: {"c-%d" % i for i in range(30)} <= down.job_ids(), 60,
                 "held events after restart and recovery\n" + wh2.output())
        self.assertEqual(down.bad_signatures + ok.bad_signatures, 0)
        self.assertEqual(wh2.stop(20), 0, wh2.output())


if __name__ == "__main__":
    unittest.main()
