"""`sluice config check` reports a file's first mistake as every daemon
does at start (FILE:LINE, the key, did-you-mean, exit 2) and says "ok"
for a good one; `sluice config keys` lists the loader's key table with
the defaults and SLUICE_* variables the loader applies."""

import os
import subprocess
import tempfile
import unittest

from sluicetest import bin_path

SRC = os.environ.get("SLUICE_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")


def sluice(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    e.update(env or {})
    return subprocess.run([bin_path("sluice"), *args], capture_output=True, text=True,
                          timeout=30, env=e)


class TestConfigCheck(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def write(self, text):
        path = os.path.join(self.dir.name, "sluice.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_good_file(self):
        path = os.path.join(SRC, "tests", "data", "config", "sluice.yaml")
        r = sluice("config", "check", "-c", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "ok: " + path)

    def test_typo_is_exit_2_with_line_and_hint(self):
        path = self.write("kafka:\n  bootstrap: k:9092\nshaping:\n  default:\n"
                          "    max_mesage_rate: 10/s\n")
        r = sluice("config", "check", "-c", path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("%s:5: unknown key 'shaping.default.max_mesage_rate' "
                      "(did you mean 'max_message_rate'?)" % path, r.stderr)
        self.assertEqual(r.stdout, "")

    def test_environment_is_checked_too(self):
        path = self.write("sender: {workers: 2}\n")
        r = sluice("config", "check", "-c", path, env={"SLUICE_SENDER_WORKERS": "lots"})
        self.assertEqual(r.returncode, 2)
        self.assertIn("environment: key 'sender.workers': SLUICE_SENDER_WORKERS='lots' is not "
                      "an integer in [0, 1024]", r.stderr)

    def test_usage_errors(self):
        self.assertEqual(sluice("config").returncode, 2)
        self.assertEqual(sluice("config", "nonsense").returncode, 2)


class TestConfigKeys(unittest.TestCase):
    def test_listing(self):
        r = sluice("config", "keys")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = {line.split()[0]: line for line in r.stdout.splitlines()}
        self.assertGreater(len(rows), 50)
        self.assertRegex(rows["kafka.bootstrap"],
                         r"^kafka\.bootstrap +string +127\.0\.0\.1:9092 .*\(SLUICE_KAFKA_BOOTSTRAP\)$")
        self.assertRegex(rows["submit.max_message_size"], r" size +25M ")
        self.assertRegex(rows["pools"], r"^pools +structured ")
        # The file order: a section's keys together, pools before shaping.
        names = list(rows)
        self.assertLess(names.index("pools"), names.index("shaping"))


if __name__ == "__main__":
    unittest.main()
