"""Stand-in for the CloudNativePG operator (1.30.0) on the KWOK test cluster.

The operator image cannot be pulled here, and KWOK runs no containers, so the
stand-in chart's operator Deployment (tests/standins/charts/cloudnative-pg-0.29.0)
is an empty KWOK pod. This process does the operator's job instead, polling
the API server about once a second, and creates and updates what the real
operator does for the objects the collection uses (names, labels, selectors,
secret keys and status fields as in CloudNativePG 1.30.0):

* ``Cluster`` (postgresql.cnpg.io/v1)
  - ServiceAccount ``<cluster>``; Secret ``<cluster>-app`` (basic-auth, the keys
    of upstream pkg/specs/secrets.go, a 64-character password from the same
    alphabet: 54 letters and 10 digits) unless the bootstrap names a secret;
    created once, never rotated;
  - Services ``<cluster>-rw`` / ``-ro`` / ``-r`` (5432, port name ``postgres``,
    upstream selectors; ``managed.services.disabledDefaultServices`` honoured);
  - per instance N a PVC ``<cluster>-N`` (and ``<cluster>-N-wal`` with
    ``walStorage``) and a Pod ``<cluster>-N`` with the upstream labels, the
    ``postgres`` container (image ``spec.imageName``, port 5432) and the
    anti-affinity term upstream generates from ``spec.affinity``. Instance 1 is
    the primary. Instances come up one at a time; scaling down removes the
    highest-numbered replica and its PVCs; a new instance takes the next
    number (``status.latestGeneratedNode + 1``); a deleted pod is recreated on
    its PVC; a new ``imageName`` is rolled out replicas first, primary last;
  - status: phase ``Setting up primary`` -> ``Creating a new replica`` ->
    ``Cluster in healthy state`` (plus the other upstream phases below),
    instances, readyInstances, instancesStatus, instanceNames, currentPrimary,
    targetPrimary, writeService, readService, selector, image,
    latestGeneratedNode, conditions Ready / Initialized (upstream reasons).
  - failure paths as upstream reports them: an invalid ``podAntiAffinityType``
    or storage without a size -> ``Invalid cluster definition`` (the
    operator's own admission guard, used when webhooks are absent, as here);
    an enabled plugin with no plugin Service (label ``cnpg.io/pluginName``) in
    the operator's namespace -> ``Cluster cannot proceed to reconciliation due
    to an unknown plugin being required``; ``initdb.secret`` naming a missing
    Secret -> stuck in ``Setting up primary``; ``primaryUpdateStrategy:
    supervised`` during an image change -> ``Waiting for user action``.
  - failure injection: annotation ``localenv.langfuse-ops.io/fail: "true"``
    -> phase ``Unable to create required cluster objects`` with a
    phaseReason, Ready condition False, never healthy while it is set.
* ``Backup``: ``pending`` while its cluster or primary is missing or not
  ready, upstream prerequisite failures (no plugin / no backup section /
  no VolumeSnapshot support) -> ``failed``, else ``started`` then
  ``completed`` with backupId, backupName, startedAt, stoppedAt, ...; the
  fail annotation -> ``failed``. Sets the Cluster's LastBackupSucceeded
  condition.
* ``ScheduledBackup``: six-field cron (seconds first, robfig/cron rules),
  ``immediate``, ``suspend``, ``backupOwnerReference``; creates Backups named
  ``<name>-<YYYYMMDDhhmmss>`` and sets lastCheckTime / lastScheduleTime /
  nextScheduleTime.

Like the real operator it acts only while an operator Deployment
(label ``app.kubernetes.io/name=cloudnative-pg``) is Ready, and only in the
namespaces it watches (``WATCH_NAMESPACE`` in its env or config map; all
namespaces otherwise). Not done: webhooks (no defaulting written back to the
spec, no admission errors), TLS secrets, PodDisruptionBudgets, failover,
switchover, Poolers, Databases, PVC resizing, real PostgreSQL.

It waits quietly while the API server or the CRDs are missing, reloads the
kubeconfig when the file changes, and exits on SIGTERM / SIGINT.

Usage: cnpg_operator.py (KUBECONFIG names the cluster)
"""
import copy
import json
import os
import re
import secrets
import signal
import string
import sys
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, quote_plus, urlencode

import urllib3
from kubernetes import config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

GROUP, VERSION = "postgresql.cnpg.io", "v1"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_BASE = f"/apis/{GROUP}/{VERSION}"
OPERATOR_SELECTOR = "app.kubernetes.io/name=cloudnative-pg"
FAIL_ANNOTATION = "localenv.langfuse-ops.io/fail"
DEFAULT_IMAGE = "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie"
PORT = 5432
MANAGER = "cloudnative-pg"

PHASE_HEALTHY = "Cluster in healthy state"
PHASE_FIRST_PRIMARY = "Setting up primary"
PHASE_CREATING_REPLICA = "Creating a new replica"
PHASE_UPGRADE = "Upgrading cluster"
PHASE_WAITING_FOR_USER = "Waiting for user action"
PHASE_PRIMARY_DELETE_RESTART = "Primary instance is being restarted without a switchover"
PHASE_WAITING_INSTANCES = "Waiting for the instances to become active"
PHASE_CANNOT_CREATE_OBJECTS = "Unable to create required cluster objects"
PHASE_INVALID = "Invalid cluster definition"
PHASE_UNKNOWN_PLUGIN = "Cluster cannot proceed to reconciliation due to an unknown plugin being required"
# Phases that describe work on instances: kept while pods come up.
PROGRESS_PHASES = (PHASE_FIRST_PRIMARY, PHASE_CREATING_REPLICA, PHASE_UPGRADE, PHASE_PRIMARY_DELETE_RESTART)

