"""The backup and restore scripts of the backup_cron role, run for real.

The same files the role ships in its ConfigMap run here against the local
PostgreSQL 15 and the local S3 (moto): seed -> backup -> damage -> restore ->
row counts and checksums equal.

ClickHouse: the local network server (Debian's 18.16) predates BACKUP/RESTORE,
so the scripts run against it only up to its refusal. The rest runs against
a real modern engine: chDB (ClickHouse 26.x in process) behind
tests/localenv/chdb_http.py, ClickHouse's HTTP interface on 127.0.0.1, which
a fixture here starts for each test with a data directory of its own. The
server itself writes the backups to moto and reads them back. What chDB
cannot do, and so what is not run here: ON CLUSTER (no clusters: "Code: 701.
DB::Exception: Requested cluster 'default' not found. (CLUSTER_DOESNT_EXIST)")
and Replicated engines (no Keeper: "Code: 225. DB::Exception: Can't create
replicated table without ZooKeeper. (NO_ZOOKEEPER)"); the clustered mode of
the scripts is checked up to that refusal. chDB's own `default` database is an
Overlay database (clickhouse-local's), not Atomic as on a server, and RESTORE
... AS refuses it ("Code: 607 ... The database has a different definition"),
so the tests back up a database `langfuse` (CLICKHOUSE_DATABASE).
"""
import json
import os
import re
import subprocess
import time
import uuid

import boto3
import pytest
import requests

from conftest import REPO, ChdbServer, pg

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


