"""The backup and restore scripts of the backup_cron role, run for real.

The same files the role ships in its ConfigMap run here against the local
PostgreSQL 15 and the local S3 (moto): seed -> backup -> damage -> restore ->
row counts and checksums equal. ClickHouse: the local server (18.16) predates
BACKUP/RESTORE, so the scripts are run against it up to its refusal, and
through fake_clickhouse.FakeClickHouse (which records the statements and
writes what a server would to S3) for the chain, retention and restore flow.
"""
import json
import os
import re
import subprocess
import time
import uuid

import boto3
import pytest

from conftest import REPO, pg
from fake_clickhouse import FakeClickHouse

SCRIPTS = REPO / "roles" / "backup_cron" / "files"
PG_BIN = "/usr/lib/postgresql/15/bin"

SEED = """
CREATE TABLE "_prisma_migrations" (id VARCHAR(36) PRIMARY KEY, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMPTZ,
  migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ, started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  applied_steps_count INTEGER NOT NULL DEFAULT 0);
INSERT INTO _prisma_migrations (id, checksum, migration_name, finished_at) VALUES
  ('a', 'x', '20260601000000_init', now()), ('b', 'y', '20260721120000_add_boolean_score_widget_views', now());
CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT NOT NULL, metadata JSONB, created_at TIMESTAMPTZ DEFAULT now());
CREATE TABLE prompts (id BIGSERIAL PRIMARY KEY, project_id TEXT REFERENCES projects(id), prompt TEXT, config BYTEA);
CREATE TABLE "Api Keys" (id INT PRIMARY KEY, hashed TEXT);
INSERT INTO projects SELECT 'p' || g, 'Projekt ' || g || ' ✓', jsonb_build_object('n', g) FROM generate_series(1, 200) g;
INSERT INTO prompts (project_id, prompt, config)
  SELECT 'p' || (g % 200 + 1), repeat('Prompt ' || g || E'\\n', g % 7), decode(md5(g::text), 'hex') FROM generate_series(1, 5000) g;
INSERT INTO "Api Keys" SELECT g, md5(g::text) FROM generate_series(1, 50) g;
"""
CHECKSUM = """SELECT c.relname, (SELECT count(*) FROM %s) AS rows, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
              FROM %s t, pg_class c WHERE c.oid = %s::regclass GROUP BY c.relname"""
TABLES = ['"_prisma_migrations"', "projects", "prompts", '"Api Keys"']


def fingerprint(conn):
    return {t: conn.execute(CHECKSUM % (t, t, f"'{t}'")).fetchone()[1:] for t in TABLES}


