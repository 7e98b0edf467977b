"""The localenv job runner (tests/localenv/job_runner.py) runs Job pods for real.

In a namespace labelled localenv.langfuse-ops.io/run-jobs=true, the pods of
Jobs whose images are the backup_cron role's postgres and aws-cli images are
run on this machine (PostgreSQL 15 client tools and the collection's AWS CLI
stand in for the images) instead of being completed by KWOK: their exit codes
decide the Jobs, their env comes from the live Secrets and ConfigMaps, their
volumes are real. The last test runs the collection's own postgres backup
CronJob and finds its dump and manifest in the local S3.
"""
import base64
import hashlib
import json
import time
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from conftest import BACKUP_BUCKET, REPO, kubectl, playbook, run

DEFAULTS = yaml.safe_load((REPO / "roles" / "backup_cron" / "defaults" / "main.yml").read_text())
AWS_CLI = DEFAULTS["backup_cron_aws_cli_image"]
POSTGRES = DEFAULTS["backup_cron_postgres_image"]
OPT_IN = "localenv.langfuse-ops.io/run-jobs"
RUNNER_LABEL = "localenv.langfuse-ops.io/job-runner"
LOGS_ANNOTATION = "localenv.langfuse-ops.io/job-runner-logs"
# The backup pods' security settings (roles/backup_cron/templates/backup-pods.j2).
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


@pytest.fixture
def jobs_namespace(namespace):
    """A test namespace whose Job pods the runner takes."""
    kubectl("label", "namespace", namespace, f"{OPT_IN}=true")
    return namespace


def apply(obj):
    kubectl("apply", "-f", "-", input=json.dumps(obj))


def create_job(namespace, name, containers, volumes=(), backoff_limit=0, **pod_spec):
    apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace},
           "spec": {"backoffLimit": backoff_limit, "template": {"spec": {
               "restartPolicy": "Never", "automountServiceAccountToken": False, "securityContext": POD_SECURITY,
               "containers": [{"securityContext": CONTAINER_SECURITY, **c} for c in containers],
               "volumes": list(volumes), **pod_spec}}}})


def finished(namespace, name, timeout=240):
    """The Job once it has a Complete or Failed condition (the bound only stops a hung test)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = json.loads(kubectl("-n", namespace, "get", "job", name, "-o", "json").stdout)
        done = {c["type"]: c for c in job["status"].get("conditions", []) if c["status"] == "True" and c["type"] in ("Complete", "Failed")}
        if done:
            return job, done
        time.sleep(0.5)
    pods = kubectl("-n", namespace, "get", "pods", "-o", "yaml", check=False).stdout
    raise AssertionError(f"Job {namespace}/{name} did not finish in {timeout}s; its pods:\n{pods[-4000:]}")


def pods_of(namespace, job):
    items = json.loads(kubectl("-n", namespace, "get", "pods", "-l", f"batch.kubernetes.io/job-name={job}", "-o", "json").stdout)["items"]
    return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])


def terminated(pod):
    return {s["name"]: s["state"]["terminated"] for s in pod["status"]["containerStatuses"]}


def output(pod, container):
    """What the container printed, from the log file the runner names on the pod (CRI lines: time stream tag text)."""
    logs = Path(pod["metadata"]["annotations"][LOGS_ANNOTATION]) / f"{container}.log"
    return "".join(line.split(" ", 3)[3] + "\n" for line in logs.read_text().splitlines())


def stdout_of(pod, container):
    logs = Path(pod["metadata"]["annotations"][LOGS_ANNOTATION]) / f"{container}.log"
    return [line.split(" ", 3)[3] for line in logs.read_text().splitlines() if line.split(" ", 3)[1] == "stdout"]


def started_programs(pod):
    """Every program the pod's containers started, an execve line each with its arguments (never its environment),
    as the runner's strace recorded them."""
    logs = Path(pod["metadata"]["annotations"][LOGS_ANNOTATION])
    return [line for f in sorted(logs.glob("*.execve")) for line in f.read_text().splitlines() if " execve(" in line]


# Keys of Secrets whose values name rather than guard (an S3 access key ID, a login): they may be on a command line.
NOT_SECRET_KEYS = {"access-key-id", "username", "user"}


