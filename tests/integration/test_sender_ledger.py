"""The delivery ledger (sender/ledger.c): a job + recipient whose final
outcome is on the ledger topic is never sent again, whichever copy of its
dispatch arrives and whoever owns the partition.

Real processes on a private sluice-devbroker: a sink, senders, dispatch
records published by publish_dispatch. Offsets are committed only every
60 s here, so a sender SIGKILLed after delivering has committed nothing and
its successor reads every dispatch again: only the ledger keeps it from
delivering them twice.
"""

import json
import os
import re
import subprocess
import tempfile
import types
import unittest
import urllib.request

from sluicetest import bin_path, devbroker_control, start_devbroker, start_sink, wait_for
from test_sender import SenderEnv, dispatch


class LedgerEnv(SenderEnv):
    topic_prefix = "lt."
    commit_interval_ms = 60000
    instance_id = "sender-l"


def rcpts_at_sink(sink):
    out = []
    for m in sink.messages():
        out.extend(m["rcpt"])
    return sorted(out)


def publish_ledger(e, prefix, count, key):
    """count ledger records (DELIVERED) of jobs PREFIX-i, recipients
    user<i>@example.test, with the dispatch key key."""
    r = subprocess.run([bin_path("sluice-publish-events"), "-c", e.cfg, "--count", str(count),
                        "--prefix", prefix, "--ledger", key],
                       capture_output=True, text=True, timeout=120, env=e.env)
    if r.returncode != 0:
        raise AssertionError("sluice-publish-events: " + r.stderr)


def metric(proc, name):
    """The sum of a metric's samples on proc's /metrics (its port from the
    log); None until it answers."""
    m = re.search(r"metrics on port (\d+)", proc.output())
    if not m:
        return None
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % m.group(1), timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith(name + "{") or l.startswith(name + " "))


def skipped_lines(proc):
    return [l for l in proc.stdout().splitlines() + proc.stderr().splitlines()
            if "the delivery ledger holds its final outcome" in l]


class TestLedgerAfterReassignment(unittest.TestCase):
    def test_sender_killed_after_delivery_successor_skips(self):
        with tempfile.TemporaryDirectory(prefix="sluice-ledger-") as tmp:
            sink = start_sink(tmp)
            e = LedgerEnv(tmp, workers=2)
            a = b = None
            try:
                route = sink.address
                a = e.start_sender()
                jobs = [dispatch("led-%d" % i, ["r%d@example.test" % i], route)
                        for i in range(6)]
                e.publish(jobs)
                wait_for(lambda: len(sink.messages()) >= 6, 30, "6 deliveries")
                # Every final outcome reaches the ledger (its own topic,
                # keyed and partitioned like the dispatch).
                led = wait_for(lambda: (lambda x: x if len(x) >= 6 else None)(
                    e.dump("ledger", 6, 2000)), 20, "6 ledger records", interval=0.3)
                disp = {d["job_id"]: d for d in
                        [dict(x, **x.get("job", {})) for x in e.dump("dispatch", 6, 2000)]}
                for rec in led:
                    ev = rec["event"]
                    self.assertEqual(ev["type"], "DELIVERED")
                    self.assertIn(ev["job_id"], disp)
                    self.assertEqual(rec["key"], "127.0.0.1/sink")
                    self.assertEqual(rec["partition"], disp[ev["job_id"]]["partition"])
                    self.assertEqual(rec["headers"]["dispatch"], "%d/%d" % (
                        disp[ev["job_id"]]["partition"], disp[ev["job_id"]]["offset"]))
                # Killed before any commit: the successor reads all six again.
                a.kill()
                b = e.start_sender()
                wait_for(lambda: len(skipped_lines(b)) >= 6, 60,
                         "the successor skipping the six delivered jobs")
                # A new job still goes out, and nothing of the six twice.
                e.publish([dispatch("led-new", ["fresh@example.test"], route)])
                wait_for(lambda: "fresh@example.test" in rcpts_at_sink(sink), 30,
                         "the new job delivered")
                want = sorted(["r%d@example.test" % i for i in range(6)] +
                              ["fresh@example.test"])
                self.assertEqual(rcpts_at_sink(sink), want, b.output())
                self.assertEqual(b.stop(timeout=20), 0, b.output())
            finally:
                if a:
                    a.stop()
                if b:
                    b.stop()
                e.stop()
                sink.stop()


