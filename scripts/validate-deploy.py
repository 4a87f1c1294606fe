#!/usr/bin/env python3
"""validate-deploy - check every deployment manifest offline.

    scripts/validate-deploy.py [--bin DIR] [--root DIR]

No cluster and no Docker engine are needed. It checks:
  - every YAML file under deploy/ parses (python3-yaml);
  - every Kubernetes object has apiVersion, kind and metadata.name;
  - Deployments: spec.selector.matchLabels is a subset of the template's
    labels; every container has an image, readiness and liveness probes
    and resource requests; named probe ports exist; config volumes and
    mounts agree; terminationGracePeriodSeconds of the sender exceeds
    sender.drain_timeout from the ConfigMap; the Kafka consumers' rolling
    update strategy is the one docs/reliability.md promises is
    duplicate-free;
  - Services: each targetPort names (or numbers) a port of a container
    the selector picks; PodDisruptionBudgets and autoscalers point at a
    Deployment that exists;
  - kustomizations: every resource, component and patch path exists, and
    no overlay applies both the KEDA and the HPA component;
  - KafkaTopics: every topic the configuration implies exists with the
    right cleanup policy (compaction for suppressions, templates and control);
  - the ConfigMap's sluice.yaml and the compose sluice.yaml load with the
    real config loader (sluice-webhook --check; files the config names
    under /etc/sluice/ are stubbed in a temporary directory);
  - docker-compose.yml: services have an image or build, depends_on and
    networks name things that exist, mounted host files exist;
  - the Dockerfile's final stage installs no compiler and runs as non-root;
  - grafana/sluice.json: valid JSON, unique panel ids, every target has an
    expression, and the metric names it uses are ones the code defines or
    Kafka's exporter provides.
Exit 0 when everything holds, 1 with one line per problem otherwise.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("validate-deploy: python3-yaml is required (apt-get install python3-yaml)")

problems = []


def fail(where, msg):
    problems.append("%s: %s" % (where, msg))


def rel(root, path):
    return os.path.relpath(path, root)


def load_docs(root, path):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(rel(root, path), "YAML: %s" % str(e).replace("\n", " "))
        return []


def parse_duration_s(s):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", str(s).strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


# ---------------------------------------------------------------- kubernetes

def check_object(where, o):
    for k in ("apiVersion", "kind"):
        if not o.get(k):
            fail(where, "missing %s" % k)
    if not (o.get("metadata") or {}).get("name"):
        fail(where, "%s without metadata.name" % o.get("kind"))


# The daemons that consume Kafka: a rolling update that surges turns their
# replacement into a rebalance, which repeats work.
CONSUMERS = ("sluice-scheduler", "sluice-sender", "sluice-webhook")


def documented_rollout(root):
    """(maxUnavailable, maxSurge) that docs/reliability.md promises sends
    every message exactly once, or None (then it is reported)."""
    path = os.path.join(root, "docs", "reliability.md")
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        fail("docs/reliability.md", "missing: the rolling update strategy cannot be checked")
        return None
    m = re.search(r"\(Kubernetes `maxUnavailable: (\d+), maxSurge: (\d+)`\) sends every "
                  r"message exactly\s+once", text)
    if not m:
        fail("docs/reliability.md", "no duplicate-free rolling update strategy "
             "(\"(Kubernetes `maxUnavailable: N, maxSurge: M`) sends every message exactly once\")")
        return None
    return int(m.group(1)), int(m.group(2))


def check_rollout(w, spec, binary, rollout):
    if binary not in CONSUMERS or rollout is None:
        return
    strat = spec.get("strategy") or {}
    ru = strat.get("rollingUpdate") or {}
    have = (ru.get("maxUnavailable"), ru.get("maxSurge"))
    if strat.get("type", "RollingUpdate") != "RollingUpdate" or have != rollout:
        fail(w, "%s consumes Kafka: strategy.rollingUpdate must be maxUnavailable: %d, "
             "maxSurge: %d as docs/reliability.md says (has maxUnavailable: %s, maxSurge: %s)"
             % ((binary,) + rollout + have))


def check_deployment(where, d, objects, rollout=None):
    name = d["metadata"]["name"]
    w = "%s Deployment/%s" % (where, name)
    spec = d.get("spec") or {}
    sel = ((spec.get("selector") or {}).get("matchLabels")) or {}
    tmpl = spec.get("template") or {}
    labels = ((tmpl.get("metadata") or {}).get("labels")) or {}
    if not sel:
        fail(w, "spec.selector.matchLabels is empty")
    for k, v in sel.items():
        if labels.get(k) != v:
            fail(w, "selector %s=%s does not match the template labels" % (k, v))
    pod = tmpl.get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        fail(w, "no containers")
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    for c in containers:
        cw = "%s container %s" % (w, c.get("name"))
        if not c.get("image"):
            fail(cw, "no image")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        for probe in ("readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not p:
                fail(cw, "no %s" % probe)
                continue
            hg = p.get("httpGet") or {}
            port = hg.get("port")
            if isinstance(port, str) and port not in ports:
                fail(cw, "%s port '%s' is not a container port" % (probe, port))
            want = "/readyz" if probe == "readinessProbe" else "/healthz"
            if hg and hg.get("path") != want:
                fail(cw, "%s path should be %s" % (probe, want))
        req = ((c.get("resources") or {}).get("requests")) or {}
        if not req.get("cpu") or not req.get("memory"):
            fail(cw, "resources.requests needs cpu and memory")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                fail(cw, "volumeMount '%s' has no volume" % m.get("name"))
    args = (containers[0].get("args") or containers[0].get("command") or [""]) if containers else [""]
    check_rollout(w, spec, os.path.basename(str(args[0])), rollout)
    return {"name": name, "labels": labels, "containers": containers, "pod": pod}


def check_k8s(root):
    k8s = os.path.join(root, "deploy", "k8s")
    files = sorted(glob.glob(os.path.join(k8s, "**", "*.yaml"), recursive=True))
    if not files:
        fail("deploy/k8s", "no manifests")
    by_kind = {}
    kustomizations = []
    for path in files:
        where = rel(root, path)
        for o in load_docs(root, path):
            if not isinstance(o, dict):
                fail(where, "a document that is not a mapping")
                continue
            kind = o.get("kind")
            if kind in ("Kustomization", "Component"):
                kustomizations.append((path, o))
                continue
            check_object(where, o)
            by_kind.setdefault(kind, []).append((where, o))

    # Patches are partial objects: check full Deployments only (those with
    # a selector), and remember patch files so kustomization checks accept them.
    deployments = {}
    rollout = documented_rollout(root)
    for where, d in by_kind.get("Deployment", []):
        if (d.get("spec") or {}).get("selector"):
            deployments[d["metadata"]["name"]] = check_deployment(where, d, by_kind, rollout)
    for want in ("sluice-scheduler", "sluice-sender", "sluice-submit"):
        if want not in deployments:
            fail("deploy/k8s", "no Deployment %s" % want)
    check_static_membership(deployments)

    for where, s in by_kind.get("Service", []):
        sel = ((s.get("spec") or {}).get("selector")) or {}
        pods = [d for d in deployments.values()
                if sel and all(d["labels"].get(k) == v for k, v in sel.items())]
        if not pods:
            fail(where, "Service/%s selects no Deployment" % s["metadata"]["name"])
            continue
        for p in (s.get("spec") or {}).get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            ok = any(tp in (cp.get("name"), cp.get("containerPort"))
                     for d in pods for c in d["containers"] for cp in c.get("ports") or [])
            if not ok:
                fail(where, "Service/%s targetPort %s is no container port" %
                     (s["metadata"]["name"], tp))
    ports = {p.get("port") for _, s in by_kind.get("Service", [])
             if s["metadata"]["name"] == "sluice-submit"
             for p in (s.get("spec") or {}).get("ports") or []}
    if not {587, 465} <= ports:
        fail("deploy/k8s", "Service sluice-submit must expose 587 and 465 (has %s)" % sorted(ports))

    for kind in ("PodDisruptionBudget",):
        for where, o in by_kind.get(kind, []):
            sel = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not any(all(d["labels"].get(k) == v for k, v in sel.items())
                       for d in deployments.values()):
                fail(where, "%s/%s selects no Deployment" % (kind, o["metadata"]["name"]))
    for name in deployments:
        if not any(o["metadata"]["name"] == name for _, o in by_kind.get("PodDisruptionBudget", [])):
            fail("deploy/k8s", "Deployment %s has no PodDisruptionBudget" % name)
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for where, o in by_kind.get(kind, []):
            ref = ((o.get("spec") or {}).get("scaleTargetRef") or {}).get("name")
            if ref not in deployments:
                fail(where, "%s scales unknown Deployment %s" % (kind, ref))
    keda = by_kind.get("ScaledObject", [])
    if not keda:
        fail("deploy/k8s", "no KEDA ScaledObject for the sender")
    for where, o in keda:
        for t in (o.get("spec") or {}).get("triggers") or []:
            md = t.get("metadata") or {}
            if t.get("type") != "kafka" or md.get("consumerGroup") != "sluice-sender" or \
                    not str(md.get("topic", "")).endswith("dispatch"):
                fail(where, "the trigger must be kafka, group sluice-sender, topic *.dispatch")
    if not by_kind.get("HorizontalPodAutoscaler"):
        fail("deploy/k8s", "no CPU HorizontalPodAutoscaler fallback")

    check_kustomizations(root, kustomizations)
    return by_kind, deployments


def container_env(d):
    """name -> env entry of a Deployment's first container."""
    cs = d["containers"]
    return {e.get("name"): e for e in (cs[0].get("env") or [])} if cs else {}


