"""Pure logic of the migration_status module: state classification, messages, argument checks."""
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.module_utils import k8s_portforward as pf  # noqa: E402
from ansible_collections.langfuse_ops.platform.plugins.module_utils import migration_state as ms  # noqa: E402
from ansible_collections.langfuse_ops.platform.plugins.modules import migration_status as module  # noqa: E402

T0 = "2026-11-20T10:00:00+00:00"
T1 = "2026-11-20T10:00:05+00:00"


def row(name, finished=T1, rolled_back=None, logs=None, age=3600.0, started=T0):
    return {"id": f"id-{name}", "migration_name": name, "started_at": started, "finished_at": finished,
            "rolled_back_at": rolled_back, "logs": logs, "applied_steps_count": 1 if finished else 0, "age_seconds": age}


CLEAN = [row("20240101000000_init"), row("20240301000000_traces"), row("20240201000000_users")]


# --- Postgres classification -------------------------------------------------

def test_clean_history_counts_and_names_the_highest_migration():
    state = ms.classify_prisma_rows(CLEAN, lock_held=False, grace=300)
    assert state["applied_count"] == 3
    assert state["latest_migration"] == "20240301000000_traces"
    assert state["latest_finished_at"] == T1
    assert state["failed"] == state["in_progress"] == state["rolled_back"] == []
    assert state["fresh"] is False


def test_unfinished_row_with_logs_is_failed_even_while_the_lock_is_held():
    rows = CLEAN + [row("20240401000000_scores", finished=None, logs="ERROR: column \"x\" does not exist", age=5)]
    state = ms.classify_prisma_rows(rows, lock_held=True, grace=300)
    assert [(f["migration_name"], f["reason"]) for f in state["failed"]] == [("20240401000000_scores", "failed")]
    assert state["failed"][0]["logs"].startswith("ERROR")
    assert state["in_progress"] == []
    assert state["latest_migration"] == "20240301000000_traces"


def test_unfinished_row_without_logs_is_in_progress_while_prisma_holds_its_lock():
    rows = CLEAN + [row("20240401000000_scores", finished=None, age=7200)]
    state = ms.classify_prisma_rows(rows, lock_held=True, grace=300)
    assert [e["migration_name"] for e in state["in_progress"]] == ["20240401000000_scores"]
    assert state["in_progress"][0]["running_seconds"] == 7200
    assert state["failed"] == []


def test_unfinished_row_without_lock_is_in_progress_within_the_grace_then_interrupted():
    recent = ms.classify_prisma_rows(CLEAN + [row("20240401000000_scores", finished=None, age=12.7)], lock_held=False, grace=300)
    assert recent["in_progress"][0]["running_seconds"] == 12
    old = ms.classify_prisma_rows(CLEAN + [row("20240401000000_scores", finished=None, age=301)], lock_held=False, grace=300)
    assert old["in_progress"] == []
    assert [(f["migration_name"], f["reason"]) for f in old["failed"]] == [("20240401000000_scores", "interrupted")]


def test_rolled_back_migrations_say_whether_a_later_run_applied_them():
    rows = CLEAN + [
        row("20240401000000_scores", finished=None, rolled_back=T1, logs="boom"),
        row("20240401000000_scores"),
        row("20240501000000_media", finished=None, rolled_back=T1, logs="boom"),
    ]
    state = ms.classify_prisma_rows(rows, lock_held=False, grace=300)
    assert {(r["migration_name"], r["reapplied"]) for r in state["rolled_back"]} == {
        ("20240401000000_scores", True), ("20240501000000_media", False)}
    assert state["failed"] == []
    assert state["applied_count"] == 4
    assert ms.applied_names(rows) == {r["migration_name"] for r in CLEAN} | {"20240401000000_scores"}


def test_fresh_postgres_has_nothing():
    state = ms.fresh_postgres()
    assert state["fresh"] is True and state["applied_count"] == 0 and state["latest_migration"] is None


# --- ClickHouse summary ------------------------------------------------------

def test_missing_table_is_fresh():
    state = ms.summarize_clickhouse(None, None)
    assert state == {"fresh": True, "table_exists": False, "version": None, "dirty": False, "sequence": None,
                     "engine": None, "replicated": False}


@pytest.mark.parametrize("row_, fresh", [(None, True), ({"version": "-1", "dirty": 0, "sequence": "9"}, True),
                                         ({"version": "37", "dirty": 0, "sequence": "9"}, False)])
