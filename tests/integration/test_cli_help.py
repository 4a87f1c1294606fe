"""Every sluice binary answers --help and --version on stdout with exit 0.

An operator's first command is `sluice-sender --help`; it used to exit 2
with "invalid option". The help must list every long option the program
accepts (read from its source's getopt table, so a new option without a
help line fails here) and, for the programs that read the configuration,
the keys they read.
"""

import os
import re
import subprocess
import unittest

from sluicetest import bin_path

SRC = os.environ.get("SLUICE_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")

# binary -> (source of its main(), whether it reads the sluice configuration)
BINARIES = {
    "sluice": ("cli/cli.c", True),
    "sluice-sender": ("sender/main.c", True),
    "sluice-scheduler": ("scheduler/main.c", True),
    "sluice-submit": ("submit/submit_main.c", True),
    "sluice-api": ("api/api_main.c", True),
    "sluice-webhook": ("webhook/main.c", True),
    "sluice-inbound": ("inbound/inb_main.c", True),
    "sluice-devbroker": ("devbroker/main.c", True),
    "sluice-testsink": ("tests/sink/sink.c", False),
}


def project_version():
    with open(os.path.join(SRC, "CMakeLists.txt")) as f:
        return re.search(r"project\(sluice VERSION ([0-9.]+)", f.read()).group(1)


def long_options(path):
    with open(os.path.join(SRC, path)) as f:
        return re.findall(r'\{"([a-z][a-z0-9-]*)",\s*(?:no|required|optional)_argument', f.read())


def run(name, *args):
    return subprocess.run([bin_path(name), *args], capture_output=True, text=True, timeout=30)


class HelpVersion(unittest.TestCase):
    def test_version(self):
        want = project_version()
        for name in BINARIES:
            with self.subTest(binary=name):
                r = run(name, "--version")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout, "%s %s\n" % (name, want))

    def test_help(self):
        for name, (src, reads_config) in BINARIES.items():
            for flag in ("--help", "-h"):
                with self.subTest(binary=name, flag=flag):
                    r = run(name, flag)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertTrue(r.stdout.startswith("usage: %s " % name), r.stdout)
                    self.assertIn("--version", r.stdout)
                    for opt in long_options(src):
                        self.assertIn("--" + opt, r.stdout, "option --%s not in the help" % opt)
                    if reads_config:
                        self.assertIn("kafka.", r.stdout)

    def test_config_required_or_default_said(self):
        # A synopsis with "-c FILE" (not "[-c FILE]") means required: the
        # daemon refuses to start without it; otherwise the help says what
        # it runs on instead.
        for name, (src, reads_config) in BINARIES.items():
            if not reads_config or name == "sluice":
                continue
            with self.subTest(binary=name):
                r = run(name, "--help")
                synopsis = r.stdout.splitlines()[0]
                if "[-c " in synopsis:
                    self.assertIn("default: the built-in one", r.stdout)
                else:
                    self.assertRegex(synopsis, r"usage: \S+ -c ")
                    r = run(name)
                    self.assertEqual(r.returncode, 2, r.stderr)
                    self.assertIn("usage:", r.stderr)

    def test_top_level_help_lists_every_command(self):
        with open(os.path.join(SRC, "cli", "cli.c")) as f:
            names = re.findall(r'^\s*\{"([a-z][a-z-]*)", cli_', f.read(), re.M)
        self.assertIn("dlq", names)
        r = run("sluice", "--help")
        listed = [l.split()[0] for l in r.stdout.split("commands:")[1].split("options:")[0]
                  .splitlines() if l.strip()]
        self.assertEqual(sorted(listed), sorted(names))
        r = run("sluice", "dev", "--help")
        for opt in ("-c FILE", "--timeout", "--demo", "--route", "--dir", "--json"):
            self.assertIn(opt, r.stdout)

    def test_daemons_name_their_keys(self):
        # The keys each daemon reads beyond kafka.*: one per daemon is enough
        # to catch a help text that says nothing about configuration.
        keys = {
            "sluice-sender": ["sender.drain_timeout", "metrics.listen", "metrics.health_timeout"],
            "sluice-scheduler": ["scheduler.max_buffered", "metrics.health_timeout"],
            "sluice-submit": ["submit.listen", "submit.users", "metrics.health_timeout"],
            "sluice-api": ["api.listen", "api.keys", "metrics.listen"],
            "sluice-webhook": ["webhook.endpoints", "webhook.max_attempts"],
            "sluice-inbound": ["inbound.listen", "inbound.fbl", "tokens.secret_file"],
            "sluice-devbroker": ["kafka.partitions"],
        }
        for name, want in keys.items():
            out = run(name, "--help").stdout
            for k in want:
                self.assertIn(k, out, "%s --help does not name %s" % (name, k))

    def test_events_help_lists_every_type(self):
        # Every event type the wire defines, COMPLAINED included.
        out = run("sluice", "events", "--help").stdout
        types = re.search(r"^TYPE:(.*)$", out, re.M).group(1).split()
        with open(os.path.join(SRC, "proto", "sluice", "v1", "event.proto")) as f:
            want = re.findall(r"^\s*EVENT_([A-Z_]+) = [1-9]", f.read(), re.M)
        self.assertIn("COMPLAINED", want)
        self.assertEqual(types, want)

    def test_usage_error_still_exits_2(self):
        for name in BINARIES:
            with self.subTest(binary=name):
                r = run(name, "--no-such-option")
                self.assertEqual(r.returncode, 2)
                self.assertEqual(r.stdout, "")
                self.assertIn("usage:", r.stderr)


if __name__ == "__main__":
    unittest.main()
