"""The Altinity clickhouse-operator stand-ins behave like the real operator 0.25.6.

What they stand in for: the official `altinity-clickhouse-operator` Helm chart
0.25.6 (its four CRDs, the operator Deployment, ServiceAccount and RBAC) and
the operator's reconciler, which KWOK cannot run. The stand-ins are
tests/standins/charts/altinity-clickhouse-operator-0.25.6 and
tests/standins/altinity_operator.py (started by tests/localenv/cluster.sh, or
here if the running cluster predates it).

Each test installs the stand-in chart as roles/clickhouse_operator does (its
release values, plus a config.yaml that makes this operator the one for the
test's namespace and shortens the StatefulSet timeout to a few seconds), then
applies the ClickHouseKeeperInstallation and ClickHouseInstallation rendered
from the role's own templates, and checks what the real operator would do:
object names, labels, ports and owner references, and the status the role
waits on - including the real operator's quirks (Completed drops the hosts*
counters; Keeper never reports a taskID; an unchanged spec starts nothing).
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import REPO, kubectl, run

CHART = REPO / "tests" / "standins" / "charts" / "altinity-clickhouse-operator-0.25.6"
ROLE = REPO / "roles" / "clickhouse_operator"
STANDIN = REPO / "tests" / "standins" / "altinity_operator.py"
STATE = Path(os.environ.get("LOCALENV_STATE", "/tmp/langfuse-ops-localenv"))
STS_TIMEOUT = 4  # the test operator's reconcile.statefulSet.update.timeout
ABORT = "localenv.langfuse-ops.io/abort"
NEVER_READY = "localenv.langfuse-ops.io/never-ready"
CHI_API, CHK_API = "clickhouse.altinity.com/v1", "clickhouse-keeper.altinity.com/v1"

RENDER_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars_files: ["{{ role_dir }}/defaults/main.yml"]
  tasks:
    - name: Render Keeper and the ClickHouseInstallation as roles/clickhouse_operator/tasks/operator.yml does
      vars:
        _chi: "{{ lookup('ansible.builtin.template', role_dir + '/templates/installation.yml.j2') | from_yaml }}"
        _task_id: "langfuse-ops-{{ (_chi | to_json | hash('sha256'))[:16] }}"
      ansible.builtin.copy:
        dest: "{{ out_file }}"
        content: >-
          {{ {'chk': lookup('ansible.builtin.template', role_dir + '/templates/keeper.yml.j2') | from_yaml,
              'chi': _chi | combine({'spec': {'taskID': _task_id}}, recursive=True)} | to_json }}
        mode: "0600"
"""


# --- helpers -----------------------------------------------------------------