@pytest.fixture
def bucket(services):
    name = f"bk-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=services["LOCALENV_S3_ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id=services["LOCALENV_S3_ACCESS_KEY_ID"],
                      aws_secret_access_key=services["LOCALENV_S3_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3, name


@pytest.fixture
def database(services):
    name = f"bk_{uuid.uuid4().hex[:8]}"
    with pg(services) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with pg(services, name) as conn:
        conn.execute(SEED)
    yield name
    with pg(services) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def script_env(services, bucket_name, database="", **extra):
    env = dict(os.environ)
    env.update({
        "PATH": f"{PG_BIN}:{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1", "PGPORT": services["LOCALENV_POSTGRES_PORT"], "PGUSER": "postgres",
        "PGPASSWORD": services["LOCALENV_POSTGRES_PASSWORD"], "PGDATABASE": database, "PGSSLMODE": "disable",
        "S3_BUCKET": bucket_name, "S3_PREFIX": "langfuse-test", "S3_ENDPOINT": services["LOCALENV_S3_ENDPOINT"],
        "S3_FORCE_PATH_STYLE": "true", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": services["LOCALENV_S3_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": services["LOCALENV_S3_SECRET_ACCESS_KEY"],
        "LANGFUSE_HEALTH_URL": f"http://127.0.0.1:{services.get('LOCALENV_STANDIN_WEB_PORT', '13000')}/api/public/health",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def sh(script, *args, env, check=True, timeout=300):
    proc = subprocess.run(["bash", str(SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def keys(s3, name, prefix=""):
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix):
        found += [o["Key"] for o in page.get("Contents", [])]
    return sorted(found)


def test_postgres_backup_then_restore_gives_back_every_row(services, bucket, database):
    s3, name = bucket
    env = script_env(services, name, database)
    with pg(services, database) as conn:
        before = fingerprint(conn)
    backup_id = sh("backup-postgres.sh", "run", env=env).stdout.strip()
    assert re.fullmatch(r"\d{8}T\d{6}Z", backup_id)
    assert keys(s3, name) == [f"langfuse-test/postgres/{backup_id}/dump.pgcustom", f"langfuse-test/postgres/{backup_id}/manifest.json"]
    manifest = json.loads(s3.get_object(Bucket=name, Key=f"langfuse-test/postgres/{backup_id}/manifest.json")["Body"].read())
    assert manifest["latest_migration"] == "20260721120000_add_boolean_score_widget_views"
    assert manifest["tables"] == {"public.Api Keys": 50, "public._prisma_migrations": 2, "public.projects": 200, "public.prompts": 5000}
    assert manifest["server_version"].startswith("15.")
    assert manifest["bytes"] > 1000

    with pg(services, database) as conn:  # the damage a restore must undo
        conn.execute("DELETE FROM prompts WHERE id % 3 = 0")
        conn.execute("UPDATE projects SET name = 'overwritten'")
        conn.execute('DROP TABLE "Api Keys"')
    restored = sh("restore-postgres.sh", "run", env=env | {"BACKUP_ID": "latest"})
    assert "row counts equal the backup's (4 tables)" in restored.stderr
    with pg(services, database) as conn:
        assert fingerprint(conn) == before


def test_postgres_retention_keeps_the_newest_complete_backups(services, bucket, database):
    s3, name = bucket
    env = script_env(services, name, database, BACKUP_KEEP=2)
    # An incomplete backup (no manifest: a run that died) older than every complete one.
    s3.put_object(Bucket=name, Key="langfuse-test/postgres/20200101T000000Z/dump.pgcustom", Body=b"partial")
    ids = []
    for _attempt in range(3):
        ids.append(sh("backup-postgres.sh", "run", env=env).stdout.strip())
        time.sleep(1.1)
    folders = sorted({k.split("/")[2] for k in keys(s3, name, "langfuse-test/postgres/")})
    assert folders == ids[1:]
    assert sh("restore-postgres.sh", "latest", env=env).stdout.strip() == ids[2]


def test_failed_dump_leaves_no_backup_behind(services, bucket, database):
    s3, name = bucket
    env = script_env(services, name, database, PGPASSWORD="wrong-password")
    proc = sh("backup-postgres.sh", "run", env=env, check=False)
    assert proc.returncode != 0
    assert "password authentication failed" in proc.stderr
    assert keys(s3, name) == []


def test_restore_refuses_a_database_with_tables_the_backup_lacks(services, bucket, database):
    s3, name = bucket
    env = script_env(services, name, database)
    sh("backup-postgres.sh", "run", env=env)
    with pg(services, database) as conn:
        conn.execute("CREATE TABLE added_by_a_later_migration (id INT)")
        conn.execute("UPDATE projects SET name = 'changed since' WHERE id = 'p1'")
        before = fingerprint(conn)
    proc = sh("restore-postgres.sh", "run", env=env, check=False)
    assert proc.returncode != 0
    assert "public.added_by_a_later_migration" in proc.stderr and "Nothing was restored" in proc.stderr
    with pg(services, database) as conn:
        assert fingerprint(conn) == before


def test_restore_refuses_a_backup_without_manifest(services, bucket, database):
    s3, name = bucket
    env = script_env(services, name, database, BACKUP_ID="20200101T000000Z")
    s3.put_object(Bucket=name, Key="langfuse-test/postgres/20200101T000000Z/dump.pgcustom", Body=b"partial")
    proc = sh("restore-postgres.sh", "run", env=env, check=False)
    assert proc.returncode != 0 and "has no manifest" in proc.stderr


# ---------------------------------------------------------------- ClickHouse

def ch_env(services, name, url, **extra):
    return script_env(services, name, CLICKHOUSE_URL=url, CLICKHOUSE_USER="default",
                      CLICKHOUSE_PASSWORD=services["LOCALENV_CLICKHOUSE_PASSWORD"], **extra)


def test_clickhouse_backup_reaches_the_real_server_which_predates_backup(services, bucket):
    """18.16 has no BACKUP statement: the script must stop with the server's own error and write no manifest."""
    s3, name = bucket
    url = f"http://127.0.0.1:{services['LOCALENV_CLICKHOUSE_HTTP_PORT']}"
    proc = sh("backup-clickhouse.sh", "full", env=ch_env(services, name, url), check=False)
    assert proc.returncode != 0
    assert "ClickHouse refused the backup" in proc.stderr and "Syntax error" in proc.stderr
    assert keys(s3, name) == []


def test_clickhouse_chain_of_full_and_incrementals(services, bucket):
    s3, name = bucket
    fake = FakeClickHouse()
    try:
        env = ch_env(services, name, fake.url, BACKUP_KEEP_CHAINS=1)
        incr_first = sh("backup-clickhouse.sh", "incremental", env=env)  # nothing to build on: a full
        assert "taking a full one" in incr_first.stderr
        chain1 = incr_first.stdout.strip()
        time.sleep(1.1)
        incr = sh("backup-clickhouse.sh", "incremental", env=env).stdout.strip()
        assert incr.split("/")[0] == chain1.split("/")[0]
        backups = fake.statements("BACKUP")
        endpoint = services["LOCALENV_S3_ENDPOINT"]
        secret = services["LOCALENV_S3_SECRET_ACCESS_KEY"]
        assert backups[0] == (f"BACKUP DATABASE `default` TO S3('{endpoint}/{name}/langfuse-test/clickhouse/{chain1}/', "
                              f"'{services['LOCALENV_S3_ACCESS_KEY_ID']}', '{secret}') ASYNC")
        assert backups[1].endswith(f"SETTINGS base_backup = S3('{endpoint}/{name}/langfuse-test/clickhouse/{chain1}/', "
                                   f"'{services['LOCALENV_S3_ACCESS_KEY_ID']}', '{secret}') ASYNC")
        manifest = json.loads(s3.get_object(Bucket=name, Key=f"langfuse-test/clickhouse/{incr}.json")["Body"].read())
        assert manifest["type"] == "incremental" and manifest["base"] == chain1.split("/")[1]
        assert manifest["latest_migration"] == "37" and manifest["tables"]["traces"] == 10

        # A new full starts a second chain; keeping one chain removes the first whole, never part of it.
        time.sleep(1.1)
        chain2 = sh("backup-clickhouse.sh", "full", env=env).stdout.strip()
        remaining = keys(s3, name, "langfuse-test/clickhouse/")
        assert set(remaining) == {f"langfuse-test/clickhouse/{chain2}/.backup", f"langfuse-test/clickhouse/{chain2}.json"}
    finally:
        fake.close()


def test_clickhouse_failed_backup_writes_no_manifest(services, bucket):
    s3, name = bucket
    fake = FakeClickHouse(fail_backup="Code: 499. DB::Exception: Access Denied")
    try:
        proc = sh("backup-clickhouse.sh", "full", env=ch_env(services, name, fake.url), check=False)
        assert proc.returncode != 0 and "Access Denied" in proc.stderr
        assert not [k for k in keys(s3, name) if k.endswith(".json")]
    finally:
        fake.close()


def test_clickhouse_restore_swaps_tables_in_on_the_cluster(services, bucket):
    s3, name = bucket
    fake = FakeClickHouse()
    try:
        env = ch_env(services, name, fake.url, CLICKHOUSE_CLUSTER="default")
        backup = sh("backup-clickhouse.sh", "full", env=env).stdout.strip()
        assert fake.statements("BACKUP")[0].startswith("BACKUP DATABASE `default` ON CLUSTER 'default' TO S3(")
        proc = sh("restore-clickhouse.sh", "run", env=env)
        restore = fake.statements("RESTORE")
        assert len(restore) == 1
        side = re.search(r"AS `(default_before_restore_\w+)`", restore[0]).group(1)
        assert restore[0].startswith(f"RESTORE DATABASE `default` AS `{side}` ON CLUSTER 'default' FROM S3("
                                     f"'{services['LOCALENV_S3_ENDPOINT']}/{name}/langfuse-test/clickhouse/{backup}/'")
        assert fake.statements("EXCHANGE") == [f"EXCHANGE TABLES `default`.`{t}` AND `{side}`.`{t}` ON CLUSTER 'default'"
                                               for t in sorted(fake.tables)]
        assert fake.statements("RENAME") == [f"RENAME TABLE `{side}`.`added_by_backup` TO `default`.`added_by_backup` ON CLUSTER 'default'"]
        assert not fake.statements("DROP")
        assert f"the replaced ones are in {side}" in proc.stderr
    finally:
        fake.close()
