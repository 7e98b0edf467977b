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
    if params.get("expect_background_migrations_done") and not params.get("postgres"):
        errors.append("expect_background_migrations_done needs postgres")
    for name, low in (("wait_timeout", 0), ("wait_interval", 1), ("in_progress_grace", 0)):
        if params.get(name) is not None and params[name] < low:
            errors.append(f"{name} must be at least {low}")
    return errors