def render(namespace, **role_vars):
    """The CHK and CHI the role's templates render (CHI with the role's spec-hash taskID)."""
    variables = {"clickhouse_operator_namespace": namespace, "clickhouse_operator_storage_class": "standard",
                 "clickhouse_operator_storage_size": "1Gi", "clickhouse_operator_keeper_storage_size": "1Gi",
                 "clickhouse_operator_resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                 "role_dir": str(ROLE), "ansible_python_interpreter": "{{ ansible_playbook_python }}", **role_vars}
    with tempfile.TemporaryDirectory() as tmp:
        playbook, out = Path(tmp) / "render.yml", Path(tmp) / "objects.json"
        playbook.write_text(RENDER_PLAYBOOK)
        run("ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook),
            "-e", json.dumps({**variables, "out_file": str(out)}), cwd=REPO)
        objects = json.loads(out.read_text())
    return objects["chk"], objects["chi"]


def apply(obj, *args, **kwargs):
    return run("kubectl", "apply", "-f", "-", *args, input=json.dumps(obj), **kwargs)


def get(namespace, kind, name):
    return json.loads(kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)


def wait_status(namespace, kind, name, status, timeout=60, task_id=None):
    """Polls until status.status (and status.taskID, if given) match; returns the object."""
    deadline = time.monotonic() + timeout
    while True:
        obj = get(namespace, kind, name)
        st = obj.get("status") or {}
        if st.get("status") == status and (task_id is None or st.get("taskID") == task_id):
            return obj
        assert time.monotonic() < deadline, f"{kind}/{name} never reached {status} {task_id or ''}: {st}"
        time.sleep(0.3)


class StatusWatch:
    """Every status a CR goes through (kubectl get -w), to see InProgress -> Completed."""

    def __init__(self, namespace, kind, name):
        self.proc = subprocess.Popen(
            ["kubectl", "-n", namespace, "get", kind, "--field-selector", f"metadata.name={name}", "-w", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.out = []
        # Read as kubectl prints: statuses() waits for the last state the test saw, since the watch may be behind
        # the read that saw it (a loaded machine), and stopping kubectl then would cut the events still to come.
        self.reader = threading.Thread(target=lambda: self.out.extend(iter(lambda: self.proc.stdout.read(1), "")),
                                       daemon=True)
        self.reader.start()
        time.sleep(0.5)  # let the watch start before the change it should see

    def _decoded(self):
        text, decoder, pos, seen = "".join(self.out), json.JSONDecoder(), 0, []
        while pos < len(text.strip()):
            while text[pos].isspace():
                pos += 1
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break  # an object kubectl is still printing
            seen.append(obj.get("status") or {})
        return seen

    def statuses(self, last="Completed", timeout=60):
        """Every status seen, once the watch has printed one whose status is `last` (or after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(s.get("status") == last for s in self._decoded()):
            time.sleep(0.2)
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        return self._decoded()


def sts_names(namespace, selector):
    items = json.loads(kubectl("-n", namespace, "get", "statefulsets", "-l", selector, "-o", "json").stdout)["items"]
    return sorted(s["metadata"]["name"] for s in items)


# --- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="session")
def standin_operator(cluster):
    """The stand-in reconciler, started like cluster.sh's start_standin if it is not running."""
    pid_file = STATE / "standin-altinity-operator.pid"
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
        return
    except (OSError, ValueError):
        pass
    python = REPO / ".venv" / "bin" / "python"
    log = open(STATE / "standin-altinity-operator.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([str(python if python.exists() else sys.executable), str(STANDIN)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "KUBECONFIG": os.environ["KUBECONFIG"]})
    pid_file.write_text(f"{proc.pid}\n")


@pytest.fixture(scope="module")
def operator(cluster, standin_operator):
    """A namespace with the stand-in chart installed the way the role installs it."""
    suffix = uuid.uuid4().hex[:8]
    namespace, release = f"t-alt-{suffix}", f"chop-{suffix}"  # the official chart does not shorten <fullname>-metrics: stay under 63
    values = {
        # What roles/clickhouse_operator/tasks/operator.yml passes as release_values.
        "crdHook": {"enabled": False},
        "operator": {"image": {"tag": "0.25.6"}},
        "metrics": {"image": {"tag": "0.25.6"}},
        # This operator is the one for this namespace, and gives up on a StatefulSet after a few seconds.
        "configs": {"files": {"config.yaml": {"watch": {"namespaces": [namespace]},
                                              "reconcile": {"statefulSet": {"update": {"timeout": STS_TIMEOUT}}}}}},
    }
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(values, f)
            f.flush()
            run("helm", "install", release, str(CHART), "-n", namespace, "--create-namespace",
                "-f", f.name, "--wait", "--timeout", "2m", timeout=180)
        # Helm creates CRDs only when they are missing: make the cluster's match this chart's files
        # (what the official chart's CRD hook does with kubectl apply --server-side).
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
        yield namespace, release
    finally:
        # CHIs carry the operator's finalizer: delete them while the operator is still there.
        kubectl("-n", namespace, "delete", "chi,chk", "--all", "--wait", "--timeout=60s", check=False)
        run("helm", "uninstall", release, "-n", namespace, "--wait", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --- the chart ---------------------------------------------------------------

def test_chart_installs_operator_objects_named_as_upstream(operator):
    # The role's release is "clickhouse-operator"; a unique one here keeps the cluster-scoped RBAC apart.
    namespace, release = operator
    full = f"{release}-altinity-clickhouse-operator"
    (listed,) = json.loads(run("helm", "list", "-n", namespace, "-o", "json").stdout)
    assert (listed["chart"], listed["app_version"], listed["status"]) == ("altinity-clickhouse-operator-0.25.6", "0.25.6", "deployed")
    deploy = get(namespace, "deployment", full)
    assert deploy["status"]["readyReplicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert deploy["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "altinity-clickhouse-operator",
                                                         "app.kubernetes.io/instance": release}
    containers = {c["name"]: c for c in deploy["spec"]["template"]["spec"]["containers"]}
    assert containers["altinity-clickhouse-operator"]["image"] == "altinity/clickhouse-operator:0.25.6"
    assert containers["altinity-clickhouse-operator"]["ports"] == [{"name": "op-metrics", "containerPort": 9999, "protocol": "TCP"}]
    assert containers["metrics-exporter"]["image"] == "altinity/metrics-exporter:0.25.6"
    assert containers["metrics-exporter"]["ports"] == [{"name": "ch-metrics", "containerPort": 8888, "protocol": "TCP"}]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == full
    get(namespace, "serviceaccount", full)
    get(namespace, "secret", full)
    assert [p["port"] for p in get(namespace, "service", f"{full}-metrics")["spec"]["ports"]] == [8888, 9999]
    binding = json.loads(kubectl("get", "clusterrolebinding", full, "-o", "json").stdout)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": full}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": full, "namespace": namespace}]
    rules = json.loads(kubectl("get", "clusterrole", full, "-o", "json").stdout)["rules"]
    assert {"apiGroups": ["clickhouse.altinity.com"], "resources": ["clickhouseinstallations/status",
            "clickhouseinstallationtemplates/status", "clickhouseoperatorconfigurations/status"],
            "verbs": ["get", "update", "patch", "create", "delete"]} in rules
    # crdHook.enabled=false (the role's setting): no hook Job with its unpinned bitnami/kubectl:latest.
    assert json.loads(kubectl("-n", namespace, "get", "jobs", "-o", "json").stdout)["items"] == []


def test_crds_have_upstream_names_versions_and_status_subresource(operator):
    expected = {
        "clickhouseinstallations.clickhouse.altinity.com": ("ClickHouseInstallation", ["chi"], True),
        "clickhouseinstallationtemplates.clickhouse.altinity.com": ("ClickHouseInstallationTemplate", ["chit"], True),
        "clickhouseoperatorconfigurations.clickhouse.altinity.com": ("ClickHouseOperatorConfiguration", ["chopconf"], False),
        "clickhousekeeperinstallations.clickhouse-keeper.altinity.com": ("ClickHouseKeeperInstallation", ["chk"], True),
    }
    for name, (kind, short, status_subresource) in expected.items():
        crd = json.loads(kubectl("get", "crd", name, "-o", "json").stdout)
        assert crd["spec"]["names"]["kind"] == kind and crd["spec"]["names"]["shortNames"] == short
        assert crd["spec"]["scope"] == "Namespaced"
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        assert ("status" in version.get("subresources", {})) is status_subresource
        assert "0.25.6" in crd["metadata"]["labels"].values()


def test_crds_accept_what_the_role_renders_and_reject_what_upstream_rejects(operator):
    namespace = operator[0]
    chk, chi = render(namespace)
    for obj in (chk, chi):
        # --validate=strict (the default): unknown fields would fail, as with the official CRDs.
        apply(obj, "--dry-run=server")
    typo = json.loads(json.dumps(chi))
    typo["spec"]["configuration"]["clusters"][0]["layout"] = {"shardCount": 1, "replicasCount": 3}
    proc = apply(typo, "--dry-run=server", check=False)
    assert proc.returncode != 0 and 'unknown field "spec.configuration.clusters[0].layout.shardCount"' in proc.stderr
    long_name = json.loads(json.dumps(chi))
    long_name["spec"]["configuration"]["clusters"][0]["name"] = "a-cluster-name-too-long"
    proc = apply(long_name, "--dry-run=server", check=False)
    assert proc.returncode != 0 and "spec.configuration.clusters[0].name" in proc.stderr
    bad_policy = json.loads(json.dumps(chi))
    bad_policy["spec"]["templates"]["volumeClaimTemplates"][0]["reclaimPolicy"] = "Keep"
    proc = apply(bad_policy, "--dry-run=server", check=False)
    assert proc.returncode != 0 and "reclaimPolicy" in proc.stderr


def test_status_is_a_subresource(operator):
    """Only the status endpoint writes status (what the roles' waits rely on); unknown status fields are pruned."""
    namespace = operator[0]
    chk = render(namespace, clickhouse_operator_installation_name="substatus", clickhouse_operator_keeper_replicas=1)[0]
    chk["metadata"]["annotations"] = {ABORT: "true"}  # keep the stand-in's own status out of the way: it aborts
    apply(chk)
    wait_status(namespace, "chk", "substatus", "Aborted")
    # A status sent with the object is ignored...
    kubectl("-n", namespace, "patch", "chk", "substatus", "--type=merge", "-p", json.dumps({"status": {"status": "Completed"}}))
    assert get(namespace, "chk", "substatus")["status"]["status"] == "Aborted"
    # ...the status subresource takes it, and prunes what the official schema does not know.
    kubectl("-n", namespace, "patch", "chk", "substatus", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"status": "Completed", "hostsCompleted": 1, "hostsFailed": 1}}))
    status = get(namespace, "chk", "substatus")["status"]
    assert status["status"] == "Completed" and status["hostsCompleted"] == 1 and "hostsFailed" not in status


