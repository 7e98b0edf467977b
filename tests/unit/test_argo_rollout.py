"""How argo_rollout reads a Rollout's status: the statuses here are what Argo Rollouts v1.9.1's controller
wrote on the local control plane (workloadRef Deployment, canary steps setWeight then pause), trimmed to the
fields the module reads. tests/integration/test_argo_rollouts.py drives the module against that controller."""
import sys
from pathlib import Path

import pytest

from module_runner import run_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.modules import argo_rollout  # noqa: E402

HEALTHY = {"phase": "Healthy", "stableRS": "84b4798f8f", "currentPodHash": "84b4798f8f", "availableReplicas": 3,
           "updatedReplicas": 3, "currentStepIndex": 2, "workloadObservedGeneration": "1"}
# After `kubectl set image` on the Deployment: one canary pod, paused at step 1 (that Rollout had Argo's default
# maxSurge, so two stable pods; the role's maxSurge 1 keeps all three).
PAUSED = {"phase": "Paused", "message": "CanaryPauseStep", "stableRS": "84b4798f8f", "currentPodHash": "78ddfd75f8",
          "availableReplicas": 3, "updatedReplicas": 1, "currentStepIndex": 1, "workloadObservedGeneration": "2",
          "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-12-01T20:07:29Z"}]}
# The canary's template never becomes Ready: still at the setWeight step.
PROGRESSING = {"phase": "Progressing", "message": "more replicas need to be updated", "stableRS": "84b4798f8f",
               "currentPodHash": "78ddfd75f8", "availableReplicas": 3, "updatedReplicas": 1, "currentStepIndex": 0,
               "workloadObservedGeneration": "2"}
ABORTED = {"phase": "Degraded", "message": "RolloutAborted: Rollout aborted update to revision 2", "abort": True,
           "stableRS": "84b4798f8f", "currentPodHash": "78ddfd75f8", "availableReplicas": 3, "currentStepIndex": 0,
           "workloadObservedGeneration": "2"}


def state(status):
    return argo_rollout.summary({"status": status})


@pytest.mark.parametrize("status, generation, expected", [
    (HEALTHY, 1, "healthy"),
    (HEALTHY, None, "healthy"),
    # The controller has not seen the Deployment's new template yet: its old Healthy says nothing.
    (HEALTHY, 2, None),
    (PAUSED, 2, "paused"),
    (PROGRESSING, 2, None),
    (ABORTED, 2, "degraded"),
    ({}, 1, None),  # no controller has reconciled it
])
def test_settled(status, generation, expected):
    assert argo_rollout.settled(state(status), generation) == expected


def test_summary_of_a_paused_canary():
    s = state(PAUSED)
    assert (s["paused"], s["canary_hash"], s["stable_hash"], s["observed"], s["updated"]) == (True, "78ddfd75f8", "84b4798f8f", 2, 1)
    assert argo_rollout.public(s) == {"phase": "Paused", "message": "CanaryPauseStep", "canary_hash": "78ddfd75f8",
                                      "stable_hash": "84b4798f8f", "paused": True}


def test_a_pause_on_the_stable_template_is_no_canary():
    # A paused Rollout whose newest template is the stable one has nothing to gate.
    assert not state({**PAUSED, "currentPodHash": "84b4798f8f"})["paused"]


PROMOTED = {**HEALTHY, "stableRS": "78ddfd75f8", "currentPodHash": "78ddfd75f8", "workloadObservedGeneration": "2"}


WORKLOAD_REF = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "langfuse-web", "scaleDown": "never"}


class Controller:
    """Plays the controller: each read returns the next recorded status (the last one repeats); a status
    patch is recorded and moves the script to `after_patch`. The Rollout refers to the Deployment
    langfuse-web at `generation`, or to no workload when that is None."""

    def __init__(self, statuses, after_patch=None, generation=2):
        self.statuses, self.after_patch, self.patches, self.generation = list(statuses), after_patch, [], generation

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if (group, version, plural) == ("apps", "v1", "deployments"):
            assert (namespace, name) == ("it", "langfuse-web")
            return {"metadata": {"name": name, "generation": self.generation}}
        assert (group, version, plural, namespace, name) == ("argoproj.io", "v1alpha1", "rollouts", "it", "langfuse-web")
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"spec": {"workloadRef": WORKLOAD_REF} if self.generation is not None else {}, "status": status}

    def patch_namespaced_custom_object_status(self, group, version, namespace, plural, name, body):
        self.patches.append(body)
        self.statuses = list(self.after_patch)


