"""install.yml on the local control plane: converge, idempotence, secrets, check mode.

One converge into a namespace of its own, then the checks that need a
converged cluster. The molecule scenario `local` covers the same path as a
user runs it; these add what a scenario cannot express as easily: greps of
the whole -vvv output and check-mode runs.
"""
import base64
import json
import re
import uuid

import pytest

import network_truth
from conftest import installed_release, kubectl, playbook, run


def install(namespace, *args, extra=None):
    return playbook("install", {"langfuse_namespace": namespace, **(extra or {})}, *args)


def recap(output):
    match = re.search(r"localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, output[-2000:]
    return {"ok": int(match[1]), "changed": int(match[2]), "failed": int(match[4])}


def app_secret(namespace):
    data = json.loads(kubectl("-n", namespace, "get", "secret", "langfuse-app-secrets", "-o", "json").stdout)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


@pytest.fixture(scope="module")
def converged(cluster, services):
    namespace = f"it-{uuid.uuid4().hex[:8]}"
    with installed_release(namespace) as output:
        yield namespace, output


def test_first_converge_changes_and_reports(converged):
    namespace, output = converged
    assert recap(output)["changed"] > 0
    assert "Health: OK, version 4.16.0" in output
    assert ("Web: 3 available (docker.langfuse.com/langfuse/langfuse:4.16.0); worker: 3 available "
            "(docker.langfuse.com/langfuse/langfuse-worker:4.16.0)") in " ".join(output.split())


def test_the_web_is_exposed_through_a_gateway_api_route_the_controller_accepted(converged):
    # inventories/local: langfuse_helm_exposure gateway, the role's own Gateway on class `standin`. The status is the
    # stand-in controller's (tests/standins/gateway_controller.py), written as a conformant controller does.
    namespace, output = converged
    text = " ".join(output.split())
    assert f"Route: HTTPRoute langfuse for langfuse.local.test, accepted through Gateway {namespace}/langfuse/https" in text
    route = json.loads(kubectl("-n", namespace, "get", "httproute", "langfuse", "-o", "json").stdout)
    assert route["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert route["spec"]["rules"][0]["backendRefs"] == [{"group": "", "kind": "Service", "name": "langfuse-web", "port": 3000,
                                                         "weight": 1}]
    [parent] = route["status"]["parents"]
    conditions = {c["type"]: c["status"] for c in parent["conditions"]}
    assert conditions["Accepted"] == "True" and conditions["ResolvedRefs"] == "True", parent
    gateway = json.loads(kubectl("-n", namespace, "get", "gateway", "langfuse", "-o", "json").stdout)
    assert gateway["spec"]["gatewayClassName"] == "standin"
    assert gateway["spec"]["listeners"][0]["hostname"] == "langfuse.local.test"
    assert json.loads(kubectl("-n", namespace, "get", "ingress", "-o", "json").stdout)["items"] == []


def test_the_role_adds_the_probes_the_chart_cannot_be_told(converged):
    namespace = converged[0]
    pods = {c: json.loads(kubectl("-n", namespace, "get", "deployment", f"langfuse-{c}", "-o", "json").stdout)
            ["spec"]["template"]["spec"]["containers"][0] for c in ("web", "worker")}
    assert pods["web"]["startupProbe"]["httpGet"] == {"path": "/api/public/health", "port": "http", "scheme": "HTTP"}
    assert pods["worker"]["startupProbe"]["httpGet"] == {"path": "/api/health", "port": "http", "scheme": "HTTP"}
    assert pods["worker"]["startupProbe"]["failureThreshold"] == 60
    assert pods["worker"]["readinessProbe"]["httpGet"] == {"path": "/api/ready", "port": "http", "scheme": "HTTP"}
    # No dual write here: the chart's liveness stays.
    assert pods["worker"]["livenessProbe"]["httpGet"]["path"] == "/api/health"
    values = json.loads(run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout)
    assert values["langfuseOps"]["postRender"]["components"]["worker"]["readinessProbe"]["httpGet"]["path"] == "/api/ready"


