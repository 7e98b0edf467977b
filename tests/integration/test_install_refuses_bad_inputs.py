"""install.yml refuses a wrong inventory in preflight, before any object exists: a few cases end to end.

tests/unit/test_refusals.py runs every case (over 80) through the same checks without a cluster, on a
recorded cluster answer. These few run the real playbook against the local cluster, so the whole path is
proven once per kind: a check on the inventory, one on the final chart values, one on a name's shape,
and two on what preflight reads from the cluster. Each asserts: the run fails, the message names the
variable and says what to do, and neither the namespace nor a Helm release was created.
"""
import json
import uuid

import pytest

from conftest import REPO, SUITE_LINE, kubectl, run

INGRESS = {"enabled": True, "class_name": "nginx", "cluster_issuer": "", "tls_secret_name": "t", "body_size": "1m",
           "timeout_seconds": 60}
GATEWAY = {"create": True, "class_name": "standin", "cluster_issuer": "", "tls_secret_name": "t", "name": "",
           "namespace": "", "section_name": "", "controller": "other", "body_size": "1m", "timeout_seconds": 60,
           "annotations": {}, "wait_seconds": 30}
WORKER = {"replicas": 1, "resources": {}, "autoscaling": "hpa",
          "hpa": {"min_replicas": 1, "max_replicas": 2, "target_cpu_percent": 70},
          "keda": {"min_replicas": 1, "max_replicas": 2, "list_length_target": 10, "queues": ["ingestion-queue"]}}

CASES = {
    "app-version-latest": ({"langfuse_helm_app_version": "latest"}, ["langfuse_helm_app_version", "never `latest`"]),
    "database-url-in-additional-env": ({"langfuse_helm_values": {"langfuse": {"additionalEnv": [
        {"name": "DATABASE_URL", "value": "postgresql://postgres@127.0.0.1:15432/langfuse"}]}}},
        ["langfuse_helm_values.langfuse.additionalEnv[0] sets DATABASE_URL"]),
    "namespace-upper-case": ({"langfuse_namespace": "Langfuse-Prod"}, ["namespace_secrets_namespace (langfuse_namespace) is 'Langfuse-Prod'"]),
    "missing-ingress-class": ({"langfuse_helm_exposure": "ingress", "langfuse_helm_ingress": {**INGRESS, "class_name": "traefik"}},
                              ["IngressClass \"traefik\"", "langfuse_helm_ingress.class_name"]),
    "missing-gateway-class": ({"langfuse_helm_gateway": {**GATEWAY, "class_name": "eg"}},
                              ["GatewayClass \"eg\" (langfuse_helm_gateway.class_name) does not exist", "standin"]),
    "keda-without-keda": ({"langfuse_helm_worker": {**WORKER, "autoscaling": "keda"}}, ["scaledobjects.keda.sh"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_install_refuses_before_changing_anything(cluster, services, case):
    overrides, expected = CASES[case]
    namespace = f"bad-{uuid.uuid4().hex[:8]}"
    extra = {"langfuse_namespace": namespace, **SUITE_LINE, **overrides}
    namespace = extra["langfuse_namespace"]
    proc = run("ansible-playbook", "-i", "inventories/local", "playbooks/install.yml", "-e", json.dumps(extra),
               check=False, cwd=REPO, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    for text in expected:
        assert text in " ".join(output.split()), f"{text!r} not in the output:\n{output[-3000:]}"
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0, "the namespace was created"
    assert run("helm", "list", "-n", namespace, "-q", check=False).stdout.strip() == ""
