#!/usr/bin/env python3
"""bench/sender_idle.py - sluice-sender's memory after traffic to many
distinct destinations, and again once they have been idle past
sender.idle_state_timeout.

One dev broker, one sluice-testsink listening on 0.0.0.0 (so every
127.x.y.z address reaches it) and one sluice-sender. Each of N dispatches
is for a recipient domain of its own (its own site) routed to a loopback
address of its own, so the sender sees N distinct destinations (MX
address, source IP): N pools, destination entries, pacing entries and
(site, source IP) metric series. Prints the sender's RSS at start, once all
N are delivered (and its peak, VmHWM), after the idle period (shaping idle
timeout 1 s, idle_state_timeout 5 s unless --idle) and 20 s after that.

Cheap at any N: the dispatches are a few hundred bytes each and are
published in batches of --batch (10,000), the next once the sink has
received the last, so the dev broker (which keeps only the newest ~5 MB
per partition) never holds more than a batch; deliveries are counted by the
sink (SIGUSR1 prints its counters), not by summing the sender's
per-pair counters, whose series the sender drops as it forgets the pairs.

Run from the project root after scripts/build.sh:
    python3 bench/sender_idle.py [N] [--batch B] [--idle DURATION]   (default N 20000)
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sender import BIN, Cluster, free_port, port_open, wait_for  # noqa: E402


def poll(pred, timeout, what, interval=2):
    # Slowly on /metrics: every site in use is a label set of the sender's
    # metrics, so with many destinations rendering it is not free.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise SystemExit("timed out waiting for " + what)


def metric(port, name):
    """The sum of a metric's samples. Unlike bench/sender.py's, it waits as
    long as the render takes (with every one of 100,000 pairs still held,
    /metrics is millions of lines) and fails rather than reading 0."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=300) as r:
        total = 0.0
        for line in r:
            if line.startswith(name.encode()):
                rest = line[len(name):]
                if rest[:1] in (b"{", b" "):
                    total += float(line.rsplit(b" ", 1)[1])
        return total


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(field + r":\s+(\d+) kB", f.read()).group(1))


def rss_kb(pid):
    return status_kb(pid, "VmRSS")


# A small message: the bench is about per-destination state, not bodies.
RAW = ("From: bench@sluice.example\r\nTo: user@bench.test\r\nSubject: idle\r\n"
       "Message-ID: <%s@sluice.example>\r\n\r\nhello\r\n")


class Sink:
    """sluice-testsink on 0.0.0.0, its counters read through SIGUSR1."""

    def __init__(self, tmp, port):
        self.out = os.path.join(tmp, "sink.out")
        self.proc = subprocess.Popen([os.path.join(BIN, "sluice-testsink"), "--listen",
                                      "0.0.0.0:%d" % port], stdout=open(self.out, "w"),
                                     stderr=subprocess.DEVNULL)

    def messages(self):
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        with open(self.out) as f:
            found = re.findall(r"messages=(\d+)", f.read())
        return int(found[-1]) if found else 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def dispatches(first, count, port):
    lines = []
    for i in range(first, first + count):
        jid = "idle-%07d" % i
        ip = "127.%d.%d.%d" % (1 + i // 64000, (i // 250) % 256, 1 + i % 250)
        lines.append(json.dumps({
            "job_id": jid, "from": "bench@sluice.example", "to": ["user@d%d.test" % i],
            "domain": "d%d.test" % i, "raw": RAW % jid, "site": "d%d" % i,
            "source_ip": "127.0.0.1", "ehlo": "bench.localdomain",
            "route": "%s:%d" % (ip, port), "max_connections": 1, "tls": "disabled"}))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--idle", default="5s", help="sender.idle_state_timeout (5s); longer than "
                    "the run to see every destination held at its end")
    a = ap.parse_args()
    n = a.n
    tmp = tempfile.mkdtemp(prefix="sluice-bench-idle-")
    port = free_port()
    sink = Sink(tmp, port)
    wait_for(lambda: port_open(port), 10, "sluice-testsink")
    c = Cluster(tmp, port, max_conn=1)
    with open(c.cfg) as f:
        cfg = f.read()
    # A window of 500: with the whole batch in flight at once, the sink's
    # accept queue overflows, and a connection whose final ACK the sink's
    # kernel dropped looks established to the sender, which then waits out
    # the 5-minute greeting timeout for it (the deferral would go to a retry
    # topic nothing reads here).
    cfg = cfg.replace("max_inflight: 20000, max_inflight_per_destination: 20000 }",
                      "max_inflight: 500, max_inflight_per_destination: 500, "
                      "idle_state_timeout: %s, workers: 2 }" % a.idle)
    if "max_inflight: 500," not in cfg:
        raise SystemExit("bench/sender.py's sender section changed: " + cfg)
    cfg += ("shaping:\n  default: { max_message_rate: 0, max_connections: 1, "
            "timeouts: { idle: 1s } }\n")
    with open(c.cfg, "w") as f:
        f.write(cfg)
    try:
        c.start_sender()
        wait_for(lambda: port_open(c.metrics_port), 30, "sender metrics")
        time.sleep(2)
        base = rss_kb(c.sender.pid)
        t0 = time.monotonic()
        publish_s = 0.0
        for first in range(0, n, a.batch):
            count = min(a.batch, n - first)
            tp = time.monotonic()
            p = subprocess.run([os.path.join(BIN, "publish_dispatch"), "-c", c.cfg],
                               input=dispatches(first, count, port), text=True,
                               capture_output=True)
            publish_s += time.monotonic() - tp
            if p.returncode != 0:
                raise SystemExit("publish_dispatch failed: " + p.stderr[-2000:])
            poll(lambda: sink.messages() >= first + count, 1800,
                 "%d deliveries" % (first + count), interval=0.3)
        el = time.monotonic() - t0
        busy, peak = rss_kb(c.sender.pid), status_kb(c.sender.pid, "VmHWM")
        t1 = time.monotonic()
        known = metric(c.metrics_port, "sluice_sender_destinations_known")
        # Idle: no destination entry, no connection, and no pair's series
        # (they go with the pacing entries, a little after the destinations).
        poll(lambda: metric(c.metrics_port, "sluice_sender_destinations_known") == 0 and
                 metric(c.metrics_port, "sluice_sender_connections_open") == 0 and
                 metric(c.metrics_port, "sluice_sender_attempts_total") == 0, 1800,
                 "idle state freed", interval=15)
        idle_s = time.monotonic() - t1
        time.sleep(2)
        idle = rss_kb(c.sender.pid)
        series = sum(1 for _ in urllib.request.urlopen(
            "http://127.0.0.1:%d/metrics" % c.metrics_port, timeout=10))
        # The allocator hands freed pages back to the system lazily.
        time.sleep(20)
        later = rss_kb(c.sender.pid)
        cpu = [int(x) for x in open("/proc/%d/stat" % c.sender.pid).read()
               .rsplit(")", 1)[1].split()[11:13]]
        print("destinations %d, delivered in %.1f s (%.1f s of it publishing), "
              "sender CPU %.1f s user %.1f s system"
              % (n, el, publish_s, cpu[0] / os.sysconf("SC_CLK_TCK"),
                 cpu[1] / os.sysconf("SC_CLK_TCK")))
        print("sender RSS: start %d kB, after traffic %d kB (peak %d kB, %d destinations held), "
              "after idle %d kB (0 held, freed %.1f s after the last delivery, /metrics %d lines), "
              "20 s later %d kB" % (base, busy, peak, known, idle, idle_s, series, later))
    finally:
        c.stop()
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