class ControlledLedgerEnv(LedgerEnv):
    """A LedgerEnv whose dev broker takes control commands, with
    PARTITIONS partitions per topic."""

    PARTITIONS = 8

    def _write_cfg(self, name, routes, extra, workers):
        path = LedgerEnv._write_cfg(self, name, routes, extra, workers)
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("partitions: 2\n", "partitions: %d\n" % self.PARTITIONS))
        return path

    def __init__(self, tmpdir, extra_yaml="", workers=1):
        self.tmp = tmpdir
        self.broker, self.bootstrap = start_devbroker(
            tmpdir, cfg=self._write_cfg("broker.yaml", "", extra_yaml, workers), control=True,
            timeout=30)
        self.env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=self.bootstrap,
                        SLUICE_LOG_FORMAT="json")
        self.cfg = os.path.join(tmpdir, "broker.yaml")
        self.sender = None

    def ctl(self, command):
        answer = devbroker_control(self.tmp, command)
        if not answer.startswith("ok"):
            raise AssertionError("%s: %s" % (command, answer))


class TestLedgerLoadHoldsDispatches(unittest.TestCase):
    """The ledger of newly assigned partitions is read back off the group's
    rebalance (the loader), so the dispatches fetched meanwhile wait at
    their slot until it is loaded: none is sent before, or a job the ledger
    names would go out again.

    The senders' group coordinator answers 1 s late, the dispatch and
    ledger partitions' brokers at once: the dispatches come in the first
    fetch after the assignment, while the loader still waits a round trip
    for the group's committed offsets (the start of the last owner's
    window), so they are in the worker a second before their ledger is
    loaded."""

    def test_dispatches_wait_for_their_ledger(self):
        with tempfile.TemporaryDirectory(prefix="sluice-ledger-") as tmp:
            sink = start_sink(tmp)
            e = ControlledLedgerEnv(tmp, extra_yaml="metrics:\n  listen: 127.0.0.1:0\n")
            try:
                route = sink.address
                e.ctl("coordinator sluice-sender 1")
                for p in range(e.PARTITIONS):
                    e.ctl("leader dispatch %d 2" % p)
                    e.ctl("leader ledger %d 3" % p)
                # A committed offset for the dispatches' partition, so that
                # the next owner fetches it at once.
                a = e.start_sender()
                e.publish([dispatch("warm-0", ["warm@example.test"], route)])
                wait_for(lambda: rcpts_at_sink(sink) == ["warm@example.test"], 30, "warm-up")
                self.assertEqual(a.stop(timeout=20), 0, a.output())
                e.publish([dispatch("held-%d" % i, ["user%d@example.test" % i], route)
                           for i in range(6)])
                publish_ledger(e, "held", 3, "127.0.0.1/sink")
                e.ctl("rtt 1 1000")
                b = e.start_sender()
                wait_for(lambda: len(rcpts_at_sink(sink)) >= 4, 60, "3 deliveries")
                wait_for(lambda: len(skipped_lines(b)) >= 3, 30, "3 skips")
                self.assertEqual(rcpts_at_sink(sink),
                                 ["user3@example.test", "user4@example.test",
                                  "user5@example.test", "warm@example.test"], b.output())
                # They were in the worker while the ledger was loading, and
                # held until it was.
                held = wait_for(lambda: metric(b, "sluice_sender_ledger_held_total"), 10,
                                "the held metric")
                self.assertGreaterEqual(held, 1, b.output())
                self.assertIn("partition(s) loaded; their dispatches go out", b.output())
                e.ctl("rtt 1 0")
                self.assertEqual(b.stop(timeout=20), 0, b.output())
            finally:
                e.stop()
                sink.stop()


