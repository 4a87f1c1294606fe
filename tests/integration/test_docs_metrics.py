"""Every metric the daemons export is listed in docs/operations.md.

Metric names are the quoted "sluice_..." strings of the C sources (the
only strings of that form); a new metric without its line in the
operations list fails here, so the list operators alert on stays whole."""

import glob
import os
import re
import unittest

SRC = os.environ.get("SLUICE_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")
DIRS = ("common", "producer", "api", "scheduler", "sender", "webhook", "devbroker", "inbound")


class TestMetricsDocumented(unittest.TestCase):
    def test_every_metric_is_in_operations_md(self):
        names = set()
        for d in DIRS:
            for path in glob.glob(os.path.join(SRC, d, "*.c")):
                with open(path, encoding="utf-8") as f:
                    names.update(re.findall(r'"(sluice_[a-z0-9_]+)"', f.read()))
        self.assertGreater(len(names), 40, sorted(names))
        with open(os.path.join(SRC, "docs", "operations.md"), encoding="utf-8") as f:
            doc = f.read()
        missing = sorted(n for n in names if "`%s`" % n not in doc)
        self.assertEqual(missing, [], "metrics exported but not listed in docs/operations.md")


if __name__ == "__main__":
    unittest.main()
