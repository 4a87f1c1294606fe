"""sluice dev: the whole pipeline as child processes of one command.

Covers the foundation's done-when: the demo delivers every message and
prints a summary; --route delivers exactly N distinct messages to an SMTP
server that is not sluice's (Postfix's smtp-sink, counted by our recording
sink in front of nothing else); a SIGKILLed sender is restarted and the demo
still completes with every job delivered (duplicates counted); a config with
a typo exits 2 naming file, line and key.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from sluicetest import Proc, bin_path, free_port, start_sink, wait_for


# Python's standard SMTP server (3.11), one file per message.
PY_SINK = """
import asyncore, os, smtpd, sys
class S(smtpd.SMTPServer):
    n = 0
    def process_message(self, peer, mailfrom, rcpttos, data, **kw):
        S.n += 1
        with open(os.path.join(sys.argv[1], "m.%06d" % S.n), "wb") as f:
            f.write(data)
s = S(("127.0.0.1", int(sys.argv[2])), None, decode_data=False)
s.listen(256)  # smtpd's own backlog is 5; smtp-sink above is given 256
asyncore.loop()
"""


def port_open(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def dumped(root):
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.join(d, n) for n in names]
    return out


def run_demo(args, timeout=300):
    p = subprocess.run([bin_path("sluice"), "dev"] + args, capture_output=True, text=True,
                       timeout=timeout)
    return p


class DevTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sluice-test-dev-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_demo_delivers_every_message_to_the_capture_server(self):
        d = os.path.join(self.tmp, "dev")
        p = run_demo(["--demo", "300", "--json", "--dir", d])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        s = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(s["messages"], 300)
        self.assertEqual(s["delivered"], 300, s)
        self.assertEqual(s["unfinished"], 0)
        files = [f for f in os.listdir(os.path.join(d, "mail"))]
        self.assertGreaterEqual(len(files), 300)
        # Every delivered message carries a Message-ID unique to its job.
        ids = set()
        for f in files:
            with open(os.path.join(d, "mail", f), "rb") as fh:
                m = re.search(rb"^Message-ID:\s*(<[^>]+>)", fh.read(), re.M | re.I)
            self.assertIsNotNone(m, f)
            ids.add(m.group(1))
        self.assertEqual(len(ids), 300)

    def test_human_summary(self):
        p = run_demo(["--demo", "50", "--dir", os.path.join(self.tmp, "dev")])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"delivered\s+50\b")
        self.assertRegex(p.stdout, r"messages/s")

    def test_route_delivers_exact_count_to_a_foreign_smtp_server(self):
        # Postfix's smtp-sink dumps each transaction to a file of its own. As
        # root it must drop to an unprivileged user, who needs a way to the
        # dump directory; where even / is closed to others (some build
        # chroots), Python's own SMTP server stands in.
        dump = os.path.join(self.tmp, "dump")
        os.makedirs(dump)
        os.chmod(self.tmp, 0o755)
        os.chmod(dump, 0o777)
        port = free_port()
        if os.geteuid() != 0 or os.stat("/").st_mode & 0o001:
            args = ["smtp-sink", "-d", dump + "/m.", "127.0.0.1:%d" % port, "256"]
            if os.geteuid() == 0:
                args[1:1] = ["-u", "postfix"]
        else:
            args = [sys.executable, "-W", "ignore", "-c", PY_SINK, dump, str(port)]
        sink = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: port_open(port), 10, "the SMTP server to listen")
            p = run_demo(["--demo", "2000", "--json", "--dir", os.path.join(self.tmp, "dev"),
                          "--route", "127.0.0.1:%d" % port])
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            s = json.loads(p.stdout.strip().splitlines()[-1])
            self.assertEqual(s["delivered"], 2000, s)
            files = wait_for(lambda: (lambda f: f if len(f) >= 2000 else None)(dumped(dump)),
                             30, "2000 files from the SMTP server")
            ids = set()
            for path in files:
                with open(path, "rb") as fh:
                    m = re.search(rb"^Message-ID:\s*(<[^>]+>)", fh.read(), re.M | re.I)
                self.assertIsNotNone(m, path)
                ids.add(m.group(1))
            self.assertEqual(len(ids), 2000, "distinct messages at the SMTP server")
            self.assertEqual(len(files), 2000 + s["duplicates"])
        finally:
            sink.terminate()
            sink.wait(timeout=10)

    def test_killed_sender_is_restarted_and_demo_completes(self):
        sink = start_sink(self.tmp)
        d = os.path.join(self.tmp, "dev")
        dev = Proc(bin_path("sluice"), ["dev", "--demo", "3000", "--json", "--dir", d,
                                        "--route", "%s:%d" % (sink.host, sink.port)],
                   tmpdir=self.tmp)
        try:
            pidfile = os.path.join(d, "pids", "sender.pid")
            wait_for(lambda: os.path.exists(pidfile), 60, "the sender to start")
            # Kill it once some mail is flowing, mid-run.
            wait_for(lambda: len(sink.messages()) >= 300, 120, "mail flowing")
            with open(pidfile) as f:
                pid = int(f.read())
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: open(pidfile).read().strip() != str(pid), 30,
                     "the sender to be restarted")
            rc = dev.wait(timeout=300)
            self.assertEqual(rc, 0, dev.output())
            s = json.loads(dev.stdout().strip().splitlines()[-1])
            self.assertEqual(s["delivered"], 3000, s)
            self.assertEqual(s["unfinished"], 0, s)
            self.assertGreaterEqual(s["restarts"], 1, s)
            ids = {m["message_id"] for m in sink.messages()}
            self.assertEqual(len(ids), 3000, "every job reached the sink")
        finally:
            dev.stop(timeout=60)
            sink.proc.stop()

    def test_dead_route_defers_quietly_and_interrupt_stops_every_child(self):
        # Nothing listens on the route: the sender marks it down and defers
        # with the reason instead of reconnecting in a loop; its log names
        # the condition once or in summaries. An interrupt then stops dev and
        # every child within seconds, whatever they are doing.
        d = os.path.join(self.tmp, "dev")
        dead = free_port()
        dev = Proc(bin_path("sluice"), ["dev", "--demo", "100", "--dir", d,
                                        "--route", "127.0.0.1:%d" % dead], tmpdir=self.tmp)
        try:
            log = os.path.join(d, "logs", "sender.log")

            def refused():
                try:
                    with open(log) as f:
                        return "connection refused" in f.read()
                except FileNotFoundError:
                    return False
            wait_for(refused, 60, "the sender to meet the dead route\n" + dev.output())
            # A measuring window: the outage goes on for a few seconds.
            time.sleep(3)
            pids = []
            for n in ("devbroker", "capture", "scheduler", "sender"):
                with open(os.path.join(d, "pids", n + ".pid")) as f:
                    pids.append(int(f.read()))
            dev.send_signal(signal.SIGINT)
            rc = dev.wait(timeout=15)
            self.assertNotEqual(rc, None)
            for pid in pids:
                self.assertFalse(os.path.exists("/proc/%d/stat" % pid) and
                                 open("/proc/%d/stat" % pid).read().split()[2] != "Z",
                                 "child %d still running" % pid)
            with open(log) as f:
                text = f.read()
            self.assertLess(len(text), 20000, text[-3000:])
        finally:
            dev.stop(timeout=30)
    def test_running_prints_the_next_step(self):
        """After it starts, dev says how to point the other commands at it;
        the printed SLUICE_CONFIG works as it stands."""
        with Proc("sluice", ["dev", "--dir", os.path.join(self.tmp, "d")], tmpdir=self.tmp) as dev:
            line = wait_for(lambda: re.search(r"export SLUICE_CONFIG=(\S+)", dev.stderr()) or
                            (dev.alive() or self.fail(dev.output())) and None, 60,
                            "the export line")
            env = dict(os.environ, SLUICE_CONFIG=line.group(1))
            r = subprocess.run([bin_path("sluice"), "stats"], capture_output=True, text=True,
                               timeout=60, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            # A second instance on the same directory is refused, and the
            # first one's config is left as it was.
            with open(line.group(1)) as f:
                before = f.read()
            r = subprocess.run([bin_path("sluice"), "dev", "--dir", os.path.join(self.tmp, "d")],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("is in use by another sluice dev (pid %d)" % dev.pid, r.stderr)
            with open(line.group(1)) as f:
                self.assertEqual(f.read(), before)

    def test_bad_route_and_demo_refused_before_starting(self):
        for args, why in ((["--route", "nonsense"], "is not HOST:PORT"),
                          (["--route", "no-such-host.invalid:25"], "cannot resolve"),
                          (["--demo", "abc"], "'abc' is not a count")):
            r = subprocess.run([bin_path("sluice"), "dev", "--dir", self.tmp] + args,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(why, r.stderr)
            self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)

    def test_unreachable_kafka_refused_before_starting_daemons(self):
        # --kafka names a cluster nobody listens on: one clear line, exit
        # 1, and neither scheduler nor sender was started.
        port = free_port()
        r = run_demo(["--kafka", "127.0.0.1:%d" % port, "--demo", "5", "--dir", self.tmp],
                     timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("--kafka: cannot reach Kafka at 127.0.0.1:%d" % port, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "pids", "scheduler.pid")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "pids", "sender.pid")))

    def test_config_typo_exits_2_with_file_line_key(self):
        cfg = os.path.join(self.tmp, "bad.yaml")
        with open(cfg, "w") as f:
            f.write("kafka:\n  bootstrap: 127.0.0.1:9092\nshaping:\n  default:\n"
                    "    max_mesage_rate: 10/s\n")
        p = run_demo(["-c", cfg, "--demo", "1"], timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("bad.yaml:5", p.stderr)
        self.assertIn("max_mesage_rate", p.stderr)


if __name__ == "__main__":
    unittest.main()
