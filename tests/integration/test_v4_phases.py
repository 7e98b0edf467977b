"""The v3 -> v4 migration in upstream's phases, on the local control plane: one install walked through them.

infra (on v3: the v4 floors and ClickHouse's disk headroom, read from a real ClickHouse 26 engine, chDB,
since Debian's 18.16 has no system.disks) -> dual (v4 writing both table sets) -> a lossless rollback to
v3 -> dual again -> backfill -> cutover (events_only, confirmed, after the background migrations) -> no
rollback. Each phase is its own run; the state is the ConfigMap langfuse-v4-migration. The databases are
the test's own (the cut-over gate reads background_migrations there).
"""
import contextlib
import json
import sys
import threading
import uuid

import pytest

from conftest import REPO, V3, ChdbServer, ch, installed_release, kubectl, pg, playbook, run, PRISMA_DDL
from release_audit import audit, revisions
from test_install import recap
from test_upgrade_v4 import V4, changed_tasks, secrets_of

QUICK = {"upgrade_skip_backup": True, "upgrade_observe_seconds": 5, "upgrade_canary_observe_seconds": 5}
BACKGROUND_DDL = """
CREATE TABLE "background_migrations" (
    "id" TEXT NOT NULL PRIMARY KEY, "name" TEXT NOT NULL UNIQUE, "script" TEXT NOT NULL, "args" JSONB NOT NULL,
    "finished_at" TIMESTAMP(3), "failed_at" TIMESTAMP(3), "failed_reason" TEXT, "worker_id" TEXT, "locked_at" TIMESTAMP(3))
"""


@pytest.fixture(scope="module")
def walk(cluster, services, tmp_path_factory):
    """A v3 install on databases of its own; yields (namespace, run(phase, **extra))."""
    name = f"ph_{uuid.uuid4().hex[:8]}"
    with pg(services) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with pg(services, name) as conn:
        conn.execute(PRISMA_DDL)
        conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name, finished_at, applied_steps_count) "
                     "VALUES (%s, %s, '20260709124500_add_billing_exhausted_evaluator_block_reason', now(), 1)",
                     (str(uuid.uuid4()), "0" * 64))
        conn.execute(BACKGROUND_DDL)
    ch(services, f"CREATE DATABASE {name}")
    ch(services, f"CREATE TABLE {name}.schema_migrations (version Int64, dirty UInt8, sequence UInt64) "
                 "ENGINE = MergeTree ORDER BY sequence")
    ch(services, f"INSERT INTO {name}.schema_migrations VALUES (36, 0, 1)")
    databases = {"postgres_database": name, "clickhouse_operator_database": name}
    namespace = f"it-ph-{uuid.uuid4().hex[:6]}"

    def upgrade(phase="", **extra):
        return playbook("upgrade", {"langfuse_namespace": namespace, **V4, **QUICK, **databases,
                                    **({"upgrade_phase": phase} if phase else {}), **extra})

    try:
        with installed_release(namespace, **V3, **databases):
            yield namespace, upgrade, name
    finally:
        with pg(services) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        ch(services, f"DROP DATABASE IF EXISTS {name}")


def state(namespace):
    proc = kubectl("-n", namespace, "get", "configmap", "langfuse-v4-migration", "-o", "json", check=False)
    return json.loads(proc.stdout)["data"] if proc.returncode == 0 else None


def env(namespace, component):
    dep = json.loads(kubectl("-n", namespace, "get", "deployment", f"langfuse-{component}", "-o", "json").stdout)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    return container["image"], {e["name"]: e.get("value") for e in container.get("env", [])}


def text(proc):
    return " ".join(proc.stdout.split())


def test_the_jump_without_a_phase_is_refused_and_changes_nothing(walk):
    namespace, upgrade = walk[0], walk[1]
    proc = upgrade()
    assert proc.returncode != 0
    assert "is the v3 -> v4 migration. It runs in phases" in text(proc) and "Run -e upgrade_phase=infra" in text(proc)
    assert len(revisions(namespace)) == 1 and state(namespace) is None


def test_install_with_the_new_v4_pins_keeps_a_v3_release_on_its_line(walk):
    # The inventories pin v4 for new installs: an install still on v3 whose inventory takes those pins must not
    # jump to v4's one-way events_only by install.yml (a release of one revision, as after a first install).
    namespace = walk[0]
    proc = playbook("install", {"langfuse_namespace": namespace, **walk_databases(walk), **V4, "langfuse_helm_app_version": "4.16.0"})
    said = text(proc)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert (f"Helm release langfuse in {namespace} runs Langfuse 3.224.1 (langfuse-1.5.41, line v3), and the inventory "
            "pins line v4 (chart 2.0.0, Langfuse 4.16.0). install.yml does not move a release") in said, proc.stdout[-3000:]
    assert "ansible-playbook playbooks/upgrade.yml -e upgrade_phase=infra" in said
    assert 'langfuse_helm_release_line: v3, langfuse_helm_chart_version: "1.5.41", langfuse_helm_app_version: "3.224.1"' in said
    assert len(revisions(namespace)) == 1
    assert env(namespace, "web")[0] == "langfuse/langfuse:3.224.1" and env(namespace, "worker")[0].endswith(":3.224.1")