def check_static_membership(deployments):
    """The schedulers join their groups as static members (the 40/s under
    SIGKILLs in docs/scheduler.md holds only then), and any Deployment that
    does takes its instance id from the pod name: two members with one
    group.instance.id fence each other."""
    sched = deployments.get("sluice-scheduler")
    if sched and str((container_env(sched).get("SLUICE_KAFKA_STATIC_MEMBERSHIP") or {})
                     .get("value", "")).lower() != "true":
        fail("deploy/k8s", "sluice-scheduler must set SLUICE_KAFKA_STATIC_MEMBERSHIP=true")
    for name, d in deployments.items():
        env = container_env(d)
        static = str((env.get("SLUICE_KAFKA_STATIC_MEMBERSHIP") or {}).get("value", "")).lower()
        if static != "true":
            continue
        ref = (((env.get("SLUICE_INSTANCE_ID") or {}).get("valueFrom") or {})
               .get("fieldRef") or {}).get("fieldPath")
        if ref != "metadata.name":
            fail("deploy/k8s", "%s uses static membership: SLUICE_INSTANCE_ID must come from "
                 "metadata.name (a unique id per pod)" % name)


def check_kustomizations(root, kustomizations):
    for path, k in kustomizations:
        where = rel(root, path)
        base = os.path.dirname(path)
        entries = list(k.get("resources") or []) + list(k.get("components") or [])
        for p in k.get("patches") or k.get("patchesStrategicMerge") or []:
            entries.append(p.get("path") if isinstance(p, dict) else p)
        for e in entries:
            if not e or "://" in e:
                continue
            t = os.path.normpath(os.path.join(base, e))
            if not os.path.exists(t):
                fail(where, "'%s' does not exist" % e)
            elif os.path.isdir(t) and not any(os.path.exists(os.path.join(t, n)) for n in
                                              ("kustomization.yaml", "kustomization.yml",
                                               "Kustomization")):
                fail(where, "'%s' is a directory without a kustomization" % e)
        comps = [os.path.basename(os.path.normpath(c)) for c in k.get("components") or []]
        if "keda" in comps and "hpa-fallback" in comps:
            fail(where, "applies both keda and hpa-fallback: two autoscalers would fight")


