# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What Langfuse's schema migration tables say, and what to do about it.

Pure logic, no I/O: the module `migration_status` reads the rows and calls
these. Langfuse's web container migrates Postgres with Prisma
(`prisma migrate deploy`, table `_prisma_migrations`) and ClickHouse with
golang-migrate (`migrate ... up`, table `schema_migrations`) at every start;
see web/entrypoint.sh and packages/shared/clickhouse/scripts/up.sh upstream.
"""

from __future__ import annotations

import re

# Prisma Migrate holds this session advisory lock (pg_advisory_lock(72707369),
# prisma-engines' Postgres connector) for the whole of `migrate deploy`.
# pg_locks shows a bigint key as classid = high half, objid = low half,
# objsubid = 1.
PRISMA_MIGRATE_LOCK_KEY = 72707369

PRISMA_SCHEMA = "./packages/shared/prisma/schema.prisma"
# Where the web image (WORKDIR /app) keeps what its entrypoint runs.
WEB_IMAGE_HOW = (
    "in a one-off container of the same Langfuse web image (working directory /app, the web Deployment's env; "
    "override the command: the image's entrypoint would run the migrations first)"
)
LOG_EXCERPT = 300


def classify_prisma_rows(rows, lock_held, grace):
    """Summarises _prisma_migrations rows.

    rows: dicts with id, migration_name, started_at, finished_at,
    rolled_back_at (ISO strings or None), logs, applied_steps_count and
    age_seconds (now() - started_at on the server, so clocks never differ).

    A row neither finished nor rolled back is what Prisma calls a failed
    migration (P3009 blocks every later `migrate deploy`). It is also what a
    migration in progress looks like, so:
    * logs set: Prisma recorded the error -> failed;
    * else Prisma's migrate lock is held in this database -> in progress;
    * else started less than `grace` seconds ago -> in progress (the lock
      can be invisible: PRISMA_SCHEMA_DISABLE_ADVISORY_LOCK, or a pooler
      between Prisma and Postgres);
    * else -> failed, "interrupted": the migrating process died (a probe or
      a rollout killed the web pod) before it could log anything.
    """
    applied = [r for r in rows if r.get("finished_at") and not r.get("rolled_back_at")]
    names = applied_names(rows)
    failed, in_progress, rolled_back = [], [], []
    for row in rows:
        name = row["migration_name"]
        if row.get("rolled_back_at"):
            rolled_back.append({
                "migration_name": name, "id": row.get("id"), "started_at": row.get("started_at"),
                "rolled_back_at": row["rolled_back_at"], "logs": row.get("logs"), "reapplied": name in names,
            })
        elif not row.get("finished_at"):
            age = row.get("age_seconds")
            age = int(age) if age is not None else None
            entry = {"migration_name": name, "id": row.get("id"), "started_at": row.get("started_at"), "logs": row.get("logs")}
            if row.get("logs"):
                failed.append(dict(entry, reason="failed"))
            elif lock_held or (age is not None and age < grace):
                in_progress.append(dict(entry, running_seconds=age))
            else:
                failed.append(dict(entry, reason="interrupted"))
    latest = max(applied, key=lambda r: r["migration_name"]) if applied else None
    return {
        "fresh": False,
        "applied_count": len(names),
        "latest_migration": latest["migration_name"] if latest else None,
        "latest_finished_at": latest["finished_at"] if latest else None,
        "failed": failed,
        "in_progress": in_progress,
        "rolled_back": rolled_back,
        "migrate_lock_held": bool(lock_held),
    }


def fresh_postgres():
    return {"fresh": True, "applied_count": 0, "latest_migration": None, "latest_finished_at": None,
            "failed": [], "in_progress": [], "rolled_back": [], "migrate_lock_held": False}


def summarize_clickhouse(engine, row):
    """engine: of schema_migrations (None: no table); row: the one with the highest sequence (None: empty)."""
    if engine is None:
        return {"fresh": True, "table_exists": False, "version": None, "dirty": False, "sequence": None,
                "engine": None, "replicated": False}
    version = int(row["version"]) if row else None
    # golang-migrate writes version -1 (NilVersion) when everything was migrated down.
    return {
        "fresh": version is None or version < 0,
        "table_exists": True,
        "version": version,
        "dirty": bool(int(row["dirty"])) if row else False,
        "sequence": int(row["sequence"]) if row else None,
        "engine": engine,
        "replicated": engine.startswith("Replicated"),
    }


def prisma_resolve_hint(name):
    return (f"fix the cause, then {WEB_IMAGE_HOW} run `prisma migrate resolve --rolled-back {name} --schema={PRISMA_SCHEMA}` "
            f"so that the next start re-applies it, or `prisma migrate resolve --applied {name} --schema={PRISMA_SCHEMA}` "
            "if you completed the migration by hand")


def migrate_database_url(database, clustered):
    """The -database URL that packages/shared/clickhouse/scripts/up.sh builds, with the web pod's env names."""
    url = ("${CLICKHOUSE_MIGRATION_URL}?username=${CLICKHOUSE_USER}&password=${CLICKHOUSE_PASSWORD}"
           f"&database={database}&x-multi-statement=true")
    if clustered:
        # The clustered migration SQL says ON CLUSTER default: the cluster is named default.
        return url + "&x-cluster-name=default&x-migrations-table-engine=ReplicatedMergeTree"
    return url + "&x-migrations-table-engine=MergeTree"


