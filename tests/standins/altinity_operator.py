"""Stand-in for the Altinity clickhouse-operator 0.25.6 reconciler.

KWOK runs no containers, so the operator Deployment of the stand-in chart
(tests/standins/charts/altinity-clickhouse-operator-0.25.6) starts no
operator. This loop plays its reconciler for ClickHouseInstallation (CHI) and
ClickHouseKeeperInstallation (CHK) objects in every namespace, creating the
objects and writing the status the way the real operator 0.25.6 does
(checked against its source, tag release-0.25.6):

* Acts only while a Ready operator Deployment exists (label
  app.kubernetes.io/name=altinity-clickhouse-operator, or an
  .../clickhouse-operator image), in the namespaces its config.yaml (the
  chart's configs.files."config.yaml", read from its -files ConfigMap) lists
  in watch.namespaces (empty: all); an operator that lists a namespace wins
  over one that watches all. No operator, no reconcile.
* Reconciles when a CR's generation changes and its normalized spec differs
  from the last completed one (CHI: ConfigMap chi-storage-<chi>, key
  status-normalizedCompleted; CHK: status.normalizedCompleted). A changed
  spec.taskID is a change; an empty one becomes `auto-<uuid>` and is not.
  Annotation or status changes trigger nothing, as with the real operator.
* Per host (cluster x shard x replica): StatefulSet and headless Service
  `chi-<chi>-<cluster>-<shard>-<replica>` (CHK: `chk-<chk>-<cluster>-0-<replica>`),
  1 replica, the pod template / volumeClaimTemplates named by the CR's
  templates, the official labels (clickhouse.altinity.com/{namespace,app,chi,
  cluster,shard,replica,ready}; clickhouse-keeper.altinity.com/... for CHK,
  plus the CR's own labels), named ports (CHI tcp 9000, http 8123,
  interserver 9009; CHK zk 2181, raft 9444). CR Service `clickhouse-<chi>`
  (http 8123, tcp 9000) / `keeper-<chk>` (zk 2181, raft 9444), headless,
  selecting ready pods. PodDisruptionBudget `chi-<chi>-<cluster>`. All owned by
  the CR (controller ownerReference); PVCs keep a reclaimPolicy label and are
  deleted with their host or the CHI only when it is Delete (the default).
* Status, as the real operator writes it:
  - start: status InProgress, taskID = spec.taskID (CHI), taskID pushed to
    taskIDsStarted (newest first, max 10), counters reset, hosts/shards/
    clusters/pods/fqdns/endpoint(s), chop-version/-commit/-date/-ip;
  - per host: hostsAdded/hostsUpdated/hostsUnchanged, hostsCompleted grows;
  - end: status Completed, taskID pushed to taskIDsCompleted, and - as the
    real operator re-normalizes the CR for the final write - every hosts*
    counter back to 0, i.e. absent: a Completed status has no hostsCompleted.
  - CHK: the operator hard-codes an empty taskID, so status.taskID is never
    set and "" is what gets pushed to taskIDsStarted/taskIDsCompleted.
  - failure: status Aborted, error "FAILED to reconcile CR <ns>/<name>, err: ..."
    and the same message, timestamp-prefixed, pushed to errors; the taskID is
    pushed to taskIDsCompleted too. Causes here: the annotation
    `localenv.langfuse-ops.io/abort: "true"` on the CHI/CHK (seen at its next
    reconcile, i.e. the next spec change, or while one runs), or an updated
    StatefulSet not Ready within the operator's
    config.yaml reconcile.statefulSet.update.timeout (300 s; onFailure abort).
    A new StatefulSet that never gets Ready is, as in the real operator
    (create.onFailure: ignore), counted as done after that timeout and the
    reconcile still Completes.
  - CHI deletion: finalizer finalizer.clickhouseinstallation.altinity.com,
    status Terminating, PVCs with reclaimPolicy Delete removed, finalizer off.
* Not played: ClickHouse/Keeper config ConfigMaps (chi-<chi>-common-configd
  ...), host/cluster/shard service templates, spec.restart, hostTemplates,
  ClickHouseInstallationTemplates, the normalizer's defaults (the stored
  "normalized" CR is the spec as given plus taskID). Hosts are reconciled all
  at once, not one shard/replica after another.

Quiet and robust: waits while the API server is down or the CRDs are missing,
reloads the kubeconfig when it changes (cluster re-created), logs one line per
event to stdout, exits 0 on SIGTERM/SIGINT.

Usage: altinity_operator.py (KUBECONFIG names the cluster)
"""
import copy
import datetime
import hashlib
import json
import os
import signal
import sys
import threading
import time
import uuid

import yaml
from kubernetes.client.rest import ApiException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from standin_kube import forget_said, log, reconcile_forever, say_once  # noqa: E402

VERSION = "0.25.6"
COMMIT = "8d7dc3f"  # `git rev-parse --short` of tag release-0.25.6
BUILT_AT = "2025-12-11T09:53:05"
ABORT_ANNOTATION = "localenv.langfuse-ops.io/abort"
CHI_FINALIZER = "finalizer.clickhouseinstallation.altinity.com"
POLL_SECONDS = 1.0
MAX_IDS = 10  # taskIDsStarted / taskIDsCompleted / errors keep the newest 10
TIMEOUT = (3, 15)  # connect/read timeout of every API call
STOP = threading.Event()