# --- the reconciler ----------------------------------------------------------

def test_keeper_and_clickhouse_come_up_as_the_operator_makes_them(operator):
    namespace = operator[0]
    chk, chi = render(namespace)
    task_id = chi["spec"]["taskID"]

    watch = StatusWatch(namespace, "chk", "langfuse")
    apply(chk)
    keeper = wait_status(namespace, "chk", "langfuse", "Completed")
    seen = [s.get("status") for s in watch.statuses()]
    assert "InProgress" in seen and seen[-1] == "Completed"
    st = keeper["status"]
    # Keeper: the operator never sets status.taskID; "" is what it pushes to the taskID lists.
    assert "taskID" not in st and st["taskIDsStarted"] == [""] and st["taskIDsCompleted"] == [""]
    assert (st["clusters"], st["shards"], st["hosts"]) == (1, 1, 3)
    assert st["endpoint"] == f"keeper-langfuse.{namespace}.svc.cluster.local"
    assert st["pods"] == [f"chk-langfuse-keeper-0-{i}-0" for i in range(3)]
    assert st["chop-version"] == "0.25.6" and st["chop-ip"]
    # Completed is written from a freshly normalized CR: no hosts* counters at all.
    assert not [k for k in st if k.startswith("hosts") and k != "hosts"]
    assert sts_names(namespace, "clickhouse-keeper.altinity.com/chk=langfuse") == [f"chk-langfuse-keeper-0-{i}" for i in range(3)]
    keeper_svc = get(namespace, "service", "keeper-langfuse")
    assert [(p["name"], p["port"]) for p in keeper_svc["spec"]["ports"]] == [("zk", 2181), ("raft", 9444)]
    assert keeper_svc["spec"]["clusterIP"] == "None"
    # CHI's zookeeper nodes (chk-langfuse-keeper-0-<i>:2181) resolve through the per-host Services.
    for node in chi["spec"]["configuration"]["zookeeper"]["nodes"]:
        svc = get(namespace, "service", node["host"])
        assert node["port"] in [p["port"] for p in svc["spec"]["ports"]]

    watch = StatusWatch(namespace, "chi", "langfuse")
    apply(chi)
    installed = wait_status(namespace, "chi", "langfuse", "Completed", task_id=task_id)
    seen = watch.statuses()
    in_progress = [s for s in seen if s.get("status") == "InProgress"]
    assert in_progress and all(s["taskID"] == task_id for s in in_progress)
    assert max(s.get("hostsCompleted", 0) for s in in_progress) == 3  # one write per host, then Completed drops it
    assert [s.get("status") for s in seen][-1] == "Completed"
    st = installed["status"]
    assert st["taskIDsStarted"] == [task_id] and st["taskIDsCompleted"] == [task_id]
    assert (st["clusters"], st["shards"], st["hosts"]) == (1, 1, 3)
    assert st["endpoint"] == f"clickhouse-langfuse.{namespace}.svc.cluster.local"
    assert st["fqdns"] == [f"chi-langfuse-default-0-{i}.{namespace}.svc.cluster.local" for i in range(3)]
    assert not [k for k in st if k.startswith("hosts") and k != "hosts"] and "error" not in st

    names = sts_names(namespace, "clickhouse.altinity.com/chi=langfuse")
    assert names == [f"chi-langfuse-default-0-{i}" for i in range(3)]
    sts = get(namespace, "statefulset", "chi-langfuse-default-0-1")
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == "chi-langfuse-default-0-1"
    assert sts["status"]["readyReplicas"] == 1
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for key, value in {"clickhouse.altinity.com/chi": "langfuse", "clickhouse.altinity.com/cluster": "default",
                       "clickhouse.altinity.com/shard": "0", "clickhouse.altinity.com/replica": "1",
                       "clickhouse.altinity.com/app": "chop", "clickhouse.altinity.com/namespace": namespace,
                       "clickhouse.altinity.com/ready": "yes", "app.kubernetes.io/part-of": "langfuse"}.items():
        assert labels[key] == value
    (owner,) = sts["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ClickHouseInstallation", "langfuse", installed["metadata"]["uid"], True)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "clickhouse" and container["image"] == "clickhouse/clickhouse-server:26.4"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "prometheus": 9363, "tcp": 9000, "http": 8123, "interserver": 9009}
    assert {"name": "data", "mountPath": "/var/lib/clickhouse"} in container["volumeMounts"]
    assert {"name": "CONFIGURATION_USERS_LANGFUSE_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "langfuse-clickhouse", "key": "password"}}} in container["env"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["storageClassName"] == "standard"
    assert claim["metadata"]["labels"]["clickhouse.altinity.com/reclaimPolicy"] == "Retain"
    assert sts["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"

    svc = get(namespace, "service", "clickhouse-langfuse")
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8123), ("tcp", 9000)]
    assert svc["spec"]["selector"] == {"clickhouse.altinity.com/app": "chop", "clickhouse.altinity.com/chi": "langfuse",
                                       "clickhouse.altinity.com/namespace": namespace, "clickhouse.altinity.com/ready": "yes"}
    assert svc["metadata"]["ownerReferences"][0]["uid"] == installed["metadata"]["uid"]
    assert get(namespace, "pdb", "chi-langfuse-default")["spec"]["maxUnavailable"] == 1
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", "clickhouse.altinity.com/chi=langfuse", "-o", "json").stdout)
    assert sorted(p["metadata"]["name"] for p in pods["items"]) == st["pods"]


