"""`sluice-webhook --check` refuses what the daemon refuses (#23 item 13):
a config with no webhook endpoints, or a secret_file that cannot be read
or is empty, exits 2 with the reason; the daemon itself gives the same
reason; a usable config prints "ok FILE"."""

import os
import subprocess
import tempfile
import unittest

from sluicetest import bin_path, free_port


class WebhookCheck(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="sluice-test-whk-check-")
        self.dir = self._tmp.name
        self.addCleanup(self._tmp.cleanup)

    def config(self, name, webhook):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write("kafka:\n  bootstrap: 127.0.0.1:%d\n" % free_port() + webhook)
        return path

    def run_webhook(self, *args):
        return subprocess.run([bin_path("sluice-webhook")] + list(args), capture_output=True,
                              text=True, timeout=30)

    def test_check_refuses_what_the_daemon_refuses(self):
        empty = os.path.join(self.dir, "empty.secret")
        open(empty, "w").close()
        cases = [
            ("none.yaml", "", "webhook.endpoints is empty"),
            ("missing.yaml", "webhook:\n  endpoints:\n    - { url: \"http://127.0.0.1:1/\", "
             "secret_file: %s/nope }\n" % self.dir, "cannot read"),
            ("empty.yaml", "webhook:\n  endpoints:\n    - { url: \"http://127.0.0.1:1/\", "
             "secret_file: %s }\n" % empty, "is empty"),
        ]
        for name, text, why in cases:
            cfg = self.config(name, text)
            r = self.run_webhook("-c", cfg, "--check")
            self.assertEqual(r.returncode, 2, (name, r.stdout, r.stderr))
            self.assertIn(why, r.stderr, name)
            self.assertTrue(r.stderr.startswith("sluice-webhook: "), r.stderr)
            self.assertNotIn("ok", r.stdout, name)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            # The daemon refuses it for the same reason, before touching Kafka.
            r = self.run_webhook("-c", cfg)
            self.assertEqual(r.returncode, 2, (name, r.stderr))
            self.assertIn(why, r.stderr, name)

    def test_check_accepts_a_usable_config(self):
        secret = os.path.join(self.dir, "s.secret")
        with open(secret, "w") as f:
            f.write("k3y\n")
        cfg = self.config("ok.yaml", "webhook:\n  endpoints:\n    - { url: "
                          "\"http://127.0.0.1:1/\", secret_file: %s }\n" % secret)
        r = self.run_webhook("-c", cfg, "--check")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "ok %s" % cfg)


if __name__ == "__main__":
    unittest.main()
