"""Audits the Helm revisions of a Langfuse release: what each revision asked the cluster to run.

Used by the upstream check (tests/upstream/check.py, against the official charts) and by the
integration tests (against the stand-ins). Every function but `revisions` is pure, so the rules
are tested without a cluster (tests/unit/test_release_audit.py).

The rules, per revision:
- no literal secret: no known secret value anywhere in its manifest or values, no secret-named
  env var with a literal value, no Secret object carrying data;
- CLICKHOUSE_CLUSTER_ENABLED of web and worker equals what the inventory says;
- every container image pinned (a tag other than `latest`, or a digest);
and per pair of revisions: a worker step (the worker's image moved, the web's did not) leaves the
web's pod template exactly as it was.
"""
import json
import re
import subprocess

import yaml

SECRET_ENV = re.compile(r"^(SALT|ENCRYPTION_KEY|NEXTAUTH_SECRET|DATABASE_PASSWORD|REDIS_PASSWORD|REDIS_AUTH|CLICKHOUSE_PASSWORD|"
                        r"LANGFUSE_S3_\w+_SECRET_ACCESS_KEY|LANGFUSE_EE_LICENSE_KEY|AUTH_\w+_CLIENT_SECRET)$")
# Connection strings are secrets only through their password: the charts write `$(REDIS_PASSWORD)`, a
# reference Kubernetes fills in from the env var of that name (itself from a secretKeyRef).
URL_ENV = re.compile(r"^(DATABASE_URL|DIRECT_URL|SHADOW_DATABASE_URL|REDIS_CONNECTION_STRING|SMTP_CONNECTION_URL|CLICKHOUSE_URL)$")
URL_PASSWORD = re.compile(r"://[^:/@]*:([^@]*)@")
ENV_REFERENCE = re.compile(r"^\$\([A-Z0-9_]+\)$")
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet", "Pod", "CronJob"}


def documents(manifest):
    return [d for d in yaml.safe_load_all(manifest) if isinstance(d, dict)]


def pod_spec(obj):
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    return (spec.get("template") or {}).get("spec") or {}


def containers(obj):
    spec = pod_spec(obj)
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def deployment(docs, name):
    return next((d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == name), None)


def image(docs, name):
    dep = deployment(docs, name)
    return containers(dep)[0]["image"] if dep else None


def pinned(ref):
    if "@sha256:" in ref:
        return True
    last = ref.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")


def revision_problems(docs, values_text, secrets, cluster_enabled, fullname):
    """What is wrong with one revision (its manifest's documents and its values as text)."""
    problems = []
    text = values_text + "\n" + yaml.safe_dump_all(docs)
    for value in secrets:
        if len(value) >= 8 and value in text:
            problems.append("a secret value in clear text")
            break
    for obj in docs:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            problems.append(f"{where} carries data ({', '.join(sorted((obj.get('data') or obj.get('stringData'))))})")
        if obj.get("kind") not in POD_KINDS:
            continue
        for c in containers(obj):
            if not pinned(c.get("image", "")):
                problems.append(f"{where} container {c.get('name')}: unpinned image {c.get('image')!r}")
            for env in c.get("env") or []:
                name, value = env.get("name", ""), env.get("value")
                if SECRET_ENV.match(name) and value:
                    problems.append(f"{where} env {name} is a literal value")
                password = URL_PASSWORD.search(value or "") if URL_ENV.match(name) else None
                if password and password[1] and not ENV_REFERENCE.match(password[1]):
                    problems.append(f"{where} env {name} holds a literal password")
    want = str(bool(cluster_enabled)).lower()
    for component in ("web", "worker"):
        dep = deployment(docs, f"{fullname}-{component}")
        if dep is None:
            problems.append(f"no Deployment {fullname}-{component}")
            continue
        env = {e["name"]: e.get("value") for e in containers(dep)[0].get("env") or []}
        # Langfuse reads an absent CLICKHOUSE_CLUSTER_ENABLED as "true" (packages/shared/src/env.ts), and
        # chart 1.5.x sets the variable only to turn cluster mode off.
        got = env.get("CLICKHOUSE_CLUSTER_ENABLED", "true")
        if got != want:
            problems.append(f"{component} CLICKHOUSE_CLUSTER_ENABLED={got!r}, the inventory says {want!r}")
    return problems + probe_problems(docs, values_text)