def test_infra_refuses_a_clickhouse_without_room_for_the_backfill_then_records(walk, services, tmp_path):
    namespace, upgrade, name = walk
    server = ChdbServer(tmp_path, password=services["LOCALENV_CLICKHOUSE_PASSWORD"])
    try:
        server.query(f"CREATE DATABASE {name}")
        server.query(f"CREATE TABLE {name}.traces (id String, input String) ENGINE = MergeTree ORDER BY id")
        server.query(f"INSERT INTO {name}.traces SELECT toString(number), repeat('x', 100) FROM numbers(10000)")
        chdb = {"clickhouse_operator_external": {"host": "127.0.0.1", "http_port": server.port, "native_port": 19000,
                                                 "secure": False, "cluster_enabled": False}}
        refused = upgrade("infra", upgrade_v4_disk_factor=1e12, **chdb)
        assert refused.returncode != 0
        assert "free on its roomiest disk" in text(refused) and "historic backfill" in text(refused), refused.stdout[-3000:]
        assert state(namespace) is None
        proc = upgrade("infra", **chdb)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "phase infra, checks passed, the release left as it was" in text(proc)
    assert state(namespace)["phase"] == "infra" and len(revisions(namespace)) == 1


def test_dual_moves_to_v4_writing_both_table_sets(walk):
    namespace, upgrade = walk[0], walk[1]
    proc = upgrade("dual")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Health: OK, version 4.4.0" in proc.stdout and "v3 -> v4 migration: phase dual reached now" in text(proc)
    for component in ("web", "worker"):
        image, variables = env(namespace, component)
        assert image.endswith(":4.4.0")
        assert variables["LANGFUSE_MIGRATION_V4_WRITE_MODE"] == "dual"
        assert variables["LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"] == "false"
    # The role's post-renderer: the worker's liveness reads event propagation while the dual write runs.
    worker = json.loads(kubectl("-n", namespace, "get", "deployment", "langfuse-worker", "-o", "json").stdout)
    liveness = worker["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert liveness["httpGet"]["path"] == "/api/health?failIfEventPropagationStuck=true" and liveness["initialDelaySeconds"] >= 60
    recorded = state(namespace)
    assert (recorded["phase"], recorded["v3_revision"], recorded["v3_version"]) == ("dual", "1", "3.224.1")
    assert [(h["phase"], h["state"]) for h in json.loads(recorded["history"])] == [
        ("infra", "done"), ("dual", "started"), ("dual", "done")]
    rows = audit(revisions(namespace), secrets_of(namespace), cluster_enabled=False)
    assert [r for r in rows if r["problems"]] == [] and [r["moved"] for r in rows] == ["install", "no image", "worker", "web"]


def test_no_run_cuts_over_silently(walk):
    namespace, upgrade = walk[0], walk[1]
    again = playbook("install", {"langfuse_namespace": namespace, **V4, **walk_databases(walk)})
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)["changed"] == 0, changed_tasks(again.stdout)
    assert "phase dual since" in text(again) and "write mode dual until upgrade.yml -e upgrade_phase=cutover" in text(again)
    refused = upgrade("cutover")
    assert refused.returncode != 0 and "-e upgrade_confirm_cutover=" + namespace in text(refused)
    early = upgrade("cutover", upgrade_confirm_cutover=namespace)
    assert early.returncode != 0 and "the historic backfill has not run" in text(early)
    assert env(namespace, "web")[1]["LANGFUSE_MIGRATION_V4_WRITE_MODE"] == "dual" and state(namespace)["phase"] == "dual"


