"""The CloudNativePG stand-in behaves like the operator the postgres role drives.

What this stands in for: the cloudnative-pg operator chart 0.29.0 (operator
1.30.0) and the operator's reconciliation of postgresql.cnpg.io/v1 Cluster,
Backup and ScheduledBackup objects. Neither the chart nor the operator image
can be pulled here, so:

* tests/standins/charts/cloudnative-pg-0.29.0 is a from-scratch chart with
  the official names (Deployment `<release>-cloudnative-pg`, Service
  `cnpg-webhook-service`, ...), labels and values keys, and CRDs of our own
  for clusters/backups/scheduledbackups/poolers/databases (trimmed schemas,
  same names, printer columns and subresources as the official ones); it has
  no webhooks;
* tests/standins/cnpg_operator.py, started by tests/localenv/cluster.sh,
  plays the operator: app Secret, Services, PVCs, Pods (KWOK makes them
  Ready, kube-scheduler places them by the generated anti-affinity), status.

These tests install the chart as a throwaway release in a throwaway
namespace. The CRDs are cluster-wide and the chart keeps them on uninstall
(helm.sh/resource-policy: keep, as upstream): when they already exist (for
example from the role's release `cnpg`) the release is installed with
crds.create=false and they are left alone; when this module creates them, it
deletes them again at the end, so no CRD owned by a dead release blocks a
later `helm install cnpg` (Helm refuses to adopt objects of another release).
"""
import base64
import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import REPO, kubectl, run

CHART = REPO / "tests" / "standins" / "charts" / "cloudnative-pg-0.29.0"
CRDS = [f"{p}.postgresql.cnpg.io" for p in ("clusters", "backups", "scheduledbackups", "poolers", "databases")]
STATE = Path(os.environ.get("LOCALENV_STATE", "/tmp/langfuse-ops-localenv"))
HEALTHY = "Cluster in healthy state"
IMAGE = "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie"
SECRET_KEYS = {"username", "user", "password", "dbname", "host", "port", "pgpass",
               "uri", "jdbc-uri", "fqdn-uri", "fqdn-jdbc-uri"}


def get(namespace, *what):
    return json.loads(kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


def apply(namespace, doc):
    return kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(doc))


def pg_cluster(name, **spec):
    base = {
        "instances": 3,
        "imageName": IMAGE,
        "primaryUpdateStrategy": "unsupervised",
        "storage": {"storageClass": "standard", "size": "1Gi"},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "affinity": {"enablePodAntiAffinity": True, "topologyKey": "topology.kubernetes.io/zone",
                     "podAntiAffinityType": "required"},
        "bootstrap": {"initdb": {"database": "langfuse", "owner": "langfuse"}},
    }
    base.update(spec)
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": name}, "spec": base}


def standin_log():
    path = STATE / "standin-cnpg-operator.log"
    return path.read_text()[-3000:] if path.exists() else f"(no {path}: is the stand-in running?)"


