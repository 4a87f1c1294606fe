"""`sluice top` in a real terminal: run it in a detached tmux session (a
private tmux server on a socket in the test's directory), let it redraw,
and read the screen back with capture-pane. The header's clock must move
between two captures (it refreshes) and the site table must show the
published deliveries and bounces.

Skipped when tmux is not installed (scripts/deps.sh installs it)."""

import calendar
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from sluicetest import Proc, bin_path, start_devbroker, wait_for

HEADER = re.compile(r"^sluice top  (\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ)  window 60s  backlog ")


def clock(screen):
    return calendar.timegm(time.strptime(HEADER.search(screen).group(1), "%Y-%m-%d %H:%M:%SZ"))


@unittest.skipUnless(shutil.which("tmux"), "tmux is not installed")
class TopTmuxTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sluice-top-tmux-")
        self.dir = self.tmp.name
        self.broker, bootstrap = start_devbroker(self.dir, ["--brokers", "1"])
        self.env = dict(os.environ, SLUICE_KAFKA_BOOTSTRAP=bootstrap)
        self.sock = os.path.join(self.dir, "tmux.sock")

    def tearDown(self):
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=10)
        self.broker.stop()
        self.tmp.cleanup()

    def tmux(self, *args):
        r = subprocess.run(["tmux", "-S", self.sock] + list(args), env=self.env,
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def publish(self, *args):
        r = subprocess.run([bin_path("sluice-publish-events")] + [str(a) for a in args],
                           env=self.env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "top")

    def test_top_redraws_in_a_terminal(self):
        self.publish("--count", 30, "--prefix", "d", "--site", "google")
        self.publish("--count", 6, "--prefix", "b", "--site", "outlook",
                     "--type", "BOUNCED", "--code", 550)
        # If top exits, the pane keeps its last words on screen for the
        # failure message instead of the session vanishing.
        cmd = "%s top --window 60s --interval 1s; echo; echo top exited $?; sleep 60" % (
            bin_path("sluice"))
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "100", "-y", "30",
                  "env", "SLUICE_KAFKA_BOOTSTRAP=" + self.env["SLUICE_KAFKA_BOOTSTRAP"],
                  "TERM=xterm", "sh", "-c", cmd)

        def frame_with_rows():
            s = self.screen()
            return s if HEADER.search(s) and re.search(r"(?m)^google\s", s) else None

        first = wait_for(frame_with_rows, 20, "a frame with the google row", interval=0.2)
        t0 = clock(first)

        def refreshed():
            s = self.screen()
            return s if HEADER.search(s) and clock(s) >= t0 + 2 else None

        # A couple of refreshes later the clock in the header has moved on.
        later = wait_for(refreshed, 15, "the header clock to advance 2 s", interval=0.2)
        lines = {l.split()[0]: l.split() for l in later.splitlines() if l.strip()}
        self.assertEqual(lines["SITE"], ["SITE", "DELIVERED/s", "DEFERRED/s", "BOUNCED/s"], later)
        # 30 deliveries and 6 bounces over a 60 s window.
        self.assertEqual(lines["google"][1:4], ["0.5", "0.0", "0.0"], later)
        self.assertEqual(lines["outlook"][1:4], ["0.0", "0.0", "0.1"], later)
        self.assertIn("550 5.1.1", later)
        self.assertNotIn("\033[", later)  # the terminal interpreted the escapes
        if os.environ.get("SLUICE_TOP_CAPTURE"):
            with open(os.environ["SLUICE_TOP_CAPTURE"], "w") as f:
                f.write(later)


if __name__ == "__main__":
    unittest.main()
