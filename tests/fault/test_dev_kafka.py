"""sluice dev --kafka: the dev cluster and demo on an external Kafka.

A 1-node Apache Kafka of scripts/kafka.sh (harness.RealKafka), then
`sluice dev --kafka BOOTSTRAP --demo N --json`: every demo message is
delivered to the capture server, no dev broker was started, and the topics
(created by `sluice topics ensure` on the way) are on the external cluster
with the compacted ones compacted. A second demo on the same cluster, whose
topics now hold the first run's events, counts only its own jobs.

Real Kafka only (SLUICE_KAFKA=real, ctest kafka/test_dev_kafka): it needs
Java and the broker's jars; the dev-broker fault tier skips it.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import REAL, SHARED_DIR, RealKafka, kafka_meta
from sluicetest import bin_path

N = 300


@unittest.skipUnless(REAL, "a real Kafka (SLUICE_KAFKA=real)")
class DevOnKafkaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sluice-dev-kafka-")
        try:
            cls.kafka = (RealKafka.attach(SHARED_DIR) if SHARED_DIR
                         else RealKafka(os.path.join(cls.tmp, "kafka"), nodes=1))
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.kafka.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def demo(self, name):
        d = os.path.join(self.tmp, name)
        r = subprocess.run([bin_path("sluice"), "dev", "--kafka", self.kafka.bootstrap,
                            "--demo", str(N), "--json", "--dir", d],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        return d, json.loads(r.stdout.strip().splitlines()[-1])

    def test_demo_runs_on_the_external_cluster(self):
        for run in ("dev-1", "dev-2"):
            d, s = self.demo(run)
            self.assertEqual(s["delivered"], N, s)
            self.assertEqual(s["duplicates"], 0, s)
            self.assertEqual(len(os.listdir(os.path.join(d, "mail"))), N)
            self.assertFalse(os.path.exists(os.path.join(d, "pids", "devbroker.pid")))
        md = kafka_meta.metadata(self.kafka.bootstrap)
        for t in ("sluice.jobs", "sluice.events", "sluice.dispatch", "sluice.suppressions",
                  "sluice.templates", "sluice.state"):
            self.assertIn(t, md["topics"], sorted(md["topics"]))
        cfgs = self.kafka.topic_configs()
        for t in ("sluice.suppressions", "sluice.templates", "sluice.state"):
            self.assertEqual(cfgs.get(t, {}).get("cleanup.policy"), "compact", cfgs.get(t))


if __name__ == "__main__":
    unittest.main()