def secret_values(namespace):
    """The values of every Secret in `namespace` (8 characters or more, NOT_SECRET_KEYS left out), as text."""
    values = set()
    for secret in json.loads(kubectl("-n", namespace, "get", "secrets", "-o", "json").stdout)["items"]:
        for key, value in (secret.get("data") or {}).items():
            if key in NOT_SECRET_KEYS:
                continue
            text = base64.b64decode(value).decode(errors="replace")
            values |= {text, text.strip()} if len(text.strip()) >= 8 else set()
    return values


def leaked_into_arguments(pod, secrets):
    """The lines of started_programs that hold a secret, plain or base64-encoded, with the secret masked."""
    forms = {form for secret in secrets for form in (secret, base64.b64encode(secret.encode()).decode())}
    return [next(line.replace(f, "<secret>") for f in forms if f in line) for line in started_programs(pod)
            if any(f in line for f in forms)]


def test_a_script_that_exits_0_completes_its_job(jobs_namespace):
    create_job(jobs_namespace, "ok", [{"name": "main", "image": AWS_CLI,
                                       "command": ["sh", "-c", "echo answer=$((6 * 7)); id -u"]}])
    job, done = finished(jobs_namespace, "ok")
    assert list(done) == ["Complete"] and job["status"]["succeeded"] == 1
    [pod] = pods_of(jobs_namespace, "ok")
    assert pod["metadata"]["labels"][RUNNER_LABEL] == "true"
    assert pod["status"]["phase"] == "Succeeded"
    assert terminated(pod)["main"]["exitCode"] == 0 and terminated(pod)["main"]["reason"] == "Completed"
    # The shell really ran, as the pod's runAsUser.
    assert stdout_of(pod, "main") == ["answer=42", "65534"]


def test_a_script_that_exits_3_fails_its_job_after_the_backoff_limit(jobs_namespace):
    create_job(jobs_namespace, "fails", [{"name": "main", "image": AWS_CLI, "command": ["bash", "-c", "echo trying >&2; exit 3"]}],
               backoff_limit=1)
    job, done = finished(jobs_namespace, "fails")
    assert list(done) == ["Failed"] and done["Failed"]["reason"] == "BackoffLimitExceeded"
    pods = pods_of(jobs_namespace, "fails")
    # backoffLimit 1: the Job controller retried once, and both runs failed with the script's code.
    assert len(pods) == 2 and job["status"]["failed"] == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        assert terminated(pod)["main"]["exitCode"] == 3 and terminated(pod)["main"]["reason"] == "Error"
        assert output(pod, "main") == "trying\n"


def test_env_from_a_secret_and_a_configmap_reaches_the_process(jobs_namespace):
    secret_value = uuid.uuid4().hex
    kubectl("-n", jobs_namespace, "create", "secret", "generic", "creds", f"--from-literal=password={secret_value}")
    kubectl("-n", jobs_namespace, "create", "configmap", "settings", "--from-literal=bucket=my-bucket", "--from-literal=region=eu-west-3")
    create_job(jobs_namespace, "env", [{
        "name": "main", "image": AWS_CLI,
        "command": ["bash", "-c", 'printf "%s\\n" "$PASSWORD" "$BUCKET" "$CFG_region" "$URL"'],
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "BUCKET", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "bucket"}}},
                {"name": "URL", "value": "s3://$(BUCKET)/x"}],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]}])
    done = finished(jobs_namespace, "env")[1]
    assert list(done) == ["Complete"]
    [pod] = pods_of(jobs_namespace, "env")
    assert stdout_of(pod, "main") == [secret_value, "my-bucket", "eu-west-3", "s3://my-bucket/x"]


def test_a_configmap_volume_is_at_its_mount_path(jobs_namespace):
    script = "#!/usr/bin/env bash\necho \"hello from $0 with $1\"\n"
    apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "scripts", "namespace": jobs_namespace},
           "data": {"hello.sh": script}})
    create_job(jobs_namespace, "volume", [{
        "name": "main", "image": AWS_CLI,
        "command": ["bash", "/scripts/hello.sh", "an-argument"],
        "volumeMounts": [{"name": "scripts", "mountPath": "/scripts", "readOnly": True}]}],
        volumes=[{"name": "scripts", "configMap": {"name": "scripts", "defaultMode": 0o555}}])
    done = finished(jobs_namespace, "volume")[1]
    assert list(done) == ["Complete"]
    [pod] = pods_of(jobs_namespace, "volume")
    assert stdout_of(pod, "main") == ["hello from /scripts/hello.sh with an-argument"]
    create_job(jobs_namespace, "volume-mode", [{
        "name": "main", "image": AWS_CLI,
        "command": ["bash", "-c", "stat -c %a /scripts/hello.sh; cat /scripts/hello.sh; touch /scripts/new 2>/dev/null || echo read-only"],
        "volumeMounts": [{"name": "scripts", "mountPath": "/scripts", "readOnly": True}]}],
        volumes=[{"name": "scripts", "configMap": {"name": "scripts", "defaultMode": 0o555}}])
    finished(jobs_namespace, "volume-mode")
    [pod] = pods_of(jobs_namespace, "volume-mode")
    assert output(pod, "main") == "555\n" + script + "read-only\n"


