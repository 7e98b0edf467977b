"""restore.yml on the local control plane, from backups backup.yml made for real: the drill of the embedded default.

The local inventory labels its namespace for the localenv job runner, so the backup and restore Jobs run their
scripts as local processes against the real local servers: pg_dump/pg_restore on PostgreSQL 15, BACKUP/RESTORE on
ClickHouse 26 (chDB behind chdb_http.py), S3 on moto. The module's install gets databases of its own, seeded with
Langfuse-like data (Postgres rows; ClickHouse ReplacingMergeTree tables and a materialised view; S3 objects); the
drill damages them, restores, and compares row counts and checksums with the ones taken before the backup, then
restores the same backups into a second, new namespace with databases of its own.

Not exercised here: Langfuse itself on the restored data (the web and worker pods are KWOK's; their health is the
stand-in server's), ClickHouse ON CLUSTER and Replicated tables (chDB has no Keeper).
"""
import base64
import json
import time
import uuid
from pathlib import Path

import boto3
import pyrage
import pytest
from pyrage import x25519

from conftest import (BACKUP_BUCKET, BackgroundPlaybook, Watch, ch, installed_release, kubectl, migrated_databases, pg, playbook,
                      restore_job_running, run, wait_for)
from test_backup_scripts import resign
from test_install import recap
from test_job_runner import LOGS_ANNOTATION, secret_values, started_programs

APP_KEYS = ("salt", "encryption-key", "nextauth-secret")
POSTGRES_SEED = [
    "CREATE TABLE drill_traces (id integer PRIMARY KEY, project_id text NOT NULL, name text, created_at timestamptz)",
    "INSERT INTO drill_traces SELECT i, 'project-' || (i % 7), 'trace ' || md5(i::text), "
    "timestamptz '2026-11-01' + i * interval '1 minute' FROM generate_series(1, 5000) AS i",
    "CREATE TABLE drill_scores (id integer PRIMARY KEY, trace_id integer REFERENCES drill_traces (id), value float8)",
    "INSERT INTO drill_scores SELECT i, 1 + i % 5000, i / 7.0 FROM generate_series(1, 2000) AS i",
]
# Langfuse's shapes: ReplacingMergeTree ordered by project, versions by event time (a row given twice keeps the
# newest), and a materialised view aggregating from it.
CLICKHOUSE_SEED = [
    "CREATE TABLE {db}.traces (id String, project_id String, name String, event_ts DateTime64(3)) "
    "ENGINE = ReplacingMergeTree(event_ts) ORDER BY (project_id, id)",
    "CREATE TABLE {db}.observations (id String, trace_id String, project_id String, type String, event_ts DateTime64(3)) "
    "ENGINE = ReplacingMergeTree(event_ts) ORDER BY (project_id, trace_id, id)",
    "CREATE TABLE {db}.trace_counts (project_id String, traces UInt64) ENGINE = SummingMergeTree ORDER BY project_id",
    "CREATE MATERIALIZED VIEW {db}.trace_counts_mv TO {db}.trace_counts AS "
    "SELECT project_id, count() AS traces FROM {db}.traces GROUP BY project_id",
    "INSERT INTO {db}.traces SELECT toString(number), concat('project-', toString(number % 7)), "
    "concat('trace ', hex(MD5(toString(number)))), toDateTime64('2026-11-01 00:00:00', 3) + number FROM numbers(3000)",
    "INSERT INTO {db}.traces SELECT toString(number), concat('project-', toString(number % 7)), 'renamed', "
    "toDateTime64('2026-11-02 00:00:00', 3) + number FROM numbers(500)",
    "INSERT INTO {db}.observations SELECT toString(number), toString(number % 3000), concat('project-', "
    "toString(number % 3000 % 7)), ['SPAN', 'GENERATION', 'EVENT'][1 + number % 3], "
    "toDateTime64('2026-11-01 00:00:00', 3) + number FROM numbers(9000)",
]


