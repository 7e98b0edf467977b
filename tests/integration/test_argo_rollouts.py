"""The web as an Argo Rollout (langfuse_helm_web_workload: argo_rollout), with Argo's real controller.

The controller is Argo Rollouts' own rollouts-controller, built from its Go module by
tests/localenv/build-binaries.sh, with the CRDs of the same module; here it runs as a local process
in namespaced mode, watching only this file's namespace. KWOK plays the pods, so the Rollout's
ReplicaSets, pods, pauses and aborts are the controller's real behaviour, and the pods' health answers
come from the stand-in Langfuse server (the image tag as the version; a never-ready label keeps a pod
unready). Unexercised here: traffic routers (none is configured: the basic canary shares the web
Service by pod count) and Argo's analysis providers (the gate is the collection's own health calls).
"""
import json
import os
import re
import uuid
from pathlib import Path

import pytest

import argo_rollouts  # tests/localenv, on the path through conftest
from conftest import Watch, installed_release, kubectl, migrated_databases, playbook, restore_job_running, run
from test_install import recap

ARGO = {"langfuse_helm_web_workload": "argo_rollout", "langfuse_helm_canary_observe_seconds": 5}


def rollout(namespace):
    return json.loads(kubectl("-n", namespace, "get", "rollout", "langfuse-web", "-o", "json").stdout)


def web_pods(namespace):
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def tag(pod):
    return pod["spec"]["containers"][0]["image"].rsplit(":", 1)[1]


def upgrade(installed, version, extra=None):
    namespace, own = installed
    variables = {"langfuse_namespace": namespace, **own, "langfuse_helm_app_version": version, "upgrade_observe_seconds": 5,
                 "upgrade_canary_observe_seconds": 5, "upgrade_skip_backup": True, **ARGO, **(extra or {})}
    return playbook("upgrade", variables)


class RolloutWatch(Watch):
    """Samples, while a playbook runs, the web Rollout's status, the web pods with their versions, the
    Deployments, and whether a restore Job is running."""

    def __init__(self, namespace):
        super().__init__()
        self.namespace, self.samples = namespace, []

    def sample(self):
        items = self.items("rollouts", "pods", "deployments", "jobs")
        if items is None:
            return
        ro = next((i for i in items if i["kind"] == "Rollout"), None)
        pods = [p for p in items if p["kind"] == "Pod" and p["metadata"].get("labels", {}).get("app") == "web"
                and not p["metadata"].get("deletionTimestamp")]
        self.samples.append({
            "phase": (ro or {}).get("status", {}).get("phase"),
            "available": (ro or {}).get("status", {}).get("availableReplicas", 0),
            "pods": sorted((tag(p), any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in p.get("status", {}).get("conditions", []))) for p in pods),
            "deployments": sorted(i["metadata"]["name"] for i in items if i["kind"] == "Deployment"),
            "restoring": restore_job_running(items),
        })


@pytest.fixture(scope="module")
def argo(cluster):
    """Argo Rollouts' CRDs in the cluster and its controller watching one new namespace."""
    namespace = f"it-argo-{uuid.uuid4().hex[:6]}"
    log = Path(os.environ.get("LOCALENV_STATE", "/tmp")) / f"argo-rollouts-{namespace}.log"
    try:
        with argo_rollouts.controller(namespace, log):
            yield namespace
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def installed(argo, services):
    """The release, on databases and buckets of its own: the last test restores them."""
    with migrated_databases(services, "argo") as database:
        own = {"s3_buckets_names": {kind: f"it-argo-{kind}-{argo[-6:]}" for kind in ("events", "media", "exports")},
               "postgres_database": database, "clickhouse_operator_database": database}
        with installed_release(argo, **ARGO, **own, langfuse_helm_app_version="4.4.0"):
            yield argo, own


