"""analytics.py - outcome counts and delivery latency from sluice's events topic.

    python3 analytics.py --bootstrap HOST:PORT [--topic sluice.events] [--json]

Reads the events topic from the beginning to the end it had when the run
began (every partition up to its high watermark), decodes each record as
a sluice.v1.Event with the classes generated from proto/, and prints per
campaign and per site the delivered, bounced, deferred, complained and
unsubscribed counts (with the other outcomes) and the delivery latency percentiles
(p50/p90/p99/max of timestamp_ms - created_at_ms of DELIVERED events:
from acceptance to the receiving MX's 250).

It counts as `sluice stats` does, so that the totals agree: a repeat of
one outcome (same job, recipient, attempt and type; a sender that died
may publish twice) counts once, and percentiles are nearest-rank. --json
prints {"campaigns": [...], "sites": [...], "total": {...},
"duplicates": N}, the groups with the keys of `sluice stats --json`.

A consumer of this kind needs no consumer group and commits nothing: it
assigns every partition itself and reads it whole.
"""

import argparse
import collections
import json
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from sluice.v1 import event_pb2

E = event_pb2
COUNTED = {E.EVENT_ACCEPTED: "accepted", E.EVENT_DELIVERED: "delivered",
           E.EVENT_DEFERRED: "deferred", E.EVENT_BOUNCED: "bounced",
           E.EVENT_EXPIRED: "expired", E.EVENT_SUPPRESSED: "suppressed",
           E.EVENT_REJECTED: "rejected", E.EVENT_COMPLAINED: "complained",
           E.EVENT_UNSUBSCRIBED: "unsubscribed"}


class Group:
    def __init__(self, name):
        self.name = name
        self.counts = collections.Counter()
        self.latencies = []

    def add(self, ev):
        key = COUNTED.get(ev.type)
        if not key:
            return
        self.counts[key] += 1
        if ev.type == E.EVENT_BOUNCED:
            self.counts["bounced_hard" if ev.bounce_hard else "bounced_soft"] += 1
        if (ev.type == E.EVENT_DELIVERED and ev.created_at_ms > 0
                and ev.timestamp_ms >= ev.created_at_ms):
            self.latencies.append(ev.timestamp_ms - ev.created_at_ms)

    def percentile(self, p):
        """Nearest rank, as sluice stats computes it."""
        v = sorted(self.latencies)
        rank = min(len(v), max(1, int(p / 100.0 * len(v) + 0.999999)))
        return v[rank - 1]

    def as_dict(self):
        d = {"group": self.name}
        for k in ("accepted", "delivered", "deferred", "bounced", "bounced_hard",
                  "bounced_soft", "expired", "suppressed", "rejected", "complained",
                  "unsubscribed"):
            d[k] = self.counts[k]
        d["latency_ms"] = None
        if self.latencies:
            d["latency_ms"] = {"count": len(self.latencies), "p50": self.percentile(50),
                               "p90": self.percentile(90), "p99": self.percentile(99),
                               "max": max(self.latencies)}
        return d


def read_events(bootstrap, topic, timeout_s):
    """Yields every Event on topic up to the high watermarks of now."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-analytics",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        md = consumer.list_topics(topic, timeout=timeout_s)
        if md.topics[topic].error:
            raise KafkaException(md.topics[topic].error)
        todo = {}
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                todo[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        while todo:
            msg = consumer.poll(timeout_s)
            if msg is None:
                raise SystemExit("analytics.py: no record in %ds; partitions %s unfinished"
                                 % (timeout_s, sorted(todo)))
            if msg.error():
                raise KafkaException(msg.error())
            p = msg.partition()
            if p not in todo:
                continue
            if msg.offset() + 1 >= todo[p]:
                del todo[p]
            ev = E.Event()
            try:
                ev.ParseFromString(msg.value() or b"")
            except Exception:  # not an Event: nothing to count
                continue
            yield ev
    finally:
        consumer.close()


def analyse(events):
    seen = set()
    total = Group("total")
    campaigns, sites = {}, {}
    duplicates = 0
    for ev in events:
        outcome = (ev.job_id, ev.recipient, ev.attempt, ev.type)
        if outcome in seen:
            duplicates += 1
            continue
        seen.add(outcome)
        total.add(ev)
        for groups, name in ((campaigns, ev.campaign), (sites, ev.site)):
            name = name or "-"
            groups.setdefault(name, Group(name)).add(ev)
    return {"campaigns": [g.as_dict() for _, g in sorted(campaigns.items())],
            "sites": [g.as_dict() for _, g in sorted(sites.items())],
            "total": total.as_dict(), "duplicates": duplicates}


def print_table(title, groups):
    print("%-24s %9s %9s %8s %10s %8s %8s %8s" % (title, "delivered", "bounced", "deferred",
                                                   "complained", "p50", "p90", "p99"))
    for g in groups:
        lat = g["latency_ms"] or {}
        print("%-24s %9d %9d %8d %10d %8s %8s %8s" % (
            g["group"][:24], g["delivered"], g["bounced"], g["deferred"], g["complained"],
            *("%dms" % lat[k] if lat else "-" for k in ("p50", "p90", "p99"))))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="sluice.events")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a record")
    a = ap.parse_args()
    r = analyse(read_events(a.bootstrap, a.topic, a.timeout))
    if a.json:
        json.dump(r, sys.stdout)
        print()
        return
    print_table("campaign", r["campaigns"])
    print_table("site", r["sites"])
    print_table("", [r["total"]])
    if r["duplicates"]:
        print("%d duplicate events ignored" % r["duplicates"])


if __name__ == "__main__":
    main()