def figures(services, database):
    """Row counts and checksums of the drill's data: what a restore must give back exactly."""
    out = {}
    with pg(services, database) as conn:
        for table in ("drill_traces", "drill_scores"):
            out[f"postgres {table}"] = list(conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) FROM {table} t").fetchone())
    for table, columns in (("traces", "id, project_id, name, event_ts"), ("observations", "id, trace_id, project_id, type, event_ts")):
        out[f"clickhouse {table}"] = ch(services, f"SELECT count(), groupBitXor(cityHash64({columns})) "
                                                  f"FROM {database}.{table} FINAL").split()
    out["clickhouse trace_counts"] = ch(services, f"SELECT sum(traces), groupBitXor(cityHash64(project_id, traces)) FROM "
                                                  f"(SELECT project_id, sum(traces) AS traces FROM {database}.trace_counts "
                                                  "GROUP BY project_id)").split()
    return out


def seed(services, database):
    with pg(services, database) as conn:
        for statement in POSTGRES_SEED:
            conn.execute(statement)
    for statement in CLICKHOUSE_SEED:
        ch(services, statement.format(db=database))


def damage(services, database):
    with pg(services, database) as conn:
        conn.execute("DELETE FROM drill_scores WHERE id % 3 = 0")
        conn.execute("UPDATE drill_traces SET name = 'overwritten' WHERE id % 5 = 0")
    ch(services, f"TRUNCATE TABLE {database}.observations")
    ch(services, f"INSERT INTO {database}.traces VALUES ('junk', 'project-0', 'junk', now64(3))")


def identity(services):
    """The local inventory's age identity (`services.sh up` made it): the recipient's, which restores alone read."""
    return x25519.Identity.from_str(Path(services["LOCALENV_AGE_IDENTITY_FILE"]).read_text().strip())


def s3_client(services):
    return boto3.client("s3", endpoint_url=services["LOCALENV_S3_ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=services["LOCALENV_S3_ACCESS_KEY_ID"],
                        aws_secret_access_key=services["LOCALENV_S3_SECRET_ACCESS_KEY"])


def body(s3, bucket, key):
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        return None


def replicas(namespace):
    deployments = json.loads(kubectl("-n", namespace, "get", "deployments", "-o", "json").stdout)["items"]
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in deployments}


def restore_jobs(namespace):
    return json.loads(kubectl("-n", namespace, "get", "jobs", "-l", "app.kubernetes.io/component=restore",
                              "-o", "json").stdout)["items"]


