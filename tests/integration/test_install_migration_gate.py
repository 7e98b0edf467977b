"""install.yml stops at the migration gate when the databases hold a broken migration.

Each test seeds a database of its own on the real local PostgreSQL or
ClickHouse with what a broken migration run leaves (a failed Prisma
migration, a dirty golang-migrate version), points the install at it, and
checks that the run stops after the migration Job, before any Helm release
exists, with a message naming the migration and the recovery command.
"""
import json
import uuid

from conftest import ch, kubectl, pg, run
from test_install import install

FAILED_MIGRATION = "20260721120000_add_boolean_score_widget_views"


def install_on(databases, **extra):
    name, namespace = databases
    return install(namespace, extra={"postgres_database": name, "clickhouse_operator_database": name,
                                     **extra})


def assert_stopped_before_the_release(proc, namespace):
    assert proc.returncode != 0
    jobs = json.loads(kubectl("-n", namespace, "get", "jobs", "-l", "app.kubernetes.io/component=migrate",
                              "-o", "json").stdout)["items"]
    assert len(jobs) == 1 and jobs[0]["status"].get("succeeded") == 1, "the migration Job ran first"
    assert run("helm", "status", "langfuse", "-n", namespace, check=False).returncode != 0, "no release was made"


def test_a_failed_prisma_migration_stops_the_install(databases, services):
    with pg(services, databases[0]) as conn:
        conn.execute("""INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, logs, applied_steps_count)
                        VALUES (%s, %s, %s, now() - interval '1 hour', %s, 0)""",
                     (str(uuid.uuid4()), "0" * 64, FAILED_MIGRATION,
                      "Database error code: 42P07\nrelation \"dashboard_widgets_boolean\" already exists"))
    proc = install_on(databases)
    assert_stopped_before_the_release(proc, databases[1])
    text = " ".join(proc.stdout.split())
    assert FAILED_MIGRATION in text, proc.stdout[-3000:]
    assert f"prisma migrate resolve --rolled-back {FAILED_MIGRATION}" in text


def test_a_dirty_clickhouse_version_stops_the_install(databases, services):
    ch(services, f"INSERT INTO {databases[0]}.schema_migrations VALUES (37, 1, 2)")
    proc = install_on(databases)
    assert_stopped_before_the_release(proc, databases[1])
    text = " ".join(proc.stdout.split())
    assert "dirty" in text and "37" in text, proc.stdout[-3000:]
    assert "force 36" in text


def test_a_fresh_database_after_the_job_stops_the_install(databases, services):
    """A Job that 'succeeds' without migrating (here: KWOK runs nothing) must not pass the gate."""
    with pg(services, databases[0]) as conn:
        conn.execute("DROP TABLE _prisma_migrations")
    proc = install_on(databases)
    assert_stopped_before_the_release(proc, databases[1])
    assert "Postgres has no _prisma_migrations table" in " ".join(proc.stdout.split()), proc.stdout[-3000:]
