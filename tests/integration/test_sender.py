"""sluice-sender end to end: dispatch records in, SMTP to sluice-testsink,
events and retry records out, on a private sluice-devbroker.

Each test class starts its own devbroker, sink(s) and sender on ephemeral
ports; every wait polls a condition with a deadline.
"""

import json
import os
import subprocess
import tempfile
import time
import unittest

from sluicetest import Proc, bin_path, start_devbroker, start_sink, wait_for


RAW = ("From: Sender <sender@example.net>\r\nTo: {to}\r\nSubject: hello {n}\r\n\r\n"
       "line one\r\n.line starting with a dot\r\nbye\r\n")


class SenderEnv:
    """devbroker + config + helpers to publish dispatches and read topics.
    A subclass may set its own topic prefix, commit interval and instance."""
    topic_prefix = "st."
    commit_interval_ms = 500
    instance_id = "sender-t"

    def __init__(self, tmpdir, extra_yaml="", workers=1):
        self.tmp = tmpdir
        self.broker, self.bootstrap = start_devbroker(
            tmpdir, cfg=self._write_cfg("broker.yaml", "", extra_yaml, workers), timeout=30)
        self.env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=self.bootstrap,
                        SLUICE_LOG_FORMAT="json")
        self.cfg = os.path.join(tmpdir, "broker.yaml")
        self.sender = None

    def _write_cfg(self, name, routes, extra, workers):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("kafka:\n  bootstrap: 127.0.0.1:1\n  topic_prefix: %s\n  partitions: 2\n"
                    "  session_timeout_ms: 6000\n  heartbeat_interval_ms: 1000\n"
                    "  commit_interval_ms: %d\n"
                    "retry:\n  delays: [1m, 5m]\n  expiry: 72h\n"
                    "sender:\n  workers: %d\n  drain_timeout: 10s\n  instance_id: %s\n"
                    % (self.topic_prefix, self.commit_interval_ms, workers, self.instance_id))
            f.write(extra)
        return path

    def start_sender(self, env=None):
        e = dict(self.env)
        if env:
            e.update(env)
        self.sender = Proc("sluice-sender", ["-c", self.cfg], tmpdir=self.tmp, env=e)
        return self.sender

    def wait_events(self, job_ids, n, timeout=30):
        """At least n events of the jobs job_ids on the events topic."""
        def got():
            evs = [x["event"] for x in self.dump("events", 0, 1500)]
            evs = [ev for ev in evs if ev.get("job_id") in job_ids]
            return evs if len(evs) >= n else None
        return wait_for(got, timeout, "%d events of %s" % (n, job_ids), interval=0.3)

    def publish(self, specs):
        data = "".join(json.dumps(s) + "\n" for s in specs)
        r = subprocess.run([bin_path("publish_dispatch"), "-c", self.cfg], input=data,
                           capture_output=True, text=True, timeout=60, env=self.env)
        if r.returncode != 0:
            raise AssertionError("publish_dispatch failed: " + r.stderr)

    def dump(self, topic, count=0, timeout_ms=3000):
        r = subprocess.run([bin_path("sched_tool"), "dump", "-c", self.cfg, "--topic", topic,
                            "--count", str(count), "--timeout", str(timeout_ms)],
                           capture_output=True, text=True, timeout=60, env=self.env)
        out = []
        for line in r.stdout.splitlines():
            line = line.strip()
            if line:
                out.append(json.loads(line))
        return out

    def events(self, n, timeout=30):
        def got():
            ev = self.dump("events", n, 2000)
            return ev if len(ev) >= n else None
        return [e["event"] for e in wait_for(got, timeout, "%d events" % n, interval=0.2)]

    def stop(self):
        if self.sender:
            self.sender.stop(timeout=20)
        self.broker.stop()


def dispatch(job_id, to, route, **kw):
    d = {"job_id": job_id, "from": "bounces@example.net", "to": to,
         "domain": to[0].split("@")[1], "raw": RAW.format(to=to[0], n=job_id),
         "route": route, "source_ip": "127.0.0.1", "ehlo": "mta1.example.net",
         "site": "sink"}
    d.update(kw)
    return d