def migrate_force_command(version, database, clustered):
    source = "clustered" if clustered else "unclustered"
    # `force -1` (no version) needs `--`, or Go's flag parser reads -1 as a flag.
    target = f"-- {version}" if version < 0 else str(version)
    return (f'cd /app/packages/shared && migrate -source file://clickhouse/migrations/{source} '
            f'-database "{migrate_database_url(database, clustered)}" force {target}')


def _excerpt(text):
    text = " ".join((text or "").split())
    return text if len(text) <= LOG_EXCERPT else text[:LOG_EXCERPT] + "..."


def applied_names(rows):
    return {r["migration_name"] for r in rows if r.get("finished_at") and not r.get("rolled_back_at")}


def postgres_problems(state, applied, expect_no_failed, expect_migrations):
    """applied: names of the applied migrations (applied_names(rows))."""
    problems = []
    if expect_no_failed:
        for entry in state["failed"]:
            name = entry["migration_name"]
            if entry["reason"] == "failed":
                what = f"Postgres migration {name} failed (started {entry['started_at']}): {_excerpt(entry['logs'])}."
            else:
                what = (f"Postgres migration {name} was interrupted: started {entry['started_at']}, never finished, "
                        "no error logged and no migration run holds Prisma's lock (the migrating web pod was killed, "
                        "e.g. by a probe or a rollout).")
            problems.append(f"{what} Prisma refuses to migrate past it (P3009), so Langfuse web pods crash-loop at start. "
                            f"Recovery: {prisma_resolve_hint(name)}.")
    for name in expect_migrations or []:
        if name in applied:
            continue
        status = _postgres_status_of(state, name)
        problems.append(
            f"Postgres migration {name} is not applied ({status}; latest applied: {state['latest_migration'] or 'none'}). "
            f"Langfuse's web pods apply it at start with `prisma migrate deploy --schema={PRISMA_SCHEMA}` unless "
            "LANGFUSE_AUTO_POSTGRES_MIGRATION_DISABLED=true; run that "
            f"{WEB_IMAGE_HOW}, or start web pods of the Langfuse version that ships it.")
    return problems


def _postgres_status_of(state, name):
    if state["fresh"]:
        return "the database has no _prisma_migrations table yet"
    if any(e["migration_name"] == name for e in state["in_progress"]):
        return "in progress"
    if any(e["migration_name"] == name for e in state["failed"]):
        return "failed"
    if any(e["migration_name"] == name for e in state["rolled_back"]):
        return "rolled back"
    return "never started"