def test_empty_table_or_nil_version_is_fresh(row_, fresh):
    assert ms.summarize_clickhouse("MergeTree", row_)["fresh"] is fresh


def test_clickhouse_json_strings_become_numbers_and_replicated_comes_from_the_engine():
    state = ms.summarize_clickhouse("ReplicatedMergeTree", {"version": "38", "dirty": 1, "sequence": "1732615200000000000"})
    assert state["version"] == 38 and state["dirty"] is True and state["sequence"] == 1732615200000000000
    assert state["replicated"] is True
    assert ms.summarize_clickhouse("MergeTree", {"version": 1, "dirty": 0, "sequence": 1})["replicated"] is False


# --- messages ----------------------------------------------------------------

def test_failed_postgres_migration_names_it_and_the_prisma_resolve_step():
    state = ms.classify_prisma_rows(CLEAN + [row("20240401000000_scores", finished=None, logs="ERROR: relation \"x\" exists\n  at line 3")],
                                    lock_held=False, grace=300)
    [msg] = ms.postgres_problems(state, ms.applied_names(CLEAN), expect_no_failed=True, expect_migrations=None)
    assert "Postgres migration 20240401000000_scores failed" in msg
    assert 'ERROR: relation "x" exists at line 3' in msg
    assert "P3009" in msg
    assert ("prisma migrate resolve --rolled-back 20240401000000_scores --schema=./packages/shared/prisma/schema.prisma") in msg
    assert "prisma migrate resolve --applied 20240401000000_scores" in msg
    assert "working directory /app" in msg
    assert ms.postgres_problems(state, set(), expect_no_failed=False, expect_migrations=None) == []


def test_interrupted_postgres_migration_says_what_probably_happened():
    state = ms.classify_prisma_rows([row("20240401000000_scores", finished=None, age=4000)], lock_held=False, grace=300)
    [msg] = ms.postgres_problems(state, set(), expect_no_failed=True, expect_migrations=None)
    assert "20240401000000_scores was interrupted" in msg and "killed" in msg
    assert "--rolled-back 20240401000000_scores" in msg


def test_long_logs_are_cut_in_the_message():
    state = ms.classify_prisma_rows([row("m", finished=None, logs="x" * 5000)], lock_held=False, grace=300)
    [msg] = ms.postgres_problems(state, set(), True, None)
    assert "x" * ms.LOG_EXCERPT + "..." in msg and "x" * (ms.LOG_EXCERPT + 1) not in msg


@pytest.mark.parametrize("rows, status", [
    ([], "never started"),
    ([row("m", finished=None, age=1)], "in progress"),
    ([row("m", finished=None, logs="boom")], "failed"),
    ([row("m", finished=None, rolled_back=T1, logs="boom")], "rolled back"),
])
def test_expected_postgres_migration_reports_its_state(rows, status):
    state = ms.classify_prisma_rows(CLEAN + rows, lock_held=False, grace=300)
    msgs = ms.postgres_problems(state, ms.applied_names(CLEAN + rows), expect_no_failed=False,
                                expect_migrations=["20240101000000_init", "m"])
    assert msgs == [msgs[0]]
    assert f"Postgres migration m is not applied ({status}; latest applied: 20240301000000_traces)" in msgs[0]
    assert "prisma migrate deploy --schema=./packages/shared/prisma/schema.prisma" in msgs[0]
    assert "LANGFUSE_AUTO_POSTGRES_MIGRATION_DISABLED" in msgs[0]


def test_expected_migration_on_a_fresh_database():
    [msg] = ms.postgres_problems(ms.fresh_postgres(), set(), True, ["m"])
    assert "no _prisma_migrations table yet" in msg and "latest applied: none" in msg


def test_dirty_clustered_clickhouse_names_the_version_and_the_force_command():
    state = dict(ms.summarize_clickhouse("ReplicatedMergeTree", {"version": 38, "dirty": 1, "sequence": 5}), host="chi-0")
    [msg] = ms.clickhouse_problems(state, "default", expect_not_dirty=True, min_version=None, expect_replicated=None)
    assert "ClickHouse migration 38 is dirty" in msg and "chi-0" in msg
    assert ('cd /app/packages/shared && migrate -source file://clickhouse/migrations/clustered -database '
            '"${CLICKHOUSE_MIGRATION_URL}?username=${CLICKHOUSE_USER}&password=${CLICKHOUSE_PASSWORD}&database=default'
            '&x-multi-statement=true&x-cluster-name=default&x-migrations-table-engine=ReplicatedMergeTree" force 37') in msg
    assert "force 38` instead only if" in msg
    assert "still is after waiting" not in msg
    waited = ms.clickhouse_problems(state, "default", True, None, None, waited=60)[0]
    assert "is dirty and still is after waiting 60s" in waited


