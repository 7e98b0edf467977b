"""install.yml with clickhouse_operator_mode: official (ClickHouse/clickhouse-operator) on the local control plane.

The operator chart cannot be pulled here (no internet; its image could not run on KWOK anyway): a minimal
chart of our own, written below, stands in for oci://ghcr.io/clickhouse/clickhouse-operator-helm. It carries
the manager Deployment with the labels of upstream's dist/chart/templates/manager/manager.yaml, which is what
the stand-in reconciler (tests/standins/clickhouse_official_operator.py) waits for before it plays the
operator; the CRDs are our minimal ones (tests/localenv/manifests/crds/clickhouse-com-*.yaml).

One converge into a namespace of its own, the checks on what it made, then a re-run that must change nothing.
"""
import base64
import json
import re
import uuid

import pytest

from conftest import REPO, kubectl, playbook, run

CHART_VERSION = "0.0.5"
CHART_YAML = f"""apiVersion: v2
name: clickhouse-operator-helm
version: {CHART_VERSION}
appVersion: v{CHART_VERSION}
description: Local stand-in of the ClickHouse operator chart (the manager Deployment only).
"""
MANAGER_YAML = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-controller-manager
  namespace: {{ .Release.Namespace }}
  labels:
    app.kubernetes.io/name: clickhouse-operator
    app.kubernetes.io/instance: {{ .Release.Name }}
    control-plane: controller-manager
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: clickhouse-operator, control-plane: controller-manager}
  template:
    metadata:
      labels: {app.kubernetes.io/name: clickhouse-operator, control-plane: controller-manager}
      annotations:
        localenv.langfuse-ops.io/webhook-enabled: {{ .Values.webhook.enable | quote }}
    spec:
      containers:
        - name: manager
          image: "{{ .Values.manager.image.repository }}:{{ .Values.manager.image.tag | default .Chart.AppVersion }}"
"""
VALUES_YAML = """manager:
  image:
    repository: ghcr.io/clickhouse/clickhouse-operator
webhook:
  enable: true
certManager:
  enable: true