def test_install_runs_the_web_as_a_rollout_of_the_chart_deployment(installed):
    namespace = installed[0]
    deployment = json.loads(kubectl("-n", namespace, "get", "deployment", "langfuse-web", "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 0
    ro = rollout(namespace)
    assert ro["spec"]["workloadRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "langfuse-web", "scaleDown": "never"}
    assert ro["status"]["phase"] == "Healthy" and ro["spec"]["replicas"] == 3  # the inventory's hpa.min_replicas
    pods = web_pods(namespace)
    assert len(pods) == 3 and {tag(p) for p in pods} == {"4.4.0"}
    assert {p["metadata"]["labels"]["rollouts-pod-template-hash"] for p in pods} == {ro["status"]["stableRS"]}
    # The web Service (the chart's, selecting by labels) sends its requests to the Rollout's pods.
    slices = json.loads(kubectl("-n", namespace, "get", "endpointslices", "-l", "kubernetes.io/service-name=langfuse-web",
                                "-o", "json").stdout)["items"]
    assert {e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []} == {p["metadata"]["name"] for p in pods}
    # The chart's web HPA is off; the role's scales the Rollout.
    hpas = json.loads(kubectl("-n", namespace, "get", "hpa", "-o", "json").stdout)["items"]
    named = {h["metadata"]["name"]: h for h in hpas}
    assert "langfuse-web" not in named
    target = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "langfuse-web"}
    assert named["langfuse-web-rollout"]["spec"]["scaleTargetRef"] == target
    assert named["langfuse-web-rollout"]["spec"]["minReplicas"] == 3


def test_install_again_changes_nothing(installed):
    namespace, own = installed
    proc = playbook("install", {"langfuse_namespace": namespace, **ARGO, **own})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 0, proc.stdout[-4000:]


def test_upgrade_moves_the_web_through_the_rollouts_canary(installed):
    namespace = installed[0]
    with RolloutWatch(namespace) as watch:
        proc = upgrade(installed, "4.12.0")
    assert proc.returncode == 0, proc.stdout[-4000:]
    text = " ".join(proc.stdout.split())
    assert re.search(r"Canary: Argo Rollout langfuse-web: its canary pod on 4\.12\.0 passed (\d+) of \1 health calls, restarts 0,"
                     r" then the Rollout was promoted", text), proc.stdout[-3000:]
    # While paused, one pod of the target ran beside the three stable ones (maxSurge 1), all Ready.
    paused = [s for s in watch.samples if s["phase"] == "Paused"]
    assert paused, "the Rollout never paused at its canary step"
    assert all(s["pods"] == [("4.4.0", True)] * 3 + [("4.12.0", True)] for s in paused), paused[:3]
    # maxUnavailable 0: the web never had fewer than its 3 pods available, and no canary Deployment was made.
    assert min(s["available"] for s in watch.samples) >= 3, [s["available"] for s in watch.samples]
    assert not any("langfuse-web-canary" in s["deployments"] for s in watch.samples)
    ro = rollout(namespace)
    assert ro["status"]["phase"] == "Healthy" and ro["status"]["stableRS"] == ro["status"]["currentPodHash"]
    assert sorted(tag(p) for p in web_pods(namespace)) == ["4.12.0"] * 3
    # The worker's new ReplicaSet was available before the canary's ReplicaSet existed.
    worker = json.loads(kubectl("-n", namespace, "get", "deployment", "langfuse-worker", "-o", "json").stdout)
    worker_done = next(c["lastUpdateTime"] for c in worker["status"]["conditions"]
                       if c["type"] == "Progressing" and c["reason"] == "NewReplicaSetAvailable")
    canary_rs = json.loads(kubectl("-n", namespace, "get", "rs", "langfuse-web-" + ro["status"]["stableRS"], "-o", "json").stdout)
    assert worker_done <= canary_rs["metadata"]["creationTimestamp"]


def test_a_never_ready_canary_is_aborted_and_the_release_rolled_back(installed):
    namespace = installed[0]
    before = json.loads(run("helm", "history", "langfuse", "-n", namespace, "-o", "json").stdout)[-1]["revision"]
    stable = rollout(namespace)["status"]["stableRS"]
    never_ready = {"langfuse": {"web": {"pod": {"labels": {"localenv.langfuse-ops.io/never-ready": "true"}}}}}
    with RolloutWatch(namespace) as watch:
        proc = upgrade(installed, "4.16.0", extra={"langfuse_helm_values": never_ready, "upgrade_canary_ready_seconds": 20})
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert 'failed at step "web to 4.16.0"' in text, proc.stdout[-4000:]
    assert "The web Rollout's canary (4.16.0) failed: Rollout " + namespace + "/langfuse-web did not settle" in text, proc.stdout[-4000:]
    assert f"The Rollout is aborted: its canary is scaled down and the stable pods ({stable}) serve every request" in text
    assert f"The release is back at revision {before}" in text
    # A canary pod of 4.16.0 ran (never Ready) beside the three stable ones, which kept serving throughout.
    assert any(("4.16.0", False) in s["pods"] for s in watch.samples)
    assert min(s["available"] for s in watch.samples) >= 3
    ro = rollout(namespace)
    assert ro["status"]["phase"] == "Healthy" and ro["status"]["stableRS"] == stable == ro["status"]["currentPodHash"]
    assert sorted(tag(p) for p in web_pods(namespace)) == ["4.12.0"] * 3


def test_restore_stops_the_rollouts_web_pods_while_it_restores(installed):
    namespace, own = installed
    backup = playbook("backup", {"langfuse_namespace": namespace, **own})
    assert backup.returncode == 0, backup.stdout[-4000:]
    with RolloutWatch(namespace) as watch:
        proc = playbook("restore", {"langfuse_namespace": namespace, **own, "restore_confirm": namespace})
    assert proc.returncode == 0, proc.stdout[-4000:]
    # Not one web pod (the Rollout's) while a restore Job ran; then the Rollout was back at its three.
    restoring = [s for s in watch.samples if s["restoring"]]
    assert restoring, "no restore Job was seen running"
    assert all(s["pods"] == [] for s in restoring), restoring
    ro = rollout(namespace)
    assert ro["spec"]["replicas"] == 3 and ro["status"]["phase"] == "Healthy"
    assert sorted(tag(p) for p in web_pods(namespace)) == ["4.12.0"] * 3
    assert "Health: OK, version 4.12.0" in " ".join(proc.stdout.split())


def test_back_to_a_deployment_web_keeps_the_web_serving(installed):
    namespace, own = installed
    with RolloutWatch(namespace) as watch:
        proc = playbook("install", {"langfuse_namespace": namespace, **own, "langfuse_helm_web_workload": "deployment"})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert kubectl("-n", namespace, "get", "rollout", "langfuse-web", check=False).returncode != 0
    assert kubectl("-n", namespace, "get", "hpa", "langfuse-web-rollout", check=False).returncode != 0
    deployment = json.loads(kubectl("-n", namespace, "get", "deployment", "langfuse-web", "-o", "json").stdout)
    assert deployment["status"]["availableReplicas"] == 3
    pods = web_pods(namespace)
    assert len(pods) == 3 and not [p for p in pods if "rollouts-pod-template-hash" in p["metadata"]["labels"]]
    # Ready web pods never fewer than three: the Deployment's were up before the Rollout's went.
    assert min(sum(ready for version, ready in s["pods"]) for s in watch.samples) >= 3