def test_a_route_no_gateway_serves_fails_the_run_naming_why(cluster, services):
    namespace = f"it-gw-{uuid.uuid4().hex[:6]}"
    shared = {"create": False, "class_name": "", "cluster_issuer": "", "tls_secret_name": "t", "name": "shared",
              "namespace": "gateways", "section_name": "https", "controller": "other", "body_size": "1m",
              "timeout_seconds": 60, "annotations": {}, "wait_seconds": 4}
    try:
        proc = install(namespace, extra={"langfuse_helm_gateway": shared})
        text = " ".join(proc.stdout.split())
        assert proc.returncode != 0, proc.stdout[-3000:]
        # No Gateway gateways/shared exists, so no controller claims the route (as real controllers do: each reports
        # only on parents of its own classes).
        assert (f"HTTPRoute langfuse in {namespace} is not served through Gateway gateways/shared/https after 4 s: "
                "no Gateway controller has reported on parent Gateway gateways/shared listener https yet") in text, proc.stdout[-3000:]
    finally:
        run("helm", "uninstall", "langfuse", "-n", namespace, "--wait", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_api_server_holds_every_pod_to_pod_security_restricted(converged):
    # inventories/local enforces "restricted" (all its pods are the collection's own): every pod of the install was
    # admitted under it by the API server's Pod Security admission, and one without the contexts is refused.
    namespace = converged[0]
    labels = json.loads(kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"]["labels"]
    assert {k: labels.get(f"pod-security.kubernetes.io/{k}") for k in ("enforce", "warn", "audit")} == {
        "enforce": "restricted", "warn": "restricted", "audit": "restricted"}
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
    components = {p["metadata"].get("labels", {}).get("app") or p["metadata"].get("labels", {}).get("app.kubernetes.io/component")
                  for p in pods}
    assert {"web", "worker", "migrate"} <= components, components
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, pod["metadata"]["name"]
    rogue = kubectl("-n", namespace, "run", "rogue", "--image=busybox:1.37", "--restart=Never", "--dry-run=server",
                    check=False)
    assert rogue.returncode != 0 and 'violates PodSecurity "restricted:latest"' in rogue.stderr, rogue.stderr


def template_labels(namespace, kind, selector):
    """The pod labels the first `kind` matching `selector` in `namespace` gives its pods, as on the API server."""
    items = json.loads(kubectl("-n", namespace, "get", kind, "-l", selector, "-o", "json").stdout)["items"]
    assert items, f"no {kind} labelled {selector} in {namespace}"
    item = items[0]
    spec = item["spec"]["jobTemplate"]["spec"] if kind == "cronjob" else item["spec"]
    return spec["template"]["metadata"]["labels"]


def collection_pods(namespace):
    """The namespace's labels, and the labels of each kind of pod the collection runs in every install."""
    ns_labels = json.loads(kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"]["labels"]
    return ns_labels, {
        "web": template_labels(namespace, "deployment", "app.kubernetes.io/component=web"),
        "worker": template_labels(namespace, "deployment", "app.kubernetes.io/component=worker"),
        "migrate": template_labels(namespace, "job", "app.kubernetes.io/component=migrate"),
        "backup": template_labels(namespace, "cronjob", "app.kubernetes.io/component=backup"),
    }


def test_network_policies_allow_each_pod_what_it_needs_and_nothing_else(converged, services):
    # The truth table of the NetworkPolicies on the API server, computed by cyclonus (tests/localenv/network_truth.py):
    # every source below to every destination, each answer asserted, the allowed ones listed. Enforcement is the CNI's
    # and stays untested (KWOK runs no network). inventories/local: the data services are outside the namespace, on
    # 127.0.0.1; web takes requests from namespace gateway-system.
    namespace = converged[0]
    ns_labels, ours = collection_pods(namespace)
    ours["a pod of someone else"] = {"app": "debug"}
    sources = {name: network_truth.peer(namespace, labels, ns_labels) for name, labels in ours.items()}
    outside = {
        "the Gateway's proxy": network_truth.peer("gateway-system", {"app": "proxy"}),
        "a pod of another namespace": network_truth.peer("default", {"app": "debug"}),
    }
    s3_port = int(services["LOCALENV_S3_ENDPOINT"].rsplit(":", 1)[1].rstrip("/"))
    local = network_truth.address("127.0.0.1")
    destinations = {
        ("web", 3000): sources["web"], ("worker", 3030): sources["worker"],
        ("a pod of someone else", 8080): sources["a pod of someone else"],
        ("postgres", int(services["LOCALENV_POSTGRES_PORT"])): local,
        ("redis", int(services["LOCALENV_REDIS_PORT"])): local,
        ("clickhouse http", int(services["LOCALENV_CHDB_HTTP_PORT"])): local,
        ("clickhouse native", 19000): local,
        ("s3", s3_port): local,
        ("an LLM provider", 443): network_truth.address("203.0.113.10"),
        ("a database elsewhere", 5432): network_truth.address("203.0.113.10"),
        ("a pod of another namespace", 8080): outside["a pod of another namespace"],
        ("dns", 53): network_truth.peer("kube-system", {"k8s-app": "kube-dns"}),
    }
    data = ["postgres", "redis", "clickhouse http", "clickhouse native", "s3", "dns"]
    expected_allowed = {
        "web": data + ["an LLM provider"],
        "worker": data + ["an LLM provider"],
        "migrate": ["postgres", "clickhouse http", "clickhouse native", "dns"],
        "backup": ["postgres", "clickhouse http", "s3", "dns", "web"],
        "a pod of someone else": [],
        "the Gateway's proxy": ["web"],
        "a pod of another namespace": [],
    }
    rows = {}
    for source_name, source in {**sources, **outside}.items():
        for (destination_name, port), destination in destinations.items():
            if destination is source or (source_name in outside and (destination["Internal"] or {}).get("Namespace") != namespace):
                continue  # a pod to itself; traffic between two places outside the namespace, which its policies do not govern
            protocol = "UDP" if destination_name == "dns" else "TCP"
            rows[source_name, destination_name] = network_truth.connection(source, destination, port, protocol)
    assert network_truth.differences(namespace, rows, expected_allowed) == []
    assert len(rows) == 63, rows  # 5 kinds of pod of ours x 12 places, less 3 to themselves; 2 outside x 3 of ours


def test_release_is_pinned_and_holds_no_secret_literal(converged, services):
    namespace = converged[0]
    release = json.loads(run("helm", "list", "-n", namespace, "-o", "json").stdout)[0]
    # Helm records the chart's appVersion (4.4.0 for chart 2.0.0); the images pin 4.16.0.
    assert release["chart"] == "langfuse-2.0.0" and release["app_version"] == "4.4.0" and release["status"] == "deployed"
    values = run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout
    secrets = list(app_secret(namespace).values()) + [
        services[k] for k in ("LOCALENV_POSTGRES_PASSWORD", "LOCALENV_REDIS_PASSWORD", "LOCALENV_CLICKHOUSE_PASSWORD",
                              "LOCALENV_S3_SECRET_ACCESS_KEY")]
    for secret in secrets:
        assert secret not in values
    parsed = json.loads(values)
    assert parsed["langfuse"]["encryptionKey"] == {"secretKeyRef": {"name": "langfuse-app-secrets", "key": "encryption-key"}}
    assert parsed["postgresql"]["auth"]["existingSecret"] == "langfuse-postgres"


def test_web_and_worker_have_pdbs_and_zone_spread(converged):
    namespace = converged[0]
    for component in ("web", "worker"):
        deploy = json.loads(kubectl("-n", namespace, "get", "deployment", f"langfuse-{component}", "-o", "json").stdout)
        assert deploy["status"]["availableReplicas"] == 3
        spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread[0]["topologyKey"] == "topology.kubernetes.io/zone"
        assert spread[0]["labelSelector"]["matchLabels"]["app"] == component
        pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", f"app={component}", "-o", "json").stdout)["items"]
        assert len({p["spec"]["nodeName"] for p in pods}) == 3
    pdbs = json.loads(kubectl("-n", namespace, "get", "pdb", "-o", "json").stdout)["items"]
    # The chart selects PDB pods by app.kubernetes.io/component (its pods carry both that and app).
    assert sorted((p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], p["spec"]["maxUnavailable"])
                  for p in pdbs) == [("web", 1), ("worker", 1)]


def test_second_converge_changes_nothing_and_prints_no_secret(converged, services):
    namespace = converged[0]
    before = app_secret(namespace)
    second = install(namespace, "-vvv")
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0
    assert app_secret(namespace) == before
    output = second.stdout + second.stderr
    secrets = list(before.values()) + [
        services[k] for k in ("LOCALENV_POSTGRES_PASSWORD", "LOCALENV_REDIS_PASSWORD", "LOCALENV_CLICKHOUSE_PASSWORD",
                              "LOCALENV_S3_SECRET_ACCESS_KEY")]
    for secret in secrets:
        assert len(secret) >= 16
        assert secret not in output
        assert base64.b64encode(secret.encode()).decode() not in output


def test_check_diff_reports_no_change_on_a_converged_cluster(converged):
    namespace = converged[0]
    proc = install(namespace, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 0


def test_check_diff_shows_a_change_and_makes_none(converged):
    namespace = converged[0]
    web = {"replicas": 4, "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
           "hpa": {"enabled": True, "min_replicas": 4, "max_replicas": 6, "target_cpu_percent": 70}}
    proc = install(namespace, "--check", "--diff", extra={"langfuse_helm_web": web})
    assert proc.returncode == 0, proc.stdout[-4000:]
    # The values diff and the release both report the change.
    assert recap(proc.stdout)["changed"] == 2
    assert re.search(r"^-\s+minReplicas: 3$", proc.stdout, flags=re.M), proc.stdout[-4000:]
    assert re.search(r"^\+\s+minReplicas: 4$", proc.stdout, flags=re.M), proc.stdout[-4000:]
    hpa = json.loads(kubectl("-n", namespace, "get", "hpa", "langfuse-web", "-o", "json").stdout)
    assert hpa["spec"]["minReplicas"] == 3
    assert json.loads(run("helm", "history", "langfuse", "-n", namespace, "-o", "json").stdout)[-1]["revision"] == 1


def test_migrations_ran_once_in_a_job_before_web_and_worker_existed(converged):
    """The Job's pod completes under KWOK without running anything; the gate then read the
    real local databases, seeded by services.sh with what a migration run leaves."""
    namespace = converged[0]
    jobs = json.loads(kubectl("-n", namespace, "get", "jobs", "-l", "app.kubernetes.io/component=migrate",
                              "-o", "json").stdout)["items"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["metadata"]["name"].startswith("langfuse-migrate-4-16-0-")
    assert job["status"]["succeeded"] == 1 and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "docker.langfuse.com/langfuse/langfuse:4.16.0" and container["args"] == ["true"]
    assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(container)
    env = {e["name"]: e for e in container["env"]}
    assert env["LANGFUSE_AUTO_POSTGRES_MIGRATION_DISABLED"]["value"] == "false"
    assert env["LANGFUSE_AUTO_CLICKHOUSE_MIGRATION_DISABLED"]["value"] == "false"
    # The same database settings as web, and the password only by reference.
    web = json.loads(kubectl("-n", namespace, "get", "deployment", "langfuse-web", "-o", "json").stdout)
    web_env = {e["name"]: e for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("DATABASE_HOST", "DATABASE_NAME", "CLICKHOUSE_MIGRATION_URL", "CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"):
        assert env[name] == web_env[name]
    assert "valueFrom" in env["DATABASE_PASSWORD"]
    # Web and worker no longer migrate at start-up.
    assert web_env["LANGFUSE_AUTO_POSTGRES_MIGRATION_DISABLED"]["value"] == "true"
    assert web_env["LANGFUSE_AUTO_CLICKHOUSE_MIGRATION_DISABLED"]["value"] == "true"
    # Migrations finished before the release created web and worker.
    finished = job["status"]["completionTime"]
    for component in ("web", "worker"):
        deploy = json.loads(kubectl("-n", namespace, "get", "deployment", f"langfuse-{component}", "-o", "json").stdout)
        assert deploy["metadata"]["creationTimestamp"] >= finished
