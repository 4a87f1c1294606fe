"""Connection caps per (source IP, site), across every MX host of the site.

A site with three MX hosts of equal preference (which classify shuffles,
so each job names them in another order) is served by three
sluice-testsinks on 127.0.0.1, .2 and .3, one port. Each sink logs every
connection it opens and closes (--conn-log, CLOCK_MONOTONIC), so the
merged logs say how many connections one source IP held at once at the
receiving end, across the three hosts. The sender must never hold more
than the Dispatch's max_connections, not max_connections per MX host.
"""

import json
import os
import tempfile
import unittest

import dnstest
from sluicetest import Proc, free_port, wait_for
from test_sender import SenderEnv, dispatch

HOSTS = ("a.three.test", "b.three.test", "c.three.test")
ADDRS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def read_lines(path):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def peak_connections(logs, source):
    """The most connections from `source` open at once over the merged
    connection logs of several sinks (a close at the same microsecond as
    an open counts first). A connection ends at its QUIT when it has one:
    the sink logs it before answering 221, so before the sender can have
    closed and connected again, while its "close" is logged whenever that
    sink process gets to read the sender's close (on a loaded machine,
    after another sink has already accepted the sender's next
    connection)."""
    evs = []
    for path in logs:
        ended = {}
        for e in read_lines(path):
            if e["peer"].rsplit(":", 1)[0] != source:
                continue
            if e["ev"] == "open":
                evs.append((e["t_us"], 1))
            elif e["peer"] not in ended:  # the quit, else the close
                ended[e["peer"]] = e["t_us"]
                evs.append((e["t_us"], 0))
    evs.sort()
    cur = peak = 0
    for _, kind in evs:
        cur += 1 if kind else -1
        peak = max(peak, cur)
    return peak


class Sinks:
    """Three sinks on one port, one per loopback address."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        for attempt in range(20):
            port = free_port(ADDRS[0])
            try:
                self._start(port)
                self.port = port
                return
            except AssertionError:
                self.stop()  # that port was taken on another address
        raise AssertionError("no port free on %s" % (ADDRS,))

    def _start(self, port):
        self.logs, self.conn_logs = [], []
        for i, addr in enumerate(ADDRS):
            d = os.path.join(self.tmp, "sink%d-%d" % (i, port))
            os.makedirs(d, exist_ok=True)
            log, conn = os.path.join(d, "msgs.jsonl"), os.path.join(d, "conns.jsonl")
            pf = os.path.join(d, "port")
            p = Proc("sluice-testsink", ["--listen", "%s:%d" % (addr, port), "--port-file", pf,
                                         "--log", log, "--conn-log", conn], tmpdir=d)
            self.procs.append(p)

            def up():
                if not p.alive():
                    raise AssertionError("sink on %s:%d exited\n%s" % (addr, port, p.output()))
                return os.path.exists(pf)
            wait_for(up, 10, "sink on %s:%d" % (addr, port))
            self.logs.append(log)
            self.conn_logs.append(conn)

    def messages(self):
        return [m for path in self.logs for m in read_lines(path)]

    def stop(self):
        for p in self.procs:
            p.stop()
        self.procs = []


class TestConnectionCapPerSite(unittest.TestCase):
    def test_three_equal_mx_hosts_share_max_connections(self):
        tmpd = tempfile.TemporaryDirectory(prefix="sluice-conncap-")
        self.addCleanup(tmpd.cleanup)
        tmp = tmpd.name
        sinks = Sinks(tmp)
        self.addCleanup(sinks.stop)
        records = {"three.test": {"MX": [(10, h) for h in HOSTS]}}
        for h, a in zip(HOSTS, ADDRS):
            records[h] = {"A": [a]}
        dns = dnstest.DnsServer(records)
        _, dport = dns.start()
        self.addCleanup(dns.stop)
        extra = "dns:\n  servers: [\"127.0.0.1:%d\"]\n  timeout: 1s\n  tries: 1\n" % dport
        e = SenderEnv(tmp, extra_yaml=extra, workers=2)
        self.addCleanup(e.stop)
        n, cap = 60, 2
        jobs = []
        for i in range(n):
            # Each job names the three hosts in another order, as classify's
            # shuffle of equal preferences does; slow replies keep the
            # connections busy, so more of them would be opened if allowed.
            order = HOSTS[i % 3:] + HOSTS[:i % 3]
            jobs.append(dispatch("cc-%d" % i, ["slow150-u%d@three.test" % i], "",
                                 site="three", mx=[{"host": h, "pref": 10} for h in order],
                                 max_connections=cap, max_messages_per_connection=4))
        e.publish(jobs)
        e.start_sender(env={"SLUICE_SENDER_MX_PORT": str(sinks.port)})
        wait_for(lambda: len(sinks.messages()) >= n, 120,
                 "%d messages at the three sinks" % n, interval=0.2)
        msgs = sinks.messages()
        by_host = {a: sum(1 for m in msgs if m["local"].startswith(a + ":")) for a in ADDRS}
        peak = peak_connections(sinks.conn_logs, "127.0.0.1")
        opened = sum(1 for p in sinks.conn_logs for x in read_lines(p) if x["ev"] == "open")
        print("messages per MX address %s; %d connections opened; at most %d at once"
              % (by_host, opened, peak))
        # Every host took mail (the cap is shared, not one host's).
        for a in ADDRS:
            self.assertGreater(by_host[a], 0, by_host)
        self.assertLessEqual(peak, cap, "connections from 127.0.0.1 at once: %d" % peak)
        self.assertEqual(peak, cap, "the cap is used")


if __name__ == "__main__":
    unittest.main()