class TestLedgerWithoutEvent(unittest.TestCase):
    """The ledger record is produced with the event, not after it: a sender
    killed between the two acknowledgements leaves a ledger record whose
    event never landed. Its successor skips the recipient and publishes the
    final event again from the ledger's record, so the job is not left
    without one."""

    def test_skip_publishes_the_lost_final_event(self):
        with tempfile.TemporaryDirectory(prefix="sluice-ledger-") as tmp:
            sink = start_sink(tmp)
            e = LedgerEnv(tmp)
            try:
                route = sink.address
                # What the dead owner left: the dispatch, uncommitted, and
                # its ledger record (same key, so the same partition), but
                # no event.
                e.publish([dispatch("lone-0", ["user0@example.test"], route)])
                r = subprocess.run([bin_path("sluice-publish-events"), "-c", e.cfg, "--count", "1",
                                    "--prefix", "lone", "--ledger", "127.0.0.1/sink"],
                                   capture_output=True, text=True, timeout=60, env=e.env)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(e.dump("events", 0, 1000), [])
                e.start_sender()
                wait_for(lambda: skipped_lines(e.sender), 30, "the skip logged")
                ev = wait_for(lambda: [x["event"] for x in e.dump("events", 1, 2000)], 20,
                              "the final event published again")
                self.assertEqual(len(ev), 1, ev)
                self.assertEqual(ev[0]["type"], "DELIVERED")
                self.assertEqual(ev[0]["job_id"], "lone-0")
                self.assertEqual(ev[0]["recipient"], "user0@example.test")
                self.assertIn("delivery ledger", ev[0]["reason"])
                self.assertTrue(ev[0].get("republished"), ev[0])
                self.assertEqual(sink.messages(), [], "the ledger's pair was sent again")
            finally:
                e.stop()
                sink.stop()