class Kind:
    """What differs between the CHI and the CHK reconciler."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


CHI = Kind(
    kind="ClickHouseInstallation", group="clickhouse.altinity.com", plural="clickhouseinstallations",
    short="chi", prefix="chi", cr_service="clickhouse", label="clickhouse.altinity.com",
    host_ports=[("tcp", 9000), ("http", 8123), ("interserver", 9009)],
    cr_ports=[("http", 8123), ("tcp", 9000)],
    image="clickhouse/clickhouse-server:latest", container="clickhouse",
    data_path="/var/lib/clickhouse", log_path="/var/log/clickhouse-server",
    finalizer=CHI_FINALIZER, has_task_id=True, has_shards=True,
)
CHK = Kind(
    kind="ClickHouseKeeperInstallation", group="clickhouse-keeper.altinity.com", plural="clickhousekeeperinstallations",
    short="chk", prefix="chk", cr_service="keeper", label="clickhouse-keeper.altinity.com",
    host_ports=[("zk", 2181), ("raft", 9444)],
    cr_ports=[("zk", 2181), ("raft", 9444)],
    image="clickhouse/clickhouse-keeper:latest", container="clickhouse-keeper",
    data_path="/var/lib/clickhouse-keeper", log_path="/var/log/clickhouse-keeper",
    finalizer=None, has_task_id=False, has_shards=False,
)

TRUE_STRINGS = {"1", "true", "yes", "on", "enable", "enabled"}


def truthy(value):
    return str(value or "").strip().lower() in TRUE_STRINGS


def fingerprint(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:40]


API = None


def to_dict(obj):
    return API.core.api_client.sanitize_for_serialization(obj)


# --- operator presence -------------------------------------------------------

class Operator:
    """A Ready operator Deployment: its pod IP and the parts of its config.yaml the stand-in uses."""

    def __init__(self, ip, conf):
        self.ip = ip
        self.namespaces = set(((conf.get("watch") or {}).get("namespaces")) or []) or None  # None: all
        sts = ((conf.get("reconcile") or {}).get("statefulSet")) or {}
        self.timeout = float(((sts.get("update") or {}).get("timeout")) or 300)
        self.on_create_failure = str(((sts.get("create") or {}).get("onFailure")) or "ignore")
        self.on_update_failure = str(((sts.get("update") or {}).get("onFailure")) or "abort")

    def describe(self):
        where = "all namespaces" if self.namespaces is None else ", ".join(sorted(self.namespaces))
        return f"pod IP {self.ip or '-'}, watching {where}, StatefulSet timeout {self.timeout:.0f}s"


def find_operators():
    """The Ready operator Deployments of the cluster."""
    operators = []
    for dep in API.apps.list_deployment_for_all_namespaces(_request_timeout=TIMEOUT).items:
        labels = dep.metadata.labels or {}
        images = [c.image or "" for c in dep.spec.template.spec.containers]
        if labels.get("app.kubernetes.io/name") != "altinity-clickhouse-operator" and not any(
                i.split(":")[0].endswith("/clickhouse-operator") for i in images):
            continue
        if not (dep.status.ready_replicas or 0):
            continue
        selector = ",".join(f"{k}={v}" for k, v in (dep.spec.selector.match_labels or {}).items())
        pods = API.core.list_namespaced_pod(dep.metadata.namespace, label_selector=selector, _request_timeout=TIMEOUT).items
        ip = next((p.status.pod_ip for p in pods if p.status.pod_ip), "")
        operators.append(Operator(ip, operator_config(dep)))
    return operators


def operator_config(dep):
    """The Deployment's config.yaml, from the ConfigMap mounted at /etc/clickhouse-operator."""
    for volume in dep.spec.template.spec.volumes or []:
        if volume.name == "etc-clickhouse-operator-folder" and volume.config_map:
            try:
                cm = API.core.read_namespaced_config_map(volume.config_map.name, dep.metadata.namespace,
                                                         _request_timeout=TIMEOUT)
                return yaml.safe_load((cm.data or {}).get("config.yaml") or "") or {}
            except (ApiException, yaml.YAMLError):
                return {}
    return {}


def operator_for(operators, namespace):
    """The operator in charge of a namespace: one that lists it, else one that watches all."""
    return (next((o for o in operators if o.namespaces and namespace in o.namespaces), None)
            or next((o for o in operators if o.namespaces is None), None))


# --- the CR model ------------------------------------------------------------

class Host:
    def __init__(self, kind, cr, cluster, shard, replica, templates):
        self.kind, self.cr, self.cluster, self.shard, self.replica = kind, cr, cluster, shard, replica
        self.templates = templates
        name = cr["metadata"]["name"]
        self.cluster_name = cluster.get("name") or "cluster"
        self.sts = f"{kind.prefix}-{name}-{self.cluster_name}-{shard}-{replica}"
        self.namespace = cr["metadata"]["namespace"]

    @property
    def fqdn(self):
        return f"{self.sts}.{self.namespace}.svc.cluster.local"


