"""Chart 2.x on the local control plane: v4 upgrades and the v3 -> v4 jump, every Helm revision audited.

The stand-in chart 2.0.0 carries the released chart's behaviours that broke real upgrades (checked
against the official chart by tests/upstream/check.py): the `<release>-app` Secret kept through
`lookup` and stored without data when salt, encryption key and NextAuth secret all come from
secretKeyRef (the next upgrade then fails with "index of untyped nil"), `clickhouse.cluster.enabled`
true by default, images from docker.langfuse.com, `langfuse.allowV1Upgrade`. The audit rules are
tests/upstream/release_audit.py's, the same the upstream check applies to the official charts.
"""
import base64
import json
import re
import uuid

import pytest

from conftest import V3, REPO, installed_release, kubectl, playbook, run
from release_audit import audit, revisions
from test_install import recap

STANDIN_2_0_0 = REPO / "tests" / "standins" / "charts" / "langfuse-2.0.0"
V4 = {"langfuse_helm_release_line": "v4", "langfuse_helm_chart_version": "2.0.0", "langfuse_helm_app_version": "4.4.0",
      "clickhouse_operator_server_version": "25.12"}
QUICK = {"upgrade_skip_backup": True, "upgrade_observe_seconds": 5, "upgrade_canary_observe_seconds": 5}


def secrets_of(namespace):
    items = json.loads(kubectl("-n", namespace, "get", "secrets", "-o", "json").stdout)["items"]
    return {base64.b64decode(v).decode() for s in items if s["type"] != "helm.sh/release.v1" for v in (s.get("data") or {}).values()}


def changed_tasks(output):
    """The names of the tasks a run reported changed, for an idempotence failure's message."""
    return re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:[^\n]*\n)*?changed: ", output)


def audited(namespace):
    rows = audit(revisions(namespace), secrets_of(namespace), cluster_enabled=False)
    assert [r for r in rows if r["problems"]] == [], rows
    return rows


def test_the_standin_fails_a_plain_second_upgrade_as_the_released_chart_does(cluster, namespace):
    """What the collection works around: helm alone, values with every app secret from secretKeyRef."""
    refs = [f"--set=langfuse.{key}.secretKeyRef.name=mine,langfuse.{key}.secretKeyRef.key={key}"
            for key in ("salt", "encryptionKey", "nextauth.secret")]
    base = ["helm", "upgrade", "--install", "lf", str(STANDIN_2_0_0), "-n", namespace,
            "-f", str(STANDIN_2_0_0 / "values.lint.yaml"), "--set", "s3.bucket=lint", *refs]
    run(*base)
    stored = json.loads(kubectl("-n", namespace, "get", "secret", "lf-langfuse-app", "-o", "json").stdout)
    assert "data" not in stored
    proc = run(*base, "--set", "langfuse.web.replicas=2", check=False)
    assert proc.returncode != 0 and "index of untyped nil" in proc.stderr, proc.stderr
    assert "langfuse-app-secret.yaml" in proc.stderr


@pytest.fixture(scope="module")
def v4_installed(cluster, services):
    namespace = f"it-v4-{uuid.uuid4().hex[:6]}"
    with installed_release(namespace, **V4) as output:
        yield namespace, output


def test_a_v4_install_upgrades_and_stays_idempotent(v4_installed):
    namespace, output = v4_installed
    assert "Health: OK, version 4.4.0" in output
    assert "data" not in json.loads(kubectl("-n", namespace, "get", "secret", "langfuse-app", "-o", "json").stdout)
    proc = playbook("upgrade", {"langfuse_namespace": namespace, **V4, **QUICK, "langfuse_helm_app_version": "4.16.0"})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Health: OK, version 4.16.0" in proc.stdout
    # Each upgrade hit chart 2.0.0's empty-Secret failure, got the marker key and ran once more; the chart's
    # upgrade then wrote the Secret back without data (so no secret was ever stored in it).
    assert proc.stdout.count("Give the empty app Secret a marker key") == 2
    assert "data" not in json.loads(kubectl("-n", namespace, "get", "secret", "langfuse-app", "-o", "json").stdout)
    rows = audited(namespace)
    assert [r["moved"] for r in rows] == ["install", "worker", "web"]
    assert rows[-1]["web"] == "docker.langfuse.com/langfuse/langfuse:4.16.0"
    again = playbook("install", {"langfuse_namespace": namespace, **V4, "langfuse_helm_app_version": "4.16.0"})
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)["changed"] == 0, changed_tasks(again.stdout)
    assert len(revisions(namespace)) == 3


@pytest.fixture(scope="module")
def v3_installed(cluster, services):
    namespace = f"it-jump-{uuid.uuid4().hex[:6]}"
    with installed_release(namespace, **V3) as output:
        yield namespace, output


