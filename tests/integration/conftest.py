"""Fixtures for tests that run against the local test environment.

The environment (tests/localenv) must be up: `make localenv-up`. A test that
needs it and cannot reach it fails, it does not skip, so the suite cannot go
green without a real cluster and real services behind it.
"""
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
from kubernetes import config as kube_config
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
LOCALENV = REPO / "tests" / "localenv"
sys.path.insert(0, str(LOCALENV))
from chdb_process import ChdbProcess  # noqa: E402 (tests/localenv)
# The Helm revision audit the upstream check applies to the official charts.
sys.path.insert(0, str(REPO / "tests" / "upstream"))


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

# `make integration` (tests/run-integration.sh) runs the groups of tests/integration/groups.py side by side,
# each as a pytest process of its own (`--group NAME`); BACKUP_BUCKET keeps each group's backups apart.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from groups import FULL_TIER_ONLY, GROUPS  # noqa: E402 (this directory)

# The line a test runs on unless it pins one: v4 as inventories/local pins it (chart 2.0.0, Langfuse 4.16.0), the
# default for a new install; the upgrade, restore and failure drills run on it. V3 is for what still needs v3: the
# phased jump to v4 starts from it, and v4's refusals of a v3 release are tested on it.
SUITE_LINE = {}
V3 = {"langfuse_helm_release_line": "v3", "langfuse_helm_chart_version": "1.5.41", "langfuse_helm_app_version": "3.224.1"}
BACKUP_BUCKET = "langfuse-backups" + (f"-{os.environ['LOCALENV_TEST_GROUP']}" if os.environ.get("LOCALENV_TEST_GROUP") else "")


def pytest_addoption(parser):
    parser.addoption("--group", choices=sorted(set(GROUPS.values())),
                     help="run only the files of this group (tests/integration/groups.py)")
    parser.addoption("--tier", choices=["ci", "full"], default="full",
                     help="ci leaves out the tests groups.FULL_TIER_ONLY names (what CI runs); full runs every test")


def pytest_collection_modifyitems(config, items):
    unknown = sorted({item.path.name for item in items if item.path.name not in GROUPS})
    if unknown:
        raise pytest.UsageError(f"tests/integration/groups.py has no group for {', '.join(unknown)}")
    if config.getoption("tier") == "ci":
        entries = [(key.split("::") + [""])[:2] for key in FULL_TIER_ONLY]
        drop = [item for item in items if any(item.path.name == path and item.name.startswith(name) for path, name in entries)]
        files = {item.path.name for item in items}
        stale = [f"{path}::{name}" for path, name in entries
                 if path in files and not any(item.path.name == path and item.name.startswith(name) for item in items)]
        if stale:
            raise pytest.UsageError(f"tests/integration/groups.py FULL_TIER_ONLY names no test: {', '.join(stale)}")
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = [item for item in items if item not in drop]
    wanted = config.getoption("group")
    if wanted:
        drop = [item for item in items if GROUPS[item.path.name] != wanted]
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = [item for item in items if GROUPS[item.path.name] == wanted]


def run(*args, check=True, timeout=120, **kwargs):
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def kubectl(*args, **kwargs):
    return run("kubectl", *args, **kwargs)


def playbook(name, variables, *args, inventory="local"):
    """ansible-playbook playbooks/<name>.yml -i inventories/<inventory> -e <variables as JSON> [args], on SUITE_LINE
    unless `variables` pin another."""
    variables = {"backup_cron_bucket": BACKUP_BUCKET, **SUITE_LINE, **variables}
    return run("ansible-playbook", "-i", f"inventories/{inventory}", f"playbooks/{name}.yml", "-e", json.dumps(variables),
               *args, check=False, cwd=REPO, timeout=1200)


class BackgroundPlaybook:
    """ansible-playbook started and left running (a process group of its own, output to a file), to be
    waited for, or killed the way a maintenance window kills runs: the whole group (Ctrl-C, a closed
    terminal) or the controller process alone (`kill <pid>`)."""

    def __init__(self, name, variables, *args, inventory="local", log_dir):
        variables = {"backup_cron_bucket": BACKUP_BUCKET, **SUITE_LINE, **variables}
        self.log = Path(log_dir) / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._out = open(self.log, "w")  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen(["ansible-playbook", "-i", f"inventories/{inventory}", f"playbooks/{name}.yml",
                                      "-e", json.dumps(variables), *args], cwd=REPO, stdout=self._out,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)

    @property
    def stdout(self):
        return self.log.read_text()

    def wait(self, timeout=1200):
        rc = self.proc.wait(timeout=timeout)
        self._out.close()
        return rc

    def kill(self, group=True):
        if group:
            os.killpg(self.proc.pid, 9)
        else:
            os.kill(self.proc.pid, 9)
        self.proc.wait(timeout=30)
        self._out.close()