def merged_templates(*sources):
    out = {}
    for source in sources:
        for key, value in ((source or {}).get("templates") or {}).items():
            if value:
                out[key] = value
    return out


def clusters_of(cr):
    return ((cr["spec"].get("configuration") or {}).get("clusters")) or [{"name": "cluster"}]


def hosts_of(kind, cr):
    spec = cr["spec"]
    hosts = []
    for cluster in clusters_of(cr):
        layout = cluster.get("layout") or {}
        shard_defs = layout.get("shards") or [] if kind.has_shards else []
        replica_defs = layout.get("replicas") or []
        shards = max(int(layout.get("shardsCount") or 0), len(shard_defs)) if kind.has_shards else 1
        for s in range(shards or 1):
            shard_def = shard_defs[s] if s < len(shard_defs) else {}
            shard = str(shard_def.get("name") or s)
            replicas = max(int(shard_def.get("replicasCount") or layout.get("replicasCount") or 0), len(replica_defs))
            for r in range(replicas or 1):
                replica_def = replica_defs[r] if r < len(replica_defs) else {}
                replica = str(replica_def.get("name") or r)
                templates = merged_templates(spec.get("defaults"), cluster, shard_def, replica_def)
                hosts.append(Host(kind, cr, cluster, shard, replica, templates))
    return hosts


def normalized_spec(cr, task_id):
    spec = copy.deepcopy(cr["spec"])
    spec["taskID"] = task_id
    return spec


def comparable(spec):
    """The spec as the action plan compares it: an auto taskID is no change."""
    spec = dict(spec or {})
    if not spec.get("taskID") or str(spec.get("taskID")).startswith("auto-"):
        spec.pop("taskID", None)
    return spec


def find_template(cr, section, name):
    for template in ((cr["spec"].get("templates") or {}).get(section)) or []:
        if template.get("name") == name:
            return template
    return None


def scope_labels(kind, cr, host=None, cluster=None):
    labels = {
        f"{kind.label}/namespace": cr["metadata"]["namespace"],
        f"{kind.label}/app": "chop",
        f"{kind.label}/{kind.short}": cr["metadata"]["name"],
    }
    if host is not None:
        labels[f"{kind.label}/cluster"] = host.cluster_name
        labels[f"{kind.label}/shard"] = host.shard
        labels[f"{kind.label}/replica"] = host.replica
    elif cluster is not None:
        labels[f"{kind.label}/cluster"] = cluster
    return labels


def with_cr_labels(cr, labels):
    """Scope labels plus the CR's own labels, which the operator copies onto everything."""
    return {**labels, **(cr["metadata"].get("labels") or {})}


