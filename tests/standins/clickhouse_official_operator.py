"""Stand-in for the reconciler of the official ClickHouse operator (ClickHouse/clickhouse-operator).

KWOK runs no containers, so the operator's manager Deployment starts no operator. This loop plays its
reconciler for KeeperCluster and ClickHouseCluster (clickhouse.com/v1alpha1) in every namespace, with the
names, labels and status fields of the real operator (read in its source, commit 581494e3f6c1, Feb 2026):

* Acts only while a Ready manager Deployment exists (labels app.kubernetes.io/name=clickhouse-operator and
  control-plane=controller-manager, as dist/chart/templates/manager/manager.yaml sets them).
* Names (api/v1alpha1/*_types.go): KeeperCluster <name>: StatefulSets <name>-keeper-<i>, headless Service
  <name>-keeper-headless (raft-ipc 9234, keeper 2181), PodDisruptionBudget <name>-keeper.
  ClickHouseCluster <name>: StatefulSets <name>-clickhouse-<shard>-<replica>, headless Service
  <name>-clickhouse-headless (http 8123, tcp 9000, interserver 9009, management 9001, prometheus 9363),
  PodDisruptionBudget <name>-clickhouse-<shard>. Dots in the name become dashes. Every StatefulSet has 1
  replica, ParallelPodManagement, the CR's containerTemplate (image repository:tag, resources), its
  dataVolumeClaimSpec as volume clickhouse-storage-volume, and the labels of internal/controller/*/templates.go
  (app=<specific name>, clickhouse.com/role, app.kubernetes.io/name|instance, shard/replica ids, the CR's
  spec.labels). The ClickHouse container reads the default user's password from the Secret named in
  settings.defaultUserPassword (env CLICKHOUSE_DEFAULT_USER_PASSWORD). All owned by the CR.
* Status (internal/controller/*/sync.go reconcileClusterRevisions / reconcileConditions): observedGeneration,
  updateRevision (hash of the spec), readyReplicas, currentRevision = updateRevision once every replica is
  updated and the size matches, and metav1 conditions SpecValid, ReconcileSucceeded, ReplicaStartupSucceeded,
  Healthy, ClusterSizeAligned, ConfigurationInSync and Ready, each with the CR's generation as
  observedGeneration. ClickHouse Ready: every shard has a Ready replica (AllShardsReady / SomeShardsNotReady).
  Keeper Ready: StandaloneReady with one replica, ClusterReady with a quorum of Ready replicas, else NoLeader
  or NotEnoughFollowers (the real operator asks each Keeper for its mode; here a Ready pod is a member).
* SpecValid False (reason SpecInvalid, the webhook's message) for a defaultUserPassword with not exactly one
  of secret/configMap, and for a ClickHouseCluster whose keeperClusterRef names no KeeperCluster; nothing is
  created then. The annotation localenv.langfuse-ops.io/fail-reconcile: "true" makes ReconcileSucceeded False
  (ReconcileStepFailed) with Ready unchanged, as a failed step does.
* Not played: ConfigMaps, Secrets, the cluster secret, TLS, schema sync (SchemaInSync), Keeper quorum changes
  one at a time, webhooks, the management queries to ClickHouse.

Usage: clickhouse_official_operator.py (KUBECONFIG names the cluster)
"""
import copy
import datetime
import hashlib
import json
import math
import os
import signal
import sys
import threading

from kubernetes.client.rest import ApiException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from standin_kube import forget_said, log, reconcile_forever, say_once  # noqa: E402

GROUP, VERSION = "clickhouse.com", "v1alpha1"
FAIL_ANNOTATION = "localenv.langfuse-ops.io/fail-reconcile"
HASH_ANNOTATION = "localenv.langfuse-ops.io/desired-hash"
POLL_SECONDS = 1.0
TIMEOUT = (3, 15)
STOP = threading.Event()
API = None


def digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kind:
    def __init__(self, **kw):
        self.__dict__.update(kw)


KEEPER = Kind(kind="KeeperCluster", plural="keeperclusters", suffix="keeper", role="clickhouse-keeper",
              container="clickhouse-keeper",
              ports=[("keeper", 2181), ("prometheus", 9090), ("raft-ipc", 9234)])
CLICKHOUSE = Kind(kind="ClickHouseCluster", plural="clickhouseclusters", suffix="clickhouse", role="clickhouse-server",
                  container="clickhouse-server",
                  ports=[("http", 8123), ("interserver", 9009), ("management", 9001), ("prometheus", 9363),
                         ("tcp", 9000)])


def specific(kind, cr):
    return cr["metadata"]["name"].replace(".", "-") + "-" + kind.suffix


def replicas_of(cr, key="replicas", default=3):
    value = cr["spec"].get(key)
    return default if value is None else int(value)


