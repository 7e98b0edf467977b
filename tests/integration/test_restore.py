"""restore.yml on the local control plane, from backups the real scripts made.

The Postgres backup is a real pg_dump of the local inventory's database by
backup-postgres.sh, and the ClickHouse one is made by backup-clickhouse.sh
(against the recording stand-in: the local 18.16 server predates BACKUP), both
in the backup bucket under the namespace's prefix, as the CronJobs would leave
them. KWOK runs no containers, so the restore Jobs complete without running
their scripts (tests/integration/test_backup_scripts.py runs those for real);
what runs for real here: the plan read from S3, the refusals, the scale-down
and scale-back, the Jobs' specs, the S3 point-in-time restore on moto, the
migration check against the local databases and the health check.
"""
import base64
import json
import tempfile
import threading
import time
import uuid

import boto3
import pyrage
import pytest
from pyrage import x25519

from conftest import installed_release, kubectl, playbook
from fake_clickhouse import FakeClickHouse
from test_backup_scripts import script_env, sh
from test_install import recap

# The age key pair of the module's install: the recipient goes into the inventory, the identity to restores only.
IDENTITY = x25519.Identity.generate()
APP_KEYS = ("salt", "encryption-key", "nextauth-secret")


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


@pytest.fixture(scope="module")
def installed(cluster, services):
    namespace = f"it-rs-{uuid.uuid4().hex[:6]}"
    buckets = {kind: f"it-rs-{kind}-{namespace[-6:]}" for kind in ("events", "media", "exports")}
    with installed_release(namespace, s3_buckets_names=buckets, backup_cron_app_secrets_recipient=str(IDENTITY.to_public())):
        s3 = s3_client(services)
        s3.put_object(Bucket=buckets["events"], Key="events/trace-1.json", Body=b"v1")
        s3.put_object(Bucket=buckets["media"], Key="media/image.png", Body=b"image")
        time.sleep(1.1)
        # The fingerprints ConfigMap as the backup pods mount it (one file per key).
        fingerprints_dir = tempfile.mkdtemp()
        for key, value in configmap(namespace, "langfuse-app-secrets-fingerprints").items():
            with open(f"{fingerprints_dir}/{key}", "w") as f:
                f.write(value)
        env = script_env(services, "langfuse-backups", "langfuse", S3_PREFIX=namespace, APP_FINGERPRINTS_DIR=fingerprints_dir)
        postgres = sh("backup-postgres.sh", "run", env=env).stdout.strip()
        fake = FakeClickHouse()
        try:
            ch_env = env | {"CLICKHOUSE_URL": fake.url, "CLICKHOUSE_USER": "default"}
            clickhouse = sh("backup-clickhouse.sh", "incremental", env=ch_env).stdout.strip()
        finally:
            fake.close()
        time.sleep(1.1)
        # What happened after the backups, which the restore must undo in S3.
        s3.put_object(Bucket=buckets["events"], Key="events/trace-1.json", Body=b"v2")
        s3.put_object(Bucket=buckets["events"], Key="events/trace-2.json", Body=b"new")
        s3.delete_object(Bucket=buckets["media"], Key="media/image.png")
        yield {"namespace": namespace, "buckets": buckets, "postgres": postgres, "clickhouse": clickhouse, "s3": s3}


def configmap(namespace, name):
    return json.loads(kubectl("-n", namespace, "get", "configmap", name, "-o", "json").stdout)["data"]


def app_secrets(namespace):
    data = json.loads(kubectl("-n", namespace, "get", "secret", "langfuse-app-secrets", "-o", "json").stdout)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def restore(installed, *args, **variables):
    return playbook("restore", {"langfuse_namespace": installed["namespace"], "s3_buckets_names": installed["buckets"],
                                **variables}, *args)


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
    manifest = json.loads(body(s3, "langfuse-backups", f"{prefix}/{installed['postgres']}/manifest.json"))
    newer = installed["postgres"][:-3] + "59Z"  # same minute: still within the ClickHouse backup's skew
    s3.put_object(Bucket="langfuse-backups", Key=f"{prefix}/{newer}/manifest.json",
                  Body=json.dumps(manifest | {"id": newer, "langfuse_version": "3.999.0"}).encode())
    try:
        proc = restore(installed, restore_confirm=installed["namespace"], restore_postgres_backup=newer)
    finally:
        s3.delete_object(Bucket="langfuse-backups", Key=f"{prefix}/{newer}/manifest.json")
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "taken by Langfuse 3.999.0" in text and "newer than the deployed 3.224.1" in text and "Nothing was changed" in text
    assert restore_jobs(installed["namespace"]) == []