def owner(kind, cr):
    return [{"apiVersion": f"{kind.group}/v1", "kind": kind.kind, "name": cr["metadata"]["name"],
             "uid": cr["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


# --- desired objects ---------------------------------------------------------

def desired_statefulset(kind, cr, host):
    spec = cr["spec"]
    template = find_template(cr, "podTemplates", host.templates.get("podTemplate")) or {}
    pod_spec = copy.deepcopy(template.get("spec") or {})
    containers = pod_spec.setdefault("containers", [])
    app = next((c for c in containers if c.get("name") == kind.container), None)
    if app is None and kind is CHI and containers:
        app = containers[0]
    if app is None:
        app = {"name": kind.container, "image": kind.image}
        if kind is CHK:
            app["env"] = [{"name": "CLICKHOUSE_DATA_DIR", "value": kind.data_path}]
        containers.insert(0, app)
    app.setdefault("image", kind.image)
    if kind is CHI:
        app.setdefault("livenessProbe", {"httpGet": {"path": "/ping", "port": "http"},
                                         "initialDelaySeconds": 60, "periodSeconds": 3, "failureThreshold": 10})
        app.setdefault("readinessProbe", {"httpGet": {"path": "/ping", "port": "http"},
                                          "initialDelaySeconds": 10, "periodSeconds": 3})
        env = app.setdefault("env", [])
        for var in user_secret_env(spec) + ([] if app.get("command") else [{"name": "CLICKHOUSE_SKIP_USER_SETUP", "value": "1"}]):
            if not any(e.get("name") == var["name"] for e in env):
                env.append(var)
    else:
        app.setdefault("livenessProbe", {"exec": {"command": ["bash", "-xc", keeper_liveness_script()]},
                                         "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 12})
        app.setdefault("readinessProbe", {"httpGet": {"path": "/ready", "port": 9182},
                                          "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 12})
    ports = app.setdefault("ports", [])
    for name, number in kind.host_ports:
        if not any(p.get("name") == name or p.get("containerPort") == number for p in ports):
            ports.append({"name": name, "containerPort": number, "protocol": "TCP"})

    claims = []
    mounts = app.setdefault("volumeMounts", [])
    for key, path in (("dataVolumeClaimTemplate", kind.data_path), ("logVolumeClaimTemplate", kind.log_path)):
        vct = find_template(cr, "volumeClaimTemplates", host.templates.get(key))
        if vct is None or any(c["metadata"]["name"] == vct["name"] for c in claims):
            continue
        if not any(m.get("name") == vct["name"] for m in mounts):
            mounts.append({"name": vct["name"], "mountPath": path})
        policy = vct.get("reclaimPolicy") or ((spec.get("defaults") or {}).get("storageManagement") or {}).get(
            "reclaimPolicy") or "Delete"
        claim_spec = copy.deepcopy(vct.get("spec") or {})
        claim_spec.setdefault("volumeMode", "Filesystem")
        claims.append({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": vct["name"],
                         "labels": with_cr_labels(cr, {**scope_labels(kind, cr, host), f"{kind.label}/reclaimPolicy": policy})},
            "spec": claim_spec,
        })

    selector = scope_labels(kind, cr, host)
    pod_labels = {**with_cr_labels(cr, selector), f"{kind.label}/ready": "yes",
                  **(((template.get("metadata") or {}).get("labels")) or {})}
    pod_meta = {"labels": pod_labels}
    if template.get("name"):
        pod_meta["name"] = template["name"]
    if (template.get("metadata") or {}).get("annotations"):
        pod_meta["annotations"] = template["metadata"]["annotations"]
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": host.sts, "namespace": host.namespace, "labels": with_cr_labels(cr, selector),
                     "ownerReferences": owner(kind, cr)},
        "spec": {
            "replicas": 0 if truthy(spec.get("stop")) else 1,
            "serviceName": host.sts,
            "selector": {"matchLabels": selector},
            "template": {"metadata": pod_meta, "spec": pod_spec},
            "volumeClaimTemplates": claims,
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "revisionHistoryLimit": 0,
        },
    }
    return versioned(kind, sts)


def keeper_liveness_script():
    return ("date && OK=$(exec 3<>/dev/tcp/127.0.0.1/2181; printf 'ruok' >&3; IFS=; tee <&3; exec 3<&-;);"
            'if [[ "${OK}" == "imok" ]]; then exit 0; else exit 1; fi')


def user_secret_env(spec):
    """`<user>/<field>: {valueFrom: {secretKeyRef}}` users become CONFIGURATION_USERS_<USER>_<FIELD> env vars."""
    out = []
    for key, value in sorted(((spec.get("configuration") or {}).get("users") or {}).items()):
        ref = ((value or {}).get("valueFrom") or {}).get("secretKeyRef") if isinstance(value, dict) else None
        if ref:
            name = "CONFIGURATION_USERS_" + "".join(ch if ch.isalnum() else "_" for ch in key.upper().replace("/", "_"))
            out.append({"name": name, "valueFrom": {"secretKeyRef": {"name": ref.get("name"), "key": ref.get("key")}}})
    return out


def desired_host_service(kind, cr, host):
    svc = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": host.sts, "namespace": host.namespace, "ownerReferences": owner(kind, cr),
                     "labels": with_cr_labels(cr, {**scope_labels(kind, cr, host), f"{kind.label}/Service": "host"})},
        "spec": {"selector": scope_labels(kind, cr, host), "clusterIP": "None", "type": "ClusterIP",
                 "publishNotReadyAddresses": True,
                 "ports": [{"name": n, "protocol": "TCP", "port": p, "targetPort": p} for n, p in kind.host_ports]},
    }
    return versioned(kind, svc)


def desired_cr_service(kind, cr):
    name = cr["metadata"]["name"]
    selector = {**scope_labels(kind, cr), f"{kind.label}/ready": "yes"}
    labels = with_cr_labels(cr, {**scope_labels(kind, cr), f"{kind.label}/Service": kind.short})
    template_name = ((cr["spec"].get("defaults") or {}).get("templates") or {}).get("serviceTemplate")
    template = find_template(cr, "serviceTemplates", template_name)
    if template:
        svc_name = (template.get("generateName") or f"{kind.cr_service}-{{{kind.short}}}").replace(f"{{{kind.short}}}", name)
        spec = copy.deepcopy(template.get("spec") or {})
        spec["selector"] = selector
        labels = {**labels, **(((template.get("metadata") or {}).get("labels")) or {})}
    else:
        svc_name = f"{kind.cr_service}-{name}"
        spec = {"clusterIP": "None", "type": "ClusterIP", "selector": selector,
                "ports": [{"name": n, "protocol": "TCP", "port": p, "targetPort": n} for n, p in kind.cr_ports]}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": svc_name, "namespace": cr["metadata"]["namespace"], "labels": labels,
                        "ownerReferences": owner(kind, cr)},
           "spec": spec}
    return versioned(kind, svc)