def test_two_containers_pass_data_through_a_fifo_in_an_emptydir(jobs_namespace):
    # Like backup-pods.j2: a postgres-image writer and an aws-cli-image reader share /stream.
    fifo = '[ -p /stream/pipe ] || mkfifo /stream/pipe 2>/dev/null || [ -p /stream/pipe ]'
    mounts = [{"name": "stream", "mountPath": "/stream"}, {"name": "tmp", "mountPath": "/tmp"}]
    create_job(jobs_namespace, "fifo", [
        {"name": "writer", "image": POSTGRES, "volumeMounts": mounts,
         "command": ["bash", "-c", f"{fifo} && pg_dump --version && seq 1 200000 >/stream/pipe"]},
        {"name": "reader", "image": AWS_CLI, "volumeMounts": mounts,
         "command": ["bash", "-c", f"{fifo} && sha256sum </stream/pipe | cut -d' ' -f1"]}],
        volumes=[{"name": "stream", "emptyDir": {"sizeLimit": "16Mi"}}, {"name": "tmp", "emptyDir": {}}])
    done = finished(jobs_namespace, "fifo")[1]
    assert list(done) == ["Complete"]
    [pod] = pods_of(jobs_namespace, "fifo")
    assert {n: t["exitCode"] for n, t in terminated(pod).items()} == {"writer": 0, "reader": 0}
    expected = hashlib.sha256("".join(f"{i}\n" for i in range(1, 200001)).encode()).hexdigest()
    assert stdout_of(pod, "reader") == [expected]
    # The postgres image's pg_dump is Debian's PostgreSQL client.
    assert stdout_of(pod, "writer")[0].startswith("pg_dump (PostgreSQL) 15.")


def test_a_pod_past_its_active_deadline_is_killed(jobs_namespace):
    create_job(jobs_namespace, "deadline", [{"name": "main", "image": AWS_CLI, "command": ["sleep", "600"]}],
               activeDeadlineSeconds=2)
    done = finished(jobs_namespace, "deadline")[1]
    assert list(done) == ["Failed"]
    [pod] = pods_of(jobs_namespace, "deadline")
    assert pod["status"]["phase"] == "Failed" and pod["status"]["reason"] == "DeadlineExceeded"
    assert terminated(pod)["main"]["exitCode"] == 137


def test_namespaces_not_opted_in_keep_kwoks_behaviour(namespace):
    # The same failing script in a namespace without the label: KWOK completes the pod, nothing runs.
    create_job(namespace, "untouched", [{"name": "main", "image": AWS_CLI, "command": ["sh", "-c", "exit 3"]}])
    done = finished(namespace, "untouched")[1]
    assert list(done) == ["Complete"]
    [pod] = pods_of(namespace, "untouched")
    assert RUNNER_LABEL not in pod["metadata"].get("labels", {})
    assert LOGS_ANNOTATION not in pod["metadata"].get("annotations", {})
    assert terminated(pod)["main"]["exitCode"] == 0


def test_kubectl_logs_shows_the_runners_output(jobs_namespace):
    # Two streams, two pipes: their interleaving in the log is not a contract (nor is it in Kubernetes), their lines are.
    create_job(jobs_namespace, "logs", [{"name": "main", "image": AWS_CLI, "command": ["sh", "-c", "echo to-stdout; echo to-stderr >&2"]}])
    finished(jobs_namespace, "logs")
    [pod] = pods_of(jobs_namespace, "logs")
    assert sorted(output(pod, "main").splitlines()) == ["to-stderr", "to-stdout"]
    if not pod["spec"].get("nodeName"):
        pytest.skip("this cluster predates the runner's KWOK configuration (its pods run unscheduled, so the API server "
                    "has no node to ask for logs): recreate it with `tests/localenv/cluster.sh down && make cluster-up`")
    logs = kubectl("-n", jobs_namespace, "logs", pod["metadata"]["name"], "-c", "main")
    assert logs.stdout == output(pod, "main")