def clickhouse_problems(state, database, expect_not_dirty, min_version, expect_replicated, waited=None):
    problems = []
    version = state["version"]
    if expect_not_dirty and state["dirty"]:
        waited_text = f" and still is after waiting {waited}s" if waited else ""
        previous = version - 1 if version > 1 else -1
        problems.append(
            f"ClickHouse migration {version} is dirty{waited_text} (database {database}, schema_migrations engine "
            f"{state['engine']}, answered by {state.get('host') or 'the server'}): golang-migrate started it and never "
            "finished it, so Langfuse web pods fail their start-up migration. Recovery: stop what runs migrations (web "
            "pods), make sure no migration is still running, then "
            f"{WEB_IMAGE_HOW} run `{migrate_force_command(previous, database, state['replicated'])}` and restart "
            f"the web pods so they re-run migration {version} (Langfuse writes its ClickHouse migrations to be re-runnable); "
            f"use `force {version}` instead only if you completed migration {version} by hand. "
            "Add &secure=true&skip_verify=true to the URL when CLICKHOUSE_MIGRATION_SSL=true, as up.sh does.")
    if min_version is not None:
        below = state["fresh"] or version < min_version or (version == min_version and state["dirty"])
        if below:
            at = "has no migration applied" if state["fresh"] else f"is at version {version}{' (dirty)' if state['dirty'] else ''}"
            problems.append(
                f"ClickHouse schema in database {database} {at}, below the required version {min_version}. "
                "Langfuse's web pods run the missing migrations at start unless LANGFUSE_AUTO_CLICKHOUSE_MIGRATION_DISABLED=true; "
                f"or run `cd /app/packages/shared && sh ./clickhouse/scripts/up.sh` {WEB_IMAGE_HOW}.")
    if expect_replicated is not None and state["table_exists"] and state["replicated"] != expect_replicated:
        if expect_replicated:
            problems.append(
                f"schema_migrations in ClickHouse database {database} uses engine {state['engine']}, not Replicated*: "
                "migrations ran with CLICKHOUSE_CLUSTER_ENABLED=false, so the schema exists on one replica only.")
        else:
            problems.append(
                f"schema_migrations in ClickHouse database {database} uses engine {state['engine']}: migrations ran in "
                "clustered mode (CLICKHOUSE_CLUSTER_ENABLED is not false) although a single node was expected.")
    return problems


def classify_background_migrations(rows):
    """Summarises background_migrations rows (None: no such table, a Langfuse older than them).

    The worker runs background migrations at start, one at a time, and records them in Postgres
    (name, finished_at, failed_at, failed_reason, locked_at); upstream asks that they finish before the
    next upgrade (self-hosting/upgrade/background-migrations). A row neither finished nor failed is
    unfinished: running while locked_at is set, waiting otherwise.
    """
    if rows is None:
        return {"table_exists": False, "total": 0, "finished": [], "unfinished": [], "failed": []}
    finished, unfinished, failed = [], [], []
    for row in sorted(rows, key=lambda r: r["name"]):
        if row.get("failed_at"):
            failed.append({"name": row["name"], "failed_at": row["failed_at"], "failed_reason": row.get("failed_reason")})
        elif row.get("finished_at"):
            finished.append(row["name"])
        else:
            unfinished.append({"name": row["name"], "locked_at": row.get("locked_at"),
                               "running": bool(row.get("locked_at"))})
    return {"table_exists": True, "total": len(rows), "finished": finished, "unfinished": unfinished, "failed": failed}


def background_problems(state):
    """Messages for each background migration that is not done, naming it and what to do."""
    problems = []
    for entry in state["failed"]:
        problems.append(
            f"Background migration {entry['name']} failed at {entry['failed_at']}: {_excerpt(entry['failed_reason'])}. "
            "Upgrade only once it has finished: fix the cause (for large rows, upstream advises a smaller "
            f"{{\"batchSize\": 2500}} in the args column of its background_migrations row), then retry it from the "
            "Langfuse UI (version tag -> Background Migrations) and let the worker finish it.")
    for entry in state["unfinished"]:
        how = (f"running since {entry['locked_at']} (locked by a worker)" if entry["running"]
               else "not started or waiting for a worker")
        problems.append(
            f"Background migration {entry['name']} has not finished: {how}. Upstream asks that background migrations "
            "finish before the next upgrade; watch it in the Langfuse UI (version tag -> Background Migrations) or the "
            "worker logs, and run the upgrade when it is done.")
    return problems


def system_log_warning(tables, host):
    """The warning for ClickHouse log tables without a TTL."""
    return (f"ClickHouse {host}: system log tables without a TTL, which grow until the disk is full: {', '.join(tables)}. "
            "Give each a retention in a config.d file, e.g. <query_log><ttl>event_date + INTERVAL 30 DAY DELETE</ttl>"
            "</query_log> (a table whose section has an <engine> takes the TTL inside it); the operator modes do this "
            "with clickhouse_operator_system_log_ttl_days.")


