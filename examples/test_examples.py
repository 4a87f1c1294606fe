"""The example producers (Python, Java, Go) and the analytics consumer on
a real 3-node Apache Kafka (the fault harness's cluster, SLUICE_KAFKA=real).

examples/build.sh builds the three producers (fetching their clients from
PyPI, Maven Central and the Go module proxy, generating the sluice.v1 code
from proto/). The harness starts Kafka, a sluice-testsink, a scheduler and
a sender. Each producer then publishes JOBS jobs over the same recipient
domains (among them an IDN and a mixed-case domain, which every producer
must key as lower-case A-label), and libsluice's own producer
(fault_publish) publishes one job per domain. The test checks:

  - every job of every producer is DELIVERED and at the sink, nothing lost
    (the sink greylists: each recipient is DEFERRED once first; two libsluice
    jobs to "permfail" recipients are BOUNCED, so that every count the
    analytics compare is non-zero somewhere);
  - partition by partition: every record on the jobs topic is keyed by its
    job's domain, sits on the partition Kafka's murmur2 (Java's default
    partitioner, as librdkafka's murmur2_random computes it) gives for the
    key, and on the same partition as libsluice's record for that domain;
    each producer's own delivery reports name the same partitions;
  - analytics.py's totals, and its per campaign and per site groups, equal
    `sluice stats --json` (and `--by campaign`, `--by site`) for the run.
"""

import collections
import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fault"))

from harness import REAL, Cluster, log  # noqa: E402
from sluicetest import bin_path  # noqa: E402

JOBS = int(os.environ.get("SLUICE_EXAMPLE_JOBS", "150"))
OUT = os.environ.get("SLUICE_EXAMPLES_BUILD", os.path.join(HERE, "..", "build", "examples"))
PARTITIONS = 6
DOMAINS = ["d0.test", "d1.test", "d2.test", "d3.test", "Bücher.Example", "MiXed.Example",
           "d4.test", "d5.test"]


def a_label(d):
    return d.encode("idna").decode("ascii").lower()


def murmur2(data):
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2)."""
    m, r = 0x5bd1e995, 24
    length = len(data)
    h = (0x9747b28c ^ length) & 0xffffffff
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xffffffff
        k ^= k >> r
        k = (k * m) & 0xffffffff
        h = (h * m) & 0xffffffff
        h ^= k
    rest = length % 4
    tail = data[length - rest:]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & 0xffffffff
    h ^= h >> 13
    h = (h * m) & 0xffffffff
    h ^= h >> 15
    return h


def kafka_partition(key, n):
    return (murmur2(key) & 0x7fffffff) % n


READ_JOBS = r"""
import json, sys
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
from sluice.v1 import job_pb2
bootstrap, topic = sys.argv[1], sys.argv[2]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "examples-test",
              "enable.auto.commit": False})
md = c.list_topics(topic, timeout=30)
todo = {}
for p in md.topics[topic].partitions:
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
    if hi > lo:
        todo[p] = hi
c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
while todo:
    m = c.poll(30)
    if m is None:
        sys.exit("no record in 30 s; unfinished: %s" % sorted(todo))
    if m.error():
        sys.exit(str(m.error()))
    if m.partition() in todo and m.offset() + 1 >= todo[m.partition()]:
        del todo[m.partition()]
    j = job_pb2.Job.FromString(m.value())
    print(json.dumps({"job_id": j.job_id, "domain": j.domain, "key": m.key().decode(),
                      "partition": m.partition(), "recipients": list(j.recipients),
                      "attempt": j.attempt}))
