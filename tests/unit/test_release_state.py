"""The deployed release as Helm records it: a pending state a killed run left, and the v3 -> v4 write mode its
manifest runs against the recorded phase."""
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.filter.release_state import (  # noqa: E402
    helm_pending, v4_deployed_phase, v4_record_problem)


def rev(n, status, chart="langfuse-2.0.0", app="4.4.0", description="Upgrade complete"):
    return {"revision": n, "status": status, "chart": chart, "app_version": app, "description": description}


def test_no_history_is_no_release():
    assert helm_pending([]) == {"pending": False, "state": "none", "revision": 0, "chart": "", "app_version": "", "description": "",
                                "deployed": 0, "deployed_chart": "", "deployed_app_version": "", "v3_revision": 0}


def test_a_killed_upgrade_goes_back_to_the_deployed_revision():
    state = helm_pending([rev(1, "superseded", "langfuse-1.5.41", "3.224.1"), rev(2, "deployed", "langfuse-1.5.41", "3.224.1"),
                          rev(3, "pending-upgrade", description="Preparing upgrade")])
    assert state["pending"] and state["state"] == "pending-upgrade" and state["revision"] == 3
    assert state["deployed"] == 2 and state["deployed_chart"] == "langfuse-1.5.41"
    assert state["v3_revision"] == 2


def test_a_killed_first_install_has_nothing_to_go_back_to():
    state = helm_pending([rev(1, "pending-install", description="Initial install underway")])
    assert state["pending"] and state["deployed"] == 0


def test_a_release_of_one_revision_is_deployed_on_its_chart():
    """install.yml's line check reads deployed_chart: a v3 release never upgraded (one revision) must say v3, or
    the new v4 pins would move it to v4's events_only unconfirmed (the rehearsal of CI found install.yml doing it)."""
    state = helm_pending([rev(1, "deployed", "langfuse-1.5.41", "3.224.1", description="Install complete")])
    assert not state["pending"]
    assert (state["deployed"], state["deployed_chart"], state["deployed_app_version"]) == (1, "langfuse-1.5.41", "3.224.1")


def test_the_newest_deployed_revision_is_the_deployed_one():
    state = helm_pending([rev(1, "superseded", "langfuse-1.5.41", "3.224.1"), rev(2, "superseded", "langfuse-2.0.0", "4.4.0"),
                          rev(3, "deployed", "langfuse-2.0.0", "4.16.0")])
    assert (state["deployed"], state["deployed_chart"], state["deployed_app_version"]) == (3, "langfuse-2.0.0", "4.16.0")


def test_a_failed_upgrade_leaves_the_revision_before_it_deployed():
    state = helm_pending([rev(1, "deployed", "langfuse-1.5.41", "3.224.1"), rev(2, "failed", "langfuse-2.0.0", "4.4.0")])
    assert (state["deployed"], state["deployed_chart"]) == (1, "langfuse-1.5.41")


def test_deployed_and_failed_are_not_pending():
    assert not helm_pending([rev(1, "superseded"), rev(2, "deployed")])["pending"]
    assert not helm_pending([rev(1, "deployed"), rev(2, "failed")])["pending"]


def test_history_order_does_not_matter():
    assert helm_pending([rev(3, "pending-rollback"), rev(1, "superseded"), rev(2, "deployed")])["deployed"] == 2