def desired_pdbs(kind, cr):
    out = []
    for cluster in clusters_of(cr):
        if cluster.get("pdbManaged") not in (None, "") and not truthy(cluster.get("pdbManaged")):
            continue
        cname = cluster.get("name") or "cluster"
        selector = scope_labels(kind, cr, cluster=cname)
        out.append(versioned(kind, {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": f"{kind.prefix}-{cr['metadata']['name']}-{cname}", "namespace": cr["metadata"]["namespace"],
                         "labels": with_cr_labels(cr, selector), "ownerReferences": owner(kind, cr)},
            "spec": {"selector": {"matchLabels": selector},
                     "maxUnavailable": int(cluster.get("pdbMaxUnavailable") or 1)},
        }))
    return out


def versioned(kind, obj):
    obj["metadata"]["labels"][f"{kind.label}/object-version"] = fingerprint(obj)
    return obj


# --- applying objects --------------------------------------------------------

def _ops(obj):
    ns, kind = obj["metadata"]["namespace"], obj["kind"]
    if kind == "StatefulSet":
        return (lambda n: API.apps.read_namespaced_stateful_set(n, ns, _request_timeout=TIMEOUT),
                lambda b: API.apps.create_namespaced_stateful_set(ns, b, _request_timeout=TIMEOUT),
                lambda n, b: API.apps.replace_namespaced_stateful_set(n, ns, b, _request_timeout=TIMEOUT),
                lambda n: API.apps.delete_namespaced_stateful_set(n, ns, _request_timeout=TIMEOUT))
    if kind == "Service":
        return (lambda n: API.core.read_namespaced_service(n, ns, _request_timeout=TIMEOUT),
                lambda b: API.core.create_namespaced_service(ns, b, _request_timeout=TIMEOUT),
                lambda n, b: API.core.replace_namespaced_service(n, ns, b, _request_timeout=TIMEOUT),
                lambda n: API.core.delete_namespaced_service(n, ns, _request_timeout=TIMEOUT))
    if kind == "PodDisruptionBudget":
        return (lambda n: API.policy.read_namespaced_pod_disruption_budget(n, ns, _request_timeout=TIMEOUT),
                lambda b: API.policy.create_namespaced_pod_disruption_budget(ns, b, _request_timeout=TIMEOUT),
                lambda n, b: API.policy.replace_namespaced_pod_disruption_budget(n, ns, b, _request_timeout=TIMEOUT),
                lambda n: API.policy.delete_namespaced_pod_disruption_budget(n, ns, _request_timeout=TIMEOUT))
    if kind == "ConfigMap":
        return (lambda n: API.core.read_namespaced_config_map(n, ns, _request_timeout=TIMEOUT),
                lambda b: API.core.create_namespaced_config_map(ns, b, _request_timeout=TIMEOUT),
                lambda n, b: API.core.replace_namespaced_config_map(n, ns, b, _request_timeout=TIMEOUT),
                lambda n: API.core.delete_namespaced_config_map(n, ns, _request_timeout=TIMEOUT))
    raise ValueError(kind)


def ensure(kind, obj):
    """Creates or updates obj; returns "added", "updated" or "unchanged"."""
    read, create, replace, delete = _ops(obj)
    name = obj["metadata"]["name"]
    try:
        cur = to_dict(read(name))
    except ApiException as e:
        if e.status != 404:
            raise
        create(obj)
        return "added"
    label = f"{kind.label}/object-version"
    if obj["kind"] != "ConfigMap" and (cur["metadata"].get("labels") or {}).get(label) == obj["metadata"]["labels"][label]:
        return "unchanged"
    if obj["kind"] == "ConfigMap" and cur.get("data") == obj.get("data"):
        return "unchanged"
    body = copy.deepcopy(obj)
    body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
    if obj["kind"] == "Service":
        body["spec"]["clusterIP"] = cur["spec"].get("clusterIP")
    try:
        replace(name, body)
    except ApiException as e:
        if e.status != 422 or obj["kind"] != "StatefulSet":
            raise
        # An immutable StatefulSet field changed (e.g. volumeClaimTemplates): the operator recreates it.
        log(f"{obj['metadata']['namespace']}/{name}: StatefulSet cannot be updated in place, recreating")
        delete(name)
        for _attempt in range(30):
            try:
                read(name)
                time.sleep(0.5)
            except ApiException:
                break
        create(obj)
    return "updated"


def sts_reconciled(sts):
    """The operator's IsStatefulSetReconcileCompleted and IsStatefulSetReady."""
    if sts is None:
        return False
    want = sts.spec.replicas or 0
    st = sts.status
    return (st.observed_generation == sts.metadata.generation
            and (st.current_replicas or 0) == want and (st.updated_replicas or 0) == want
            and st.current_revision == st.update_revision and (st.ready_replicas or 0) == want)


# --- status ------------------------------------------------------------------

INHERITABLE = ("taskIDsStarted", "taskIDsCompleted", "actions", "errors", "hostsWithTablesCreated",
               "hostsWithReplicaCaughtUp", "usedTemplates")
COUNTERS = ("hostsUpdated", "hostsAdded", "hostsUnchanged", "hostsCompleted", "hostsDeleted", "hostsDelete")


