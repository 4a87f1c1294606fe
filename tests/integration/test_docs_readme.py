"""The README's map of the project and the configuration reference stay
whole: every daemon and every `sluice` command is in the parts table,
every page of docs/ is linked, and docs/configuration.md documents every
key of the loader's key table (`sluice config keys`) and its SLUICE_*
variable, and no key the loader refuses.

Each of these had drifted: the parts table lacked sluice-webhook and the
`top` command, nothing linked the webhook documentation, and the
configuration reference had no `webhook:` section."""

import glob
import os
import re
import subprocess
import unittest

SRC = os.environ.get("SLUICE_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")


def read(*parts):
    with open(os.path.join(SRC, *parts), encoding="utf-8") as f:
        return f.read()


class TestReadme(unittest.TestCase):
    def setUp(self):
        self.readme = read("README.md")
        m = re.search(r"^## The parts\n(.*?)^## ", self.readme, re.M | re.S)
        self.assertIsNotNone(m, "README.md has no '## The parts' section")
        self.parts = m.group(1)

    def test_every_daemon_in_parts_table(self):
        # Every add_executable(sluice-...) outside tests/ is a part.
        daemons = set()
        for path in glob.glob(os.path.join(SRC, "*", "CMakeLists.txt")):
            if os.sep + "tests" + os.sep in path:
                continue
            with open(path) as f:
                daemons.update(re.findall(r"add_executable\((sluice-[a-z-]+)", f.read()))
        self.assertIn("sluice-webhook", daemons)
        rows = set(re.findall(r"^\| `([a-z-]+)` \|", self.parts, re.M))
        self.assertEqual(sorted(daemons - rows), [], "binaries missing from the parts table")

    def test_every_command_in_parts_table(self):
        commands = re.findall(r'^\s*\{"([a-z]+)", cli_[a-z]+,', read("cli", "cli.c"), re.M)
        self.assertIn("top", commands)
        row = re.search(r"^\| `sluice` \|(.*)$", self.parts, re.M).group(1)
        listed = set(re.findall(r"`([a-z]+)`", row))
        self.assertEqual(sorted(set(commands) - listed), [], "commands missing from the sluice row")

    def test_every_doc_linked(self):
        docs = {os.path.basename(p) for p in glob.glob(os.path.join(SRC, "docs", "*.md"))}
        self.assertIn("webhook.md", docs)
        linked = set(re.findall(r"\(docs/([a-z0-9_-]+\.md)[)#]", self.readme))
        self.assertEqual(sorted(docs - linked), [], "docs/ pages the README does not link")


class TestConfigurationReference(unittest.TestCase):
    def test_every_key_documented(self):
        """Every entry of the loader's key table, as `sluice config keys`
        lists it, has its row in its section of docs/configuration.md (a
        structured key its own section), and its SLUICE_* variable a row in
        the overrides table; and every row of a plain section is a key."""
        binary = os.path.join(os.environ.get("SLUICE_BIN") or os.path.join(SRC, "build", "bin"),
                              "sluice")
        out = subprocess.run([binary, "config", "keys"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        keys, envs = [], {}
        for line in out.splitlines():
            name = line.split()[0]
            keys.append(name)
            m = re.search(r"\((SLUICE_[A-Z_]+)\)$", line)
            if m:
                envs[m.group(1)] = name
        self.assertIn("kafka.bootstrap", keys)
        self.assertEqual(envs.get("SLUICE_SENDER_WORKERS"), "sender.workers")
        doc = read("docs", "configuration.md")
        sections = {}
        for m in re.finditer(r"^## ([A-Za-z_ ]+?)\s*\n(.*?)(?=^## |\Z)", doc, re.M | re.S):
            sections[m.group(1)] = m.group(2)
        missing = []
        for key in keys:
            sec, _, leaf = key.partition(".")
            if sec not in sections:
                missing.append(key + " (no '## %s' section)" % sec)
            elif leaf and not re.search(r"^\| `%s` \|" % re.escape(leaf), sections[sec], re.M):
                missing.append(key)
        self.assertEqual(missing, [], "keys without a row in docs/configuration.md")
        overrides = sections.get("Environment overrides", "")
        rows = dict(re.findall(r"^\| `(SLUICE_[A-Z_]+)` \| `([a-z_.]+)`", overrides, re.M))
        self.assertEqual(rows, envs, "the overrides table differs from the key table")
        # The other way: a row of a section made of plain keys names a key
        # (or a field of a structured one: `endpoints[].url`).
        plain = {k.partition(".")[0] for k in keys if "." in k}
        stale = []
        for sec in sorted(plain):
            for leaf in re.findall(r"^\| `([a-z_\[\].]+)` \|", sections[sec], re.M):
                base = leaf.split("[]")[0]
                if "%s.%s" % (sec, base) not in keys:
                    stale.append("%s.%s" % (sec, leaf))
        self.assertEqual(stale, [], "docs/configuration.md rows for keys the loader refuses")

    def test_new_keys_documented(self):
        doc = read("docs", "configuration.md")
        for key in ("health_timeout", "max_attempts"):
            self.assertTrue("`%s`" % key in doc, "%s not in docs/configuration.md" % key)


if __name__ == "__main__":
    unittest.main()
