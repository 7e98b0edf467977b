# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The namespace lock, on the controller (see plugins/modules/namespace_lock.py for its documentation).

An action plugin, not a module: it must know the ansible-playbook process whose run holds the lock (this
worker's parent), so that its renewer can tell when that run has died, and it needs no remote host.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import socket
import subprocess
import sys
import uuid

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.langfuse_ops.platform.plugins.module_utils import namespace_lock as lock

try:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    HAS_KUBERNETES = True
except ImportError:  # pragma: no cover
    HAS_KUBERNETES = False

ARGUMENT_SPEC = {
    "namespace": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["held", "released"], "default": "held"},
    "playbook": {"type": "str", "default": "a run"},
    "phase": {"type": "str", "default": "start"},
    "holder": {"type": "str", "default": ""},
    "take_over": {"type": "str", "default": ""},
    "lease_seconds": {"type": "int", "default": 30},
    "suspend_backups": {"type": "bool", "default": False},
    "create_namespace": {"type": "bool", "default": True},
    "restore_record": {"type": "str", "default": ""},
    "kubeconfig": {"type": "raw"},
    "context": {"type": "str"},
}
LEASE = ("coordination.k8s.io", "v1")


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)  # pylint: disable=unused-variable
        if not HAS_KUBERNETES:
            raise AnsibleActionFail("namespace_lock needs the kubernetes Python package on the controller")
        api_client = config.new_client_from_config(config_file=args["kubeconfig"] or None, context=args["context"] or None)
        self._objects = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        check = bool(self._task.check_mode if self._task.check_mode is not None else self._play_context.check_mode)
        # The Lease is the run's own bookkeeping, gone when the run ends: reporting it as a change would make
        # every run "changed", so it never is.
        result["changed"] = False
        if args["state"] == "released":
            result.update(self._release(args, check))
        else:
            result.update(self._hold(args, check))
        return result

    # -- reading and writing the Lease --------------------------------------------------------------------

    def _read(self, namespace):
        try:
            return self._objects.get_namespaced_custom_object(*LEASE, namespace, "leases", lock.LEASE_NAME)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _restore_record(self, namespace, name):
        try:
            return self._core.read_namespaced_config_map(name, namespace).data or {}
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise

    def _deployments(self, namespace):
        return [{"metadata": {"name": d.metadata.name, "annotations": d.metadata.annotations or {}}}
                for d in self._apps.list_namespaced_deployment(namespace).items]

    def _namespace_exists(self, namespace, create, check):
        try:
            self._core.read_namespace(namespace)
            return True
        except ApiException as exc:
            if exc.status != 404:
                raise
        if check or not create:
            return False
        try:
            # The Lease lives in the namespace; namespace_secrets adds its labels later.
            self._core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        except ApiException as exc:
            if exc.status != 409:  # a second run created it a moment ago: the Lease decides
                raise
        return True

    def _hold(self, args, check):
        namespace = args["namespace"]
        controller = os.getppid()
        holder = args["holder"] or f"{getpass.getuser()}@{socket.gethostname()}/{controller}/{uuid.uuid4().hex[:8]}"
        who = f"{getpass.getuser()}@{socket.gethostname()} (ansible-playbook pid {controller})"
        if not self._namespace_exists(namespace, args["create_namespace"], check):
            return {"lock": {"holder": "", "namespace": namespace, "state": "none (no namespace yet)"},
                    "msg": f"Namespace {namespace} does not exist yet: nothing to lock in check mode."}
        if args["restore_record"]:
            refusal = lock.unfinished_restore(self._restore_record(namespace, args["restore_record"]),
                                              self._deployments(namespace), namespace, args["playbook"], args["restore_record"])
            if refusal:
                raise AnsibleActionFail(refusal)
        lease = self._read(namespace)
        now = _now()
        verdict = lock.judge(lease, now, holder, namespace, args["take_over"])
        if verdict["action"] == "refuse":
            raise AnsibleActionFail(verdict["message"])
        if check:
            return {"lock": {"holder": "", "namespace": namespace, "state": "not taken (check mode)"},
                    "msg": f"Check mode: a real run {'takes over' if verdict['action'] == 'take_over' else 'takes'} the lock on "
                           f"{namespace}; this one leaves it as it is."}
        suspended = self._suspend_backups(namespace, args["playbook"], holder) if args["suspend_backups"] else []
        if verdict["action"] == "keep":
            notes = lease["metadata"].setdefault("annotations", {})
            notes[lock.PHASE] = args["phase"]
            lease["spec"]["renewTime"] = lock.format_time(now)
            self._replace(namespace, lease)
            return {"lock": {"holder": holder, "namespace": namespace, "state": "held", "suspended": suspended},
                    "msg": f"This run holds the lock on {namespace}, now at step '{args['phase']}'."}
        body = lock.lease_body(namespace, holder, now, args["lease_seconds"], args["playbook"], args["phase"], who,
                               transitions=int(((lease or {}).get("spec") or {}).get("leaseTransitions") or 0)
                               + (1 if lease else 0),
                               previous=lease)
        try:
            if lease is None:
                self._objects.create_namespaced_custom_object(*LEASE, namespace, "leases", body)
            else:
                self._replace(namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                taken = self._read(namespace)
                raise AnsibleActionFail(
                    f"Another run took the lock on namespace {namespace} a moment before this one: "
                    f"{lock.describe(taken, _now()) if taken else 'it has gone again'}. This run changed nothing; "
                    f"run it again once that run has ended.")
            raise
        if not args["holder"]:  # a later step of the same run has its renewer already
            self._start_renewer(args, namespace, holder, controller, who)
        message = f"This run holds the lock on {namespace} ({args['playbook']})."
        if verdict["action"] == "take_over":
            inherited = [name for name in lock.suspended_by_lock(self._cronjobs(namespace)) if name not in suspended]
            message = (f"Took over the stale lock on {namespace} from {lock.describe(lease, now)}. "
                       + (f"Backup CronJobs it had suspended: {', '.join(inherited)} (given back when this run ends). "
                          if inherited else "")
                       + f"This run now holds it ({args['playbook']}).")
        return {"lock": {"holder": holder, "namespace": namespace, "state": "held", "suspended": suspended,
                         "taken_over_from": verdict.get("previous", "")},
                "msg": message}

    def _replace(self, namespace, body):
        self._objects.replace_namespaced_custom_object(*LEASE, namespace, "leases", lock.LEASE_NAME, body)

    def _release(self, args, check):
        namespace = args["namespace"]
        if check or not args["holder"]:
            return {"msg": f"This run held no lock on {namespace}."}
        # First the renewer, which would write a deleted Lease again.
        if not lock.stop_renewer(args["holder"]):
            raise AnsibleActionFail(f"The lock renewer of this run did not stop; the lock on {namespace} is left held. "
                                    f"It goes stale once that process is stopped (its pid is in "
                                    f"{lock.renewer_file(args['holder'])}).")
        lease = self._read(namespace)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != args["holder"]:
            return {"msg": f"The lock on {namespace} is not this run's any more; left as it is."}
        # After a restore that stopped half way, scheduled backups would file half-restored data as the newest good
        # set: the CronJobs stay suspended until a restore finishes.
        unfinished = args["restore_record"] and self._restore_record(namespace, args["restore_record"]).get("state") == "started"
        resumed = [] if unfinished else self._resume_backups(namespace)
        try:
            self._objects.delete_namespaced_custom_object(
                *LEASE, namespace, "leases", lock.LEASE_NAME,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
                    resource_version=lease["metadata"]["resourceVersion"])))
        except ApiException as exc:
            if exc.status == 409:  # the renewer renewed it a moment ago
                self._objects.delete_namespaced_custom_object(*LEASE, namespace, "leases", lock.LEASE_NAME)
            elif exc.status != 404:
                raise
        return {"msg": f"Released the lock on {namespace}" + (f"; backup CronJobs given back: {', '.join(resumed)}" if resumed else "")
                + ("; the backup CronJobs stay suspended until the unfinished restore is finished" if unfinished else ""),
                "resumed": resumed}

    # -- backup CronJobs --------------------------------------------------------------------------------------

    def _cronjobs(self, namespace):
        return [{"metadata": {"name": c.metadata.name, "annotations": c.metadata.annotations or {}}, "suspend": c.spec.suspend}
                for c in self._batch.list_namespaced_cron_job(namespace, label_selector=lock.BACKUP_SELECTOR).items]

    def _suspend_backups(self, namespace, playbook, holder):
        """Suspends the backup CronJobs that run now, marking each; returns those this call suspended (a CronJob
        suspended already, by a person or another mark, stays as it is)."""
        suspended = []
        for cronjob in self._cronjobs(namespace):
            if not cronjob["suspend"]:
                self._batch.patch_namespaced_cron_job(cronjob["metadata"]["name"], namespace, {
                    "metadata": {"annotations": {lock.SUSPENDED_BY: f"{lock.SUSPENDED_MARK}{playbook} {holder}"}},
                    "spec": {"suspend": True}})
                suspended.append(cronjob["metadata"]["name"])
        return suspended

    def _resume_backups(self, namespace):
        resumed = []
        for name in lock.suspended_by_lock(self._cronjobs(namespace)):
            try:
                self._batch.patch_namespaced_cron_job(name, namespace, {
                    "metadata": {"annotations": {lock.SUSPENDED_BY: None}}, "spec": {"suspend": False}})
                resumed.append(name)
            except ApiException as exc:
                if exc.status != 404:  # removed meanwhile (backups turned off): nothing to give back
                    raise
        return resumed

    # -- the renewer --------------------------------------------------------------------------------------

    def _start_renewer(self, args, namespace, holder, controller, who):
        settings = {"kubeconfig": args["kubeconfig"] or "", "context": args["context"] or "", "namespace": namespace,
                    "holder": holder, "duration": args["lease_seconds"], "controller_pid": controller,
                    "controller_start": lock.process_start(controller), "playbook": args["playbook"], "controller": who}
        env = dict(os.environ, LANGFUSE_OPS_LOCK_RENEWER=json.dumps(settings))
        # A session of its own: a kill of the run's process group leaves it to tidy up after the run.
        renewer = subprocess.Popen([sys.executable, lock.__file__], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        lock.note_renewer(holder, renewer.pid)
