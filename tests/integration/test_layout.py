"""The folder layout of docs/architecture.md holds: each role includes only
its own headers and common/'s, and of another role only what it links on
purpose: libsluice's public sluice.h, and the publishing commands'
publish.h from the `sluice` command table (cli/cli.c).

The operations commands once included the scheduler's headers and the
`sluice` program linked the sender library it did not use."""

import glob
import os
import re
import unittest

SRC = os.environ.get("SLUICE_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")

ROLES = ["producer", "submit", "cli", "scheduler", "sender", "webhook", "devbroker", "inbound", "common"]
ALLOWED = {"sluice.h": None, "publish.h": {"cli/cli.c"}}  # None: any role


def sources(role):
    return sorted(glob.glob(os.path.join(SRC, role, "*.[ch]")))


class TestLayout(unittest.TestCase):
    def test_no_cross_role_includes(self):
        owner = {}
        for role in ROLES:
            for h in sources(role):
                if h.endswith(".h"):
                    self.assertNotIn(os.path.basename(h), owner, "two headers named %s" % h)
                    owner[os.path.basename(h)] = role
        self.assertEqual(owner.get("sluice.h"), "producer")
        bad = []
        for role in ROLES:
            for f in sources(role):
                rel = os.path.relpath(f, SRC)
                with open(f, encoding="utf-8") as fh:
                    for inc in re.findall(r'^#include "([^"]+)"', fh.read(), re.M):
                        o = owner.get(inc)
                        if o in (None, role, "common"):
                            continue
                        if inc in ALLOWED and (ALLOWED[inc] is None or rel in ALLOWED[inc]):
                            continue
                        bad.append("%s includes %s (%s/)" % (rel, inc, o))
        self.assertEqual(bad, [])

    def test_common_includes_no_role(self):
        # common/ is below every role: it includes nothing of theirs.
        owner = {os.path.basename(h): r for r in ROLES if r != "common"
                 for h in sources(r) if h.endswith(".h")}
        for f in sources("common"):
            with open(f, encoding="utf-8") as fh:
                incs = re.findall(r'^#include "([^"]+)"', fh.read(), re.M)
            self.assertEqual([i for i in incs if i in owner], [], f)

    def test_sluice_links_no_daemon_library(self):
        with open(os.path.join(SRC, "cli", "CMakeLists.txt"), encoding="utf-8") as f:
            cmake = f.read()
        for lib in ("sluice_scheduler_lib", "sluice_sender_lib", "sluice_submit_lib"):
            self.assertNotIn(lib, cmake)
        self.assertIn("sluice_publish_lib", cmake)


if __name__ == "__main__":
    unittest.main()