def load_analytics():
    """examples/python/analytics.py as a module. Its Kafka client and the
    classes generated from proto/ are not needed to count: when they are
    not installed, stand-ins with the enum values of event.proto serve."""
    import importlib.util
    import os
    import sys
    import types
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "examples", "python", "analytics.py")
    saved = dict(sys.modules)
    try:
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            ck = types.ModuleType("confluent_kafka")
            ck.OFFSET_BEGINNING = -2
            ck.Consumer = ck.KafkaException = ck.TopicPartition = object
            sys.modules["confluent_kafka"] = ck
        try:
            from sluice.v1 import event_pb2  # noqa: F401
        except ImportError:
            pb = types.ModuleType("event_pb2")
            with open(os.path.join(here, "..", "..", "proto", "sluice", "v1",
                                   "event.proto")) as f:
                for name, num in re.findall(r"^\s*(EVENT_[A-Z_]+|BOUNCE_[A-Z_]+) = (\d+);",
                                            f.read(), re.M):
                    setattr(pb, name, int(num))
            pkg, v1 = types.ModuleType("sluice"), types.ModuleType("sluice.v1")
            v1.event_pb2 = pb
            pkg.v1 = v1
            sys.modules.update({"sluice": pkg, "sluice.v1": v1, "sluice.v1.event_pb2": pb})
        spec = importlib.util.spec_from_file_location("analytics", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.modules.clear()
        sys.modules.update(saved)


class TestLedgerRepublishedCountedOnce(unittest.TestCase):
    """The dead owner's final event did land, and so did its ledger record:
    the successor publishes the final event again, marked republished, and
    `sluice stats` and the analytics example count the recipient once."""

    def test_republished_final_counted_once(self):
        with tempfile.TemporaryDirectory(prefix="sluice-ledger-") as tmp:
            sink = start_sink(tmp)
            e = LedgerEnv(tmp)
            try:
                route = sink.address
                e.publish([dispatch("twice-0", ["user0@example.test"], route, attempt=1)])
                for extra in (["--ledger", "127.0.0.1/sink"], []):
                    r = subprocess.run([bin_path("sluice-publish-events"), "-c", e.cfg,
                                        "--count", "1", "--prefix", "twice"] + extra,
                                       capture_output=True, text=True, timeout=60, env=e.env)
                    self.assertEqual(r.returncode, 0, r.stderr)
                e.start_sender()
                ev = wait_for(lambda: (lambda x: x if len(x) >= 2 else None)(
                    [x["event"] for x in e.dump("events", 2, 2000)]), 30,
                    "the final event published again")
                self.assertEqual([x["type"] for x in ev], ["DELIVERED", "DELIVERED"])
                self.assertEqual([bool(x.get("republished")) for x in ev], [False, True], ev)
                self.assertEqual(sink.messages(), [])
                r = subprocess.run([bin_path("sluice"), "stats", "-c", e.cfg, "--json",
                                    "--timeout", "5s"],
                                   capture_output=True, text=True, timeout=60, env=e.env)
                self.assertEqual(r.returncode, 0, r.stderr)
                st = json.loads(r.stdout)
                self.assertEqual(st["total"]["delivered"], 1, st)
                a = load_analytics()
                evs = [types.SimpleNamespace(
                    job_id=x.get("job_id", ""), recipient=x.get("recipient", ""),
                    attempt=x.get("attempt", 0), type=getattr(a.E, "EVENT_" + x["type"]),
                    campaign=x.get("campaign", ""), site=x.get("site", ""),
                    bounce_hard=x.get("bounce_hard", False),
                    created_at_ms=x.get("created_at_ms", 0),
                    timestamp_ms=x.get("timestamp_ms", 0)) for x in ev]
                got = a.analyse(evs)
                self.assertEqual(got["total"]["delivered"], 1, got)
                self.assertEqual(got["duplicates"], 1, got)
            finally:
                e.stop()
                sink.stop()


class TestLedgerSecondCopy(unittest.TestCase):
    """A scheduler killed between producing dispatches and committing its
    input produces the same job again: the second copy is skipped by job id
    and recipient, recipient by recipient."""

    def test_second_copy_skipped_per_recipient(self):
        with tempfile.TemporaryDirectory(prefix="sluice-ledger-") as tmp:
            sink = start_sink(tmp)
            e = LedgerEnv(tmp)
            try:
                route = sink.address
                e.start_sender()
                e.publish([dispatch("dup-1", ["bob@example.test"], route),
                           dispatch("dup-2", ["carol@multi.test", "dave@multi.test"], route)])
                wait_for(lambda: len(rcpts_at_sink(sink)) >= 3, 30, "3 recipients delivered")
                wait_for(lambda: len(e.dump("ledger", 3, 2000)) >= 3, 20, "3 ledger records",
                         interval=0.3)
                # The copies: dup-1 whole; dup-2 with one recipient done and
                # one that the first copy did not have.
                e.publish([dispatch("dup-1", ["bob@example.test"], route),
                           dispatch("dup-2", ["carol@multi.test", "erin@multi.test"], route)])
                wait_for(lambda: "erin@multi.test" in rcpts_at_sink(sink), 30, "erin delivered")
                wait_for(lambda: len(skipped_lines(e.sender)) >= 2, 20, "two skips logged")
                self.assertEqual(rcpts_at_sink(sink),
                                 ["bob@example.test", "carol@multi.test", "dave@multi.test",
                                  "erin@multi.test"], e.sender.output())
                # One final event per recipient: a skip publishes none.
                ev = [x["event"] for x in e.dump("events", 0, 2000)]
                finals = sorted(x["recipient"] for x in ev if x["type"] == "DELIVERED")
                self.assertEqual(finals, ["bob@example.test", "carol@multi.test",
                                          "dave@multi.test", "erin@multi.test"])
            finally:
                e.stop()
                sink.stop()

    def test_ledger_off_delivers_the_copy(self):
        """Without the ledger the same copy goes out twice: the check above
        is what prevents it."""
        with tempfile.TemporaryDirectory(prefix="sluice-ledger-") as tmp:
            sink = start_sink(tmp)
            e = LedgerEnv(tmp, extra_yaml="")
            try:
                with open(e.cfg, "a") as f:
                    f.write("  ledger: false\n")
                route = sink.address
                e.start_sender()
                e.publish([dispatch("off-1", ["bob@example.test"], route)])
                wait_for(lambda: len(rcpts_at_sink(sink)) >= 1, 30, "first copy delivered")
                e.publish([dispatch("off-1", ["bob@example.test"], route)])
                wait_for(lambda: len(rcpts_at_sink(sink)) >= 2, 30, "second copy delivered")
                self.assertEqual(e.dump("ledger", 0, 1500), [])
            finally:
                e.stop()
                sink.stop()


if __name__ == "__main__":
    unittest.main()