STOP = threading.Event()


def log(msg):
    print(f"{datetime.now(timezone.utc).strftime('%H:%M:%S')} {msg}", flush=True)


def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def pg_timestamp(t):
    """Format of status.currentPrimaryTimestamp & co (pgTime.GetCurrentTimestamp)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compact(t):
    """pgTime.ToCompactISO8601: the suffix of scheduled Backup names."""
    return t.strftime("%Y%m%d%H%M%S")


# --------------------------------------------------------------------------- API access


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


class Kube:
    """Plain JSON calls to the API server (dicts in, dicts out)."""

    def __init__(self, kubeconfig):
        self.kubeconfig = kubeconfig
        self.stamp = None
        self.client = None

    def _client(self):
        stamp = os.stat(self.kubeconfig).st_mtime_ns
        if self.client is None or stamp != self.stamp:
            self.client = config.new_client_from_config(config_file=self.kubeconfig)
            self.stamp = stamp
        return self.client

    def reset(self):
        self.client = None

    def call(self, method, path, body=None, query=None, content_type="application/json"):
        client = self._client()
        url = client.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        resp = client.rest_client.request(method, url, headers=headers, body=body, _request_timeout=(5, 20))
        data = resp.read()
        if resp.status >= 300:
            raise ApiError(resp.status, data.decode(errors="replace") if data else "")
        return json.loads(data) if data else None

    def get(self, path):
        try:
            return self.call("GET", path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def list(self, path, selector=None):
        return self.call("GET", path, query={"labelSelector": selector} if selector else None)["items"]

    def create(self, path, obj):
        try:
            return self.call("POST", path, obj)
        except ApiError as err:
            if err.status == 409:  # AlreadyExists: a previous pass got there first
                return None
            raise

    def merge_patch(self, path, patch):
        return self.call("PATCH", path, patch, content_type="application/merge-patch+json")

    def replace(self, path, obj):
        return self.call("PUT", path, obj)

    def delete(self, path):
        try:
            return self.call("DELETE", path)
        except ApiError as err:
            if err.status in (404, 409):
                return None
            raise


def core(ns, plural, name=None):
    return f"/api/v1/namespaces/{ns}/{plural}" + (f"/{name}" if name else "")


def cnpg(ns, plural, name=None, sub=None):
    return f"{CRD_BASE}/namespaces/{ns}/{plural}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def is_ready(pod):
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def serial_of(obj):
    try:
        return int((obj["metadata"].get("annotations") or {}).get("cnpg.io/nodeSerial", "0"))
    except ValueError:
        return 0


def owner_ref(obj):
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True}


def set_condition(conditions, ctype, status, reason, message, when):
    """meta.SetStatusCondition: the transition time moves only when the status flips."""
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = rfc3339(when)
            cond.update(status=status, reason=reason, message=message)
            return
    conditions.append({"type": ctype, "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": rfc3339(when)})


# --------------------------------------------------------------------------- operator scope


class Scope:
    """What the Ready operator Deployments watch, and the plugins they know."""

    def __init__(self, kube):
        self.all_namespaces = False
        self.namespaces = set()
        self.plugins = set()
        self.operator_namespaces = set()
        for dep in kube.list("/apis/apps/v1/deployments", OPERATOR_SELECTOR):
            if ((dep.get("status") or {}).get("readyReplicas") or 0) < 1:
                continue
            ns = dep["metadata"]["namespace"]
            self.operator_namespaces.add(ns)
            watch = self._watch_namespace(kube, dep)
            if watch:
                self.namespaces.update(n.strip() for n in watch.split(",") if n.strip())
            else:
                self.all_namespaces = True
        for ns in self.operator_namespaces:
            for svc in kube.list(core(ns, "services"), "cnpg.io/pluginName"):
                self.plugins.add(svc["metadata"]["labels"]["cnpg.io/pluginName"])

    @staticmethod
    def _watch_namespace(kube, dep):
        containers = dep["spec"]["template"]["spec"].get("containers") or []
        manager = next((c for c in containers if c.get("name") == "manager"), containers[0] if containers else {})
        for env in manager.get("env") or []:
            if env.get("name") == "WATCH_NAMESPACE" and env.get("value"):
                return env["value"]
        for arg in manager.get("args") or []:
            if arg.startswith("--config-map-name="):
                cm = kube.get(core(dep["metadata"]["namespace"], "configmaps", arg.split("=", 1)[1]))
                if cm and (cm.get("data") or {}).get("WATCH_NAMESPACE"):
                    return cm["data"]["WATCH_NAMESPACE"]
        return None

    @property
    def active(self):
        return bool(self.operator_namespaces)

    def watches(self, ns):
        return self.all_namespaces or ns in self.namespaces

    def describe(self):
        where = "all namespaces" if self.all_namespaces else ", ".join(sorted(self.namespaces))
        return f"operator Ready in {', '.join(sorted(self.operator_namespaces))}; watching {where}"


# --------------------------------------------------------------------------- Cluster


def generate_password(length=64, digits=10):
    """password.Generate(64, 10, 0, false, true) of sethvargo/go-password."""
    chars = [secrets.choice(string.ascii_letters) for unused in range(length - digits)]
    for unused in range(digits):
        chars.insert(secrets.randbelow(len(chars) + 1), secrets.choice(string.digits))
    return "".join(chars)


def app_secret_data(cluster_name, ns, dbname, username, password):
    """The keys of upstream specs.CreateSecret (cluster domain cluster.local)."""
    host = f"{cluster_name}-rw"

    def uri(hostport):
        user = quote(username, safe="-._~!$&'()*+,;=")
        pw = quote(password, safe="-._~!$&'()*+,;=")
        return f"postgresql://{user}:{pw}@{hostport}/{quote(dbname)}"

    def jdbc(hostport):
        return f"jdbc:postgresql://{hostport}/{quote(dbname)}?" + urlencode(
            sorted({"user": username, "password": password}.items()), quote_via=quote_plus)

    short = f"{host}.{ns}:{PORT}"
    fqdn = f"{host}.{ns}.svc.cluster.local:{PORT}"
    return {
        "username": username, "user": username, "password": password, "dbname": dbname,
        "host": host, "port": str(PORT),
        "pgpass": f"{host}:{PORT}:{dbname}:{username}:{password}\n",
        "uri": uri(short), "jdbc-uri": jdbc(short), "fqdn-uri": uri(fqdn), "fqdn-jdbc-uri": jdbc(fqdn),
    }


def major_version(image):
    tag = image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
    match = re.match(r"(\d+)", tag)
    return match.group(1) if match else "0"


class ClusterView:
    """A Cluster with the defaults its webhook would have filled in."""

    def __init__(self, obj):
        self.obj = obj
        meta = obj["metadata"]
        self.name, self.ns = meta["name"], meta["namespace"]
        self.annotations = meta.get("annotations") or {}
        self.spec = obj.get("spec") or {}
        self.status = copy.deepcopy(obj.get("status") or {})
        spec = self.spec
        self.instances = int(spec.get("instances") or 1)
        self.image = spec.get("imageName") or DEFAULT_IMAGE
        affinity = spec.get("affinity") or {}
        self.anti_affinity_enabled = affinity.get("enablePodAntiAffinity", True) is not False
        self.anti_affinity_type = affinity.get("podAntiAffinityType") or "preferred"
        self.topology_key = affinity.get("topologyKey") or "kubernetes.io/hostname"
        self.affinity = affinity
        bootstrap = spec.get("bootstrap") or {}
        method = next((m for m in ("recovery", "pg_basebackup") if bootstrap.get(m) is not None), "initdb")
        boot = bootstrap.get(method) or {}
        self.bootstrap_secret = (boot.get("secret") or {}).get("name") or None
        self.dbname = boot.get("database") or "app"
        self.owner = boot.get("owner") or self.dbname
        replica = (spec.get("replica") or {}).get("enabled")
        self.creates_app_secret = not self.bootstrap_secret and not (method != "initdb" and replica)
        self.inherited = spec.get("inheritedMetadata") or {}
        disabled = ((spec.get("managed") or {}).get("services") or {}).get("disabledDefaultServices") or []
        self.services = [s for s in ("rw", "ro", "r") if s == "rw" or s not in disabled]
        self.service_account = spec.get("serviceAccountName") or self.name
        self.version = major_version(self.image)

    def metadata(self, name, labels=None, annotations=None):
        merged_labels = dict(self.inherited.get("labels") or {})
        merged_labels.update(labels or {})
        merged_labels["cnpg.io/cluster"] = self.name
        meta = {"name": name, "namespace": self.ns, "labels": merged_labels,
                "ownerReferences": [owner_ref(self.obj)]}
        merged_annotations = dict(self.inherited.get("annotations") or {})
        merged_annotations.update(annotations or {})
        if merged_annotations:
            meta["annotations"] = merged_annotations
        return meta

    def common_labels(self):
        return {"app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": self.name,
                "app.kubernetes.io/version": self.version, "app.kubernetes.io/component": "database",
                "app.kubernetes.io/managed-by": MANAGER}

    def validate(self):
        """The checks of the operator's admission guard that the stand-in mirrors."""
        errors = []
        if self.anti_affinity_type not in ("preferred", "required"):
            errors.append(("spec.affinity.podAntiAffinityType",
                           f"Invalid value: \"{self.anti_affinity_type}\": pod anti-affinity type must be "
                           "'preferred' (default if empty) or 'required'"))
        for key in ("storage", "walStorage"):
            storage = self.spec.get(key)
            if storage is None and key == "walStorage":
                continue
            storage = storage or {}
            template_size = (((storage.get("pvcTemplate") or {}).get("resources") or {}).get("requests") or {}).get("storage")
            if not storage.get("size") and not template_size:
                errors.append((f"spec.{key}.size",
                               "Invalid value: \"\": Size not configured. Please add it, or a storage request in the pvcTemplate."))
        return errors

    def generated_affinity(self):
        """specs.CreateAffinitySection: the operator's anti-affinity term plus the user's extras."""
        affinity = {}
        if self.anti_affinity_enabled:
            term = {"labelSelector": {"matchExpressions": [
                {"key": "cnpg.io/cluster", "operator": "In", "values": [self.name]},
                {"key": "cnpg.io/podRole", "operator": "In", "values": ["instance"]}]},
                "topologyKey": self.topology_key}
            if self.anti_affinity_type == "required":
                affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
            else:
                affinity["podAntiAffinity"] = {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": term}]}
        extra_anti = self.affinity.get("additionalPodAntiAffinity") or {}
        for key in ("requiredDuringSchedulingIgnoredDuringExecution", "preferredDuringSchedulingIgnoredDuringExecution"):
            if extra_anti.get(key):
                affinity.setdefault("podAntiAffinity", {}).setdefault(key, []).extend(extra_anti[key])
        if self.affinity.get("additionalPodAffinity"):
            affinity["podAffinity"] = self.affinity["additionalPodAffinity"]
        if self.affinity.get("nodeAffinity"):
            affinity["nodeAffinity"] = self.affinity["nodeAffinity"]
        return affinity or None

    def pvc(self, serial, role):
        storage_key, suffix, pvc_role = ("storage", "", "PG_DATA") if role == "data" else ("walStorage", "-wal", "PG_WAL")
        storage = self.spec.get(storage_key) or {}
        instance = f"{self.name}-{serial}"
        spec = copy.deepcopy(storage.get("pvcTemplate") or {})
        spec.setdefault("accessModes", ["ReadWriteOnce"])
        if storage.get("size"):
            spec.setdefault("resources", {}).setdefault("requests", {})["storage"] = storage["size"]
        if storage.get("storageClass"):
            spec["storageClassName"] = storage["storageClass"]
        labels = {"cnpg.io/instanceName": instance, "cnpg.io/pvcRole": pvc_role,
                  "app.kubernetes.io/managed-by": MANAGER, "app.kubernetes.io/name": "postgresql",
                  "app.kubernetes.io/component": "database"}
        annotations = {"cnpg.io/nodeSerial": str(serial), "cnpg.io/pvcStatus": "ready"}
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": self.metadata(instance + suffix, labels, annotations), "spec": spec}

    def pod(self, serial, primary):
        name = f"{self.name}-{serial}"
        role = "primary" if primary else "replica"
        labels = dict(self.common_labels())
        labels.update({"cnpg.io/instanceName": name, "cnpg.io/podRole": "instance",
                       "cnpg.io/instanceRole": role, "role": role})
        mounts = [{"name": "pgdata", "mountPath": "/var/lib/postgresql/data"},
                  {"name": "scratch-data", "mountPath": "/run"},
                  {"name": "scratch-data", "mountPath": "/controller"},
                  {"name": "shm", "mountPath": "/dev/shm"}]
        volumes = [{"name": "pgdata", "persistentVolumeClaim": {"claimName": name}},
                   {"name": "scratch-data", "emptyDir": {}},
                   {"name": "shm", "emptyDir": {"medium": "Memory"}}]
        if self.spec.get("walStorage"):
            mounts.append({"name": "pg-wal", "mountPath": "/var/lib/postgresql/wal"})
            volumes.append({"name": "pg-wal", "persistentVolumeClaim": {"claimName": f"{name}-wal"}})
        container = {
            "name": "postgres", "image": self.image, "command": ["/controller/manager", "instance", "run"],
            "ports": [{"name": "postgresql", "containerPort": PORT, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": 9187, "protocol": "TCP"},
                      {"name": "status", "containerPort": 8000, "protocol": "TCP"}],
            "resources": self.spec.get("resources") or {}, "volumeMounts": mounts,
        }
        if self.spec.get("imagePullPolicy"):
            container["imagePullPolicy"] = self.spec["imagePullPolicy"]
        spec = {"hostname": name, "containers": [container], "volumes": volumes,
                "serviceAccountName": self.service_account,
                "terminationGracePeriodSeconds": int(self.spec.get("stopDelay") or 1800),
                "securityContext": {"runAsUser": 26, "runAsGroup": 26, "runAsNonRoot": True, "fsGroup": 26,
                                    "seccompProfile": {"type": "RuntimeDefault"}}}
        affinity = self.generated_affinity()
        if affinity:
            spec["affinity"] = affinity
        for src, dst in (("tolerations", "tolerations"), ("nodeSelector", "nodeSelector")):
            if self.affinity.get(src):
                spec[dst] = self.affinity[src]
        for key in ("topologySpreadConstraints", "schedulerName", "priorityClassName", "imagePullSecrets"):
            if self.spec.get(key):
                spec[key] = self.spec[key]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": self.metadata(name, labels, {"cnpg.io/nodeSerial": str(serial)}), "spec": spec}

    def service(self, kind):
        selector = {"cnpg.io/cluster": self.name}
        if kind == "rw":
            selector["cnpg.io/instanceRole"] = "primary"
        elif kind == "ro":
            selector["cnpg.io/instanceRole"] = "replica"
        else:
            selector["cnpg.io/podRole"] = "instance"
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": self.metadata(f"{self.name}-{kind}", self.common_labels()),
                "spec": {"type": "ClusterIP", "selector": selector,
                         "ports": [{"name": "postgres", "protocol": "TCP", "port": PORT, "targetPort": PORT}]}}


class Operator:
    def __init__(self, kube):
        self.kube = kube
        self.backup_conditions = {}  # (ns, cluster) -> condition set by a finished Backup
        self.said = {}

    def note(self, key, msg):
        """Logs msg when it differs from what was last said about key."""
        if self.said.get(key) != msg:
            self.said[key] = msg
            log(msg)

    # ---------------------------------------------------------------- status

    def write_status(self, view, new):
        cluster_conditions = self.backup_conditions.pop((view.ns, view.name), None)
        if cluster_conditions:
            conds = new.setdefault("conditions", [])
            set_condition(conds, *cluster_conditions, now())
        if new == (view.obj.get("status") or {}):
            return
        body = copy.deepcopy(view.obj)
        body["status"] = new
        try:
            self.kube.replace(cnpg(view.ns, "clusters", view.name, "status"), body)
        except ApiError as err:
            if err.status == 409:  # changed meanwhile: next pass
                if cluster_conditions:
                    self.backup_conditions[(view.ns, view.name)] = cluster_conditions
                return
            raise
        old = view.obj.get("status") or {}
        if (old.get("phase"), old.get("phaseReason")) != (new.get("phase"), new.get("phaseReason")):
            reason = f" ({new['phaseReason']})" if new.get("phaseReason") else ""
            log(f"cluster {view.ns}/{view.name}: {new.get('phase')}{reason}"
                f" [{new.get('readyInstances', 0)}/{view.instances} ready]")

    @staticmethod
    def set_phase(status, phase, reason):
        status["phase"] = phase
        status["phaseReason"] = reason
        if not reason:  # omitempty upstream
            del status["phaseReason"]
        conds = status.setdefault("conditions", [])
        if phase == PHASE_HEALTHY:
            set_condition(conds, "Ready", "True", "ClusterIsReady", "Cluster is Ready", now())
        else:
            set_condition(conds, "Ready", "False", "ClusterIsNotReady", "Cluster Is Not Ready", now())

    # ---------------------------------------------------------------- objects

    def ensure(self, path, obj, what):
        if self.kube.get(f"{path}/{obj['metadata']['name']}") is None:
            if self.kube.create(path, obj) is not None:
                log(f"created {what} {obj['metadata']['namespace']}/{obj['metadata']['name']}")

    def ensure_app_secret(self, view):
        name = f"{view.name}-app"
        if self.kube.get(core(view.ns, "secrets", name)) is not None:
            return  # created once, never rotated
        labels = {"cnpg.io/userType": "app", "cnpg.io/reload": "true", "app.kubernetes.io/managed-by": MANAGER}
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                  "metadata": view.metadata(name, labels),
                  "stringData": app_secret_data(view.name, view.ns, view.dbname, view.owner, generate_password())}
        if self.kube.create(core(view.ns, "secrets"), secret) is not None:
            log(f"created secret {view.ns}/{name} (user {view.owner}, database {view.dbname})")

    def ensure_services(self, view):
        for kind in ("rw", "ro", "r"):
            want = view.service(kind)
            name = want["metadata"]["name"]
            have = self.kube.get(core(view.ns, "services", name))
            if kind not in view.services:
                owners = (have or {}).get("metadata", {}).get("ownerReferences") or []
                if have and any(o.get("uid") == view.obj["metadata"]["uid"] for o in owners):
                    self.kube.delete(core(view.ns, "services", name))
                    log(f"deleted service {view.ns}/{name} (disabled)")
                continue
            if have is None:
                if self.kube.create(core(view.ns, "services"), want) is not None:
                    log(f"created service {view.ns}/{name}")
            elif have["spec"].get("selector") != want["spec"]["selector"] or \
                    [(p.get("name"), p.get("port")) for p in have["spec"].get("ports") or []] != [("postgres", PORT)]:
                self.kube.merge_patch(core(view.ns, "services", name),
                                      {"spec": {"selector": want["spec"]["selector"], "ports": want["spec"]["ports"]}})

    def create_instance(self, view, serial, primary):
        name = f"{view.name}-{serial}"
        self.ensure(core(view.ns, "persistentvolumeclaims"), view.pvc(serial, "data"), "pvc")
        if view.spec.get("walStorage"):
            self.ensure(core(view.ns, "persistentvolumeclaims"), view.pvc(serial, "wal"), "pvc")
        if self.kube.create(core(view.ns, "pods"), view.pod(serial, primary)) is not None:
            log(f"created pod {view.ns}/{name} ({'primary' if primary else 'replica'}, {view.image})")

    def delete_instance(self, view, pod, why):
        name = pod["metadata"]["name"]
        for pvc in (name, f"{name}-wal"):
            self.kube.delete(core(view.ns, "persistentvolumeclaims", pvc))
        self.kube.delete(core(view.ns, "pods", name))
        log(f"deleted instance {view.ns}/{name} ({why})")

    # ---------------------------------------------------------------- reconcile

    def reconcile_cluster(self, obj, scope):
        view = ClusterView(obj)
        if obj["metadata"].get("deletionTimestamp"):
            return
        status = view.status
        if view.annotations.get(FAIL_ANNOTATION) == "true":
            self.set_phase(status, PHASE_CANNOT_CREATE_OBJECTS,
                           f"failure injected by the {FAIL_ANNOTATION} annotation (localenv stand-in)")
            return self.write_status(view, status)
        errors = view.validate()
        if errors:
            self.note(("invalid", view.ns, view.name),
                      f"cluster {view.ns}/{view.name}: invalid definition: " + "; ".join(f"{f}: {m}" for f, m in errors))
            self.set_phase(status, PHASE_INVALID, "the resource failed admission validation on: "
                           + ", ".join(field for field, unused in errors) + " (see the operator logs for details)")
            return self.write_status(view, status)
        unknown = [p["name"] for p in view.spec.get("plugins") or [] if p.get("enabled", True) is not False
                   and p.get("name") not in scope.plugins]
        if unknown:
            self.set_phase(status, PHASE_UNKNOWN_PLUGIN,
                           f"Unknown plugin: '{unknown[0]}'. This may be caused by the plugin not being loaded "
                           "correctly by the operator. Check the operator and plugin logs for errors")
            return self.write_status(view, status)

        if view.service_account == view.name:
            self.ensure(core(view.ns, "serviceaccounts"),
                        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": view.metadata(view.name)},
                        "serviceaccount")
        if view.creates_app_secret:
            self.ensure_app_secret(view)
        self.ensure_services(view)

        selector = f"cnpg.io/cluster={view.name},cnpg.io/podRole=instance"
        pods = {serial_of(p): p for p in self.kube.list(core(view.ns, "pods"), selector)}
        pvc_selector = f"cnpg.io/cluster={view.name},cnpg.io/pvcRole=PG_DATA"
        pvcs = {serial_of(p): p for p in self.kube.list(core(view.ns, "persistentvolumeclaims"), pvc_selector)}
        latest = max([int(status.get("latestGeneratedNode") or 0)] + list(pods) + list(pvcs))
        primary = status.get("currentPrimary") or f"{view.name}-1"
        live = {s: p for s, p in pods.items() if not p["metadata"].get("deletionTimestamp")}
        ready = {s: p for s, p in live.items() if is_ready(p)}
        busy = len(ready) != len(pods)  # some pod is starting or terminating

        if latest == 0:
            if view.bootstrap_secret and self.kube.get(core(view.ns, "secrets", view.bootstrap_secret)) is None:
                self.note(("secret", view.ns, view.name),
                          f"cluster {view.ns}/{view.name}: waiting for secret {view.bootstrap_secret}")
            else:
                self.create_instance(view, 1, True)
                latest = 1
                stamp = pg_timestamp(datetime.now(timezone.utc))
                status.update(currentPrimary=primary, targetPrimary=primary,
                              currentPrimaryTimestamp=stamp, targetPrimaryTimestamp=stamp)
            self.set_phase(status, PHASE_FIRST_PRIMARY, f"Creating primary instance {view.name}-1")
        else:
            self.step(view, status, pods, pvcs, live, ready, busy, latest, primary)
            latest = max(latest, int(status.get("latestGeneratedNode") or 0))

        # What the status reports, from the pods as they are now.
        pods = {serial_of(p): p for p in self.kube.list(core(view.ns, "pods"), selector)}
        live = {s: p for s, p in pods.items() if not p["metadata"].get("deletionTimestamp")}
        names = sorted(p["metadata"]["name"] for p in live.values())
        ready_names = sorted(p["metadata"]["name"] for p in live.values() if is_ready(p))
        instances_status = {}
        if ready_names:
            instances_status["healthy"] = ready_names
        if set(names) - set(ready_names):
            instances_status["replicating"] = sorted(set(names) - set(ready_names))
        status.update(
            instances=len(live), readyInstances=len(ready_names), instanceNames=names,
            instancesStatus=instances_status, latestGeneratedNode=latest,
            writeService=f"{view.name}-rw", readService=f"{view.name}-r",
            selector=f"cnpg.io/cluster={view.name},cnpg.io/podRole=instance", image=view.image,
            pvcCount=len(pvcs), healthyPVC=sorted(p["metadata"]["name"] for p in pvcs.values()
                                                  if p["metadata"]["name"] in ready_names))
        if primary in ready_names:
            status.setdefault("timelineID", 1)
        conds = status.setdefault("conditions", [])
        if live:
            set_condition(conds, "Initialized", "True", "BootstrapCompleted", "Cluster has been bootstrapped", now())
        elif not any(c.get("type") == "Initialized" for c in conds):
            set_condition(conds, "Initialized", "False", "BootstrapPending", "Cluster has not been bootstrapped yet", now())
        self.write_status(view, status)

    def step(self, view, status, pods, pvcs, live, ready, busy, latest, primary):
        """One move towards the spec, after the primary exists."""
        primary_serial = int(primary.rsplit("-", 1)[1])
        # A pod gone while its PVC stays: recreate the instance on it.
        for serial, pvc in sorted(pvcs.items()):
            if serial not in pods and not pvc["metadata"].get("deletionTimestamp"):
                self.create_instance(view, serial, serial == primary_serial)
                busy = True
        if busy:
            if status.get("phase") not in PROGRESS_PHASES:
                self.set_phase(status, PHASE_WAITING_INSTANCES, "Some instances are not yet active. Please wait.")
            return
        if len(live) < view.instances:
            serial = latest + 1
            self.create_instance(view, serial, False)
            status["latestGeneratedNode"] = serial
            return self.set_phase(status, PHASE_CREATING_REPLICA, f"Creating replica {view.name}-{serial}-join")
        if len(live) > view.instances:
            victim = max((s for s in live if s != primary_serial), default=None)
            if victim is not None:
                return self.delete_instance(view, live[victim], f"scaling down to {view.instances}")
        stale = sorted((s for s, p in live.items() if p["spec"]["containers"][0].get("image") != view.image),
                       key=lambda s: (s == primary_serial, -s))
        if stale:
            serial = stale[0]
            pod = live[serial]
            reason = f"the instance is using a different image: {pod['spec']['containers'][0].get('image')} -> {view.image}"
            if serial != primary_serial:
                self.set_phase(status, PHASE_UPGRADE, f"Restarting instance {pod['metadata']['name']}, because: {reason}")
            elif view.spec.get("primaryUpdateStrategy") == "supervised":
                return self.set_phase(status, PHASE_WAITING_FOR_USER, "User must issue a supervised switchover")
            else:
                self.set_phase(status, PHASE_PRIMARY_DELETE_RESTART, reason)
            self.kube.delete(core(view.ns, "pods", pod["metadata"]["name"]))
            log(f"restarting {view.ns}/{pod['metadata']['name']}: {reason}")
            return
        self.set_phase(status, PHASE_HEALTHY, "")

    # ---------------------------------------------------------------- backups

    def reconcile_backup(self, backup, clusters):
        meta, spec = backup["metadata"], backup.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        status = copy.deepcopy(backup.get("status") or {})
        if status.get("phase") in ("completed", "failed"):
            return
        method = spec.get("method") or "barmanObjectStore"
        cluster_name = (spec.get("cluster") or {}).get("name")
        cluster = clusters.get((ns, cluster_name))

        def failed(message):
            status.update(phase="failed", error=message, method=method)
            status.setdefault("startedAt", rfc3339(now()))
            status["stoppedAt"] = rfc3339(now())
            self.backup_conditions[(ns, cluster_name)] = ("LastBackupSucceeded", "False", "LastBackupFailed", message)

        if (meta.get("annotations") or {}).get(FAIL_ANNOTATION) == "true":
            failed(f"failure injected by the {FAIL_ANNOTATION} annotation (localenv stand-in)")
        elif cluster is None:
            status["phase"] = "pending"
        elif method == "plugin" and not (cluster.get("spec") or {}).get("plugins"):
            failed("cannot proceed with the backup as the cluster has no plugin configured")
        elif method != "plugin" and not (cluster.get("spec") or {}).get("backup"):
            failed("cannot proceed with the backup as the cluster has no backup section")
        elif method == "barmanObjectStore" and not cluster["spec"]["backup"].get("barmanObjectStore"):
            failed("no barmanObjectStore section defined on the target cluster")
        elif method == "volumeSnapshot":
            failed("cannot proceed with the backup as the Kubernetes cluster has no VolumeSnapshot support")
        else:
            target = (cluster.get("status") or {}).get("targetPrimary")
            pod = self.kube.get(core(ns, "pods", target)) if target else None
            if pod is None or not is_ready(pod):
                status["phase"] = "pending"
            elif status.get("phase") != "started":
                status.update(phase="started", method=method, startedAt=rfc3339(now()),
                              instanceID={"podName": target}, online=spec.get("online", True) is not False)
            else:
                started = parse_time(status["startedAt"])
                status.update(phase="completed", stoppedAt=rfc3339(now()),
                              backupId=started.strftime("%Y%m%dT%H%M%S"), backupName=f"backup-{compact(started)}",
                              serverName=cluster_name)
                self.backup_conditions[(ns, cluster_name)] = (
                    "LastBackupSucceeded", "True", "LastBackupSucceeded", "Backup was successful")
        if status == (backup.get("status") or {}):
            return
        body = copy.deepcopy(backup)
        body["status"] = status
        self.kube.replace(cnpg(ns, "backups", name, "status"), body)
        if status.get("phase") != (backup.get("status") or {}).get("phase"):
            error = f" ({status['error']})" if status.get("error") else ""
            log(f"backup {ns}/{name}: {status['phase']}{error}")

    def reconcile_scheduled_backup(self, sched):
        meta, spec = sched["metadata"], sched.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        status = copy.deepcopy(sched.get("status") or {})
        if spec.get("suspend"):
            return
        children = self.kube.list(cnpg(ns, "backups"), f"cnpg.io/scheduled-backup={name}")
        if any((b.get("status") or {}).get("phase") not in ("completed", "failed") for b in children):
            return
        try:
            schedule = Cron(spec.get("schedule") or "")
        except ValueError as err:
            return self.note(("cron", ns, name), f"scheduledbackup {ns}/{name}: invalid schedule: {err}")
        current = now()
        if not status.get("lastCheckTime"):
            if spec.get("immediate"):
                self.create_scheduled_backup(sched, current, True)
                status.update(lastCheckTime=rfc3339(current), lastScheduleTime=rfc3339(current),
                              nextScheduleTime=rfc3339(schedule.next(current)))
            else:
                status["lastCheckTime"] = rfc3339(current)
        else:
            due = schedule.next(parse_time(status["lastCheckTime"]))
            if current < due:
                return
            self.create_scheduled_backup(sched, due, False)
            status.update(lastCheckTime=rfc3339(current), lastScheduleTime=rfc3339(due),
                          nextScheduleTime=rfc3339(schedule.next(current)))
        body = copy.deepcopy(sched)
        body["status"] = status
        self.kube.replace(cnpg(ns, "scheduledbackups", name, "status"), body)

    def create_scheduled_backup(self, sched, when, immediate):
        meta, spec = sched["metadata"], sched["spec"]
        ns = meta["namespace"]
        cluster_name = spec["cluster"]["name"]
        backup_meta = {"name": f"{meta['name']}-{compact(when)}", "namespace": ns,
                       "labels": {"cnpg.io/cluster": cluster_name, "cnpg.io/immediateBackup": str(immediate).lower(),
                                  "cnpg.io/scheduled-backup": meta["name"]}}
        owner = spec.get("backupOwnerReference") or "none"
        if owner == "self":
            backup_meta["ownerReferences"] = [owner_ref(sched)]
        elif owner == "cluster":
            cluster = self.kube.get(cnpg(ns, "clusters", cluster_name))
            if cluster is not None:
                backup_meta["ownerReferences"] = [owner_ref(cluster)]
        backup_spec = {"cluster": {"name": cluster_name}}
        for key in ("target", "method", "online", "onlineConfiguration", "pluginConfiguration"):
            if spec.get(key) is not None:
                backup_spec[key] = spec[key]
        backup = {"apiVersion": API_VERSION, "kind": "Backup", "metadata": backup_meta, "spec": backup_spec}
        if self.kube.create(cnpg(ns, "backups"), backup) is not None:
            log(f"scheduledbackup {ns}/{meta['name']}: created backup {backup_meta['name']}")

    # ---------------------------------------------------------------- loop

    def list_crs(self, plural):
        try:
            return self.kube.list(f"{CRD_BASE}/{plural}")
        except ApiError as err:
            if err.status == 404:
                self.note(("crd", plural), f"waiting: the {plural}.{GROUP} CRD is not installed")
                return None
            raise

    def run_once(self):
        scope = Scope(self.kube)
        self.note("scope", scope.describe() if scope.active
                  else f"waiting: no Ready CloudNativePG operator Deployment ({OPERATOR_SELECTOR})")
        if not scope.active:
            return
        clusters = self.list_crs("clusters")
        if clusters is None:
            return
        self.note(("crd", "clusters"), "the clusters CRD is installed")
        clusters = [c for c in clusters if scope.watches(c["metadata"]["namespace"])]
        by_key = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in clusters}
        for plural, handler in (("backups", lambda b: self.reconcile_backup(b, by_key)),
                                ("scheduledbackups", self.reconcile_scheduled_backup)):
            for obj in self.list_crs(plural) or []:
                if scope.watches(obj["metadata"]["namespace"]):
                    self.guarded(f"{plural} {obj['metadata']['namespace']}/{obj['metadata']['name']}", handler, obj)
        for cluster in clusters:
            self.guarded(f"cluster {cluster['metadata']['namespace']}/{cluster['metadata']['name']}",
                         self.reconcile_cluster, cluster, scope)

    def guarded(self, what, func, *args):
        """One object's trouble does not stop the others; API outages go up to the loop."""
        try:
            func(*args)
        except ApiError as err:
            if err.status >= 500:
                raise
            if err.status == 403 and "being terminated" in str(err):
                return  # its namespace is going away
            self.note(("error", what), f"{what}: {err}")