def newest_backups(s3, prefix):
    """The ids of the newest Postgres and ClickHouse backups under `prefix`, as the bucket lists them."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BACKUP_BUCKET, Prefix=f"{prefix}/")
            for o in page.get("Contents", [])]
    postgres = sorted(k.split("/")[2] for k in keys if k.startswith(f"{prefix}/postgres/") and k.endswith("/manifest.json"))
    clickhouse = sorted("/".join(k.split("/")[2:4])[:-len(".json")] for k in keys
                        if k.startswith(f"{prefix}/clickhouse/") and k.endswith(".json") and k.count("/") == 3)
    return postgres[-1], clickhouse[-1]


@pytest.fixture(scope="module")
def installed(cluster, services):
    namespace = f"it-rs-{uuid.uuid4().hex[:6]}"
    buckets = {kind: f"it-rs-{kind}-{namespace[-6:]}" for kind in ("events", "media", "exports")}
    with migrated_databases(services, "drill") as database:
        seed(services, database)
        variables = {"s3_buckets_names": buckets, "postgres_database": database, "clickhouse_operator_database": database}
        with installed_release(namespace, **variables):
            s3 = s3_client(services)
            s3.put_object(Bucket=buckets["events"], Key="events/trace-1.json", Body=b"v1")
            s3.put_object(Bucket=buckets["media"], Key="media/image.png", Body=b"image")
            time.sleep(1.1)
            before = figures(services, database)
            started = time.monotonic()
            # -vvv: the leak table below reads this output too.
            backup = playbook("backup", {"langfuse_namespace": namespace, **variables}, "-vvv")
            backup_seconds = time.monotonic() - started
            assert backup.returncode == 0, backup.stdout[-4000:]
            postgres, clickhouse = newest_backups(s3, namespace)
            time.sleep(1.1)
            # What happened after the backups, which the restore must undo in S3.
            s3.put_object(Bucket=buckets["events"], Key="events/trace-1.json", Body=b"v2")
            s3.put_object(Bucket=buckets["events"], Key="events/trace-2.json", Body=b"new")
            s3.delete_object(Bucket=buckets["media"], Key="media/image.png")
            yield {"signing_key": services["LOCALENV_BACKUP_SIGNING_KEY"], "outputs": {"backup.yml -vvv": backup.stdout + backup.stderr},
                   "namespace": namespace, "buckets": buckets, "postgres": postgres, "clickhouse": clickhouse, "s3": s3,
                   "database": database, "variables": variables, "figures": before, "backup_seconds": backup_seconds}


def configmap(namespace, name):
    return json.loads(kubectl("-n", namespace, "get", "configmap", name, "-o", "json").stdout)["data"]


def app_secrets(namespace):
    data = json.loads(kubectl("-n", namespace, "get", "secret", "langfuse-app-secrets", "-o", "json").stdout)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


class Workloads(Watch):
    """The Deployments' replicas, the web and worker pods, and whether a restore Job runs, sampled."""

    def __init__(self, namespace):
        super().__init__()
        self.namespace, self.samples = namespace, []

    def sample(self):
        items = self.items("deployments", "pods", "jobs")
        if items is None:
            return
        self.samples.append({
            "replicas": {i["metadata"]["name"]: i["spec"]["replicas"] for i in items if i["kind"] == "Deployment"},
            "app_pods": sorted(i["metadata"]["name"] for i in items
                               if i["kind"] == "Pod" and i["metadata"].get("labels", {}).get("app") in ("web", "worker")),
            "restoring": restore_job_running(items),
        })


def restore(installed, *args, **variables):
    return playbook("restore", {"langfuse_namespace": installed["namespace"], **installed["variables"], **variables}, *args)


def test_without_confirmation_it_shows_the_plan_and_changes_nothing(installed):
    before = replicas(installed["namespace"])
    proc = restore(installed)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert f"RESTORE into namespace {installed['namespace']}" in text
    assert f"<- backup {installed['postgres']}" in text and f"<- backup {installed['clickhouse']}" in text
    assert f"restore_confirm is \"\", not the namespace {installed['namespace']}: nothing was changed" in text
    assert replicas(installed["namespace"]) == before
    assert restore_jobs(installed["namespace"]) == []
    assert body(installed["s3"], installed["buckets"]["events"], "events/trace-1.json") == "v2"


def test_confirming_another_namespace_is_refused(installed):
    proc = restore(installed, restore_confirm="langfuse")
    assert proc.returncode != 0
    assert "not the namespace" in proc.stdout and restore_jobs(installed["namespace"]) == []