def disk_headroom(used, disks, factor):
    """Whether ClickHouse's disks hold `factor` times the active parts' bytes.

    used: sum(bytes_on_disk) of the active parts; disks: system.disks rows. The data grows on one
    disk at a time as far as this check can know, so the disk with the most free space must take
    the (factor - 1) x used that comes on top of what is there.
    """
    best = max(disks, key=lambda d: int(d["free_space"])) if disks else None
    free = int(best["free_space"]) if best else 0
    needed = int((factor - 1) * used)
    return {"bytes_on_disk": used, "factor": factor, "needed_free": needed, "free": free,
            "disk": best["name"] if best else None, "enough": free >= needed,
            "disks": [{"name": d["name"], "path": d.get("path"), "free_space": int(d["free_space"]),
                       "total_space": int(d["total_space"])} for d in disks]}


# Upstream's last step of the v4 historic backfill (langfuse v4.16.0,
# worker/src/backgroundMigrations/dropPidTidSortingTables.ts and its Prisma migration
# 20260701115504_add_drop_pid_tid_sorting_tables_background_migration): a background migration row, dormant until
# the worker runs with its env gate "true", that drops the backfill's scratch table. Its validate() asks that
# step 4 be registered, finished and not failed; otherwise the manager marks step 5 failed, and a failed row is
# never picked again until someone clears its failed_at: so the gate goes on only once step 4 has finished.
SCRATCH_DROP_GATE = "LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES"
SCRATCH_DROP_STEP = "20260701_v4_step_5_drop_pid_tid_sorting_tables"
SCRATCH_DROP_AFTER = "20260701_v4_step_4_backfill_events_full_from_dataset_run_items"


def background_step(background, name):
    """{name, state, ...} of one background migration: state missing, finished, failed (failed_at,
    failed_reason), running or waiting (locked_at)."""
    if name in background.get("finished", []):
        return {"name": name, "state": "finished"}
    for entry in background.get("failed", []):
        if entry["name"] == name:
            return {"name": name, "state": "failed", "failed_at": entry["failed_at"], "failed_reason": entry["failed_reason"]}
    for entry in background.get("unfinished", []):
        if entry["name"] == name:
            return {"name": name, "state": "running" if entry["running"] else "waiting", "locked_at": entry["locked_at"]}
    return {"name": name, "state": "missing"}


def scratch_state(background, table):
    """The backfill's scratch table and the two background migrations that decide whether it may be dropped.

    background: classify_background_migrations' summary; table: read_scratch_table's {exists, parts, rows,
    bytes_on_disk, bytes_error}."""
    return {"table": dict(table, name=BACKFILL_SCRATCH_TABLE), "gate": SCRATCH_DROP_GATE,
            "after": background_step(background, SCRATCH_DROP_AFTER), "step": background_step(background, SCRATCH_DROP_STEP)}


def scratch_size(table):
    """What the scratch table holds, in words."""
    if not table["exists"]:
        return f"{BACKFILL_SCRATCH_TABLE} does not exist"
    size = (size_words(table["bytes_on_disk"]) if table.get("bytes_on_disk") is not None
            else f"size on disk unknown: {table.get('bytes_error')}")
    return f"{BACKFILL_SCRATCH_TABLE} holds {table['rows']} rows in {table['parts']} active parts ({size})"