def test_confirmed_restore_scales_down_restores_and_scales_back(installed):
    namespace = installed["namespace"]
    before = replicas(namespace)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            proc = kubectl("-n", namespace, "get", "deployments", "-o", "json", check=False)
            if proc.returncode == 0:
                samples.append({d["metadata"]["name"]: d["spec"]["replicas"] for d in json.loads(proc.stdout)["items"]})
            time.sleep(0.3)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        proc = restore(installed, restore_confirm=namespace)
    finally:
        stop.set()
        sampler.join()
    assert proc.returncode == 0, proc.stdout[-4000:]
    # Both down to zero together while the restore Jobs ran, then back to what they were.
    assert any(s.get("langfuse-web") == 0 and s.get("langfuse-worker") == 0 for s in samples)
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
    assert "migrations: Postgres at 20260721120000_add_boolean_score_widget_views, ClickHouse at 37, as the backups recorded" in text
    assert "Health: OK, version 3.224.1" in text


def test_a_job_from_each_backup_cronjob_completes(installed):
    namespace = installed["namespace"]
    cronjobs = json.loads(kubectl("-n", namespace, "get", "cronjobs", "-l", "app.kubernetes.io/component=backup",
                                  "-o", "json").stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in cronjobs) == [
        "langfuse-backup-clickhouse-full", "langfuse-backup-clickhouse-incremental", "langfuse-backup-postgres"]
    for cronjob in cronjobs:
        name = cronjob["metadata"]["name"]
        kubectl("-n", namespace, "create", "job", f"{name[:40]}-drill", f"--from=cronjob/{name}")
        kubectl("-n", namespace, "wait", "--for=condition=Complete", f"job/{name[:40]}-drill", "--timeout=60s")
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        assert all(":" in c["image"] and not c["image"].endswith(":latest") for c in pod["containers"])
        secrets = [e for c in pod["containers"] for e in c["env"] if "PASSWORD" in e["name"] or "SECRET" in e["name"]]
        assert secrets and all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in secrets)


def test_the_app_secrets_are_in_the_bucket_encrypted_and_in_every_manifest(installed):
    namespace, s3 = installed["namespace"], installed["s3"]
    fingerprints = configmap(namespace, "langfuse-app-secrets-fingerprints")
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket="langfuse-backups", Prefix=f"{namespace}/app-secrets/")["Contents"]]
    assert len(objects) == 1 and objects[0].endswith(".age")
    stored = body(s3, "langfuse-backups", objects[0])
    values = app_secrets(namespace)
    # Unreadable without the identity: no value occurs in the object, in any form a leak would take.
    for value in values.values():
        assert value not in stored and base64.b64encode(value.encode()).decode() not in stored
    assert stored.startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    assert json.loads(pyrage.decrypt(stored.encode(), [IDENTITY]))["data"] == values
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(stored.encode(), [x25519.Identity.generate()])
    for key in (f"{namespace}/postgres/{installed['postgres']}/manifest.json", f"{namespace}/clickhouse/{installed['clickhouse']}.json"):
        assert json.loads(body(s3, "langfuse-backups", key))["app_secrets"] == fingerprints


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


def test_a_restore_into_a_new_namespace_brings_the_app_secrets_back(installed):
    source = installed["namespace"]
    target = f"it-rn-{uuid.uuid4().hex[:6]}"
    variables = {"restore_prefix": source, "restore_confirm": target,
                 "restore_app_secrets_identity": str(IDENTITY)}
    try:
        # Without the identity: refused before anything exists.
        refused = playbook("restore", {"langfuse_namespace": target, "s3_buckets_names": installed["buckets"],
                                       **variables, "restore_app_secrets_identity": ""})
        assert refused.returncode != 0
        assert "restore_app_secrets_identity is empty" in " ".join(refused.stdout.split())
        assert kubectl("get", "namespace", target, check=False).returncode != 0

        checked = playbook("restore", {"langfuse_namespace": target, "s3_buckets_names": installed["buckets"], **variables},
                           "--check")
        assert checked.returncode == 0, checked.stdout[-3000:]
        assert "CREATED from s3://langfuse-backups/" in " ".join(checked.stdout.split())
        assert kubectl("get", "namespace", target, check=False).returncode != 0

        proc = playbook("restore", {"langfuse_namespace": target, "s3_buckets_names": installed["buckets"], **variables})
        assert proc.returncode == 0, proc.stdout[-4000:]
        text = " ".join(proc.stdout.split())
        assert "The data is NOT restored yet: Langfuse is not deployed there" in text
        assert app_secrets(target) == app_secrets(source)
        assert configmap(target, "langfuse-app-secrets-fingerprints") == configmap(source, "langfuse-app-secrets-fingerprints")
        for value in app_secrets(source).values():
            assert value not in proc.stdout and value not in checked.stdout
    finally:
        kubectl("delete", "namespace", target, "--wait=false", check=False)
