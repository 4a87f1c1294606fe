"""sluice-webhook to an HTTPS endpoint with a self-signed certificate,
trusted through CURL_CA_BUNDLE, that answers 500 for a while and then
recovers: every event arrives in batches of at most batch_size, every body
is correctly signed, and an event is posted again only after a batch
holding it was answered with an error (never after a success).

Kept apart from test_webhook.py so each ctest test stays short; it reuses
that file's endpoint and fixtures."""

import os
import subprocess
import unittest

from sluicetest import wait_for
import test_webhook
from test_webhook import Endpoint


class WebhookHttpsTest(test_webhook.WebhookTest):
    # Run only the test below, not the inherited ones.
    test_check_flag = None
    test_retries_until_accepted_and_signs = None
    test_down_endpoint_loses_nothing_across_restart = None

    def self_signed(self):
        cert = os.path.join(self.dir, "hook-cert.pem")
        key = os.path.join(self.dir, "hook-key.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        return cert, key

    def test_https_endpoint_down_then_up(self):
        cert, key = self.self_signed()
        ep = Endpoint(tls=(cert, key))
        ep.down = True
        self.addCleanup(ep.close)
        cfg = self.config([(ep.url, 5)])
        self.publish(cfg, 30, "h")
        wh = self.start_webhook(cfg, env=dict(os.environ, CURL_CA_BUNDLE=cert))
        # Errors first: the TLS handshake works (the request reached the
        # handler) and the batches are refused with 500.
        try:
            wait_for(lambda: ep.failed >= 3, 20, "failed HTTPS posts")
        except AssertionError:
            self.fail("%d requests reached the endpoint\n%s" % (ep.requests, wh.output()))
        ep.down = False
        want = {"h-%d" % i for i in range(30)}
        wait_for(lambda: want <= ep.job_ids(), 60,
                 "all 30 events over HTTPS\n" + wh.output())
        self.assertEqual(ep.bad_signatures, 0)
        with ep.lock:
            log = list(ep.log)
        self.assertTrue(all(0 < len(keys) <= 5 for _, keys in log), log)
        self.assertGreaterEqual(sum(1 for ok, _ in log if ok), 6)  # 30 events, batches of 5
        # An event is posted again only after a batch holding it was
        # answered with an error: its posts are errors, then one success.
        seen = {}
        for ok, keys in log:
            for k in keys:
                seen.setdefault(k, []).append(ok)
        for k, oks in seen.items():
            self.assertEqual(oks[-1], True, (k, oks))
            self.assertNotIn(True, oks[:-1], (k, oks))
        self.assertEqual(len(ep.events), 30)
        self.assertEqual(wh.stop(20), 0, wh.output())


if __name__ == "__main__":
    unittest.main()