def probe_problems(docs, values_text):
    """The probes the role's post-renderer was asked for (values langfuseOps.postRender) that the manifest lacks."""
    values = yaml.safe_load(values_text) or {}
    config = (values.get("langfuseOps") or {}).get("postRender") or {}
    problems = []
    for component, patch in (config.get("components") or {}).items():
        dep = deployment(docs, f"{config['fullname']}-{component}")
        named = [c for c in containers(dep or {}) if c.get("name") == patch["container"]]
        if not named:
            problems.append(f"no container {patch['container']} in Deployment {config['fullname']}-{component}")
            continue
        for probe in ("startupProbe", "readinessProbe"):
            if patch.get(probe) and not named[0].get(probe):
                problems.append(f"{component} has no {probe} (post-renderer)")
        path = ((named[0].get("livenessProbe") or {}).get("httpGet") or {}).get("path")
        if patch.get("livenessPath") and path != patch["livenessPath"]:
            problems.append(f"{component} liveness path {path!r}, not {patch['livenessPath']!r} (post-renderer)")
    return problems


def step_problems(before, after, fullname):
    """What is wrong with the move from one revision to the next (documents of both)."""
    web, worker = f"{fullname}-web", f"{fullname}-worker"
    worker_step = image(before, worker) != image(after, worker) and image(before, web) == image(after, web)
    if worker_step and deployment(before, web) and deployment(after, web):
        if deployment(before, web)["spec"]["template"] != deployment(after, web)["spec"]["template"]:
            return [f"the worker step ({image(before, worker)} -> {image(after, worker)}) changed the web's pod template"]
    return []


def classify(before, after, fullname):
    """A short name for what a revision moved: chart, worker, web, both, values."""
    if before is None:
        return "install"
    web, worker = f"{fullname}-web", f"{fullname}-worker"
    moved = [c for c, n in (("web", web), ("worker", worker)) if image(before, n) != image(after, n)]
    return {0: "no image", 1: moved[0] if moved else "", 2: "web+worker"}[len(moved)]


def _helm(*args, kubeconfig=None):
    cmd = ["helm", *args] + (["--kubeconfig", kubeconfig] if kubeconfig else [])
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout


def revisions(namespace, release="langfuse"):
    """Every revision of the release in the cluster: number, status, chart, description, documents, values."""
    out = []
    for entry in json.loads(_helm("history", release, "-n", namespace, "-o", "json", "--max", "1000")):
        n = str(entry["revision"])
        out.append({
            "revision": entry["revision"], "status": entry["status"], "chart": entry["chart"],
            "description": entry.get("description", ""),
            "docs": documents(_helm("get", "manifest", release, "-n", namespace, "--revision", n)),
            "values": _helm("get", "values", release, "-n", namespace, "--revision", n, "-o", "yaml"),
        })
    return out


def audit(history, secrets, cluster_enabled, fullname="langfuse"):
    """One row per revision: revision, status, chart, what moved, problems."""
    rows, before = [], None
    for rev in history:
        problems = revision_problems(rev["docs"], rev["values"], secrets, cluster_enabled, fullname)
        if before is not None:
            problems += step_problems(before, rev["docs"], fullname)
        rows.append({"revision": rev["revision"], "status": rev["status"], "chart": rev["chart"],
                     "moved": classify(before, rev["docs"], fullname), "problems": problems,
                     "web": image(rev["docs"], f"{fullname}-web"), "worker": image(rev["docs"], f"{fullname}-worker")})
        before = rev["docs"]
    return rows
