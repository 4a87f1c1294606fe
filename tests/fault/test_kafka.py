"""Fault scenarios: Kafka misbehaves under load.

On the dev broker (its control socket): injected Produce and Fetch
errors, a broker down for 10 s with the leaders of its partitions moved to
the others, then added round-trip latency on a broker, all while jobs
flow.

On real Kafka (SLUICE_KAFKA=real, harness.py: 3 nodes, replication
factor 3, min.insync.replicas 2): the node coordinating the sender group
SIGKILLed under load, mail flowing on without it (its leaders fail over,
the group finds a new coordinator), then started again on its data; and
the node leading the most jobs partitions SIGSTOPped for
20 s (fenced by the controller after its session timeout, its leaders
moved), then continued.

Nothing is lost, every delivered job is at the sink, and no component
exits or needs a restart. Each real scenario reports how long the sink
saw no new message after the fault (recover=).
"""

import signal
import time
import unittest

from harness import JOBS, REAL, Cluster, log, wait_for


def busiest_node(c, suffix="jobs"):
    """The node that leads the most partitions of one of c's topics."""
    count = {}
    for v in c.real.leaders(c.topic(suffix)).values():
        count[v["leader"]] = count.get(v["leader"], 0) + 1
    return max(sorted(count), key=lambda n: count[n])


class Gap:
    """The longest time the sink went without a new message, sampled every
    50 ms by the scenario's waits from start() on."""

    def __init__(self, c):
        self.c = c
        self.n = 0
        self.since = self.t0 = time.monotonic()
        self.longest = 0.0

    def sample(self):
        n, now = len(self.c.sink.messages()), time.monotonic()
        if n != self.n:
            self.n, self.since = n, now
        self.longest = max(self.longest, now - self.since)
        return n


class KafkaFaultTest(unittest.TestCase):
    def real_scenario(self, name, fault):
        """Load, then fault(c, gap) while it flows, then the books."""
        c = Cluster(name)
        try:
            c.start_scheduler("sched-1")
            c.start_sender("sender-1")
            specs = c.job_specs(JOBS, name)
            ids = [s["job_id"] for s in specs]
            pub = c.publish_paced(specs, 30 + JOBS / 1000.0)
            gap = Gap(c)
            wait_for(lambda: gap.sample() >= JOBS * 0.2, 120, "mail flowing", interval=0.05)
            gap.longest = 0.0
            fault(c, gap)
            wait_for(lambda: gap.sample() >= JOBS * 0.8 or c.assert_alive("sched-1", "sender-1"),
                     240, "mail flowing after the fault", interval=0.05)
            pub.join(timeout=300)
            self.assertIsNone(pub.error, "publishing failed: %s" % pub.error)
            c.wait_final(ids, 240, check_alive=("sched-1", "sender-1"))
            c.wait_quiet()
            r = c.reconcile(ids, name)
            recreated = sum(c.metric(n, "sluice_kafka_producer_recreated_total")
                            for n in ("sched-1", "sender-1"))
            retries = sum(c.metric(n, "sluice_kafka_produce_retries_total")
                          for n in ("sched-1", "sender-1"))
            # Whether librdkafka 2.0.2 raised a fatal idempotence error here
            # is a finding, not a requirement (docs/kafka.md): the books
            # above hold either way. What must hold is that each recreation
            # the counter reports is the one logged with its error.
            fatal = [line for n in ("sched-1", "sender-1")
                     for line in c.procs[n].output().splitlines()
                     if "kafka producer fatal error" in line]
            log("%s: recover=%.1fs (the longest the sink saw nothing new), producers recreated "
                "after a fatal error: %d %s, records produced again: %d"
                % (name, gap.longest, recreated, fatal[:3], retries))
            self.assertEqual(len(fatal), recreated, fatal)
            self.assertEqual(r["lost"], 0, r)
            self.assertEqual(r["phantom"], [], r)
            self.assertEqual(r["conflicting"], [], r)
            # No sender died: every extra copy at the sink is a job the
            # sender dispatched again and reported again (a second
            # DELIVERED event), after its offset commit was lost with the
            # group coordinator or a fetch re-read from the last committed
            # offset; none is a silent repeat.
            self.assertLessEqual(r["duplicates"], r["dup_final_events"], r)
            c.assert_alive("sched-1", "sender-1")
            return r
        finally:
            c.close()

    @unittest.skipUnless(REAL, "a real Kafka node's process (SLUICE_KAFKA=real)")
    def test_real_broker_sigkill_and_restart(self):
        def fault(c, gap):
            # The sender group's coordinator: its death costs the group and
            # the leaders it holds at once, and a re-assigned sender must
            # ask partitions' ends while the metadata still names it.
            node = c.real.coordinator("sluice-sender")
            c.real.kill(node)
            n0 = gap.sample()
            # Mail flows on while the node is down: its leaders failed over.
            try:
                wait_for(lambda: gap.sample() >= n0 + JOBS * 0.1 or
                         c.assert_alive("sched-1", "sender-1"), 120,
                         "mail flowing with kafka node %d down" % node, interval=0.05)
            except AssertionError:
                # Say which daemon stopped moving, for the post-mortem.
                for n in ("sched-1", "sender-1"):
                    log("%s, last lines:\n%s" % (n, "\n".join(
                        c.procs[n].output().splitlines()[-40:])))
                raise
            starter = c.real.restart(node)
            wait_for(lambda: gap.sample() is None or starter.poll() is not None, 180,
                     "kafka node %d started" % node, interval=0.05)
            c.real.wait_back(starter)
            log("kafka node %d back" % node)
        self.real_scenario("kafka-sigkill", fault)

    @unittest.skipUnless(REAL, "a real Kafka node's process (SLUICE_KAFKA=real)")
    def test_real_broker_sigstop_20s(self):
        def fault(c, gap):
            node = busiest_node(c)
            c.real.signal(node, signal.SIGSTOP)
            t0 = time.monotonic()
            try:
                wait_for(lambda: (gap.sample() and c.assert_alive("sched-1", "sender-1")) or
                         time.monotonic() - t0 >= 20, 30, "a 20 s stop", interval=0.05)
            finally:
                c.real.signal(node, signal.SIGCONT)
        self.real_scenario("kafka-sigstop", fault)

    @unittest.skipIf(REAL, "the dev broker's control socket")
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
