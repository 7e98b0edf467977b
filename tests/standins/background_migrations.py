"""Stand-in for Langfuse's background-migration manager (langfuse v4.16.0,
worker/src/backgroundMigrations/backgroundMigrationManager.ts), as far as the v4 backfill's last step goes.

KWOK runs no worker, so a test calls `run_at_worker_start` where a worker would start. What it does, as upstream:
- picks rows of `background_migrations` with finished_at and failed_at NULL whose `args.envGate` is unset or names a
  LANGFUSE_BACKGROUND_MIGRATION_* variable the worker's env sets to "true" (upstream's defaults: the historic backfill
  "true", the scratch-table drop "false"), in name order, one at a time, until none is left;
- step 5 (script dropPidTidSortingTables): its validate() (checkPredecessorMigrationFinalized: step 4 registered, not
  failed, finished), and when that fails, failed_at and failed_reason set, so the row is never picked again; else its
  run(): DROP TABLE IF EXISTS <db>.observations_pid_tid_sorting SYNC (unclustered), and finished_at set.
Not emulated: every other script (the backfill steps themselves). A row of another script stops the loop here, where a
real worker would be busy running it; tests mark such rows finished themselves. Not emulated either: the 60 s lock of a
row another worker holds, and heartbeats.
"""
import json

GATE_PREFIX = "LANGFUSE_BACKGROUND_MIGRATION_"
DEFAULT_GATES = {"LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL": "true",
                 "LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES": "false"}
STEP_4 = ("9d4f8a12-7b35-4e6c-9f48-a2b3c4d5e6f7", "20260701_v4_step_4_backfill_events_full_from_dataset_run_items")
SCRATCH_TABLE = "observations_pid_tid_sorting"


def _predecessor_problem(conn, predecessor_id, predecessor_name):
    row = conn.execute("SELECT finished_at, failed_at FROM background_migrations WHERE id = %s", (predecessor_id,)).fetchone()
    if row is None:
        return f"Prerequisite migration {predecessor_name} ({predecessor_id}) is not registered"
    if row[1] is not None:
        return (f"Prerequisite migration {predecessor_name} failed at {row[1].isoformat()}; resolve it and clear failedAt "
                "before this step can run")
    if row[0] is None:
        return f"Prerequisite migration {predecessor_name} has not finished yet"
    return None


def run_at_worker_start(conn, clickhouse, database, worker_env):
    """Runs what a worker with `worker_env` runs when it starts. conn: a psycopg connection (autocommit) to Langfuse's
    Postgres; clickhouse(sql): runs a statement on Langfuse's ClickHouse. Returns the names it finished or failed."""
    env = {**DEFAULT_GATES, **{k: v for k, v in worker_env.items() if k.startswith(GATE_PREFIX)}}
    active = {k for k, v in env.items() if v == "true"}
    done = []
    while True:
        rows = conn.execute("SELECT id, name, script, args FROM background_migrations WHERE finished_at IS NULL "
                            "AND failed_at IS NULL ORDER BY name").fetchall()
        picked = next((r for r in rows if (r[3] or {}).get("envGate") in (None, *active)), None)
        if picked is None or picked[2] != "dropPidTidSortingTables":
            return done
        problem = _predecessor_problem(conn, *STEP_4)
        if problem:
            conn.execute("UPDATE background_migrations SET failed_at = now(), failed_reason = %s WHERE id = %s",
                         (problem, picked[0]))
        else:
            clickhouse(f"DROP TABLE IF EXISTS {database}.{SCRATCH_TABLE} SYNC")
            conn.execute("UPDATE background_migrations SET finished_at = now() WHERE id = %s", (picked[0],))
        done.append(picked[1])


def register_v4_16_rows(conn):
    """The rows Langfuse 4.16.0's Prisma migrations register for the backfill's steps 4 and 5 (ids, names, scripts and
    args as in packages/shared/prisma/migrations/20260701115503_* and 20260701115504_*)."""
    conn.execute("INSERT INTO background_migrations (id, name, script, args) VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)",
                 (*STEP_4, "backfillEventsFullFromDatasetRunItems",
                  json.dumps({"envGate": "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"}),
                  "b3f1c5d8-9e47-4a26-8b3f-5c6d7e8f9a01", "20260701_v4_step_5_drop_pid_tid_sorting_tables",
                  "dropPidTidSortingTables",
                  json.dumps({"envGate": "LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES"})))