def scratch_problems(state):
    """Why the scratch table may not be dropped now ([] when it may, or when step 5 already ran), each naming
    what was found and what to do."""
    after, step = state["after"], state["step"]
    if step["state"] == "finished":
        return []
    if step["state"] == "missing":
        return [f"Background migration {SCRATCH_DROP_STEP} is not registered: Langfuse 4.16.0 or later registers it (its "
                "Prisma migrations run when the web starts). Upgrade to it first."]
    if step["state"] == "failed":
        return [f"Background migration {SCRATCH_DROP_STEP} failed at {step['failed_at']}: {_excerpt(step['failed_reason'])}. "
                "Langfuse does not retry a failed background migration. "
                + ("Once step 4 has finished, clear the failure in Postgres: UPDATE background_migrations SET failed_at = "
                   f"NULL, failed_reason = NULL WHERE name = '{SCRATCH_DROP_STEP}'; then run this again."
                   if after["state"] != "finished" else
                   f"Step 4 ({SCRATCH_DROP_AFTER}) has finished since, so clear the failure in Postgres: UPDATE "
                   f"background_migrations SET failed_at = NULL, failed_reason = NULL WHERE name = '{SCRATCH_DROP_STEP}'; "
                   "then run this again.")]
    if after["state"] == "finished":
        return []
    found = {"missing": "is not registered", "running": f"is running (locked at {after.get('locked_at')})",
             "waiting": "has not started (or waits for a worker)",
             "failed": f"failed at {after.get('failed_at')}: {_excerpt(after.get('failed_reason'))}"}[after["state"]]
    return [f"The historic backfill's step 4 ({SCRATCH_DROP_AFTER}) {found}. Its scratch table is still the backfill's "
            f"input, and turning on {SCRATCH_DROP_GATE} before step 4 has finished makes Langfuse mark the drop as failed "
            "for good (its validate() wants step 4 finished). Let the backfill finish (Langfuse UI: version tag -> "
            "Background Migrations), then run this again."]


def scratch_drop_problems(state, waited=None):
    """Why step 5 has not dropped the scratch table ([] once it finished)."""
    step = state["step"]
    if step["state"] == "finished":
        return []
    if step["state"] in ("failed", "missing"):
        return scratch_problems(state)
    how = f"after waiting {waited}s" if waited is not None else "yet"
    return [f"Background migration {SCRATCH_DROP_STEP} has not finished {how} ({step['state']}"
            + (f", locked at {step.get('locked_at')}" if step.get("locked_at") else "") + "). The worker runs background "
            "migrations one at a time when it starts: see its log ([Drop PID/TID sorting tables]) and the Langfuse UI "
            "(version tag -> Background Migrations); run this again to wait once more."]


def size_words(value):
    """A byte count for people: 1.5 GiB, 12.0 MiB, 300 bytes."""
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value >= 2**power:
            return f"{value / 2**power:.1f} {unit}"
    return f"{value} bytes"


def _gib(value):
    return f"{value / 2**30:.1f} GiB"


def disk_problems(state):
    if state["enough"]:
        return []
    return [f"ClickHouse has {_gib(state['free'])} free on its roomiest disk ({state['disk']}), but {state['factor']:g} times "
            f"its data ({_gib(state['bytes_on_disk'])} in active parts) needs {_gib(state['needed_free'])} more: Langfuse v4's "
            "historic backfill copies the traces and observations into the new events tables and an intermediate table "
            "(upgrade-v3-to-v4.mdx, about 3x). Grow the ClickHouse volumes first, or plan the retention-based rollover "
            "instead of the backfill."]


# --- the Langfuse user's ClickHouse grants (v4) ------------------------------------------------------
# The grants Langfuse v4 needs for CLICKHOUSE_USER, per purpose, as langfuse-docs lists them in
# content/self-hosting/deployment/infrastructure/clickhouse.mdx, section "User Permissions" (PR #3588,
# "document complete ClickHouse user permissions"; read at commit 011ec6949019); step 1 of
# upgrade-guides/upgrade-v3-to-v4.mdx lists what is new over v3 (read at commit 90f017ec1846). `since`
# says which: "v3" for the v3-era list (INSERT, SELECT, ALTER UPDATE, ALTER DELETE, ALTER DROP INDEX,
# CREATE, DROP TABLE on the database), "v4" for the rest. `on` is a template: {db} is the database
# (CLICKHOUSE_DB), quoted as needed.
LANGFUSE_GRANTS_DOC = "langfuse-docs self-hosting/deployment/infrastructure/clickhouse.mdx#user-permissions"
# Langfuse runs DDL ON CLUSTER default unless CLICKHOUSE_CLUSTER_NAME says otherwise (as migrate_database_url).
CLUSTER_NAME = "default"
# The historic backfill's intermediate table; the grants on it may (and should) exist before the table does.
BACKFILL_SCRATCH_TABLE = "observations_pid_tid_sorting"
LIGHTWEIGHT_PROFILE = "langfuse_lightweight_update"