def run(monkeypatch, capsys, controller, check_mode=False, **args):
    monkeypatch.setattr(argo_rollout.k8s, "custom_objects_api", lambda *a: controller)
    monkeypatch.setattr(argo_rollout.time, "sleep", lambda s: None)
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(argo_rollout.time, "monotonic", lambda: next(clock))  # one "second" a reading
    params = {"namespace": "it", "name": "langfuse-web", "timeout": 20, "_ansible_check_mode": check_mode, **args}
    return run_module(monkeypatch, capsys, argo_rollout.main, params)


def test_settled_waits_past_the_old_healthy_status_for_the_pause(monkeypatch, capsys):
    # The Deployment is at generation 2 (the release changed its template): HEALTHY of generation 1 is not it.
    result = run(monkeypatch, capsys, Controller([HEALTHY, HEALTHY, PROGRESSING, PAUSED]))
    assert not result.get("failed"), result
    assert result["paused"] and result["canary_hash"] == "78ddfd75f8" and not result["changed"]


def test_settled_takes_an_unchanged_template_as_healthy(monkeypatch, capsys):
    result = run(monkeypatch, capsys, Controller([HEALTHY], generation=1))
    assert not result.get("failed") and result["phase"] == "Healthy" and not result["paused"], result


def test_an_explicit_generation_overrides_the_deployments(monkeypatch, capsys):
    result = run(monkeypatch, capsys, Controller([HEALTHY], generation=1), workload_generation=2)
    assert result["failed"] and "did not settle" in result["msg"]


def test_a_rollout_without_a_workload_ref_settles_on_its_own_status(monkeypatch, capsys):
    result = run(monkeypatch, capsys, Controller([PROGRESSING, HEALTHY], generation=None))
    assert not result.get("failed") and result["phase"] == "Healthy", result


def test_a_canary_that_never_pauses_fails_with_the_rollouts_state(monkeypatch, capsys):
    result = run(monkeypatch, capsys, Controller([PROGRESSING]))
    assert result["failed"] and "did not settle (Healthy, or paused at its canary step) within 20 s: phase Progressing" in result["msg"]
    assert "1 pods of the newest template, 3 available" in result["msg"]


def test_an_aborted_rollout_fails_settled(monkeypatch, capsys):
    result = run(monkeypatch, capsys, Controller([ABORTED]))
    assert result["failed"] and "is aborted: RolloutAborted" in result["msg"]


def test_no_controller_is_named_as_the_cause(monkeypatch, capsys):
    result = run(monkeypatch, capsys, Controller([{}]))
    assert result["failed"] and "no Argo Rollouts controller reconciles it" in result["msg"] and "namespace it" in result["msg"]


def test_promote_clears_the_pause_and_waits_for_the_new_stable(monkeypatch, capsys):
    controller = Controller([PAUSED], after_patch=[PAUSED, PROMOTED])
    result = run(monkeypatch, capsys, controller, state="promoted")
    assert controller.patches == [{"status": {"pauseConditions": None}}]
    assert result["changed"] and result["stable_hash"] == "78ddfd75f8" and result["phase"] == "Healthy"


def test_promote_in_check_mode_patches_nothing(monkeypatch, capsys):
    controller = Controller([PAUSED])
    result = run(monkeypatch, capsys, controller, check_mode=True, state="promoted")
    assert result["changed"] and controller.patches == []


def test_abort_sets_abort_and_waits_for_the_canary_to_go(monkeypatch, capsys):
    controller = Controller([PROGRESSING], after_patch=[{**ABORTED, "updatedReplicas": 1}, ABORTED])
    result = run(monkeypatch, capsys, controller, state="aborted")
    assert controller.patches == [{"status": {"abort": True}}]
    assert result["changed"] and result["stable_hash"] == "84b4798f8f"


def test_abort_of_a_healthy_rollout_changes_nothing(monkeypatch, capsys):
    controller = Controller([HEALTHY])
    assert not run(monkeypatch, capsys, controller, state="aborted")["changed"] and controller.patches == []