def main_status(kind, cr, hosts, task_id, ip, normalized, old):
    """The "main" status fields of a freshly normalized CR (FillStatus): counts, names,
    endpoint, counters 0, no error; the inheritable lists carried over from old."""
    ns, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    endpoint = f"{kind.cr_service}-{name}.{ns}.svc.cluster.local"
    template_name = ((cr["spec"].get("defaults") or {}).get("templates") or {}).get("serviceTemplate")
    template = find_template(cr, "serviceTemplates", template_name)
    if template and template.get("generateName"):
        endpoint = f"{template['generateName'].replace('{' + kind.short + '}', name)}.{ns}.svc.cluster.local"
    status = {
        "chop-version": VERSION, "chop-commit": COMMIT, "chop-date": BUILT_AT, "chop-ip": ip,
        "clusters": len(clusters_of(cr)),
        "shards": len({(h.cluster_name, h.shard) for h in hosts}),
        "hosts": len(hosts),
        "taskID": task_id if kind.has_task_id else "",
        "pods": [f"{h.sts}-0" for h in hosts],
        "fqdns": [h.fqdn for h in hosts],
        "endpoint": endpoint,
        "endpoints": [endpoint],
    }
    status.update(dict.fromkeys(COUNTERS, 0), error="", action="")
    if kind is CHK:
        status["normalized"] = normalized  # CHI keeps it in ConfigMap chi-storage-<chi> instead
    status.update(inherit(old))
    return status


def push(status, key, value):
    status[key] = ([value] + list(status.get(key) or []))[:MAX_IDS]


def clean(status):
    """JSON omitempty: zero counters, empty strings and lists are not written."""
    return {k: v for k, v in status.items() if v not in (None, "", 0, [], {})}


def write_status(kind, cr, build):
    """GET the CR, replace its status with build(current status) (the operator's UpdateStatus, retried)."""
    ns, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    for _attempt in range(20):
        try:
            cur = API.custom.get_namespaced_custom_object(kind.group, "v1", ns, kind.plural, name, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        new = clean(build(copy.deepcopy(cur.get("status") or {})))
        if new == (cur.get("status") or {}):
            return cur
        cur["status"] = new
        try:
            return API.custom.replace_namespaced_custom_object_status(kind.group, "v1", ns, kind.plural, name, cur,
                                                                      _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 409:
                raise
    raise RuntimeError(f"{ns}/{name}: status update kept conflicting")


def inherit(old):
    return {k: copy.deepcopy(old[k]) for k in INHERITABLE if k in old}


# --- the reconciler ----------------------------------------------------------

class Task:
    def __init__(self, generation, task_id, hosts, normalized, operator):
        self.generation, self.task_id, self.hosts, self.normalized = generation, task_id, hosts, normalized
        self.operator = operator
        self.started = time.monotonic()
        self.applied = {}  # sts name -> added/updated/unchanged
        self.done = set()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.abort = None  # error message once the task must abort


STATE = {}  # uid -> {"generation": int, "task": Task or None}


def reconcile(kind, cr, op):
    meta = cr["metadata"]
    key = f"{kind.short} {meta['namespace']}/{meta['name']}"
    state = STATE.setdefault(meta["uid"], {"generation": None, "task": None})

    if meta.get("deletionTimestamp"):
        if kind.finalizer and kind.finalizer in (meta.get("finalizers") or []):
            finalize_deletion(kind, cr, key)
        return
    if kind.finalizer and kind.finalizer not in (meta.get("finalizers") or []):
        API.custom.patch_namespaced_custom_object(
            kind.group, "v1", meta["namespace"], kind.plural, meta["name"],
            {"metadata": {"finalizers": (meta.get("finalizers") or []) + [kind.finalizer],
                          "resourceVersion": meta["resourceVersion"]}}, _request_timeout=TIMEOUT)
        return  # the operator restarts its cycle after installing the finalizer
    if truthy(cr["spec"].get("suspend")):
        say_once(key, f"{key}: suspended, not reconciled")
        return

    task = state["task"]
    if meta["generation"] != state["generation"] and (task is None or task.generation != meta["generation"]):
        task_id = cr["spec"].get("taskID") or f"auto-{uuid.uuid4()}"
        normalized = {"apiVersion": f"{kind.group}/v1", "kind": kind.kind,
                      "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": meta.get("labels") or {}},
                      "spec": normalized_spec(cr, task_id)}
        ancestor = read_ancestor(kind, cr)
        if ancestor is not None and comparable(ancestor.get("spec")) == comparable(normalized["spec"]):
            say_once(key, f"{key}: generation {meta['generation']}: no changes to reconcile")
            state["generation"], state["task"] = meta["generation"], None
            return
        # Recorded only once started: a start that fails half-way (API error) is retried at the next poll.
        task = state["task"] = start(kind, cr, task_id, normalized, ancestor, op, key)
        state["generation"] = meta["generation"]
    if task is not None:
        progress(kind, cr, task, op.ip, key)
        if task.abort is not None or len(task.done) == len(task.hosts):
            state["task"] = None


def read_ancestor(kind, cr):
    if kind is CHK:
        return (cr.get("status") or {}).get("normalizedCompleted")
    try:
        cm = API.core.read_namespaced_config_map(f"chi-storage-{cr['metadata']['name']}", cr["metadata"]["namespace"],
                                                 _request_timeout=TIMEOUT)
        return json.loads((cm.data or {}).get("status-normalizedCompleted") or "null")
    except (ApiException, ValueError):
        return None


def write_storage(kind, cr, normalized, completed):
    """CHI only: the operator keeps the normalized CRs in ConfigMap chi-storage-<chi>, not in status."""
    if kind is not CHI:
        return
    labels = with_cr_labels(cr, {**scope_labels(kind, cr), f"{kind.label}/ConfigMap": "ChiStorage"})
    data = {"status-normalized": json.dumps(normalized)}
    if completed is not None:
        data["status-normalizedCompleted"] = json.dumps(completed)
    else:
        old = read_ancestor(kind, cr)
        if old is not None:
            data["status-normalizedCompleted"] = json.dumps(old)
    ensure(kind, {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"chi-storage-{cr['metadata']['name']}", "namespace": cr["metadata"]["namespace"],
                               "labels": labels, "ownerReferences": owner(kind, cr)},
                  "data": data})


