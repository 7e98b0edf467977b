# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run at a time per namespace: a coordination.k8s.io Lease that install, upgrade, backup and restore
take before they change anything.

The judgement (`judge`) is pure and unit-tested; the action plugin `namespace_lock` does the I/O, and the
renewer below (started by that plugin as a process of its own) keeps the Lease fresh while the controller
(ansible-playbook) lives. When the controller dies (killed, Ctrl-C, a closed laptop lid that never opens
again), the renewer stops every process the run had started (helm above all, which would otherwise go on
changing the release with nobody watching), marks the Lease as ended and exits: the next run then finds a
stale lease and refuses until it is told to take over (`-e langfuse_take_over_lock=<namespace>`), since only
a person can tell that the dead run's work is to be checked and finished rather than waited for.

Run as a script (`python namespace_lock.py`), this file is the renewer; it reads its settings as JSON from
the environment variable LANGFUSE_OPS_LOCK_RENEWER. The run's release stops it (SIGTERM, found by the file
`renewer_file` names) before it deletes the Lease, so a Lease that goes missing while the renewer lives was
deleted by somebody else: the renewer writes it again, noting so, and the run stays the only one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import tempfile
import time

LEASE_NAME = "langfuse-ops-lock"
ANNOTATION = "langfuse-ops.io/"
# Annotations of the Lease, besides the spec's holder, acquire and renew times.
PLAYBOOK = ANNOTATION + "playbook"
PHASE = ANNOTATION + "phase"
CONTROLLER = ANNOTATION + "controller"
ENDED = ANNOTATION + "holder-ended"
STOPPED = ANNOTATION + "stopped-processes"
RECREATED = ANNOTATION + "recreated"
# On a backup CronJob this lock suspended: "namespace_lock <playbook> <holder>". The mark lives on the CronJob, not
# in the Lease, so that it outlives a lost Lease; backup_cron's backup_now marks its own "backup_now ...".
SUSPENDED_BY = ANNOTATION + "suspended-by"
SUSPENDED_MARK = "namespace_lock "
# The backup CronJobs (backup_cron labels them so); suspended while a restore or an upgrade holds the lock.
BACKUP_SELECTOR = "app.kubernetes.io/part-of=langfuse,app.kubernetes.io/component=backup"

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(moment):
    return moment.astimezone(datetime.timezone.utc).strftime(TIME_FORMAT)


def parse_time(text):
    """A Lease's MicroTime (or a plain RFC 3339 time) as an aware datetime; None for none."""
    if not text:
        return None
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, tail = text.split(".", 1)
        digits = tail[:len(tail) - len(tail.lstrip("0123456789"))]
        text = head + "." + (digits + "000000")[:6] + tail[len(digits):]
    return datetime.datetime.fromisoformat(text)


def describe(lease, now):
    """What a Lease says of its holder, for messages: playbook, holder, since, phase, last renewal."""
    spec = lease.get("spec") or {}
    notes = (lease.get("metadata") or {}).get("annotations") or {}
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    ago = int((now - renewed).total_seconds()) if renewed else None
    text = "{playbook} run by {holder}, holding it since {since}, at step '{phase}', last renewed {ago}".format(
        playbook=notes.get(PLAYBOOK, "a run"), holder=notes.get(CONTROLLER) or spec.get("holderIdentity", "?"),
        since=spec.get("acquireTime", "?"), phase=notes.get(PHASE, "?"),
        ago=f"{ago} s ago" if ago is not None else "never")
    if notes.get(ENDED):
        text += f"; its controller process ended at {notes[ENDED]}"
        if notes.get(STOPPED):
            text += f" and the processes it had started were stopped ({notes[STOPPED]})"
    return text


def is_stale(lease, now):
    """A lease nobody renews any more: its controller ended (the renewer said so), or its last renewal is
    older than its duration."""
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return True
    if ((lease.get("metadata") or {}).get("annotations") or {}).get(ENDED):
        return True
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or 0)
    return renewed is None or (now - renewed).total_seconds() > duration


def judge(lease, now, holder, namespace, take_over=""):
    """What to do with the namespace's Lease as found (None: there is none).

    Returns a dict: action is 'create', 'keep' (ours already), 'acquire' (free: released), 'take_over' (stale,
    and the take-over confirmed) or 'refuse', with `message` saying why for a refusal and `previous` the
    holder a take-over replaces.
    """
    if lease is None:
        return {"action": "create"}
    spec = lease.get("spec") or {}
    current = spec.get("holderIdentity") or ""
    if current == holder:
        return {"action": "keep"}
    if not current:
        return {"action": "acquire"}
    found = describe(lease, now)
    if not is_stale(lease, now):
        return {"action": "refuse", "message": (
            f"Another run holds namespace {namespace}: {found}. Two runs at once would fight over the Helm release and the "
            f"data, so this run changed nothing. Wait until that run ends (its lock is released then), and run this again.")}
    if take_over == namespace:
        return {"action": "take_over", "previous": current}
    return {"action": "refuse", "message": (
        f"The lock on namespace {namespace} is stale: {found}. That run was stopped or lost before it ended, so it may "
        f"have left its work half done. This run changed nothing. Make sure that run is not going on anywhere, then run "
        f"this command again with -e langfuse_take_over_lock={namespace}: it takes the lock over, checks the Helm release "
        f"and the records the other run left, and finishes or names what it finds.")}