def test_a_lost_record_is_refused_with_both_facts_then_repaired_from_the_release(walk):
    namespace = walk[0]
    kubectl("-n", namespace, "delete", "configmap", "langfuse-v4-migration")
    count = len(revisions(namespace))
    refused = playbook("install", {"langfuse_namespace": namespace, **V4, **walk_databases(walk)})
    assert refused.returncode != 0
    said = text(refused)
    assert ("no phase recorded (ConfigMap missing or empty), but the release runs Langfuse web 4.4.0 / worker 4.4.0 in write "
            "mode dual") in said, refused.stdout[-3000:]
    assert ("This run changed nothing. If the release is right, rewrite the record from it (phase dual) with: ansible-playbook "
            f"playbooks/install.yml -e langfuse_helm_v4_record_repair={namespace}") in said
    assert len(revisions(namespace)) == count and state(namespace) is None
    assert env(namespace, "web")[1]["LANGFUSE_MIGRATION_V4_WRITE_MODE"] == "dual"
    repaired = playbook("install", {"langfuse_namespace": namespace, **V4, **walk_databases(walk),
                                    "langfuse_helm_v4_record_repair": namespace})
    assert repaired.returncode == 0, repaired.stdout[-4000:]
    recorded = state(namespace)
    assert (recorded["phase"], recorded["state"], recorded["v3_revision"]) == ("dual", "done", "1")
    assert json.loads(recorded["history"])[-1]["repaired_from"] == "nothing"
    assert env(namespace, "web")[1]["LANGFUSE_MIGRATION_V4_WRITE_MODE"] == "dual"
    assert len(revisions(namespace)) == count


def test_rollback_from_dual_returns_to_v3(walk):
    namespace, upgrade = walk[0], walk[1]
    proc = upgrade("rollback")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "rolled back to the v3 revision 1" in text(proc)
    image, variables = env(namespace, "web")
    assert image == "langfuse/langfuse:3.224.1" and "LANGFUSE_MIGRATION_V4_WRITE_MODE" not in variables
    assert json.loads(run("helm", "list", "-n", namespace, "-o", "json").stdout)[0]["chart"] == "langfuse-1.5.41"
    assert state(namespace)["phase"] == "infra"


def test_backfill_then_a_gated_confirmed_cutover_and_no_way_back(walk, services):
    namespace, upgrade, name = walk
    assert upgrade("dual").returncode == 0
    assert state(namespace)["v3_revision"] == str(len(revisions(namespace)) - 3)  # the rollback's revision
    proc = upgrade("backfill", upgrade_v4_disk_factor=0)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert env(namespace, "worker")[1]["LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"] == "true"
    with pg(services, name) as conn:
        conn.execute("INSERT INTO background_migrations (id, name, script, args, locked_at) "
                     "VALUES ('1', '20260301_v4_backfill_events_from_traces', 's', '{}', now())")
    blocked = upgrade("cutover", upgrade_confirm_cutover=namespace)
    assert blocked.returncode != 0
    assert "Background migration 20260301_v4_backfill_events_from_traces has not finished" in text(blocked)
    with pg(services, name) as conn:
        conn.execute("UPDATE background_migrations SET finished_at = now(), locked_at = NULL")
    proc = upgrade("cutover", upgrade_confirm_cutover=namespace)
    assert proc.returncode == 0, proc.stdout[-4000:]
    for component in ("web", "worker"):
        assert "LANGFUSE_MIGRATION_V4_WRITE_MODE" not in env(namespace, component)[1]  # events_only, v4's default
    assert state(namespace)["phase"] == "cutover"
    refused = upgrade("rollback")
    assert refused.returncode != 0 and "No rollback to v3" in text(refused) and "point of commitment" in text(refused)
    assert state(namespace)["phase"] == "cutover" and env(namespace, "web")[0].endswith(":4.4.0")


WORKER_START_SECONDS = 15


@contextlib.contextmanager
def worker_starts(namespace, services, database):
    """Langfuse's background-migration manager (tests/standins/background_migrations.py), run each time the worker
    Deployment rolls out a new template, with that template's env, as a starting worker runs it. Yields the list of what
    it ran."""
    sys.path.insert(0, str(REPO / "tests" / "standins"))
    import background_migrations  # noqa: E402 pylint: disable=import-outside-toplevel

    ran, stop = [], threading.Event()

    def generation():
        return json.loads(kubectl("-n", namespace, "get", "deployment", "langfuse-worker", "-o", "json").stdout)[
            "metadata"]["generation"]

    def watch():
        seen = generation()
        with pg(services, database) as conn:
            while not stop.wait(0.5):
                now = generation()
                if now != seen:
                    seen = now
                    # A worker takes a while to start (Node, Prisma's connection) before its manager looks for work.
                    if stop.wait(WORKER_START_SECONDS):
                        return
                    ran.extend(background_migrations.run_at_worker_start(
                        conn, lambda sql: ch(services, sql), database, env(namespace, "worker")[1]))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield ran
    finally:
        stop.set()
        thread.join(timeout=10)


def scratch_rows(services, name):
    return int(ch(services, f"SELECT count() FROM system.parts WHERE active AND database = '{name}' "
                            "AND table = 'observations_pid_tid_sorting'").strip() or 0), ch(
        services, f"EXISTS TABLE {name}.observations_pid_tid_sorting").strip()


