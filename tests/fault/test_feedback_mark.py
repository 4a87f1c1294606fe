"""A 421 the site's owner heard just before it was SIGKILLed, whose halving
had not reached the state topic yet, is not lost: the restarted owner
hears it again (docs/scheduler.md, "The feedback groups"). Dev broker:
the state topic's partitions are led by a broker taken down before the
reply, so the owner's state write cannot be stored, while the fleet's
durable feedback group commits past the reply."""

import subprocess
import unittest
import zlib

from harness import REAL, Cluster, bin_path, log, wait_for

BROKERS = 3


def coordinator(group):
    """The dev broker's coordinator of a group: librdkafka's mock cluster
    hashes the group id (CRC-32) over its brokers, 1..N."""
    return zlib.crc32(group.encode()) % BROKERS + 1


@unittest.skipIf(REAL, "the dev broker's fault injection")
class TestReplyHeardBeforeASigkill(unittest.TestCase):
    def test_421_not_yet_stored_is_heard_again_by_the_restarted_owner(self):
        c = Cluster("fb-mark", partitions=4, domains=1, ips=1,
                    shaping="{ max_message_rate: 20/s, max_connections: 4 }",
                    extra_yaml="backoff:\n  - { match: '^421 4\\.7\\.28', action: halve, "
                               "floor: 1/s, recover_after: 10m }\n")
        self.addCleanup(c.close)
        c.start_scheduler("sched-1")
        rate = 'sluice_shape_rate_per_second{site="d0.test",source="127.0.0.1"}'
        # The state topic on a broker that coordinates none of the groups
        # whose commits matter here; every other partition elsewhere.
        busy = {coordinator(g) for g in ("sluice-feedback", "sluice-feedback-mark-sched-1")}
        down = max(b for b in range(1, BROKERS + 1) if b not in busy)
        others = [b for b in range(1, BROKERS + 1) if b != down]
        for t in c.ctl.command("topics").split()[1:]:
            name, parts = t.rsplit("/", 1)
            for p in range(int(parts)):
                lead = down if name == c.topic("state") else others[p % len(others)]
                c.ctl.command("leader %s %d %d" % (name, p, lead))
        c.ctl.command("broker down %d" % down)
        broker_up = [False]

        def up():
            if not broker_up[0]:
                c.ctl.command("broker up %d" % down)
                broker_up[0] = True
        self.addCleanup(up)

        def reply_421():
            r = subprocess.run([bin_path("sched_tool"), "event", "-c", c.cfg, "--type",
                                "deferred", "--site", "d0.test", "--source-ip", "127.0.0.1",
                                "--code", "421", "--enh", "4.7.28", "--to", "a@d0.test",
                                "--reply", "421-4.7.28 Our system has detected an unusual rate"],
                               capture_output=True, text=True, timeout=60, env=c.env)
            self.assertEqual(r.returncode, 0, r.stderr)
            try:
                return wait_for(lambda: c.metric("sched-1", rate) == 10, 3, "halved")
            except AssertionError:
                return None  # published before the live tail was assigned
        wait_for(reply_421, 60, "the 421 heard by sched-1")
        # The fleet's durable group commits past the reply (it only adds
        # suppressions); the halving is still in the owner's producer.
        end = sum(hi for lo, hi in c.watermarks("events").values())

        def committed():
            r = subprocess.run([bin_path("sched_tool"), "committed", "-c", c.cfg,
                                "--key", "sluice-feedback", "--topic", "events"],
                               capture_output=True, text=True, timeout=60, env=c.env)
            self.assertEqual(r.returncode, 0, r.stderr)
            return sum(max(0, int(line.split()[1])) for line in r.stdout.split("\n") if line)
        wait_for(lambda: committed() >= end, 30, "sluice-feedback committed past the 421")
        c.kill("sched-1")
        up()
        c.start_scheduler("sched-1")
        got = wait_for(lambda: c.metric("sched-1", rate) > 0 and c.metrics("sched-1"), 30,
                       "the restarted owner knows the pair")
        log("after the restart: %s" % [l for l in got.splitlines() if l.startswith(rate)])
        self.assertIn(rate + " 10\n", got)
        self.assertIn('sluice_shape_state{site="d0.test",source="127.0.0.1",state="throttled"} 1',
                      got)


if __name__ == "__main__":
    unittest.main()
