"""install.yml with redis_mode valkey: the role runs Valkey in Langfuse's namespace.

KWOK runs no containers, so no Valkey process starts: what is real here is
what the role asks of the API server (StatefulSet, PVC bound to the
StorageClass, Service, the config the server would read) and that the wait
gates on the StatefulSet becoming Ready. The config the role wrote is then
loaded into this machine's real redis-server 7 (Valkey reads the same
directives), which must start with it and report the policy.
"""
import json
import os
import socket
import subprocess
import time
import uuid

import pytest

from conftest import kubectl, run
from test_install import install, recap


@pytest.fixture(scope="module")
def valkey_install(cluster, services):
    namespace = f"it-vk-{uuid.uuid4().hex[:6]}"
    first = install(namespace, extra={"redis_mode": "valkey"})
    assert first.returncode == 0, first.stdout[-4000:]
    yield namespace, first
    run("helm", "uninstall", "langfuse", "-n", namespace, "--wait", check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_valkey_runs_persistent_with_noeviction(valkey_install):
    namespace = valkey_install[0]
    sts = json.loads(kubectl("-n", namespace, "get", "statefulset", "langfuse-valkey", "-o", "json").stdout)
    assert sts["status"]["readyReplicas"] == 1
    pod = sts["spec"]["template"]["spec"]
    [container], [init] = pod["containers"], pod["initContainers"]
    assert container["image"] == init["image"] == "valkey/valkey:8.1.11"
    # The password is in no argument: the init container writes it to a file from the Secret's env.
    assert container["command"] == ["valkey-server", "/etc/valkey/valkey.conf"]
    assert "$(VALKEY_PASSWORD)" not in json.dumps(pod) and "--requirepass" not in json.dumps(pod)
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]} == {
        "REDISCLI_AUTH": {"name": "langfuse-redis", "key": "password"}}
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"]} == {
        "VALKEY_PASSWORD": {"name": "langfuse-redis", "key": "password"}}
    config = json.loads(kubectl("-n", namespace, "get", "configmap", "langfuse-valkey-config", "-o", "json").stdout)
    lines = config["data"]["valkey.conf"].splitlines()
    assert "maxmemory-policy noeviction" in lines and "appendonly yes" in lines
    pvc = json.loads(kubectl("-n", namespace, "get", "pvc", "data-langfuse-valkey-0", "-o", "json").stdout)
    assert pvc["status"]["phase"] == "Bound"


def test_langfuse_points_at_the_valkey_service(valkey_install):
    namespace = valkey_install[0]
    values = json.loads(run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout)["redis"]
    assert (values["host"], values["port"], values["tls"]["enabled"]) == ("langfuse-valkey", 6379, False)
    assert values["auth"]["existingSecret"] == "langfuse-redis"
    service = json.loads(kubectl("-n", namespace, "get", "service", "langfuse-valkey", "-o", "json").stdout)
    endpoints = json.loads(kubectl("-n", namespace, "get", "endpointslices", "-l",
                                   "kubernetes.io/service-name=langfuse-valkey", "-o", "json").stdout)["items"]
    assert service["spec"]["ports"][0]["port"] == 6379
    assert [a for s in endpoints for e in s["endpoints"] for a in e["addresses"]], "the Service selects no pod"


def test_second_converge_changes_nothing(valkey_install):
    namespace = valkey_install[0]
    second = install(namespace, extra={"redis_mode": "valkey"})
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0


def test_evicting_policy_is_refused_before_any_change(cluster, services):
    namespace = f"it-vk-{uuid.uuid4().hex[:6]}"
    proc = install(namespace, extra={"redis_mode": "valkey", "redis_maxmemory_policy": "allkeys-lru"})
    assert proc.returncode != 0
    assert "redis_maxmemory_policy is \"allkeys-lru\"" in proc.stdout
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0


def valkey_as_the_pod_runs_it(namespace, tmp_path):
    """Runs the Valkey StatefulSet's init container command and then its server on its config, as local processes
    (Debian's redis-server, which reads Valkey's config), and checks what a client meets: no entry without the
    password, noeviction and the append-only file with it. The Secret's password is replaced by a test one; /data
    and the init container's /run/valkey by scratch directories."""
    pod = json.loads(kubectl("-n", namespace, "get", "statefulset", "langfuse-valkey", "-o", "json").stdout)["spec"]["template"]["spec"]
    text = json.loads(kubectl("-n", namespace, "get", "configmap", "langfuse-valkey-config", "-o", "json").stdout)["data"]["valkey.conf"]
    assert {"dir /data", "include /run/valkey/auth.conf"} <= set(text.splitlines()), text
    [init] = pod["initContainers"]
    assert init["command"][:2] == ["sh", "-c"], init["command"]
    run("sh", "-c", init["command"][2].replace("/run/valkey", str(tmp_path)), env={**os.environ, "VALKEY_PASSWORD": "test-only"})
    assert (tmp_path / "auth.conf").read_text() == "requirepass test-only\n" and (tmp_path / "auth.conf").stat().st_mode & 0o077 == 0
    (tmp_path / "valkey.conf").write_text(text.replace("dir /data", f"dir {tmp_path}").replace("/run/valkey", str(tmp_path)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [container] = pod["containers"]
    assert container["command"] == ["valkey-server", "/etc/valkey/valkey.conf"]
    server = subprocess.Popen(["redis-server", str(tmp_path / "valkey.conf"), "--port", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _attempt in range(50):
            got = run("redis-cli", "-p", str(port), "--no-auth-warning", "-a", "test-only",
                      "config", "get", "maxmemory-policy", check=False)
            if got.returncode == 0 and got.stdout.strip():
                break
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.1)
        assert got.stdout.split() == ["maxmemory-policy", "noeviction"]
        got = run("redis-cli", "-p", str(port), "--no-auth-warning", "-a", "test-only", "config", "get", "appendonly")
        assert got.stdout.split() == ["appendonly", "yes"]
        assert "NOAUTH" in run("redis-cli", "-p", str(port), "ping", check=False).stdout
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_config_starts_a_real_server_with_noeviction(valkey_install, tmp_path):
    valkey_as_the_pod_runs_it(valkey_install[0], tmp_path)