def start(kind, cr, task_id, normalized, ancestor, op, key):
    ip = op.ip
    hosts = hosts_of(kind, cr)
    task = Task(cr["metadata"]["generation"], task_id, hosts, normalized, op)
    previous = {h.sts for h in hosts_of(kind, {**cr, "spec": ancestor["spec"]})} if ancestor else set()
    removed = len(previous - {h.sts for h in hosts})

    def build(old):
        # ReconcileStart, written with the "main" field group over the current status.
        status = {**old, **main_status(kind, cr, hosts, task_id, ip, normalized, old)}
        status["status"] = "InProgress"
        status["hostsDelete"] = removed
        push(status, "taskIDsStarted", status["taskID"])
        return status

    task.counters["hostsDelete"] = removed
    write_storage(kind, cr, normalized, None)
    write_status(kind, cr, build)
    log(f"{key}: reconcile started, task {task_id if kind.has_task_id else '(none: Keeper)'}, {len(hosts)} hosts")
    if truthy((cr["metadata"].get("annotations") or {}).get(ABORT_ANNOTATION)):
        task.abort = f"annotation {ABORT_ANNOTATION} is set (stand-in simulated failure)"
        return task
    ensure(kind, desired_cr_service(kind, cr))
    for pdb in desired_pdbs(kind, cr):
        ensure(kind, pdb)
    for host in hosts:
        ensure(kind, desired_host_service(kind, cr, host))
        result = ensure(kind, desired_statefulset(kind, cr, host))
        task.applied[host.sts] = result
        task.counters[{"added": "hostsAdded", "updated": "hostsUpdated", "unchanged": "hostsUnchanged"}[result]] += 1
    write_status(kind, cr, lambda old: {**old, **task.counters})
    return task


def progress(kind, cr, task, ip, key):
    ns = cr["metadata"]["namespace"]
    if task.abort is None and truthy((cr["metadata"].get("annotations") or {}).get(ABORT_ANNOTATION)):
        task.abort = f"annotation {ABORT_ANNOTATION} is set (stand-in simulated failure)"
    if task.abort is None:
        for host in task.hosts:
            if host.sts in task.done:
                continue
            try:
                sts = API.apps.read_namespaced_stateful_set(host.sts, ns, _request_timeout=TIMEOUT)
            except ApiException as e:
                if e.status != 404:
                    raise
                sts = None
            if not sts_reconciled(sts):
                if time.monotonic() - task.started <= task.operator.timeout:
                    continue
                # reconcile.statefulSet.{create,update}.onFailure: ignore, or abort (rollback: aborts too here).
                created = task.applied.get(host.sts) == "added"
                policy = task.operator.on_create_failure if created else task.operator.on_update_failure
                if policy != "ignore":
                    task.abort = f"StatefulSet {ns}/{host.sts} not Ready after {task.operator.timeout:.0f}s"
                    break
                log(f"{key}: StatefulSet {host.sts} not Ready after {task.operator.timeout:.0f}s; "
                    f"{'create' if created else 'update'}.onFailure is ignore: host counted as done")
            # Host done: like the operator, one InProgress status write per completed host.
            task.done.add(host.sts)
            task.counters["hostsCompleted"] = len(task.done)
            write_status(kind, cr, lambda old: {**old, "status": "InProgress", **task.counters})

    if task.abort is not None:
        abort(kind, cr, task, ip, key)
    elif len(task.done) == len(task.hosts):
        complete(kind, cr, task, ip, key)


def abort(kind, cr, task, ip, key):
    name = f"{cr['metadata']['namespace']}/{cr['metadata']['name']}"
    message = f"FAILED to reconcile CR {name}, err: {task.abort}"
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")

    def build(old):
        # ReconcileAbort plus the announcer's error, written with the "main" field group.
        status = {**old, **main_status(kind, cr, task.hosts, task.task_id, ip, task.normalized, old), **task.counters}
        status["error"] = message
        push(status, "errors", f"{stamp} {message}")
        status["status"] = "Aborted"
        push(status, "taskIDsCompleted", status["taskID"])
        return status

    write_status(kind, cr, build)
    log(f"{key}: reconcile ABORTED: {task.abort}")


