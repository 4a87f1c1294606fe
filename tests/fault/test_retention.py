"""Fault scenario: committed offsets that fell off the log.

The devbroker keeps about 5 MB per partition. With the scheduler stopped
(its classify group has committed offsets), enough incompressible jobs are
published that the oldest fall off every partition of the jobs topic.
When the scheduler comes back, each consumer whose committed offset is
gone must raise the retention alarm ("RETENTION ALARM" in its log and
sluice_kafka_offsets_lost_total) with the count lost, and the jobs that
vanished must be exactly that count: nothing is skipped silently.
"""

import base64
import os
import unittest

from harness import Cluster, wait_for

PAD = 20 * 1024        # incompressible bytes per job
FLOOD = 2400           # about 48 MB over 4 partitions: far past 5 MB each


class RetentionTest(unittest.TestCase):
    def test_offsets_fallen_off_raise_the_alarm(self):
        c = Cluster("retention")
        try:
            c.start_scheduler("sched-1")
            c.start_sender("sender-1")
            warm = c.job_specs(200, "warm")
            c.publish(warm)
            c.wait_final([s["job_id"] for s in warm], 120)
            self.assertEqual(c.term("sched-1"), 0)
            flood = c.job_specs(FLOOD, "flood")
            for s in flood:
                s["raw"] += base64.b64encode(os.urandom(PAD * 3 // 4)).decode() + "\r\n"
            for k in range(0, FLOOD, 400):
                c.publish(flood[k:k + 400])
            c.start_scheduler("sched-2")
            alarm = lambda: c.metric("sched-2", "sluice_kafka_offsets_lost_total")  # noqa: E731
            wait_for(alarm, 60, "the retention alarm", interval=0.5)
            self.assertIn("RETENTION ALARM", c.procs["sched-2"].stderr())
            self.assertIn("records were lost", c.procs["sched-2"].stderr())
            ids = [s["job_id"] for s in flood]
            tail = c.follow_events()

            def alarms():
                # The scheduler's count for jobs, plus the sender's for
                # dispatch: on a loaded machine the sender can fall far
                # enough behind that the 20 KB dispatches overrun its log
                # too, and that loss must be announced as well.
                return int(alarm()) + int(c.metric("sender-1", "sluice_kafka_offsets_lost_total"))

            def rest_done():
                tail.poll()
                return sum(1 for i in ids if tail.finals.get(i)) >= FLOOD - alarms()
            # Regression: after the alarm the consumer used to seek and then
            # fetch nothing more; the records still on the log must all end.
            wait_for(rest_done, 60, "the jobs still on the log to be final", interval=0.5)
            c.wait_quiet(quiet=5, timeout=240)
            r = c.reconcile(ids, "retention")
            lost_alarm = alarms()
            self.assertGreater(r["lost"], 0, "the flood did not outrun the log")
            self.assertEqual(r["lost"], lost_alarm,
                             "jobs that vanished (%d) != the alarm's count (%d)"
                             % (r["lost"], lost_alarm))
            self.assertEqual(r["phantom"], [], r)
            c.assert_alive("sched-2", "sender-1")
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
