"""migration_status against the real local PostgreSQL and ClickHouse, directly and through port-forwards.

Every test seeds a throwaway database with what a real migration run leaves
behind: Prisma's _prisma_migrations (the table DDL Prisma creates) and
golang-migrate's schema_migrations (one dirty row, then one clean row, per
version, as `migrate up` writes them). The module runs through `ansible`, as
a playbook would run it.
"""
import http.server
import json
import os
import re
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

from conftest import REPO, ChdbServer, kubectl, run

ANSIBLE = Path(sys.executable).parent / "ansible"
MODULE = "langfuse_ops.platform.migration_status"
PRISMA_LOCK = 72707369

# What Prisma's schema engine creates (prisma-engines, Postgres flavour).
PRISMA_DDL = """
CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)
"""
# A Prisma failure as migrate deploy records it in `logs`.
PRISMA_FAILURE_LOG = """Migration `{name}` failed to apply cleanly to the shadow database.
Error code: P3018
Error:
ERROR: column "metadata" of relation "scores" already exists
   0: sql_schema_connector::apply_migration::apply_script
           with migration_name="{name}"
             at schema-engine/connectors/sql-schema-connector/src/apply_migration.rs:106"""

APPLIED = ["20240104210051_add_model_index", "20240111152124_add_gpt_35_pricing", "20240226183642_add_scores_source"]
NEXT = "20240304123642_scores_add_metadata"


def migration_status(args, *flags, timeout=120):
    """Runs the module on localhost with `ansible`; returns its result (the JSON callback's view of it)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1")
    proc = run(str(ANSIBLE), "localhost", "-m", MODULE, "-a", json.dumps(args), *flags,
               check=False, cwd=REPO, env=env, timeout=timeout)
    try:
        return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(f"no module result in:\n{proc.stdout}\n{proc.stderr}") from exc


# --- PostgreSQL --------------------------------------------------------------

def _pg_admin(services, dbname="postgres"):
    return psycopg.connect(host=services["LOCALENV_POSTGRES_HOST"], port=services["LOCALENV_POSTGRES_PORT"],
                           user=services["LOCALENV_POSTGRES_USER"], password=services["LOCALENV_POSTGRES_PASSWORD"],
                           dbname=dbname, autocommit=True)


class PgDb:
    def __init__(self, services, name):
        self.services, self.name = services, name

    def connect(self):
        return _pg_admin(self.services, self.name)

    def args(self, **extra):
        return {"host": self.services["LOCALENV_POSTGRES_HOST"], "port": int(self.services["LOCALENV_POSTGRES_PORT"]),
                "user": self.services["LOCALENV_POSTGRES_USER"], "password": self.services["LOCALENV_POSTGRES_PASSWORD"],
                "database": self.name, **extra}

    def prisma_table(self):
        with self.connect() as conn:
            conn.execute(PRISMA_DDL)

    def migration(self, name, started_ago=3600, runtime=2, finished=True, logs=None, rolled_back=False):
        """A _prisma_migrations row as `prisma migrate deploy` (and `migrate resolve`) leave it."""
        with self.connect() as conn:
            conn.execute(
                """INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, logs,
                                                   rolled_back_at, applied_steps_count)
                   VALUES (%(id)s, %(checksum)s, %(name)s, now() - make_interval(secs => %(ago)s),
                           CASE WHEN %(finished)s THEN now() - make_interval(secs => %(ago)s - %(runtime)s) END,
                           %(logs)s, CASE WHEN %(rolled_back)s THEN now() END, CASE WHEN %(finished)s THEN 1 ELSE 0 END)""",
                {"id": str(uuid.uuid4()), "checksum": uuid.uuid4().hex * 2, "name": name, "ago": started_ago,
                 "runtime": runtime, "finished": finished, "logs": logs, "rolled_back": rolled_back})

    def applied(self, names=tuple(APPLIED)):
        self.prisma_table()
        for i, name in enumerate(names):
            self.migration(name, started_ago=86400 - i * 60)


@pytest.fixture
def pg(services):
    name = f"ms_{uuid.uuid4().hex[:10]}"
    with _pg_admin(services) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PgDb(services, name)
    with _pg_admin(services) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- ClickHouse --------------------------------------------------------------

class ChDb:
    def __init__(self, services, name):
        self.services, self.name = services, name
        self.url = f"http://{services['LOCALENV_CLICKHOUSE_HOST']}:{services['LOCALENV_CLICKHOUSE_HTTP_PORT']}/"
        self.auth = (services["LOCALENV_CLICKHOUSE_USER"], services["LOCALENV_CLICKHOUSE_PASSWORD"])
        self.sequence = time.time_ns()

    def query(self, sql):
        response = requests.post(self.url, data=sql.encode(), auth=self.auth, timeout=30)
        assert response.status_code == 200, response.text
        return response.text

    def args(self, **extra):
        return {"host": self.services["LOCALENV_CLICKHOUSE_HOST"], "port": int(self.services["LOCALENV_CLICKHOUSE_HTTP_PORT"]),
                "user": self.auth[0], "password": self.auth[1], "database": self.name, **extra}

    def migrations_table(self):
        # As golang-migrate creates it with x-migrations-table-engine=MergeTree (Langfuse's unclustered mode).
        self.query(f"CREATE TABLE {self.name}.schema_migrations (version Int64, dirty UInt8, sequence UInt64) "
                   "Engine=MergeTree ORDER BY sequence")

    def set_version(self, version, dirty):
        self.sequence += 1
        self.query(f"INSERT INTO {self.name}.schema_migrations (version, dirty, sequence) "
                   f"VALUES ({version}, {int(dirty)}, {self.sequence})")

    def up(self, to, start=1):
        """What `migrate up` writes: each version dirty first, clean once its SQL ran."""
        for version in range(start, to + 1):
            self.set_version(version, True)
            self.set_version(version, False)


@pytest.fixture
def ch(services):
    db = ChDb(services, f"ms_{uuid.uuid4().hex[:10]}")
    db.query(f"CREATE DATABASE {db.name}")
    yield db
    db.query(f"DROP DATABASE IF EXISTS {db.name}")


def once(condition, action, timeout=60):
    """Runs action in the background as soon as condition() holds (or after `timeout`, for the test to fail
    on): a migration that finishes while the module waits, at a point of the module's polling and not of the
    clock, since under load the module may take seconds just to start."""
    def watch():
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        action()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def module_sessions(pg):
    """condition(): whether the module has opened two sessions (polled twice) in pg's database."""
    seen = set()

    def polled_twice():
        with pg.connect() as conn:
            seen.update(conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE datname = %s AND "
                                     "application_name = 'langfuse_ops.migration_status'", [pg.name]).fetchall())
        return len(seen) >= 2
    return polled_twice


