"""The local test environment behaves as the roles' tests rely on.

These run against the real control plane and services of tests/localenv.
"""
import json
import os
import socket
import subprocess
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest
import requests

import crds  # tests/localenv, on the path through conftest
from conftest import LOCALENV, REPO, kubectl, run

SMOKE_CHART = REPO / "tests" / "integration" / "charts" / "smoke"


def apply(namespace, manifest):
    return run("kubectl", "-n", namespace, "apply", "-f", "-", input=manifest)


def test_api_server_reports_the_pinned_version(cluster):
    version = json.loads(cluster("version", "-o", "json").stdout)
    wanted = os.environ.get("LOCALENV_KUBERNETES_VERSION") or subprocess.run(
        ["bash", "-c", f". {LOCALENV}/versions.env && echo $LOCALENV_KUBERNETES_VERSION"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert version["serverVersion"]["gitVersion"] == wanted
    assert version["clientVersion"]["gitVersion"] == wanted


def test_three_ready_nodes_in_three_zones(cluster):
    nodes = json.loads(cluster("get", "nodes", "-o", "json").stdout)["items"]
    ready = {
        n["metadata"]["name"]: n["metadata"]["labels"]["topology.kubernetes.io/zone"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    }
    assert len(ready) >= 3
    assert len(set(ready.values())) == 3


def test_three_replica_deployment_rolls_out_spread_over_zones(namespace):
    apply(namespace, """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
           labelSelector: {matchLabels: {app: web}}}
      containers: [{name: web, image: example.invalid/web:1}]
""")
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    deploy = json.loads(kubectl("-n", namespace, "get", "deployment", "web", "-o", "json").stdout)
    assert deploy["status"]["availableReplicas"] == 3
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"]["topology.kubernetes.io/zone"]
             for n in json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]}
    assert len({nodes[p["spec"]["nodeName"]] for p in pods}) == 3


def test_never_ready_pods_stall_their_rollout(namespace):
    apply(namespace, """
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  replicas: 1
  progressDeadlineSeconds: 5
  selector: {matchLabels: {app: stuck}}
  template:
    metadata:
      labels: {app: stuck, localenv.langfuse-ops.io/never-ready: "true"}
    spec:
      containers: [{name: stuck, image: example.invalid/stuck:1}]
""")
    status = kubectl("-n", namespace, "rollout", "status", "deployment/stuck", "--timeout=60s", check=False)
    assert status.returncode != 0
    assert "exceeded its progress deadline" in status.stderr
    pod = json.loads(kubectl("-n", namespace, "get", "pods", "-l", "app=stuck", "-o", "json").stdout)["items"][0]
    assert pod["status"]["phase"] == "Running"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"


def test_statefulset_with_volume_claims_becomes_ready(namespace):
    apply(namespace, """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: example.invalid/db:1}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
""")
    kubectl("-n", namespace, "rollout", "status", "statefulset/db", "--timeout=60s")
    claims = json.loads(kubectl("-n", namespace, "get", "pvc", "-o", "json").stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["data-db-0", "data-db-1"]
    assert {c["status"]["phase"] for c in claims} == {"Bound"}
    assert {c["spec"]["storageClassName"] for c in claims} == {"standard"}


def test_job_pods_complete(namespace):
    apply(namespace, """
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: once, image: example.invalid/once:1}]
""")
    kubectl("-n", namespace, "wait", "--for=condition=Complete", "job/once", "--timeout=60s")


def test_helm_install_waits_and_upgrade_changes_the_release(namespace):
    release = "smoke"
    run("helm", "install", release, str(SMOKE_CHART), "-n", namespace, "--wait", "--timeout", "60s")
    deploy = json.loads(kubectl("-n", namespace, "get", "deployment", "smoke-smoke", "-o", "json").stdout)
    assert deploy["status"]["availableReplicas"] == 2

    rendered = run("helm", "upgrade", release, str(SMOKE_CHART), "-n", namespace, "--set", "replicas=3",
                   "--dry-run=server").stdout
    assert "replicas: 3" in rendered

    run("helm", "upgrade", release, str(SMOKE_CHART), "-n", namespace, "--set", "replicas=3", "--wait", "--timeout", "60s")
    history = json.loads(run("helm", "history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]
    assert history[-1]["status"] == "deployed"
    deploy = json.loads(kubectl("-n", namespace, "get", "deployment", "smoke-smoke", "-o", "json").stdout)
    assert deploy["status"]["availableReplicas"] == 3


def test_a_crd_applied_a_moment_ago_is_waited_for_until_established(cluster):
    # `kubectl wait --for=condition=Established` straight after the apply fails at once while the CRD has no
    # status yet; that made CI red on the Argo Rollouts CRDs. crds.wait_established must ride it out.
    group = f"it{uuid.uuid4().hex[:6]}.localenv.langfuse-ops.io"
    name = f"widgets.{group}"
    manifest = json.dumps({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": name},
        "spec": {"group": group, "scope": "Namespaced", "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    try:
        run("kubectl", "apply", "-f", "-", input=manifest)
        crds.wait_established([name])
        conditions = json.loads(kubectl("get", "crd", name, "-o", "json").stdout)["status"]["conditions"]
        assert {"type": "Established", "status": "True"}.items() <= next(c for c in conditions if c["type"] == "Established").items()
        with pytest.raises(TimeoutError, match=f"not Established after 1s: nothing.{group}"):
            crds.wait_established([name, f"nothing.{group}"], timeout=1)
    finally:
        kubectl("delete", "crd", name, "--ignore-not-found", "--wait=false", check=False)


def test_postgres_is_15_and_accepts_password_logins(services):
    with psycopg.connect(host=services["LOCALENV_POSTGRES_HOST"], port=services["LOCALENV_POSTGRES_PORT"],
                         user=services["LOCALENV_POSTGRES_USER"], password=services["LOCALENV_POSTGRES_PASSWORD"],
                         dbname="postgres") as conn:
        version = conn.execute("show server_version_num").fetchone()[0]
    assert 150000 <= int(version) < 160000
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=services["LOCALENV_POSTGRES_HOST"], port=services["LOCALENV_POSTGRES_PORT"],
                        user="postgres", password="wrong", dbname="postgres")


def test_redis_is_7_with_noeviction_and_auth(services):
    def redis(*words, auth=True):
        env = dict(os.environ, REDISCLI_AUTH=services["LOCALENV_REDIS_PASSWORD"] if auth else "")
        return run("redis-cli", "-h", "127.0.0.1", "-p", services["LOCALENV_REDIS_PORT"], *words, env=env).stdout.split()
    assert redis("CONFIG", "GET", "maxmemory-policy") == ["maxmemory-policy", "noeviction"]
    assert redis("INFO", "server")[2].startswith("redis_version:7")
    assert "NOAUTH" in " ".join(redis("PING", auth=False))


def test_clickhouse_answers_over_http(services):
    url = f"http://127.0.0.1:{services['LOCALENV_CLICKHOUSE_HTTP_PORT']}/"
    auth = (services["LOCALENV_CLICKHOUSE_USER"], services["LOCALENV_CLICKHOUSE_PASSWORD"])
    assert requests.post(url, data="SELECT 1 + 1", auth=auth, timeout=10).text.strip() == "2"
    assert requests.post(url, data="SELECT 1", auth=(auth[0], "wrong"), timeout=10).status_code != 200


def test_s3_stores_and_versions_objects(services):
    s3 = boto3.client("s3", endpoint_url=services["LOCALENV_S3_ENDPOINT"], region_name=services["LOCALENV_S3_REGION"],
                      aws_access_key_id=services["LOCALENV_S3_ACCESS_KEY_ID"],
                      aws_secret_access_key=services["LOCALENV_S3_SECRET_ACCESS_KEY"])
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"two")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 2


OUR_PROCESSES = ("etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kwok-controller",
                 "postgres", "redis-server", "clickhouse-serv", "moto_server")


def test_nothing_of_ours_listens_beyond_loopback(cluster, services):
    listeners = run("ss", "-ltnpH").stdout.splitlines()
    ours = [line for line in listeners if any(f'(("{name}"' in line for name in OUR_PROCESSES)]
    assert len(ours) >= 9, listeners
    for line in ours:
        local = line.split()[3]
        assert local.startswith("127.") or local.startswith("[::1]"), line


def _free_port_with_listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_busy_port_is_named(tmp_path):
    sock, port = _free_port_with_listener()
    with sock:
        env = dict(os.environ, LOCALENV_STATE=str(tmp_path), LOCALENV_POSTGRES_PORT=str(port))
        proc = run(str(LOCALENV / "services.sh"), "up", env=env, check=False)
    assert proc.returncode != 0
    assert f"port 127.0.0.1:{port} (for PostgreSQL) is already in use" in proc.stderr


def test_missing_go_is_named(tmp_path):
    env = dict(os.environ, PATH="/usr/bin:/bin", LOCALENV_CACHE=str(tmp_path))
    proc = run(str(LOCALENV / "build-binaries.sh"), env=env, check=False)
    assert proc.returncode != 0
    assert "'go' is not installed" in proc.stderr


def test_unreachable_module_proxy_is_named(tmp_path):
    sock, port = _free_port_with_listener()
    sock.close()  # nothing listens there now: the proxy is unreachable
    env = dict(os.environ, GOPROXY=f"http://127.0.0.1:{port}", LOCALENV_CACHE=str(tmp_path))
    proc = run(str(LOCALENV / "build-binaries.sh"), env=env, check=False)
    assert proc.returncode != 0
    assert "Go module proxy" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr


def test_suite_fails_without_an_api_server(tmp_path):
    sock, port = _free_port_with_listener()
    sock.close()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: dead, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
users: [{{name: dead, user: {{token: x}}}}]
contexts: [{{name: dead, context: {{cluster: dead, user: dead}}}}]
current-context: dead
""")
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    proc = run("pytest", "-q", "-p", "no:cacheprovider", f"{Path(__file__)}::test_three_ready_nodes_in_three_zones",
               env=env, check=False, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stdout
    assert "1 error" in proc.stdout or "1 failed" in proc.stdout
    assert "does not answer" in proc.stdout and "make cluster-up" in proc.stdout
