"""How backup_now and restore_job (roles/backup_cron) judge their Jobs, rendered from the task files themselves.

The expressions are read out of roles/backup_cron/tasks/{backup_now,restore_job}.yml and rendered with Ansible's
own templating against made-up k8s_info answers, so these tests check the very judgement a run makes:
- a wait ends when this run's Job (the UID it was created with) finished, or when the name no longer holds it;
- only this run's Job with a Complete condition counts; a Job of the same name with another UID (an old
  Complete one, or one put in its place), a Job that vanished, and a failed one each fail the run, naming it;
- the Jobs' names: at most 63 characters, DNS-1123, and not the same twice;
- the Jobs already running (no Complete or Failed condition) are the ones waited for before a run starts.
tests/integration/test_backup_jobs.py runs the same tasks against the local control plane.
"""
import re
import sys
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "roles" / "backup_cron" / "tasks"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DATE_TIME = r"\d{14}"


@pytest.fixture(autouse=True, scope="module")
def plugin_loader():
    """Ansible's plugin loader, for the filters and lookups the tasks use. Set up when these tests run, not when
    pytest imports this file: other test files import the collection's plugins from .build/collections during
    collection, and a collection loader installed before that would take over those imports. Those plain imports
    (whichever files share this pytest process: xdist decides) leave `ansible_collections` in sys.modules as an
    ordinary package, which hides the collection's plugins from the loader; they are dropped first."""
    for name in [n for n in sys.modules if n == "ansible_collections" or n.startswith("ansible_collections.")]:
        del sys.modules[name]
    init_plugin_loader([str(REPO / ".build" / "collections")])


def flatten(tasks):
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from flatten(task.get(key, []))


def task(file, name_start):
    """The task of `file` whose name starts with `name_start`."""
    [found] = [t for t in flatten(yaml.safe_load((TASKS / file).read_text())) if t.get("name", "").startswith(name_start)]
    return found


def templar(variables, task_vars=()):
    """A Templar with `variables`, plus the task's own vars as templates (they are evaluated lazily, as in a run)."""
    merged = dict(variables)
    merged.update({k: trust_as_template(v) if isinstance(v, str) else v for k, v in dict(task_vars).items()})
    return Templar(loader=DataLoader(), variables=merged)


def render(variables, expression, task_vars=()):
    return templar(variables, task_vars).template(trust_as_template(expression))


def condition(variables, expression, task_vars=()):
    return templar(variables, task_vars).evaluate_conditional(trust_as_template(expression))


def job(name, uid, *conditions, **status):
    return {"metadata": {"name": name, "uid": uid},
            "status": {"conditions": [{"type": c, "status": "True"} for c in conditions], **status}}


RUNNING = job("b", "uid-mine")
MINE_COMPLETE = job("b", "uid-mine", "Complete", succeeded=1)
# backoffLimit 1: one pod failed, the retry succeeded. The Job completed; status.failed is 1 all the same.
MINE_COMPLETE_AFTER_A_RETRY = job("b", "uid-mine", "Complete", succeeded=1, failed=1)
MINE_FAILED = job("b", "uid-mine", "FailureTarget", "Failed", failed=2)
OTHER_COMPLETE = job("b", "uid-old", "Complete", succeeded=1)
OTHER_RUNNING = job("b", "uid-new")


# --- backup_now: the wait and the verdict -------------------------------------------------------------------


def backup_wait_done(found):
    wait = task("backup_now.yml", "Wait for the backups to finish")
    variables = {"upgrade_backup_state": {"resources": found}, "item": {"result": {"metadata": {"name": "b", "uid": "uid-mine"}}}}
    return condition(variables, wait["until"])


@pytest.mark.parametrize("found, done", [
    ([RUNNING], False),
    ([MINE_COMPLETE], True),
    ([MINE_FAILED], True),
    ([], True),                 # vanished: stop waiting, judged below
    ([OTHER_COMPLETE], True),   # an old Complete Job under the name: stop waiting, judged below
    ([OTHER_RUNNING], True),
], ids=["running", "complete", "failed", "vanished", "old-complete-under-the-name", "another-running"])
def test_the_backup_wait_ends_when_this_runs_job_finished_or_the_name_no_longer_holds_it(found, done):
    assert backup_wait_done(found) is done