def test_unchanged_spec_starts_nothing_and_a_new_spec_is_a_new_task(operator):
    namespace = operator[0]
    chi = render(namespace, clickhouse_operator_installation_name="respec")[1]
    first = chi["spec"]["taskID"]
    apply(chi)
    wait_status(namespace, "chi", "respec", "Completed", task_id=first)

    # The role re-applies the same rendering: same taskID, no new generation, no reconcile.
    generation = get(namespace, "chi", "respec")["metadata"]["generation"]
    apply(chi)
    time.sleep(3)
    again = get(namespace, "chi", "respec")
    assert again["metadata"]["generation"] == generation and again["status"]["taskIDsStarted"] == [first]

    # A changed image and one replica less: a new spec hash, so a new taskID.
    changed = render(namespace, clickhouse_operator_installation_name="respec", clickhouse_operator_replicas=2,
                     clickhouse_operator_image="clickhouse/clickhouse-server:26.8")[1]
    second = changed["spec"]["taskID"]
    assert second != first
    watch = StatusWatch(namespace, "chi", "respec")
    apply(changed)
    done = wait_status(namespace, "chi", "respec", "Completed", task_id=second)
    seen = watch.statuses()
    assert any(s.get("status") == "InProgress" and s.get("taskID") == second for s in seen)
    assert any(s.get("hostsUpdated") == 2 and s.get("hostsDelete") == 1 for s in seen)
    assert done["status"]["taskIDsStarted"] == [second, first] and done["status"]["taskIDsCompleted"] == [second, first]
    assert done["status"]["hosts"] == 2
    assert sts_names(namespace, "clickhouse.altinity.com/chi=respec") == ["chi-respec-default-0-0", "chi-respec-default-0-1"]
    images = {get(namespace, "pod", f"chi-respec-default-0-{i}-0")["spec"]["containers"][0]["image"] for i in range(2)}
    assert images == {"clickhouse/clickhouse-server:26.8"}
    # reclaimPolicy Retain: the removed host's volume stays.
    get(namespace, "pvc", "data-chi-respec-default-0-2-0")


