"""The pure parts of tests/localenv/job_runner.py: what it reads from KWOK's configuration, the admission
policy it applies, $(VAR) expansion and the Service-name -> local-server rewrite."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

LOCALENV = Path(__file__).resolve().parents[1] / "localenv"


def load(name):
    spec = importlib.util.spec_from_file_location(name, LOCALENV / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kwok_config = load("kwok_config")
job_runner = load("job_runner")
FORWARDS = '{"standin_web": 13000, "clickhouse_http": 18123, "clickhouse_tcp": 19000, "postgres": 15432}'


@pytest.fixture
def stage_dir(tmp_path):
    for rel in kwok_config.DEFAULT_STAGES:
        kind = "Node" if rel.startswith("node/") else "Pod" if rel.startswith("pod/") else "PersistentVolumeClaim"
        doc = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": Path(rel).stem},
               "spec": {"resourceRef": {"apiGroup": "v1", "kind": kind}, "selector": {"matchExpressions": []}}}
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(yaml.safe_dump(doc))
    return tmp_path


def cluster_config(stage_dir, tmp_path, enable_crds=True):
    """What kwokctl hands kwok-controller: our config's Stages and forwards, and the controller's flags."""
    out = tmp_path / "ours.yaml"
    kwok_config.main(str(stage_dir), "v1.37.2", "{}", FORWARDS, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    args = ["--manage-all-nodes=true"] + (["--enable-crds=Logs"] if enable_crds else [])
    docs[0] = {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokctlConfiguration",
               "components": [{"name": "kwok-controller", "args": args}]}
    path = tmp_path / "kwok.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_a_cluster_made_from_our_config_schedules_the_runners_pods_and_serves_their_logs(stage_dir, tmp_path):
    forwards, scheduled, logs = job_runner.read_kwok(cluster_config(stage_dir, tmp_path))
    assert scheduled and logs
    assert forwards == {3000: ("127.0.0.1", 13000), 3030: ("127.0.0.1", 13000), 8123: ("127.0.0.1", 18123),
                        9000: ("127.0.0.1", 19000), 5432: ("127.0.0.1", 15432)}


def test_a_cluster_from_before_the_runner_gets_its_pods_gated(stage_dir, tmp_path):
    path = cluster_config(stage_dir, tmp_path, enable_crds=False)
    path.write_text(path.read_text().replace(kwok_config.JOB_RUNNER_LABEL, "something-else"))
    scheduled, logs = job_runner.read_kwok(path)[1:]
    assert not scheduled and not logs


def test_the_admission_policy_labels_job_pods_of_known_images_in_opted_in_namespaces():
    images = job_runner.known_images()
    assert set(images.values()) == {"postgres", "aws-cli"}
    assert "docker.io/amazon/aws-cli" in images and "docker.io/library/postgres" in images
    policy, binding = job_runner.admission_policy(images, gate=False)
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchLabels": {job_runner.OPT_IN_LABEL: "true"}}
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE"]
    conditions = {c["name"]: c["expression"] for c in policy["spec"]["matchConditions"]}
    assert "r.kind == 'Job'" in conditions["owned-by-a-job"]
    assert json.dumps(sorted(images)) in conditions["every-image-known"]
    mutation = policy["spec"]["mutations"][0]["applyConfiguration"]["expression"]
    assert f'"{job_runner.JOB_RUNNER_LABEL}": "true"' in mutation and "schedulingGates" not in mutation
    gated = job_runner.admission_policy(images, gate=True)[0]["spec"]["mutations"][0]["applyConfiguration"]["expression"]
    assert f'schedulingGates{{name: "{job_runner.JOB_RUNNER_LABEL}"}}' in gated


@pytest.mark.parametrize("image, repo", [
    ("docker.io/amazon/aws-cli:2.15.61", "docker.io/amazon/aws-cli"),
    ("docker.io/library/postgres@sha256:abc", "docker.io/library/postgres"),
    ("localhost:5000/postgres:17", "localhost:5000/postgres"),
    ("localhost:5000/postgres", "localhost:5000/postgres"),
])
def test_images_are_known_by_repository(image, repo):
    assert job_runner.repository(image) == repo


def test_var_expansion_follows_kubernetes():
    env = {"A": "1", "B": "two"}
    assert job_runner.expand("$(A)-$(B)", env) == "1-two"
    assert job_runner.expand("$(MISSING) $$(A) $$ $", env) == "$(MISSING) $(A) $ $"


def test_service_names_go_where_kwok_forwards_their_ports():
    services = {("langfuse-postgresql", "ns")}
    smap = job_runner.ServiceMap({3000: ("127.0.0.1", 13000), 5432: ("127.0.0.1", 15432)},
                                 lambda name, ns: (name, ns) in services)
    notes = []
    env = smap.rewrite({"LANGFUSE_HEALTH_URL": "http://langfuse-web.ns.svc:3000/api/public/health",
                        "CLICKHOUSE_URL": "http://clickhouse.ns.svc.cluster.local:8123",
                        "S3_ENDPOINT": "http://127.0.0.1:15000",
                        "PGHOST": "langfuse-postgresql", "PGPORT": "5432",
                        "OTHER": "plain"}, "ns", notes)
    # The stand-in Langfuse server learns the Service's namespace, as the Service would pick that namespace's pods.
    assert env == {"LANGFUSE_HEALTH_URL": "http://127.0.0.1:13000/api/public/health?localenv-namespace=ns",
                   "CLICKHOUSE_URL": "http://clickhouse.ns.svc.cluster.local:8123",  # no forward for 8123 here: left
                   "S3_ENDPOINT": "http://127.0.0.1:15000",
                   "PGHOST": "127.0.0.1", "PGPORT": "15432", "OTHER": "plain"}
    assert any("no local forward" in n and "CLICKHOUSE_URL" in n for n in notes)
    # A Service of the pod's namespace by its short name, a query already there.
    assert smap.rewrite({"U": "http://langfuse-web:3000/api/public/health?x=1"}, "ns", [])["U"] == "http://langfuse-web:3000/api/public/health?x=1"
    services.add(("langfuse-web", "other"))
    assert (smap.rewrite({"U": "http://langfuse-web:3000/api/public/health?x=1"}, "other", [])["U"]
            == "http://127.0.0.1:13000/api/public/health?x=1&localenv-namespace=other")


def test_the_aws_cli_venv_stays_visible_under_a_volume_mounted_above_it(tmp_path):
    """CI clones the repository under /tmp and the backup pods mount an emptyDir at /tmp: the venv (which must keep its
    own path, its scripts' shebangs name it) is mounted after the pod's volumes, or the emptyDir hides it."""
    venv = tmp_path / "clone" / ".build" / "awscli"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "aws").write_text("#!/bin/sh\n")
    runner = job_runner.Runner.__new__(job_runner.Runner)
    runner.aws, runner.tools = venv / "bin" / "aws", tmp_path / "tools"
    runner.images = {"docker.io/amazon/aws-cli": "aws-cli"}
    pod = {"metadata": {"name": "backup", "namespace": "ns"},
           "spec": {"containers": [{"name": "upload", "image": "docker.io/amazon/aws-cli:2.31.0", "command": ["aws", "--version"],
                                    "volumeMounts": [{"name": "tmp", "mountPath": str(tmp_path)}]}]}}
    run = job_runner.PodRun.__new__(job_runner.PodRun)
    run.runner, run.pod, run.name, run.dir = runner, pod, "backup", tmp_path / "run"
    spec = run.sandbox_spec(pod["spec"]["containers"][0], {"tmp": (tmp_path / "emptydir", False)}, {})
    order = [m["dst"] for m in spec["mounts"]]
    assert order.index(str(tmp_path)) < order.index(str(venv))