def lease_body(namespace, holder, now, duration, playbook, phase, controller, transitions=0, previous=None):
    """A Lease held by `holder` from `now`; `previous` (a Lease read before) keeps its resourceVersion, so a
    replace fails when anybody changed it since."""
    metadata = {"name": LEASE_NAME, "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "langfuse", "app.kubernetes.io/managed-by": "langfuse_ops.platform"},
                "annotations": {PLAYBOOK: playbook, PHASE: phase, CONTROLLER: controller}}
    if previous is not None:
        metadata["resourceVersion"] = previous["metadata"]["resourceVersion"]
    stamp = format_time(now)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": int(duration), "acquireTime": stamp,
                     "renewTime": stamp, "leaseTransitions": int(transitions)}}


def suspended_by_lock(cronjobs):
    """The backup CronJobs a holder of this lock suspended, by their mark: this run's, or a dead run's whose lock it
    took over (whoever holds the lock is the only run that may give them back)."""
    return sorted(c["metadata"]["name"] for c in cronjobs
                  if (((c.get("metadata") or {}).get("annotations") or {}).get(SUSPENDED_BY) or "").startswith(SUSPENDED_MARK))


RESTORE_REPLICAS = ANNOTATION + "restore-replicas"


def unfinished_restore(record, deployments, namespace, playbook, record_name):
    """The refusal for a run beside an unfinished restore ('' when there is none, or the run is restore.yml).

    A restore stopped half way leaves data half restored and web and worker at 0: an install or upgrade would start
    Langfuse on it, a backup would file it as the newest good set. Two marks say so: the restore's record (a ConfigMap
    whose data has state started) and, should that be lost, the replicas a restore notes on each workload it stops."""
    if playbook == "restore.yml":
        return ""
    record = record or {}
    marked = sorted(d["metadata"]["name"] for d in deployments
                    if RESTORE_REPLICAS in ((d.get("metadata") or {}).get("annotations") or {}))
    if record.get("state", "done") == "done" and not marked:
        return ""
    if record.get("state", "done") != "done":
        found = (f"started {record.get('started', '?')}, from Postgres backup {record.get('postgres_id', '?')} and ClickHouse "
                 f"backup {record.get('clickhouse_id', '?')}, stopped after step {record.get('step', '?')}")
    else:
        found = (f"its record {record_name} is gone, but {', '.join(marked)} still carry the replicas a restore noted "
                 f"before stopping them")
    return (f"A restore into {namespace} is unfinished: {found} (web and worker stay stopped until it ends). {playbook} "
            f"changed nothing. Finish the restore first: ansible-playbook playbooks/restore.yml -e restore_confirm={namespace} "
            f"(it resumes with the same backups and brings web and worker back to the replicas they had; if a restore.yml "
            f"is running now, wait for it to end).")


# The renewer ----------------------------------------------------------------------------------------------