"""


def recap(output):
    match = re.search(r"localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, output[-3000:]
    return {"ok": int(match[1]), "changed": int(match[2]), "failed": int(match[4])}


def get(namespace, kind, name=None, selector=None):
    args = ["-n", namespace, "get", kind] + ([name] if name else []) + (["-l", selector] if selector else [])
    return json.loads(kubectl(*args, "-o", "json").stdout)


def condition(obj, kind):
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


@pytest.fixture(scope="module")
def chart(tmp_path_factory):
    root = tmp_path_factory.mktemp("official-chart") / "clickhouse-operator-helm"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(CHART_YAML)
    (root / "values.yaml").write_text(VALUES_YAML)
    (root / "templates" / "manager.yaml").write_text(MANAGER_YAML)
    return root


def variables(namespace, operator_namespace, chart):
    return {
        "langfuse_namespace": namespace,
        "clickhouse_operator_mode": "official",
        # The operator's ClickHouse and Keeper pods get no security contexts from the collection (nor from the operator,
        # which passes its podTemplate through): Pod Security "restricted", which inventories/local enforces, refuses them.
        "namespace_secrets_pod_security_level": "baseline",
        "clickhouse_operator_official_chart_ref": str(chart),
        "clickhouse_operator_official_chart_version": CHART_VERSION,
        "clickhouse_operator_official_namespace": operator_namespace,
        # No cert-manager here: the operator's webhooks off, as upstream's chart allows.
        "clickhouse_operator_official_values": {"webhook": {"enable": False}, "certManager": {"enable": False}},
        "clickhouse_operator_image": "clickhouse/clickhouse-server:26.4",
        "clickhouse_operator_keeper_image": "clickhouse/clickhouse-keeper:26.4",
        "clickhouse_operator_storage_class": "standard",
        "clickhouse_operator_storage_size": "1Gi",
        "clickhouse_operator_keeper_storage_size": "1Gi",
        "clickhouse_operator_resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "clickhouse_operator_keeper_resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        "clickhouse_operator_wait_timeout": 120,
        # The migration gate reads ClickHouse from this machine; the in-cluster Service does not resolve here.
        "langfuse_helm_migrations_gate": "none",
        "observability_enabled": True,
    }


@pytest.fixture(scope="module")
def official(cluster, services, chart):
    namespace = f"it-chof-{uuid.uuid4().hex[:6]}"
    operator_namespace = f"chop-{uuid.uuid4().hex[:6]}"
    extra = variables(namespace, operator_namespace, chart)
    first = playbook("install", extra)
    try:
        assert first.returncode == 0, first.stdout[-6000:]
        yield namespace, operator_namespace, extra, first.stdout
    finally:
        run("helm", "uninstall", "langfuse", "-n", namespace, "--wait", check=False)
        run("helm", "uninstall", "clickhouse-operator", "-n", operator_namespace, "--wait", check=False)
        kubectl("delete", "namespace", namespace, operator_namespace, "--wait=false", check=False)


def test_operator_chart_is_the_pinned_release(official):
    operator_namespace, extra = official[1], official[2]
    release = json.loads(run("helm", "list", "-n", operator_namespace, "-o", "json").stdout)[0]
    assert (release["name"], release["chart"], release["status"]) == (
        "clickhouse-operator", f"clickhouse-operator-helm-{extra['clickhouse_operator_official_chart_version']}", "deployed")
    deploy = get(operator_namespace, "deployment", "clickhouse-operator-controller-manager")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"ghcr.io/clickhouse/clickhouse-operator:v{extra['clickhouse_operator_official_chart_version']}")
    assert deploy["spec"]["template"]["metadata"]["annotations"]["localenv.langfuse-ops.io/webhook-enabled"] == "false"


def test_keeper_and_clickhouse_clusters_are_rendered_from_the_role_variables(official):
    namespace, extra = official[0], official[2]
    keeper = get(namespace, "keeperclusters.clickhouse.com", "langfuse")
    chc = get(namespace, "clickhouseclusters.clickhouse.com", "langfuse")
    repo, tag = extra["clickhouse_operator_keeper_image"].split(":")
    assert keeper["spec"]["replicas"] == 3
    assert keeper["spec"]["containerTemplate"]["image"] == {"repository": repo, "tag": tag}
    assert keeper["spec"]["containerTemplate"]["resources"] == extra["clickhouse_operator_keeper_resources"]
    assert keeper["spec"]["dataVolumeClaimSpec"]["storageClassName"] == "standard"
    assert keeper["spec"]["dataVolumeClaimSpec"]["resources"]["requests"]["storage"] == "1Gi"
    repo, tag = extra["clickhouse_operator_image"].split(":")
    assert (chc["spec"]["replicas"], chc["spec"]["shards"], chc["spec"]["keeperClusterRef"]) == (3, 1, {"name": "langfuse"})
    assert chc["spec"]["containerTemplate"]["image"] == {"repository": repo, "tag": tag}
    assert chc["spec"]["containerTemplate"]["resources"] == extra["clickhouse_operator_resources"]
    # The Langfuse user is the operator's `default` user, its password the ClickHouse credentials Secret.
    assert chc["spec"]["settings"]["defaultUserPassword"] == {
        "passwordType": "password", "secret": {"name": "langfuse-clickhouse", "key": "password"}}


def test_readiness_is_what_the_operator_reports(official):
    namespace = official[0]
    for kind, replicas in (("keeperclusters.clickhouse.com", 3), ("clickhouseclusters.clickhouse.com", 3)):
        obj = get(namespace, kind, "langfuse")
        status = obj["status"]
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        assert condition(obj, "Ready")["status"] == "True"
        assert condition(obj, "Ready")["observedGeneration"] == obj["metadata"]["generation"]
        assert status["readyReplicas"] == replicas
        assert status["currentRevision"] == status["updateRevision"] != ""


def test_statefulsets_and_services_have_the_operators_names(official):
    namespace = official[0]
    sts = get(namespace, "statefulsets")["items"]
    names = sorted(s["metadata"]["name"] for s in sts)
    assert names == sorted([f"langfuse-clickhouse-0-{i}" for i in range(3)] + [f"langfuse-keeper-{i}" for i in range(3)])
    assert all(s["status"].get("readyReplicas") == 1 for s in sts)
    services = {s["metadata"]["name"]: s for s in get(namespace, "services")["items"]}
    ch = services["langfuse-clickhouse-headless"]["spec"]
    assert ch["clusterIP"] == "None" and {p["name"]: p["port"] for p in ch["ports"]}["http"] == 8123
    assert {p["name"]: p["port"] for p in ch["ports"]}["tcp"] == 9000
    assert "langfuse-keeper-headless" in services


def test_langfuse_and_backups_use_the_operators_service(official):
    namespace = official[0]
    values = json.loads(run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout)
    assert values["clickhouse"]["host"] == "langfuse-clickhouse-headless"
    assert values["clickhouse"]["auth"]["username"] == "default"
    assert values["clickhouse"]["cluster"]["enabled"] is True  # chart 2.x's key (1.5's clusterEnabled)
    cronjobs = get(namespace, "cronjobs")["items"]
    envs = [e for cj in cronjobs for c in cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", []) if e["name"] == "CLICKHOUSE_URL"]
    assert envs and all(e["value"] == "http://langfuse-clickhouse-headless:8123" for e in envs)


def test_monitoring_scrapes_the_operators_pods(official):
    namespace = official[0]
    monitors = {m["metadata"]["name"]: m["spec"] for m in get(namespace, "podmonitors.monitoring.coreos.com")["items"]}
    for name, app in (("langfuse-clickhouse", "langfuse-clickhouse"), ("langfuse-clickhouse-keeper", "langfuse-keeper")):
        selector = ",".join(f"{k}={v}" for k, v in monitors[name]["selector"]["matchLabels"].items())
        selected = get(namespace, "pods", selector=selector)["items"]
        assert selected and all(p["metadata"]["labels"]["app"] == app for p in selected)
        ports = {p["name"] for p in selected[0]["spec"]["containers"][0]["ports"]}
        assert monitors[name]["podMetricsEndpoints"][0]["port"] in ports


def test_no_secret_in_the_output(official, services):
    output = official[3]
    data = get(official[0], "secret", "langfuse-clickhouse")["data"]
    assert base64.b64decode(data["password"]).decode() not in output


def test_second_run_changes_nothing(official):
    namespace, operator_namespace, extra = official[:3]
    again = playbook("install", extra)
    assert again.returncode == 0, again.stdout[-6000:]
    assert recap(again.stdout)["changed"] == 0, "\n".join(
        line for line in again.stdout.splitlines() if line.startswith("changed:"))


@pytest.mark.parametrize("override, expected", [
    ({"clickhouse_operator_username": "langfuse"}, ["clickhouse_operator_username", "default"]),
    ({"clickhouse_operator_keeper_replicas": 2}, ["clickhouse_operator_keeper_replicas", "1, 3 or 5"]),
    ({"clickhouse_operator_official_chart_version": "latest"}, ["clickhouse_operator_official_chart_version", "0.0.5"]),
])
def test_official_mode_refuses_bad_inputs(cluster, services, chart, override, expected):
    namespace = f"it-chof-bad-{uuid.uuid4().hex[:6]}"
    proc = playbook("install", {**variables(namespace, "chop-unused", chart), **override})
    try:
        assert proc.returncode != 0
        for text in expected:
            assert text in proc.stdout, proc.stdout[-3000:]
        assert kubectl("get", "namespace", namespace, check=False).returncode != 0, "a refused run changed nothing"
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


ROLE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: langfuse_ops.platform.clickhouse_operator
"""
NEVER_READY = "localenv.langfuse-ops.io/never-ready"  # KWOK keeps pods with this label not Ready (kwok_config.py)


