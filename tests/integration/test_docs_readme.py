"""The README's map of the project and the configuration reference stay
whole: every daemon and every `sluice` command is in the parts table,
every page of docs/ is linked, and docs/configuration.md has a section for
every top-level key the loader accepts.

Each of these had drifted: the parts table lacked sluice-webhook and the
`top` command, nothing linked the webhook documentation, and the
configuration reference had no `webhook:` section."""

import glob
import os
import re
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
    def test_every_section_documented(self):
        src = read("common", "config_keys.c")
        sections = {k.split(".")[0] for k in re.findall(r'\.name = "([a-z_.]+)"', src)}
        self.assertIn("webhook", sections)
        doc = read("docs", "configuration.md")
        headings = set(re.findall(r"^## ([a-z_]+)\s*$", doc, re.M))
        self.assertEqual(sorted(set(sections) - headings), [],
                         "config sections without a '## name' section in docs/configuration.md")

    def test_new_keys_documented(self):
        doc = read("docs", "configuration.md")
        for key in ("health_timeout", "max_attempts"):
            self.assertTrue("`%s`" % key in doc, "%s not in docs/configuration.md" % key)


if __name__ == "__main__":
    unittest.main()
