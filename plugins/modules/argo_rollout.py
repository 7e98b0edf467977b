#!/usr/bin/python
# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: argo_rollout
short_description: Wait for an Argo Rollout's canary, then promote or abort it
description:
  - Drives one Argo Rollouts C(Rollout) (argoproj.io/v1alpha1) with a canary strategy through the states a gated
    update needs, the way C(kubectl argo rollouts) does.
  - O(state=settled) waits until the controller has seen the pod template of O(workload_generation) (by default
    the current generation of the Deployment the Rollout's C(spec.workloadRef) names), then until the Rollout is either
    Healthy on that template or paused at a canary step with its canary pods available. It fails at once when the Rollout is Degraded (for example a progress
    deadline passed) and, after O(timeout) seconds, with the Rollout's phase and message.
  - O(state=promoted) clears the pause conditions (status subresource, as C(kubectl argo rollouts promote)) and waits
    until the new template is the stable one and Healthy.
  - O(state=aborted) sets C(status.abort) (as C(kubectl argo rollouts abort)); the controller then scales the canary
    down and the stable pods serve everything. It waits until no canary pod is left.
version_added: 0.1.0
author: langfuse_ops.platform maintainers (@langfuse-ops)
options:
  namespace:
    description: Namespace of the Rollout.
    type: str
    required: true
  name:
    description: Name of the Rollout.
    type: str
    required: true
  state:
    description: What to wait for, or do.
    type: str
    choices: [settled, promoted, aborted]
    default: settled
  workload_generation:
    description:
      - With O(state=settled), wait until C(status.workloadObservedGeneration) reaches this.
      - Defaults to the C(metadata.generation) the C(spec.workloadRef) Deployment has when the module starts; a
        Rollout without a C(workloadRef) has no such generation to wait for.
    type: int
  timeout:
    description: Seconds to wait.
    type: int
    default: 300
  kubeconfig:
    description: Path to the kubeconfig; the client's defaults when omitted.
    type: path
  context:
    description: kubeconfig context.
    type: str
attributes:
  check_mode:
    support: full
    description: In check mode O(state=promoted) and O(state=aborted) report the change without making it.
  diff_mode:
    support: none
    description: The change is a status field of the controller's.
"""

EXAMPLES = r"""
- name: Wait for the web's canary to pause
  langfuse_ops.platform.argo_rollout:
    namespace: langfuse
    name: langfuse-web
    timeout: 300
  register: canary

- name: Let the rest of the web move
  langfuse_ops.platform.argo_rollout:
    namespace: langfuse
    name: langfuse-web
    state: promoted
"""

RETURN = r"""
phase:
  description: The Rollout's C(status.phase) at the end (Healthy, Paused, Degraded, Progressing).
  type: str
  returned: always
paused:
  description: Whether the Rollout is paused at a canary step with a canary that differs from the stable pods.
  type: bool
  returned: always
canary_hash:
  description: C(rollouts-pod-template-hash) of the newest template (the canary's while paused).
  type: str
  returned: always
stable_hash:
  description: C(rollouts-pod-template-hash) of the stable pods.
  type: str
  returned: always
message:
  description: The Rollout's C(status.message).
  type: str
  returned: always
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.langfuse_ops.platform.plugins.module_utils import k8s_portforward as k8s

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "rollouts"
POLL_SECONDS = 2


def summary(rollout):
    status = rollout.get("status") or {}
    current, stable = status.get("currentPodHash", ""), status.get("stableRS", "")
    paused = any(c.get("reason") == "CanaryPauseStep" for c in status.get("pauseConditions") or [])
    return dict(
        phase=status.get("phase", ""),
        message=status.get("message") or "",
        canary_hash=current,
        stable_hash=stable,
        paused=bool(paused and current and current != stable),
        aborted=bool(status.get("abort")),
        observed=int(status.get("workloadObservedGeneration") or 0),
        available=int(status.get("availableReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
    )


def settled(state, generation):
    """None while the Rollout is still moving; else 'healthy', 'paused' or 'degraded'."""
    if generation is not None and state["observed"] < generation:
        return None
    if state["phase"] == "Degraded" or state["aborted"]:
        return "degraded"
    if state["paused"] and state["updated"] >= 1:
        return "paused"
    if state["phase"] == "Healthy" and state["canary_hash"] == state["stable_hash"]:
        return "healthy"
    return None


def public(state):
    return {k: state[k] for k in ("phase", "message", "canary_hash", "stable_hash", "paused")}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            namespace=dict(type="str", required=True),
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["settled", "promoted", "aborted"], default="settled"),
            workload_generation=dict(type="int"),
            timeout=dict(type="int", default=300),
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not k8s.HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(k8s.KUBERNETES_IMPORT_ERROR))
    p = module.params
    api = k8s.custom_objects_api(p["kubeconfig"], p["context"])
    where = f"Rollout {p['namespace']}/{p['name']}"

    def get():
        return api.get_namespaced_custom_object(GROUP, VERSION, p["namespace"], PLURAL, p["name"])

    def read():
        return summary(get())

    def referenced_generation():
        ref = (get().get("spec") or {}).get("workloadRef") or {}
        if ref.get("kind") != "Deployment" or not ref.get("name"):
            return None
        # apps/v1 is served under /apis like any group, so the custom objects client reads the Deployment too.
        deployment = api.get_namespaced_custom_object("apps", "v1", p["namespace"], "deployments", ref["name"])
        return int(deployment["metadata"]["generation"])

    def patch_status(body):
        api.patch_namespaced_custom_object_status(GROUP, VERSION, p["namespace"], PLURAL, p["name"], body)

    def wait(done, what):
        deadline = time.monotonic() + p["timeout"]
        while True:
            state = read()
            if done(state):
                return state
            if time.monotonic() >= deadline:
                if not state["phase"]:
                    module.fail_json(msg=f"{where} has no status after {p['timeout']} s: no Argo Rollouts controller reconciles it."
                                         f" Is the controller running, and watching namespace {p['namespace']}?", **public(state))
                module.fail_json(
                    msg=f"{where} did not {what} within {p['timeout']} s: phase {state['phase'] or 'unknown'}"
                        f"{', ' + state['message'] if state['message'] else ''}; {state['updated']} pods of the newest template,"
                        f" {state['available']} available", **public(state))
            time.sleep(POLL_SECONDS)

    if p["state"] == "settled":
        generation = p["workload_generation"] if p["workload_generation"] is not None else referenced_generation()
        state = wait(lambda s: settled(s, generation) is not None, "settle (Healthy, or paused at its canary step)")
        if settled(state, generation) == "degraded":
            module.fail_json(msg=f"{where} is {'aborted' if state['aborted'] else 'Degraded'}: {state['message'] or 'no message'}",
                             **public(state))
        module.exit_json(changed=False, **public(state))

    state = read()
    if p["state"] == "promoted":
        if not state["paused"]:
            if state["phase"] == "Healthy" and state["canary_hash"] == state["stable_hash"]:
                module.exit_json(changed=False, **public(state))
            module.fail_json(msg=f"{where} is not paused at a canary step (phase {state['phase']}): nothing to promote", **public(state))
        if module.check_mode:
            module.exit_json(changed=True, **public(state))
        patch_status({"status": {"pauseConditions": None}})
        target = state["canary_hash"]
        state = wait(lambda s: s["phase"] == "Healthy" and s["stable_hash"] == target, f"become Healthy on {target}")
        module.exit_json(changed=True, **public(state))

    # aborted
    if state["canary_hash"] == state["stable_hash"]:
        module.exit_json(changed=False, **public(state))
    if module.check_mode:
        module.exit_json(changed=True, **public(state))
    if not state["aborted"]:
        patch_status({"status": {"abort": True}})
    state = wait(lambda s: s["aborted"] and s["updated"] == 0 or s["canary_hash"] == s["stable_hash"], "scale its canary down")
    module.exit_json(changed=True, **public(state))


if __name__ == "__main__":
    main()
