"""When a maintenance window goes wrong, on the local control plane: a second run beside the first, and a run
killed while helm changes the release (issue 18).

One install walked through it: an upgrade whose worker step hangs (its pods never become Ready, a test hook of
the local cluster) holds the namespace's lock; a second upgrade started beside it is refused, naming it; then
somebody deletes the Lease and the first run's renewer writes it again; then the first run's controller process
alone is killed, as `kill <pid>` does (and as Ctrl-C does too: ansible-core
2.19 runs each task's worker, and so helm, in a session of its own). The lock's renewer must stop that helm and
mark the lock as ended; the re-runs then name each way out in turn
(take over the stale lock, recover the pending release) and the last one finishes the upgrade.
Langfuse's own pods do not run here (KWOK plays the nodes); what runs for real is the API server, Helm's
release storage and the helm and ansible-playbook processes.
"""
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from conftest import BackgroundPlaybook, installed_release, kubectl, playbook, run, wait_for
from test_install import recap
from test_upgrade_v4 import changed_tasks

QUICK = {"upgrade_skip_backup": True, "upgrade_observe_seconds": 5, "upgrade_canary_observe_seconds": 5,
         "langfuse_helm_app_version": "4.12.0"}
NEVER_READY_LABEL = "localenv.langfuse-ops.io/never-ready"  # tests/localenv/kwok_config.py


@pytest.fixture(scope="module")
def installed(cluster, services):
    namespace = f"it-mw-{uuid.uuid4().hex[:6]}"
    with installed_release(namespace, langfuse_helm_app_version="4.4.0"):
        try:
            yield namespace
        finally:
            let_workers_be_ready(namespace)


def lease(namespace):
    proc = kubectl("-n", namespace, "get", "lease", "langfuse-ops-lock", "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def upgrade_record(namespace):
    return json.loads(kubectl("-n", namespace, "get", "configmap", "langfuse-upgrade", "-o", "json").stdout)["data"]


def history(namespace):
    return json.loads(run("helm", "history", "langfuse", "-n", namespace, "-o", "json").stdout)


def helm_processes(namespace):
    """helm processes working on this namespace's release, whoever their parent: kubernetes.core.helm names the
    namespace in helm's environment (HELM_NAMESPACE) rather than its arguments, so both are read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and Path(args[0].decode(errors="replace")).name == "helm" and (
                namespace.encode() in b" ".join(args) or f"HELM_NAMESPACE={namespace}".encode() in environ):
            found.append((int(entry.name), b" ".join(args).decode(errors="replace")))
    return found


def text(output):
    return " ".join(output.split())


def hold_workers_unready(namespace, version):
    """From now on, worker pods of `version` created in `namespace` never become Ready (KWOK's never-ready stage,
    through a label a MutatingAdmissionPolicy sets at admission), so helm's --wait on the worker step hangs for as long
    as the test needs: the worker step runs on the deployed values with only the image moved, so a label given in
    the upgrade's values would never reach it. `let_workers_be_ready` takes the policy away."""
    name = f"test-never-ready-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail", "reinvocationPolicy": "Never",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                                    "resources": ["pods"]}]},
            "matchConditions": [{"name": "worker-of-the-version", "expression":
                                 f"object.spec.containers.exists(c, c.image.endsWith('langfuse-worker:{version}'))"}],
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {
                "expression": f'Object{{metadata: Object.metadata{{labels: {{"{NEVER_READY_LABEL}": "true"}}}}}}'}}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name,
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    }
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))


def let_workers_be_ready(namespace):
    name = f"test-never-ready-{namespace}"
    kubectl("delete", "mutatingadmissionpolicybinding", name, "--ignore-not-found")
    kubectl("delete", "mutatingadmissionpolicy", name, "--ignore-not-found")


def hanging_upgrade(namespace, version, tmp_path):
    """upgrade.yml to `version` whose worker step hangs (its pods never Ready), once helm has the release pending."""
    hold_workers_unready(namespace, version)
    first = BackgroundPlaybook("upgrade", {"langfuse_namespace": namespace, **QUICK, "langfuse_helm_app_version": version},
                               log_dir=tmp_path)
    try:
        wait_for("the first run's lock", lambda: lease(namespace), timeout=300)
        return first
    except BaseException:
        first.kill()
        let_workers_be_ready(namespace)
        raise


