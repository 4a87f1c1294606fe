"""The delivery ledger (sender/ledger.c): a job + recipient whose final
outcome is on the ledger topic is never sent again, whichever copy of its
dispatch arrives and whoever owns the partition.

Real processes on a private sluice-devbroker: a sink, senders, dispatch
records published by publish_dispatch. Offsets are committed only every
60 s here, so a sender SIGKILLed after delivering has committed nothing and
its successor reads every dispatch again: only the ledger keeps it from
delivering them twice.
"""

import subprocess
import tempfile
import unittest

from sluicetest import bin_path, wait_for, start_sink
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
                self.assertEqual(sink.messages(), [], "the ledger's pair was sent again")
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