def test_dirty_unclustered_clickhouse_uses_the_unclustered_source_and_mergetree():
    state = ms.summarize_clickhouse("MergeTree", {"version": 12, "dirty": 1, "sequence": 5})
    [msg] = ms.clickhouse_problems(state, "langfuse", True, None, None)
    assert "file://clickhouse/migrations/unclustered" in msg
    assert "&database=langfuse&x-multi-statement=true&x-migrations-table-engine=MergeTree\" force 11" in msg
    assert "x-cluster-name" not in msg


def test_dirty_first_migration_forces_to_no_version():
    state = ms.summarize_clickhouse("MergeTree", {"version": 1, "dirty": 1, "sequence": 5})
    assert "force -- -1`" in ms.clickhouse_problems(state, "default", True, None, None)[0]


def test_dirty_is_reported_only_when_expected_not_to_be():
    state = ms.summarize_clickhouse("MergeTree", {"version": 12, "dirty": 1, "sequence": 5})
    assert ms.clickhouse_problems(state, "default", False, None, None) == []


@pytest.mark.parametrize("engine, row_, minimum, ok", [
    ("MergeTree", {"version": 37, "dirty": 0, "sequence": 1}, 37, True),
    ("MergeTree", {"version": 46, "dirty": 0, "sequence": 1}, 37, True),
    ("MergeTree", {"version": 36, "dirty": 0, "sequence": 1}, 37, False),
    ("MergeTree", {"version": 37, "dirty": 1, "sequence": 1}, 37, False),
    ("MergeTree", {"version": 38, "dirty": 1, "sequence": 1}, 37, True),
    (None, None, 1, False),
])
def test_min_clickhouse_version(engine, row_, minimum, ok):
    state = ms.summarize_clickhouse(engine, row_)
    msgs = ms.clickhouse_problems(state, "default", expect_not_dirty=False, min_version=minimum, expect_replicated=None)
    assert (msgs == []) is ok
    if not ok:
        assert f"below the required version {minimum}" in msgs[0]
        assert "sh ./clickhouse/scripts/up.sh" in msgs[0]


def test_expect_replicated_both_ways_and_not_on_a_fresh_database():
    plain = ms.summarize_clickhouse("MergeTree", {"version": 3, "dirty": 0, "sequence": 1})
    replicated = ms.summarize_clickhouse("ReplicatedMergeTree", {"version": 3, "dirty": 0, "sequence": 1})
    assert "CLICKHOUSE_CLUSTER_ENABLED=false" in ms.clickhouse_problems(plain, "default", True, None, True)[0]
    assert "clustered mode" in ms.clickhouse_problems(replicated, "default", True, None, False)[0]
    assert ms.clickhouse_problems(replicated, "default", True, None, True) == []
    assert ms.clickhouse_problems(ms.summarize_clickhouse(None, None), "default", True, None, True) == []


def test_pending_reasons():
    assert ms.pending_reasons({}) == []
    pg = ms.classify_prisma_rows([row("m", finished=None, age=2)], lock_held=True, grace=300)
    ch = ms.summarize_clickhouse("MergeTree", {"version": 5, "dirty": 1, "sequence": 1})
    assert ms.pending_reasons({"postgres": pg, "clickhouse": ch}) == [
        "Postgres migration m in progress (running 2s)", "ClickHouse migration 5 dirty (maybe still running)"]
    assert ms.pending_reasons({"clickhouse": ch}, dirty_counts=False) == []


# --- arguments ---------------------------------------------------------------

def validate(params):
    """The argument spec as AnsibleModule applies it, then the module's own checks."""
    result = ArgumentSpecValidator(module.ARGUMENT_SPEC, required_one_of=[("postgres", "clickhouse")]).validate(params)
    errors = [str(e) for e in result.errors]
    return errors + ([] if errors else ms.validate_params(result.validated_parameters)), result


PG = {"host": "db", "user": "langfuse", "password": "s3cret-pg", "database": "langfuse"}


