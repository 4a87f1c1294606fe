"""Resource limits of sluice-submit against hostile clients: a client that
pipelines commands and never reads its replies (back-pressure keeps memory
bounded), clients that trickle a command or a message an octet at a time
(command_timeout, data_timeout), a crowd of idle connections to the metrics
listener (capped, so descriptors last and /healthz answers), and a storm of
failing AUTH attempts (a bounded pool of password checks, 454 beyond it).

Each test runs sluice-submit against its own dev broker (test_submit's
SubmitCase) and reads the process's memory from /proc."""

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

from sluicetest import Proc, bin_path, wait_for
from test_submit import SubmitCase, message, tls_ctx
from test_submit_security import authed_tls, greeted, raise_nofile, read_reply


def proc_status_kb(pid, field):
    """A memory figure (VmRSS, VmHWM) of a process, in kB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("%s not in /proc/%d/status" % (field, pid))


def set_submit_keys(case, text):
    """Add keys to the submit: section of the test's config."""
    with open(case.cfg) as f:
        cfg = f.read()
    cfg = cfg.replace("  idle_timeout: 30s\n", "  idle_timeout: 30s\n" + text)
    with open(case.cfg, "w") as f:
        f.write(cfg)


def sanitized(path):
    """True for a binary built with AddressSanitizer."""
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


class LimitsCase(SubmitCase):
    submit_keys = ""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # ASan keeps freed memory in quarantine (256 MB by default), which
        # the memory figures would count: measure the allocator, not it.
        cls._asan = os.environ.get("ASAN_OPTIONS")
        if sanitized(bin_path("sluice-submit")):
            os.environ["ASAN_OPTIONS"] = ((cls._asan + ":") if cls._asan else "") + \
                "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"

    @classmethod
    def tearDownClass(cls):
        if cls._asan is None:
            os.environ.pop("ASAN_OPTIONS", None)
        else:
            os.environ["ASAN_OPTIONS"] = cls._asan
        super().tearDownClass()

    def start_submit(self, *extra):
        if self.submit_keys:
            with open(self.cfg) as f:
                if self.submit_keys not in f.read():
                    set_submit_keys(self, self.submit_keys)
        return super().start_submit(*extra)

    def healthz(self):
        return urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.pmetrics,
                                      timeout=10).status

    def normal_session(self):
        """A complete authenticated submission; DATA's (code, text)."""
        c = self.smtp_587(login="alice")
        code, resp = self.send(c, "alice@example.net", ["ok@example.com"], message())
        c.quit()
        return code, resp