def script_env(services, bucket_name, database="", namespace=None, **extra):
    """The backup scripts' env against the local services; with `namespace`, the health URL asks for that
    namespace's Langfuse, as a Job's call through the web Service does (the job runner adds the same)."""
    health = f"http://127.0.0.1:{services.get('LOCALENV_STANDIN_WEB_PORT', '13000')}/api/public/health"
    env = dict(os.environ)
    env.update({
        "PATH": f"{PG_BIN}:{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1", "PGPORT": services["LOCALENV_POSTGRES_PORT"], "PGUSER": "postgres",
        "PGPASSWORD": services["LOCALENV_POSTGRES_PASSWORD"], "PGDATABASE": database, "PGSSLMODE": "disable",
        "S3_BUCKET": bucket_name, "S3_PREFIX": "langfuse-test", "S3_ENDPOINT": services["LOCALENV_S3_ENDPOINT"],
        "S3_FORCE_PATH_STYLE": "true", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": services["LOCALENV_S3_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": services["LOCALENV_S3_SECRET_ACCESS_KEY"],
        "LANGFUSE_HEALTH_URL": health + (f"?localenv-namespace={namespace}" if namespace else ""),
        # The local inventory's key, so that a backup made here is one its playbooks accept, as a CronJob's would be.
        "BACKUP_SIGNING_KEY": services["LOCALENV_BACKUP_SIGNING_KEY"],
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

def ch_env(services, name, url, password, **extra):
    return script_env(services, name, CLICKHOUSE_URL=url, CLICKHOUSE_USER="default", CLICKHOUSE_PASSWORD=password, **extra)


def test_clickhouse_backup_reaches_the_real_server_which_predates_backup(services, bucket):
    """18.16 has no BACKUP statement: the script must stop with the server's own error and write no manifest."""
    s3, name = bucket
    url = f"http://127.0.0.1:{services['LOCALENV_CLICKHOUSE_HTTP_PORT']}"
    proc = sh("backup-clickhouse.sh", "full", env=ch_env(services, name, url, services["LOCALENV_CLICKHOUSE_PASSWORD"]),
              check=False)
    assert proc.returncode != 0
    assert "ClickHouse refused the backup" in proc.stderr and "Syntax error" in proc.stderr
    assert keys(s3, name) == []


@pytest.fixture
def chdb(tmp_path):
    server = ChdbServer(tmp_path)
    yield server
    server.close()


def test_chdb_front_answers_as_clickhouse_does(chdb):
    """The front's own contract, the parts the scripts (and curl) rely on."""
    url = chdb.url
    ok = requests.post(url, data="SELECT version(), currentDatabase()", auth=("default", chdb.password), timeout=30)
    assert ok.status_code == 200 and re.fullmatch(r"2\d\.\d+\.\d+\.\d+\tdefault\n", ok.text)
    assert requests.get(f"{url}/ping", timeout=30).text == "Ok.\n"
    by_headers = requests.get(url, params={"query": "SELECT currentDatabase()", "database": "system"}, timeout=30,
                              headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": chdb.password})
    assert (by_headers.status_code, by_headers.text) == (200, "system\n")
    by_params = requests.post(url, params={"user": "default", "password": chdb.password, "default_format": "JSONEachRow"},
                              data="SELECT 1 AS a", timeout=30)
    assert by_params.text == '{"a":1}\n'
    assert chdb.query("SELECT currentDatabase()") == "default\n"  # ?database= lasted one request only
    wrong = requests.post(url, data="SELECT 1", auth=("default", "wrong"), timeout=30)
    assert wrong.status_code == 403 and wrong.headers["X-ClickHouse-Exception-Code"] == "516"
    assert wrong.text.startswith("Code: 516. DB::Exception: default: Authentication failed") and "(AUTHENTICATION_FAILED)" in wrong.text
    bad = requests.post(url, data="SELEC 1", auth=("default", chdb.password), timeout=30)
    assert bad.status_code == 400 and bad.text.startswith("Code: 62. DB::Exception: Syntax error")
    missing = requests.post(url, data="SELECT * FROM nowhere.t", auth=("default", chdb.password), timeout=30)
    assert missing.status_code == 404 and "(UNKNOWN_DATABASE)" in missing.text
    two = requests.post(url, data="SELECT 1; SELECT 2", auth=("default", chdb.password), timeout=30)
    assert two.status_code == 400 and "Multi-statements are not allowed" in two.text
    chdb.query("CREATE TABLE default.kv (k String, v UInt64) ENGINE = MergeTree ORDER BY k")
    chdb.query("a;1\t1\nb\t2\n", query="INSERT INTO default.kv FORMAT TSV")  # ?query= then the rows in the body
    assert chdb.query("SELECT k, v FROM default.kv ORDER BY k FORMAT TSV") == "a;1\t1\nb\t2\n"
    chdb.query("SET max_threads = 3")  # a session-less request: its SET ends with it
    assert chdb.query("SELECT getSetting('max_threads') = 3") == "0\n"
    assert chdb.query("SELECT getSetting('max_threads')", max_threads="3") == "3\n"


# A Langfuse-like schema: the v3 tables traces, observations and scores (ReplacingMergeTree on event_ts with an
# is_deleted flag), project_environments fed by materialised views (as Langfuse's migration 0009 has them), and
# golang-migrate's schema_migrations.
LANGFUSE_SCHEMA = [
    """CREATE TABLE traces (id String, timestamp DateTime64(3), name String, user_id Nullable(String),
         metadata Map(LowCardinality(String), String), release Nullable(String), version Nullable(String),
         project_id String, environment LowCardinality(String) DEFAULT 'default', public Bool, bookmarked Bool,
         tags Array(String), input Nullable(String) CODEC(ZSTD(3)), output Nullable(String) CODEC(ZSTD(3)),
         session_id Nullable(String), created_at DateTime64(3), updated_at DateTime64(3), event_ts DateTime64(3),
         is_deleted UInt8,
         INDEX idx_id id TYPE bloom_filter(0.001) GRANULARITY 1)
       ENGINE = ReplacingMergeTree(event_ts, is_deleted) PARTITION BY toYYYYMM(timestamp)
       PRIMARY KEY (project_id, toDate(timestamp)) ORDER BY (project_id, toDate(timestamp), id)""",
    """CREATE TABLE observations (id String, trace_id String, project_id String,
         environment LowCardinality(String) DEFAULT 'default', type LowCardinality(String),
         parent_observation_id Nullable(String), start_time DateTime64(3), end_time Nullable(DateTime64(3)),
         name String, metadata Map(LowCardinality(String), String), level LowCardinality(String),
         status_message Nullable(String), version Nullable(String), input Nullable(String) CODEC(ZSTD(3)),
         output Nullable(String) CODEC(ZSTD(3)), provided_model_name Nullable(String), internal_model_id Nullable(String),
         model_parameters Nullable(String), provided_usage_details Map(LowCardinality(String), UInt64),
         usage_details Map(LowCardinality(String), UInt64), provided_cost_details Map(LowCardinality(String), Decimal64(12)),
         cost_details Map(LowCardinality(String), Decimal64(12)), total_cost Nullable(Decimal64(12)),
         completion_start_time Nullable(DateTime64(3)), prompt_id Nullable(String), prompt_name Nullable(String),
         prompt_version Nullable(UInt16), created_at DateTime64(3), updated_at DateTime64(3), event_ts DateTime64(3),
         is_deleted UInt8)
       ENGINE = ReplacingMergeTree(event_ts, is_deleted) PARTITION BY toYYYYMM(start_time)
       PRIMARY KEY (project_id, type, toDate(start_time)) ORDER BY (project_id, type, toDate(start_time), id)""",
    """CREATE TABLE scores (id String, timestamp DateTime64(3), project_id String,
         environment LowCardinality(String) DEFAULT 'default', trace_id String, observation_id Nullable(String),
         name String, value Float64, source String, comment Nullable(String), data_type String DEFAULT 'NUMERIC',
         string_value Nullable(String), created_at DateTime64(3), updated_at DateTime64(3), event_ts DateTime64(3),
         is_deleted UInt8)
       ENGINE = ReplacingMergeTree(event_ts, is_deleted) PARTITION BY toYYYYMM(timestamp)
       PRIMARY KEY (project_id, toDate(timestamp), name) ORDER BY (project_id, toDate(timestamp), name, id)""",
    """CREATE TABLE project_environments (project_id String,
         environments SimpleAggregateFunction(groupUniqArrayArray, Array(String)))
       ENGINE = AggregatingMergeTree ORDER BY (project_id)""",
    *[f"""CREATE MATERIALIZED VIEW project_environments_{t}_mv TO project_environments AS
          SELECT project_id, groupUniqArray(environment) AS environments FROM {t} GROUP BY project_id"""
      for t in ("traces", "observations", "scores")],
    "CREATE TABLE schema_migrations (version Int64, dirty UInt8, sequence UInt64) ENGINE = MergeTree ORDER BY sequence",
    # Not Langfuse's: a view without TO, whose rows live in its inner table (.inner_id.<uuid>), for the script's path
    # for those.
    """CREATE MATERIALIZED VIEW traces_per_day_mv ENGINE = SummingMergeTree ORDER BY (project_id, day) AS
       SELECT project_id, toDate(timestamp) AS day, count() AS traces FROM traces GROUP BY project_id, day""",
]
DATA_TABLES = ("observations", "project_environments", "schema_migrations", "scores", "traces")
VIEWS = ("project_environments_observations_mv", "project_environments_scores_mv", "project_environments_traces_mv",
         "traces_per_day_mv")


def seed_traces(first, count, start, step_seconds):
    """`count` traces from t-<first>, in 5 projects and 2 environments, one every `step_seconds` from `start`."""
    return f"""INSERT INTO traces SELECT concat('t-', toString(n)), toDateTime64('{start}', 3) + toIntervalSecond((n - {first}) * {step_seconds}),
      ['chat', 'rag', 'agent', 'eval'][n % 4 + 1], if(n % 5 = 0, NULL, concat('u-', toString(n % 97))),
      map('tenant', toString(n % 13), 'region', ['eu', 'us'][n % 2 + 1]), if(n % 3 = 0, 'v1.4.2', NULL), NULL,
      concat('p', toString(n % 5)), if(n % 3 = 0, 'staging', if(n >= 3000, 'production-eu', 'production')), n % 7 = 0, n % 11 = 0,
      arrayMap(i -> concat('tag', toString(i)), range(n % 4)), repeat(concat('question ', toString(n), ' '), n % 9 + 1),
      if(n % 6 = 0, NULL, concat('{{"answer": ', toString(n * 31), '}}')), concat('s-', toString(intDiv(n, 4))),
      toDateTime64('{start}', 3) + toIntervalSecond((n - {first}) * {step_seconds}),
      toDateTime64('{start}', 3) + toIntervalSecond((n - {first}) * {step_seconds} + 2),
      toDateTime64('{start}', 3) + toIntervalSecond((n - {first}) * {step_seconds} + 2), 0
      FROM (SELECT number + {first} AS n FROM numbers({count}))"""


def seed_observations(first_trace, traces, per_trace, start, step_seconds):
    return f"""INSERT INTO observations SELECT concat('o-', toString(t), '-', toString(k)), concat('t-', toString(t)),
      concat('p', toString(t % 5)), if(t % 3 = 0, 'staging', 'production'), ['SPAN', 'GENERATION', 'EVENT'][k % 3 + 1],
      if(k = 0, NULL, concat('o-', toString(t), '-0')), ts, ts + toIntervalMillisecond(150 + k * 40),
      concat('step-', toString(k)), map('k', toString(k)), ['DEFAULT', 'DEBUG', 'WARNING', 'ERROR'][(t + k) % 4 + 1],
      if((t + k) % 4 = 3, 'rate limited', NULL), NULL, concat('prompt ', toString(t)), concat('completion ', toString(k)),
      if(k % 3 = 1, 'gpt-4o', NULL), NULL, if(k % 3 = 1, '{{"temperature": 0.2}}', NULL),
      map('input', toUInt64(100 + t % 50), 'output', toUInt64(20 + k)),
      map('input', toUInt64(100 + t % 50), 'output', toUInt64(20 + k), 'total', toUInt64(120 + t % 50 + k)),
      map('input', toDecimal64((100 + t % 50) * 0.0000025, 12)),
      map('input', toDecimal64((100 + t % 50) * 0.0000025, 12), 'output', toDecimal64((20 + k) * 0.00001, 12)),
      if(k % 3 = 1, toDecimal64((100 + t % 50) * 0.0000025 + (20 + k) * 0.00001, 12), NULL), NULL,
      if(t % 10 = 0, concat('prompt-', toString(t % 3)), NULL), if(t % 10 = 0, concat('support-', toString(t % 3)), NULL),
      if(t % 10 = 0, toUInt16(t % 5 + 1), NULL), ts, ts, ts, 0
      FROM (SELECT t, k, toDateTime64('{start}', 3) + toIntervalSecond((t - {first_trace}) * {step_seconds} + k) AS ts
            FROM (SELECT number + {first_trace} AS t FROM numbers({traces})) ARRAY JOIN range({per_trace}) AS k)"""


def seed_scores(first_trace, traces, start, step_seconds):
    return f"""INSERT INTO scores SELECT concat('sc-', toString(t)), ts, concat('p', toString(t % 5)),
      if(t % 3 = 0, 'staging', 'production'), concat('t-', toString(t)), if(t % 2 = 0, concat('o-', toString(t), '-1'), NULL),
      ['helpfulness', 'correctness', 'toxicity'][t % 3 + 1], (t % 100) / 100, ['API', 'EVAL', 'ANNOTATION'][t % 3 + 1],
      if(t % 4 = 0, 'checked by a reviewer', NULL), if(t % 3 = 2, 'CATEGORICAL', 'NUMERIC'),
      if(t % 3 = 2, ['good', 'bad'][t % 2 + 1], NULL), ts, ts, ts, 0
      FROM (SELECT number + {first_trace} AS t, toDateTime64('{start}', 3) + toIntervalSecond(number * {step_seconds} + 30) AS ts
            FROM numbers({traces}) WHERE t % 4 != 1)"""


def migrations(first, last):
    return f"INSERT INTO schema_migrations SELECT number, 0, number FROM numbers({first}, {last - first + 1})"


def fingerprint_ch(chdb, database="langfuse"):
    """Per table: rows and sum(cityHash64(row)) of what Langfuse reads (FINAL); the views' definitions.

    cityHash64(tuple(*)), not cityHash64(*): with a NULL among its arguments cityHash64 gives NULL, which sum() skips.
    """
    found = {}
    for table in (*DATA_TABLES, "traces_per_day_mv"):
        final = "" if table == "schema_migrations" else " FINAL"
        row = "project_id, arraySort(environments)" if table == "project_environments" else "tuple(*)"  # arrays merge unordered
        count, checksum = chdb.rows(f"SELECT count(), sum(cityHash64({row})) FROM `{database}`.{table}{final}")[0]
        assert checksum.isdigit(), (table, checksum)
        found[table] = (int(count), int(checksum))
    found["views"] = chdb.rows(f"SELECT name, create_table_query FROM system.tables WHERE database = '{database}' "
                               "AND engine LIKE '%View' ORDER BY name")
    return found


def physical_rows(chdb, database="langfuse"):
    return {t: int(r) for t, r in chdb.rows(f"SELECT table, sum(rows) FROM system.parts WHERE active AND database = '{database}' "
                                            "GROUP BY table ORDER BY table")}


def active_parts(chdb, database="langfuse"):
    """(table, part) of the active parts; an inner table's under its view's name, as a backup keeps them."""
    views = dict(chdb.rows(f"SELECT concat('.inner_id.', toString(uuid)), name FROM system.tables WHERE database = '{database}' "
                           "AND engine = 'MaterializedView'"))
    return {(views.get(t, t), p) for t, p in chdb.rows(f"SELECT table, name FROM system.parts WHERE active AND database = '{database}'")}


def backup_parts(s3, name, backup):
    """(table, part) of the data a backup folder holds itself (an incremental leaves what its base has in the base)."""
    prefix = f"langfuse-test/clickhouse/{backup}/data/langfuse/"
    return {tuple(k[len(prefix):].split("/")[:2]) for k in keys(s3, name, prefix)}


@pytest.fixture
def langfuse_db(chdb):
    chdb.query("CREATE DATABASE langfuse")
    for statement in LANGFUSE_SCHEMA:
        chdb.query(statement, database="langfuse")
    inner = [name for [name] in chdb.rows("SELECT name FROM system.tables WHERE database = 'langfuse' AND name LIKE '.inner%'")]
    for table in [*DATA_TABLES, *inner]:  # parts stay as inserted, so what each backup holds is known exactly
        chdb.query(f"SYSTEM STOP MERGES langfuse.`{table}`")
    return chdb


def test_clickhouse_full_and_incremental_backups_restore_every_row(services, bucket, langfuse_db):
    """The drill: seed, a full and an incremental BACKUP to S3 (moto), damage, RESTORE each, compare checksums."""
    chdb, (s3, name) = langfuse_db, bucket
    env = ch_env(services, name, chdb.url, chdb.password, CLICKHOUSE_DATABASE="langfuse")

    def q(sql):
        return chdb.query(sql, database="langfuse")

    # Week 1: 3000 traces over September and October, their observations and scores, migrations 1-30.
    q(seed_traces(0, 3000, "2026-09-01 00:00:00", 1700))
    q(seed_observations(0, 3000, 3, "2026-09-01 00:00:00", 1700))
    q(seed_scores(0, 3000, "2026-09-01 00:00:00", 1700))
    q(migrations(1, 30))
    at_full = fingerprint_ch(chdb)
    parts_at_full = active_parts(chdb)
    assert at_full["traces"][0] == 3000 and at_full["observations"][0] == 9000 and at_full["scores"][0] == 2250
    assert at_full["project_environments"][0] == 5 and [view[0] for view in at_full["views"]] == list(VIEWS)
    assert at_full["traces_per_day_mv"][0] == int(chdb.rows("SELECT uniqExact(project_id, toDate(timestamp)) FROM langfuse.traces")[0][0])

    first = sh("backup-clickhouse.sh", "incremental", env=env)  # nothing to build on yet: a full
    assert "taking a full one" in first.stderr
    full = first.stdout.strip()
    chain, full_id = full.split("/")
    assert chain == full_id and re.fullmatch(r"\d{8}T\d{6}Z", chain)
    in_full = backup_parts(s3, name, full)
    assert in_full <= parts_at_full and {part[0] for part in in_full} == {*DATA_TABLES, "traces_per_day_mv"}

    # Week 2: November's traces (some in a new environment), 200 traces updated (a newer version, the same sorting
    # key), 20 deleted (is_deleted), more observations and scores, migrations 31-37.
    time.sleep(1.1)
    q(seed_traces(3000, 1000, "2026-11-02 00:00:00", 600))
    q(seed_observations(3000, 1000, 3, "2026-11-02 00:00:00", 600))
    q(seed_scores(3000, 1000, "2026-11-02 00:00:00", 600))
    q("""INSERT INTO traces SELECT * REPLACE (concat(name, ' (edited)') AS name, event_ts + toIntervalDay(60) AS event_ts,
           updated_at + toIntervalDay(60) AS updated_at) FROM traces WHERE toUInt32(substring(id, 3)) < 200""")
    q("""INSERT INTO traces SELECT * REPLACE (event_ts + toIntervalDay(61) AS event_ts, 1 AS is_deleted)
           FROM traces FINAL WHERE toUInt32(substring(id, 3)) BETWEEN 200 AND 219""")
    q(migrations(31, 37))
    at_incremental = fingerprint_ch(chdb)
    rows_at_incremental = physical_rows(chdb)
    assert at_incremental["traces"][0] == 3000 + 1000 - 20  # FINAL: updates replace, deletions hide
    assert rows_at_incremental["traces"] == 3000 + 1000 + 200 + 20
    assert all(at_incremental[t] != at_full[t] for t in (*DATA_TABLES, "traces_per_day_mv"))
    new_parts = active_parts(chdb) - parts_at_full

    incremental = sh("backup-clickhouse.sh", "incremental", env=env).stdout.strip()
    assert incremental.split("/")[0] == chain and incremental != full
    manifest = json.loads(s3.get_object(Bucket=name, Key=f"langfuse-test/clickhouse/{incremental}.json")["Body"].read())
    assert (manifest["type"], manifest["chain"], manifest["base"], manifest["database"]) == ("incremental", chain, full_id, "langfuse")
    assert manifest["latest_migration"] == "37"
    assert manifest["tables"] == rows_at_incremental
    # base_backup took effect: the incremental holds parts written since the full only (files with the content of
    # one already stored are stored once, so not every new part has a folder), and the server names its base.
    in_incremental = backup_parts(s3, name, incremental)
    assert in_incremental <= new_parts and {"observations", "schema_migrations", "scores", "traces"} <= {part[0] for part in in_incremental}
    [(base_name, status)] = chdb.rows("SELECT base_backup_name, status FROM system.backups WHERE status = 'BACKUP_CREATED' "
                                      f"AND name LIKE '%/{incremental}/%'")
    assert status == "BACKUP_CREATED" and f"/langfuse-test/clickhouse/{full}/" in base_name
    assert sh("restore-clickhouse.sh", "latest", env=env).stdout.strip() == incremental

    # The damage a restore must undo: a table emptied, one dropped with its view, rows that should not be there.
    q("TRUNCATE TABLE observations")
    q("DROP VIEW project_environments_scores_mv")
    q("DROP TABLE scores")
    q("INSERT INTO traces SELECT * REPLACE (concat('junk-', id) AS id) FROM traces LIMIT 500")
    q("INSERT INTO schema_migrations VALUES (38, 1, 38)")
    q("TRUNCATE TABLE project_environments")
    damaged = {t: chdb.rows(f"SELECT count() FROM langfuse.{t} FINAL")[0][0] for t in ("traces", "observations", "project_environments")}
    assert damaged == {"traces": str(3980 + 500), "observations": "0", "project_environments": "0"}

    restored = sh("restore-clickhouse.sh", "run", env=env | {"BACKUP_ID": "latest"})
    after = fingerprint_ch(chdb)
    for label, state in (("full", at_full), ("incremental", at_incremental), ("restored", after)):
        print(f"drill {label}:", {t: v for t, v in state.items() if t != "views"})  # (rows, sum(cityHash64)) per table
    assert after == at_incremental, restored.stderr
    side = re.search(r"the replaced ones are in (langfuse_before_restore_\w+)", restored.stderr).group(1)
    # The live tables the restore replaced are kept in the side database, unchanged: the damaged state.
    assert chdb.rows(f"SELECT count() FROM `{side}`.observations")[0][0] == "0"
    assert chdb.rows(f"SELECT count() FROM `{side}`.traces FINAL")[0][0] == damaged["traces"]
    *listed, manifest_line = restored.stdout.splitlines()  # the tables' rows now, then the manifest's counts
    assert [line.split("\t")[0] for line in listed if not line.startswith(".inner_id.")] == sorted(DATA_TABLES)
    assert len(listed) == len(DATA_TABLES) + 1  # and the inner table of traces_per_day_mv
    assert manifest_line == f"manifest: {json.dumps(rows_at_incremental)}"

    # Once the side database is dropped (as the log says to), the views still feed project_environments from the
    # live tables, each insert once.
    chdb.query(f"DROP DATABASE `{side}` SYNC")
    chdb.query("SYSTEM STOP MERGES langfuse.project_environments")  # the restored table: one row per view's insert stays
    q(seed_traces(9000, 1, "2026-11-30 00:00:00", 1).replace("concat('p', toString(n % 5))", "'p-after'"))
    q(seed_scores(9000, 1, "2026-11-30 00:00:00", 1).replace("concat('p', toString(t % 5))", "'p-after'"))
    assert chdb.rows("SELECT count(), arraySort(groupUniqArrayArray(environments)) FROM langfuse.project_environments "
                     "WHERE project_id = 'p-after'") == [["2", "['staging']"]]

    # The full backup alone restores the first week.
    time.sleep(1.1)
    sh("restore-clickhouse.sh", "run", env=env | {"BACKUP_ID": full})
    assert fingerprint_ch(chdb) == at_full


def test_clickhouse_retention_removes_whole_chains(services, bucket, langfuse_db):
    chdb, (s3, name) = langfuse_db, bucket
    env = ch_env(services, name, chdb.url, chdb.password, CLICKHOUSE_DATABASE="langfuse", BACKUP_KEEP_CHAINS=1)
    chdb.query(seed_traces(0, 50, "2026-09-01 00:00:00", 60), database="langfuse")
    chain1 = sh("backup-clickhouse.sh", "full", env=env).stdout.strip()
    time.sleep(1.1)
    chdb.query(seed_traces(50, 50, "2026-09-02 00:00:00", 60), database="langfuse")
    incr = sh("backup-clickhouse.sh", "incremental", env=env).stdout.strip()
    assert incr.split("/")[0] == chain1.split("/")[0]
    assert {f"langfuse-test/clickhouse/{b}{suffix}" for b in (chain1, incr) for suffix in ("/.backup", ".json")} <= \
        set(keys(s3, name))
    # A new full starts a second chain; keeping one chain removes the first whole, never part of it.
    time.sleep(1.1)
    chain2 = sh("backup-clickhouse.sh", "full", env=env).stdout.strip()
    remaining = keys(s3, name, "langfuse-test/clickhouse/")
    assert remaining and all(k.startswith(f"langfuse-test/clickhouse/{chain2.split('/')[0]}/") for k in remaining)
    assert {f"langfuse-test/clickhouse/{chain2}/.backup", f"langfuse-test/clickhouse/{chain2}.json"} <= set(remaining)


def test_clickhouse_failed_backup_writes_no_manifest(services, bucket, langfuse_db):
    chdb, (s3, name) = langfuse_db, bucket
    env = ch_env(services, name, chdb.url, chdb.password, CLICKHOUSE_DATABASE="langfuse")
    wrong_password = sh("backup-clickhouse.sh", "full", env=env | {"CLICKHOUSE_PASSWORD": "wrong"}, check=False)
    assert wrong_password.returncode != 0
    assert f"ClickHouse at {chdb.url}: Code: 516. DB::Exception: default: Authentication failed" in wrong_password.stderr
    # ON CLUSTER: the server accepts the statement (ASYNC) and the operation fails; chDB has no clusters.
    clustered = sh("backup-clickhouse.sh", "full", env=env | {"CLICKHOUSE_CLUSTER": "default"}, check=False)
    assert clustered.returncode != 0
    assert re.search(r"ClickHouse: operation [0-9a-f-]{36}: Code: 701\. DB::Exception: Requested cluster .*default.* not found",
                     clustered.stderr), clustered.stderr
    assert chdb.rows("SELECT status FROM system.backups") == [["BACKUP_FAILED"]]
    assert not [k for k in keys(s3, name) if k.endswith(".json")]


def test_clickhouse_failed_restore_leaves_the_live_tables_alone(services, bucket, langfuse_db):
    chdb, (s3, name) = langfuse_db, bucket
    env = ch_env(services, name, chdb.url, chdb.password, CLICKHOUSE_DATABASE="langfuse")
    chdb.query(seed_traces(0, 100, "2026-09-01 00:00:00", 60), database="langfuse")
    sh("backup-clickhouse.sh", "full", env=env)
    chdb.query("INSERT INTO langfuse.schema_migrations VALUES (99, 0, 99)")
    before = fingerprint_ch(chdb)
    proc = sh("restore-clickhouse.sh", "run", env=env | {"CLICKHOUSE_CLUSTER": "default"}, check=False)
    assert proc.returncode != 0 and "(CLUSTER_DOESNT_EXIST)" in proc.stderr
    assert fingerprint_ch(chdb) == before
    absent = sh("restore-clickhouse.sh", "run", env=env | {"BACKUP_ID": "20200101T000000Z/20200101T000000Z"}, check=False)
    assert absent.returncode != 0 and "has no manifest" in absent.stderr
    assert fingerprint_ch(chdb) == before


def test_postgres_manifest_carries_the_app_secret_fingerprints(services, bucket, database, tmp_path):
    """The fingerprints ConfigMap, mounted as files, goes into the manifest; without it the manifest says null."""
    s3, name = bucket
    recorded = {"hmac-key": "a" * 64, "salt": "hmac-sha256:" + "1" * 64, "encryption-key": "hmac-sha256:" + "2" * 64,
                "nextauth-secret": "hmac-sha256:" + "3" * 64}
    for key, value in recorded.items():
        (tmp_path / key).write_text(value)
    with_them = sh("backup-postgres.sh", "run", env=script_env(services, name, database, APP_FINGERPRINTS_DIR=tmp_path)).stdout.strip()
    time.sleep(1.1)
    (tmp_path / "salt").unlink()  # an incomplete set is not recorded
    partial = sh("backup-postgres.sh", "run", env=script_env(services, name, database, APP_FINGERPRINTS_DIR=tmp_path)).stdout.strip()
    time.sleep(1.1)
    without = sh("backup-postgres.sh", "run", env=script_env(services, name, database)).stdout.strip()

    def manifest(backup_id):
        return json.loads(s3.get_object(Bucket=name, Key=f"langfuse-test/postgres/{backup_id}/manifest.json")["Body"].read())

    assert manifest(with_them)["app_secrets"] == recorded
    assert manifest(with_them)["tables"]["public.projects"] == 200  # the rest of the manifest as before
    assert manifest(partial)["app_secrets"] is None and manifest(without)["app_secrets"] is None
    restored = sh("restore-postgres.sh", "run", env=script_env(services, name, database) | {"BACKUP_ID": with_them})
    assert "row counts equal the backup's (4 tables)" in restored.stderr


# ---------------------------------------------------------------- Backups nobody can forge (issue 20)

def resign(text, key):
    """A manifest's text signed again under `key`, as backup-lib.sh's manifest_sign does."""
    unsigned = re.sub(r', "signature": "hmac-sha256:[0-9a-f]{64}"\}\n?$', "}", text)
    proc = subprocess.run(["bash", "-c", f"source {SCRIPTS / 'backup-lib.sh'}; manifest_sign"], input=unsigned, text=True,
                          capture_output=True, env={"PATH": os.environ["PATH"], "BACKUP_SIGNING_KEY": key}, check=True)
    return proc.stdout


def planted_dump(services, tmp_path):
    """A pg_dump an attacker made: a database of theirs, with a table of theirs."""
    planted = f"planted_{uuid.uuid4().hex[:6]}"
    with pg(services) as conn:
        conn.execute(f'CREATE DATABASE "{planted}"')
    try:
        with pg(services, planted) as conn:
            conn.execute("CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT NOT NULL); INSERT INTO projects VALUES ('p1', 'pwned')")
        path = tmp_path / "planted.pgcustom"
        subprocess.run([f"{PG_BIN}/pg_dump", "--format=custom", "--no-owner", "-f", str(path), planted], check=True,
                       env={**os.environ, "PGHOST": "127.0.0.1", "PGPORT": services["LOCALENV_POSTGRES_PORT"], "PGUSER": "postgres",
                            "PGPASSWORD": services["LOCALENV_POSTGRES_PASSWORD"]})
        return path.read_bytes()
    finally:
        with pg(services) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{planted}" WITH (FORCE)')


def test_a_forged_manifest_or_a_planted_dump_is_refused_naming_which(services, bucket, database, tmp_path):
    """The attack of issue 20, by whoever can write to the bucket but holds no signing key: each refused, the
    database untouched; then the same backup, put back as it was, restores."""
    s3, name = bucket
    env = script_env(services, name, database)
    backup_id = sh("backup-postgres.sh", "run", env=env).stdout.strip()
    prefix = f"langfuse-test/postgres/{backup_id}"
    manifest = s3.get_object(Bucket=name, Key=f"{prefix}/manifest.json")["Body"].read().decode()
    assert json.loads(manifest)["signature"].startswith("hmac-sha256:")
    assert re.fullmatch(r"[0-9a-f]{64}", json.loads(manifest)["sha256"])
    with pg(services, database) as conn:
        conn.execute("UPDATE projects SET name = 'after the backup' WHERE id = 'p1'")
        live = fingerprint(conn)

    def restore_refused(words):
        proc = sh("restore-postgres.sh", "run", env=env | {"BACKUP_ID": backup_id}, check=False)
        said = " ".join(proc.stderr.split())
        assert proc.returncode != 0 and words in said, proc.stderr[-2000:]
        with pg(services, database) as conn:
            assert fingerprint(conn) == live
        return said

    def put(key, body):
        s3.put_object(Bucket=name, Key=f"{prefix}/{key}", Body=body)

    # 1. The manifest edited (the Langfuse version it says it was made by), its signature kept.
    edited = re.sub(r'"langfuse_version": "[^"]*"', '"langfuse_version": "3.0.0"', manifest)
    assert edited != manifest
    put("manifest.json", edited.encode())
    restore_refused(f"the manifest of Postgres backup {backup_id} does not carry a valid signature under the backup signing key")
    # 2. The manifest signed again with a key of the attacker's.
    put("manifest.json", resign(manifest, "an attacker's own key, long enough anyway").encode())
    restore_refused("does not carry a valid signature")
    # 3. The signature left out: an unsigned manifest is refused unless accepted by name.
    put("manifest.json", re.sub(r', "signature": "[^"]*"\}', "}", manifest).encode())
    restore_refused(f"the manifest of Postgres backup {backup_id} is not signed")
    # 4. The true manifest, a planted dump under it.
    put("manifest.json", manifest.encode())
    original = s3.get_object(Bucket=name, Key=f"{prefix}/dump.pgcustom")["Body"].read()
    put("dump.pgcustom", planted_dump(services, tmp_path))
    said = restore_refused(f"the dump of Postgres backup {backup_id} is not the object its signed manifest names")
    # 5. The dump swapped between the ETag check and the download (signed here with the true key to step past the
    # check): the stream's SHA-256 tells, and pg_restore, held before the archive's end, rolls back.
    etag = s3.head_object(Bucket=name, Key=f"{prefix}/dump.pgcustom")["ETag"].strip('"')
    put("manifest.json", resign(re.sub(r'"etag": "[^"]*"', f'"etag": "{etag}"', manifest), env["BACKUP_SIGNING_KEY"]).encode())
    swapped = restore_refused(f"the dump of Postgres backup {backup_id} streamed from the bucket is not the one its signed manifest names")
    assert "pg_restore never got its end, so its transaction rolled back" in swapped

    # The backup as it was restores, once the versions written over it are deleted (the bucket keeps versions; a copy of
    # the original would get another ETag, and the refusal says so).
    assert "deleting the versions above it" in said
    for key in ("dump.pgcustom", "manifest.json"):
        versions = s3.list_object_versions(Bucket=name, Prefix=f"{prefix}/{key}")["Versions"]
        for version in sorted(versions, key=lambda v: v["LastModified"])[1:]:
            s3.delete_object(Bucket=name, Key=f"{prefix}/{key}", VersionId=version["VersionId"])
    assert s3.get_object(Bucket=name, Key=f"{prefix}/dump.pgcustom")["Body"].read() == original
    sh("restore-postgres.sh", "run", env=env | {"BACKUP_ID": backup_id})
    with pg(services, database) as conn:
        assert conn.execute("SELECT name FROM projects WHERE id = 'p1'").fetchone()[0] == "Projekt 1 ✓"


def test_an_unsigned_backup_restores_only_when_accepted_by_name(services, bucket, database):
    s3, name = bucket
    env = script_env(services, name, database)
    backup_id = sh("backup-postgres.sh", "run", env=env).stdout.strip()
    key = f"langfuse-test/postgres/{backup_id}/manifest.json"
    manifest = s3.get_object(Bucket=name, Key=key)["Body"].read().decode()
    s3.put_object(Bucket=name, Key=key, Body=re.sub(r', "signature": "[^"]*"\}', "}", manifest).encode())
    with pg(services, database) as conn:
        conn.execute("UPDATE projects SET name = 'after the backup' WHERE id = 'p1'")
    refused = sh("restore-postgres.sh", "run", env=env, check=False)
    assert refused.returncode != 0 and "is not signed" in refused.stderr
    accepted = sh("restore-postgres.sh", "run", env=env | {"BACKUP_ACCEPT_UNSIGNED": "true"})
    assert f"WARNING: the manifest of Postgres backup {backup_id} is not signed" in accepted.stderr
    with pg(services, database) as conn:
        assert conn.execute("SELECT name FROM projects WHERE id = 'p1'").fetchone()[0] == "Projekt 1 ✓"


def test_a_clickhouse_backup_with_a_forged_base_or_index_is_refused(services, bucket, langfuse_db):
    """RESTORE of an incremental reads its bases: each manifest of the chain and each .backup index is checked."""
    chdb, (s3, name) = langfuse_db, bucket
    env = ch_env(services, name, chdb.url, chdb.password, CLICKHOUSE_DATABASE="langfuse")
    chdb.query(seed_traces(0, 100, "2026-09-01 00:00:00", 60), database="langfuse")
    full = sh("backup-clickhouse.sh", "full", env=env).stdout.strip()
    time.sleep(1.1)
    chdb.query(seed_traces(100, 50, "2026-10-01 00:00:00", 60), database="langfuse")
    incremental = sh("backup-clickhouse.sh", "incremental", env=env).stdout.strip()
    chdb.query("INSERT INTO langfuse.schema_migrations VALUES (99, 0, 99)")
    before = fingerprint_ch(chdb)
    base_key = f"langfuse-test/clickhouse/{full}.json"
    base_manifest = s3.get_object(Bucket=name, Key=base_key)["Body"].read()
    index_key = f"langfuse-test/clickhouse/{full}/.backup"
    index = s3.get_object(Bucket=name, Key=index_key)["Body"].read()

    def refused(words):
        proc = sh("restore-clickhouse.sh", "run", env=env | {"BACKUP_ID": incremental}, check=False)
        assert proc.returncode != 0 and words in " ".join(proc.stderr.split()), proc.stderr[-2000:]
        assert fingerprint_ch(chdb) == before

    s3.put_object(Bucket=name, Key=base_key, Body=base_manifest.replace(b'"type": "full"', b'"type": "fulL"'))
    refused(f"the manifest of ClickHouse backup {full} does not carry a valid signature")
    s3.put_object(Bucket=name, Key=base_key, Body=base_manifest)
    s3.put_object(Bucket=name, Key=index_key, Body=index + b"\n")
    refused(f"the .backup index of ClickHouse backup {full} is not the object its signed manifest names")
    s3.put_object(Bucket=name, Key=index_key, Body=index)
    sh("restore-clickhouse.sh", "run", env=env | {"BACKUP_ID": incremental})
    assert chdb.rows("SELECT count() FROM langfuse.traces")[0][0] in (150, "150")


def test_a_clickhouse_manifest_naming_a_database_that_is_not_a_plain_name_is_refused(services, bucket, langfuse_db):
    """Even signed (a key that leaked, a bug), a database name from a manifest never reaches SQL unchecked."""
    chdb, (s3, name) = langfuse_db, bucket
    env = ch_env(services, name, chdb.url, chdb.password, CLICKHOUSE_DATABASE="langfuse")
    chdb.query(seed_traces(0, 10, "2026-09-01 00:00:00", 60), database="langfuse")
    full = sh("backup-clickhouse.sh", "full", env=env).stdout.strip()
    key = f"langfuse-test/clickhouse/{full}.json"
    manifest = s3.get_object(Bucket=name, Key=key)["Body"].read().decode()
    forged = manifest.replace('"database": "langfuse"', '"database": "x` AS y; --"')
    s3.put_object(Bucket=name, Key=key, Body=resign(forged, env["BACKUP_SIGNING_KEY"]).encode())
    proc = sh("restore-clickhouse.sh", "run", env=env, check=False)
    assert proc.returncode != 0 and "names the database 'x` AS y; --', not a plain name" in proc.stderr
