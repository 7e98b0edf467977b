"""Writes the kwokctl configuration of the local test cluster.

kwokctl replaces its default Stages as soon as a configuration names any
Stage, so this copies kwok's own defaults (from the kwok module that built
kwokctl, so they always match its version) and adds what our tests need:

* pods labelled ``localenv.langfuse-ops.io/never-ready`` start but never turn
  Ready (failed-rollout tests); the default pod-ready Stage skips them;
* PVCs of the ``standard`` StorageClass get a bound PV (StatefulSets with
  volumeClaimTemplates become Ready), using kwok's volume Stages;
* pods labelled ``localenv.langfuse-ops.io/job-runner`` are left alone by
  every pod Stage but pod-delete: tests/localenv/job_runner.py runs their
  containers for real and writes their status itself. kwok serves `kubectl
  logs` for them from the runner's files through per-pod ``Logs`` objects
  (the Logs CRD is enabled for that; nothing else uses it).

It also sends port-forwards to pods on to real local servers, so the
collection's port-forward paths run for real:
* Langfuse ports (web 3000, worker 3030) -> the stand-in Langfuse server
  (tests/standins/langfuse_web.py);
* ClickHouse ports (http 8123, native 9000) -> the local ClickHouse server;
* PostgreSQL port 5432 -> the local PostgreSQL server.

Usage: kwok_config.py KWOK_STAGE_DIR KUBE_VERSION BINDIR_JSON FORWARDS_JSON OUT
  FORWARDS_JSON: {"standin_web": port, "clickhouse_http": port, "clickhouse_tcp": port, "postgres": port}
"""
import copy
import json
import sys

import yaml

NEVER_READY_LABEL = "localenv.langfuse-ops.io/never-ready"
# Set at admission (job_runner.py's MutatingAdmissionPolicy) on the Job pods the runner runs.
JOB_RUNNER_LABEL = "localenv.langfuse-ops.io/job-runner"
NOT_FOR_THE_RUNNER = {"cel": {"expression": f"!has(self.metadata.labels) || !('{JOB_RUNNER_LABEL}' in self.metadata.labels)"}}
# The Stages that would start or complete a pod: the runner's pods skip them.
RUNNER_SKIPS = ("pod-ready", "pod-complete", "pod-never-ready")
STORAGE_CLASS = "standard"

DEFAULT_STAGES = [
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
    "volume/fast/pvc-provision.yaml",
    "volume/fast/pv-bind.yaml",
    "volume/fast/pvc-delete.yaml",
    "volume/fast/pv-delete.yaml",
]

NEVER_READY_STAGE = {
    "apiVersion": "kwok.x-k8s.io/v1alpha1",
    "kind": "Stage",
    "metadata": {"name": "pod-never-ready"},
    "spec": {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {
            "matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                {"cel": {"expression": f"has(self.metadata.labels) && '{NEVER_READY_LABEL}' in self.metadata.labels"}},
                NOT_FOR_THE_RUNNER,
            ]
        },
        "next": {
            "statusTemplate": """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""
        },
    },
}


def load_stage(stage_dir, rel):
    with open(f"{stage_dir}/{rel}") as f:
        stage = yaml.safe_load(f)
    exprs = stage["spec"].get("selector", {}).get("matchExpressions", [])
    name = stage["metadata"]["name"]
    if name == "pod-ready":
        exprs.append({"cel": {"expression": f"!has(self.metadata.labels) || !('{NEVER_READY_LABEL}' in self.metadata.labels)"}})
    if name in RUNNER_SKIPS:
        exprs.append(copy.deepcopy(NOT_FOR_THE_RUNNER))
    for expr in exprs:
        cel = expr.get("cel", {})
        if "kwok-volume" in cel.get("expression", ""):
            cel["expression"] = cel["expression"].replace("'kwok-volume'", f"'{STORAGE_CLASS}'")
    return stage


def port_forward(forwards):
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterPortForward",
        "metadata": {"name": "local-servers"},
        "spec": {
            "forwards": [
                {"ports": [3000, 3030], "target": {"address": "127.0.0.1", "port": int(forwards["standin_web"])}},
                {"ports": [8123], "target": {"address": "127.0.0.1", "port": int(forwards["clickhouse_http"])}},
                {"ports": [9000], "target": {"address": "127.0.0.1", "port": int(forwards["clickhouse_tcp"])}},
                {"ports": [5432], "target": {"address": "127.0.0.1", "port": int(forwards["postgres"])}},
            ],
        },
    }


def main(stage_dir, kube_version, binaries_json, forwards_json, out):
    binaries = json.loads(binaries_json)
    kwokctl = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            "runtime": "binary",
            "kubeVersion": kube_version,
            # Everything listens on loopback only (kwokctl's default is 0.0.0.0).
            "bindAddress": "127.0.0.1",
            # Per-pod Logs objects: the job runner points `kubectl logs` at its log files.
            "enableCRDs": ["Logs"],
            **binaries,
        },
    }
    docs = [kwokctl] + [load_stage(stage_dir, rel) for rel in DEFAULT_STAGES] + [NEVER_READY_STAGE, port_forward(json.loads(forwards_json))]
    with open(out, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