class TestPipeliningBackpressure(LimitsCase):
    INPUT = 50 << 20           # octets the client tries to pipeline
    BOUND_KB = 8 << 10          # RSS growth allowed for the one connection

    def test_client_that_never_reads_keeps_memory_bounded(self):
        base = proc_status_kb(self.submit.pid, "VmRSS")
        sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sk.close)
        # A small receive window makes the replies back up at once.
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sk.connect(("127.0.0.1", self.p587))
        sk.settimeout(10)
        self.assertTrue(sk.recv(512).startswith(b"220 "))
        chunk = b"NOOP\r\n" * 10000
        sent = 0
        # The server stops reading once its replies pile up: a send that
        # cannot proceed for two seconds means the windows are full.
        sk.settimeout(2)
        try:
            while sent < self.INPUT:
                sent += sk.send(chunk)
        except socket.timeout:
            pass
        self.assertTrue(self.submit.alive(), self.submit.output())
        grew = proc_status_kb(self.submit.pid, "VmRSS") - base
        # Meanwhile another client is served normally.
        code, resp = self.normal_session()
        print("\npipelining: sent %.1f MB of NOOPs without reading; RSS grew %d kB"
              % (sent / 1e6, grew), flush=True)
        self.assertEqual(code, 250, resp)
        self.assertLess(sent, self.INPUT, "the server read everything")
        self.assertLess(grew, self.BOUND_KB, "RSS grew by %d kB" % grew)
        # Once the client reads, the session goes on where it stopped: every
        # NOOP is answered, then the QUIT.
        sk.settimeout(60)
        seen = {"tail": b"", "replies": 0}

        def drain():
            while not seen["tail"].endswith(b"221 2.0.0 Bye\r\n"):
                data = sk.recv(1 << 16)
                if not data:
                    return
                seen["replies"] += data.count(b"\r\n")
                seen["tail"] = seen["tail"][-64:] + data
        reader = threading.Thread(target=drain)
        reader.start()
        rest = b"NOOP\r\n"[sent % 6:] if sent % 6 else b""  # finish the cut command
        sk.sendall(rest + b"QUIT\r\n")
        reader.join(120)
        self.assertTrue(seen["tail"].endswith(b"221 2.0.0 Bye\r\n"), seen["tail"])
        self.assertEqual(seen["replies"], (sent + len(rest)) // 6 + 1)


class TestTrickle(LimitsCase):
    submit_keys = "  command_timeout: 1s\n  data_timeout: 2s\n"

    def trickle(self, sk, octet, limit=15.0):
        """Send one octet every 0.2 s (the client's pace, not a wait) until
        the server answers; returns (reply, seconds)."""
        t0 = time.monotonic()
        sk.settimeout(0.2)
        got = b""
        while time.monotonic() - t0 < limit and not got.endswith(b"\r\n"):
            try:
                sk.send(octet)
            except OSError:
                break
            try:
                data = sk.recv(512)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            if not data:
                break
            got += data
        return (got.decode(errors="replace") or None), time.monotonic() - t0

    def test_command_line_deadline(self):
        sk = socket.create_connection(("127.0.0.1", self.p587), timeout=10)
        f = greeted(self, sk, b"trickle.test")
        # A whole command at once is fine however long the pause before it.
        sk.sendall(b"NOOP\r\n")
        self.assertEqual(read_reply(f)[0], 250)
        reply, took = self.trickle(sk, b"N")
        # idle_timeout is 30 s: only the command deadline answers this soon.
        self.assertIsNotNone(reply, "no answer to a trickled command after %.1fs" % took)
        self.assertTrue(reply.startswith("421 4.4.2 "), reply)
        self.assertIn("command timeout", reply)

    def test_tls_handshake_deadline(self):
        # A ClientHello trickled an octet at a time never puts a line in
        # the engine's input, so the deadline must start with the octets
        # themselves.
        out = ssl.MemoryBIO()
        obj = tls_ctx().wrap_bio(ssl.MemoryBIO(), out)
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = out.read()
        sk = socket.create_connection(("127.0.0.1", self.p465), timeout=10)
        self.addCleanup(sk.close)
        t0 = time.monotonic()
        sk.settimeout(0.2)
        closed = False
        for octet in hello[:-1]:  # never the whole ClientHello
            try:
                sk.send(bytes([octet]))
                closed = sk.recv(512) == b""
            except socket.timeout:
                continue
            except OSError:
                closed = True
            if closed:
                break
        took = time.monotonic() - t0
        self.assertTrue(closed, "a trickled handshake still open after %.1fs" % took)

    def test_data_deadline(self):
        s, f = authed_tls(self, self.p465, b"trickle.test")
        s.sendall(b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        self.assertEqual(read_reply(f)[0], 250)
        self.assertEqual(read_reply(f)[0], 250)
        self.assertEqual(read_reply(f)[0], 354)
        # Whole lines, each well inside command_timeout: only the deadline
        # of the DATA phase as a whole can end this.
        reply, took = self.trickle(s, b"x\r\n")
        self.assertIsNotNone(reply, "no answer to a trickled message after %.1fs" % took)
        self.assertTrue(reply.startswith("421 4.4.2 "), reply)
        self.assertIn("data timeout", reply)
        self.assertEqual(self.jobs(), [])


class TestMetricsCrowd(LimitsCase):
    CROWD = 2000
    NOFILE = 512  # sluice-submit's own limit (soft and hard), below the crowd

    def start_submit(self, *extra):
        # sluice-submit lifts its soft limit to the hard one: set both.
        prlimit = shutil.which("prlimit")
        if not prlimit:
            self.skipTest("prlimit not installed")
        real = Proc

        def limited(name, args=(), **kw):
            return real(prlimit, ["--nofile=%d:%d" % (self.NOFILE, self.NOFILE),
                                  bin_path(name)] + list(args), **kw)
        import test_submit
        test_submit.Proc = limited
        try:
            return super().start_submit(*extra)
        finally:
            test_submit.Proc = real

    def test_idle_metrics_connections_do_not_exhaust_descriptors(self):
        if raise_nofile(self.CROWD + 500) < self.CROWD + 500:
            self.skipTest("our RLIMIT_NOFILE is too low for the crowd")
        socks = []
        self.addCleanup(lambda: [x.close() for x in socks])
        failed = 0
        for i in range(self.CROWD):
            sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sk.settimeout(10)
            try:
                sk.connect(("127.0.0.1", self.pmetrics))
            except OSError:
                failed += 1
                sk.close()
                continue
            socks.append(sk)
        fds = len(os.listdir("/proc/%d/fd" % self.submit.pid))
        self.assertTrue(self.submit.alive(), self.submit.output())
        self.assertEqual(self.healthz(), 200)
        code, resp = self.normal_session()
        print("\nmetrics crowd: %d idle connections (%d failed to connect); sluice-submit "
              "holds %d descriptors" % (self.CROWD, failed, fds), flush=True)
        self.assertEqual(code, 250, resp)
        self.assertLess(fds, self.NOFILE // 2)
        self.assertGreater(self.dropped("cap"), 0)

    def dropped(self, reason):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.pmetrics,
                                      timeout=10).read().decode()
        m = re.search(r'^sluice_metrics_connections_dropped_total\{reason="%s"\} (\S+)$'
                      % reason, text, re.M)
        return float(m.group(1)) if m else 0.0

    def test_idle_metrics_connection_closed(self):
        sk = socket.create_connection(("127.0.0.1", self.pmetrics), timeout=30)
        self.addCleanup(sk.close)
        sk.sendall(b"GET /metr")  # and never the rest
        self.assertEqual(sk.recv(512), b"", "the server answered a partial request")
        self.assertEqual(self.dropped("timeout"), 1)


class TestConfigBounds(unittest.TestCase):
    """A config that would cost minutes to load, or that sets a rate the
    token bucket cannot honour, stops the daemon at once: exit 2 and
    FILE:LINE."""

    def run_submit(self, text):
        with tempfile.TemporaryDirectory(prefix="sluice-limits-") as d:
            path = os.path.join(d, "bad.yaml")
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([bin_path("sluice-submit"), "-c", path], capture_output=True,
                               text=True, timeout=60)
            return r.returncode, r.stderr.replace(path, "bad.yaml")

    def test_alias_bomb(self):
        text = "".join("x%d: &a%d v\n" % (i, i) for i in range(60000))
        text += "".join("y%d: *a0\n" % i for i in range(40000))
        rc, err = self.run_submit(text)
        self.assertEqual(rc, 2, err)
        self.assertIn("bad.yaml:1001: more than 1000 anchors", err)

    def test_rates_out_of_range(self):
        for value, line in (("max_message_rate: 1e-300/s", 3), ("max_message_rate: 1e308/s", 3),
                            ("burst: 1e30", 3)):
            rc, err = self.run_submit("shaping:\n  default:\n    %s\n" % value)
            self.assertEqual(rc, 2, err)
            self.assertIn("bad.yaml:%d: key 'shaping.default.%s'" % (line, value.split(":")[0]),
                          err)
            self.assertIn("out of range", err)


class TestAuthStorm(LimitsCase):
    submit_keys = "  auth_workers: 1\n  auth_queue: 4\n"
    SOURCES = 20
    PER_SOURCE = 2
    # One argon2 check holds 64 MiB; a second running at once would add as
    # much again (the libuv pool runs four).
    BOUND_KB = 40 << 10

    def failing_auth(self, src, out):
        try:
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            raw.bind((src, 0))
            raw.settimeout(60)
            raw.connect(("127.0.0.1", self.p465))
            s = tls_ctx().wrap_socket(raw)
            f = s.makefile("rb")
            read_reply(f)
            s.sendall(b"EHLO storm.test\r\n")
            read_reply(f)
            codes = []
            for _ in range(3):
                # \0alice\0wrong
                s.sendall(b"AUTH PLAIN AGFsaWNlAHdyb25n\r\n")
                code, _ = read_reply(f)
                codes.append(code)
                if code == 421:
                    break
            s.close()
            out.append(codes)
        except (OSError, ConnectionError) as e:
            out.append(repr(e))

    def test_concurrent_failing_auth_bounded(self):
        # The start-up dummy hash ran on the main thread: its 64 MiB is in
        # the high-water mark already.
        base = proc_status_kb(self.submit.pid, "VmHWM")
        out = []
        threads = [threading.Thread(target=self.failing_auth, args=("127.0.0.%d" % (2 + i), out))
                   for i in range(self.SOURCES) for _ in range(self.PER_SOURCE)]
        for t in threads:
            t.start()
        # A session that does not authenticate is served meanwhile.
        c = self.smtp_587()
        self.assertEqual(c.noop()[0], 250)
        c.quit()
        for t in threads:
            t.join(120)
        grew = proc_status_kb(self.submit.pid, "VmHWM") - base
        codes = [c for r in out if isinstance(r, list) for c in r]
        print("\nauth storm: %d sessions from %d sources; replies %s; peak RSS grew %d kB"
              % (len(threads), self.SOURCES, {c: codes.count(c) for c in sorted(set(codes))},
                 grew), flush=True)
        self.assertEqual(len(out), len(threads))
        self.assertEqual([r for r in out if not isinstance(r, list)], [])
        self.assertTrue(set(codes) <= {535, 454, 421}, codes)
        self.assertLess(grew, self.BOUND_KB)
        self.assertIn(454, codes, "no check was refused for want of a worker")
        # The per-IP lockout still holds, and a correct password still works.
        code, resp = self.normal_session()
        self.assertEqual(code, 250, resp)


if __name__ == "__main__":
    unittest.main()