def replica_ids(kind, cr):
    """[(sts name, id labels)] in the operator's order."""
    name = specific(kind, cr)
    if kind is KEEPER:
        return [(f"{name}-{i}", {"clickhouse.com/keeper-replica-id": str(i)}) for i in range(replicas_of(cr))]
    return [(f"{name}-{s}-{r}", {"clickhouse.com/shard-id": str(s), "clickhouse.com/replica-id": str(r)})
            for s in range(replicas_of(cr, "shards", 1)) for r in range(replicas_of(cr))]


def owner(kind, cr):
    return [{"apiVersion": f"{GROUP}/{VERSION}", "kind": kind.kind, "name": cr["metadata"]["name"],
             "uid": cr["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def meta(kind, cr, name, labels):
    return {"name": name, "namespace": cr["metadata"]["namespace"], "ownerReferences": owner(kind, cr),
            "labels": {**(cr["spec"].get("labels") or {}), **labels},
            "annotations": dict(cr["spec"].get("annotations") or {})}


def desired_service(kind, cr):
    app = specific(kind, cr)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(kind, cr, f"{app}-headless", {"app": app}),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"app": app},
                     "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in kind.ports]}}


def desired_pdbs(kind, cr):
    app = specific(kind, cr)
    if kind is KEEPER:
        return [{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(kind, cr, app, {"app": app}),
                 "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": app}}}}]
    return [{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
             "metadata": meta(kind, cr, f"{app}-{s}", {"app": app, "clickhouse.com/shard-id": str(s)}),
             "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app, "clickhouse.com/shard-id": str(s)}}}}
            for s in range(replicas_of(cr, "shards", 1))]


def desired_statefulset(kind, cr, name, id_labels):
    app = specific(kind, cr)
    spec = cr["spec"]
    container_spec = spec.get("containerTemplate") or {}
    image = container_spec.get("image") or {}
    labels = {**(spec.get("labels") or {}), **id_labels, "app": app, "app.kubernetes.io/instance": app,
              "clickhouse.com/role": kind.role, "app.kubernetes.io/name": kind.role}
    env = list(container_spec.get("env") or [])
    password = (spec.get("settings") or {}).get("defaultUserPassword") or {}
    if kind is CLICKHOUSE and password.get("secret"):
        env.append({"name": "CLICKHOUSE_DEFAULT_USER_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": password["secret"]["name"], "key": password["secret"]["key"]}}})
    container = {"name": kind.container,
                 "image": f"{image.get('repository') or 'clickhouse/' + kind.container}:{image.get('tag') or 'latest'}",
                 "imagePullPolicy": container_spec.get("imagePullPolicy") or "IfNotPresent",
                 "resources": container_spec.get("resources") or {},
                 "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in kind.ports],
                 "env": env}
    pod = spec.get("podTemplate") or {}
    pod_spec = {"containers": [container], "restartPolicy": "Always"}
    for key in ("topologySpreadConstraints", "nodeSelector", "affinity", "tolerations", "securityContext",
                "serviceAccountName", "terminationGracePeriodSeconds"):
        if pod.get(key) is not None:
            pod_spec[key] = pod[key]
    sts_spec = {"replicas": 1, "serviceName": f"{app}-headless", "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {**id_labels, "app": app}},
                "template": {"metadata": {"labels": labels,
                                          "annotations": {"kubectl.kubernetes.io/default-container": kind.container}},
                             "spec": pod_spec}}
    if spec.get("dataVolumeClaimSpec"):
        claim = copy.deepcopy(spec["dataVolumeClaimSpec"])
        claim.setdefault("accessModes", ["ReadWriteOnce"])
        container["volumeMounts"] = [{"name": "clickhouse-storage-volume", "mountPath": "/var/lib/clickhouse"}]
        sts_spec["volumeClaimTemplates"] = [{"metadata": {"name": "clickhouse-storage-volume", "labels": labels},
                                             "spec": claim}]
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(kind, cr, name, labels), "spec": sts_spec}


def _ops(obj):
    ns, kind = obj["metadata"]["namespace"], obj["kind"]
    api = {"StatefulSet": (API.apps, "stateful_set"), "Service": (API.core, "service"),
           "PodDisruptionBudget": (API.policy, "pod_disruption_budget")}[kind]
    return (lambda n: getattr(api[0], f"read_namespaced_{api[1]}")(n, ns, _request_timeout=TIMEOUT),
            lambda b: getattr(api[0], f"create_namespaced_{api[1]}")(ns, b, _request_timeout=TIMEOUT),
            lambda n, b: getattr(api[0], f"replace_namespaced_{api[1]}")(n, ns, b, _request_timeout=TIMEOUT),
            lambda n: getattr(api[0], f"delete_namespaced_{api[1]}")(n, ns, _request_timeout=TIMEOUT))


