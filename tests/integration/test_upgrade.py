"""upgrade.yml on the local control plane: order, availability, rollback, gates, idempotence.

One release installed at 4.4.0 (inventories/local, line v4), then upgraded in steps: 4.12.0, then 4.16.0.
KWOK runs no container: the Langfuse pods are played by the stand-in server
(it reports the image tag as the version), and the migration Jobs complete
without migrating while the gate reads the real local databases (seeded by
services.sh; the dirty case seeds a database of its own). Orders and
availability are read from the cluster's own timestamps and status.
"""
import json
import re
import uuid

import pytest

from conftest import Watch, ch, installed_release, kubectl, playbook, run
from test_install import recap


def upgrade(namespace, version, *args, extra=None):
    variables = {"langfuse_namespace": namespace, "langfuse_helm_app_version": version, "upgrade_observe_seconds": 5,
                 "upgrade_canary_observe_seconds": 5, **(extra or {})}
    return playbook("upgrade", variables, *args)


def deployment(namespace, component):
    return json.loads(kubectl("-n", namespace, "get", "deployment", f"langfuse-{component}", "-o", "json").stdout)


def image_tag(namespace, component):
    return deployment(namespace, component)["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]


def history(namespace):
    return json.loads(run("helm", "history", "langfuse", "-n", namespace, "-o", "json").stdout)


class WebAvailability(Watch):
    """Samples, while a playbook runs, the web Deployment's available replicas, the canary Deployment and
    the canary pods the web Service's EndpointSlices list."""

    def __init__(self, namespace):
        super().__init__()
        self.namespace, self.samples = namespace, []
        self.canary, self.canary_endpoints = {}, set()

    def sample(self):
        items = self.items("deployments", "endpointslices")
        if items is None:
            return
        named = {(i["kind"], i["metadata"]["name"]): i for i in items}
        if ("Deployment", "langfuse-web") in named:
            self.samples.append(named[("Deployment", "langfuse-web")]["status"].get("availableReplicas", 0))
        if ("Deployment", "langfuse-web-canary") in named:
            self.canary = named[("Deployment", "langfuse-web-canary")]
        for item in items:
            if item["kind"] == "EndpointSlice" and item["metadata"].get("labels", {}).get("kubernetes.io/service-name") == "langfuse-web":
                self.canary_endpoints |= {e["targetRef"]["name"] for e in item.get("endpoints") or []
                                          if "web-canary" in e.get("targetRef", {}).get("name", "")}


@pytest.fixture(scope="module")
def installed(cluster, services):
    namespace = f"it-up-{uuid.uuid4().hex[:6]}"
    with installed_release(namespace, langfuse_helm_app_version="4.4.0"):
        yield namespace


def test_upgrading_to_the_deployed_version_changes_nothing(installed):
    proc = upgrade(installed, "4.4.0")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 0
    assert "4.4.0 -> 4.4.0" in proc.stdout and "already there, nothing changed" in proc.stdout
    assert len(history(installed)) == 1


def test_no_backup_and_no_skip_refuses_before_any_change(installed):
    selector = "app.kubernetes.io/component=backup"
    cronjobs = json.loads(kubectl("-n", installed, "get", "cronjobs", "-l", selector, "-o", "json").stdout)
    assert len(cronjobs["items"]) == 3  # install.yml made them (backup_cron is on by default)
    kubectl("-n", installed, "delete", "cronjobs", "-l", selector)
    try:
        proc = upgrade(installed, "4.12.0")
    finally:  # the later tests back up with them
        for item in cronjobs["items"]:
            for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
                item["metadata"].pop(key, None)
        kubectl("-n", installed, "create", "-f", "-", input=json.dumps(cronjobs))
    assert proc.returncode != 0
    assert "No backup CronJob" in " ".join(proc.stdout.split())
    assert len(history(installed)) == 1
    assert not [j for j in json.loads(kubectl("-n", installed, "get", "jobs", "-o", "json").stdout)["items"]
                if j["metadata"]["name"].startswith("langfuse-migrate-4-12-0")]


def test_check_diff_shows_the_planned_change_and_makes_none(installed):
    proc = upgrade(installed, "4.12.0", "--check", "--diff", extra={"upgrade_skip_backup": True})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"^-\s+tag: 4\.4\.0$", proc.stdout, flags=re.M) and re.search(r"^\+\s+tag: 4\.12\.0$", proc.stdout, flags=re.M)
    assert "would run now" in proc.stdout
    assert len(history(installed)) == 1
    assert (image_tag(installed, "worker"), image_tag(installed, "web")) == ("4.4.0", "4.4.0")
    assert not [j for j in json.loads(kubectl("-n", installed, "get", "jobs", "-o", "json").stdout)["items"]
                if j["metadata"]["name"].startswith("langfuse-migrate-4-12-0")]


def test_a_dirty_clickhouse_stops_the_upgrade_before_the_worker_moves(installed, databases, services):
    name = databases[0]
    ch(services, f"INSERT INTO {name}.schema_migrations VALUES (37, 1, 2)")
    databases_of_the_test = {"clickhouse_operator_database": name, "postgres_database": name}
    proc = upgrade(installed, "4.12.0", extra={"upgrade_skip_backup": True, **databases_of_the_test})
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "dirty" in text and "force 36" in text, proc.stdout[-3000:]
    assert len(history(installed)) == 1
    assert (image_tag(installed, "worker"), image_tag(installed, "web")) == ("4.4.0", "4.4.0")


