"""kwok_config.py keeps kwok's default Stages and adds ours correctly."""
import importlib.util
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "localenv" / "kwok_config.py"
spec = importlib.util.spec_from_file_location("kwok_config", SCRIPT)
kwok_config = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kwok_config)


def stage(name, exprs):
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"}, "selector": {"matchExpressions": exprs}}}


@pytest.fixture
def stage_dir(tmp_path):
    """A stage tree shaped like kwok's kustomize/stage, one Stage a file."""
    for rel in kwok_config.DEFAULT_STAGES:
        name = Path(rel).stem
        exprs = [{"key": ".status.phase", "operator": "In", "values": ["Pending"]}]
        if rel.startswith("volume/"):
            exprs = [{"cel": {"expression": "self.spec.storageClassName == 'kwok-volume'"}}]
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(stage(name, exprs)))
    return tmp_path


FORWARDS = '{"standin_web": 13000, "clickhouse_http": 18123, "clickhouse_tcp": 19000, "postgres": 15432}'


def render(stage_dir, tmp_path):
    out = tmp_path / "kwok.yaml"
    kwok_config.main(str(stage_dir), "v1.37.2", '{"kubeApiserverBinary": "/bin/kube-apiserver"}', FORWARDS, str(out))
    return list(yaml.safe_load_all(out.read_text()))


def test_binds_loopback_and_names_local_binaries(stage_dir, tmp_path):
    conf = render(stage_dir, tmp_path)[0]
    assert conf["kind"] == "KwokctlConfiguration"
    assert conf["options"]["bindAddress"] == "127.0.0.1"
    assert conf["options"]["runtime"] == "binary"
    assert conf["options"]["kubeVersion"] == "v1.37.2"
    assert conf["options"]["kubeApiserverBinary"] == "/bin/kube-apiserver"


def test_keeps_every_default_stage_and_adds_never_ready(stage_dir, tmp_path):
    names = [d["metadata"]["name"] for d in render(stage_dir, tmp_path)[1:] if d["kind"] == "Stage"]
    assert names == [Path(rel).stem for rel in kwok_config.DEFAULT_STAGES] + ["pod-never-ready"]


def test_pod_ready_skips_never_ready_pods_and_never_ready_takes_them(stage_dir, tmp_path):
    stages = {d["metadata"]["name"]: d for d in render(stage_dir, tmp_path)[1:] if d["kind"] == "Stage"}
    label = kwok_config.NEVER_READY_LABEL
    ready_cels = [e["cel"]["expression"] for e in stages["pod-ready"]["spec"]["selector"]["matchExpressions"] if "cel" in e]
    never_cels = [e["cel"]["expression"] for e in stages["pod-never-ready"]["spec"]["selector"]["matchExpressions"] if "cel" in e]
    assert ready_cels[0] == f"!has(self.metadata.labels) || !('{label}' in self.metadata.labels)"
    assert never_cels[0] == f"has(self.metadata.labels) && '{label}' in self.metadata.labels"
    template = stages["pod-never-ready"]["spec"]["next"]["statusTemplate"]
    assert "phase: Running" in template and "ready: false" in template


def test_volume_stages_serve_the_standard_storage_class(stage_dir, tmp_path):
    for doc in [d for d in render(stage_dir, tmp_path)[1:] if d["kind"] == "Stage"]:
        for expr in doc["spec"]["selector"]["matchExpressions"]:
            assert "kwok-volume" not in expr.get("cel", {}).get("expression", "")
    pvc = next(d for d in render(stage_dir, tmp_path)[1:] if d["metadata"]["name"] == "pvc-provision")
    assert pvc["spec"]["selector"]["matchExpressions"][0]["cel"]["expression"] == "self.spec.storageClassName == 'standard'"


def test_pod_ports_forward_to_local_servers(stage_dir, tmp_path):
    forward = [d for d in render(stage_dir, tmp_path) if d["kind"] == "ClusterPortForward"]
    assert len(forward) == 1
    assert forward[0]["spec"]["forwards"] == [
        {"ports": [3000, 3030], "target": {"address": "127.0.0.1", "port": 13000}},
        {"ports": [8123], "target": {"address": "127.0.0.1", "port": 18123}},
        {"ports": [9000], "target": {"address": "127.0.0.1", "port": 19000}},
        {"ports": [5432], "target": {"address": "127.0.0.1", "port": 15432}},
    ]


def cels(stage_doc):
    return [e["cel"]["expression"] for e in stage_doc["spec"]["selector"]["matchExpressions"] if "cel" in e]


def test_the_job_runners_pods_skip_every_stage_that_would_start_or_complete_them(stage_dir, tmp_path):
    stages = {d["metadata"]["name"]: d for d in render(stage_dir, tmp_path)[1:] if d["kind"] == "Stage"}
    skip = f"!has(self.metadata.labels) || !('{kwok_config.JOB_RUNNER_LABEL}' in self.metadata.labels)"
    for name in ("pod-ready", "pod-complete", "pod-never-ready"):
        assert skip in cels(stages[name]), name
    # The never-ready rule is kept, and the skip is one more condition (selectors AND their expressions).
    assert cels(stages["pod-ready"]) == [
        f"!has(self.metadata.labels) || !('{kwok_config.NEVER_READY_LABEL}' in self.metadata.labels)", skip]
    assert stages["pod-complete"]["spec"]["selector"]["matchExpressions"][:1] == [
        {"key": ".status.phase", "operator": "In", "values": ["Pending"]}]
    # Deleting pods, nodes and volumes stays KWOK's for every object, the runner's pods included.
    for name, doc in stages.items():
        if name not in ("pod-ready", "pod-complete", "pod-never-ready"):
            assert all(kwok_config.JOB_RUNNER_LABEL not in c for c in cels(doc)), name


def test_pod_logs_can_come_from_per_pod_logs_objects(stage_dir, tmp_path):
    docs = render(stage_dir, tmp_path)
    assert docs[0]["options"]["enableCRDs"] == ["Logs"]
    # kwok refuses a kind that is both enabled as a CRD and given in --config.
    assert not [d for d in docs if d["kind"] in ("Logs", "ClusterLogs")]


def test_the_runner_and_the_stages_agree_on_the_label():
    runner = SCRIPT.parent / "job_runner.py"
    spec = importlib.util.spec_from_file_location("job_runner", runner)
    job_runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job_runner)
    assert job_runner.JOB_RUNNER_LABEL == kwok_config.JOB_RUNNER_LABEL
