"""Counts agree across the operator's views of one run.

A dev broker, sluice-scheduler and sluice-sender (each with metrics.listen
on a free port) deliver N messages to a sluice-testsink, a few recipients
of which are `permfail` (550 5.1.1). Once every job has a final event:
`sluice events --json` DELIVERED/BOUNCED counts equal what the sink
received and refused; `sluice stats --json` totals agree; both daemons'
/metrics is valid Prometheus text exposition format (checked by a strict
parser here) and sluice_sender_delivered_total equals the sink's count.
"""

import json
import math
import os
import re
import tempfile
import unittest
import urllib.request

from sluicetest import (Proc, free_port, pipeline_yaml, run_sluice, start_devbroker, start_sink,
                        wait_for)

N_GOOD = 24
N_BAD = 4

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.match(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$", s):
        raise ValueError("bad value %r" % s)
    return float(s)


def parse_labels(text):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError("bad labels {%s}" % text)
        if m.group(1) in labels:
            raise ValueError("duplicate label %s" % m.group(1))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def parse_exposition(text):
    """Strict parse of Prometheus text format 0.0.4. Returns
    {family: {"type": t, "help": h, "samples": [(name, labels, value)]}};
    raises ValueError on any violation."""
    if text and not text.endswith("\n"):
        raise ValueError("no final newline")
    fams = {}
    seen_samples = set()
    for n, line in enumerate(text.splitlines(), 1):
        where = "line %d: %r" % (n, line)
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 3 or not NAME_RE.match(parts[2]):
                    raise ValueError("bad %s %s" % (parts[1], where))
                f = fams.setdefault(parts[2], {"type": None, "help": None, "samples": []})
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError("bad TYPE " + where)
                    if f["type"] is not None or f["samples"]:
                        raise ValueError("TYPE repeated or after samples " + where)
                    f["type"] = parts[3]
                else:
                    if f["help"] is not None:
                        raise ValueError("HELP repeated " + where)
                    f["help"] = parts[3] if len(parts) == 4 else ""
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)(\s+-?\d+)?$", line)
        if not m:
            raise ValueError("bad sample " + where)
        name, labels, value = m.group(1), parse_labels(m.group(3) or ""), parse_value(m.group(4))
        key = (name, tuple(sorted(labels.items())))
        if key in seen_samples:
            raise ValueError("duplicate sample " + where)
        seen_samples.add(key)
        fam = name
        for suf in ("_bucket", "_count", "_sum"):
            base = name[: -len(suf)]
            if name.endswith(suf) and base in fams and fams[base]["type"] in ("histogram", "summary"):
                fam = base
        f = fams.get(fam)
        if f is None or f["type"] is None:
            raise ValueError("sample without TYPE " + where)
        if f["type"] == "counter" and (value < 0 or not fam.endswith("_total")):
            raise ValueError("bad counter " + where)
        if f["type"] == "histogram" and name == fam:
            raise ValueError("bare histogram sample " + where)
        f["samples"].append((name, labels, value))
    for fam, f in fams.items():
        if f["type"] != "histogram":
            continue
        series = {}
        for name, labels, value in f["samples"]:
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            s = series.setdefault(rest, {"buckets": [], "count": None, "sum": None})
            if name == fam + "_bucket":
                s["buckets"].append((parse_value(labels["le"]), value))
            elif name == fam + "_count":
                s["count"] = value
            elif name == fam + "_sum":
                s["sum"] = value
        for rest, s in series.items():
            b = s["buckets"]
            if not b or b[-1][0] != math.inf or s["count"] is None or s["sum"] is None:
                raise ValueError("%s%s: incomplete histogram" % (fam, rest))
            if [le for le, _ in b] != sorted(le for le, _ in b):
                raise ValueError("%s%s: buckets out of order" % (fam, rest))
            if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
                raise ValueError("%s%s: buckets not cumulative" % (fam, rest))
            if b[-1][1] != s["count"]:
                raise ValueError("%s%s: +Inf bucket != _count" % (fam, rest))
    return fams


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        ctype = r.headers.get("Content-Type", "")
        return ctype, r.read().decode()


def metric_sum(fams, name):
    return sum(v for n, _, v in fams.get(name, {"samples": []})["samples"] if n == name)


class ParserSelfTest(unittest.TestCase):
    """The parser rejects what it must, or the real checks prove nothing."""

    GOOD = ("# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
            "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 0.3\nh_count 2\n")

    def test_good(self):
        f = parse_exposition(self.GOOD)
        self.assertEqual(metric_sum(f, "a_total"), 3)

    def test_bad(self):
        for bad in [self.GOOD.replace("h_count 2", "h_count 3"),
                    self.GOOD.replace('h_bucket{le="0.1"} 1', 'h_bucket{le="0.1"} 5'),
                    self.GOOD.replace("3\n", "x\n", 1),
                    self.GOOD.replace('x="1"', "x=1"),
                    self.GOOD.replace("# TYPE a_total counter\n", ""),
                    self.GOOD + "a_total{x=\"1\"} 4\n",
                    self.GOOD.rstrip("\n")]:
            with self.assertRaises(ValueError, msg=bad):
                parse_exposition(bad)


class OpsCountsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sluice-ops-counts-")
        self.dir = self.tmp.name
        self.procs = []
        self.broker, self.bootstrap = start_devbroker(self.dir, ["--brokers", "1"])
        self.addCleanup(self.broker.stop)
        self.sink = start_sink(self.dir)
        self.addCleanup(self.sink.stop)
        self.mport = {"scheduler": free_port(), "sender": free_port()}
        self.env = dict(os.environ)
        self.env.pop("SLUICE_KAFKA_BOOTSTRAP", None)

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop(30)
        self.tmp.cleanup()

    def config(self, name):
        path = os.path.join(self.dir, name + ".yaml")
        with open(path, "w") as f:
            f.write(pipeline_yaml(self.bootstrap, self.sink.address, retry="[1s, 5s, 30s]") +
                    "shaping:\n"
                    "  default: { max_message_rate: 100000/s, max_connections: 20, "
                    "max_messages_per_connection: 1000 }\n")
            if name in self.mport:
                f.write("metrics:\n  listen: \"127.0.0.1:%d\"\n" % self.mport[name])
        return path

    def sluice(self, *args, timeout=60):
        r = run_sluice(*args, env=self.env, timeout=timeout)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def test_events_stats_metrics_and_sink_agree(self):
        for name in ("scheduler", "sender"):
            self.procs.append(Proc("sluice-" + name, ["-c", self.config(name)], tmpdir=self.dir))
        cli = self.config("cli")
        body = os.path.join(self.dir, "body.txt")
        with open(body, "w") as f:
            f.write("hello\n")
        good = ["user%d@d%d.test" % (i, i % 3) for i in range(N_GOOD)]
        bad = ["permfail%d@d%d.test" % (i, i % 3) for i in range(N_BAD)]
        jobs = self.sluice("send", "-c", cli, "--from", "ops@example.net",
                           "--to", ",".join(good + bad), "--subject", "ops",
                           "--body-file", body, "--campaign", "ops").split()
        self.assertTrue(jobs)

        def finals():
            out = self.sluice("events", "-c", cli, "--json", "--type", "DELIVERED,BOUNCED")
            ev = [json.loads(l) for l in out.splitlines() if l.strip()]
            return ev if len(ev) >= N_GOOD + N_BAD else None

        events = wait_for(finals, 25, "final events for every job\n" +
                          "".join(p.output()[-2000:] for p in self.procs), interval=0.5)
        by_type = {}
        for e in events:
            by_type.setdefault(e["type"], set()).add(e["recipient"])
        self.assertEqual(len(events), N_GOOD + N_BAD, events)
        msgs = self.sink.messages()
        sink_rcpts = sorted(r for m in msgs for r in m["rcpt"])
        self.assertEqual(sorted(by_type.get("DELIVERED", ())), sink_rcpts)
        self.assertEqual(sorted(by_type.get("DELIVERED", ())), sorted(good))
        self.assertEqual(sorted(by_type.get("BOUNCED", ())), sorted(bad))

        stats = json.loads(self.sluice("stats", "-c", cli, "--json", "--campaign", "ops"))
        self.stats_check(stats, len(sink_rcpts), N_BAD)
        by = json.loads(self.sluice("stats", "-c", cli, "--json", "--by", "domain"))
        self.assertEqual(sum(g["delivered"] for g in by["groups"]), len(sink_rcpts), by)

        fams = {}
        for name, port in self.mport.items():
            ctype, text = scrape(port)
            self.assertIn("text/plain", ctype)
            try:
                fams[name] = parse_exposition(text)
            except ValueError as e:
                self.fail("%s /metrics: %s\n%s" % (name, e, text))
        self.assertEqual(metric_sum(fams["sender"], "sluice_sender_delivered_total"),
                         len(sink_rcpts))
        self.assertEqual(metric_sum(fams["sender"], "sluice_sender_bounced_total"), N_BAD)
        self.assertGreater(metric_sum(fams["scheduler"], "sluice_shape_dispatched_total"), 0)
        self.assertEqual(fams["sender"]["sluice_sender_smtp_seconds"]["type"], "histogram")

    def stats_check(self, stats, delivered, bounced):
        t = stats["total"]
        want = {"accepted": delivered + bounced, "delivered": delivered, "bounced": bounced,
                "bounced_hard": bounced, "deferred": 0, "expired": 0, "duplicates": None}
        for k, v in want.items():
            if v is not None:
                self.assertEqual(t[k], v, "%s: %s" % (k, json.dumps(stats)))
        self.assertEqual(stats["duplicates"], 0)
        self.assertEqual(t["latency_ms"]["count"], delivered)


if __name__ == "__main__":
    unittest.main()