# ---------------------------------------------------------------- config

def stub_config(text, tmp):
    """Point every /etc/sluice/ path at a stub under tmp, so the loader's
    file checks pass without the Secrets."""
    for m in set(re.findall(r"/etc/sluice/[\w./-]+", text)):
        stub = os.path.join(tmp, m[len("/etc/sluice/"):])
        os.makedirs(os.path.dirname(stub), exist_ok=True)
        with open(stub, "w") as f:
            f.write("stub\n")
    return text.replace("/etc/sluice/", tmp + "/")


def load_with_real_loader(where, text, bindir):
    exe = os.path.join(bindir, "sluice-webhook") if bindir else None
    if not exe or not os.path.exists(exe):
        fail(where, "cannot check with the real loader: sluice-webhook not built (--bin)")
        return
    with tempfile.TemporaryDirectory(prefix="sluice-validate-") as tmp:
        path = os.path.join(tmp, "sluice.yaml")
        stubbed = stub_config(text, tmp)
        try:
            has_webhook = "webhook" in (yaml.safe_load(text) or {})
        except yaml.YAMLError:
            has_webhook = True  # the loader reports the error itself
        if not has_webhook:
            # --check refuses what sluice-webhook would (no endpoints): a
            # config for the other daemons gets a stub endpoint, so that
            # the rest of it is what is checked.
            stubbed += ("\nwebhook:\n  endpoints:\n"
                        "    - { url: \"https://stub.invalid/\", secret: stub }\n")
        with open(path, "w") as f:
            f.write(stubbed)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        r = subprocess.run([exe, "-c", path, "--check"], capture_output=True, text=True,
                           env=env, timeout=30)
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().replace(path, "sluice.yaml")
            fail(where, "config loader: %s" % msg)


