"""docs/openapi.yaml against a live sluice-api: schemathesis (PyPI,
installed by scripts/deps.sh into its own venv) generates requests from the
document, positive and negative, and checks every answer: no 5xx, status
codes, content types and bodies as the document says, and no endpoint that
answers without a key. A bounded number of examples per operation
(SLUICE_SCHEMATHESIS_EXAMPLES, default 25) keeps the run short."""

import os
import subprocess
import unittest

from test_api import ApiCase, KEY

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SCHEMATHESIS = os.environ.get(
    "SLUICE_SCHEMATHESIS",
    os.path.expanduser("~/.cache/sluice-schemathesis/venv/bin/schemathesis"))


class TestOpenApi(ApiCase):
    ack_timeout = "5s"

    def test_server_matches_its_document(self):
        if not os.path.exists(SCHEMATHESIS):
            self.fail("schemathesis not installed: run scripts/deps.sh (%s)" % SCHEMATHESIS)
        examples = os.environ.get("SLUICE_SCHEMATHESIS_EXAMPLES", "25")
        r = subprocess.run(
            [SCHEMATHESIS, "run", os.path.join(SRC, "docs", "openapi.yaml"),
             "--base-url", "https://127.0.0.1:%d" % self.port,
             "--request-tls-verify", "false",
             "-H", "Authorization: Bearer " + KEY,
             "--checks", "all",
             "--data-generation-method", "all",
             "--hypothesis-max-examples", examples,
             "--hypothesis-derandomize",
             "--experimental", "openapi-3.1", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=self.tmp,
            env=dict(os.environ, SCHEMATHESIS_HOOKS=""))
        self.assertEqual(r.returncode, 0, r.stdout[-6000:] + r.stderr[-2000:])
        self.assertTrue(self.api.alive(), self.api.output())


if __name__ == "__main__":
    unittest.main()
