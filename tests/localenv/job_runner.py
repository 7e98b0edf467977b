"""Runs the containers of the collection's backup/restore Job pods for real, on this machine.

KWOK runs no containers: its Stages turn Job pods Succeeded without running
anything. This runner plays the kubelet for one kind of pod instead: pods
owned by a Job, in a namespace labelled ``localenv.langfuse-ops.io/run-jobs=true``,
whose every container uses an image it can stand in for (the postgres and
aws-cli images of roles/backup_cron/defaults/main.yml, whatever the tag):

* postgres -> Debian's PostgreSQL client binaries (/usr/lib/postgresql/15/bin)
* aws-cli  -> the collection's AWS CLI venv (.build/awscli/bin/aws, `make venv`)
* bash, sh, curl, coreutils from the host in both.

How pods get here: at start the runner applies a MutatingAdmissionPolicy
(``localenv-job-runner``) bound to the opted-in namespaces; it labels such pods
``localenv.langfuse-ops.io/job-runner=true`` when they are created. On a
cluster whose KWOK configuration leaves labelled pods alone (kwok_config.py
does) the pods are scheduled onto KWOK nodes as usual and `kubectl logs`
reads the runner's log files through kwok's Logs CRD. On an older cluster
(KWOK's stages would complete them at once) the policy also adds a scheduling
gate, so the pods stay unscheduled and the runner runs them there; their logs
are then only in the files (the pod's ``localenv.langfuse-ops.io/job-runner-logs``
annotation names the directory).

Per pod: env from value/valueFrom (secretKeyRef, configMapKeyRef, fieldRef)
and envFrom, read from the live Secrets and ConfigMaps, with $(VAR)
expansion; Secret and ConfigMap volumes written to a private directory,
emptyDir volumes as directories the containers share; each container in its
own mount namespace and root (a tmpfs holding read-only binds of the host's
/usr and /etc, the volumes at their mountPaths, /dev and /proc; read-only when
readOnlyRootFilesystem), as runAsUser/runAsGroup/fsGroup, no-new-privs when
allowPrivilegeEscalation is false; command and args exactly as written, the
containers of a pod concurrently, init containers first, each under strace
(execve only: every program it starts and its arguments, never its
environment, into <container>.execve beside its log). Deadline: the pod's
activeDeadlineSeconds, else its Job's, else --default-timeout; capped by
--max-timeout. The exit codes go back into the pod's status (terminated
containerStatuses, phase Succeeded/Failed), so the Job controller does the
rest (backoffLimit, CronJob history).

Only loopback: env values naming a cluster Service (``*.svc[.cluster.local]``,
or a Service of the pod's namespace) on a port that KWOK's ClusterPortForward
sends to a local server are rewritten to that server (127.0.0.1:<port>),
exactly as a port-forward to such a pod would go; others are left as they are
(and logged).

Usage: job_runner.py --state DIR --kwok-config FILE  (KUBECONFIG names the cluster; needs root)
"""
import json
import os
import sys


def sandbox(spec_path):
    """The container side, run as `unshare --mount ... job_runner.py --sandbox SPEC` (before heavy imports)."""
    import subprocess
    with open(spec_path) as f:
        spec = json.load(f)
    os.unlink(spec_path)
    root = spec["root"]
    clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def mount(*args):
        subprocess.run(["/usr/bin/mount", *args], check=True, env=clean)

    mount("-t", "tmpfs", "-o", "mode=0755,size=16m", "localenv-root", root)
    for m in spec["mounts"]:
        dst = root + m["dst"]
        if m["kind"] == "symlink":
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(m["src"], dst)
            continue
        if os.path.isdir(m["src"]):
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "a").close()
        mount("--rbind" if m["kind"] == "rbind" else "--bind", m["src"], dst)
        if m.get("ro"):
            mount("-o", "remount,bind,ro", dst)
    os.makedirs(root + spec["workdir"], exist_ok=True)
    if spec["read_only_root"]:
        mount("-o", "remount,ro", root)
    user = spec["user"]
    argv = ["/usr/bin/setpriv", f"--reuid={user['uid']}", f"--regid={user['gid']}"]
    argv.append("--groups=" + ",".join(map(str, user["groups"])) if user["groups"] else "--clear-groups")
    if spec["no_new_privs"]:
        argv.append("--no-new-privs")
    if spec["drop_all_caps"]:
        argv += ["--inh-caps=-all", "--bounding-set=-all"]
    os.chroot(root)
    os.chdir(spec["workdir"])
    os.execve(argv[0], argv + ["--"] + spec["argv"], spec["env"])


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--sandbox":
    sandbox(sys.argv[2])