def check_config(root, by_kind, deployments, bindir):
    cms = [(w, o) for w, o in by_kind.get("ConfigMap", [])
           if o["metadata"]["name"] == "sluice-config"]
    if not cms:
        fail("deploy/k8s", "no ConfigMap sluice-config")
        return
    where, cm = cms[0]
    text = (cm.get("data") or {}).get("sluice.yaml")
    if not text:
        fail(where, "ConfigMap sluice-config has no sluice.yaml")
        return
    load_with_real_loader(where + " sluice.yaml", text, bindir)
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        fail(where, "sluice.yaml: %s" % e)
        return
    # The metrics port the probes use.
    listen = str((cfg.get("metrics") or {}).get("listen", ""))
    if not listen.endswith(":9100") or listen.startswith("127."):
        fail(where, "metrics.listen must be 0.0.0.0:9100 for the probes (is %s)" % listen)
    # Drain time vs grace period.
    drain = parse_duration_s((cfg.get("sender") or {}).get("drain_timeout", "30s"))
    snd = deployments.get("sluice-sender")
    if snd and drain is not None:
        grace = snd["pod"].get("terminationGracePeriodSeconds", 30)
        if grace < drain + 5:
            fail(where, "sluice-sender terminationGracePeriodSeconds %s must exceed "
                 "sender.drain_timeout (%ss) by a margin" % (grace, drain))
    # Submit's listeners vs the container ports.
    sub = deployments.get("sluice-submit")
    listen_ports = set()
    for l in (cfg.get("submit") or {}).get("listen") or []:
        m = re.match(r"\S*:(\d+)", str(l))
        if m:
            listen_ports.add(int(m.group(1)))
    if sub:
        cports = {p.get("containerPort") for c in sub["containers"] for p in c.get("ports") or []}
        for p in listen_ports - cports:
            fail(where, "submit listens on %d but sluice-submit has no such containerPort" % p)
    # Topics: every one the config implies, with its cleanup policy.
    prefix = (cfg.get("kafka") or {}).get("topic_prefix", "sluice.")
    delays = (cfg.get("retry") or {}).get("delays") or ["1m", "5m", "30m", "2h", "6h"]
    want = {prefix + s: False for s in ("jobs", "sited", "dispatch", "events", "dlq")}
    job_max = (cfg.get("scheduler") or {}).get("max_job_bytes") or 1024 * 1024
    if not isinstance(job_max, int):
        job_max = 1024 * 1024  # a size with a unit: the budget test below uses the default
    budget = job_max + 84 * 1024
    want.update({prefix + "retry." + str(d): False for d in delays})
    want.update({prefix + "suppressions": True, prefix + "templates": True,
                 prefix + "control": True})
    have = {}
    for w, t in by_kind.get("KafkaTopic", []):
        spec = t.get("spec") or {}
        name = spec.get("topicName") or t["metadata"]["name"]
        have[name] = (w, spec)
        if not isinstance(spec.get("partitions"), int) or spec["partitions"] < 1:
            fail(w, "KafkaTopic %s needs partitions" % name)
    for name, compact in want.items():
        if name not in have:
            fail("deploy/k8s", "no KafkaTopic for %s" % name)
            continue
        w, spec = have[name]
        policy = ((spec.get("config") or {}).get("cleanup.policy")) or "delete"
        if compact != ("compact" in policy):
            fail(w, "%s cleanup.policy should be %s" % (name, "compact" if compact else "delete"))
        # The size budget (common/budget.h): the broker's own default
        # (1,048,588) would refuse the largest jobs sluice accepts.
        maxb = (spec.get("config") or {}).get("max.message.bytes")
        if not isinstance(maxb, int) or maxb < budget:
            fail(w, "%s max.message.bytes should be at least %d (the size budget), not %r"
                 % (name, budget, maxb))