GRANT_PURPOSES = {
    "tables": "Langfuse's tables",
    "system_tables": "system tables",
    "cluster": "clustered ClickHouse (CLICKHOUSE_CLUSTER_ENABLED=true)",
    "backfill": f"the historic backfill's scratch table {BACKFILL_SCRATCH_TABLE}",
    "lightweight_update": "lightweight updates (CLICKHOUSE_USE_LIGHTWEIGHT_UPDATE=true)",
}

_SCHEMA = "schema migrations at start"
_GRANTS = (
    # purpose, privilege, on, since, what for[, what CHECK GRANT asks when it is not the privilege itself]
    ("tables", "SELECT", "{db}.*", "v3", "reads"),
    ("tables", "INSERT", "{db}.*", "v3", "writes"),
    ("tables", "ALTER UPDATE", "{db}.*", "v3", "data retention, project and trace deletion, event updates"),
    ("tables", "ALTER DELETE", "{db}.*", "v3", "data retention, project and trace deletion"),
    # CREATE on a database is CREATE DATABASE, CREATE TABLE, CREATE VIEW and CREATE DICTIONARY (SHOW GRANTS lists
    # them so); CHECK GRANT CREATE asks for the whole CREATE group, global parts (CREATE TEMPORARY TABLE, CREATE
    # FUNCTION, ...) included, and answers 0 to a user granted CREATE ON <db>.* - so the parts are checked.
    ("tables", "CREATE", "{db}.*", "v3", _SCHEMA, "CREATE DATABASE, CREATE TABLE, CREATE VIEW, CREATE DICTIONARY"),
    ("tables", "DROP TABLE", "{db}.*", "v3", _SCHEMA),
    ("tables", "DROP VIEW", "{db}.*", "v4", _SCHEMA),
    ("tables", "ALTER ADD COLUMN", "{db}.*", "v4", _SCHEMA),
    ("tables", "ALTER MODIFY COLUMN", "{db}.*", "v4", _SCHEMA),
    ("tables", "ALTER VIEW MODIFY QUERY", "{db}.*", "v4", _SCHEMA),
    ("tables", "ALTER ADD INDEX", "{db}.*", "v4", _SCHEMA),
    ("tables", "ALTER DROP INDEX", "{db}.*", "v3", _SCHEMA),
    ("tables", "ALTER MATERIALIZE INDEX", "{db}.*", "v4", _SCHEMA),
    ("system_tables", "SELECT(database, table, name, partition, partition_id, active, rows)", "system.parts", "v4",
     "finding partitions and parts: the dual write's event propagation, the historic backfill, the deleted-mask cleaner"),
    ("system_tables", "SELECT(database, table, is_done)", "system.mutations", "v4",
     "the deleted-mask cleaner's mutation backpressure"),
    ("system_tables", "SELECT(database, name, engine)", "system.tables", "v4", "the historic backfill's engine detection"),
    ("system_tables", "SELECT", "system.processes", "v4",
     "progress of long-running migration queries, detection of v4 transition usage"),
    ("system_tables", "SELECT", "system.query_log*", "v4",
     "progress of long-running migration queries, detection of v4 transition usage (the wildcard covers the "
     "query_log_N tables ClickHouse rotates in on a schema change)"),
    ("cluster", "READ", "REMOTE", "v4", "reading the system tables of every replica through clusterAllReplicas()"),
    ("cluster", "CLUSTER", "*.*", "v4",
     "DDL ON CLUSTER (needed unless access_control_improvements.on_cluster_queries_require_cluster_grant is off)"),
    ("backfill", "SYSTEM SYNC REPLICA", "{db}." + BACKFILL_SCRATCH_TABLE, "v4", "merge control on replicated engines"),
    ("backfill", "SYSTEM MERGES", "{db}." + BACKFILL_SCRATCH_TABLE, "v4", "merge control on self-managed MergeTree"),
    ("backfill", "ALTER SETTINGS", "{db}." + BACKFILL_SCRATCH_TABLE, "v4",
     "merge control on replicated and SharedMergeTree engines"),
)

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def ch_name(value):
    """A database or user name as ClickHouse SQL writes it: bare when it can be, else in backquotes."""
    if _PLAIN_NAME.fullmatch(value):
        return value
    return "`" + value.replace("\\", "\\\\").replace("`", "\\`") + "`"


