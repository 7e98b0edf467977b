"""Fixtures for tests that run against the local test environment.

The environment (tests/localenv) must be up: `make localenv-up`. A test that
needs it and cannot reach it fails, it does not skip, so the suite cannot go
green without a real cluster and real services behind it.
"""
import os
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCALENV = REPO / "tests" / "localenv"


def _load_exports(script):
    """Applies the `export K=V` lines that a localenv script prints."""
    out = subprocess.run([str(LOCALENV / script), "env"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            if key == "PATH":
                os.environ["PATH"] = value.replace("$PATH", os.environ.get("PATH", ""))
            else:
                os.environ.setdefault(key, value)


_load_exports("cluster.sh")
_load_exports("services.sh")


def run(*args, check=True, timeout=120, **kwargs):
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def kubectl(*args, **kwargs):
    return run("kubectl", *args, **kwargs)


@pytest.fixture(scope="session")
def cluster():
    """The local API server; fails the test when it does not answer."""
    proc = run("kubectl", "get", "--raw", "/readyz", check=False, timeout=20)
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        pytest.fail(
            "the local Kubernetes API server does not answer (KUBECONFIG="
            f"{os.environ.get('KUBECONFIG')}): start it with `make cluster-up`.\n{proc.stderr}"
        )
    return kubectl


@pytest.fixture
def namespace(cluster):
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster("create", "namespace", name)
    yield name
    cluster("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def services():
    """Connection settings of the local data services; fails when they are down."""
    if "LOCALENV_POSTGRES_PASSWORD" not in os.environ:
        pytest.fail("the local data services are not up: start them with `make services-up`")
    return os.environ
