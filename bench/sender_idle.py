#!/usr/bin/env python3
"""bench/sender_idle.py - sluice-sender's memory after traffic to many
distinct destinations, and again once they have been idle past
sender.idle_state_timeout.

One dev broker, one sluice-testsink listening on 0.0.0.0 (so every
127.x.y.z address reaches it) and one sluice-sender. Each of N dispatches
is routed to a loopback address of its own, so the sender sees N distinct
destinations (MX address, source IP): N pools, destination entries and
pacing entries. (Each site is also a label set of the sender's metrics;
those of a forgotten (site, source IP) pair are dropped with it.) Prints the sender's RSS at start, after delivering all N,
and after the idle period (shaping idle timeout 1 s, idle_state_timeout
5 s), with the destination entries it holds (sluice_sender_destinations_known).

Run from the project root after scripts/build.sh:
    python3 bench/sender_idle.py [N]        (default 20000)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sender import BIN, RAW, Cluster, free_port, metric, port_open, wait_for  # noqa: E402


def poll(pred, timeout, what):
    # Slowly: every site is a label set of the sender's metrics, so with
    # many destinations /metrics is large and rendering it is not free.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(2)
    raise SystemExit("timed out waiting for " + what)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    tmp = tempfile.mkdtemp(prefix="sluice-bench-idle-")
    port = free_port()
    sink = subprocess.Popen([os.path.join(BIN, "sluice-testsink"), "--listen", "0.0.0.0:%d" % port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), 10, "sluice-testsink")
    c = Cluster(tmp, port, max_conn=1)
    with open(c.cfg) as f:
        cfg = f.read()
    cfg = cfg.replace("max_inflight_per_destination: 20000 }",
                      "max_inflight_per_destination: 20000, idle_state_timeout: 5s, workers: 2 }")
    cfg += ("shaping:\n  default: { max_message_rate: 0, max_connections: 1, "
            "timeouts: { idle: 1s } }\n")
    with open(c.cfg, "w") as f:
        f.write(cfg)
    try:
        c.start_sender()
        wait_for(lambda: port_open(c.metrics_port), 30, "sender metrics")
        time.sleep(2)
        base = rss_kb(c.sender.pid)
        lines = []
        for i in range(n):
            jid = "idle-%07d" % i
            ip = "127.%d.%d.%d" % (1 + i // 64000, (i // 250) % 256, 1 + i % 250)
            lines.append(json.dumps({
                "job_id": jid, "from": "bench@sluice.example", "to": ["user@d%d.test" % i],
                "domain": "d%d.test" % i, "raw": RAW % jid, "site": "d%d" % i,
                "source_ip": "127.0.0.1", "ehlo": "bench.localdomain",
                "route": "%s:%d" % (ip, port), "max_connections": 1, "tls": "disabled"}))
        p = subprocess.run([os.path.join(BIN, "publish_dispatch"), "-c", c.cfg],
                           input="\n".join(lines) + "\n", text=True, capture_output=True)
        if p.returncode != 0:
            raise SystemExit("publish_dispatch failed: " + p.stderr[-2000:])
        t0 = time.monotonic()
        poll(lambda: metric(c.metrics_port, "sluice_sender_delivered_total") >= n, 1800,
                 "%d deliveries" % n)
        el = time.monotonic() - t0
        busy = rss_kb(c.sender.pid)
        known = metric(c.metrics_port, "sluice_sender_destinations_known")
        t1 = time.monotonic()
        poll(lambda: metric(c.metrics_port, "sluice_sender_destinations_known") == 0 and
                 metric(c.metrics_port, "sluice_sender_connections_open") == 0, 120,
                 "idle state freed")
        idle_s = time.monotonic() - t1
        time.sleep(2)
        idle = rss_kb(c.sender.pid)
        # The allocator hands freed pages back to the system lazily.
        time.sleep(20)
        later = rss_kb(c.sender.pid)
        print("destinations %d, delivered in %.1f s" % (n, el))
        print("sender RSS: start %d kB, after traffic %d kB (%d destinations held), "
              "after idle %d kB (0 held, freed %.1f s after the last delivery), "
              "20 s later %d kB" % (base, busy, known, idle, idle_s, later))
    finally:
        c.stop()
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