def ensure(obj):
    """Creates obj, or replaces it when what the stand-in wants of it changed (hash annotation)."""
    obj["metadata"]["annotations"][HASH_ANNOTATION] = digest(obj)
    read, create, replace, delete = _ops(obj)
    name = obj["metadata"]["name"]
    try:
        cur = read(name)
    except ApiException as e:
        if e.status != 404:
            raise
        create(obj)
        return
    if (cur.metadata.annotations or {}).get(HASH_ANNOTATION) == obj["metadata"]["annotations"][HASH_ANNOTATION]:
        return
    body = copy.deepcopy(obj)
    body["metadata"]["resourceVersion"] = cur.metadata.resource_version
    if obj["kind"] == "Service":
        body["spec"]["clusterIP"] = cur.spec.cluster_ip
    try:
        replace(name, body)
    except ApiException as e:
        if e.status != 422 or obj["kind"] != "StatefulSet":
            raise
        log(f"{obj['metadata']['namespace']}/{name}: StatefulSet cannot be updated in place, recreating")
        delete(name)


def spec_problem(kind, cr):
    """What the operator's webhook / reconciler would refuse, or None."""
    if kind is KEEPER:
        if replicas_of(cr) not in (0, 1, 3, 5, 7, 9, 11, 13, 15):
            return "replicas must be an odd number up to 15"
        return None
    password = (cr["spec"].get("settings") or {}).get("defaultUserPassword")
    if password is not None and (("secret" in password) == ("configMap" in password)):
        return "exactly one of secret or configMap must be specified"
    ref = (cr["spec"].get("keeperClusterRef") or {}).get("name")
    try:
        API.custom.get_namespaced_custom_object(GROUP, VERSION, cr["metadata"]["namespace"], KEEPER.plural, ref,
                                                _request_timeout=TIMEOUT)
    except ApiException as e:
        if e.status == 404:
            return f"keeper cluster {ref!r} not found"
        raise
    return None


def replica_state(ns, name):
    """(exists, updated, ready) of a replica's StatefulSet, as the operator's Updated()/Ready() read them."""
    try:
        sts = API.apps.read_namespaced_stateful_set(name, ns, _request_timeout=TIMEOUT)
    except ApiException as e:
        if e.status != 404:
            raise
        return False, False, False
    st = sts.status
    updated = st.observed_generation == sts.metadata.generation and st.update_revision == st.current_revision
    return True, updated, (st.ready_replicas or 0) == 1


def condition(old, ctype, status, reason, message, generation):
    prev = next((c for c in old if c.get("type") == ctype), None)
    changed = prev is None or prev.get("status") != status
    return {"type": ctype, "status": status, "reason": reason, "message": message, "observedGeneration": generation,
            "lastTransitionTime": now() if changed else prev.get("lastTransitionTime")}