def test_v3_keys_in_the_overrides_are_refused_for_chart_2(v3_installed):
    namespace = v3_installed[0]
    proc = playbook("upgrade", {"langfuse_namespace": namespace, **V4, **QUICK, "upgrade_phase": "dual",
                                "langfuse_helm_values": {"clickhouse": {"clusterEnabled": False}}})
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "langfuse_helm_values.clickhouse.clusterEnabled is not read by chart 2.x (v4): use clickhouse.cluster.enabled" in text


def test_the_major_jump_moves_the_chart_then_the_worker_then_the_web(v3_installed):
    namespace = v3_installed[0]
    # Debian's ClickHouse 18.16 has no system.disks: the headroom check is test_v4_phases' (on chDB).
    infra = playbook("upgrade", {"langfuse_namespace": namespace, **V4, **QUICK, "upgrade_phase": "infra",
                                 "upgrade_v4_disk_factor": 0})
    assert infra.returncode == 0, infra.stdout[-4000:]
    proc = playbook("upgrade", {"langfuse_namespace": namespace, **V4, **QUICK, "upgrade_phase": "dual"})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Health: OK, version 4.4.0" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert ("Images: web langfuse/langfuse -> docker.langfuse.com/langfuse/langfuse, worker langfuse/langfuse-worker -> "
            "docker.langfuse.com/langfuse/langfuse-worker") in text
    rows = audited(namespace)
    # install (1.5.41), the chart alone (2.0.0, both pods on 3.224.1 from Docker Hub), the worker, the web.
    assert [(r["chart"], r["moved"]) for r in rows] == [
        ("langfuse-1.5.41", "install"), ("langfuse-2.0.0", "no image"), ("langfuse-2.0.0", "worker"), ("langfuse-2.0.0", "web")]
    assert (rows[1]["web"], rows[1]["worker"]) == ("langfuse/langfuse:3.224.1", "langfuse/langfuse-worker:3.224.1")
    assert rows[2]["worker"] == "docker.langfuse.com/langfuse/langfuse-worker:4.4.0"
    again = playbook("install", {"langfuse_namespace": namespace, **V4})
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)["changed"] == 0, changed_tasks(again.stdout)


def test_the_standin_worker_health_fails_while_event_propagation_is_stuck(cluster, namespace):
    """v4's worker answers /api/health?failIfEventPropagationStuck=true with 503 while the dual write is stuck."""
    def worker(stuck):
        labels = {"app.kubernetes.io/name": "langfuse", "app.kubernetes.io/instance": "lfstuck", "app": "worker",
                  **({"localenv.langfuse-ops.io/event-propagation-stuck": "true"} if stuck else {})}
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "lfstuck-langfuse-worker"},
                      "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "worker"}},
                               "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                                   {"name": "langfuse-worker", "image": "langfuse/langfuse-worker:4.4.0"}]}}}}
        kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(deployment))
        kubectl("-n", namespace, "rollout", "status", "deployment/lfstuck-langfuse-worker", "--timeout=60s")

    def health():
        args = {"namespace": namespace, "release_name": "lfstuck", "component": "worker", "retries": 1, "delay": 1,
                "path": "/api/health?failIfEventPropagationStuck=true"}
        return run(str(REPO / ".venv" / "bin" / "ansible"), "localhost", "-m", "langfuse_ops.platform.langfuse_health",
                   "-a", json.dumps(args), check=False, cwd=REPO)

    worker(stuck=False)
    assert health().returncode == 0
    worker(stuck=True)
    proc = health()
    assert proc.returncode != 0 and "503" in proc.stdout, proc.stdout


def test_queue_shards_reach_the_worker_and_never_go_down(v4_installed):
    namespace = v4_installed[0]
    pins = {"langfuse_namespace": namespace, **V4, "langfuse_helm_app_version": "4.16.0"}
    proc = playbook("install", {**pins, "langfuse_helm_queue_shards": {"ingestion-queue": 4}})
    assert proc.returncode == 0, proc.stdout[-4000:]
    dep = json.loads(kubectl("-n", namespace, "get", "deployment", "langfuse-worker", "-o", "json").stdout)
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LANGFUSE_INGESTION_QUEUE_SHARD_COUNT"] == "4"
    before = len(revisions(namespace))
    lowered = playbook("install", {**pins, "langfuse_helm_queue_shards": {"ingestion-queue": 2}})
    assert lowered.returncode != 0
    assert "LANGFUSE_INGESTION_QUEUE_SHARD_COUNT 4 -> 2" in " ".join(lowered.stdout.split())
    assert "shard counts only go up" in " ".join(lowered.stdout.split())
    assert len(revisions(namespace)) == before