# ---- the runner ----
import argparse  # noqa: E402
import base64  # noqa: E402
import datetime  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kwok_config import JOB_RUNNER_LABEL  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OPT_IN_LABEL = "localenv.langfuse-ops.io/run-jobs"
LOGS_ANNOTATION = "localenv.langfuse-ops.io/job-runner-logs"
CLAIM_ANNOTATION = "localenv.langfuse-ops.io/job-runner-claim"
POLICY = "localenv-job-runner"
PG_BIN = "/usr/lib/postgresql/15/bin"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS_DIR = "/opt/localenv/bin"
log = logging.getLogger("job-runner")


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def repository(image):
    """docker.io/amazon/aws-cli:2.15.61 -> docker.io/amazon/aws-cli (digest and tag dropped)."""
    name = image.split("@", 1)[0]
    return name[:name.rfind(":")] if name.rfind(":") > name.rfind("/") else name


def known_images(defaults=REPO / "roles" / "backup_cron" / "defaults" / "main.yml"):
    d = yaml.safe_load(Path(defaults).read_text())
    return {repository(d["backup_cron_postgres_image"]): "postgres", repository(d["backup_cron_aws_cli_image"]): "aws-cli"}


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, anything else stays."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


# ---- what the running KWOK does ----
def read_kwok(path):
    """(forwards {port: (address, port)}, KWOK leaves labelled pods alone, kwok serves Logs objects)."""
    forwards, leaves_alone, logs_crd = {}, False, False
    if not path or not Path(path).is_file():
        return forwards, leaves_alone, logs_crd
    stages = {}
    for doc in yaml.safe_load_all(Path(path).read_text()):
        if not isinstance(doc, dict):
            continue
        kind = doc.get("kind")
        if kind == "ClusterPortForward":
            for fw in doc["spec"].get("forwards", []):
                for port in fw.get("ports", []):
                    forwards[int(port)] = (fw["target"]["address"], int(fw["target"]["port"]))
        elif kind == "Stage" and doc["spec"]["resourceRef"]["kind"] == "Pod":
            stages[doc["metadata"]["name"]] = json.dumps(doc["spec"].get("selector", {}))
        elif kind == "KwokctlConfiguration":
            for comp in doc.get("components", []):
                if comp.get("name") == "kwok-controller":
                    logs_crd = any(a.startswith("--enable-crds=") and "Logs" in a[len("--enable-crds="):].split(",")
                                   for a in comp.get("args", []))
    leaves_alone = all(JOB_RUNNER_LABEL in stages.get(name, "") for name in ("pod-ready", "pod-complete"))
    return forwards, leaves_alone, logs_crd


def admission_policy(images, gate):
    prefixes = json.dumps(sorted(images))
    labels = f'{{"{JOB_RUNNER_LABEL}": "true"}}'
    spec = f"spec: Object.spec{{schedulingGates: [Object.spec.schedulingGates{{name: \"{JOB_RUNNER_LABEL}\"}}]}}"
    expression = f"Object{{metadata: Object.metadata{{labels: {labels}}}{', ' + spec if gate else ''}}}"
    known = f"{prefixes}.exists(p, c.image == p || c.image.startsWith(p + ':') || c.image.startsWith(p + '@'))"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": POLICY, "labels": {"app.kubernetes.io/managed-by": "localenv-job-runner"}},
        "spec": {
            "failurePolicy": "Fail", "reinvocationPolicy": "Never",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                                    "resources": ["pods"]}]},
            "matchConditions": [
                {"name": "owned-by-a-job",
                 "expression": "has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, r.kind == 'Job')"},
                {"name": "every-image-known",
                 "expression": f"object.spec.containers.all(c, {known}) && "
                               f"(!has(object.spec.initContainers) || object.spec.initContainers.all(c, {known}))"},
            ],
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": expression}}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY, "labels": {"app.kubernetes.io/managed-by": "localenv-job-runner"}},
        "spec": {"policyName": POLICY, "matchResources": {"namespaceSelector": {"matchLabels": {OPT_IN_LABEL: "true"}}}},
    }
    return policy, binding


# ---- Service names -> the local servers KWOK port-forwards to ----
SERVICE_FQDN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.svc(\.cluster\.local)?\.?$")
URL = re.compile(r"^(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/?#]*@)?)(?P<host>[^:/?#\[\]]+)(?::(?P<port>\d+))?(?P<rest>[/?#].*)?$")
DEFAULT_PORTS = {"http": 80, "https": 443, "postgres": 5432, "postgresql": 5432, "redis": 6379}