def wait_pending(namespace, first):
    try:
        # The newest revision: an earlier killed one keeps its pending-upgrade label in the history.
        wait_for("the worker step's helm upgrade, pending", lambda: history(namespace)[-1]["status"] == "pending-upgrade",
                 timeout=600)
        wait_for("helm at work on the release", lambda: helm_processes(namespace), timeout=60)
    except BaseException:
        first.kill()
        raise


def test_a_second_run_is_refused_and_a_killed_controller_leaves_no_helm_behind(installed, tmp_path):
    namespace = installed
    first = hanging_upgrade(namespace, "4.12.0", tmp_path)
    assert lease(namespace)["metadata"]["annotations"]["langfuse-ops.io/playbook"] == "upgrade.yml"
    second = playbook("upgrade", {"langfuse_namespace": namespace, **QUICK})
    wait_pending(namespace, first)
    # Refused at once, naming the holder; the release is the first run's alone.
    assert second.returncode != 0
    assert f"Another run holds namespace {namespace}: upgrade.yml run by" in text(second.stdout), second.stdout[-3000:]
    assert "changed nothing" in text(second.stdout)

    # Somebody "cleans up" the Lease under the live run: its renewer writes it again, the same holder's.
    holder = lease(namespace)["spec"]["holderIdentity"]
    kubectl("-n", namespace, "delete", "lease", "langfuse-ops-lock")
    back = wait_for("the renewer to write the deleted Lease again", lambda: lease(namespace), timeout=60, interval=1)
    assert back["spec"]["holderIdentity"] == holder
    assert "deleted while this run held it" in back["metadata"]["annotations"]["langfuse-ops.io/recreated"]

    first.kill(group=False)  # the controller alone, as `kill <pid>` does: its helm child would go on by itself
    wait_for("the renewer to mark the lock ended", lambda: (lease(namespace) or {}).get("metadata", {})
             .get("annotations", {}).get("langfuse-ops.io/holder-ended"), timeout=90)
    assert "helm" in lease(namespace)["metadata"]["annotations"]["langfuse-ops.io/stopped-processes"]
    assert helm_processes(namespace) == []
    # helm, stopped with SIGTERM, rolled its atomic upgrade back itself; nothing moves the release any more.
    settled = history(namespace)
    time.sleep(3)
    assert history(namespace) == settled and settled[-1]["status"] in ("deployed", "pending-upgrade", "pending-rollback")

    let_workers_be_ready(namespace)
    taken = playbook("upgrade", {"langfuse_namespace": namespace, **QUICK, "langfuse_take_over_lock": namespace,
                                 "langfuse_helm_recover_pending": namespace})
    assert taken.returncode == 0, taken.stdout[-4000:]
    assert f"Took over the stale lock on {namespace}" in text(taken.stdout)
    assert "Health: OK, version 4.12.0" in taken.stdout
    assert lease(namespace) is None


