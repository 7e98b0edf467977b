"""The Langfuse release's Helm post-renderer (roles/langfuse_helm/files/post_render.py): the probes the official
chart cannot be told, added where the chart renders none, run as Helm runs it (the shell wrapper, stdin to stdout).
The manifests below are shaped as the official chart 2.0.0 renders them (templates/{web,worker}/deployment.yaml);
make upstream-check runs the post-renderer on the real chart's output."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

FILES = Path(__file__).resolve().parents[2] / "roles" / "langfuse_helm" / "files"
sys.path.insert(0, str(FILES))
import post_render  # noqa: E402  pylint: disable=wrong-import-position

STARTUP = {"httpGet": {"port": "http", "path": "/api/public/health"}, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 60}
WORKER_STARTUP = {**STARTUP, "httpGet": {"port": "http", "path": "/api/health"}}
READY = {"httpGet": {"path": "/api/ready", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
CONFIG = {"fullname": "langfuse", "components": {
    "web": {"container": "langfuse-web", "startupProbe": STARTUP},
    "worker": {"container": "langfuse-worker", "startupProbe": WORKER_STARTUP, "readinessProbe": READY}}}
DUAL = {**CONFIG, "components": {**CONFIG["components"], "worker": {
    **CONFIG["components"]["worker"], "livenessPath": "/api/health?failIfEventPropagationStuck=true", "livenessInitialDelaySeconds": 60}}}


def probe(path, delay=20):
    return {"httpGet": {"path": path, "port": "http"}, "initialDelaySeconds": delay, "periodSeconds": 10, "timeoutSeconds": 5,
            "successThreshold": 1, "failureThreshold": 5}


def deployment(component, **probes):
    container = {"name": f"langfuse-{component}", "image": f"docker.langfuse.com/langfuse/langfuse-{component}:4.16.0",
                 "ports": [{"name": "http", "containerPort": 3000 if component == "web" else 3030}], **probes}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"langfuse-{component}"},
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:1.37"}, container]}}}}


SERVICE = "# Source: langfuse/templates/web/service.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: langfuse-web\n"


def helm_output():
    """Helm's rendering: `---` then a `# Source:` comment per document."""
    web = deployment("web", livenessProbe=probe("/api/public/health"), readinessProbe=probe("/api/public/ready"))
    worker = deployment("worker", livenessProbe=probe("/api/health"))
    return "".join([f"---\n{SERVICE}",
                    "---\n# Source: langfuse/templates/web/deployment.yaml\n" + yaml.safe_dump(web, sort_keys=False),
                    "---\n# Source: langfuse/templates/worker/deployment.yaml\n" + yaml.safe_dump(worker, sort_keys=False)])


def run_as_helm(text, config):
    """The wrapper Helm runs (--post-renderer), with the role's environment."""
    env = {**os.environ, "LANGFUSE_OPS_PYTHON": sys.executable, "LANGFUSE_OPS_POST_RENDER": json.dumps(config)}
    proc = subprocess.run([str(FILES / "post_render.sh")], input=text, capture_output=True, text=True, env=env, check=True)
    return proc.stdout


def containers(text):
    found = {}
    for doc in yaml.safe_load_all(text):
        if doc and doc["kind"] == "Deployment":
            found[doc["metadata"]["name"]] = {c["name"]: c for c in doc["spec"]["template"]["spec"]["containers"]}
    return found


def test_startup_probes_and_the_worker_readiness_are_added_where_the_chart_has_none():
    out = containers(run_as_helm(helm_output(), CONFIG))
    web, worker = out["langfuse-web"]["langfuse-web"], out["langfuse-worker"]["langfuse-worker"]
    assert web["startupProbe"] == STARTUP and worker["startupProbe"] == WORKER_STARTUP
    assert worker["readinessProbe"] == READY
    # What the chart rendered stays as it was.
    assert web["livenessProbe"] == probe("/api/public/health") and web["readinessProbe"] == probe("/api/public/ready")
    assert worker["livenessProbe"] == probe("/api/health")
    assert out["langfuse-web"]["sidecar"] == {"name": "sidecar", "image": "busybox:1.37"}


def test_the_dual_write_worker_liveness_reads_event_propagation_after_a_minute():
    worker = containers(run_as_helm(helm_output(), DUAL))["langfuse-worker"]["langfuse-worker"]
    assert worker["livenessProbe"]["httpGet"]["path"] == "/api/health?failIfEventPropagationStuck=true"
    assert worker["livenessProbe"]["initialDelaySeconds"] == 60
    # A longer delay the chart was given stays.
    longer = helm_output().replace("initialDelaySeconds: 20", "initialDelaySeconds: 90")
    assert containers(run_as_helm(longer, DUAL))["langfuse-worker"]["langfuse-worker"]["livenessProbe"]["initialDelaySeconds"] == 90


def test_a_probe_the_chart_learned_is_left_alone():
    learned = deployment("worker", livenessProbe=probe("/api/health?failIfQueueConsumptionStuck=true"),
                         readinessProbe=probe("/api/ready", 5), startupProbe=probe("/api/health", 0))
    text = "---\n" + yaml.safe_dump(learned, sort_keys=False)
    assert run_as_helm(text, DUAL) == text


@pytest.mark.parametrize("config", [{}, {"fullname": "other", "components": CONFIG["components"]}])
def test_nothing_to_do_writes_every_document_as_it_came(config):
    assert run_as_helm(helm_output(), config) == helm_output()


def test_documents_not_patched_keep_their_text_and_the_separators_stay():
    out = run_as_helm(helm_output(), CONFIG)
    assert out.startswith(f"---\n{SERVICE}---\n") and out.count("\n---\n") == 2
    assert post_render.split_documents("a: 1\n---\nb: 2\n---\n") == ["a: 1\n", "b: 2\n"]


def test_a_patched_document_keeps_every_string_a_string_as_kubernetes_reads_it():
    # Found by an install: PyYAML wrote the string "1e3" back unquoted, and Kubernetes read it as a number. Helm
    # quotes env values; `on` unquoted is a string to Kubernetes (YAML 1.2), a boolean to PyYAML's default (1.1).
    text = """---
# Source: langfuse/templates/worker/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: langfuse-worker
  labels:
    feature: on
spec:
  template:
    spec:
      containers:
        - name: langfuse-worker
          env:
            - {name: A, value: "1e3"}
            - {name: B, value: "0.0.0.0"}
            - {name: C, value: "2026-12-03"}
            - {name: D, value: "0x1F"}
            - {name: E, value: "5"}
          livenessProbe:
            httpGet: {path: /api/health, port: http}
            initialDelaySeconds: 20
"""
    [doc] = [d for d in run_as_helm(text, CONFIG).split("---\n") if d.strip()]
    patched = json.loads(doc)
    container = patched["spec"]["template"]["spec"]["containers"][0]
    assert [e["value"] for e in container["env"]] == ["1e3", "0.0.0.0", "2026-12-03", "0x1F", "5"]
    assert patched["metadata"]["labels"] == {"feature": "on"}
    assert container["startupProbe"] == WORKER_STARTUP and container["livenessProbe"]["initialDelaySeconds"] == 20


def test_the_wrapper_helm_runs_is_executable():
    assert os.access(FILES / "post_render.sh", os.X_OK)