def test_abort_annotation_aborts_and_never_completes(operator):
    namespace = operator[0]
    chi = render(namespace, clickhouse_operator_installation_name="aborting")[1]
    chi["metadata"]["annotations"] = {ABORT: "true"}
    task_id = chi["spec"]["taskID"]
    apply(chi)
    aborted = wait_status(namespace, "chi", "aborting", "Aborted", task_id=task_id)
    st = aborted["status"]
    assert st["error"].startswith(f"FAILED to reconcile CR {namespace}/aborting, err: ")
    assert len(st["errors"]) == 1 and st["errors"][0].endswith(st["error"])
    assert st["taskIDsStarted"] == [task_id] and st["taskIDsCompleted"] == [task_id]
    time.sleep(3)
    assert get(namespace, "chi", "aborting")["status"]["status"] == "Aborted"
    # Re-applying the same spec is no new task: the operator does not retry, the status stays Aborted.
    apply(chi)
    time.sleep(3)
    assert get(namespace, "chi", "aborting")["status"]["taskIDsStarted"] == [task_id]

    # Annotation gone and a new taskID: reconciled and Completed; the old error stays in errors.
    del chi["metadata"]["annotations"]
    kubectl("-n", namespace, "annotate", "chi", "aborting", f"{ABORT}-")
    chi["spec"]["taskID"] = task_id + "-retry"
    apply(chi)
    done = wait_status(namespace, "chi", "aborting", "Completed", task_id=task_id + "-retry")
    assert "error" not in done["status"] and len(done["status"]["errors"]) == 1


