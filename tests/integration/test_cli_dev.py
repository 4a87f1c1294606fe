"""`sluice dev` as an operator meets it, and stopping (#23 items 5, 7, 16):
each daemon gets a metrics port of its own and dev prints them; `sluice
shaping show` works through the SLUICE_CONFIG dev prints; a -c config with
metrics.listen does not make the daemons fight over one port; an interrupt
stops the daemons before the broker, says whom it waits for, and a second
one kills at once; with --route the banner names the route; the demo
reports start-up apart from delivery; sluice-sender keeps its drain bound
when Kafka cannot be reached."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import unittest
import urllib.request

from sluicetest import Proc, bin_path, free_port, wait_for


def metrics_ok(addr):
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=5) as r:
        return r.status == 200 and b"sluice_" in r.read()


def ready(addr):
    try:
        with urllib.request.urlopen("http://%s/readyz" % addr, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class DevCli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sluice-test-cli-dev-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def start_dev(self, *args):
        d = os.path.join(self.tmp, "dev")
        # In a session of its own (setsid execs it in place, same pid), as
        # a shell's foreground job is: the test can signal its group.
        dev = Proc("/usr/bin/setsid", [bin_path("sluice"), "dev", "--dir", d] + list(args),
                   tmpdir=self.tmp)
        self.addCleanup(dev.stop, 30)
        wait_for(lambda: "running; Ctrl-C stops" in dev.stderr() or
                 (dev.alive() or self.fail(dev.output())) and False, 60, "dev to start")
        return dev, d

    def pids(self, d):
        out = {}
        for n in ("devbroker", "capture", "scheduler", "sender"):
            with open(os.path.join(d, "pids", n + ".pid")) as f:
                out[n] = int(f.read())
        return out

    def test_each_daemon_has_its_metrics_and_shaping_show_works(self):
        dev, d = self.start_dev()
        m = re.search(r"metrics: scheduler http://(\S+)/metrics, sender http://(\S+)/metrics",
                      dev.stderr())
        self.assertIsNotNone(m, dev.stderr())
        sched, sender = m.group(1), m.group(2)
        self.assertNotEqual(sched, sender)
        wait_for(lambda: ready(sched) and ready(sender), 60, "both ready")
        self.assertTrue(metrics_ok(sched) and metrics_ok(sender))
        cfg = os.path.join(d, "sluice.yaml")
        with open(cfg) as f:
            self.assertIn("listen: %s" % sched, f.read())
        env = dict(os.environ, SLUICE_CONFIG=cfg)
        r = subprocess.run([bin_path("sluice"), "shaping", "show", "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), [])
        # After one message, the site it went to has a row.
        body = os.path.join(self.tmp, "body.txt")
        with open(body, "w") as f:
            f.write("hello\n")
        r = subprocess.run([bin_path("sluice"), "send", "--from", "a@example.net", "--to",
                            "b@example.org", "--subject", "hi", "--body-file", body],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

        def rows():
            r = subprocess.run([bin_path("sluice"), "shaping", "show", "--json"], env=env,
                               capture_output=True, text=True, timeout=60)
            return json.loads(r.stdout) if r.returncode == 0 else None
        got = wait_for(rows, 60, "a shaping row")
        self.assertEqual(got[0]["source"], "127.0.0.1", got)

    def test_config_with_metrics_listen_does_not_make_them_fight(self):
        port = free_port()
        cfg = os.path.join(self.tmp, "mine.yaml")
        with open(cfg, "w") as f:
            f.write("kafka:\n  bootstrap: 127.0.0.1:9\n"
                    "routes:\n  \"*\": 127.0.0.1:%d\n" % free_port() +
                    "pools:\n  default:\n    - { ip: 127.0.0.1, ehlo: localhost }\n"
                    "retry: { delays: [1s], expiry: 1h }\n"
                    "metrics:\n  listen: 127.0.0.1:%d\n" % port)
        dev, d = self.start_dev("-c", cfg)
        m = re.search(r"metrics: scheduler http://(\S+)/metrics, sender http://(\S+)/metrics",
                      dev.stderr())
        self.assertIsNotNone(m, dev.stderr())
        wait_for(lambda: ready(m.group(1)) and ready(m.group(2)), 60, "both ready")
        self.assertTrue(metrics_ok(m.group(1)) and metrics_ok(m.group(2)))
        # Neither daemon died over the port: no restart was logged.
        self.assertNotIn("restarting it", dev.stderr())
        # The next step it prints works as it stands.
        step = re.search(r"export SLUICE_CONFIG=(\S+) SLUICE_KAFKA_BOOTSTRAP=(\S+)\n"
                         r"  sluice shaping show --metrics (\S+)", dev.stderr())
        self.assertIsNotNone(step, dev.stderr())
        self.assertEqual(step.group(3), m.group(1))
        env = dict(os.environ, SLUICE_CONFIG=step.group(1), SLUICE_KAFKA_BOOTSTRAP=step.group(2))
        r = subprocess.run([bin_path("sluice"), "shaping", "show", "--json", "--metrics",
                            step.group(3)], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), [])
        r = subprocess.run([bin_path("sluice"), "stats"], env=env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        for n in ("scheduler", "sender"):
            with open(os.path.join(d, "logs", n + ".log")) as f:
                self.assertNotIn("address already in use", f.read().lower())

    def test_demo_reports_startup_apart_from_delivery(self):
        r = subprocess.run([bin_path("sluice"), "dev", "--dir", os.path.join(self.tmp, "d"),
                            "--demo", "50", "--json"], capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        s = json.loads(r.stdout)
        self.assertEqual(s["delivered"], 50, s)
        self.assertGreater(s["startup_s"], 0, s)
        self.assertGreaterEqual(s["delivery_s"], 0, s)
        self.assertLessEqual(s["startup_s"] + s["delivery_s"], s["elapsed_s"] + 0.01, s)
        r = subprocess.run([bin_path("sluice"), "dev", "--dir", os.path.join(self.tmp, "e"),
                            "--demo", "5"], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"start-up +[0-9.]+ s")
        self.assertRegex(r.stdout, r"delivery +[0-9.]+ s")

    def test_demo_that_only_defers_says_why(self):
        # Nothing listens on the route: every attempt defers. The demo says
        # so with the sender's reason instead of a bar stuck at 0.
        route = "127.0.0.1:%d" % free_port()
        r = subprocess.run([bin_path("sluice"), "dev", "--dir", os.path.join(self.tmp, "d"),
                            "--demo", "3", "--route", route, "--timeout", "40"],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"3 of 3 jobs not final after \d+s; \d+ attempts deferred, "
                         r"the last: .*(refused|down)")
        self.assertIn("sent to %s (--route)" % route, r.stdout)

    def test_interrupt_stops_daemons_first_and_twice_kills(self):
        route = "127.0.0.1:%d" % free_port()
        dev, d = self.start_dev("--route", route)
        banner = dev.stderr().splitlines()[0]
        self.assertIn("%s (--route)" % route, banner)
        self.assertNotIn("capture smtp", banner)
        pids = self.pids(d)
        m = re.search(r"sender http://(\S+)/metrics", dev.stderr())
        wait_for(lambda: ready(m.group(1)), 60, "the sender to be ready")
        # A sender that does not answer SIGTERM (stopped): dev waits for it,
        # says so, and has not touched the broker yet.
        os.kill(pids["sender"], signal.SIGSTOP)
        # Ctrl-C on a terminal signals the whole foreground process group:
        # dev's children are in groups of their own and hear it from dev.
        os.killpg(dev.pid, signal.SIGINT)
        wait_for(lambda: re.search(r"waiting up to \d+ s for sender", dev.stderr()), 30,
                 "the waiting line\n" + dev.output())
        self.assertTrue(running(pids["devbroker"]), "the broker outlives the daemons")
        dev.send_signal(signal.SIGINT)
        dev.wait(30)
        self.assertIn("interrupted again; killing them", dev.stderr())
        for n, pid in pids.items():
            self.assertFalse(running(pid), "%s still running" % n)

    def test_sender_keeps_its_drain_bound_without_kafka(self):
        cfg = os.path.join(self.tmp, "dead.yaml")
        with open(cfg, "w") as f:
            f.write("kafka:\n  bootstrap: 127.0.0.1:%d\n" % free_port() +
                    "pools:\n  default:\n    - { ip: 127.0.0.1, ehlo: localhost }\n"
                    # Without Kafka the delivery ledger cannot be read, and
                    # a sender with it on does not start (reliability.md):
                    # this is about the drain bound of one that did start.
                    "sender:\n  drain_timeout: 2s\n  ledger: false\n")
        p = Proc("sluice-sender", ["-c", cfg], tmpdir=self.tmp)
        self.addCleanup(p.stop, 5, signal.SIGKILL)
        # "workers consuming" is logged once its signal handlers are in place.
        wait_for(lambda: "workers consuming" in p.stderr() and
                 "Connection refused" in p.stderr(), 60, "the sender to start without Kafka")
        p.send_signal(signal.SIGTERM)
        # The drain bound is 2 s; allow generously for a loaded machine, far
        # below the 47 s it took when it waited for the template reader.
        self.assertEqual(p.wait(15), 0, p.output())


if __name__ == "__main__":
    unittest.main()
