#!/usr/bin/env python3
"""bench/sender.py - sluice-sender alone, beside Postfix's smtp-source.

Pre-fills the dispatch topic of a fresh dev broker with N dispatches of a
1 KB message, starts sluice-sender and times it delivering all of them to
Postfix's smtp-sink (done = sluice_sender_delivered_total reaches N on its
/metrics). In the same run, smtp-source sends the same N 1 KB messages to
the same sink (20 sessions, as many messages per connection as sluice is
allowed). Prints both rates and the ratio; then the same with rsa-2048 DKIM
signing; then sluice-sender's peak RSS while it holds 1,000 concurrent
connections open to a sink that answers slowly.

Run from the project root after scripts/build.sh:  python3 bench/sender.py [N]
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise SystemExit("timed out waiting for " + what)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def metric(port, name):
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2).read()
    except OSError:
        return 0
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


BODY = "".join("Line %03d of the benchmark message, padded to about one kilobyte.\r\n" % i
               for i in range(15))
RAW = ("From: bench@sluice.example\r\nTo: user@bench.test\r\nSubject: bench\r\n"
       "Message-ID: <%s@sluice.example>\r\n\r\n" + BODY)


class Cluster:
    def __init__(self, tmp, sink_port, dkim_key=None, max_conn=20, rate=0):
        self.tmp = tmp
        self.port_file = os.path.join(tmp, "bootstrap")
        self.broker = subprocess.Popen([os.path.join(BIN, "sluice-devbroker"), "--port-file",
                                        self.port_file], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        boot = wait_for(lambda: os.path.exists(self.port_file) and open(self.port_file).read().strip(),
                        30, "dev broker")
        self.metrics_port = free_port()
        self.cfg = os.path.join(tmp, "sluice.yaml")
        dkim = ""
        if dkim_key:
            dkim = ("dkim:\n  - { domain: sluice.example, selector: s1, key: %s, "
                    "algorithm: rsa-sha256 }\n" % dkim_key)
        with open(self.cfg, "w") as f:
            f.write("kafka: { bootstrap: \"%s\", commit_interval_ms: 500 }\n"
                    "routes: { \"*\": 127.0.0.1:%d }\n"
                    "pools: { default: [ { ip: 127.0.0.1, ehlo: bench.localdomain } ] }\n"
                    "metrics: { listen: 127.0.0.1:%d }\n"
                    # One sink is one destination: let it have the whole window.
                    "sender: { max_inflight: 20000, max_inflight_per_destination: 20000 }\n%s"
                    % (boot, sink_port, self.metrics_port, dkim))
        self.max_conn = max_conn
        self.rate = rate
        self.sender = None

    def prefill(self, n, to="user@bench.test"):
        lines = []
        for i in range(n):
            jid = "bench-%07d" % i
            lines.append(json.dumps({
                "job_id": jid, "from": "bench@sluice.example", "to": [to],
                "domain": "bench.test", "raw": RAW % jid, "site": "bench",
                "source_ip": "127.0.0.1", "ehlo": "bench.localdomain",
                "max_connections": self.max_conn, "max_messages_per_connection": 1000,
                "rate": self.rate, "tls": "disabled"}))
        p = subprocess.run([os.path.join(BIN, "publish_dispatch"), "-c", self.cfg],
                           input="\n".join(lines) + "\n", text=True, capture_output=True)
        if p.returncode != 0:
            raise SystemExit("publish_dispatch failed: " + p.stderr[-2000:])

    def start_sender(self):
        self.sender = subprocess.Popen([os.path.join(BIN, "sluice-sender"), "-c", self.cfg],
                                       stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(self.tmp, "sender.log"), "w"),
                                       env=dict(os.environ, SLUICE_LOG_LEVEL="warn"))
        return time.monotonic()

    def rss_peak_kb(self):
        with open("/proc/%d/status" % self.sender.pid) as f:
            m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
        return int(m.group(1))

    def stop(self):
        for p in (self.sender, self.broker):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()


def run_sluice(n, sink_port, dkim_key=None):
    tmp = tempfile.mkdtemp(prefix="sluice-bench-sender-")
    c = Cluster(tmp, sink_port, dkim_key)
    try:
        c.prefill(n)
        c.start_sender()
        # The clock starts at the first delivery: consumer-group start-up
        # (a few seconds on any Kafka) is not delivery throughput.
        d0 = wait_for(lambda: metric(c.metrics_port, "sluice_sender_delivered_total"), 120,
                      "the first delivery")
        t0 = time.monotonic()
        wait_for(lambda: metric(c.metrics_port, "sluice_sender_delivered_total") >= n, 900,
                 "sluice-sender to deliver %d" % n)
        el = time.monotonic() - t0
        return (n - d0) / el, c.rss_peak_kb()
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run_smtp_source(n, sink_port):
    t0 = time.monotonic()
    subprocess.run(["smtp-source", "-s", "20", "-m", str(n), "-l", "1024", "-N",
                    "-f", "bench@sluice.example", "-t", "user@bench.test",
                    "127.0.0.1:%d" % sink_port], check=True)
    return n / (time.monotonic() - t0)


def run_rss(sink_port_slow, conns):
    tmp = tempfile.mkdtemp(prefix="sluice-bench-rss-")
    c = Cluster(tmp, sink_port_slow, max_conn=conns)
    try:
        c.prefill(conns, to="slow3000@bench.test")
        c.start_sender()
        wait_for(lambda: metric(c.metrics_port, "sluice_sender_connections_open") >= conns * 0.95,
                 120, "%d connections open" % conns)
        peak = c.rss_peak_kb()
        opened = metric(c.metrics_port, "sluice_sender_connections_open")
        return peak, opened
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    work = tempfile.mkdtemp(prefix="sluice-bench-")
    os.chmod(work, 0o755)
    sink_port = free_port()
    cmd = ["smtp-sink", "127.0.0.1:%d" % sink_port, "1024"]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "postfix"]
    sink = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(sink_port), 10, "smtp-sink")
    keydir = tempfile.mkdtemp(prefix="sluice-bench-dkim-")
    key = os.path.join(keydir, "s1.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", key], check=True, capture_output=True)
    try:
        src = run_smtp_source(n, sink_port)
        s_rate, s_rss = run_sluice(n, sink_port)
        d_rate, _ = run_sluice(n, sink_port, dkim_key=key)
        src2 = run_smtp_source(n, sink_port)
        src_avg = (src + src2) / 2
    finally:
        sink.terminate()
        sink.wait()
    # Peak RSS with 1,000 concurrent connections: our sink answers slowly.
    slow_dir = tempfile.mkdtemp(prefix="sluice-bench-slow-")
    pf = os.path.join(slow_dir, "port")
    slow = subprocess.Popen([os.path.join(BIN, "sluice-testsink"), "--listen", "127.0.0.1:0",
                             "--port-file", pf, "--max-conn-per-ip", "5000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        slow_port = int(wait_for(lambda: os.path.exists(pf) and open(pf).read().strip(), 10,
                                 "slow sink"))
        peak_kb, opened = run_rss(slow_port, 1000)
    finally:
        slow.terminate()
        slow.wait()
    print("messages                       %d (1 KB each)" % n)
    print("smtp-source -> smtp-sink       %.0f msg/s (mean of a run before and after)" % src_avg)
    print("sluice-sender -> smtp-sink     %.0f msg/s   ratio %.2f" % (s_rate, s_rate / src_avg))
    print("  with rsa-2048 DKIM           %.0f msg/s   ratio %.2f" % (d_rate, d_rate / src_avg))
    print("sluice-sender peak RSS, %d connections open: %.1f MB" % (opened, peak_kb / 1024))
    print("sluice-sender peak RSS after the %d-message run: %.1f MB" % (n, s_rss / 1024))


if __name__ == "__main__":
    main()
