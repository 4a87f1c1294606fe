"""A job id with CR or LF is rejected where jobs enter the pipeline.

Such an id used to travel to the sender, break the Message-ID header built
from it and fail there as "message has no header section", which names
neither the job id nor the cause. classify (the first stage every job goes
through, whoever produced it) now rejects it with a clear reason: the
record goes to the DLQ and a REJECTED event says why, and the job behind
it goes on.
"""

import unittest

from test_scheduler import SchedCase


class TestJobId(SchedCase):
    def test_crlf_job_id_rejected_by_classify(self):
        self.start_scheduler()
        self.produce("--to", "x@fine.test", "--id", "bad\r\nBcc: y@evil.test")
        self.produce("--to", "z@fine.test", "--id", "tab\there")
        self.produce("--to", "ok@fine.test", "--id", "ok")
        dlq = self.dump("dlq", 2)
        self.assertEqual(sorted(r["headers"]["reason"] for r in dlq),
                         ["job id contains CR or LF",
                          "job id contains a space, a control character or non-ASCII"])
        events = [r["event"] for r in self.dump("events", 2)]
        self.assertTrue(all(e["type"] == "REJECTED" for e in events), events)
        self.assertIn("job id contains CR or LF", [e.get("reason") for e in events], events)
        ok = self.dump("dispatch", 1)
        self.assertEqual(ok[0]["job_id"], "ok-0")


if __name__ == "__main__":
    unittest.main()