class ServiceMap:
    def __init__(self, forwards, service_exists):
        self.forwards = forwards
        self.service_exists = service_exists  # (name, namespace) -> bool

    def is_service(self, host, namespace):
        if SERVICE_FQDN.match(host):
            return True
        parts = host.split(".")
        if len(parts) == 1:
            return self.service_exists(parts[0], namespace)
        if len(parts) == 2:
            return self.service_exists(parts[0], parts[1])
        return False

    def target(self, port):
        return self.forwards.get(int(port))

    @staticmethod
    def langfuse_service(m, port, namespace):
        """The URL's path, and for a Langfuse port (3000, 3030: the stand-in Langfuse server) the Service's
        namespace as ?localenv-namespace=: the stand-in answers for that namespace's pods, as the Service would."""
        rest = m["rest"] or ""
        if port not in (3000, 3030) or not rest.startswith("/") or "#" in rest:
            return rest
        parts = m["host"].split(".")
        ns = parts[1] if len(parts) > 1 else namespace
        return f"{rest}{'&' if '?' in rest else '?'}localenv-namespace={ns}"

    def rewrite(self, env, namespace, notes):
        out = dict(env)
        for key, value in env.items():
            m = URL.match(value)
            if m and self.is_service(m["host"], namespace):
                port = int(m["port"]) if m["port"] else DEFAULT_PORTS.get(m["head"].split(":")[0].lower())
                tgt = port and self.target(port)
                if tgt:
                    out[key] = f"{m['head']}{tgt[0]}:{tgt[1]}{self.langfuse_service(m, port, namespace)}"
                    notes.append(f"{key}: {m['host']}:{port} -> {tgt[0]}:{tgt[1]}")
                else:
                    notes.append(f"{key}: {m['host']}:{port} is a Service with no local forward; left as it is")
        for key, value in env.items():
            if not key.endswith("HOST") or not value or not self.is_service(value, namespace):
                continue
            port_key = key[:-4] + "PORT"
            port = env.get(port_key) or ("5432" if key == "PGHOST" else None)
            tgt = port and port.isdigit() and self.target(port)
            if tgt:
                out[key] = tgt[0]
                out[port_key] = str(tgt[1])
                notes.append(f"{key}/{port_key}: {value}:{port} -> {tgt[0]}:{tgt[1]}")
            else:
                notes.append(f"{key}: {value} is a Service with no local forward for port {port}; left as it is")
        return out


class ConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError: the pod waits, it does not fail."""


class Unsupported(Exception):
    """Something this runner cannot stand in for: the pod fails, saying so."""


# ---- one pod ----
class PodRun:
    def __init__(self, runner, pod):
        self.runner, self.pod = runner, pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = runner.pods_dir / self.ns / f"{self.name}-{self.uid[:8]}"
        self.logs = self.dir / "logs"
        self.cancelled = threading.Event()
        self.procs = {}
        self.lock = threading.Lock()

    # -- API helpers --
    def patch_status(self, status):
        try:
            self.runner.core.patch_namespaced_pod_status(self.name, self.ns, {"status": status})
        except self.runner.ApiException as e:
            if e.status != 404:
                raise

    def conditions(self, **states):
        conds = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}
        for ctype, (status, reason) in states.items():
            old = conds.get(ctype, {})
            c = {"type": ctype, "status": status, "lastTransitionTime": now() if old.get("status") != status else old.get("lastTransitionTime")}
            if reason:
                c["reason"] = reason
            conds[ctype] = c
        return list(conds.values())

    # -- what the pod needs --
    def secret(self, name):
        return {k: base64.b64decode(v) for k, v in (self.runner.read("secret", self.ns, name).get("data") or {}).items()}

    def config_map(self, name):
        cm = self.runner.read("configmap", self.ns, name)
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        return data

    def source(self, kind, name, optional):
        try:
            return self.secret(name) if kind == "secret" else self.config_map(name)
        except self.runner.ApiException as e:
            if e.status == 404 and optional:
                return None
            if e.status == 404:
                raise ConfigError(f'{kind} "{name}" not found') from None
            raise

    def field(self, path):
        meta, spec, status = self.pod["metadata"], self.pod["spec"], self.pod.get("status") or {}
        simple = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
                  "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
                  "status.podIP": status.get("podIP", ""), "status.hostIP": status.get("hostIP", "")}
        if path in simple:
            return simple[path]
        m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
        if m:
            return (meta.get(m[1]) or {}).get(m[2], "")
        raise Unsupported(f"fieldRef {path} is not supported by the localenv job runner")

    def env(self, container):
        env = {}
        for src in container.get("envFrom") or []:
            ref = src.get("secretRef") or src.get("configMapRef")
            kind = "secret" if "secretRef" in src else "configmap"
            data = self.source(kind, ref["name"], ref.get("optional", False)) or {}
            for key, value in data.items():
                env[src.get("prefix", "") + key] = value.decode()
        for item in container.get("env") or []:
            name, vf = item["name"], item.get("valueFrom")
            if not vf:
                env[name] = expand(item.get("value", ""), env)
                continue
            if "secretKeyRef" in vf or "configMapKeyRef" in vf:
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                kind = "secret" if "secretKeyRef" in vf else "configmap"
                data = self.source(kind, ref["name"], ref.get("optional", False))
                if data is None:
                    continue
                if ref["key"] not in data:
                    if ref.get("optional", False):
                        continue
                    raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind} {self.ns}/{ref["name"]}')
                env[name] = data[ref["key"]].decode()
            elif "fieldRef" in vf:
                env[name] = self.field(vf["fieldRef"]["fieldPath"])
            else:
                raise Unsupported(f"env {name}: {list(vf)} is not supported by the localenv job runner")
        return env

    def volumes(self):
        """Materialises the pod's volumes under self.dir/volumes; returns {name: (path, always read-only)}."""
        spec = self.pod["spec"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        out = {}
        for vol in spec.get("volumes") or []:
            path = self.dir / "volumes" / vol["name"]
            if "emptyDir" in vol:
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o777)  # what the kubelet makes
                out[vol["name"]] = (path, False)
            elif "configMap" in vol or "secret" in vol:
                kind = "configmap" if "configMap" in vol else "secret"
                src = vol.get("configMap") or vol.get("secret")
                name = src.get("name") if kind == "configmap" else src.get("secretName")
                data = self.source(kind, name, src.get("optional", False)) or {}
                items = src.get("items") or [{"key": k, "path": k} for k in sorted(data)]
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o755)
                for item in items:
                    if item["key"] not in data:
                        if src.get("optional", False):
                            continue
                        raise ConfigError(f'configmap/secret {name}: no key {item["key"]}')
                    target = path / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data[item["key"]])
                    os.chmod(target, item.get("mode", src.get("defaultMode", 0o644)))
                    if fs_group is not None:
                        os.chown(target, 0, fs_group)
                out[vol["name"]] = (path, True)
            elif "projected" in vol:  # e.g. the kube-api-access-* volume of a pod that mounts its token
                src = vol["projected"]
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o755)
                for source in src.get("sources") or []:
                    for rel, data, mode in self.projection(source):
                        target = path / rel
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(data)
                        os.chmod(target, mode if mode is not None else src.get("defaultMode", 0o644))
                        if fs_group is not None:
                            os.chown(target, 0, fs_group)
                out[vol["name"]] = (path, True)
            else:
                kinds = [k for k in vol if k != "name"]
                raise Unsupported(f"volume {vol['name']}: {kinds} is not supported by the localenv job runner")
        return out

    def projection(self, source):
        """(path, bytes, mode) of one source of a projected volume."""
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            request = {"spec": {"audiences": [sat["audience"]] if sat.get("audience") else None,
                                "expirationSeconds": sat.get("expirationSeconds", 3607),
                                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid}}}
            token = self.runner.core.create_namespaced_service_account_token(
                self.pod["spec"].get("serviceAccountName") or "default", self.ns, request)
            return [(sat["path"], token.status.token.encode(), None)]
        if "downwardAPI" in source:
            return [(i["path"], self.field(i["fieldRef"]["fieldPath"]).encode(), i.get("mode")) for i in source["downwardAPI"].get("items") or []
                    if "fieldRef" in i]
        kind = "configmap" if "configMap" in source else "secret" if "secret" in source else None
        if kind is None:
            raise Unsupported(f"projected source {list(source)} is not supported by the localenv job runner")
        src = source.get("configMap") or source.get("secret")
        data = self.source(kind, src["name"], src.get("optional", False)) or {}
        items = src.get("items") or [{"key": k, "path": k} for k in sorted(data)]
        missing = [i["key"] for i in items if i["key"] not in data]
        if missing and not src.get("optional", False):
            raise ConfigError(f"{kind} {src['name']}: no key {missing[0]}")
        return [(i["path"], data[i["key"]], i.get("mode")) for i in items if i["key"] in data]

    def sandbox_spec(self, container, volumes, env):
        pod_sc = self.pod["spec"].get("securityContext") or {}
        sc = container.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser", 0))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", 0))  # a numeric user alone runs as group 0
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and uid == 0:
            raise ConfigError("container has runAsNonRoot and image will run as root")
        groups = ([pod_sc["fsGroup"]] if pod_sc.get("fsGroup") is not None else []) + list(pod_sc.get("supplementalGroups") or [])
        tool = self.runner.images[repository(container["image"])]
        argv = container.get("command")
        if not argv:
            if tool != "aws-cli":
                raise Unsupported(f"container {container['name']}: the {tool} image's entrypoint is not emulated; give a command")
            argv = ["aws"]
        argv = [expand(a, env) for a in list(argv) + list(container.get("args") or [])]
        env = dict(env)
        env.setdefault("PATH", (PG_BIN + ":" if tool == "postgres" else TOOLS_DIR + ":") + SYSTEM_PATH)
        env.setdefault("HOSTNAME", self.pod["spec"].get("hostname") or self.name)
        env.setdefault("HOME", "/root" if uid == 0 else "/")
        base, late = self.runner.system_mounts(tool)
        mounts = list(base)
        for vm in sorted(container.get("volumeMounts") or [], key=lambda m: m["mountPath"].count("/")):
            if vm["name"] not in volumes:
                raise ConfigError(f"volumeMount {vm['name']}: no such volume")
            path, always_ro = volumes[vm["name"]]
            src = path / vm["subPath"] if vm.get("subPath") else path
            mounts.append({"kind": "bind", "src": str(src), "dst": vm["mountPath"], "ro": always_ro or vm.get("readOnly", False)})
        mounts += late
        root = self.dir / "roots" / container["name"]
        root.mkdir(parents=True, exist_ok=True)
        return {"root": str(root), "mounts": mounts, "workdir": container.get("workingDir") or "/",
                "read_only_root": bool(sc.get("readOnlyRootFilesystem")),
                "user": {"uid": uid, "gid": gid, "groups": groups},
                "no_new_privs": sc.get("allowPrivilegeEscalation") is False,
                "drop_all_caps": "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
                "argv": argv, "env": env}

    # -- running --
    def start(self, container, spec):
        path = self.dir / "specs" / f"{container['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        logfile = open(self.logs / f"{container['name']}.log", "a")
        # Every program the container starts, with its arguments (not its environment), into <container>.execve:
        # the tests read there that no secret reaches a command line.
        trace = (["/usr/bin/strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=execve", "-s", "65535",
                  "-o", str(self.logs / f"{container['name']}.execve"), "--"] if os.path.exists("/usr/bin/strace") else [])
        proc = subprocess.Popen([*trace, "/usr/bin/unshare", "--mount", "--propagation", "private", "--",
                                 sys.executable, os.path.abspath(__file__), "--sandbox", str(path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, env={"PATH": "/usr/bin:/bin"})
        lock = threading.Lock()
        pumps = [threading.Thread(target=pump, args=(stream, name, logfile, lock), daemon=True)
                 for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        for p in pumps:
            p.start()
        with self.lock:
            self.procs[container["name"]] = proc
        return proc, pumps, logfile, now()

    def kill_all(self):
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, started, deadline):
        """Waits for the started containers; returns {name: (exit code, startedAt, finishedAt)} and whether the deadline hit."""
        results, timed_out = {}, False
        for name, (proc, pumps, logfile, started_at) in started.items():
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if self.cancelled.is_set() or time.monotonic() > deadline:
                        timed_out = timed_out or not self.cancelled.is_set()
                        self.kill_all()
            for p in pumps:
                p.join(10)
            logfile.close()
            rc = proc.returncode
            results[name] = (128 - rc if rc < 0 else rc, started_at, now())
        return results, timed_out

    def terminated(self, container, code, started_at, finished_at, message=None):
        state = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started_at, "finishedAt": finished_at}
        if message:
            state["message"] = message
        return {"name": container["name"], "image": container["image"], "imageID": "", "ready": False, "restartCount": 0,
                "started": False, "state": {"terminated": state}}

    def timeout(self):
        spec = self.pod["spec"]
        seconds = spec.get("activeDeadlineSeconds")
        if seconds is None:
            owner = next((r for r in self.pod["metadata"].get("ownerReferences") or [] if r["kind"] == "Job"), None)
            if owner:
                try:
                    seconds = self.runner.batch.read_namespaced_job(owner["name"], self.ns).spec.active_deadline_seconds
                except self.runner.ApiException:
                    seconds = None
        return min(seconds or self.runner.default_timeout, self.runner.max_timeout)

    def fail(self, reason, message, containers):
        statuses = [self.terminated(c, 1, now(), now(), message) for c in containers]
        self.patch_status({"phase": "Failed", "reason": reason, "message": message, "containerStatuses": statuses,
                           "conditions": self.conditions(Ready=("False", "PodFailed"), ContainersReady=("False", "PodFailed"))})

    def run(self):
        spec = self.pod["spec"]
        containers, inits = spec["containers"], spec.get("initContainers") or []
        begin = time.monotonic()
        deadline = begin + self.timeout()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            self.logs.mkdir(exist_ok=True)
            for c in inits + containers:
                if repository(c["image"]) not in self.runner.images:
                    raise Unsupported(f"image {c['image']} is not one the localenv job runner stands in for")
            notes, waiting_reported = [], False
            while True:
                try:
                    volumes = self.volumes()
                    specs = {}
                    for c in inits + containers:
                        env = self.runner.services.rewrite(self.env(c), self.ns, notes)
                        specs[c["name"]] = self.sandbox_spec(c, volumes, env)
                    break
                except ConfigError as e:
                    if not waiting_reported:
                        log.info("%s/%s waits: %s", self.ns, self.name, e)
                        self.patch_status({"containerStatuses": [
                            {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0, "started": False,
                             "state": {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}} for c in containers]})
                        waiting_reported = True
                    if self.cancelled.wait(2):
                        return
                    if time.monotonic() > deadline:
                        self.fail("DeadlineExceeded", f"CreateContainerConfigError until the deadline: {e}", containers)
                        return
            for note in dict.fromkeys(notes):
                log.info("%s/%s env %s", self.ns, self.name, note)
            started_at = now()
            self.patch_status({"phase": "Running", "startTime": started_at, "hostIP": "127.0.0.1",
                               "conditions": self.conditions(Initialized=("True", None) if not inits else ("False", "ContainersNotInitialized"),
                                                             Ready=("False", "ContainersNotReady"),
                                                             ContainersReady=("False", "ContainersNotReady")),
                               "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                                                      "restartCount": 0, "started": not inits,
                                                      "state": {"running": {"startedAt": started_at}} if not inits else
                                                      {"waiting": {"reason": "PodInitializing"}}} for c in containers]})
            self.runner.wire_logs(self, inits + containers)
            init_statuses = []
            for c in inits:
                results, timed_out = self.wait({c["name"]: self.start(c, specs[c["name"]])}, deadline)
                code, s, f = results[c["name"]]
                init_statuses.append(self.terminated(c, code, s, f))
                if self.cancelled.is_set():
                    return
                if code != 0 or timed_out:
                    self.finish(containers, {}, init_statuses, timed_out, failed_init=True)
                    return
            if inits:
                self.patch_status({"initContainerStatuses": init_statuses,
                                   "conditions": self.conditions(Initialized=("True", None))})
            started = {c["name"]: self.start(c, specs[c["name"]]) for c in containers}
            results, timed_out = self.wait(started, deadline)
            if self.cancelled.is_set():
                log.info("%s/%s: deleted while running; its processes were killed", self.ns, self.name)
                return
            self.finish(containers, results, init_statuses, timed_out)
        except Unsupported as e:
            log.warning("%s/%s: %s", self.ns, self.name, e)
            self.fail("Unsupported", str(e), containers)
        except Exception as e:  # noqa: BLE001 (the pod must not stay Running when the runner trips)
            log.exception("%s/%s: the runner failed", self.ns, self.name)
            self.fail("JobRunnerError", f"the localenv job runner failed: {e}", containers)
        finally:
            self.kill_all()
            for sub in ("volumes", "specs", "roots"):
                shutil.rmtree(self.dir / sub, ignore_errors=True)
            self.runner.done(self)

    def finish(self, containers, results, init_statuses, timed_out, failed_init=False):
        statuses = []
        for c in containers:
            if c["name"] in results:
                code, s, f = results[c["name"]]
                statuses.append(self.terminated(c, code, s, f))
            else:
                # An init container failed: the app containers never started.
                statuses.append({"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                                 "started": False, "state": {"waiting": {"reason": "PodInitializing"}}})
        ok = not timed_out and not failed_init and all(r[0] == 0 for r in results.values())
        status = {"phase": "Succeeded" if ok else "Failed", "containerStatuses": statuses,
                  "conditions": self.conditions(Ready=("False", "PodCompleted" if ok else "PodFailed"),
                                                ContainersReady=("False", "PodCompleted" if ok else "PodFailed"))}
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if timed_out:
            status.update(reason="DeadlineExceeded", message="Pod was active on the node longer than the specified deadline")
        log.info("%s/%s %s: %s", self.ns, self.name, status["phase"],
                 ", ".join(f"{n}={r[0]}" for n, r in results.items()) or "init container failed")
        self.patch_status(status)


def pump(stream, name, logfile, lock):
    """Copies one stream of a container into its log file in the CRI format kwok's log server reads."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        tag = "F" if line.endswith("\n") else "P"
        ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with lock:
            logfile.write(f"{ts} {name} {tag} {line.rstrip(chr(10))}\n")
            logfile.flush()
    stream.close()


# ---- the runner ----
class Runner:
    def __init__(self, args):
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        config.load_kube_config()
        self.ApiException = ApiException
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.state = Path(args.state)
        self.pods_dir = self.state / "pods"
        self.default_timeout, self.max_timeout = args.default_timeout, args.max_timeout
        self.images = known_images()
        forwards, self.scheduled, self.logs_crd = read_kwok(args.kwok_config)
        self.services = ServiceMap(forwards, self.service_exists)
        self.id = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.active, self.seen, self.lock = {}, set(), threading.Lock()
        self.aws = self.find_aws(args.aws)
        self.tools = self.state / "tools"

    @staticmethod
    def find_aws(explicit):
        for candidate in [explicit, REPO / ".build" / "awscli" / "bin" / "aws", REPO / ".venv" / "bin" / "aws"]:
            if candidate and Path(candidate).is_file():
                return Path(candidate).resolve()
        sys.exit("job runner: no AWS CLI (run `make venv`, or give --aws)")

    def system_mounts(self, tool):
        """(base, late): the host's system directories, mounted first, and the tool's own directories, mounted
        after the pod's volumes. The AWS CLI venv must sit at its own path (its scripts' shebangs name it), which
        may lie under a volume's mountPath: CI clones the repository under /tmp, and the backup pods mount an
        emptyDir at /tmp that would hide it."""
        mounts, late = [], []
        for name in ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / name
            if host.is_symlink():
                mounts.append({"kind": "symlink", "src": os.readlink(host), "dst": f"/{name}"})
            elif host.is_dir():
                mounts.append({"kind": "bind", "src": str(host), "dst": f"/{name}", "ro": True})
        mounts += [{"kind": "rbind", "src": "/dev", "dst": "/dev"}, {"kind": "rbind", "src": "/proc", "dst": "/proc"}]
        if tool == "aws-cli":
            venv = self.aws.parent.parent
            late.append({"kind": "bind", "src": str(venv), "dst": str(venv), "ro": True})
            cfg = venv / "pyvenv.cfg"
            if cfg.is_file():
                home = next((line.split("=", 1)[1].strip() for line in cfg.read_text().splitlines() if line.startswith("home")), None)
                if home and not home.startswith("/usr/"):
                    base = str(Path(home).parent)
                    late.append({"kind": "bind", "src": base, "dst": base, "ro": True})
            late.append({"kind": "bind", "src": str(self.tools / "aws-cli"), "dst": TOOLS_DIR, "ro": True})
        return mounts, late

    def read(self, kind, ns, name):
        obj = self.core.read_namespaced_secret(name, ns) if kind == "secret" else self.core.read_namespaced_config_map(name, ns)
        return self.api.sanitize_for_serialization(obj)

    def service_exists(self, name, ns):
        try:
            self.core.read_namespaced_service(name, ns)
            return True
        except self.ApiException:
            return False

    def ensure(self, obj, plural):
        group, version = obj["apiVersion"].split("/")
        name = obj["metadata"]["name"]
        try:
            old = self.custom.get_cluster_custom_object(group, version, plural, name)
        except self.ApiException as e:
            if e.status != 404:
                raise
            self.custom.create_cluster_custom_object(group, version, plural, obj)
            return
        obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=old["metadata"]["resourceVersion"]))
        self.custom.replace_cluster_custom_object(group, version, plural, name, obj)

    def setup(self):
        (self.tools / "aws-cli").mkdir(parents=True, exist_ok=True)
        link = self.tools / "aws-cli" / "aws"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self.aws)
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pods_dir, 0o700)
        policy, binding = admission_policy(self.images, gate=not self.scheduled)
        self.ensure(policy, "mutatingadmissionpolicies")
        self.ensure(binding, "mutatingadmissionpolicybindings")
        log.info("images: %s; %s; pod logs %s; Service forwards %s", ", ".join(f"{k} -> {v}" for k, v in self.images.items()),
                 "KWOK leaves labelled pods alone: they are scheduled" if self.scheduled else
                 "KWOK would complete labelled pods: they are gated and run unscheduled",
                 "through kwok's Logs objects" if self.logs_crd and self.scheduled else "in files only",
                 {p: f"{a}:{t}" for p, (a, t) in sorted(self.services.forwards.items())})

    def wire_logs(self, run, containers):
        self.core.patch_namespaced_pod(run.name, run.ns, {"metadata": {"annotations": {LOGS_ANNOTATION: str(run.logs)}}})
        if not (self.logs_crd and self.scheduled):
            return
        body = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                "metadata": {"name": run.name, "namespace": run.ns,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": run.name, "uid": run.uid}]},
                "spec": {"logs": [{"containers": [c["name"]], "logsFile": str(run.logs / f"{c['name']}.log")} for c in containers]}}
        try:
            self.custom.create_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1", run.ns, "logs", body)
        except self.ApiException as e:
            log.warning("%s/%s: no Logs object for kubectl logs: %s", run.ns, run.name, e.reason)

    def claim(self, pod):
        """Takes the pod, unless another runner did (the resourceVersion makes the patch a compare-and-swap)."""
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod(meta["name"], meta["namespace"], {"metadata": {
                "resourceVersion": meta["resourceVersion"], "annotations": {CLAIM_ANNOTATION: self.id}}})
            return True
        except self.ApiException as e:
            if e.status in (404, 409):
                return False
            raise

    def handle(self, kind, pod):
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        uid = meta["uid"]
        with self.lock:
            run = self.active.get(uid)
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            if run:
                run.cancelled.set()
            if kind == "DELETED":
                shutil.rmtree(self.pods_dir / meta["namespace"] / f"{meta['name']}-{uid[:8]}", ignore_errors=True)
            return
        if run or uid in self.seen or status.get("phase") in ("Succeeded", "Failed"):
            return
        claimant = (meta.get("annotations") or {}).get(CLAIM_ANNOTATION)
        if claimant and claimant != self.id:
            if self.claimant_alive(claimant):
                return  # another runner on this cluster has it
            if status.get("phase") == "Running":
                self.seen.add(uid)
                PodRun(self, pod).fail("JobRunnerRestarted", "the localenv job runner running this pod stopped", spec["containers"])
                return
        if self.scheduled and not spec.get("nodeName"):
            return  # the scheduler places it first, KWOK then leaves it alone
        if not self.claim(pod):
            return
        self.seen.add(uid)
        run = PodRun(self, pod)
        with self.lock:
            self.active[uid] = run
        log.info("%s/%s: running %s", meta["namespace"], meta["name"], ", ".join(c["name"] for c in spec["containers"]))
        threading.Thread(target=run.run, name=f"pod-{meta['name']}", daemon=True).start()

    def claimant_alive(self, claimant):
        host, rest = claimant.rpartition("-")[0].rpartition("-")[::2]
        if host != os.uname().nodename:
            return True
        try:
            os.kill(int(rest), 0)
            return True
        except (ValueError, ProcessLookupError):
            return False

    def done(self, run):
        with self.lock:
            self.active.pop(run.uid, None)

    def stop(self, *_):
        with self.lock:
            runs = list(self.active.values())
        for run in runs:
            run.cancelled.set()
            run.kill_all()
        logging.shutdown()
        os._exit(0)  # now: the main thread may sit in a watch read

    def loop(self):
        from kubernetes import watch
        selector = f"{JOB_RUNNER_LABEL}=true"
        ready = self.state / "ready"
        while True:
            try:
                pods = self.core.list_pod_for_all_namespaces(label_selector=selector)
                live = set()
                for pod in pods.items:
                    p = self.api.sanitize_for_serialization(pod)
                    live.add(f"{p['metadata']['name']}-{p['metadata']['uid'][:8]}")
                    self.handle("ADDED", p)
                self.collect_garbage(live)
                if not ready.exists():
                    ready.write_text(f"{os.getpid()}\n")
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces, label_selector=selector,
                                              resource_version=pods.metadata.resource_version, timeout_seconds=30)
                for event in stream:
                    self.handle(event["type"], self.api.sanitize_for_serialization(event["object"]))
            except self.ApiException as e:
                if e.status != 410:
                    log.warning("API: %s %s; listing again", e.status, e.reason)
                    time.sleep(1)
            except Exception as e:  # noqa: BLE001 (a dropped watch is listed again)
                log.warning("watch: %s; listing again", e)
                time.sleep(1)

    def collect_garbage(self, live):
        """Drops the directories (logs) of pods that are gone."""
        for ns_dir in self.pods_dir.iterdir() if self.pods_dir.is_dir() else []:
            for pod_dir in ns_dir.iterdir():
                with self.lock:
                    busy = any(r.dir == pod_dir for r in self.active.values())
                if pod_dir.name not in live and not busy:
                    shutil.rmtree(pod_dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--state", required=True, help="directory for pod volumes, logs and the ready marker")
    parser.add_argument("--kwok-config", default="", help="the configuration the running kwok-controller was given")
    parser.add_argument("--aws", default="", help="the aws CLI that stands in for the aws-cli image")
    parser.add_argument("--default-timeout", type=int, default=int(os.environ.get("LOCALENV_JOB_RUNNER_TIMEOUT", "600")),
                        help="seconds a pod may run when neither it nor its Job sets activeDeadlineSeconds")
    parser.add_argument("--max-timeout", type=int, default=int(os.environ.get("LOCALENV_JOB_RUNNER_MAX_TIMEOUT", "3600")),
                        help="seconds any pod may run at most, whatever its deadline")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    if os.geteuid() != 0:
        sys.exit("job runner: needs root (a mount namespace and bind mounts per container)")
    Path(args.state).mkdir(parents=True, exist_ok=True)
    (Path(args.state) / "ready").unlink(missing_ok=True)
    runner = Runner(args)
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    runner.setup()
    runner.loop()


if __name__ == "__main__":
    main()