def backup_verdict(*states):
    """The assert 'Stop unless every backup completed' on per-Job k8s_info answers: (passed, message)."""
    check = task("backup_now.yml", "Stop unless every backup completed")
    results = [{"resources": found, "item": {"result": {"metadata": {"name": name, "uid": "uid-mine"}}}}
               for name, found in states]
    variables = {"upgrade_backup_state": {"results": results}, "langfuse_helm_namespace": "lf", "backup_now_reason": "on-demand"}
    passed = condition(variables, check["ansible.builtin.assert"]["that"], check["vars"])
    message = " ".join(render(variables, check["ansible.builtin.assert"]["fail_msg"], check["vars"]).split())
    return passed, message


def test_this_runs_complete_jobs_pass():
    assert backup_verdict(("a", [MINE_COMPLETE]), ("b", [MINE_COMPLETE_AFTER_A_RETRY]))[0] is True


def test_an_old_complete_job_under_the_name_is_not_taken_for_this_runs_backup():
    passed, message = backup_verdict(("a", [MINE_COMPLETE]), ("b", [OTHER_COMPLETE]))
    assert passed is False
    assert "b: is now another Job (UID uid-old, this run created UID uid-mine)" in message
    assert "a:" not in message


def test_a_vanished_job_fails_the_run_naming_it():
    passed, message = backup_verdict(("a", [MINE_COMPLETE]), ("gone-job", []))
    assert passed is False
    assert "gone-job: vanished before this run saw it finish" in message and "outcome is unknown" in message


def test_a_failed_job_fails_the_run_with_how_to_read_its_log():
    passed, message = backup_verdict(("a", [MINE_FAILED]))
    assert passed is False
    assert "a: failed, read its log: kubectl -n lf logs job/a --all-containers" in message


# --- backup_now: what it waits for first, and the names ---------------------------------------------------------


def test_the_jobs_already_running_are_the_unfinished_ones():
    wait = task("backup_now.yml", "Wait for the backup Jobs already running to finish")
    answer = {"resources": [job("scheduled", "u1"), job("done", "u2", "Complete"), job("broke", "u3", "Failed"),
                            job("retrying", "u4", failed=1), {"metadata": {"name": "new", "uid": "u5"}}]}
    variables = {"backup_cron_now_busy": answer, "backup_cron_now_busy_state": answer}
    assert render(variables, "{{ _running }}", wait["vars"]) == ["scheduled", "retrying", "new"]
    assert condition(variables, wait["until"], wait["vars"]) is False
    finished = {"resources": [job("scheduled", "u1", "Complete"), job("retrying", "u4", "Failed"), job("new", "u5", "Complete")]}
    assert condition({**variables, "backup_cron_now_busy_state": finished}, wait["until"], wait["vars"]) is True


def job_names(cronjob, reason):
    stamp_task = task("backup_now.yml", "Name this run's Jobs")
    stamp = render({}, stamp_task["ansible.builtin.set_fact"]["backup_cron_now_stamp"])
    run = task("backup_now.yml", "Run each backup CronJob now")
    variables = {"item": {"metadata": {"name": cronjob}}, "backup_now_reason": reason, "backup_cron_now_stamp": stamp}
    return stamp, render(variables, run["kubernetes.core.k8s"]["definition"]["metadata"]["name"])