# --------------------------------------------------------------------------- cron


class Cron:
    """Six-field cron with seconds (robfig/cron as CloudNativePG uses it), UTC."""

    FIELDS = ((0, 59, None), (0, 59, None), (0, 23, None), (1, 31, None),
              (1, 12, {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}),
              (0, 6, {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}))
    DESCRIPTORS = {"@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
                   "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *",
                   "@hourly": "0 0 * * * *"}

    def __init__(self, text):
        text = text.strip()
        self.every = None
        if text.startswith("@every "):
            self.every = self._duration(text[len("@every "):])
            return
        text = self.DESCRIPTORS.get(text, text)
        parts = text.split()
        if len(parts) != 6:
            raise ValueError(f"expected 6 fields (seconds first), got {len(parts)}: {text!r}")
        parsed = [self._field(p, *spec) for p, spec in zip(parts, self.FIELDS)]
        self.secs, self.mins, self.hours, self.doms, self.months, self.dows = [field[0] for field in parsed]
        dom_star, dow_star = parsed[3][1], parsed[5][1]
        self.day_and = dom_star or dow_star

    @staticmethod
    def _duration(text):
        total = 0.0
        units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
        pos = 0
        for match in re.finditer(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * units[match.group(2)]
            pos = match.end()
        if pos != len(text) or total < 1:
            raise ValueError(f"bad @every duration {text!r}")
        return timedelta(seconds=int(total))

    @staticmethod
    def _field(text, lo, hi, names):
        values, star = set(), False

        def number(tok):
            tok = tok.upper()
            if names and tok in names:
                return names[tok]
            if not tok.isdigit():
                raise ValueError(f"bad value {tok!r}")
            return int(tok)

        for part in text.split(","):
            rng, unused, step_text = part.partition("/")
            step = int(step_text) if step_text else 1
            if step < 1:
                raise ValueError(f"bad step in {part!r}")
            if rng in ("*", "?"):
                start, end = lo, hi
                star = star or step == 1
            elif "-" in rng:
                start, end = (number(x) for x in rng.split("-", 1))
            else:
                start = number(rng)
                end = hi if step_text else start
            if not lo <= start <= end <= hi:
                raise ValueError(f"{part!r} is out of range {lo}-{hi}")
            values.update(range(start, end + 1, step))
        return values, star

    def next(self, after):
        if self.every:
            return after.replace(microsecond=0) + self.every
        start = after.replace(microsecond=0) + timedelta(seconds=1)
        for offset in range(366 * 5):
            day = (start + timedelta(days=offset)).date()
            if day.month not in self.months:
                continue
            dom_ok, dow_ok = day.day in self.doms, day.isoweekday() % 7 in self.dows
            if not ((dom_ok and dow_ok) if self.day_and else (dom_ok or dow_ok)):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.mins):
                    for sec in sorted(self.secs):
                        cand = datetime(day.year, day.month, day.day, hour, minute, sec, tzinfo=timezone.utc)
                        if cand >= start:
                            return cand
        raise ValueError("no time satisfies the schedule")


# --------------------------------------------------------------------------- main


def main():
    kubeconfig = os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config")).split(os.pathsep)[0]
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *args: STOP.set())
    kube = Kube(kubeconfig)
    operator = Operator(kube)
    log(f"CloudNativePG 1.30.0 stand-in up (kubeconfig {kubeconfig})")
    while not STOP.is_set():
        try:
            operator.run_once()
            operator.note("api", "API server reachable")
        except (ApiError, ApiException, urllib3.exceptions.HTTPError, OSError, ConfigException) as err:
            kube.reset()
            reason = re.sub(r" at 0x[0-9a-f]+", "", str(err).splitlines()[0] if str(err) else "")[:200]
            operator.note("api", f"waiting: API server not usable ({type(err).__name__}: {reason})")
        STOP.wait(1)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