def test_upgrade_moves_the_worker_first_and_the_web_stays_available(installed):
    replicas = deployment(installed, "web")["spec"]["replicas"]
    with WebAvailability(installed) as web:
        proc = upgrade(installed, "4.12.0")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Health: OK, version 4.12.0" in proc.stdout
    # Chart 2.0.0's upgrade fails over its own empty app Secret: each helm step (worker, web) met that, gave the Secret a
    # marker key and ran once more; the chart's upgrade then wrote the Secret back without data (no secret in it).
    assert proc.stdout.count("Give the empty app Secret a marker key") == 2
    assert "data" not in json.loads(kubectl("-n", installed, "get", "secret", "langfuse-app", "-o", "json").stdout)
    # Backed up first: a Job from each backup CronJob but the weekly full (the incremental starts a chain when
    # there is none), all complete before the migration Job started.
    jobs = json.loads(kubectl("-n", installed, "get", "jobs", "-l", "langfuse-ops.io/backup-reason=pre-upgrade",
                              "-o", "json").stdout)["items"]
    assert sorted(j["metadata"]["labels"]["app.kubernetes.io/instance"] for j in jobs) == [
        "langfuse-backup-clickhouse-incremental", "langfuse-backup-postgres"]
    migrate = json.loads(kubectl("-n", installed, "get", "job", "-o", "json").stdout)["items"]
    # (the dirty-ClickHouse test left a Job of its own databases for this version too: take this run's, the newest)
    migrate = max((j for j in migrate if j["metadata"]["name"].startswith("langfuse-migrate-4-12-0")),
                  key=lambda j: j["metadata"]["creationTimestamp"])
    assert max(j["status"]["completionTime"] for j in jobs) <= migrate["metadata"]["creationTimestamp"]
    assert " completed" in " ".join(proc.stdout.split()).split("Backup:")[1][:400]
    assert (image_tag(installed, "worker"), image_tag(installed, "web")) == ("4.12.0", "4.12.0")
    # The worker's new ReplicaSet was fully available before the web's new one existed.
    worker = deployment(installed, "worker")
    worker_done = next(c["lastUpdateTime"] for c in worker["status"]["conditions"]
                       if c["type"] == "Progressing" and c["reason"] == "NewReplicaSetAvailable")
    replica_sets = json.loads(kubectl("-n", installed, "get", "rs", "-l", "app=web", "-o", "json").stdout)["items"]
    new_web = [rs for rs in replica_sets if rs["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":4.12.0")]
    assert len(new_web) == 1
    assert worker_done <= new_web[0]["metadata"]["creationTimestamp"], (worker_done, new_web[0]["metadata"]["creationTimestamp"])
    # Between the two, one canary pod of the target ran behind the web Service, and it is gone.
    canary = web.canary
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":4.12.0")
    assert worker_done <= canary["metadata"]["creationTimestamp"] <= new_web[0]["metadata"]["creationTimestamp"]
    assert web.canary_endpoints, "the web Service never listed the canary pod"
    assert kubectl("-n", installed, "get", "deployment", "langfuse-web-canary", check=False).returncode != 0
    assert re.search(r"Canary: 1 web pod on 4\.12\.0 passed (\d+) of \1 health calls over 5 s, restarts 0, then was removed",
                     " ".join(proc.stdout.split())), proc.stdout[-3000:]
    # The web never fell below what its PDB allows (maxUnavailable 1) while the upgrade ran.
    assert len(web.samples) > 20
    assert min(web.samples) >= replicas - 1, web.samples
    assert [h["status"] for h in history(installed)][-1] == "deployed"


def test_a_never_ready_canary_rolls_the_release_back_before_the_web_moves(installed):
    before = history(installed)[-1]["revision"]
    replicas = deployment(installed, "web")["spec"]["replicas"]
    web_sets_before = {rs["metadata"]["name"] for rs in json.loads(
        kubectl("-n", installed, "get", "rs", "-l", "app=web", "-o", "json").stdout)["items"]}
    never_ready = {"langfuse": {"web": {"pod": {"labels": {"localenv.langfuse-ops.io/never-ready": "true"}}}}}
    with WebAvailability(installed) as web:
        proc = upgrade(installed, "4.16.0", extra={"upgrade_skip_backup": True, "langfuse_helm_values": never_ready,
                                                   "upgrade_canary_ready_seconds": 20})
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert 'failed at step "web canary on 4.16.0"' in text, proc.stdout[-4000:]
    assert "The canary (one web pod on 4.16.0) failed" in text
    assert re.search(r"Its pods: langfuse-web-canary-[a-z0-9-]+ Ready=False, restarts 0", text), proc.stdout[-4000:]
    assert f"The release is back at revision {before} (web 4.12.0, worker 4.12.0, langfuse-2.0.0)" in text
    assert "migrations are not rolled back" in text
    last = history(installed)[-1]
    assert last["status"] == "deployed" and last["description"] == f"Rollback to {before}"
    assert (image_tag(installed, "worker"), image_tag(installed, "web")) == ("4.12.0", "4.12.0")
    # The canary that ran was the target web with the values of the run, and it is gone.
    assert web.canary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":4.16.0")
    assert web.canary["spec"]["template"]["metadata"]["labels"]["localenv.langfuse-ops.io/never-ready"] == "true"
    assert kubectl("-n", installed, "get", "deployment", "langfuse-web-canary", check=False).returncode != 0
    assert not json.loads(kubectl("-n", installed, "get", "pods", "-l", "langfuse-ops.io/canary=true", "-o", "json").stdout)["items"]
    # The web Deployment never moved: no new ReplicaSet, and every old pod kept serving.
    web_sets_after = {rs["metadata"]["name"] for rs in json.loads(
        kubectl("-n", installed, "get", "rs", "-l", "app=web", "-o", "json").stdout)["items"]}
    assert web_sets_after == web_sets_before
    assert min(web.samples) >= replicas, web.samples