def test_the_scratch_drop_waits_for_step_4_asks_first_and_says_what_it_freed(walk, services):
    """Phase drop_scratch after the cut-over: upstream's step 5, turned on only once step 4 has finished (step 5 would
    otherwise mark itself failed for good), after a named confirmation; the worker's manager (the stand-in) drops the
    table; the run says what that freed; the gate stays in every later release."""
    namespace, upgrade, name = walk
    gate = "LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES"
    sys.path.insert(0, str(REPO / "tests" / "standins"))
    import background_migrations  # noqa: E402 pylint: disable=import-outside-toplevel

    early = upgrade("drop_scratch", upgrade_confirm_drop_scratch=namespace)
    assert early.returncode != 0 and "is not registered: Langfuse 4.16.0 or later registers it" in text(early), early.stdout[-3000:]
    with pg(services, name) as conn:
        background_migrations.register_v4_16_rows(conn)
        conn.execute("UPDATE background_migrations SET locked_at = now() WHERE name LIKE '%step_4%'")
    ch(services, f"CREATE TABLE {name}.observations_pid_tid_sorting (project_id String, id String) "
                 "ENGINE = MergeTree ORDER BY (project_id, id)")
    for part in range(3):
        ch(services, f"INSERT INTO {name}.observations_pid_tid_sorting SELECT 'p{part}', toString(number) FROM numbers(50000)")
    count = len(revisions(namespace))

    running = upgrade("drop_scratch", upgrade_confirm_drop_scratch=namespace)
    assert running.returncode != 0, running.stdout[-3000:]
    assert "(20260701_v4_step_4_backfill_events_full_from_dataset_run_items) is running (locked at" in text(running)
    assert "mark the drop as failed for good" in text(running)
    with pg(services, name) as conn:
        conn.execute("UPDATE background_migrations SET finished_at = now(), locked_at = NULL WHERE name LIKE '%step_4%'")
    unconfirmed = upgrade("drop_scratch")
    assert unconfirmed.returncode != 0, unconfirmed.stdout[-3000:]
    assert "observations_pid_tid_sorting holds 150000 rows in 3 active parts (" in text(unconfirmed)
    assert f"re-run with -e upgrade_confirm_drop_scratch={namespace}" in text(unconfirmed)
    assert gate not in env(namespace, "worker")[1] and len(revisions(namespace)) == count
    assert state(namespace)["phase"] == "cutover" and scratch_rows(services, name) == (3, "1")

    with worker_starts(namespace, services, name) as ran:
        proc = upgrade("drop_scratch", upgrade_confirm_drop_scratch=namespace)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert ran == ["20260701_v4_step_5_drop_pid_tid_sorting_tables"]
    assert scratch_rows(services, name) == (0, "0")
    assert "Step 5 dropped observations_pid_tid_sorting in " + namespace + ": freed 150000 rows, " in text(proc)
    assert env(namespace, "worker")[1][gate] == "true" and env(namespace, "web")[1][gate] == "true"
    assert (state(namespace)["phase"], state(namespace)["state"]) == ("drop_scratch", "done")
    with pg(services, name) as conn:
        assert conn.execute("SELECT finished_at IS NOT NULL, failed_at IS NULL FROM background_migrations "
                            "WHERE name LIKE '%step_5%'").fetchone() == (True, True)

    again = upgrade("drop_scratch")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "has already run: observations_pid_tid_sorting does not exist" in text(again)
    assert recap(again.stdout)["changed"] == 0, changed_tasks(again.stdout)
    install = playbook("install", {"langfuse_namespace": namespace, **V4, **walk_databases(walk)})
    assert install.returncode == 0 and recap(install.stdout)["changed"] == 0, changed_tasks(install.stdout)
    assert env(namespace, "worker")[1][gate] == "true"
    refused = upgrade("rollback")
    assert refused.returncode != 0 and "No rollback to v3" in text(refused)
    # A run stopped after it turned the gate on and before it recorded the drop: install.yml refuses; the phase finishes.
    kubectl("-n", namespace, "patch", "configmap", "langfuse-v4-migration", "--type=merge", "-p", '{"data":{"state":"started"}}')
    stopped = playbook("install", {"langfuse_namespace": namespace, **V4, **walk_databases(walk)})
    assert stopped.returncode != 0 and "phase drop_scratch was started at" in text(stopped)
    assert f"Finish that phase first: ansible-playbook playbooks/upgrade.yml -e upgrade_phase=drop_scratch -e " \
           f"upgrade_confirm_drop_scratch={namespace}" in text(stopped)
    finished = upgrade("drop_scratch")
    assert finished.returncode == 0, finished.stdout[-3000:]
    assert (state(namespace)["phase"], state(namespace)["state"]) == ("drop_scratch", "done")


def walk_databases(walk):
    return {"postgres_database": walk[2], "clickhouse_operator_database": walk[2]}
