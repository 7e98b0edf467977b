"""The namespace lock's judgement, on Leases as the API server returns them, and its process bookkeeping on
real processes of this machine."""
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.module_utils import namespace_lock as lock  # noqa: E402

NOW = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.timezone.utc)


def lease(holder="alice@ops/4242/abcd", renewed_ago=5, duration=30, ended=None, playbook="upgrade.yml", phase="worker"):
    renewed = lock.format_time(NOW - datetime.timedelta(seconds=renewed_ago))
    notes = {lock.PLAYBOOK: playbook, lock.PHASE: phase, lock.CONTROLLER: "alice@ops (ansible-playbook pid 4242)"}
    if ended:
        notes[lock.ENDED] = ended
        notes[lock.STOPPED] = "helm"
    return {"metadata": {"name": lock.LEASE_NAME, "resourceVersion": "17", "annotations": notes},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": "2026-12-03T11:58:00.000000Z", "renewTime": renewed}}


def test_no_lease_is_created():
    assert lock.judge(None, NOW, "me", "langfuse") == {"action": "create"}


def test_a_fresh_lease_of_another_run_refuses_naming_it():
    verdict = lock.judge(lease(), NOW, "me", "langfuse")
    assert verdict["action"] == "refuse"
    for part in ("upgrade.yml", "alice@ops (ansible-playbook pid 4242)", "2026-12-03T11:58:00", "'worker'", "5 s ago",
                 "changed nothing"):
        assert part in verdict["message"]


def test_a_fresh_lease_is_not_taken_over_even_when_asked():
    assert lock.judge(lease(), NOW, "me", "langfuse", take_over="langfuse")["action"] == "refuse"


def test_a_lease_past_its_duration_is_stale_and_needs_the_take_over():
    verdict = lock.judge(lease(renewed_ago=31), NOW, "me", "langfuse")
    assert verdict["action"] == "refuse"
    assert "-e langfuse_take_over_lock=langfuse" in verdict["message"] and "stale" in verdict["message"]
    assert lock.judge(lease(renewed_ago=29), NOW, "me", "langfuse")["message"].startswith("Another run holds")


def test_the_take_over_must_name_this_namespace():
    assert lock.judge(lease(renewed_ago=60), NOW, "me", "langfuse", take_over="other")["action"] == "refuse"
    verdict = lock.judge(lease(renewed_ago=60), NOW, "me", "langfuse", take_over="langfuse")
    assert verdict == {"action": "take_over", "previous": "alice@ops/4242/abcd"}


def test_a_lease_whose_controller_ended_is_stale_at_once_and_says_so():
    stale = lease(renewed_ago=1, ended="2026-12-03T11:59:59.000000Z")
    verdict = lock.judge(stale, NOW, "me", "langfuse")
    assert verdict["action"] == "refuse"
    assert "controller process ended at 2026-12-03T11:59:59" in verdict["message"] and "(helm)" in verdict["message"]


def test_our_own_lease_is_kept_and_a_released_one_acquired():
    assert lock.judge(lease(holder="me"), NOW, "me", "langfuse") == {"action": "keep"}
    assert lock.judge(lease(holder=""), NOW, "me", "langfuse") == {"action": "acquire"}


def test_lease_body_keeps_the_resource_version_for_a_guarded_replace():
    body = lock.lease_body("langfuse", "me", NOW, 30, "restore.yml", "start", "me@host", transitions=2, previous=lease())
    assert body["metadata"]["resourceVersion"] == "17"
    assert body["spec"]["renewTime"] == "2026-12-03T12:00:00.000000Z" and body["spec"]["leaseTransitions"] == 2
    assert body["metadata"]["annotations"][lock.PLAYBOOK] == "restore.yml"


def test_only_the_cronjobs_a_lock_holder_suspended_are_given_back():
    def cronjob(name, mark=None):
        return {"metadata": {"name": name, "annotations": {lock.SUSPENDED_BY: mark} if mark else {}}}
    found = [cronjob("pg", "namespace_lock restore.yml alice@ops/1/ab"), cronjob("ch", "backup_now pre-upgrade x"),
             cronjob("paused-by-a-person"), cronjob("ch-full", "namespace_lock upgrade.yml bob@ops/2/cd")]
    assert lock.suspended_by_lock(found) == ["ch-full", "pg"]


def test_times_the_api_server_writes_are_read():
    assert lock.parse_time("2026-12-03T12:00:00.123456Z") == NOW.replace(microsecond=123456)
    assert lock.parse_time("2026-12-03T12:00:00Z") == NOW
    assert lock.parse_time("2026-12-03T12:00:00.1Z") == NOW.replace(microsecond=100000)
    assert lock.parse_time("") is None


def test_descendants_and_stop_processes_on_a_real_process_tree():
    # A shell with a sleeping child: both are found below this process, and both stopped.
    shell = subprocess.Popen(["bash", "-c", "sleep 60 & wait"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = lock.descendants(os.getpid())
            if any(comm == "sleep" for _start, comm in found.values()):
                break
            time.sleep(0.05)
        assert shell.pid in found and any(comm == "sleep" for _start, comm in found.values())
        tree = {pid: entry for pid, entry in found.items() if pid == shell.pid or entry[1] == "sleep"}
        stopped = lock.stop_processes(tree, grace=5)
        assert set(stopped) == {"bash", "sleep"}
        shell.wait(timeout=10)
        assert all(lock.process_start(pid) != start for pid, (start, _c) in tree.items())
    finally:
        if shell.poll() is None:
            shell.kill()


def test_a_pid_reused_by_another_process_is_not_stopped():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        start = lock.process_start(sleeper.pid)
        assert lock.stop_processes({sleeper.pid: (start + 1, "sleep")}, grace=0.5) == []
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def deployment(name, annotations=None):
    return {"metadata": {"name": name, "annotations": annotations or {}}}


def test_no_restore_record_and_no_marks_is_no_refusal():
    assert lock.unfinished_restore({}, [deployment("langfuse-web")], "langfuse", "install.yml", "langfuse-restore") == ""
    assert lock.unfinished_restore({"state": "done"}, [], "langfuse", "upgrade.yml", "langfuse-restore") == ""


def test_an_unfinished_restore_refuses_every_run_but_restore():
    record = {"state": "started", "started": "2026-12-03T11:00:00Z", "postgres_id": "20261203T100000Z",
              "clickhouse_id": "20261201T000000Z/20261203T100001Z", "step": "clickhouse"}
    message = lock.unfinished_restore(record, [], "langfuse", "upgrade.yml", "langfuse-restore")
    assert "started 2026-12-03T11:00:00Z, from Postgres backup 20261203T100000Z and ClickHouse backup " in message
    assert "stopped after step clickhouse" in message and "upgrade.yml changed nothing" in message
    assert "ansible-playbook playbooks/restore.yml -e restore_confirm=langfuse" in message
    assert lock.unfinished_restore(record, [], "langfuse", "restore.yml", "langfuse-restore") == ""


def test_a_lost_restore_record_is_still_seen_on_the_workloads():
    marked = [deployment("langfuse-web", {"langfuse-ops.io/restore-replicas": "3"}), deployment("langfuse-worker")]
    message = lock.unfinished_restore({}, marked, "langfuse", "install.yml", "langfuse-restore")
    assert "its record langfuse-restore is gone, but langfuse-web still carry the replicas" in message


def test_a_lease_deleted_under_a_live_run_is_written_again_as_it_was():
    known = lease(holder="alice@ops/4242/abcd", playbook="upgrade.yml", phase="web")
    known["spec"]["acquireTime"] = "2026-12-03T10:00:00.000000Z"
    now = datetime.datetime(2026, 12, 3, 10, 5, tzinfo=datetime.timezone.utc)
    body = lock.recreated_lease({"namespace": "langfuse", "holder": "alice@ops/4242/abcd", "duration": 30}, known, now)
    assert body["spec"]["holderIdentity"] == "alice@ops/4242/abcd"
    assert body["spec"]["acquireTime"] == "2026-12-03T10:00:00.000000Z"
    assert body["spec"]["renewTime"] == lock.format_time(now)
    notes = body["metadata"]["annotations"]
    assert notes[lock.PLAYBOOK] == "upgrade.yml" and notes[lock.PHASE] == "web"
    assert "deleted while this run held it" in notes[lock.RECREATED]
    assert "resourceVersion" not in body["metadata"]  # a create: it fails if another run took the name meanwhile


def test_the_release_stops_the_runs_renewer_and_only_it(tmp_path, monkeypatch):
    monkeypatch.setattr(lock.tempfile, "gettempdir", lambda: str(tmp_path))
    renewer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.note_renewer("run-a", renewer.pid)
        assert lock.stop_renewer("run-b") is True  # no renewer noted for that run: nothing to stop
        assert renewer.poll() is None
        assert lock.stop_renewer("run-a") is True
        assert renewer.wait(timeout=5) == -15
        assert bystander.poll() is None
        assert not os.path.exists(lock.renewer_file("run-a"))
    finally:
        for process in (renewer, bystander):
            process.kill()
            process.wait()