def test_a_run_killed_in_its_helm_step_is_finished_by_the_ways_out_its_reruns_name(installed, tmp_path):
    namespace = installed
    first = hanging_upgrade(namespace, "4.15.0", tmp_path)
    wait_pending(namespace, first)
    # helm dies at once (OOM, a crashed machine), then the run's process group: nothing rolls back. (ansible-core
    # 2.19 runs each task's worker in a session of its own, so a group kill alone does not reach helm; the renewer
    # does, and helm then rolls back, as the test above shows.)
    for pid, _args in helm_processes(namespace):
        os.kill(pid, 9)
    first.kill()
    let_workers_be_ready(namespace)
    wait_for("the renewer to mark the lock ended", lambda: (lease(namespace) or {}).get("metadata", {})
             .get("annotations", {}).get("langfuse-ops.io/holder-ended"), timeout=90)
    assert history(namespace)[-1]["status"] == "pending-upgrade"
    deployed = [r["revision"] for r in history(namespace) if r["status"] == "deployed"][-1]
    # The killed run left its progress in the cluster: where it started, where it went, the step it reached.
    record = upgrade_record(namespace)
    assert (record["state"], record["step"]) == ("started", "worker to 4.15.0"), record
    assert json.loads(record["from"])["revision"] == str(deployed) and json.loads(record["to"])["web"] == "4.15.0"

    stale = playbook("upgrade", {"langfuse_namespace": namespace, **QUICK, "langfuse_helm_app_version": "4.15.0"})
    assert stale.returncode != 0
    assert f"The lock on namespace {namespace} is stale" in text(stale.stdout), stale.stdout[-3000:]
    assert "its controller process ended at" in text(stale.stdout) and f"-e langfuse_take_over_lock={namespace}" in text(stale.stdout)

    pending = playbook("upgrade", {"langfuse_namespace": namespace, **QUICK, "langfuse_helm_app_version": "4.15.0",
                                   "langfuse_take_over_lock": namespace})
    assert pending.returncode != 0
    said = text(pending.stdout)
    assert f"Took over the stale lock on {namespace}" in said, pending.stdout[-3000:]
    assert f"Helm release langfuse in {namespace} is pending-upgrade at revision" in said
    assert f"The last deployed revision is {deployed}" in said and f"-e langfuse_helm_recover_pending={namespace}" in said
    assert lease(namespace) is None  # the refusing run gave the lock back
    assert history(namespace)[-1]["status"] == "pending-upgrade"

    done = playbook("upgrade", {"langfuse_namespace": namespace, **QUICK, "langfuse_helm_app_version": "4.15.0",
                                "langfuse_helm_recover_pending": namespace})
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Health: OK, version 4.15.0" in done.stdout
    assert f"RESUMING the upgrade started {record['started']} from Langfuse" in text(done.stdout), done.stdout[-4000:]
    assert f"on a failure it returns to revision {deployed}." in text(done.stdout)
    assert upgrade_record(namespace)["state"] == "done"
    # The killed revision keeps its pending-upgrade label in the history (helm rollback does not rewrite it), but a
    # rollback to the deployed one came after it, and the upgrade after that.
    after = history(namespace)
    killed = max(r["revision"] for r in after if r["status"] == "pending-upgrade")
    rollback = next(r["revision"] for r in after if r["description"] == f"Rollback to {deployed}")
    assert killed < rollback < after[-1]["revision"] and after[-1]["status"] == "deployed"
    assert lease(namespace) is None
    cronjobs = json.loads(kubectl("-n", namespace, "get", "cronjobs", "-o", "json").stdout)["items"]
    assert cronjobs and not [c["metadata"]["name"] for c in cronjobs if c["spec"].get("suspend")]

    again = playbook("upgrade", {"langfuse_namespace": namespace, **QUICK, "langfuse_helm_app_version": "4.15.0"})
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout)["changed"] == 0, changed_tasks(again.stdout)


def test_a_stale_lock_is_not_taken_over_by_a_check_mode_run(installed):
    namespace = installed
    kubectl("-n", namespace, "delete", "lease", "langfuse-ops-lock", "--ignore-not-found")
    kubectl("-n", namespace, "create", "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "langfuse-ops-lock", "namespace": namespace,
                     "annotations": {"langfuse-ops.io/playbook": "restore.yml", "langfuse-ops.io/phase": "start"}},
        "spec": {"holderIdentity": "someone@elsewhere/1/dead", "leaseDurationSeconds": 30,
                 "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z"}}))
    try:
        checked = playbook("install", {"langfuse_namespace": namespace, "langfuse_take_over_lock": namespace}, "--check")
        assert checked.returncode == 0, checked.stdout[-3000:]
        assert lease(namespace)["spec"]["holderIdentity"] == "someone@elsewhere/1/dead"
        refused = playbook("install", {"langfuse_namespace": namespace}, "--check")
        assert refused.returncode != 0 and "is stale: restore.yml run by someone@elsewhere/1/dead" in text(refused.stdout)
    finally:
        kubectl("-n", namespace, "delete", "lease", "langfuse-ops-lock", check=False)
