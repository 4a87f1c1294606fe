"""Fault scenario: Kafka misbehaves under load (devbroker control socket).

Injected Produce and Fetch errors, a broker down for 10 s with the leaders
of its partitions moved to the others, then added round-trip latency on a
broker, all while jobs flow. Nothing is lost, every delivered job is at
the sink, and no component exits or needs a restart.
"""

import time
import unittest

from harness import JOBS, Cluster, log, wait_for


class KafkaFaultTest(unittest.TestCase):
    def test_broker_down_errors_and_latency(self):
        c = Cluster("kafka")
        try:
            c.start_scheduler("sched-1")
            c.start_sender("sender-1")
            specs = c.job_specs(JOBS, "kafka")
            ids = [s["job_id"] for s in specs]
            pub = c.publish_paced(specs, 20 + JOBS / 1000.0)
            at_sink = lambda: len(c.sink.messages())  # noqa: E731

            wait_for(lambda: at_sink() >= JOBS * 0.1, 120, "mail flowing", interval=0.1)
            for api, n, err in (("Produce", 20, "NOT_LEADER_FOR_PARTITION"),
                                ("Produce", 5, "REQUEST_TIMED_OUT"),
                                ("Fetch", 20, "NOT_LEADER_FOR_PARTITION"),
                                ("OffsetCommit", 5, "COORDINATOR_NOT_AVAILABLE")):
                c.ctl.command("errors %s %d %s" % (api, n, err))

            wait_for(lambda: at_sink() >= JOBS * 0.3, 120, "mail flowing", interval=0.1)
            c.broker_down()
            t0 = time.monotonic()
            # The outage lasts 10 s; the components must stay up throughout.
            wait_for(lambda: c.assert_alive("sched-1", "sender-1") or
                     time.monotonic() - t0 >= 10, 15, "a 10 s outage", interval=0.5)
            c.broker_up()
            log("broker 1 was down %.1fs" % (time.monotonic() - t0))

            wait_for(lambda: at_sink() >= JOBS * 0.6, 180, "mail flowing after the outage",
                     interval=0.1)
            c.ctl.command("rtt 2 5000")
            t0 = time.monotonic()
            wait_for(lambda: c.assert_alive("sched-1", "sender-1") or
                     time.monotonic() - t0 >= 8, 12, "8 s of latency", interval=0.5)
            c.ctl.command("rtt 2 0")
            c.ctl.command("clear")

            pub.join(timeout=300)
            self.assertIsNone(pub.error, "publishing failed: %s" % pub.error)
            c.wait_final(ids, 240, check_alive=("sched-1", "sender-1"))
            c.wait_quiet()
            r = c.reconcile(ids, "kafka-faults")
            self.assertEqual(r["lost"], 0, r)
            self.assertEqual(r["phantom"], [], r)
            self.assertEqual(r["conflicting"], [], r)
            c.assert_alive("sched-1", "sender-1")
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