def test_valid_arguments_get_their_defaults_and_hide_the_passwords():
    errors, result = validate({"postgres": PG, "clickhouse": {"host": "ch", "password": "s3cret-ch"},
                               "expect_postgres_migration": "20240101000000_init"})
    assert errors == []
    params = result.validated_parameters
    assert params["postgres"]["port"] == 5432 and params["postgres"]["sslmode"] == "prefer" and params["postgres"]["schema"] == "public"
    assert params["clickhouse"]["port"] == 8123 and params["clickhouse"]["database"] == "default"
    assert params["expect_postgres_migrations"] == ["20240101000000_init"]
    assert params["wait"] is False and params["expect_no_failed"] is True and params["expect_not_dirty"] is True
    assert {"s3cret-pg", "s3cret-ch"} <= result._no_log_values


@pytest.mark.parametrize("params, error", [
    ({}, "one of the following is required: postgres, clickhouse"),
    ({"postgres": {"user": "u", "database": "d"}}, "postgres.host is required unless postgres.forward is set"),
    ({"clickhouse": {}}, "clickhouse.host is required unless clickhouse.forward is set"),
    ({"postgres": dict(PG, forward={"namespace": "n", "service": "s", "pod": "p"})}, "mutually exclusive"),
    ({"postgres": dict(PG, forward={"namespace": "n"})}, "one of the following is required: service, pod"),
    ({"clickhouse": {"forward": {"service": "s"}}}, "missing required arguments: namespace"),
    ({"postgres": dict(PG, sslmode="on")}, "sslmode must be one of"),
    ({"postgres": PG, "min_clickhouse_version": 37}, "min_clickhouse_version needs clickhouse"),
    ({"postgres": PG, "expect_replicated": True}, "expect_replicated needs clickhouse"),
    ({"clickhouse": {"host": "ch"}, "expect_postgres_migrations": ["m"]}, "expect_postgres_migrations needs postgres"),
    ({"postgres": PG, "wait_interval": 0}, "wait_interval must be at least 1"),
    ({"postgres": PG, "wait_timeout": -1}, "wait_timeout must be at least 0"),
])
def test_invalid_arguments_are_named(params, error):
    errors, _result = validate(params)
    assert any(error in e for e in errors), errors


def test_forward_alone_is_enough():
    errors, _result = validate({"clickhouse": {"forward": {"namespace": "langfuse", "service": "clickhouse-langfuse"}}})
    assert errors == []


# --- port-forward plumbing ---------------------------------------------------

def test_splice_copies_both_ways_until_a_side_closes():
    app, a = socket.socketpair()
    b, remote = socket.socketpair()
    closed = threading.Event()
    thread = threading.Thread(target=pf._splice, args=(a, b, closed))
    thread.start()
    app.sendall(b"SELECT 1")
    assert remote.recv(100) == b"SELECT 1"
    remote.sendall(b"1\n")
    assert app.recv(100) == b"1\n"
    remote.close()
    thread.join(5)
    assert not thread.is_alive()
    for sock in (app, a, b):
        sock.close()


def _service(selector, ports):
    return SimpleNamespace(spec=SimpleNamespace(selector=selector, ports=[
        SimpleNamespace(port=p, target_port=t) for p, t in ports]))


class FakeCoreApi:
    """Stands in for the Kubernetes API objects service_target reads (the real path runs in the integration tests)."""

    def __init__(self, service, pods):
        self.service, self.pods = service, pods

    def read_namespaced_service(self, name, namespace):
        return self.service

    def list_namespaced_pod(self, namespace, label_selector):
        self.selector = label_selector
        return SimpleNamespace(items=self.pods)

    def read_namespaced_pod(self, name, namespace):
        return next(p for p in self.pods if p.metadata.name == name)


def _pod(name, ready=True, ports=()):
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, deletion_timestamp=None, creation_timestamp=name),
        status=SimpleNamespace(phase="Running", conditions=[SimpleNamespace(type="Ready", status="True" if ready else "False")]),
        spec=SimpleNamespace(containers=[SimpleNamespace(ports=[SimpleNamespace(name=n, container_port=p) for n, p in ports])]))