def test_check_mode_prints_the_plan_and_changes_nothing(installed):
    proc = restore(installed, "--check", restore_confirm=installed["namespace"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Check mode: nothing is changed." in proc.stdout
    assert recap(proc.stdout)["changed"] == 0
    assert restore_jobs(installed["namespace"]) == []


def test_a_backup_from_a_newer_langfuse_is_refused(installed):
    s3, prefix = installed["s3"], f"{installed['namespace']}/postgres"
    manifest = json.loads(body(s3, BACKUP_BUCKET, f"{prefix}/{installed['postgres']}/manifest.json"))
    newer = installed["postgres"][:-3] + "59Z"  # same minute: still within the ClickHouse backup's skew
    # Signed with the key, as a backup by a newer Langfuse would be.
    s3.put_object(Bucket=BACKUP_BUCKET, Key=f"{prefix}/{newer}/manifest.json",
                  Body=resign(json.dumps(manifest | {"id": newer, "langfuse_version": "4.999.0"}),
                              installed["signing_key"]).encode())
    try:
        proc = restore(installed, restore_confirm=installed["namespace"], restore_postgres_backup=newer)
    finally:
        s3.delete_object(Bucket=BACKUP_BUCKET, Key=f"{prefix}/{newer}/manifest.json")
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "taken by Langfuse 4.999.0" in text and "newer than the deployed 4.16.0" in text and "Nothing was changed" in text
    assert restore_jobs(installed["namespace"]) == []


def test_a_forged_or_unsigned_manifest_is_refused_before_anything_changes(installed):
    """Issue 20's forged backup, by whoever can write to the bucket without the signing key: the plan refuses it,
    naming the manifest, before web and worker are touched."""
    s3, key = installed["s3"], f"{installed['namespace']}/postgres/{installed['postgres']}/manifest.json"
    original = body(s3, BACKUP_BUCKET, key)
    before = replicas(installed["namespace"])
    try:
        s3.put_object(Bucket=BACKUP_BUCKET, Key=key, Body=original.replace('"format": "pg_dump custom"', '"format": "pg_dump Custom"').encode())
        forged = restore(installed, restore_confirm=installed["namespace"])
        text = " ".join(forged.stdout.split())
        assert forged.returncode != 0
        assert (f"These manifests do NOT carry a valid signature under the backup signing key: postgres/{installed['postgres']}/manifest.json"
                in text), forged.stdout[-3000:]
        assert "Nothing was changed" in text
        s3.put_object(Bucket=BACKUP_BUCKET, Key=key, Body=json.dumps({k: v for k, v in json.loads(original).items() if k != "signature"}).encode())
        unsigned = restore(installed, restore_confirm=installed["namespace"])
        text = " ".join(unsigned.stdout.split())
        assert unsigned.returncode != 0
        assert "These manifests carry no signature" in text and f"-e restore_confirm_unsigned_backup={installed['namespace']}" in text
    finally:
        s3.put_object(Bucket=BACKUP_BUCKET, Key=key, Body=original.encode())
    assert replicas(installed["namespace"]) == before
    assert restore_jobs(installed["namespace"]) == []
    assert installed["signing_key"] not in forged.stdout + unsigned.stdout


def test_confirmed_restore_scales_down_restores_and_scales_back(installed, services):
    namespace, database = installed["namespace"], installed["database"]
    damage(services, database)
    damaged = figures(services, database)
    assert {k for k in damaged if damaged[k] != installed["figures"][k]} == {
        "postgres drill_traces", "postgres drill_scores", "clickhouse traces", "clickhouse observations", "clickhouse trace_counts"}
    before = replicas(namespace)
    started = time.monotonic()
    with Workloads(namespace) as watch:
        proc = restore(installed, "-vvv", restore_confirm=namespace)
    restore_seconds = time.monotonic() - started
    installed["outputs"]["restore.yml -vvv (confirmed)"] = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-4000:]
    restored = figures(services, database)
    assert restored == installed["figures"]
    print(f"\ndrill in place: backup.yml {installed['backup_seconds']:.0f} s, restore.yml {restore_seconds:.0f} s")
    for name, (rows, checksum) in installed["figures"].items():
        print(f"  {name}: {rows} rows, checksum {checksum} before the backup; after damage {damaged[name][0]} rows;"
              f" restored {restored[name][0]} rows, checksum {restored[name][1]}")
    # Both down to zero, no web or worker pod left while a restore Job ran, then back to what they were.
    restoring = [s for s in watch.samples if s["restoring"]]
    assert restoring, "no restore Job was seen running"
    assert all(s["replicas"] == {"langfuse-web": 0, "langfuse-worker": 0} and s["app_pods"] == [] for s in restoring), restoring
    assert replicas(namespace) == before
    jobs = {j["metadata"]["labels"]["app.kubernetes.io/instance"].split("-")[2]: j for j in restore_jobs(namespace)}
    assert sorted(jobs) == ["clickhouse", "postgres"]
    for kind, backup in (("postgres", installed["postgres"]), ("clickhouse", installed["clickhouse"])):
        spec = jobs[kind]["spec"]["template"]["spec"]
        assert jobs[kind]["status"]["succeeded"] == 1
        env = {e["name"]: e.get("value") for c in spec["containers"] for e in c["env"]}
        assert env["BACKUP_ID"] == backup and env["S3_PREFIX"] == namespace
        assert [c["command"][1] for c in spec["containers"]] == (
            ["/scripts/restore-postgres.sh"] * 2 if kind == "postgres" else ["/scripts/restore-clickhouse.sh"])
    # S3 is back at the Postgres backup's time: the overwrite undone, the later object gone, the deleted one back.
    s3, buckets = installed["s3"], installed["buckets"]
    assert body(s3, buckets["events"], "events/trace-1.json") == "v1"
    assert body(s3, buckets["events"], "events/trace-2.json") is None
    assert body(s3, buckets["media"], "media/image.png") == "image"
    text = " ".join(proc.stdout.split())
    assert "migrations: Postgres at 20260709124500_add_billing_exhausted_evaluator_block_reason, ClickHouse at 36, as the backups recorded" in text
    assert "Health: OK, version 4.16.0" in text


def record_step(namespace):
    proc = kubectl("-n", namespace, "get", "configmap", "langfuse-restore", "-o", "json", check=False)
    return json.loads(proc.stdout)["data"].get("step") if proc.returncode == 0 else None


def test_a_restore_killed_after_its_scale_down_is_finished_by_its_rerun(installed, services, tmp_path):
    """Killed (its whole process group, as a closed terminal does) while a restore Job runs, with web and worker at 0:
    install.yml refuses beside it, and the re-run resumes it with the same backups and brings web and worker back
    to the replicas they had, not to the 0 it finds."""
    namespace, database = installed["namespace"], installed["database"]
    damage(services, database)
    before = replicas(namespace)
    assert min(before.values()) > 0
    killed = BackgroundPlaybook("restore", {"langfuse_namespace": namespace, **installed["variables"], "restore_confirm": namespace},
                                log_dir=tmp_path)
    try:
        wait_for("the restore's Postgres step", lambda: record_step(namespace) in ("postgres", "clickhouse"), timeout=600)
    finally:
        killed.kill()
    assert set(replicas(namespace).values()) == {0}
    record = configmap(namespace, "langfuse-restore")
    assert record["state"] == "started" and (record["postgres_id"], record["clickhouse_id"]) == (installed["postgres"], installed["clickhouse"])
    assert {w["label"]: w["replicas"] for w in json.loads(record["workloads"])} == {f"deployment {k}": v for k, v in before.items()}
    suspended = json.loads(kubectl("-n", namespace, "get", "cronjobs", "-o", "json").stdout)["items"]
    assert suspended and all(c["spec"].get("suspend") for c in suspended)

    blocked = playbook("install", {"langfuse_namespace": namespace, **installed["variables"]})
    assert blocked.returncode != 0
    said = " ".join(blocked.stdout.split())
    assert f"A restore into {namespace} is unfinished: started {record['started']}, from Postgres backup {installed['postgres']}" in said
    assert f"install.yml changed nothing. Finish the restore first: ansible-playbook playbooks/restore.yml -e restore_confirm={namespace}" in said

    stale = restore(installed, restore_confirm=namespace)
    assert stale.returncode != 0 and f"-e langfuse_take_over_lock={namespace}" in " ".join(stale.stdout.split())
    resumed = restore(installed, restore_confirm=namespace, langfuse_take_over_lock=namespace)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    said = " ".join(resumed.stdout.split())
    assert f"RESUMING the restore started {record['started']}" in said
    assert replicas(namespace) == before
    assert figures(services, database) == installed["figures"]
    assert configmap(namespace, "langfuse-restore")["state"] == "done"
    deployments = json.loads(kubectl("-n", namespace, "get", "deployments", "-o", "json").stdout)["items"]
    assert not [d for d in deployments if "langfuse-ops.io/restore-replicas" in d["metadata"].get("annotations", {})]
    cronjobs = json.loads(kubectl("-n", namespace, "get", "cronjobs", "-o", "json").stdout)["items"]
    assert not [c["metadata"]["name"] for c in cronjobs if c["spec"].get("suspend")]
    # The killed run's restore Job went on in the cluster; the re-run started its own only once that one ended.
    jobs = json.loads(kubectl("-n", namespace, "get", "jobs", "-l", "app.kubernetes.io/component=restore", "-o", "json").stdout)["items"]
    spans = sorted((j["metadata"]["creationTimestamp"], max(c["lastTransitionTime"] for c in j["status"]["conditions"]),
                    j["metadata"]["name"]) for j in jobs)
    assert len(spans) >= 2, spans
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_a_job_from_each_backup_cronjob_completes(installed):
    namespace = installed["namespace"]
    cronjobs = json.loads(kubectl("-n", namespace, "get", "cronjobs", "-l", "app.kubernetes.io/component=backup",
                                  "-o", "json").stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in cronjobs) == [
        "langfuse-backup-clickhouse-full", "langfuse-backup-clickhouse-incremental", "langfuse-backup-postgres"]
    for cronjob in cronjobs:
        name = cronjob["metadata"]["name"]
        kubectl("-n", namespace, "create", "job", f"{name[:40]}-drill", f"--from=cronjob/{name}")
        kubectl("-n", namespace, "wait", "--for=condition=Complete", f"job/{name[:40]}-drill", "--timeout=120s")
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        assert all(":" in c["image"] and not c["image"].endswith(":latest") for c in pod["containers"])
        secrets = [e for c in pod["containers"] for e in c["env"] if "PASSWORD" in e["name"] or "SECRET" in e["name"]]
        assert secrets and all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in secrets)
        # The backup writer's own S3 keys (inventories/local: namespace_secrets_credentials.backup_s3), not Langfuse's.
        assert {e["valueFrom"]["secretKeyRef"]["name"] for c in pod["containers"] for e in c["env"]
                if e["name"].startswith("AWS_") and "valueFrom" in e} == {"langfuse-backup-s3"}, name
    # ...which web and the worker do not hold.
    web_and_worker = kubectl("-n", namespace, "get", "deployments", "-l", "app.kubernetes.io/name=langfuse", "-o", "json").stdout
    assert "langfuse-backup-s3" not in web_and_worker and "langfuse-s3" in web_and_worker
    # They ran for real (the job runner): each kind has a newer backup in the bucket than the fixture's.
    postgres, clickhouse = newest_backups(installed["s3"], namespace)
    assert postgres > installed["postgres"] and clickhouse > installed["clickhouse"]