@pytest.mark.parametrize("cronjob", ["langfuse-backup-postgres", "langfuse-backup-clickhouse-incremental", "x" * 52 + "-" + "y" * 10])
@pytest.mark.parametrize("reason", ["on-demand", "pre-upgrade", "a" * 16])
def test_job_names_fit_kubernetes_and_carry_the_date_time_and_a_random_suffix(cronjob, reason):
    stamp, name = job_names(cronjob, reason)
    assert len(name) <= 63 and DNS_1123.match(name), name
    assert re.fullmatch(r"\d{14}-[a-z0-9]{5}", stamp), stamp
    assert name.endswith(f"-{reason}-{stamp}") and cronjob.startswith(name[:-len(f"-{reason}-{stamp}")])


def test_two_runs_in_the_same_second_get_different_names():
    names = {job_names("langfuse-backup-postgres", "on-demand")[1] for _name in range(20)}
    assert len(names) == 20


# --- restore_job ---------------------------------------------------------------------------------------------


RESTORE = {"backup_cron_namespace": "lf", "backup_cron_restore_job_name": "b",
           "backup_cron_restore": {"kind": "postgres", "backup_id": "20261126T021500Z"},
           "backup_cron_restore_job": {"method": "create", "result": {"metadata": {"name": "b", "uid": "uid-mine"}}}}


@pytest.mark.parametrize("found, done", [([RUNNING], False), ([MINE_COMPLETE], True), ([MINE_FAILED], True), ([], True),
                                         ([OTHER_COMPLETE], True)],
                         ids=["running", "complete", "failed", "vanished", "old-complete-under-the-name"])
def test_the_restore_wait_ends_when_its_job_finished_or_the_name_no_longer_holds_it(found, done):
    wait = task("restore_job.yml", "Wait for the restore Job")
    assert condition({**RESTORE, "_backup_cron_restore_state": {"resources": found}}, wait["until"]) is done


@pytest.mark.parametrize("found, passed, words", [
    ([MINE_COMPLETE], True, ""),
    ([MINE_FAILED], False, "failed: kubectl -n lf logs job/b --all-containers. pg_restore runs in one transaction: "
                           "Postgres is as it was before this Job."),
    ([], False, "has no outcome: its Job b vanished before this run saw it finish"),
    ([OTHER_COMPLETE], False, "has no outcome: the name b now holds another Job (UID uid-old, this run created UID uid-mine)"),
], ids=["complete", "failed", "vanished", "old-complete-under-the-name"])
def test_the_restore_counts_only_its_own_complete_job(found, passed, words):
    check = task("restore_job.yml", "Stop when the restore Job did not complete")
    variables = {**RESTORE, "_backup_cron_restore_state": {"resources": found}}
    assert condition(variables, check["ansible.builtin.assert"]["that"], check["vars"]) is passed
    message = " ".join(render(variables, check["ansible.builtin.assert"]["fail_msg"], check["vars"]).split())
    assert words in message


@pytest.mark.parametrize("stamp", [None, "", "021500", "a" * 29])
@pytest.mark.parametrize("kind", ["postgres", "clickhouse"])
def test_restore_job_names_fit_kubernetes_with_or_without_a_stamp(kind, stamp):
    name_task = task("restore_job.yml", "Name the restore Job")
    restore = {"kind": kind, "backup_id": "x", **({} if stamp is None else {"stamp": stamp})}
    names = {render({"backup_cron_restore": restore}, name_task["ansible.builtin.set_fact"]["backup_cron_restore_job_name"])
             for _name in range(5)}
    assert len(names) == 5
    for name in names:
        assert len(name) <= 63 and DNS_1123.match(name), name
        assert re.fullmatch(f"langfuse-restore-{kind}-{stamp or DATE_TIME}-[a-z0-9]{{5}}", name), name


@pytest.mark.parametrize("stamp, ok", [("021500", True), ("a" * 30, False), ("Bad_Stamp", False)])
def test_a_stamp_that_cannot_name_a_job_is_refused(stamp, ok):
    check = task("restore_job.yml", "Check the Job's TTL leaves time")
    variables = {"backup_cron_job_ttl_seconds": 604800, "backup_cron_restore": {"kind": "postgres", "stamp": stamp}}
    assert all(condition(variables, that) for that in check["ansible.builtin.assert"]["that"]) is ok
