"""backup_cron's backup_now on the local control plane: each run's Jobs are its own, and none races another backup.

A namespace opted in to the localenv job runner holds one backup CronJob (the labels backup_now looks for) whose
Job runs `sleep $SECONDS` for real, SECONDS from a ConfigMap the test sets, so a Job runs as long as a test needs.
backup_now runs from a playbook of one include, as backup.yml and upgrade.yml include it. Shown here:
- two runs start Jobs of two names (date, time, random suffix) that carry ttlSecondsAfterFinished;
- a backup Job already running is waited for before this run's Job starts, and the CronJobs are suspended while
  this run's Job runs, then resumed;
- a Complete Job put under the name of this run's Job (the old-Job case), or the Job deleted, fails the run
  naming it: the wait follows the UID the Job was created with.
tests/unit/test_backup_jobs.py checks the same judgement case by case, without a cluster.
"""
import json
import re
import subprocess
import time

import pytest
import yaml

from conftest import REPO, kubectl, run

DEFAULTS = yaml.safe_load((REPO / "roles" / "backup_cron" / "defaults" / "main.yml").read_text())
AWS_CLI = DEFAULTS["backup_cron_aws_cli_image"]
OPT_IN = "localenv.langfuse-ops.io/run-jobs"
CRONJOB = "langfuse-backup-sleep"
REASON = "it-test"
BACKUP_LABELS = {"app.kubernetes.io/part-of": "langfuse", "app.kubernetes.io/component": "backup"}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
PLAYBOOK = """\
- name: Back up now
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Back up
      ansible.builtin.include_role: {name: langfuse_ops.platform.backup_cron, tasks_from: backup_now}
"""
NAME = re.compile(rf"^{CRONJOB}-{REASON}-\d{{14}}-[a-z0-9]{{5}}$")


def apply(obj):
    kubectl("apply", "-f", "-", input=json.dumps(obj))


def sleep_seconds(namespace, seconds):
    apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sleep", "namespace": namespace},
           "data": {"seconds": str(seconds)}})


def pod_spec(command):
    return {"restartPolicy": "Never", "automountServiceAccountToken": False, "securityContext": POD_SECURITY,
            "containers": [{"name": "main", "image": AWS_CLI, "command": command, "securityContext": CONTAINER_SECURITY,
                            "env": [{"name": "SECONDS_TO_SLEEP",
                                     "valueFrom": {"configMapKeyRef": {"name": "sleep", "key": "seconds"}}}]}]}


@pytest.fixture
def backups(namespace):
    """The namespace, opted in to the job runner, with the one backup CronJob (a schedule that never comes in a test)."""
    kubectl("label", "namespace", namespace, f"{OPT_IN}=true")
    sleep_seconds(namespace, 0)
    labels = {**BACKUP_LABELS, "app.kubernetes.io/instance": CRONJOB}
    apply({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": CRONJOB, "namespace": namespace, "labels": labels},
           "spec": {"schedule": "0 0 1 1 *", "concurrencyPolicy": "Forbid",
                    "jobTemplate": {"metadata": {"labels": labels}, "spec": {"backoffLimit": 0, "template": {
                        "metadata": {"labels": labels}, "spec": pod_spec(["sh", "-c", 'sleep "$SECONDS_TO_SLEEP"'])}}}}})
    return namespace


def backup_now(tmp_path, namespace, wait=True):
    playbook = tmp_path / "backup_now.yml"
    playbook.write_text(PLAYBOOK)
    variables = {"langfuse_helm_namespace": namespace, "backup_now_reason": REASON,
                 "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    args = ["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook), "-e", json.dumps(variables)]
    if wait:
        return run(*args, check=False, cwd=REPO, timeout=600)
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def jobs(namespace, *selector):
    return json.loads(kubectl("-n", namespace, "get", "jobs", *(("-l", ",".join(selector)) if selector else ()),
                              "-o", "json").stdout)["items"]


def cronjob(namespace):
    return json.loads(kubectl("-n", namespace, "get", "cronjob", CRONJOB, "-o", "json").stdout)


def conditions(job):
    return {c["type"] for c in job.get("status", {}).get("conditions", []) if c["status"] == "True"}


def resumed(namespace):
    found = cronjob(namespace)
    return not found["spec"].get("suspend") and "langfuse-ops.io/suspended-by" not in found["metadata"].get("annotations", {})