def test_no_secret_in_any_place_a_backup_or_restore_leaves(installed, services):
    """Issue 20's leak table: every Secret value of the namespace (the app secrets, the database passwords, both S3
    secret keys, the backup signing key) and the local services' passwords, looked for in each place the backups and
    restores of this module wrote: the playbooks' -vvv output, the Helm release's values and manifest, every
    ConfigMap, every workload spec, the Jobs' logs and the programs their containers started (with their arguments,
    as strace recorded them), and ClickHouse's system.query_log. Each plain or base64-encoded; 0 hits everywhere."""
    namespace = installed["namespace"]
    secrets = secret_values(namespace) | {services[k] for k in (
        "LOCALENV_POSTGRES_PASSWORD", "LOCALENV_S3_SECRET_ACCESS_KEY", "LOCALENV_CLICKHOUSE_PASSWORD", "LOCALENV_REDIS_PASSWORD")}
    assert installed["signing_key"] in secrets and len(secrets) >= 8
    forms = {form for secret in secrets for form in (secret, base64.b64encode(secret.encode()).decode())}
    pods = [p for p in json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
            if LOGS_ANNOTATION in p["metadata"].get("annotations", {})]
    kinds = {p["metadata"]["labels"].get("app.kubernetes.io/instance", "") for p in pods}
    assert {"langfuse-backup-postgres", "langfuse-backup-clickhouse-full"} <= kinds, kinds
    assert any(p["metadata"]["labels"].get("app.kubernetes.io/component") == "restore" for p in pods)
    programs = [line for p in pods for line in started_programs(p)]
    assert any("/pg_dump" in line for line in programs) and any("/curl" in line for line in programs), programs[:20]
    ch(services, "SYSTEM FLUSH LOGS")
    backups_logged = ch(services, "SELECT count() FROM system.query_log WHERE query LIKE 'BACKUP DATABASE%' AND type = 'QueryFinish'")
    assert int(backups_logged) >= 2, backups_logged
    places = {
        **{f"output of {name}": [text] for name, text in installed["outputs"].items()},
        "Helm release values and manifest": [run("helm", "get", "values", "langfuse", "-n", namespace, "--all", "-o", "json").stdout,
                                             run("helm", "get", "manifest", "langfuse", "-n", namespace).stdout],
        "ConfigMaps": [json.dumps(c.get("data", {})) for c in json.loads(kubectl("-n", namespace, "get", "configmaps", "-o", "json").stdout)["items"]],
        "workload specs": [kubectl("-n", namespace, "get", "deployments,statefulsets,cronjobs,jobs,pods", "-o", "json").stdout],
        "Job logs": [f.read_text(errors="replace") for p in pods for f in Path(p["metadata"]["annotations"][LOGS_ANNOTATION]).glob("*.log")],
        "Job command lines": programs,
        "ClickHouse system.query_log": [ch(services, "SELECT query FROM system.query_log FORMAT TSVRaw")],
    }
    hits = {place: sum(1 for text in texts for form in forms if form in text) for place, texts in places.items()}
    print(f"\nleak table ({len(secrets)} secret values, plain and base64):")
    for place, texts in places.items():
        print(f"  {place}: {sum(len(t) for t in texts)} characters read, {hits[place]} hits")
    assert all(texts and sum(len(t) for t in texts) > 0 for texts in places.values())
    assert hits == {place: 0 for place in places}


