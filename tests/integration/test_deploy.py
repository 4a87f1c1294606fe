"""scripts/validate-deploy.py: the deploy manifests are valid, and the
validator really catches each kind of mistake it claims to (each case
breaks a copy of deploy/ and expects the matching complaint)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from sluicetest import bin_path

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SLUICE_SRC") or os.path.normpath(os.path.join(HERE, "..", ".."))
VALIDATOR = os.path.join(SRC, "scripts", "validate-deploy.py")


def run(root, bindir):
    r = subprocess.run([sys.executable, VALIDATOR, "--root", root, "--bin", bindir],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def edit(path, old, new, count=1):
    with open(path) as f:
        text = f.read()
    if old not in text:
        raise AssertionError("%r not in %s" % (old, path))
    with open(path, "w") as f:
        f.write(text.replace(old, new, count))


class DeployTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bindir = os.path.dirname(bin_path("sluice-webhook"))

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sluice-deploy-test-")
        self.root = self.tmp.name
        shutil.copytree(os.path.join(SRC, "deploy"), os.path.join(self.root, "deploy"))
        for d in ("common", "producer", "scheduler", "sender", "webhook", "docs"):
            src = os.path.join(SRC, d)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(self.root, d),
                                ignore=shutil.ignore_patterns("*.o"))

    def tearDown(self):
        self.tmp.cleanup()

    def p(self, *parts):
        return os.path.join(self.root, "deploy", *parts)

    def assertFlags(self, pattern):
        rc, out = run(self.root, self.bindir)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, pattern)

    def test_tree_is_valid(self):
        rc, out = run(SRC, self.bindir)
        self.assertEqual(rc, 0, out)
        self.assertIn("validate-deploy: ok", out)

    def test_selector_mismatch(self):
        edit(self.p("k8s", "base", "sender.yaml"),
             "      labels:\n        app.kubernetes.io/name: sluice-sender\n",
             "      labels:\n        app.kubernetes.io/name: sluice-sendr\n")
        self.assertFlags(r"Deployment/sluice-sender: selector app.kubernetes.io/name=sluice-sender")

    def test_missing_probe_and_requests(self):
        edit(self.p("k8s", "base", "scheduler.yaml"), "readinessProbe:", "readinessProbeX:")
        edit(self.p("k8s", "base", "scheduler.yaml"), "requests: { cpu: 250m, memory: 256Mi }",
             "requests: { memory: 256Mi }")
        self.assertFlags(r"container scheduler: no readinessProbe")
        self.assertFlags(r"container scheduler: resources.requests needs cpu and memory")

    def test_topic_below_the_size_budget(self):
        # The broker's default would refuse the largest jobs sluice accepts.
        edit(self.p("k8s", "base", "topics.yaml"),
             "    cleanup.policy: delete\n    max.message.bytes: 1134592\n",
             "    cleanup.policy: delete\n", count=1)
        self.assertFlags(r"sluice.jobs max.message.bytes should be at least 1134592")

    def test_config_rejected_by_real_loader(self):
        edit(self.p("k8s", "base", "configmap.yaml"), "      topic_prefix: sluice.\n",
             "      topic_prefx: sluice.\n")
        self.assertFlags(r"config loader: .*unknown key 'kafka.topic_prefx'")

    def test_grace_period_below_drain(self):
        edit(self.p("k8s", "base", "configmap.yaml"), "drain_timeout: 30s", "drain_timeout: 2m")
        self.assertFlags(r"terminationGracePeriodSeconds 45 must exceed sender.drain_timeout")

    def test_rolling_update_strategy(self):
        # A surge on a consumer contradicts the duplicate-free promise.
        edit(self.p("k8s", "base", "sender.yaml"), "rollingUpdate: { maxUnavailable: 1, maxSurge: 0 }",
             "rollingUpdate: { maxUnavailable: 0, maxSurge: 1 }")
        self.assertFlags(r"Deployment/sluice-sender: sluice-sender consumes Kafka: "
                         r"strategy.rollingUpdate must be maxUnavailable: 1, maxSurge: 0")
        # The docs are the other half: changing them alone is caught too.
        shutil.copy(os.path.join(SRC, "deploy", "k8s", "base", "sender.yaml"),
                    self.p("k8s", "base", "sender.yaml"))
        edit(os.path.join(self.root, "docs", "reliability.md"),
             "(Kubernetes `maxUnavailable: 1, maxSurge: 0`)",
             "(Kubernetes `maxUnavailable: 0, maxSurge: 1`)")
        self.assertFlags(r"Deployment/sluice-scheduler: .*must be maxUnavailable: 0, maxSurge: 1")
        # sluice-submit consumes nothing: its surge is fine.
        rc, out = run(SRC, self.bindir)
        self.assertNotIn("sluice-submit consumes", out)

    def test_missing_kustomize_resource(self):
        edit(self.p("k8s", "base", "kustomization.yaml"), "  - submit.yaml\n",
             "  - submit.yaml\n  - webhook.yaml\n")
        self.assertFlags(r"base/kustomization.yaml: 'webhook.yaml' does not exist")

    def test_both_autoscalers(self):
        edit(self.p("k8s", "overlays", "example", "kustomization.yaml"),
             "  - ../../components/keda\n",
             "  - ../../components/keda\n  - ../../components/hpa-fallback\n")
        self.assertFlags(r"applies both keda and hpa-fallback")

    def test_compaction_and_topics(self):
        path = self.p("k8s", "base", "topics.yaml")
        with open(path) as f:
            text = f.read()
        text = text.replace("topicName: sluice.suppressions\n  partitions: 6\n  replicas: 3\n"
                            "  config:\n    cleanup.policy: compact",
                            "topicName: sluice.suppressions\n  partitions: 6\n  replicas: 3\n"
                            "  config:\n    cleanup.policy: delete")
        text = re.sub(r"topicName: sluice\.dlq", "topicName: sluice.dead", text)
        with open(path, "w") as f:
            f.write(text)
        self.assertFlags(r"sluice.suppressions cleanup.policy should be compact")
        self.assertFlags(r"no KafkaTopic for sluice.dlq")

    def test_service_port(self):
        edit(self.p("k8s", "base", "submit.yaml"), "targetPort: submissions",
             "targetPort: smtps")
        self.assertFlags(r"Service/sluice-submit targetPort smtps is no container port")

    def test_broken_yaml(self):
        edit(self.p("k8s", "base", "sender.yaml"), "spec:\n  replicas: 2",
             "spec:\n replicas: 2\n  x: [")
        self.assertFlags(r"sender.yaml: YAML")

    def test_dockerfile_final_stage(self):
        edit(self.p("Dockerfile"), "      ca-certificates \\\n      librdkafka1",
             "      ca-certificates gcc librdkafka-dev \\\n      librdkafka1")
        edit(self.p("Dockerfile"), "USER 10001:10001", "USER root")
        self.assertFlags(r"final stage installs gcc")
        self.assertFlags(r"final stage must switch to a non-root USER")

    def test_compose(self):
        edit(self.p("docker-compose.yml"), "condition: service_healthy",
             "condition: service_healthy\n      zookeeper:\n        condition: service_started")
        self.assertFlags(r"service topics: depends_on unknown service zookeeper")

    def test_grafana(self):
        path = self.p("grafana", "sluice.json")
        edit(path, "sluice_sender_delivered_total", "sluice_sender_deliverd_total")
        self.assertFlags(r"uses sluice_sender_deliverd_total, which no code defines")
        with open(path, "a") as f:
            f.write("}")
        self.assertFlags(r"sluice.json: not valid JSON")


if __name__ == "__main__":
    unittest.main()