def resolve_clustered(option, clickhouse_state):
    """(clustered, why): the option, else what schema_migrations' engine says, else Langfuse's default.

    clickhouse_state: summarize_clickhouse's, or None when it could not be read.
    """
    if option is not None:
        return bool(option), "option clickhouse_cluster_enabled"
    if clickhouse_state and clickhouse_state["table_exists"]:
        return clickhouse_state["replicated"], f"schema_migrations engine {clickhouse_state['engine']}"
    why = "no schema_migrations table to tell" if clickhouse_state else "schema_migrations could not be read"
    return True, f"Langfuse's default CLICKHOUSE_CLUSTER_ENABLED=true ({why}; set clickhouse_cluster_enabled)"


def required_grants(database, clustered):
    """The privileges to check for Langfuse v4, each with its CHECK GRANT statement (run as the Langfuse user)."""
    checks = []
    for purpose, privilege, on, since, why, *check_as in _GRANTS:
        if purpose == "cluster" and not clustered:
            continue
        target = on.format(db=ch_name(database))
        checks.append({"purpose": purpose, "privilege": privilege, "on": target, "since": since, "why": why,
                       "check": f"CHECK GRANT {check_as[0] if check_as else privilege} ON {target}"})
    return checks


def grant_statement(privileges, on, user, clustered):
    cluster = f"ON CLUSTER {CLUSTER_NAME} " if clustered else ""
    return f"GRANT {cluster}{', '.join(privileges)} ON {on} TO {ch_name(user)}"


def lightweight_statement(user, clustered):
    cluster = f" ON CLUSTER {CLUSTER_NAME}" if clustered else ""
    return (f"CREATE SETTINGS PROFILE {LIGHTWEIGHT_PROFILE}{cluster} SETTINGS enable_lightweight_update = 1 "
            f"TO {ch_name(user)}")


def summarize_grants(checks, results, user, clustered, clustered_from, lightweight=None):
    """What CHECK GRANT answered, the missing grants and the statements that add them.

    results: one per check, True/False (CHECK GRANT's 1/0) or a string (the error it raised);
    lightweight: None when CLICKHOUSE_USE_LIGHTWEIGHT_UPDATE is not in use, else whether the user's
    enable_lightweight_update is on (or the error reading it).
    """
    missing, errors = [], []
    for entry, answer in zip(checks, results):
        item = {k: entry[k] for k in ("purpose", "privilege", "on", "since", "why")}
        if isinstance(answer, str):
            errors.append(dict(item, error=answer))
        elif not answer:
            missing.append(dict(item, grant=grant_statement([entry["privilege"]], entry["on"], user, clustered)))
    by_target = {}
    for item in missing:
        by_target.setdefault(item["on"], []).append(item["privilege"])
    statements = [grant_statement(privileges, on, user, clustered) for on, privileges in by_target.items()]
    lightweight_state = None
    if lightweight is not None:
        lightweight_state = {"enabled": lightweight if isinstance(lightweight, bool) else None,
                             "error": lightweight if isinstance(lightweight, str) else None}
        if lightweight is False:
            lightweight_state["statement"] = lightweight_statement(user, clustered)
            statements.append(lightweight_state["statement"])
        elif isinstance(lightweight, str):
            errors.append({"purpose": "lightweight_update", "privilege": "setting enable_lightweight_update", "on": None,
                           "since": "v4", "why": "native UPDATE statements", "error": lightweight})
    return {"user": user, "clustered": clustered, "clustered_from": clustered_from, "checked": len(checks),
            "granted": sum(1 for r in results if r is True), "missing": missing, "errors": errors,
            "lightweight_update": lightweight_state, "statements": statements,
            "enough": not missing and not errors and lightweight is not False}