def test_the_app_secrets_are_in_the_bucket_encrypted_and_in_every_manifest(installed, services):
    namespace, s3 = installed["namespace"], installed["s3"]
    fingerprints = configmap(namespace, "langfuse-app-secrets-fingerprints")
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix=f"{namespace}/app-secrets/")["Contents"]]
    assert len(objects) == 1 and objects[0].endswith(".age")
    stored = body(s3, BACKUP_BUCKET, objects[0])
    values = app_secrets(namespace)
    # Unreadable without the identity: no value occurs in the object, in any form a leak would take.
    for value in values.values():
        assert value not in stored and base64.b64encode(value.encode()).decode() not in stored
    assert stored.startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    assert json.loads(pyrage.decrypt(stored.encode(), [identity(services)]))["data"] == values
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(stored.encode(), [x25519.Identity.generate()])
    for key in (f"{namespace}/postgres/{installed['postgres']}/manifest.json", f"{namespace}/clickhouse/{installed['clickhouse']}.json"):
        assert json.loads(body(s3, BACKUP_BUCKET, key))["app_secrets"] == fingerprints


def test_app_secrets_that_differ_from_the_backups_are_refused_without_the_named_confirmation(installed):
    namespace = installed["namespace"]
    original, jobs = app_secrets(namespace), len(restore_jobs(namespace))
    kubectl("-n", namespace, "patch", "secret", "langfuse-app-secrets", "--type=merge",
            "-p", json.dumps({"stringData": {"salt": "another-salt-value-0123456789"}}))
    try:
        proc = restore(installed, restore_confirm=namespace)
    finally:
        kubectl("-n", namespace, "patch", "secret", "langfuse-app-secrets", "--type=merge",
                "-p", json.dumps({"stringData": {"salt": original["salt"]}}))
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "are not the ones the backup's data was made with" in text and ": salt differ." in text
    assert "every project API key in the restored data stops working" in text
    assert f"-e restore_confirm_app_secrets_mismatch={namespace}" in text and "Nothing was changed" in text
    assert len(restore_jobs(namespace)) == jobs
    for value in original.values():
        assert value not in proc.stdout