def manifest(web="4.4.0", worker="4.4.0", worker_env=None, web_env=None, fullname="langfuse"):
    def deployment(component, tag, env):
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{fullname}-{component}"},
                "spec": {"template": {"spec": {"containers": [{"name": f"langfuse-{component}",
                                                               "image": f"docker.langfuse.com/langfuse/langfuse:{tag}",
                                                               "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}]}}}}
    docs = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{fullname}-web"}},
            deployment("web", web, web_env), deployment("worker", worker, worker_env)]
    return yaml.safe_dump_all(docs)


DUAL = {"LANGFUSE_MIGRATION_V4_WRITE_MODE": "dual", "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL": "false"}
BACKFILL = {"LANGFUSE_MIGRATION_V4_WRITE_MODE": "dual", "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL": "true"}
DROP = {"LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES": "true"}


@pytest.mark.parametrize("text, phase", [
    (manifest("3.225.4", "3.225.4"), "v3"),
    (manifest(worker_env=DUAL, web_env=DUAL), "dual"),
    (manifest(worker_env=BACKFILL, web_env=BACKFILL), "backfill"),
    (manifest(), "events_only"),
    (manifest("3.225.4", "4.4.0", worker_env=DUAL), "dual"),  # a dual phase stopped after the worker step
    (manifest(worker_env={"LANGFUSE_MIGRATION_V4_WRITE_MODE": "legacy"}), "legacy"),
    (manifest(worker_env=DROP, web_env=DROP), "drop_scratch"),
    (manifest(worker_env=DROP), "drop_scratch"),
    (manifest(worker_env={**BACKFILL, **DROP}, web_env=BACKFILL), "backfill"),  # only after the cut-over does it count
    (manifest("3.225.4", "3.225.4", worker_env=DROP), "v3"),
])
def test_the_write_state_the_manifest_runs(text, phase):
    assert v4_deployed_phase(text, "langfuse")["phase"] == phase


def test_the_manifest_as_helm_info_returns_it_a_list_of_documents():
    documents = list(yaml.safe_load_all(manifest(worker_env=DUAL, web_env=DUAL)))
    assert v4_deployed_phase(documents, "langfuse")["phase"] == "dual"


def test_no_web_deployment_is_no_release():
    assert not v4_deployed_phase("", "langfuse")["present"]
    assert not v4_deployed_phase(manifest(fullname="other-langfuse"), "langfuse")["present"]


def problem(record, text, requested=""):
    return v4_record_problem(record, v4_deployed_phase(text, "langfuse"), "langfuse", requested)


def test_a_lost_record_during_dual_is_refused_with_both_facts_and_the_repair():
    message = problem({}, manifest(worker_env=DUAL, web_env=DUAL))
    assert "no phase recorded" in message and "write mode dual" in message and "changed nothing" in message
    assert "-e langfuse_helm_v4_record_repair=langfuse" in message and "(phase dual)" in message


@pytest.mark.parametrize("record, text", [
    ({}, manifest()),  # a v4 install that never migrated
    ({"phase": "cutover", "state": "done"}, manifest()),
    ({"phase": "dual", "state": "done"}, manifest(worker_env=DUAL, web_env=DUAL)),
    ({"phase": "backfill"}, manifest(worker_env=BACKFILL, web_env=BACKFILL)),  # a record from before states
    ({"phase": "infra", "state": "done"}, manifest("3.225.4", "3.225.4")),
    ({}, ""),  # nothing deployed yet
    ({"phase": "drop_scratch", "state": "done"}, manifest(worker_env=DROP, web_env=DROP)),
])
def test_records_that_agree_pass(record, text):
    assert problem(record, text) == ""


@pytest.mark.parametrize("record, text", [
    ({"phase": "dual", "state": "done"}, manifest()),  # events_only, though dual is recorded
    ({"phase": "backfill", "state": "done"}, manifest(worker_env=DUAL, web_env=DUAL)),
    ({"phase": "cutover", "state": "done"}, manifest(worker_env=DUAL, web_env=DUAL)),
    ({"phase": "dual", "state": "done"}, manifest("3.225.4", "3.225.4")),
    ({"phase": "infra", "state": "done"}, manifest()),
    ({"phase": "cutover", "state": "done"}, manifest(worker_env=DROP, web_env=DROP)),
    ({"phase": "drop_scratch", "state": "done"}, manifest()),
])
def test_records_the_release_contradicts_are_refused(record, text):
    assert "does not match the release" in problem(record, text)


def test_a_started_phase_is_resumed_only_by_that_phase():
    record = {"phase": "cutover", "state": "started", "since": "2026-12-03T11:00:00Z"}
    text = manifest(worker_env=DUAL, web_env=DUAL)
    assert problem(record, text, requested="cutover") == ""
    message = problem(record, text)
    assert "phase cutover was started at 2026-12-03T11:00:00Z" in message and "one-way" in message
    assert "-e upgrade_phase=cutover -e upgrade_confirm_cutover=langfuse" in message
    assert "did not finish" in problem(record, text, requested="rollback")


def test_a_started_dual_may_be_rolled_back():
    record = {"phase": "dual", "state": "started"}
    assert problem(record, manifest("3.225.4", "4.4.0", worker_env=DUAL), requested="rollback") == ""
    assert problem(record, manifest("3.225.4", "4.4.0", worker_env=DUAL), requested="dual") == ""
    assert "-e upgrade_phase=dual" in problem(record, manifest("3.225.4", "4.4.0", worker_env=DUAL))


def test_a_lost_record_after_the_drop_is_repaired_to_it_and_a_started_drop_names_its_confirmation():
    message = problem({}, manifest(worker_env=DROP, web_env=DROP))
    assert "with the drop of the backfill scratch table on" in message and "(phase drop_scratch)" in message
    started = {"phase": "drop_scratch", "state": "started", "since": "2026-12-07T10:00:00Z"}
    assert problem(started, manifest(), requested="drop_scratch") == ""
    assert "-e upgrade_phase=drop_scratch -e upgrade_confirm_drop_scratch=langfuse" in problem(started, manifest())


def test_unfinished_jobs_are_those_with_no_final_condition():
    from ansible_collections.langfuse_ops.platform.plugins.filter.release_state import unfinished_jobs

    def job(name, *conditions):
        return {"metadata": {"name": name}, "status": {"conditions": [{"type": t, "status": s} for t, s in conditions]}}

    jobs = [job("running"), job("done", ("Complete", "True")), job("failed", ("Failed", "True")),
            job("suspended", ("Suspended", "True")), job("not-yet-failed", ("Failed", "False")),
            {"metadata": {"name": "no-status"}}]
    assert unfinished_jobs(jobs) == ["no-status", "not-yet-failed", "running", "suspended"]
    assert unfinished_jobs([]) == [] and unfinished_jobs(None) == []


@pytest.mark.parametrize("tag, version", [
    ("3.225.4", "3.225.4"),
    ("3.225.4@sha256:" + "ab" * 32, "3.225.4"),  # pinned by digest: the digest is not the version
])
def test_the_deployed_version_is_the_tag_without_a_digest(tag, version):
    state = v4_deployed_phase(manifest(tag, tag), "langfuse")
    assert (state["web"], state["worker"], state["phase"]) == (version, version, "v3")