def this_runs_job(namespace, proc, timeout=300):
    """This run's Job, once backup_now created it (the bound only stops a hung test)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        found = jobs(namespace, f"langfuse-ops.io/backup-reason={REASON}")
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"backup_now started no Job:\n{proc.communicate()[0][-4000:] if proc.poll() is not None else ''}")


def test_each_run_starts_jobs_of_its_own_name_with_a_ttl(backups, tmp_path):
    for _run in range(2):
        proc = backup_now(tmp_path, backups)
        assert proc.returncode == 0, proc.stdout[-4000:]
    started = jobs(backups, f"langfuse-ops.io/backup-reason={REASON}")
    names = sorted(j["metadata"]["name"] for j in started)
    assert len(started) == 2 and len(set(names)) == 2, names
    for job in started:
        assert NAME.match(job["metadata"]["name"]), job["metadata"]["name"]
        assert job["spec"]["ttlSecondsAfterFinished"] == DEFAULTS["backup_cron_job_ttl_seconds"] == 604800
        assert conditions(job) >= {"Complete"}
        assert job["metadata"]["labels"]["app.kubernetes.io/instance"] == CRONJOB
    assert resumed(backups)


def test_a_running_backup_job_is_waited_for_and_the_cronjob_suspended_meanwhile(backups, tmp_path):
    # As a scheduled run would be: a backup Job of the namespace, still at work when backup_now starts.
    sleep_seconds(backups, 15)
    labels = {**BACKUP_LABELS, "app.kubernetes.io/instance": CRONJOB}
    apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "scheduled-run", "namespace": backups, "labels": labels},
           "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels},
                                                    "spec": pod_spec(["sh", "-c", 'sleep "$SECONDS_TO_SLEEP"'])}}})
    proc = backup_now(tmp_path, backups, wait=False)
    mine = this_runs_job(backups, proc)
    # While this run's Job runs, the CronJob is suspended by backup_now.
    suspended = cronjob(backups)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-4000:]
    assert "Wait for the backup Jobs already running to finish, scheduled-run" in out
    [scheduled] = [j for j in jobs(backups) if j["metadata"]["name"] == "scheduled-run"]
    assert conditions(scheduled) >= {"Complete"}
    # Started after the running one had finished (both times from the API server, to the second).
    assert scheduled["status"]["completionTime"] <= mine["metadata"]["creationTimestamp"]
    assert suspended["spec"]["suspend"] is True
    assert suspended["metadata"]["annotations"]["langfuse-ops.io/suspended-by"].startswith(f"backup_now {REASON} ")
    assert resumed(backups)


def test_a_cronjob_someone_suspended_stays_suspended(backups, tmp_path):
    kubectl("-n", backups, "patch", "cronjob", CRONJOB, "-p", '{"spec": {"suspend": true}}')
    proc = backup_now(tmp_path, backups)
    assert proc.returncode == 0, proc.stdout[-4000:]
    found = cronjob(backups)
    assert found["spec"]["suspend"] is True and "langfuse-ops.io/suspended-by" not in found["metadata"].get("annotations", {})


def test_a_complete_job_put_under_this_runs_job_name_is_not_taken_for_its_backup(backups, tmp_path):
    sleep_seconds(backups, 40)
    proc = backup_now(tmp_path, backups, wait=False)
    mine = this_runs_job(backups, proc)
    name = mine["metadata"]["name"]
    # The old-Job case: under the same name, a Job that is not this run's and completes at once (KWOK completes
    # pods whose image the job runner does not stand in for). Deleted and created in one command, so the run's wait
    # (every 10 s) finds the other Job, not the gap between.
    kubectl("-n", backups, "replace", "--force", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": backups},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                                                          "containers": [{"name": "main", "image": "busybox:1.36"}]}}}}))
    out = proc.communicate(timeout=600)[0]
    impostor = [j for j in jobs(backups) if j["metadata"]["name"] == name][0]
    assert proc.returncode != 0, out[-4000:]
    text = " ".join(out.split())
    assert f"{name}: is now another Job (UID {impostor['metadata']['uid']}, this run created UID {mine['metadata']['uid']})" in text
    assert "Backups completed" not in text
    assert resumed(backups)


def test_a_job_deleted_before_it_finished_fails_the_run_naming_it(backups, tmp_path):
    sleep_seconds(backups, 40)
    proc = backup_now(tmp_path, backups, wait=False)
    name = this_runs_job(backups, proc)["metadata"]["name"]
    kubectl("-n", backups, "delete", "job", name, "--cascade=background", "--wait=true")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode != 0, out[-4000:]
    assert f"{name}: vanished before this run saw it finish" in " ".join(out.split())
    assert resumed(backups)