def by_rcpt(events):
    return {e["recipient"]: e for e in events}


class TestSenderBasic(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpd = tempfile.TemporaryDirectory(prefix="sluice-sender-")
        cls.tmp = cls.tmpd.name
        cls.sink = start_sink(cls.tmp)
        cls.e = SenderEnv(cls.tmp)
        cls.route = cls.sink.address

    @classmethod
    def tearDownClass(cls):
        cls.e.stop()
        cls.sink.stop()
        cls.tmpd.cleanup()

    def test_end_to_end_paths(self):
        e = self.e
        route = self.route
        e.publish([
            dispatch("j-ok", ["alice@example.test"], route),
            dispatch("j-multi", ["bob@multi.test", "carol@multi.test"], route),
            dispatch("j-temp", ["tempfail1@example.test"], route),
            dispatch("j-perm", ["permfail1@example.test"], route),
            dispatch("j-mixed", ["dave@mixed.test", "permfail2@mixed.test"], route),
            {"garbage": "not a protobuf"},
        ])
        e.start_sender()
        # Wait for every recipient (the consumer may repeat a record; events
        # are de-duplicated by job id + recipient, as analytics does).
        want = {"alice@example.test", "bob@multi.test", "carol@multi.test",
                "tempfail1@example.test", "permfail1@example.test", "dave@mixed.test",
                "permfail2@mixed.test"}
        ev = wait_for(lambda: (lambda m: m if set(m) >= want else None)(
            by_rcpt([x["event"] for x in e.dump("events", 0, 1500)])), 30, "7 recipients' events",
            interval=0.3)
        out = e.sender.output()
        self.assertEqual(ev["alice@example.test"]["type"], "DELIVERED", out)
        self.assertEqual(ev["alice@example.test"]["smtp_code"], 250)
        self.assertEqual(ev["alice@example.test"]["sender_id"], "sender-t")
        self.assertEqual(ev["alice@example.test"]["source_ip"], "127.0.0.1")
        self.assertEqual(ev["bob@multi.test"]["type"], "DELIVERED")
        self.assertEqual(ev["carol@multi.test"]["type"], "DELIVERED")
        self.assertEqual(ev["tempfail1@example.test"]["type"], "DEFERRED")
        self.assertEqual(ev["tempfail1@example.test"]["smtp_code"], 451)
        self.assertTrue(ev["tempfail1@example.test"]["retry_topic"].endswith("retry.1m"))
        self.assertEqual(ev["permfail1@example.test"]["type"], "BOUNCED")
        self.assertEqual(ev["permfail1@example.test"]["bounce_class"], "invalid-recipient")
        self.assertEqual(ev["permfail1@example.test"]["enhanced_code"], "5.1.1")
        self.assertEqual(ev["dave@mixed.test"]["type"], "DELIVERED")
        self.assertEqual(ev["permfail2@mixed.test"]["type"], "BOUNCED")

        msgs = self.sink.wait_messages(3)
        env = {tuple(m["rcpt"]): m for m in msgs}
        msgs = self.sink.wait_messages(3)
        self.assertIn(("alice@example.test",), env)
        m = env[("alice@example.test",)]
        self.assertEqual(m["from"], "bounces@example.net")
        self.assertEqual(m["helo"], "mta1.example.net")
        self.assertEqual(m["message_id"], "<j-ok@example.net>")
        self.assertIn(("bob@multi.test", "carol@multi.test"), env)
        self.assertIn(("dave@mixed.test",), env)
        # Dot-stuffing survived the round trip.
        with open(os.path.join(self.sink.dir, m["file"]), "rb") as f:
            body = f.read()
        self.assertIn(b"\r\n.line starting with a dot\r\n", body)
        self.assertIn(b"\r\nDate: ", body)

        # The deferred job went to the retry topic, attempt + 1.
        retry = wait_for(lambda: e.dump("retry.1m", 1, 2000), 20, "retry record")
        self.assertEqual(retry[0]["job_id"], "j-temp")
        self.assertEqual(retry[0]["attempt"], 1)
        self.assertEqual(retry[0]["recipients"], ["tempfail1@example.test"])
        self.assertGreater(retry[0]["not_before_ms"], int(time.time() * 1000) + 30000)

        # The malformed record is in the DLQ with a reason.
        dlq = wait_for(lambda: e.dump("dlq", 1, 2000), 20, "dlq record")
        self.assertIn("reason", json.dumps(dlq[0]))

        # SIGTERM drains and exits 0.
        self.assertEqual(e.sender.stop(timeout=20), 0, e.sender.output())


class TestSender421(unittest.TestCase):
    def test_421_defers_every_job_of_the_transaction(self):
        with tempfile.TemporaryDirectory(prefix="sluice-sender-") as tmp:
            sink = start_sink(tmp)
            e = SenderEnv(tmp)
            try:
                # One job with a good recipient and a 421 one: the server
                # closes after 421, so neither is delivered.
                e.publish([dispatch("j-421", ["good@x421.test", "421a@x421.test"],
                                    sink.address)])
                e.start_sender()
                ev = by_rcpt(e.events(2))
                self.assertEqual(ev["good@x421.test"]["type"], "DEFERRED", e.sender.output())
                self.assertEqual(ev["421a@x421.test"]["type"], "DEFERRED")
                self.assertEqual(ev["421a@x421.test"]["smtp_code"], 421)
                retry = wait_for(lambda: e.dump("retry.1m", 1, 2000), 20, "retry record")
                self.assertEqual(sorted(retry[0]["recipients"]),
                                 ["421a@x421.test", "good@x421.test"])
                self.assertEqual(sink.messages(), [])
            finally:
                e.stop()
                sink.stop()


class TestSenderGroupPrefix(unittest.TestCase):
    """kafka.group_prefix: a sluice sharing its Kafka cluster with another
    keeps its own consumer groups (a rebalance of one never stops the
    other's senders); the senders' offsets are committed under
    PREFIX + sluice-sender, and the unprefixed group holds nothing."""

    def committed(self, e, prefix):
        r = subprocess.run([bin_path("sched_tool"), "committed", "-c", e.cfg, "--topic",
                            "dispatch", "--key", "sluice-sender", "--timeout", "5000"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(e.env, SLUICE_KAFKA_GROUP_PREFIX=prefix))
        self.assertEqual(r.returncode, 0, r.stderr)
        return {int(p): int(o) for p, o in (l.split() for l in r.stdout.splitlines())}

    def test_offsets_committed_under_the_prefixed_group(self):
        with tempfile.TemporaryDirectory(prefix="sluice-sender-") as tmp:
            sink = start_sink(tmp)
            e = SenderEnv(tmp)
            try:
                e.publish([dispatch("j-gp", ["a@gp.test"], sink.address)])
                e.start_sender(env={"SLUICE_KAFKA_GROUP_PREFIX": "stage-b."})
                wait_for(lambda: sink.messages(), 30, "the message at the sink")
                self.assertEqual(e.sender.stop(timeout=20), 0, e.sender.output())
                mine = self.committed(e, "stage-b.")
                self.assertEqual(sum(o for o in mine.values() if o >= 0), 1, mine)
                self.assertTrue(all(o < 0 for o in self.committed(e, "").values()))
            finally:
                e.stop()
                sink.stop()

    def test_bad_prefix_exits_2(self):
        with tempfile.TemporaryDirectory(prefix="sluice-sender-") as tmp:
            cfg = os.path.join(tmp, "s.yaml")
            with open(cfg, "w") as f:
                f.write("kafka:\n  bootstrap: 127.0.0.1:1\n  group_prefix: \"a b/\"\n")
            r = subprocess.run([bin_path("sluice-sender"), "-c", cfg], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("%s:3" % cfg, r.stderr)
            self.assertIn("group_prefix", r.stderr)


if __name__ == "__main__":
    unittest.main()