# ---------------------------------------------------------------- compose

def check_compose(root, bindir):
    path = os.path.join(root, "deploy", "docker-compose.yml")
    where = rel(root, path)
    if not os.path.exists(path):
        fail(where, "missing")
        return
    docs = load_docs(root, path)
    if not docs:
        return
    c = docs[0]
    services = c.get("services") or {}
    networks = set((c.get("networks") or {}).keys())
    for want in ("kafka", "scheduler", "sender-1", "sender-2", "submit", "capture"):
        if want not in services:
            fail(where, "no service %s" % want)
    for name, s in services.items():
        w = "%s service %s" % (where, name)
        if not s.get("image") and not s.get("build"):
            fail(w, "needs an image or a build")
        deps = s.get("depends_on") or []
        for d in (deps.keys() if isinstance(deps, dict) else deps):
            if d not in services:
                fail(w, "depends_on unknown service %s" % d)
        nets = s.get("networks") or []
        for n in (nets.keys() if isinstance(nets, dict) else nets):
            if n not in networks:
                fail(w, "unknown network %s" % n)
        for v in s.get("volumes") or []:
            src = str(v).split(":")[0]
            if src.startswith(".") and not src.endswith("mail"):
                if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), src))):
                    fail(w, "volume source %s does not exist" % src)
        cmd = s.get("command") or []
        if name == "capture" and "0.0.0.0:2525" not in cmd:
            fail(w, "capture must listen on 0.0.0.0:2525")
    kafka = services.get("kafka") or {}
    env = kafka.get("environment") or {}
    if "controller" not in str(env.get("KAFKA_PROCESS_ROLES", "")):
        fail(where, "kafka must run in KRaft mode (KAFKA_PROCESS_ROLES with controller)")
    cfgpath = os.path.join(root, "deploy", "compose", "sluice.yaml")
    if os.path.exists(cfgpath):
        with open(cfgpath) as f:
            load_with_real_loader(rel(root, cfgpath), f.read(), bindir)


