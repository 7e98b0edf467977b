#!/usr/bin/python
# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: langfuse_health
short_description: Check Langfuse's health endpoint and the version it reports
description:
  - Calls C(/api/public/health) of a Ready Langfuse web pod through the Kubernetes API server's port-forward
    (so the controller needs no route to the pods), or at O(url) when given.
  - With O(component=worker), calls the worker's C(/api/health) on port 3030 instead. The worker reports no version,
    so O(expected_version) is then checked against the image tag of the Ready pod that answered.
  - Retries until the endpoint answers C(status=OK) and, with O(expected_version), reports that version.
  - With O(observe_seconds), keeps calling the pod that first passed for that long, every O(delay) seconds, and fails
    when more than O(max_error_ratio) of those calls fail (not Ready, no answer, not OK, another version) or the pod
    restarted meanwhile. The upgrade's canary uses this to watch its one pod.
  - Read-only; runs the same in check mode.
version_added: 0.1.0
author: langfuse_ops.platform maintainers (@langfuse-ops)
extends_documentation_fragment:
  - langfuse_ops.platform.k8s_read_only
options:
  namespace:
    description: Namespace of the Langfuse release.
    type: str
    default: langfuse
  release_name:
    description: Helm release name; selects the pods by C(app.kubernetes.io/instance).
    type: str
    default: langfuse
  component:
    description: Which pods to check.
    type: str
    choices: [web, worker]
    default: web
  port:
    description: The container's port; 3000 for web, 3030 for the worker when omitted.
    type: int
  path:
    description: Health path; C(/api/public/health) for web, C(/api/health) for the worker when omitted.
    type: str
  selector:
    description: More labels the pods must carry (a label selector, ANDed with the release's and the component's).
    type: str
  observe_seconds:
    description: After the first pass, keep calling the same pod for this many seconds (port-forward mode only).
    type: int
    default: 0
  max_error_ratio:
    description: Highest share of failed calls tolerated over O(observe_seconds).
    type: float
    default: 0.0
  url:
    description: Call this URL (e.g. the public https URL) instead of a pod through port-forward.
    type: str
  expected_version:
    description: Fail unless the endpoint reports this version.
    type: str
  retries:
    description: How many times to try before failing.
    type: int
    default: 30
  delay:
    description: Seconds between tries.
    type: int
    default: 5
  validate_certs:
    description: Verify TLS certificates when O(url) is https.
    type: bool
    default: true
requirements:
  - kubernetes (Python)
"""

EXAMPLES = r"""
- name: Confirm Langfuse 3.224.1 is serving
  langfuse_ops.platform.langfuse_health:
    namespace: langfuse
    release_name: langfuse
    expected_version: 3.224.1
"""

RETURN = r"""
status:
  description: The C(status) the endpoint reported.
  returned: success
  type: str
  sample: OK
version:
  description: The C(version) the web endpoint reported; for the worker, the image tag of the pod that answered.
  returned: success
  type: str
  sample: 3.224.1
pod:
  description: The web pod that answered (port-forward mode).
  returned: port-forward mode
  type: str
attempts:
  description: How many tries it took.
  returned: always
  type: int
probes:
  description: The calls made over O(observe_seconds), with how many failed and why.
  returned: when O(observe_seconds) is set
  type: dict
  sample: {calls: 24, failed: 0, restarts: 0, errors: []}
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.urls import open_url

from ansible_collections.langfuse_ops.platform.plugins.module_utils import k8s_portforward as pf


def selector_of(params):
    selector = f"app.kubernetes.io/name=langfuse,app.kubernetes.io/instance={params['release_name']},app={params['component']}"
    return selector + ("," + params["selector"] if params["selector"] else "")


def check_once(module, api, only_pod=None):
    """(status, version, pod) of one call; with only_pod, that pod must still be Ready and answer."""
    params = module.params
    if params["url"]:
        response = open_url(params["url"].rstrip("/") + params["path"], validate_certs=params["validate_certs"], timeout=10)
        status, version = pf.parse_health(response.read().decode())
        return status, version, None
    component = params["component"]
    selector = selector_of(params)
    pods = pf.ready_pods(api, params["namespace"], selector)
    if only_pod is not None:
        if only_pod not in pods:
            raise ConnectionError(f"{only_pod} is not Ready")
        pods = [only_pod]
    if not pods:
        raise ConnectionError(f"no Ready {component} pod in namespace {params['namespace']} (selector {selector})")
    code, body = pf.http_get(api, params["namespace"], pods[0], params["port"], params["path"])
    if code != 200:
        raise ConnectionError(f"{params['path']} on {pods[0]} answered HTTP {code}: {body[:200]}")
    status, version = pf.parse_health(body)
    if component == "worker":
        pod = api.read_namespaced_pod(pods[0], params["namespace"])
        version = pod.spec.containers[0].image.rsplit(":", 1)[-1]
    return status, version, pods[0]