def run_role(tmp_path, namespace, name, **overrides):
    """The role alone (operator managed elsewhere: the fixture's), for one small cluster named `name`."""
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE_PLAYBOOK)
    variables = {"clickhouse_operator_mode": "official", "clickhouse_operator_install_operator": False,
                 "clickhouse_operator_namespace": namespace, "clickhouse_operator_installation_name": name,
                 "clickhouse_operator_replicas": 1, "clickhouse_operator_keeper_replicas": 1,
                 "clickhouse_operator_storage_class": "standard", "clickhouse_operator_storage_size": "1Gi",
                 "clickhouse_operator_keeper_storage_size": "1Gi", "clickhouse_operator_wait_timeout": 15,
                 "ansible_python_interpreter": "{{ ansible_playbook_python }}", **overrides}
    return run("ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook), "-e", json.dumps(variables),
               check=False, cwd=REPO, timeout=600)


def test_a_keeper_that_never_gets_ready_fails_the_run_and_says_why(official, namespace, tmp_path):
    # Labels on the KeeperCluster (which the role leaves alone) reach its pods: KWOK never makes them Ready.
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "clickhouse.com/v1alpha1", "kind": "KeeperCluster", "metadata": {"name": "stuck", "namespace": namespace},
        "spec": {"replicas": 1, "labels": {NEVER_READY: "true"}}}))
    proc = run_role(tmp_path, namespace, "stuck")
    assert proc.returncode != 0
    assert f"KeeperCluster {namespace}/stuck is not Ready after 15s (clickhouse_operator_wait_timeout)" in proc.stdout, \
        proc.stdout[-3000:]
    assert "readyReplicas 0 of 1" in proc.stdout and "Ready False" in proc.stdout
    # It stopped at Keeper: no ClickHouseCluster was made.
    assert kubectl("-n", namespace, "get", "clickhouseclusters.clickhouse.com", "stuck", check=False).returncode != 0


def test_a_spec_the_operator_refuses_fails_at_once_with_its_message(official, namespace, tmp_path):
    # A password source the role does not set (configMap) stays beside the role's secret: exactly one is allowed.
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "clickhouse.com/v1alpha1", "kind": "ClickHouseCluster", "metadata": {"name": "both", "namespace": namespace},
        "spec": {"replicas": 1, "keeperClusterRef": {"name": "both"},
                 "settings": {"defaultUserPassword": {"configMap": {"name": "x", "key": "password"}}}}}))
    proc = run_role(tmp_path, namespace, "both", clickhouse_operator_wait_timeout=300)
    assert proc.returncode != 0
    assert (f"The operator refuses ClickHouseCluster {namespace}/both (SpecValid False): "
            "exactly one of secret or configMap must be specified") in proc.stdout, proc.stdout[-3000:]
    # Keeper got Ready first: the refusal is the ClickHouseCluster's.
    keeper = get(namespace, "keeperclusters.clickhouse.com", "both")
    assert condition(keeper, "Ready")["status"] == "True"