def test_service_port_maps_to_its_target_port_by_number_or_name():
    pods = [_pod("pg-0", ports=[("postgresql", 5433)]), _pod("pg-1", ready=False)]
    api = FakeCoreApi(_service({"app": "pg", "role": "primary"}, [(5432, "postgresql"), (9187, 9187)]), pods)
    assert pf.service_target(api, "ns", "pg", 5432) == ("pg-0", 5433)
    assert api.selector == "app=pg,role=primary"
    assert pf.service_target(api, "ns", "pg", 9187) == ("pg-0", 9187)
    assert pf.service_target(api, "ns", "pg", 7000) == ("pg-0", 7000)


def test_service_without_selector_or_ready_pods_is_named():
    with pytest.raises(ConnectionError, match="has no selector"):
        pf.service_target(FakeCoreApi(_service(None, [(5432, 5432)]), []), "ns", "rds", 5432)
    with pytest.raises(ConnectionError, match="no Ready pod behind Service ns/pg"):
        pf.service_target(FakeCoreApi(_service({"app": "pg"}, [(5432, 5432)]), [_pod("pg-0", ready=False)]), "ns", "pg", 5432)


# --- background migrations (the worker's, table background_migrations) -----------------------------

def test_background_migrations_without_the_table_are_done():
    state = ms.classify_background_migrations(None)
    assert state == {"table_exists": False, "total": 0, "finished": [], "unfinished": [], "failed": []}
    assert ms.background_problems(state) == []


def test_background_migrations_are_sorted_into_finished_unfinished_and_failed():
    rows = [
        {"name": "20250101_b_running", "finished_at": None, "failed_at": None, "failed_reason": None, "locked_at": "2026-12-01T08:00:00"},
        {"name": "20241024_a_done", "finished_at": "2026-11-01T00:00:00", "failed_at": None, "failed_reason": None, "locked_at": None},
        {"name": "20250102_c_failed", "finished_at": None, "failed_at": "2026-12-01T07:00:00",
         "failed_reason": "Failed to convert rust String into napi string", "locked_at": None},
        {"name": "20250103_d_waiting", "finished_at": None, "failed_at": None, "failed_reason": None, "locked_at": None},
    ]
    state = ms.classify_background_migrations(rows)
    assert state["finished"] == ["20241024_a_done"]
    assert [(e["name"], e["running"]) for e in state["unfinished"]] == [("20250101_b_running", True), ("20250103_d_waiting", False)]
    assert [e["name"] for e in state["failed"]] == ["20250102_c_failed"]
    problems = ms.background_problems(state)
    assert len(problems) == 3
    assert problems[0].startswith("Background migration 20250102_c_failed failed at 2026-12-01T07:00:00: Failed to convert")
    assert '{"batchSize": 2500}' in problems[0]
    assert "20250101_b_running has not finished: running since 2026-12-01T08:00:00" in problems[1]
    assert "20250103_d_waiting has not finished: not started or waiting for a worker" in problems[2]


def test_background_migrations_need_postgres():
    errors = ms.validate_params({"postgres": None, "clickhouse": {"host": "ch"}, "expect_background_migrations_done": True})
    assert "expect_background_migrations_done needs postgres" in errors


def test_disk_headroom_takes_the_roomiest_disk_and_the_factor_on_top_of_the_data():
    disks = [{"name": "default", "path": "/var/lib/clickhouse/", "free_space": 30 * 2**30, "total_space": 100 * 2**30},
             {"name": "cold", "path": "/cold/", "free_space": 25 * 2**30, "total_space": 50 * 2**30}]
    state = ms.disk_headroom(10 * 2**30, disks, 3)
    assert (state["disk"], state["needed_free"], state["enough"]) == ("default", 20 * 2**30, True)
    assert ms.disk_problems(state) == []
    short = ms.disk_headroom(20 * 2**30, disks, 3)
    assert short["enough"] is False
    assert ms.disk_problems(short) == [
        "ClickHouse has 30.0 GiB free on its roomiest disk (default), but 3 times its data (20.0 GiB in active parts) needs "
        "40.0 GiB more: Langfuse v4's historic backfill copies the traces and observations into the new events tables and "
        "an intermediate table (upgrade-v3-to-v4.mdx, about 3x). Grow the ClickHouse volumes first, or plan the "
        "retention-based rollover instead of the backfill."]
    assert ms.disk_headroom(0, disks, 3)["enough"] is True


def test_disk_factor_needs_clickhouse_and_is_at_least_one():
    assert "clickhouse_disk_factor needs clickhouse" in ms.validate_params({"postgres": {"host": "pg"}, "clickhouse_disk_factor": 3})
    assert "clickhouse_disk_factor must be at least 1" in ms.validate_params({"clickhouse": {"host": "ch"}, "clickhouse_disk_factor": 0.5})