def problem(params, status, version):
    if str(status).upper() != "OK":
        return f"status is {status!r}"
    if params["expected_version"] and version != params["expected_version"]:
        return f"it reports version {version}, not {params['expected_version']}"
    return None


def restarts(api, namespace, pod):
    statuses = api.read_namespaced_pod(pod, namespace).status.container_statuses or []
    return sum(s.restart_count or 0 for s in statuses)


def observe(module, api, pod):
    """Calls pod every delay seconds for observe_seconds; returns the tally."""
    params = module.params
    tally = {"calls": 0, "failed": 0, "restarts": 0, "errors": []}
    restarts_before = restarts(api, params["namespace"], pod)
    deadline = time.monotonic() + params["observe_seconds"]
    while True:
        time.sleep(params["delay"])
        tally["calls"] += 1
        try:
            error = problem(params, *check_once(module, api, only_pod=pod)[:2])
        except Exception as exc:  # pylint: disable=broad-exception-caught
            error = str(exc)
        if error:
            tally["failed"] += 1
            if len(tally["errors"]) < 5:
                tally["errors"].append(error)
        if time.monotonic() >= deadline:
            break
    try:
        tally["restarts"] = restarts(api, params["namespace"], pod) - restarts_before
    except Exception as exc:  # pylint: disable=broad-exception-caught
        tally["restarts"] = -1
        tally["errors"].append(f"could not read {pod}: {exc}")
    return tally


def main():
    module = AnsibleModule(
        argument_spec=dict(
            namespace=dict(type="str", default="langfuse"),
            release_name=dict(type="str", default="langfuse"),
            component=dict(type="str", choices=["web", "worker"], default="web"),
            port=dict(type="int"),
            path=dict(type="str"),
            url=dict(type="str"),
            selector=dict(type="str"),
            observe_seconds=dict(type="int", default=0),
            max_error_ratio=dict(type="float", default=0.0),
            expected_version=dict(type="str"),
            retries=dict(type="int", default=30),
            delay=dict(type="int", default=5),
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    worker = params["component"] == "worker"
    params["port"] = params["port"] or (3030 if worker else 3000)
    params["path"] = params["path"] or ("/api/health" if worker else "/api/public/health")
    api = None
    if not params["url"]:
        if not pf.HAS_KUBERNETES:
            module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(pf.KUBERNETES_IMPORT_ERROR))
        api = pf.core_api(params["kubeconfig"], params["context"])

    if params["observe_seconds"] and params["url"]:
        module.fail_json(msg="observe_seconds watches one pod through port-forward; it cannot be combined with url")

    last = "no answer yet"
    for attempt in range(1, max(params["retries"], 1) + 1):
        try:
            status, version, pod = check_once(module, api)
            last = problem(params, status, version)
            if last is None:
                result = dict(changed=False, status=status, version=version, pod=pod, attempts=attempt)
                if params["observe_seconds"]:
                    tally = observe(module, api, pod)
                    result["probes"] = tally
                    if tally["restarts"] != 0 or tally["failed"] > params["max_error_ratio"] * tally["calls"]:
                        module.fail_json(
                            msg=f"{pod} failed {tally['failed']} of {tally['calls']} health calls over {params['observe_seconds']} s"
                                f" (allowed: {params['max_error_ratio']:.0%}) and restarted {tally['restarts']} times"
                                + (f"; first errors: {'; '.join(tally['errors'])}" if tally["errors"] else ""),
                            **result)
                module.exit_json(**result)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            last = str(exc)
        if attempt < params["retries"]:
            time.sleep(params["delay"])
    module.fail_json(
        msg=f"Langfuse's health check did not pass after {params['retries']} tries: {last}. "
            f"Look at the web pods: kubectl -n {params['namespace']} get pods -l app=web; kubectl -n {params['namespace']} logs -l app=web",
        attempts=params["retries"],
    )


if __name__ == "__main__":
    main()