def wait_for(what, condition, timeout=600, interval=0.3):
    """Polls `condition()` until it returns something true; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# What Watch.items lists, by the name kubectl gets it by: the API path prefix and the kind.
WATCHED = {"pods": ("api/v1", "Pod"), "deployments": ("apis/apps/v1", "Deployment"), "jobs": ("apis/batch/v1", "Job"),
           "endpointslices": ("apis/discovery.k8s.io/v1", "EndpointSlice"), "rollouts": ("apis/argoproj.io/v1alpha1", "Rollout")}


class Watch:
    """Calls `sample()` every 0.3 s on a thread of its own while its `with` block runs (a playbook, mostly),
    for what the cluster went through on the way and not only where it ended. A subclass sets `namespace`."""

    namespace = None

    def __init__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.api = None

    def _loop(self):
        while not self.stop.is_set():
            self.sample()
            time.sleep(0.3)

    def sample(self):
        raise NotImplementedError

    def items(self, *resources):
        """What `kubectl get <resources> -o json` lists in the namespace, or None when the API server does not
        answer. Read in this process: a kubectl per sample costs a tenth of a CPU second, taken from the
        playbook under watch on this two-core machine."""
        if self.api is None:
            self.api = kube_config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
        found = []
        for resource in resources:
            prefix, kind = WATCHED[resource]
            method, url, headers, _body, _post = self.api.param_serialize(
                "GET", f"/{prefix}/namespaces/{self.namespace}/{resource}", auth_settings=["BearerToken"])
            try:
                answer = self.api.call_api(method, url, header_params=headers, _request_timeout=10)
                answer.read()
            except Exception:  # noqa: BLE001 (a sample missed, as kubectl's non-zero exit was)
                return None
            if answer.status != 200:
                return None
            found += [{"kind": kind, **item} for item in json.loads(answer.data)["items"]]
        return found

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        if self.api is not None:
            self.api.close()


def restore_job_running(items):
    """Whether `items` (objects of one namespace) hold a restore Job that has not succeeded yet."""
    return any(i["kind"] == "Job" and i["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "restore"
               and not i.get("status", {}).get("succeeded") for i in items)


@contextlib.contextmanager
def installed_release(namespace, **variables):
    """install.yml into `namespace` (inventories/local, plus `variables`); yields its output, uninstalls after."""
    first = playbook("install", {"langfuse_namespace": namespace, **variables})
    assert first.returncode == 0, first.stdout[-4000:]
    try:
        yield first.stdout
    finally:
        run("helm", "uninstall", "langfuse", "-n", namespace, "--wait", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


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


# Databases of one test on the real local servers, for migration states.
PRISMA_DDL = """
CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL, "checksum" VARCHAR(64) NOT NULL, "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT, "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(), "applied_steps_count" INTEGER NOT NULL DEFAULT 0)
"""


def pg(services, database="postgres"):
    return psycopg.connect(host="127.0.0.1", port=int(services["LOCALENV_POSTGRES_PORT"]), user="postgres",
                           password=services["LOCALENV_POSTGRES_PASSWORD"], dbname=database, autocommit=True)


def ch(services, query):
    """A query to the local inventory's ClickHouse (ClickHouse 26 on chDB, the `services.sh` service)."""
    response = requests.post(f"http://127.0.0.1:{services['LOCALENV_CHDB_HTTP_PORT']}/", data=query,
                             auth=("default", services["LOCALENV_CLICKHOUSE_PASSWORD"]), timeout=30)
    assert response.ok, response.text
    return response.text


@contextlib.contextmanager
def migrated_databases(services, prefix="gate"):
    """A Postgres database and a database of the local inventory's ClickHouse, as a clean migration leaves them.

    Yields their name; drops them after, with any database a ClickHouse restore left beside (<name>_before_restore_*).
    """
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with pg(services) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with pg(services, name) as conn:
        conn.execute(PRISMA_DDL)
        conn.execute("""INSERT INTO _prisma_migrations (id, checksum, migration_name, finished_at, applied_steps_count)
                        VALUES (%s, %s, '20260709124500_add_billing_exhausted_evaluator_block_reason', now(), 1)""",
                     (str(uuid.uuid4()), "0" * 64))
    ch(services, f"CREATE DATABASE {name}")
    ch(services, f"CREATE TABLE {name}.schema_migrations (version Int64, dirty UInt8, sequence UInt64) "
                 "ENGINE = MergeTree ORDER BY sequence")
    ch(services, f"INSERT INTO {name}.schema_migrations VALUES (36, 0, 1)")
    try:
        yield name
    finally:
        with pg(services) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for database in ch(services, f"SELECT name FROM system.databases WHERE startsWith(name, '{name}')").split():
            ch(services, f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture
def databases(cluster, services):
    """A Postgres database and a ClickHouse database of this test, migrated cleanly to start with."""
    namespace = f"it-gate-{uuid.uuid4().hex[:6]}"
    with migrated_databases(services) as name:
        yield name, namespace
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


class ChdbServer(ChdbProcess):
    """tests/localenv/chdb_http.py in a process of its own: chDB behind ClickHouse's HTTP interface on 127.0.0.1.

    A real ClickHouse 26 engine where Debian's 18.16 server is too old (BACKUP/RESTORE, system.disks).
    """

    def __init__(self, path, password=None):
        super().__init__(path / "data", path / "chdb_http.log", password=password)

    def query(self, sql, **params):
        response = requests.post(f"{self.url}/", params=params, data=sql.encode(), auth=("default", self.password),
                                 timeout=120)
        if response.status_code != 200:
            raise AssertionError(f"ClickHouse (chDB) answered {response.status_code} to {sql[:200]!r}: {response.text}")
        return response.text

    def rows(self, sql):
        return [line.split("\t") for line in self.query(sql).splitlines() if line]