def wait_for(what, probe, timeout=60):
    """Polls probe() until it returns something truthy; fails with the stand-in's log."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}\n"
                f"stand-in log (tail):\n{standin_log()}")


def status_of(namespace, name):
    return get(namespace, "cluster", name).get("status") or {}


def wait_healthy(namespace, name, instances, timeout=60):
    def probe():
        st = status_of(namespace, name)
        return st if st.get("phase") == HEALTHY and st.get("readyInstances") == instances else None
    return wait_for(f"cluster {name} healthy with {instances} ready instances", probe, timeout)


def instance_pods(namespace, name):
    pods = get(namespace, "pods", "-l", f"cnpg.io/cluster={name},cnpg.io/podRole=instance")["items"]
    return {p["metadata"]["name"]: p for p in pods if not p["metadata"].get("deletionTimestamp")}


def zones():
    return {n["metadata"]["name"]: n["metadata"]["labels"]["topology.kubernetes.io/zone"]
            for n in json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]}


def render(*args):
    out = run("helm", "template", "cnpg", str(CHART), "-n", "cnpg-system", "--kube-version", "1.37", *args).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


@pytest.fixture(scope="module")
def operator(cluster):
    """The stand-in chart as a throwaway release; yields its namespace."""
    suffix = uuid.uuid4().hex[:6]
    namespace, release = f"t-cnpg-op-{suffix}", f"cnpg-{suffix}"
    installed = set(kubectl("get", "crd", "-o", "name").stdout.split())
    ours = not any(f"customresourcedefinition.apiextensions.k8s.io/{c}" in installed for c in CRDS)
    kubectl("create", "namespace", namespace)
    run("helm", "install", release, str(CHART), "-n", namespace, "--set", f"crds.create={str(ours).lower()}",
        "--wait", "--timeout", "90s", timeout=150)
    yield namespace, release, ours
    run("helm", "uninstall", release, "-n", namespace, "--wait", check=False, timeout=120)
    if ours:
        kept = set(kubectl("get", "crd", "-o", "name").stdout.split())
        # resource-policy keep: the CRDs outlive the release, as with the official chart ...
        assert all(f"customresourcedefinition.apiextensions.k8s.io/{c}" in kept for c in CRDS)
        # ... and this module created them, so it removes them.
        kubectl("delete", "crd", *CRDS, "--wait=false", check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --------------------------------------------------------------------------- the chart


def test_chart_renders_the_official_names_for_release_cnpg():
    objs = render()
    dep = objs[("Deployment", "cnpg-cloudnative-pg")]
    assert dep["metadata"]["namespace"] == "cnpg-system"
    assert dep["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "cloudnative-pg",
                                                      "app.kubernetes.io/instance": "cnpg"}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "manager"
    assert container["image"] == "ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0"
    assert "WATCH_NAMESPACE" not in {e["name"] for e in container["env"]}
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "cnpg-cloudnative-pg"
    assert objs[("Service", "cnpg-webhook-service")]["spec"]["ports"][0]["port"] == 443
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        assert (kind, "cnpg-cloudnative-pg") in objs
    assert ("ConfigMap", "cnpg-controller-manager-config") in objs
    assert not [k for k in objs if "Webhook" in k[0]]  # a stand-in cannot serve TLS webhooks
    crds = {name: d for (kind, name), d in objs.items() if kind == "CustomResourceDefinition"}
    assert sorted(crds) == sorted(CRDS)
    for crd in crds.values():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"]["group"] == "postgresql.cnpg.io" and crd["spec"]["scope"] == "Namespaced"
    version = crds["clusters.postgresql.cnpg.io"]["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Age", "Instances", "Ready", "Status", "Primary"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.instances"
    instances = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["instances"]
    assert (instances["type"], instances["minimum"]) == ("integer", 1)


def test_chart_values_switch_like_the_official_chart():
    objs = render("--set", "crds.create=false", "--set", "config.clusterWide=false",
                  "--set", "image.tag=1.30.0-custom", "--set", "resources.requests.cpu=100m")
    assert not [k for k in objs if k[0] == "CustomResourceDefinition"]
    container = objs[("Deployment", "cnpg-cloudnative-pg")]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "WATCH_NAMESPACE", "value": "cnpg-system"} in container["env"]
    assert container["image"].endswith(":1.30.0-custom")
    assert container["resources"] == {"requests": {"cpu": "100m"}}
    assert ("Role", "cnpg-cloudnative-pg") in objs and ("RoleBinding", "cnpg-cloudnative-pg") in objs
    refused = run("helm", "template", "cnpg", str(CHART), "--kube-version", "1.37",
                  "--set", "monitoring.grafanaDashboard.create=true", check=False)
    assert refused.returncode != 0 and "grafanaDashboard" in refused.stderr
    wrong_type = run("helm", "template", "cnpg", str(CHART), "--kube-version", "1.37",
                     "--set", "config.clusterWide=yes", check=False)
    assert wrong_type.returncode != 0 and "clusterWide" in wrong_type.stderr


def test_operator_release_becomes_ready(operator):
    namespace, release = operator[:2]
    dep = get(namespace, "deployment", f"{release}-cloudnative-pg")
    assert dep["status"]["readyReplicas"] == 1
    get(namespace, "service", "cnpg-webhook-service")
    for crd in CRDS:
        kubectl("get", "crd", crd)


# --------------------------------------------------------------------------- Cluster


def test_cluster_gets_secret_services_and_three_pods_over_three_zones(operator, namespace):
    apply(namespace, pg_cluster("langfuse-pg"))
    phases = set()

    def healthy():
        st = status_of(namespace, "langfuse-pg")
        phases.add(st.get("phase"))
        return st if st.get("phase") == HEALTHY and st.get("readyInstances") == 3 else None
    st = wait_for("langfuse-pg healthy", healthy)
    assert {"Setting up primary", "Creating a new replica"} & phases, phases
    assert st["instances"] == 3 and st["readyInstances"] == 3
    assert st["currentPrimary"] == st["targetPrimary"] == "langfuse-pg-1"
    assert (st["writeService"], st["readService"]) == ("langfuse-pg-rw", "langfuse-pg-r")
    assert "phaseReason" not in st
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "ClusterIsReady")
    kubectl("-n", namespace, "wait", "cluster/langfuse-pg", "--for=condition=Ready", "--timeout=5s")

    cluster_uid = get(namespace, "cluster", "langfuse-pg")["metadata"]["uid"]
    secret = get(namespace, "secret", "langfuse-pg-app")
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert {"cnpg.io/cluster": "langfuse-pg", "cnpg.io/userType": "app",
            "cnpg.io/reload": "true"}.items() <= secret["metadata"]["labels"].items()
    assert secret["metadata"]["ownerReferences"][0]["uid"] == cluster_uid
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == SECRET_KEYS
    password = data["password"]
    assert len(password) == 64 and password.isalnum() and sum(c.isdigit() for c in password) == 10
    assert (data["username"], data["user"], data["dbname"]) == ("langfuse", "langfuse", "langfuse")
    assert (data["host"], data["port"]) == ("langfuse-pg-rw", "5432")
    assert data["pgpass"] == f"langfuse-pg-rw:5432:langfuse:langfuse:{password}\n"
    assert data["uri"] == f"postgresql://langfuse:{password}@langfuse-pg-rw.{namespace}:5432/langfuse"
    assert data["fqdn-uri"] == f"postgresql://langfuse:{password}@langfuse-pg-rw.{namespace}.svc.cluster.local:5432/langfuse"
    assert data["jdbc-uri"] == f"jdbc:postgresql://langfuse-pg-rw.{namespace}:5432/langfuse?password={password}&user=langfuse"

    services = {s["metadata"]["name"]: s["spec"] for s in get(namespace, "services", "-l", "cnpg.io/cluster=langfuse-pg")["items"]}
    assert services["langfuse-pg-rw"]["selector"] == {"cnpg.io/cluster": "langfuse-pg", "cnpg.io/instanceRole": "primary"}
    assert services["langfuse-pg-ro"]["selector"] == {"cnpg.io/cluster": "langfuse-pg", "cnpg.io/instanceRole": "replica"}
    assert services["langfuse-pg-r"]["selector"] == {"cnpg.io/cluster": "langfuse-pg", "cnpg.io/podRole": "instance"}
    for svc in services.values():
        assert [(p["name"], p["port"]) for p in svc["ports"]] == [("postgres", 5432)]

    pods = instance_pods(namespace, "langfuse-pg")
    assert sorted(pods) == ["langfuse-pg-1", "langfuse-pg-2", "langfuse-pg-3"]
    for name, pod in pods.items():
        labels = pod["metadata"]["labels"]
        role = "primary" if name == "langfuse-pg-1" else "replica"
        assert (labels["cnpg.io/instanceName"], labels["cnpg.io/instanceRole"], labels["role"]) == (name, role, role)
        assert pod["metadata"]["ownerReferences"][0]["uid"] == cluster_uid
        container = pod["spec"]["containers"][0]
        assert (container["name"], container["image"]) == ("postgres", IMAGE)
        assert {"name": "postgresql", "containerPort": 5432, "protocol": "TCP"} in container["ports"]
        assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
        assert {"name": "pgdata", "persistentVolumeClaim": {"claimName": name}} in pod["spec"]["volumes"]
        term, = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "topology.kubernetes.io/zone"
        assert {"key": "cnpg.io/cluster", "operator": "In", "values": ["langfuse-pg"]} in term["labelSelector"]["matchExpressions"]
    node_zone = zones()
    assert sorted(node_zone[p["spec"]["nodeName"]] for p in pods.values()) == ["local-a", "local-b", "local-c"]

    claims = get(namespace, "pvc", "-l", "cnpg.io/cluster=langfuse-pg")["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == sorted(pods)
    assert {(c["spec"]["storageClassName"], c["spec"]["resources"]["requests"]["storage"], c["status"]["phase"])
            for c in claims} == {("standard", "1Gi", "Bound")}


def test_scaling_adds_and_removes_instances_and_keeps_the_password(operator, namespace):
    apply(namespace, pg_cluster("pg", affinity={}))  # default: preferred, kubernetes.io/hostname
    wait_healthy(namespace, "pg", 3)
    password = get(namespace, "secret", "pg-app")["data"]["password"]
    pod = next(iter(instance_pods(namespace, "pg").values()))
    term, = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert (term["weight"], term["podAffinityTerm"]["topologyKey"]) == (100, "kubernetes.io/hostname")

    kubectl("-n", namespace, "scale", "cluster/pg", "--replicas=2")  # the scale subresource
    wait_for("pg-3 gone", lambda: sorted(instance_pods(namespace, "pg")) == ["pg-1", "pg-2"])
    st = wait_healthy(namespace, "pg", 2)
    assert st["instances"] == 2 and st["currentPrimary"] == "pg-1"
    wait_for("PVC pg-3 gone", lambda: "pg-3" not in {c["metadata"]["name"] for c in get(namespace, "pvc")["items"]})

    kubectl("-n", namespace, "patch", "cluster", "pg", "--type=merge", "-p", '{"spec": {"instances": 3}}')
    st = wait_healthy(namespace, "pg", 3)
    assert sorted(instance_pods(namespace, "pg")) == ["pg-1", "pg-2", "pg-4"]  # serials are not reused
    assert st["latestGeneratedNode"] == 4
    assert get(namespace, "secret", "pg-app")["data"]["password"] == password  # never rotated


def test_required_zone_anti_affinity_cannot_place_a_fourth_instance(operator, namespace):
    apply(namespace, pg_cluster("four", instances=4))
    wait_for("a Pending fourth instance", lambda: (instance_pods(namespace, "four").get("four-4") or {})
             .get("status", {}).get("phase") == "Pending")
    time.sleep(3)
    st = status_of(namespace, "four")
    assert st["readyInstances"] == 3 and st["phase"] != HEALTHY
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["status"] == "False"


def test_fail_annotation_keeps_the_cluster_unhealthy(operator, namespace):
    doc = pg_cluster("broken", instances=1)
    doc["metadata"]["annotations"] = {"localenv.langfuse-ops.io/fail": "true"}
    apply(namespace, doc)
    st = wait_for("the failure phase", lambda: (status_of(namespace, "broken").get("phase")
                                                == "Unable to create required cluster objects") and status_of(namespace, "broken"))
    assert st["phaseReason"]
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["status"] == "False"
    time.sleep(3)
    assert status_of(namespace, "broken")["phase"] == "Unable to create required cluster objects"
    assert not instance_pods(namespace, "broken")

    kubectl("-n", namespace, "annotate", "cluster", "broken", "localenv.langfuse-ops.io/fail-")
    wait_healthy(namespace, "broken", 1)


def test_invalid_definition_and_missing_initdb_secret(operator, namespace):
    apply(namespace, pg_cluster("invalid", instances=1, affinity={"podAntiAffinityType": "sometimes"}))
    st = wait_for("Invalid cluster definition",
                  lambda: status_of(namespace, "invalid").get("phase") == "Invalid cluster definition"
                  and status_of(namespace, "invalid"))
    assert "spec.affinity.podAntiAffinityType" in st["phaseReason"]

    apply(namespace, pg_cluster("own", instances=1, bootstrap={"initdb": {
        "database": "langfuse", "owner": "langfuse", "secret": {"name": "own-credentials"}}}))
    wait_for("Setting up primary", lambda: status_of(namespace, "own").get("phase") == "Setting up primary")
    time.sleep(2)
    assert not instance_pods(namespace, "own")  # the bootstrap waits for its secret
    kubectl("-n", namespace, "create", "secret", "generic", "own-credentials", "--type=kubernetes.io/basic-auth",
            "--from-literal=username=langfuse", "--from-literal=password=pw")
    wait_healthy(namespace, "own", 1)
    assert kubectl("-n", namespace, "get", "secret", "own-app", check=False).returncode != 0


def test_plugin_backups_and_scheduled_backups(operator, namespace):
    operator_ns = operator[0]
    spec = {"instances": 1, "plugins": [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
                                         "parameters": {"barmanObjectName": "store"}}]}
    apply(namespace, pg_cluster("bk", **spec))
    st = wait_for("unknown plugin phase", lambda: re.match("Cluster cannot proceed", status_of(namespace, "bk").get("phase", ""))
                  and status_of(namespace, "bk"))
    assert "barman-cloud.cloudnative-pg.io" in st["phaseReason"]
    # A plugin announces itself with a labelled Service in the operator's namespace.
    apply(operator_ns, {"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": f"barman-cloud-{namespace}",
                                     "labels": {"cnpg.io/pluginName": "barman-cloud.cloudnative-pg.io"}},
                        "spec": {"ports": [{"port": 9090}]}})
    try:
        wait_healthy(namespace, "bk", 1)
        apply(namespace, {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup", "metadata": {"name": "once"},
                          "spec": {"cluster": {"name": "bk"}, "method": "plugin",
                                   "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"}}})
        apply(namespace, {"apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup", "metadata": {"name": "daily"},
                          "spec": {"schedule": "0 0 2 * * *", "immediate": True, "backupOwnerReference": "self",
                                   "cluster": {"name": "bk"}, "method": "plugin",
                                   "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"}}})
        done = wait_for("backup completed", lambda: (get(namespace, "backup", "once").get("status") or {}).get("phase")
                        == "completed" and get(namespace, "backup", "once")["status"])
        assert re.fullmatch(r"\d{8}T\d{6}", done["backupId"]) and done["startedAt"] <= done["stoppedAt"]
        sched = wait_for("lastScheduleTime", lambda: (get(namespace, "scheduledbackup", "daily").get("status") or {})
                         .get("lastScheduleTime") and get(namespace, "scheduledbackup", "daily")["status"])
        assert sched["nextScheduleTime"].endswith("T02:00:00Z")
        child, = get(namespace, "backups", "-l", "cnpg.io/scheduled-backup=daily")["items"]
        assert child["metadata"]["labels"]["cnpg.io/immediateBackup"] == "true"
        wait_for("scheduled backup completed", lambda: (get(namespace, "backup", child["metadata"]["name"]).get("status")
                                                        or {}).get("phase") == "completed")
        conditions = {c["type"]: c for c in status_of(namespace, "bk")["conditions"]}
        assert conditions["LastBackupSucceeded"]["status"] == "True"

        apply(namespace, {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
                          "metadata": {"name": "bad", "annotations": {"localenv.langfuse-ops.io/fail": "true"}},
                          "spec": {"cluster": {"name": "bk"}, "method": "plugin",
                                   "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"}}})
        wait_for("backup failed", lambda: (get(namespace, "backup", "bad").get("status") or {}).get("phase") == "failed")
    finally:
        kubectl("-n", operator_ns, "delete", "service", f"barman-cloud-{namespace}", check=False)