def check_dockerfile(root):
    path = os.path.join(root, "deploy", "Dockerfile")
    where = rel(root, path)
    try:
        text = open(path).read()
    except FileNotFoundError:
        fail(where, "missing")
        return
    stages = re.split(r"(?m)^FROM\s", text)
    if len(stages) < 3:
        fail(where, "must be multi-stage (a build stage and a runtime stage)")
        return
    final = stages[-1]
    if "bookworm-slim" not in final.splitlines()[0]:
        fail(where, "the final stage must be debian:bookworm-slim")
    for bad in ("build-essential", "gcc", "clang", "cmake", "-dev "):
        if re.search(r"\b%s" % re.escape(bad.strip()), final) and bad != "-dev ":
            fail(where, "the final stage installs %s" % bad.strip())
    if re.search(r"\S+-dev\b", final):
        fail(where, "the final stage installs a -dev package")
    if not re.search(r"(?m)^USER\s+(?!root|0\b)", final):
        fail(where, "the final stage must switch to a non-root USER")
    for lib in ("librdkafka1", "libuv1", "libc-ares2", "libssl3", "libprotobuf-c1", "libyaml-0-2",
                "libidn2-0", "libcsv3", "libargon2-1", "libhttp-parser2.9", "libjansson4",
                "libcurl4"):
        if lib not in final:
            fail(where, "runtime library %s missing from the final stage" % lib)
    for b in ("sluice", "sluice-devbroker", "sluice-scheduler", "sluice-sender", "sluice-submit",
              "sluice-webhook"):
        if not re.search(r"\b%s\b" % re.escape(b), stages[-2]):
            fail(where, "binary %s is not built into the image" % b)


# ---------------------------------------------------------------- grafana

def code_metrics(root):
    names = set()
    for d in ("common", "producer", "scheduler", "sender", "webhook"):
        for path in glob.glob(os.path.join(root, d, "*.c")):
            with open(path, errors="replace") as f:
                names.update(re.findall(r'"(sluice_[a-z0-9_]+)"', f.read()))
    return names


def check_grafana(root):
    path = os.path.join(root, "deploy", "grafana", "sluice.json")
    where = rel(root, path)
    try:
        with open(path) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        fail(where, "not valid JSON: %s" % e)
        return
    for k in ("title", "uid", "panels"):
        if not dash.get(k):
            fail(where, "dashboard needs %s" % k)
    known = code_metrics(root)
    ids = set()
    for p in dash.get("panels") or []:
        pid = p.get("id")
        if pid in ids:
            fail(where, "duplicate panel id %s" % pid)
        ids.add(pid)
        if not p.get("gridPos"):
            fail(where, "panel %s has no gridPos" % pid)
        for t in p.get("targets") or []:
            expr = t.get("expr")
            if not expr:
                fail(where, "panel %s has a target without expr" % pid)
                continue
            if expr.count("(") != expr.count(")"):
                fail(where, "panel %s: unbalanced parentheses in %s" % (pid, expr))
            for m in re.findall(r"\b(sluice_[a-z0-9_]+)", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", m)
                if known and m not in known and base not in known:
                    fail(where, "panel %s uses %s, which no code defines" % (pid, m))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--root", default=os.path.dirname(here))
    ap.add_argument("--bin", default=os.environ.get("SLUICE_BIN"),
                    help="directory with sluice-webhook (default $SLUICE_BIN)")
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    by_kind, deployments = check_k8s(root)
    check_config(root, by_kind, deployments, a.bin)
    check_compose(root, a.bin)
    check_dockerfile(root)
    check_grafana(root)
    for p in problems:
        print(p)
    if problems:
        print("validate-deploy: %d problem%s" % (len(problems), "" if len(problems) == 1 else "s"))
        return 1
    print("validate-deploy: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