def process_start(pid):
    """A process's start time in clock ticks (field 22 of /proc/<pid>/stat), or None when it is gone or a
    zombie: with the start time, a pid the kernel gave to a new process is not taken for the old one."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def descendants(root):
    """Every living process below `root`, as {pid: (start time, command)}."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        comm = text[text.find("(") + 1:text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append((int(entry), int(fields[19]), comm))
    found, todo = {}, [root]
    while todo:
        for pid, start, comm in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = (start, comm)
                todo.append(pid)
    return found


def stop_processes(snapshot, grace=30.0):
    """SIGTERM every process of the snapshot that is still the same process, SIGKILL what is left after
    `grace` seconds; returns the commands that were stopped. The grace is helm's: on SIGTERM an atomic upgrade
    rolls itself back, which leaves the release deployed rather than pending."""
    alive = {pid: comm for pid, (start, comm) in snapshot.items() if pid != os.getpid() and process_start(pid) == start}
    for pid in alive:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(process_start(pid) == snapshot[pid][0] for pid in alive):
        time.sleep(0.2)
    for pid in alive:
        if process_start(pid) == snapshot[pid][0]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return sorted(set(alive.values()))


def renewer_file(holder):
    """Where the run's renewer is noted (its pid and start time), for the run's release to stop it."""
    return os.path.join(tempfile.gettempdir(), f"langfuse-ops-lock-{hashlib.sha256(holder.encode()).hexdigest()[:16]}.json")


def note_renewer(holder, pid):
    with open(renewer_file(holder), "w", encoding="utf-8") as handle:
        json.dump({"pid": pid, "start": process_start(pid)}, handle)


def stop_renewer(holder, wait=10.0):
    """Stops the run's renewer (before the release deletes the Lease, which the renewer would otherwise write
    again); True when none is left running."""
    path = renewer_file(holder)
    try:
        with open(path, encoding="utf-8") as handle:
            noted = json.load(handle)
    except (OSError, ValueError):
        return True
    pid = noted.get("pid")
    if pid and noted.get("start") and process_start(pid) == noted["start"]:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
        deadline = time.monotonic() + wait
        while process_start(pid) == noted["start"] and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_start(pid) == noted["start"]:
            return False
    try:
        os.unlink(path)
    except OSError:
        pass
    return True


def renew(settings):  # pragma: no cover - runs as a process of its own; tests/integration/test_maintenance_window.py
    """Keeps the Lease while the controller lives; see the module docstring."""
    from kubernetes import client, config

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # the run's release: it deletes the Lease next
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=settings.get("kubeconfig") or None,
                                                                context=settings.get("context") or None))
    group = ("coordination.k8s.io", "v1", settings["namespace"], "leases", LEASE_NAME)
    controller, controller_start = settings["controller_pid"], settings["controller_start"]
    interval = max(1.0, settings["duration"] / 3.0)
    snapshot, last_renewal, known = {}, 0.0, None
    while True:
        if process_start(controller) != controller_start:
            stopped = stop_processes(snapshot)
            _mark_ended(api, group, settings["holder"], stopped)
            return 0
        snapshot = descendants(controller)
        if time.monotonic() - last_renewal >= interval:
            try:
                lease = api.get_namespaced_custom_object(*group)
            except client.ApiException as exc:
                if exc.status == 404:
                    # Deleted under a live run (someone "cleaned up"): write it again, or a second run could start.
                    _recreate(api, group, settings, known)
                    time.sleep(1)
                    continue
                time.sleep(1)
                continue
            except Exception:  # the API server away for a moment: try again, the lease has slack
                time.sleep(1)
                continue
            if lease["spec"].get("holderIdentity") != settings["holder"]:
                # Taken over while this run was frozen (a sleeping laptop), or taken by another run after somebody
                # deleted it: this run must not go on changing anything.
                stop_processes({controller: (controller_start, "ansible-playbook"), **snapshot})
                return 0
            known = lease
            lease["spec"]["renewTime"] = format_time(datetime.datetime.now(datetime.timezone.utc))
            try:
                api.replace_namespaced_custom_object(*group, lease)
                last_renewal = time.monotonic()
            except Exception:
                pass  # a conflict (the plugin changed a step) or a hiccup: next tick
        time.sleep(1.0)


def recreated_lease(settings, known, now):
    """The Lease to write again after somebody deleted it under the live run: the same holder and notes (the last
    ones read), marked with when it was found missing."""
    notes = ((known or {}).get("metadata") or {}).get("annotations") or {}
    body = lease_body(settings["namespace"], settings["holder"], now, settings["duration"],
                      notes.get(PLAYBOOK, settings.get("playbook", "a run")), notes.get(PHASE, "start"),
                      notes.get(CONTROLLER, settings.get("controller", "")),
                      transitions=int(((known or {}).get("spec") or {}).get("leaseTransitions") or 0))
    if known:
        body["spec"]["acquireTime"] = known["spec"].get("acquireTime") or body["spec"]["acquireTime"]
    body["metadata"]["annotations"][RECREATED] = (f"{format_time(now)}: the Lease was deleted while this run held it, "
                                                  "and written again by the run's renewer")
    return body


def _recreate(api, group, settings, known):  # pragma: no cover - part of renew()
    body = recreated_lease(settings, known, datetime.datetime.now(datetime.timezone.utc))
    try:
        api.create_namespaced_custom_object(*group[:4], body)
    except Exception:  # pylint: disable=broad-except
        pass  # another run took it in the gap (the next read stops this one), or a hiccup: next tick


def _mark_ended(api, group, holder, stopped):  # pragma: no cover - part of renew()
    for _attempt in range(5):
        try:
            lease = api.get_namespaced_custom_object(*group)
            if lease["spec"].get("holderIdentity") != holder:
                return
            notes = lease["metadata"].setdefault("annotations", {})
            notes[ENDED] = format_time(datetime.datetime.now(datetime.timezone.utc))
            notes[STOPPED] = ", ".join(stopped) or "none left"
            api.replace_namespaced_custom_object(*group, lease)
            return
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return  # released after all
            time.sleep(1)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(renew(json.loads(os.environ["LANGFUSE_OPS_LOCK_RENEWER"])))