def test_statefulset_timeouts_abort_updates_but_not_creates(operator):
    """reconcile.statefulSet: create.onFailure ignore, update.onFailure abort (the official defaults)."""
    namespace = operator[0]
    chi = render(namespace, clickhouse_operator_installation_name="stuck", clickhouse_operator_replicas=1)[1]
    chi["spec"]["templates"]["podTemplates"][0]["metadata"] = {"labels": {NEVER_READY: "true"}}
    apply(chi)
    # A new host that never gets Ready: counted as done after the timeout, and the CHI is Completed.
    created = wait_status(namespace, "chi", "stuck", "Completed", task_id=chi["spec"]["taskID"], timeout=STS_TIMEOUT + 30)
    assert created["status"]["hosts"] == 1
    assert get(namespace, "statefulset", "chi-stuck-default-0-0")["status"].get("readyReplicas", 0) == 0

    # An updated host that never gets Ready: Aborted after the timeout.
    chi["spec"]["templates"]["podTemplates"][0]["spec"]["containers"][0]["image"] = "clickhouse/clickhouse-server:26.8"
    chi["spec"]["taskID"] += "-update"
    apply(chi)
    aborted = wait_status(namespace, "chi", "stuck", "Aborted", task_id=chi["spec"]["taskID"], timeout=STS_TIMEOUT + 30)
    assert f"StatefulSet {namespace}/chi-stuck-default-0-0 not Ready" in aborted["status"]["error"]


def test_deleting_the_chi_removes_its_objects_and_keeps_retained_volumes(operator):
    namespace = operator[0]
    chi = render(namespace, clickhouse_operator_installation_name="gone", clickhouse_operator_replicas=1)[1]
    apply(chi)
    installed = wait_status(namespace, "chi", "gone", "Completed", task_id=chi["spec"]["taskID"])
    assert installed["metadata"]["finalizers"] == ["finalizer.clickhouseinstallation.altinity.com"]
    kubectl("-n", namespace, "delete", "chi", "gone", "--wait", "--timeout=60s")
    deadline = time.monotonic() + 60
    while sts_names(namespace, "clickhouse.altinity.com/chi=gone") or kubectl(
            "-n", namespace, "get", "service", "clickhouse-gone", check=False).returncode == 0:
        assert time.monotonic() < deadline, "the CHI's StatefulSets/Services outlived it"
        time.sleep(0.5)
    get(namespace, "pvc", "data-chi-gone-default-0-0-0")