# --- the v4 backfill's scratch table: may step 5 (the drop) run? --------------------------------------

def background(**states):
    """classify_background_migrations over rows for step 4 and step 5 in the given states."""
    rows = []
    for name, state in states.items():
        full = {"after": ms.SCRATCH_DROP_AFTER, "step": ms.SCRATCH_DROP_STEP}[name]
        if state == "missing":
            continue
        rows.append({"name": full, "finished_at": "2026-12-01T00:00:00" if state == "finished" else None,
                     "failed_at": "2026-12-02T00:00:00" if state == "failed" else None,
                     "failed_reason": "Prerequisite migration x has not finished yet" if state == "failed" else None,
                     "locked_at": "2026-12-03T00:00:00" if state == "running" else None})
    return ms.classify_background_migrations(rows)


TABLE = {"exists": True, "parts": 2, "rows": 10, "bytes_on_disk": 3 * 2**20, "bytes_error": None}


@pytest.mark.parametrize("after, step, says", [
    ("finished", "waiting", None),
    ("finished", "running", None),
    ("finished", "finished", None),
    ("missing", "finished", None),  # it ran: nothing to refuse
    ("finished", "missing", "is not registered: Langfuse 4.16.0 or later registers it"),
    ("running", "waiting", "step 4 (20260701_v4_step_4_backfill_events_full_from_dataset_run_items) is running (locked at"),
    ("waiting", "waiting", "has not started (or waits for a worker)"),
    ("missing", "waiting", "step 4 (20260701_v4_step_4_backfill_events_full_from_dataset_run_items) is not registered"),
    ("failed", "waiting", "failed at 2026-12-02T00:00:00: Prerequisite migration x"),
    ("waiting", "failed", "Once step 4 has finished, clear the failure in Postgres"),
    ("finished", "failed", "Step 4 (20260701_v4_step_4_backfill_events_full_from_dataset_run_items) has finished since"),
])
def test_the_drop_waits_for_step_4_and_names_a_failed_drop(after, step, says):
    state = ms.scratch_state(background(after=after, step=step), TABLE)
    assert (state["after"]["state"], state["step"]["state"]) == (after, step)
    problems = ms.scratch_problems(state)
    if says is None:
        assert problems == []
    else:
        [problem] = problems
        assert says in problem
    if step == "waiting" and after != "finished":
        assert "marks the drop as failed for good" in problem or "mark the drop as failed for good" in problem
    if step == "failed":
        assert ("UPDATE background_migrations SET failed_at = NULL, failed_reason = NULL WHERE name = "
                "'20260701_v4_step_5_drop_pid_tid_sorting_tables'") in problem


def test_scratch_sizes_read_as_people_do():
    assert ms.scratch_size(TABLE) == "observations_pid_tid_sorting holds 10 rows in 2 active parts (3.0 MiB)"
    assert [ms.size_words(n) for n in (0, 1023, 1024, 5 * 2**30 + 2**29)] == ["0 bytes", "1023 bytes", "1.0 KiB", "5.5 GiB"]


@pytest.mark.parametrize("params, error", [
    ({"postgres": {"host": "pg"}, "backfill_scratch": True}, "backfill_scratch needs postgres and clickhouse"),
    ({"postgres": {"host": "pg"}, "clickhouse": {"host": "ch"}, "expect_backfill_scratch_droppable": True},
     "expect_backfill_scratch_droppable needs backfill_scratch"),
])
def test_scratch_options_are_checked(params, error):
    assert error in ms.validate_params(params)


def test_a_drop_not_finished_says_how_long_it_was_waited_for_and_where_to_look():
    assert ms.scratch_drop_problems(ms.scratch_state(background(after="finished", step="finished"), TABLE)) == []
    [waiting] = ms.scratch_drop_problems(ms.scratch_state(background(after="finished", step="running"), TABLE), waited=300)
    assert waiting.startswith("Background migration 20260701_v4_step_5_drop_pid_tid_sorting_tables has not finished after "
                              "waiting 300s (running, locked at 2026-12-03T00:00:00)")
    [failed] = ms.scratch_drop_problems(ms.scratch_state(background(after="finished", step="failed"), TABLE), waited=5)
    assert "failed at 2026-12-02T00:00:00" in failed and "SET failed_at = NULL" in failed