# ---- the collection's own backup CronJob ----
def s3_client(services):
    return boto3.client("s3", endpoint_url=services["LOCALENV_S3_ENDPOINT"], region_name=services["LOCALENV_S3_REGION"],
                        aws_access_key_id=services["LOCALENV_S3_ACCESS_KEY_ID"],
                        aws_secret_access_key=services["LOCALENV_S3_SECRET_ACCESS_KEY"])


def test_the_postgres_backup_cronjob_puts_a_dump_and_its_manifest_in_s3(jobs_namespace, services, tmp_path):
    # install.yml (inventories/local) into the opted-in namespace: its backup_cron role creates the
    # CronJob, the scripts' ConfigMap and the Secrets; the Job made from the CronJob then runs as written.
    proc = playbook("install", {"langfuse_namespace": jobs_namespace})
    assert proc.returncode == 0, proc.stdout[-4000:]
    try:
        cronjob = json.loads(kubectl("-n", jobs_namespace, "get", "cronjob", "langfuse-backup-postgres", "-o", "json").stdout)
        assert [c["image"] for c in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]] == [POSTGRES, AWS_CLI]
        kubectl("-n", jobs_namespace, "create", "job", "--from=cronjob/langfuse-backup-postgres", "backup-now")
        job, done = finished(jobs_namespace, "backup-now", timeout=400)
        [pod] = pods_of(jobs_namespace, "backup-now")
        assert list(done) == ["Complete"], output(pod, "dump") + output(pod, "upload")
        assert {n: t["exitCode"] for n, t in terminated(pod).items()} == {"dump": 0, "upload": 0}
        backup_id = stdout_of(pod, "upload")[-1]
        assert "pg_dump finished" in output(pod, "dump")

        s3 = s3_client(services)
        base = f"{jobs_namespace}/postgres/{backup_id}"
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix=f"{jobs_namespace}/")["Contents"])
        # The install put the app secrets there too, encrypted to the local inventory's age recipient.
        app_secrets = [k for k in keys if k.startswith(f"{jobs_namespace}/app-secrets/")]
        assert len(app_secrets) == 1 and app_secrets[0].endswith(".age")
        assert sorted(set(keys) - set(app_secrets)) == [f"{base}/dump.pgcustom", f"{base}/manifest.json"]
        manifest = json.loads(s3.get_object(Bucket=BACKUP_BUCKET, Key=f"{base}/manifest.json")["Body"].read())
        dump = s3.get_object(Bucket=BACKUP_BUCKET, Key=f"{base}/dump.pgcustom")["Body"].read()
        assert manifest["kind"] == "postgres" and manifest["id"] == backup_id and manifest["object"] == "dump.pgcustom"
        assert manifest["database"] == "langfuse" and manifest["bytes"] == len(dump) > 0
        assert manifest["server_version"].startswith("15.")
        assert manifest["tables"]["public._prisma_migrations"] >= 1
        # LANGFUSE_HEALTH_URL names the web Service: the runner sent it where KWOK forwards port 3000 (the
        # stand-in Langfuse server), which answered with a version.
        assert manifest["langfuse_version"] not in ("", "unknown")
        # A real pg_dump custom-format archive of the database the inventory names.
        (tmp_path / "dump.pgcustom").write_bytes(dump)
        listing = run("/usr/lib/postgresql/15/bin/pg_restore", "--list", str(tmp_path / "dump.pgcustom")).stdout
        assert "dbname: langfuse" in listing
        assert "TABLE DATA public _prisma_migrations" in listing
        # No secret on a command line: every program the Job's two containers started, as strace recorded it.
        programs = started_programs(pod)
        assert any("/pg_dump" in p for p in programs) and any("/aws" in p for p in programs), programs
        secrets = secret_values(jobs_namespace) | {services[k] for k in (
            "LOCALENV_POSTGRES_PASSWORD", "LOCALENV_S3_SECRET_ACCESS_KEY", "LOCALENV_CLICKHOUSE_PASSWORD")}
        assert leaked_into_arguments(pod, secrets) == []
    finally:
        run("helm", "uninstall", "langfuse", "-n", jobs_namespace, "--wait", check=False, timeout=300)
        for obj in s3_client(services).list_objects_v2(Bucket=BACKUP_BUCKET, Prefix=f"{jobs_namespace}/").get("Contents", []):
            s3_client(services).delete_object(Bucket=BACKUP_BUCKET, Key=obj["Key"])
