#!/usr/bin/env python3
"""The report of a side-by-side benchmark's alternating rounds: each
round's messages/s of both servers (submit_load.py's JSON lines in
WORK/A.R.json and WORK/B.R.json, R from 1), their medians and the ratio.
Fails unless every round accepted N messages.

  rounds.py N ROUNDS WORK A LABEL_A B LABEL_B
"""
import json
import statistics
import sys


def main():
    n, rounds, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    (a, la), (b, lb) = sys.argv[4:6], sys.argv[6:8]

    def load(name, r):
        f = "%s/%s.%d.json" % (work, name, r)
        d = json.load(open(f))
        assert d["accepted"] == n, (f, d)
        return d

    sa = [load(a, r) for r in range(1, rounds + 1)]
    sb = [load(b, r) for r in range(1, rounds + 1)]
    for r in range(rounds):
        print("round %d: %s %.0f msg/s (set-up %.2fs), %s %.0f msg/s"
              % (r + 1, la, sa[r]["messages_per_second"], sa[r]["setup_seconds"], lb,
                 sb[r]["messages_per_second"]))
    ma = statistics.median(d["messages_per_second"] for d in sa)
    mb = statistics.median(d["messages_per_second"] for d in sb)
    print("%-19s %.0f msg/s (median)" % (la, ma))
    print("%-19s %.0f msg/s (median)" % (lb, mb))
    print("ratio %s/%s %.2f" % (la, lb, ma / mb))


if __name__ == "__main__":
    main()