def grant_problems(state, database, host=None):
    """Messages for the Langfuse user's missing grants, naming each and the statements an admin runs."""
    problems = []
    user = ch_name(state["user"])
    where = f"on {host}" if host else "on the server that answered"
    short = state["missing"] + ([{"purpose": "lightweight_update", "privilege": "enable_lightweight_update = 1",
                                  "on": None, "why": "native UPDATE statements"}]
                                if state["lightweight_update"] and state["lightweight_update"]["enabled"] is False else [])
    if short:
        named = "; ".join(
            f"{m['privilege']} ON {m['on']} ({GRANT_PURPOSES[m['purpose']]}: {m['why']})" if m["on"] else
            f"setting {m['privilege']} ({GRANT_PURPOSES[m['purpose']]}: {m['why']})" for m in short)
        cluster_note = (f" The statements say ON CLUSTER {CLUSTER_NAME}, as grants are per node unless the cluster keeps "
                        "its users in a replicated access storage (then drop ON CLUSTER); this check saw one node only."
                        if state["clustered"] else "")
        problems.append(
            f"ClickHouse user {user} ({where}, database {database}) lacks {len(short)} of what Langfuse v4 needs "
            f"({LANGFUSE_GRANTS_DOC}; clustered: {'yes' if state['clustered'] else 'no'}, from {state['clustered_from']}): "
            f"{named}. Without them Langfuse v4's schema migrations or background jobs fail with \"Not enough "
            f"privileges\". An admin runs, before the v4 server upgrade: {'; '.join(state['statements'])}."
            f"{cluster_note}")
    for entry in state["errors"]:
        target = f" ON {entry['on']}" if entry["on"] else ""
        hint = " (CHECK GRANT came with ClickHouse 24.9; Langfuse v4 needs 25.12)" if entry["on"] else ""
        problems.append(
            f"Could not check {entry['privilege']}{target} for ClickHouse user {user} ({where}): "
            f"{_excerpt(entry['error'])}{hint}.")
    return problems


def pending_reasons(result, dirty_counts=True):
    """Why the migrations are not settled yet (empty when they are).

    dirty_counts=False leaves a dirty ClickHouse version out: with
    expect_not_dirty off, waiting for it to clear would only waste the timeout.
    """
    reasons = []
    for entry in result.get("postgres", {}).get("in_progress", []):
        reasons.append(f"Postgres migration {entry['migration_name']} in progress (running {entry['running_seconds']}s)")
    clickhouse = result.get("clickhouse", {})
    if dirty_counts and clickhouse.get("dirty"):
        reasons.append(f"ClickHouse migration {clickhouse['version']} dirty (maybe still running)")
    return reasons


def validate_params(params):
    """Checks the argument spec cannot express; returns error messages."""
    errors = []
    for db in ("postgres", "clickhouse"):
        opts = params.get(db)
        if opts and not opts.get("host") and not opts.get("forward"):
            errors.append(f"{db}.host is required unless {db}.forward is set")
    if params.get("min_clickhouse_version") is not None and not params.get("clickhouse"):
        errors.append("min_clickhouse_version needs clickhouse")
    if params.get("expect_replicated") is not None and not params.get("clickhouse"):
        errors.append("expect_replicated needs clickhouse")
    if params.get("expect_postgres_migrations") and not params.get("postgres"):
        errors.append("expect_postgres_migrations needs postgres")
    if params.get("clickhouse_disk_factor") is not None and not params.get("clickhouse"):
        errors.append("clickhouse_disk_factor needs clickhouse")
    if params.get("clickhouse_disk_factor") is not None and params["clickhouse_disk_factor"] < 1:
        errors.append("clickhouse_disk_factor must be at least 1")
    if params.get("check_v4_clickhouse_grants") and not params.get("clickhouse"):
        errors.append("check_v4_clickhouse_grants needs clickhouse")
    for name in ("clickhouse_cluster_enabled", "clickhouse_lightweight_update"):
        if params.get(name) is not None and not params.get("check_v4_clickhouse_grants"):
            errors.append(f"{name} needs check_v4_clickhouse_grants")
    if params.get("expect_background_migrations_done") and not params.get("postgres"):
        errors.append("expect_background_migrations_done needs postgres")
    if params.get("backfill_scratch") and not (params.get("postgres") and params.get("clickhouse")):
        errors.append("backfill_scratch needs postgres and clickhouse")
    for name in ("expect_backfill_scratch_droppable", "expect_backfill_scratch_dropped"):
        if params.get(name) and not params.get("backfill_scratch"):
            errors.append(f"{name} needs backfill_scratch")
    for name, low in (("wait_timeout", 0), ("wait_interval", 1), ("in_progress_grace", 0)):
        if params.get(name) is not None and params[name] < low:
            errors.append(f"{name} must be at least {low}")
    return errors