class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards HTTP requests to the local ClickHouse and counts the reads of schema_migrations' rows."""

    def __init__(self, upstream):
        self.upstream, self.reads = upstream, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if re.search(rb"FROM\s+\S*schema_migrations", body + self.path.encode()):
                    self.server.reads += 1
                answer = requests.request(self.command, self.server.upstream + self.path.lstrip("/"), data=body, timeout=30,
                                          headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
                self.send_response(answer.status_code)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


# --- tests -------------------------------------------------------------------

def test_fresh_databases_are_fresh_not_errors(pg, ch):
    result = migration_status({"postgres": pg.args(), "clickhouse": ch.args()})
    assert not result.get("failed"), result
    assert result["postgres"]["fresh"] is True and result["postgres"]["applied_count"] == 0
    assert result["clickhouse"]["fresh"] is True and result["clickhouse"]["table_exists"] is False
    assert result["clickhouse"]["server_version"].startswith("18.16")
    assert result["settled"] is True and result["changed"] is False


def test_clean_history_is_reported_and_passes_the_gates(pg, ch):
    pg.applied()
    ch.migrations_table()
    ch.up(37)
    args = {"postgres": pg.args(), "clickhouse": ch.args(), "min_clickhouse_version": 37,
            "expect_postgres_migration": APPLIED[1], "expect_replicated": False}
    result = migration_status(args)
    assert not result.get("failed"), result
    postgres, clickhouse = result["postgres"], result["clickhouse"]
    assert postgres["fresh"] is False and postgres["applied_count"] == 3
    assert postgres["latest_migration"] == APPLIED[-1] and postgres["latest_finished_at"]
    assert postgres["failed"] == postgres["in_progress"] == postgres["rolled_back"] == []
    assert postgres["migrate_lock_held"] is False and postgres["connected_via"] == "direct"
    # Every version has an older dirty row: only the highest sequence counts.
    assert (clickhouse["version"], clickhouse["dirty"], clickhouse["engine"], clickhouse["replicated"]) == (37, False, "MergeTree", False)
    assert clickhouse["sequence"] == ch.sequence and clickhouse["host"]

    checked = migration_status(args, "--check")
    assert not checked.get("failed"), checked
    assert checked["postgres"] == postgres and checked["clickhouse"] == clickhouse


def test_failed_postgres_migration_fails_with_prismas_log_and_the_resolve_step(pg):
    pg.applied()
    pg.migration(NEXT, started_ago=600, finished=False, logs=PRISMA_FAILURE_LOG.format(name=NEXT))
    result = migration_status({"postgres": pg.args()})
    assert result["failed"] is True
    [failed] = result["postgres"]["failed"]
    assert failed["migration_name"] == NEXT and failed["reason"] == "failed" and "P3018" in failed["logs"]
    assert result["postgres"]["applied_count"] == 3 and result["postgres"]["latest_migration"] == APPLIED[-1]
    msg = result["msg"]
    assert f"Postgres migration {NEXT} failed" in msg
    assert 'column "metadata" of relation "scores" already exists' in msg
    assert f"prisma migrate resolve --rolled-back {NEXT} --schema=./packages/shared/prisma/schema.prisma" in msg

    assert not migration_status({"postgres": pg.args(), "expect_no_failed": False}).get("failed")


def test_rolled_back_then_reapplied_migration_is_healthy(pg):
    pg.applied()
    pg.migration(NEXT, started_ago=900, finished=False, logs=PRISMA_FAILURE_LOG.format(name=NEXT), rolled_back=True)
    pg.migration(NEXT, started_ago=300)
    result = migration_status({"postgres": pg.args(), "expect_postgres_migration": NEXT})
    assert not result.get("failed"), result
    [rolled_back] = result["postgres"]["rolled_back"]
    assert rolled_back["migration_name"] == NEXT and rolled_back["reapplied"] is True
    assert result["postgres"]["applied_count"] == 4 and result["postgres"]["latest_migration"] == NEXT


def test_rolled_back_migration_not_yet_reapplied_is_not_applied(pg):
    pg.applied()
    pg.migration(NEXT, started_ago=900, finished=False, logs="boom", rolled_back=True)
    assert not migration_status({"postgres": pg.args()}).get("failed")
    result = migration_status({"postgres": pg.args(), "expect_postgres_migrations": [NEXT]})
    assert result["failed"] is True
    assert f"Postgres migration {NEXT} is not applied (rolled back; latest applied: {APPLIED[-1]})" in result["msg"]
    assert "prisma migrate deploy --schema=./packages/shared/prisma/schema.prisma" in result["msg"]


def test_migration_whose_process_died_counts_as_interrupted(pg):
    pg.applied()
    pg.migration(NEXT, started_ago=3600, finished=False)  # no logs, nobody holds Prisma's lock
    result = migration_status({"postgres": pg.args()})
    assert result["failed"] is True
    assert result["postgres"]["failed"][0]["reason"] == "interrupted"
    assert f"Postgres migration {NEXT} was interrupted" in result["msg"]
    assert f"--rolled-back {NEXT}" in result["msg"]
    # Within in_progress_grace the same row is taken for a migration still running.
    young = migration_status({"postgres": pg.args(), "in_progress_grace": 7200})
    assert not young.get("failed"), young
    assert young["settled"] is False and young["postgres"]["in_progress"][0]["migration_name"] == NEXT


@pytest.fixture
def prisma_lock(pg):
    """A session holding Prisma Migrate's advisory lock in the test database, as `migrate deploy` does."""
    conn = pg.connect()
    conn.execute("SELECT pg_advisory_lock(%s)", [PRISMA_LOCK])
    yield conn
    conn.close()


def test_migration_in_progress_is_reported_not_failed_and_waited_for(pg, prisma_lock):
    pg.applied()
    # Older than in_progress_grace: the lock is what says it is running.
    pg.migration(NEXT, started_ago=1800, finished=False)
    once = migration_status({"postgres": pg.args()})
    assert not once.get("failed"), once
    assert once["settled"] is False and once["postgres"]["migrate_lock_held"] is True
    assert [e["migration_name"] for e in once["postgres"]["in_progress"]] == [NEXT]
    assert once["postgres"]["failed"] == []

    start = time.monotonic()
    timed_out = migration_status({"postgres": pg.args(), "wait": True, "wait_timeout": 3, "wait_interval": 1})
    assert timed_out["failed"] is True and time.monotonic() - start >= 3
    assert f"Postgres migration {NEXT} is still in progress after waiting" in timed_out["msg"]
    assert timed_out["settled"] is False


def test_wait_returns_once_the_migration_finished(pg, prisma_lock):
    pg.applied()
    pg.migration(NEXT, started_ago=5, finished=False)

    def finish():
        with pg.connect() as conn:
            conn.execute("UPDATE _prisma_migrations SET finished_at = now(), applied_steps_count = 1 WHERE migration_name = %s", [NEXT])
        prisma_lock.execute("SELECT pg_advisory_unlock(%s)", [PRISMA_LOCK])

    once(module_sessions(pg), finish)
    result = migration_status({"postgres": pg.args(), "wait": True, "wait_timeout": 60, "wait_interval": 1,
                               "expect_postgres_migration": NEXT})
    assert not result.get("failed"), result
    assert result["settled"] is True and result["waited"] >= 2
    assert result["postgres"]["latest_migration"] == NEXT and result["postgres"]["migrate_lock_held"] is False


def test_dirty_clickhouse_fails_with_the_force_command(ch):
    ch.migrations_table()
    ch.up(37)
    ch.set_version(38, True)
    result = migration_status({"clickhouse": ch.args()})
    assert result["failed"] is True
    assert (result["clickhouse"]["version"], result["clickhouse"]["dirty"]) == (38, True)
    msg = result["msg"]
    assert f"ClickHouse migration 38 is dirty (database {ch.name}, schema_migrations engine MergeTree" in msg
    assert (f'migrate -source file://clickhouse/migrations/unclustered -database "${{CLICKHOUSE_MIGRATION_URL}}?username='
            f'${{CLICKHOUSE_USER}}&password=${{CLICKHOUSE_PASSWORD}}&database={ch.name}&x-multi-statement=true'
            '&x-migrations-table-engine=MergeTree" force 37') in msg
    assert not migration_status({"clickhouse": ch.args(), "expect_not_dirty": False}).get("failed")


def test_wait_for_a_dirty_version_to_clear(ch):
    ch.migrations_table()
    ch.up(37)
    ch.set_version(38, True)
    proxy = CountingProxy(ch.url)
    try:
        once(lambda: proxy.reads >= 2, lambda: ch.set_version(38, False))
        result = migration_status({"clickhouse": ch.args(port=proxy.server_address[1]), "wait": True, "wait_timeout": 60,
                                   "wait_interval": 1, "min_clickhouse_version": 38})
    finally:
        proxy.shutdown()
    assert not result.get("failed"), result
    assert (result["clickhouse"]["version"], result["clickhouse"]["dirty"], result["settled"]) == (38, False, True)
    assert result["waited"] >= 2


def test_still_dirty_after_waiting_fails(ch):
    ch.migrations_table()
    ch.up(2)
    ch.set_version(3, True)
    result = migration_status({"clickhouse": ch.args(), "wait": True, "wait_timeout": 2, "wait_interval": 1})
    assert result["failed"] is True and result["settled"] is False
    assert "ClickHouse migration 3 is dirty and still is after waiting" in result["msg"]
    assert "force 2`" in result["msg"]


def test_version_and_engine_gates(ch):
    ch.migrations_table()
    ch.up(37)
    result = migration_status({"clickhouse": ch.args(), "min_clickhouse_version": 46, "expect_replicated": True})
    assert result["failed"] is True and result["clickhouse"]["version"] == 37
    assert f"ClickHouse schema in database {ch.name} is at version 37, below the required version 46" in result["msg"]
    assert "CLICKHOUSE_CLUSTER_ENABLED=false" in result["msg"]
    assert len(result["problems"]) == 2


def test_bad_credentials_are_named_and_retried_while_waiting(pg, ch):
    result = migration_status({"clickhouse": ch.args(password="not-the-password")})
    assert result["failed"] is True and "Wrong password for user default" in result["msg"]
    start = time.monotonic()
    result = migration_status({"postgres": pg.args(password="not-the-password"), "wait": True, "wait_timeout": 2, "wait_interval": 1})
    assert result["failed"] is True and time.monotonic() - start >= 2
    assert "password authentication failed" in result["msg"] and "(waited 2s)" in result["msg"]


def test_passwords_stay_out_of_verbose_output(pg, ch, services):
    pg.applied()
    ch.migrations_table()
    ch.up(1)
    args = {"postgres": pg.args(), "clickhouse": ch.args()}
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    proc = run(str(ANSIBLE), "localhost", "-m", MODULE, "-a", json.dumps(args), "-vvv", check=False, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    output = proc.stdout + proc.stderr
    assert '"applied_count": 3' in output or "applied_count: 3" in output
    for secret in (services["LOCALENV_POSTGRES_PASSWORD"], services["LOCALENV_CLICKHOUSE_PASSWORD"]):
        assert secret not in output


SERVICE_AND_POD = """
apiVersion: v1
kind: Service
metadata: {name: data}
spec:
  selector: {app: data}
  ports:
    - {name: postgres, port: 5432, targetPort: postgresql}
    - {name: http, port: 8123, targetPort: 8123}
---
apiVersion: v1
kind: Pod
metadata:
  name: data-0
  labels: {app: data}
spec:
  containers:
    - name: data
      image: example.invalid/data:1
      ports: [{name: postgresql, containerPort: 5432}, {name: http, containerPort: 8123}]
"""


def test_through_the_api_servers_port_forward(namespace, pg, ch):
    """KWOK sends pod ports 5432/8123 on to the local PostgreSQL/ClickHouse: the module's forward path runs for real."""
    run("kubectl", "-n", namespace, "apply", "-f", "-", input=SERVICE_AND_POD)
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/data-0", "--timeout=60s")
    pg.applied()
    pg.migration(NEXT, started_ago=600, finished=False, logs=PRISMA_FAILURE_LOG.format(name=NEXT))
    ch.migrations_table()
    ch.up(37)
    forward = {"namespace": namespace, "service": "data"}
    # Direct host/port point nowhere useful: only the forward can reach the servers.
    pg_args = dict(pg.args(), port=5432, forward=forward)
    del pg_args["host"]
    ch_args = dict(ch.args(), port=8123, forward=forward)
    del ch_args["host"]
    kubeconfig = {"kubeconfig": os.environ["KUBECONFIG"]}

    result = migration_status({"postgres": pg_args, "clickhouse": ch_args, **kubeconfig})
    assert result["failed"] is True
    assert result["postgres"]["connected_via"] == f"pod {namespace}/data-0:5432"
    assert result["clickhouse"]["connected_via"] == f"pod {namespace}/data-0:8123"
    assert result["postgres"]["failed"][0]["migration_name"] == NEXT and result["postgres"]["applied_count"] == 3
    assert (result["clickhouse"]["version"], result["clickhouse"]["dirty"]) == (37, False)
    assert f"--rolled-back {NEXT}" in result["msg"]

    by_pod = migration_status({"clickhouse": dict(ch_args, forward={"namespace": namespace, "pod": "data-0"}), **kubeconfig})
    assert not by_pod.get("failed"), by_pod
    assert by_pod["clickhouse"]["version"] == 37

    nothing_there = migration_status({"postgres": dict(pg_args, port=5433, forward={"namespace": namespace, "pod": "data-0"}),
                                      **kubeconfig})
    assert nothing_there["failed"] is True
    assert f"port-forward to {namespace}/data-0:5433 failed" in nothing_there["msg"]


def test_service_without_ready_pods_is_named(namespace, ch):
    run("kubectl", "-n", namespace, "apply", "-f", "-", input="""
apiVersion: v1
kind: Service
metadata: {name: clickhouse}
spec:
  selector: {app: clickhouse}
  ports: [{name: http, port: 8123}]
""")
    result = migration_status({"clickhouse": dict(ch.args(), forward={"namespace": namespace, "service": "clickhouse"}),
                               "kubeconfig": os.environ["KUBECONFIG"]})
    assert result["failed"] is True
    assert f"no Ready pod behind Service {namespace}/clickhouse" in result["msg"]


# The table Langfuse's Prisma schema creates for the worker's background migrations.
BACKGROUND_DDL = """
CREATE TABLE "background_migrations" (
    "id" TEXT NOT NULL PRIMARY KEY, "name" TEXT NOT NULL UNIQUE, "script" TEXT NOT NULL, "args" JSONB NOT NULL,
    "finished_at" TIMESTAMP(3), "failed_at" TIMESTAMP(3), "failed_reason" TEXT, "worker_id" TEXT, "locked_at" TIMESTAMP(3))
"""


def test_background_migrations_gate_names_the_unfinished_and_failed_ones(pg):
    pg.applied()
    args = {"postgres": pg.args(), "expect_background_migrations_done": True}
    before = migration_status(args)  # no table yet: a Langfuse older than background migrations
    assert not before.get("failed"), before
    assert before["postgres"]["background_migrations"]["table_exists"] is False
    with pg.connect() as conn:
        conn.execute(BACKGROUND_DDL)
        for name, state in (("20241024_1730_migrate_traces_from_pg_to_ch", "finished"),
                            ("20260301_v4_backfill_events_root_spans", "running"),
                            ("20260302_v4_backfill_observations", "failed")):
            conn.execute(
                """INSERT INTO background_migrations (id, name, script, args, finished_at, failed_at, failed_reason, locked_at)
                   VALUES (%s, %s, 'script', '{}', CASE WHEN %s = 'finished' THEN now() END,
                           CASE WHEN %s = 'failed' THEN now() END, CASE WHEN %s = 'failed' THEN 'out of memory' END,
                           CASE WHEN %s = 'running' THEN now() END)""",
                (str(uuid.uuid4()), name, state, state, state, state))
    result = migration_status(args)
    assert result.get("failed"), result
    assert result["postgres"]["background_migrations"]["finished"] == ["20241024_1730_migrate_traces_from_pg_to_ch"]
    assert "Background migration 20260302_v4_backfill_observations failed" in result["msg"] and "out of memory" in result["msg"]
    assert "Background migration 20260301_v4_backfill_events_root_spans has not finished: running since" in result["msg"]
    # Read without the gate, the same state is reported and nothing fails.
    assert not migration_status({"postgres": pg.args()}).get("failed")
    with pg.connect() as conn:
        conn.execute("UPDATE background_migrations SET finished_at = now(), failed_at = NULL, failed_reason = NULL, locked_at = NULL")
    done = migration_status(args)
    assert not done.get("failed"), done
    assert len(done["postgres"]["background_migrations"]["finished"]) == 3


def test_clickhouse_disk_headroom_is_read_from_a_modern_engine(tmp_path):
    """system.disks came after Debian's ClickHouse 18.16, so the real engine here is chDB (26.x) behind its HTTP front."""
    server = ChdbServer(tmp_path)
    try:
        server.query("CREATE DATABASE langfuse")
        server.query("CREATE TABLE langfuse.traces (id String, input String) ENGINE = MergeTree ORDER BY id")
        server.query("INSERT INTO langfuse.traces SELECT toString(number), repeat('x', 200) FROM numbers(20000)")
        port = int(server.url.rsplit(":", 1)[1])
        args = {"clickhouse": {"host": "127.0.0.1", "port": port, "user": "default", "password": server.password,
                               "database": "langfuse"}, "clickhouse_disk_factor": 3}
        result = migration_status(args)
        assert not result.get("failed"), result
        disk = result["clickhouse"]["disk"]
        used = int(server.rows("SELECT sum(bytes_on_disk) FROM system.parts WHERE active")[0][0])
        assert disk["bytes_on_disk"] == used > 0 and disk["needed_free"] == 2 * used and disk["enough"] is True
        assert disk["free"] == max(d["free_space"] for d in disk["disks"])
        # Ask for twice the free space (needed_free = (factor - 1) * used): the gate refuses, with the figures. Asking
        # for just `used` bytes more than was free failed in CI, where the other group freed more than that meanwhile.
        refused = migration_status(dict(args, clickhouse_disk_factor=2 * disk["free"] / used + 1))
        assert refused.get("failed") and "free on its roomiest disk" in refused["msg"] and "historic backfill" in refused["msg"]
    finally:
        server.close()


def test_clickhouse_disk_headroom_on_a_server_without_system_disks_is_an_error_not_a_pass(ch):
    result = migration_status({"clickhouse": ch.args(), "clickhouse_disk_factor": 3})
    assert result.get("failed") and "system.disks" in result["msg"], result