def complete(kind, cr, task, ip, key):
    ns = cr["metadata"]["namespace"]
    wanted = {h.sts for h in task.hosts}
    selector = ",".join(f"{k}={v}" for k, v in scope_labels(kind, cr).items())
    for sts in API.apps.list_namespaced_stateful_set(ns, label_selector=selector, _request_timeout=TIMEOUT).items:
        if sts.metadata.name not in wanted:
            remove_host(kind, cr, sts, key)
    write_storage(kind, cr, task.normalized, task.normalized)

    def build(old):
        # The final write replaces the whole status with that of a freshly normalized CR:
        # every hosts* counter is 0 again, so a Completed status has no hostsCompleted.
        status = main_status(kind, cr, task.hosts, task.task_id, ip, task.normalized, old)
        status["status"] = "Completed"
        push(status, "taskIDsCompleted", status["taskID"])
        if kind is CHK:
            status["normalizedCompleted"] = task.normalized
        return status

    write_status(kind, cr, build)
    log(f"{key}: reconcile completed, task {task.task_id if kind.has_task_id else '(none: Keeper)'}")


def remove_host(kind, cr, sts, key):
    ns = cr["metadata"]["namespace"]
    labels = sts.metadata.labels or {}
    log(f"{key}: removing host {sts.metadata.name}")
    for delete in (API.apps.delete_namespaced_stateful_set, API.core.delete_namespaced_service):
        try:
            delete(sts.metadata.name, ns, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 404:
                raise
    host_selector = ",".join(f"{k}={labels[k]}" for k in labels
                             if k.split("/")[-1] in ("namespace", "app", kind.short, "cluster", "shard", "replica")
                             and k.startswith(kind.label))
    delete_pvcs(kind, ns, host_selector)


def delete_pvcs(kind, ns, selector):
    """PVCs whose reclaimPolicy label is Delete (the operator's default) go; Retain ones stay."""
    for pvc in API.core.list_namespaced_persistent_volume_claim(ns, label_selector=selector, _request_timeout=TIMEOUT).items:
        if (pvc.metadata.labels or {}).get(f"{kind.label}/reclaimPolicy", "Delete") == "Delete":
            try:
                API.core.delete_namespaced_persistent_volume_claim(pvc.metadata.name, ns, _request_timeout=TIMEOUT)
            except ApiException as e:
                if e.status != 404:
                    raise


def finalize_deletion(kind, cr, key):
    meta = cr["metadata"]
    if (cr.get("status") or {}).get("status") != "Terminating":
        def build(old):
            status = {**old, "status": "Terminating"}
            for counter in COUNTERS:
                status.pop(counter, None)
            push(status, "taskIDsStarted", status.get("taskID", ""))
            return status
        write_status(kind, cr, build)
        log(f"{key}: deleting")
    delete_pvcs(kind, meta["namespace"], ",".join(f"{k}={v}" for k, v in scope_labels(kind, cr).items()))
    API.custom.patch_namespaced_custom_object(
        kind.group, "v1", meta["namespace"], kind.plural, meta["name"],
        {"metadata": {"finalizers": [f for f in meta.get("finalizers") or [] if f != kind.finalizer],
                      "resourceVersion": meta["resourceVersion"]}}, _request_timeout=TIMEOUT)
    log(f"{key}: finalizer removed")


# --- main loop ---------------------------------------------------------------

def poll_once():
    operators = find_operators()
    if not operators:
        say_once("operator", "waiting for a Ready clickhouse-operator Deployment (the stand-in chart)")
        return
    say_once("operator", "operator Deployments Ready: " + "; ".join(sorted(o.describe() for o in operators)))
    seen = set()
    for kind in (CHK, CHI):
        try:
            items = API.custom.list_cluster_custom_object(kind.group, "v1", kind.plural, _request_timeout=TIMEOUT)["items"]
        except ApiException as e:
            if e.status == 404:
                say_once(kind.short + "-crd", f"CRD {kind.plural}.{kind.group} not installed yet")
                continue
            raise
        say_once(kind.short + "-crd", f"CRD {kind.plural}.{kind.group} found")
        for cr in items:
            op = operator_for(operators, cr["metadata"]["namespace"])
            if op is None:
                continue
            seen.add(cr["metadata"]["uid"])
            key = f"{kind.short} {cr['metadata']['namespace']}/{cr['metadata']['name']}"
            try:
                reconcile(kind, cr, op)
                forget_said(key + " error")
            except ApiException as e:
                if e.status in (404, 409):
                    continue  # deleted or changed meanwhile: the next poll sees the new state
                say_once(key + " error", f"{key}: API error {e.status}: {e.reason}; retrying")
    for uid in list(STATE):
        if uid not in seen:
            del STATE[uid]


def main():
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    log(f"stand-in clickhouse-operator {VERSION} reconciler started (pid {os.getpid()})")
    reconcile_forever(globals(), poll_once, STOP, POLL_SECONDS)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
