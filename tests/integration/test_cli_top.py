"""`sluice top` as an operator uses it in an incident (#23 item 10): a
5-minute window works, `q` quits in a terminal, and a site throttled
before the window began still shows in the backoff list (from the
scheduler's state topic), with --once too."""

import os
import re
import shutil
import subprocess
import time
import unittest

from sluicetest import bin_path, wait_for
from test_ops_top_tmux import TopTmuxTest


class TopCli(TopTmuxTest):
    test_top_redraws_in_a_terminal = None  # the parent's test runs there

    def cfg(self):
        path = os.path.join(self.dir, "c.yaml")
        with open(path, "w") as f:
            f.write('kafka: { bootstrap: "%s" }\n' % self.env["SLUICE_KAFKA_BOOTSTRAP"])
        return path

    def top_once(self, *args):
        r = subprocess.run([bin_path("sluice"), "top", "-c", self.cfg(), "--once"] + list(args),
                           env=self.env, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_backoff_older_than_the_window_is_shown(self):
        ten_min_ago = int(time.time() * 1000) - 600000
        r = subprocess.run([bin_path("sched_tool"), "state", "-c", self.cfg(), "--site", "yahoo",
                            "--source-ip", "192.0.2.7", "--type", "throttled", "--rate", "2.5",
                            "--created-at-ms", str(ten_min_ago)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = self.top_once("--window", "120s")
        self.assertNotIn("(no backoff seen)", out)
        self.assertRegex(out, r"yahoo\s+192\.0\.2\.7\s+2\.5\s+throttled")

    def test_window_of_five_minutes(self):
        out = self.top_once("--window", "5m")
        self.assertIn("window 300s", out)
        r = subprocess.run([bin_path("sluice"), "top", "--window", "2h"], env=self.env,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("1s..1h", r.stderr)

    @unittest.skipUnless(shutil.which("tmux"), "tmux is not installed")
    def test_q_quits(self):
        cmd = "%s top --window 5m --interval 1s; echo; echo top exited $?; sleep 60" % (
            bin_path("sluice"))
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "100", "-y", "30",
                  "env", "SLUICE_KAFKA_BOOTSTRAP=" + self.env["SLUICE_KAFKA_BOOTSTRAP"],
                  "TERM=xterm", "sh", "-c", cmd)
        wait_for(lambda: re.search(r"window 300s", self.screen()), 30, "a frame", interval=0.2)
        self.tmux("send-keys", "-t", "top", "q")
        wait_for(lambda: "top exited 0" in self.screen(), 15, "top to quit on q", interval=0.2)


if __name__ == "__main__":
    unittest.main()