def reconcile(kind, cr):
    ns, name, generation = cr["metadata"]["namespace"], cr["metadata"]["name"], cr["metadata"]["generation"]
    key = f"{kind.plural} {ns}/{name}"
    old = cr.get("status") or {}
    old_conditions = old.get("conditions") or []
    status = {**old, "observedGeneration": generation, "updateRevision": digest(cr["spec"])}
    status.setdefault("readyReplicas", 0)
    conditions = {c["type"]: c for c in old_conditions}

    def put(ctype, state, reason, message=""):
        conditions[ctype] = condition(old_conditions, ctype, state, reason, message, generation)

    problem = spec_problem(kind, cr)
    if problem:
        put("SpecValid", "False", "SpecInvalid", problem)
        say_once(key, f"{key}: spec invalid: {problem}")
    else:
        put("SpecValid", "True", "SpecValid")
        wanted = replica_ids(kind, cr)
        ensure(desired_service(kind, cr))
        for pdb in desired_pdbs(kind, cr):
            ensure(pdb)
        for sts_name, id_labels in wanted:
            ensure(desired_statefulset(kind, cr, sts_name, id_labels))
        selector = f"app={specific(kind, cr)},clickhouse.com/role={kind.role}"
        for sts in API.apps.list_namespaced_stateful_set(ns, label_selector=selector, _request_timeout=TIMEOUT).items:
            if sts.metadata.name not in {w[0] for w in wanted}:
                log(f"{key}: scaling down, deleting StatefulSet {sts.metadata.name}")
                API.apps.delete_namespaced_stateful_set(sts.metadata.name, ns, _request_timeout=TIMEOUT)
        states = {w[0]: replica_state(ns, w[0]) for w in wanted}
        ready = [n for n, s in states.items() if s[2]]
        not_ready = [n for n, s in states.items() if not s[2]]
        not_updated = [n for n, s in states.items() if not (s[0] and s[1])]
        status["readyReplicas"] = len(ready)
        failing = str((cr["metadata"].get("annotations") or {}).get(FAIL_ANNOTATION, "")).lower() == "true"
        if failing:
            put("ReconcileSucceeded", "False", "ReconcileStepFailed", "stand-in: annotation " + FAIL_ANNOTATION)
        else:
            put("ReconcileSucceeded", "True", "ReconcileFinished")
        put("ReplicaStartupSucceeded", "True", "ReplicasRunning")
        if not_ready:
            put("Healthy", "False", "ReplicasNotReady", f"Not ready replicas: {not_ready}")
        else:
            put("Healthy", "True", "ReplicasReady")
        if not_updated:
            put("ConfigurationInSync", "False", "ConfigurationChanged", f"Replicas has pending updates: {not_updated}")
        else:
            put("ConfigurationInSync", "True", "UpToDate")
        exists = sum(1 for state in states.values() if state[0])
        if exists < len(wanted):
            put("ClusterSizeAligned", "False", "ScalingUp", "Cluster has less replicas than requested")
        else:
            put("ClusterSizeAligned", "True", "UpToDate")
        if not not_updated and exists == len(wanted):
            status["currentRevision"] = status["updateRevision"]
        if not failing:
            if kind is CLICKHOUSE:
                shards = {}
                for (sts_name, id_labels) in wanted:
                    shards.setdefault(id_labels["clickhouse.com/shard-id"], []).append(states[sts_name][2])
                bad = sorted(int(s) for s, r in shards.items() if not any(r))
                if bad:
                    put("Ready", "False", "SomeShardsNotReady", f"Not Ready shards: {bad}")
                else:
                    put("Ready", "True", "AllShardsReady", "All shards are ready")
            else:
                total = len(wanted)
                if total == 1 and ready:
                    put("Ready", "True", "StandaloneReady", "Standalone Keeper is ready")
                elif not ready:
                    put("Ready", "False", "NoLeader", "No replicas" if total == 0 else "No leader in the cluster")
                elif len(ready) - 1 < math.ceil(total / 2) - 1:
                    put("Ready", "False", "NotEnoughFollowers",
                        f"Not enough followers in cluster: {len(ready) - 1}/{math.ceil(total / 2) - 1}")
                else:
                    put("Ready", "True", "ClusterReady", "Cluster is ready")
    status["conditions"] = sorted(conditions.values(), key=lambda c: c["type"])
    if status != old:
        body = copy.deepcopy(cr)
        body["status"] = status
        API.custom.replace_namespaced_custom_object_status(GROUP, VERSION, ns, kind.plural, name, body,
                                                           _request_timeout=TIMEOUT)
        ready_cond = conditions.get("Ready", {})
        say_once(key, f"{key}: generation {generation}, readyReplicas {status['readyReplicas']}, "
                      f"Ready {ready_cond.get('status', '-')} ({ready_cond.get('reason', '-')})")


def operator_ready():
    deps = API.apps.list_deployment_for_all_namespaces(
        label_selector="app.kubernetes.io/name=clickhouse-operator,control-plane=controller-manager",
        _request_timeout=TIMEOUT).items
    return any((d.status.ready_replicas or 0) > 0 for d in deps)


def poll_once():
    if not operator_ready():
        say_once("operator", "waiting for a Ready clickhouse-operator manager Deployment")
        return
    say_once("operator", "clickhouse-operator manager Deployment Ready: reconciling")
    for kind in (KEEPER, CLICKHOUSE):
        try:
            items = API.custom.list_cluster_custom_object(GROUP, VERSION, kind.plural, _request_timeout=TIMEOUT)["items"]
        except ApiException as e:
            if e.status == 404:
                say_once(kind.plural, f"CRD {kind.plural}.{GROUP} not installed yet")
                continue
            raise
        say_once(kind.plural, f"CRD {kind.plural}.{GROUP} found")
        for cr in items:
            if cr["metadata"].get("deletionTimestamp"):
                continue
            key = f"{kind.plural} {cr['metadata']['namespace']}/{cr['metadata']['name']}"
            try:
                reconcile(kind, cr)
                forget_said(key + " error")
            except ApiException as e:
                if e.status in (404, 409):
                    continue  # deleted or changed meanwhile: the next poll sees the new state
                say_once(key + " error", f"{key}: API error {e.status}: {e.reason}; retrying")


def stop(*_args):
    STOP.set()


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"stand-in official clickhouse-operator reconciler started (pid {os.getpid()})")
    reconcile_forever(globals(), poll_once, STOP, POLL_SECONDS)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