c.close()
"""


@unittest.skipUnless(REAL, "the examples run on real Kafka (SLUICE_KAFKA=real)")
class ExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        r = subprocess.run(["bash", os.path.join(HERE, "build.sh"), OUT], capture_output=True,
                           text=True, timeout=900)
        if r.returncode != 0:
            raise AssertionError("examples/build.sh failed:\n%s\n%s"
                                 % (r.stdout[-3000:], r.stderr[-6000:]))
        cls.python = os.path.join(OUT, "venv", "bin", "python")
        cls.pyenv = dict(os.environ, PYTHONPATH=os.path.join(OUT, "python-gen"))

    def run_producer(self, name, argv, env=None):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        log("%s producer: exit %d, %d lines; %s" % (name, r.returncode, len(r.stdout.splitlines()),
                                                    r.stderr.strip()[-300:]))
        self.assertEqual(r.returncode, 0, "%s producer failed:\n%s" % (name, r.stderr[-4000:]))
        reported = {}
        for line in r.stdout.splitlines():
            jid, part, dom = line.split()
            reported[jid] = (int(part), dom)
        return reported

    def test_examples_deliver_and_partition_like_libsluice(self):
        c = Cluster("examples", partitions=PARTITIONS, sink_args=["--greylist"])
        self.addCleanup(c.close)
        c.start_scheduler()
        c.start_sender()
        topic = c.topic("jobs")
        common = ["--jobs", str(JOBS), "--domains", ",".join(DOMAINS)]

        # libsluice's producer first: one job per domain, the reference.
        ref = [{"job_id": "c-%06d" % i, "to": ["u%d@%s" % (i, a_label(d))],
                "domain": a_label(d), "campaign": "c-example",
                "raw": "From: C <c@example.net>\r\nSubject: c\r\n\r\nc %d\r\n" % i}
               for i, d in enumerate(DOMAINS)]
        bounce = [{"job_id": "c-bounce-%d" % i, "to": ["permfail%d@%s" % (i, a_label(d))],
                   "domain": a_label(d), "campaign": "c-example",
                   "raw": "From: C <c@example.net>\r\nSubject: c\r\n\r\nbounce\r\n"}
                  for i, d in enumerate(DOMAINS[4:6])]
        c.publish(ref + bounce)

        reported = {}
        reported["python"] = self.run_producer("python", [
            self.python, os.path.join(HERE, "python", "producer.py"), "--bootstrap", c.bootstrap,
            "--topic", topic, "--prefix", "py", "--campaign", "python-example"] + common,
            env=self.pyenv)
        with open(os.path.join(OUT, "java", "target", "classpath.txt")) as f:
            java_cp = "%s:%s" % (os.path.join(OUT, "java", "target", "classes"), f.read().strip())
        reported["java"] = self.run_producer("java", [
            "java", "-cp", java_cp, "net.example.sluice.Producer", "-bootstrap", c.bootstrap,
            "-topic", topic, "-prefix", "java", "-campaign", "java-example",
            "-jobs", str(JOBS), "-domains", ",".join(DOMAINS)])
        reported["go"] = self.run_producer("go", [
            os.path.join(OUT, "go", "producer"), "-bootstrap", c.bootstrap, "-topic", topic,
            "-prefix", "go", "-campaign", "go-example",
            "-jobs", str(JOBS), "-domains", ",".join(DOMAINS)])
        for name, rep in reported.items():
            self.assertEqual(len(rep), JOBS, "%s reported %d accepted jobs" % (name, len(rep)))

        # Every job delivered, at the sink, nothing lost.
        bounce_ids = {s["job_id"] for s in bounce}
        ids = ([s["job_id"] for s in ref + bounce]
               + [j for rep in reported.values() for j in rep])
        c.wait_final(ids, 300, check_alive=("sched-1", "sender-1"))
        c.wait_quiet()
        books = c.reconcile(ids, "examples", expect_final=lambda i: (
            "BOUNCED" if i in bounce_ids else "DELIVERED"))
        self.assertEqual(books["lost"], 0, books["lost_ids"])
        self.assertEqual(books["wrong"], [], books["line"])
        self.assertEqual(books["final"], {"DELIVERED": len(ids) - len(bounce),
                                          "BOUNCED": len(bounce)}, books["line"])
        self.assertEqual(books["phantom"], [], books["line"])

        # Partition by partition.
        r = subprocess.run([self.python, "-c", READ_JOBS, c.bootstrap, topic], capture_output=True,
                           text=True, timeout=120, env=self.pyenv)
        self.assertEqual(r.returncode, 0, r.stderr)
        # The producers' records: the retry stage republishes greylisted
        # jobs to the same topic with attempt > 0.
        records = [rec for rec in map(json.loads, r.stdout.splitlines()) if rec["attempt"] == 0]
        self.assertEqual(len(records), len(ids), "records on %s" % topic)
        by_id = {rec["job_id"]: rec for rec in records}
        libsluice_part = {by_id[s["job_id"]]["key"]: by_id[s["job_id"]]["partition"] for s in ref}
        delivered = len(ids) - len(bounce)
        self.assertEqual(sorted(libsluice_part), sorted(a_label(d) for d in DOMAINS))
        self.assertIn("xn--bcher-kva.example", libsluice_part)
        # Six partitions and eight domains: the keys do not all land on one.
        self.assertGreater(len(set(libsluice_part.values())), 2, libsluice_part)
        per_partition = collections.defaultdict(collections.Counter)
        for rec in records:
            key = rec["key"]
            self.assertEqual(key, rec["domain"], rec)
            self.assertEqual(key, a_label(key), "key not a lower-case A-label: %r" % rec)
            self.assertTrue(all(x.endswith("@" + key) for x in rec["recipients"]), rec)
            self.assertEqual(rec["partition"], kafka_partition(key.encode(), PARTITIONS),
                             "record not on murmur2's partition: %r" % rec)
            self.assertEqual(rec["partition"], libsluice_part[key],
                             "record not on libsluice's partition: %r" % rec)
            per_partition[rec["partition"]][rec["job_id"].split("-")[0]] += 1
        for name, rep in reported.items():
            for jid, (part, dom) in rep.items():
                self.assertEqual(by_id[jid]["partition"], part, (name, jid))
                self.assertEqual(libsluice_part[dom], part, (name, jid, dom))
        for p in sorted(per_partition):
            log("jobs partition %d: %s" % (p, dict(per_partition[p])))

        # analytics.py against sluice stats, total and per group.
        r = subprocess.run([self.python, os.path.join(HERE, "python", "analytics.py"),
                            "--bootstrap", c.bootstrap, "--topic", c.topic("events"), "--json"],
                           capture_output=True, text=True, timeout=120, env=self.pyenv)
        self.assertEqual(r.returncode, 0, r.stderr)
        mine = json.loads(r.stdout)

        def stats(*by):
            r = subprocess.run([bin_path("sluice"), "stats", "-c", c.cfg, "--json"] + list(by),
                               capture_output=True, text=True, timeout=120, env=c.env)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)

        def comparable(g):
            g = dict(g)
            g.pop("bounced_by_class", None)
            return g

        theirs = stats()
        log("analytics total: %s" % json.dumps(mine["total"]))
        self.assertEqual(comparable(mine["total"]), comparable(theirs["total"]))
        self.assertEqual(mine["duplicates"], theirs["duplicates"])
        self.assertEqual(mine["total"]["delivered"], delivered)
        self.assertEqual(mine["total"]["bounced"], len(bounce))
        # The sink greylists each (sender, recipient) once; the three
        # producers share their recipients.
        recipients = {r for rec in records for r in rec["recipients"]}
        self.assertGreaterEqual(mine["total"]["deferred"], len(recipients))
        self.assertEqual(mine["total"]["latency_ms"]["count"], delivered)
        for by, key in (("campaign", "campaigns"), ("site", "sites")):
            theirs = stats("--by", by)
            self.assertEqual(sorted((comparable(g) for g in mine[key]), key=lambda g: g["group"]),
                             sorted((comparable(g) for g in theirs["groups"]),
                                    key=lambda g: g["group"]), by)
        self.assertEqual({g["group"]: g["delivered"] for g in mine["campaigns"]},
                         {"c-example": len(ref), "python-example": JOBS, "java-example": JOBS,
                          "go-example": JOBS})


if __name__ == "__main__":
    unittest.main()