def test_a_restore_into_a_new_namespace_brings_the_app_secrets_and_the_data_back(installed, services, tmp_path):
    source = installed["namespace"]
    target = f"it-rn-{uuid.uuid4().hex[:6]}"
    variables = {"restore_prefix": source, "restore_confirm": target, "s3_buckets_names": installed["buckets"]}
    try:
        # Without the identity: refused before anything exists.
        refused = playbook("restore", {"langfuse_namespace": target, **variables, "restore_app_secrets_identity_file": ""})
        assert refused.returncode != 0
        assert "restore_app_secrets_identity is empty" in " ".join(refused.stdout.split())
        assert "-e restore_app_secrets_identity_file=<path>" in " ".join(refused.stdout.split())
        assert kubectl("get", "namespace", target, check=False).returncode != 0
        # The identity in a file others may read: refused, naming the fix, before anything exists.
        readable = tmp_path / "identity.txt"
        readable.write_text(Path(services["LOCALENV_AGE_IDENTITY_FILE"]).read_text())
        readable.chmod(0o644)
        exposed = playbook("restore", {"langfuse_namespace": target, **variables, "restore_app_secrets_identity_file": str(readable)})
        said = " ".join(exposed.stdout.split())
        assert exposed.returncode != 0
        assert f"restore_app_secrets_identity_file {readable} may be read by others (mode 0644)" in said, exposed.stdout[-3000:]
        assert f"Run: chmod 600 {readable}. Nothing was changed." in said
        assert readable.read_text().strip() not in exposed.stdout
        assert kubectl("get", "namespace", target, check=False).returncode != 0

        # The local inventory's identity file (mode 0600, its secret store's stand-in) from here on.
        checked = playbook("restore", {"langfuse_namespace": target, **variables}, "--check")
        assert checked.returncode == 0, checked.stdout[-3000:]
        assert f"CREATED from s3://{BACKUP_BUCKET}/" in " ".join(checked.stdout.split())
        assert kubectl("get", "namespace", target, check=False).returncode != 0

        proc = playbook("restore", {"langfuse_namespace": target, **variables})
        assert proc.returncode == 0, proc.stdout[-4000:]
        text = " ".join(proc.stdout.split())
        assert "The data is NOT restored yet: Langfuse is not deployed there" in text
        assert app_secrets(target) == app_secrets(source)
        assert configmap(target, "langfuse-app-secrets-fingerprints") == configmap(source, "langfuse-app-secrets-fingerprints")
        for value in app_secrets(source).values():
            assert value not in proc.stdout and value not in checked.stdout

        # A new install there on databases of its own (as a new cluster's are), then the data from the source's backups.
        with migrated_databases(services, "drill") as database:
            own = {"postgres_database": database, "clickhouse_operator_database": database}
            install = playbook("install", {"langfuse_namespace": target, "s3_buckets_names": installed["buckets"], **own})
            assert install.returncode == 0, install.stdout[-4000:]
            # install.yml kept the restored app secrets (it generates them only where none exist).
            assert app_secrets(target) == app_secrets(source)
            started = time.monotonic()
            data = playbook("restore", {"langfuse_namespace": target, **variables, **own})
            seconds = time.monotonic() - started
            assert data.returncode == 0, data.stdout[-4000:]
            restored = figures(services, database)
            assert restored == installed["figures"]
            assert app_secrets(target) == app_secrets(source)
            assert configmap(target, "langfuse-app-secrets-fingerprints") == configmap(source, "langfuse-app-secrets-fingerprints")
            text = " ".join(data.stdout.split())
            assert f"Restored namespace {target}:" in text and "Health: OK, version 4.16.0" in text
            print(f"\ndrill into the new namespace {target}: restore.yml {seconds:.0f} s;"
                  f" {', '.join(f'{k} {v[0]} rows' for k, v in restored.items())}; checksums equal the source's")
    finally:
        run("helm", "uninstall", "langfuse", "-n", target, "--wait", check=False)
        kubectl("delete", "namespace", target, "--wait=false", check=False)
