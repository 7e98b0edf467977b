# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the deployed Langfuse release is, read from Helm's own record of it, and whether the collection's
records agree with it.

- `helm_pending`: a release a killed run left pending-install, pending-upgrade or pending-rollback (Helm's
  lock on the release), and the revision a recovery goes back to.
- `v4_deployed_phase`: the v3 -> v4 write mode the release's manifest actually runs (the worker's and the
  web's env), as the phase that produces it.
- `v4_record_problem`: the recorded phase (ConfigMap <fullname>-v4-migration) against that; a missing,
  stale or contradicting record is a refusal, never a default (a v4 release without the dual-write env is
  events_only, the one-way cut-over: inferring it from a lost record would cut over unconfirmed).
"""

from __future__ import annotations

import yaml

from ansible.errors import AnsibleFilterError
from ansible_collections.langfuse_ops.platform.plugins.module_utils.migration_state import SCRATCH_DROP_GATE

WRITE_MODE = "LANGFUSE_MIGRATION_V4_WRITE_MODE"
BACKFILL = "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"
PENDING = ("pending-install", "pending-upgrade", "pending-rollback")
# The phase whose record each deployed write state goes with.
RECORD_FOR = {"v3": ("", "infra"), "dual": ("dual",), "backfill": ("backfill",), "events_only": ("", "cutover"),
              "legacy": ("",), "drop_scratch": ("drop_scratch",)}
# What a record repaired from the deployed release says.
REPAIRED_PHASE = {"v3": "infra", "dual": "dual", "backfill": "backfill", "events_only": "cutover",
                  "drop_scratch": "drop_scratch"}


def helm_pending(history):
    """From `helm history -o json`: {pending, state, revision, chart, app_version, description, deployed} with
    `deployed` the newest revision Helm last called deployed (0: none, as after a first install that never
    finished). `pending` is False for every other state."""
    if not isinstance(history, list):
        raise AnsibleFilterError("helm_pending expects the list `helm history -o json` prints")
    if not history:
        return {"pending": False, "state": "none", "revision": 0, "chart": "", "app_version": "", "description": "",
                "deployed": 0, "deployed_chart": "", "deployed_app_version": "", "v3_revision": 0}
    ordered = sorted(history, key=lambda entry: int(entry["revision"]))
    latest = ordered[-1]
    # The revision Helm calls deployed: the newest one when it finished, the one before a pending or failed
    # newest (which stays "deployed"). Failing that, the newest superseded one before the newest.
    deployed = [entry for entry in ordered if entry.get("status") == "deployed"]
    superseded = [entry for entry in ordered[:-1] if entry.get("status") == "superseded"]
    good = (deployed or superseded or [{}])[-1]
    return {"pending": latest.get("status") in PENDING, "state": latest.get("status", "unknown"),
            "revision": int(latest["revision"]), "chart": latest.get("chart", ""),
            "app_version": latest.get("app_version", ""), "description": latest.get("description", ""),
            "deployed": int(good.get("revision", 0)), "deployed_chart": good.get("chart", ""),
            "deployed_app_version": good.get("app_version", ""),
            # The newest revision of a v3 chart (1.x): where a repaired v4 record's lossless rollback goes. Helm
            # records the chart's appVersion, not the image tags the values pin, so the chart says it.
            "v3_revision": max([int(e["revision"]) for e in ordered if str(e.get("chart", "")).startswith("langfuse-1.")]
                               or [0])}


def _major(tag):
    head = str(tag).split(".", maxsplit=1)[0]
    return int(head) if head.isdigit() else 0


def _image_tag(image):
    """The tag of name[:port]/path:tag[@sha256:...]; a digest after it is not the version."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[-1] if ":" in last else ""


def v4_deployed_phase(manifest, fullname):
    """The write state a release's manifest (YAML text, or its list of documents) runs: {present, phase, web, worker, mode, backfill,
    drop_scratch}, phase being v3 (a 3.x web image), dual, backfill, events_only, drop_scratch (events_only with the
    scratch table's drop on) or legacy; present False without a web Deployment."""
    containers = {}
    # kubernetes.core.helm_info returns the manifest as its list of documents; `helm get manifest` prints YAML.
    docs = yaml.safe_load_all(manifest) if isinstance(manifest, str) else list(manifest or [])
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
            continue
        name = (doc.get("metadata") or {}).get("name", "")
        for component in ("web", "worker"):
            if name == f"{fullname}-{component}":
                found = ((doc.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [{}]
                containers[component] = found[0]
    if "web" not in containers:
        return {"present": False, "phase": "", "web": "", "worker": "", "mode": "", "backfill": False, "drop_scratch": False}

    def env(component):
        return {e.get("name"): str(e.get("value", "")) for e in containers.get(component, {}).get("env") or [] if "name" in e}

    web = _image_tag(containers["web"].get("image", ""))
    worker = _image_tag(containers.get("worker", {}).get("image", ""))
    # The worker carries the write mode first (upgrade.yml moves it before the web); either pod in dual counts.
    modes = [env(c).get(WRITE_MODE) for c in ("worker", "web") if c in containers]
    mode = next((m for m in modes if m), "events_only")
    backfill = any(env(c).get(BACKFILL, "").lower() == "true" for c in ("worker", "web"))
    on_v4 = any(_major(tag) >= 4 for tag in (web, worker))
    drop = any(env(c).get(SCRATCH_DROP_GATE, "").lower() == "true" for c in ("worker", "web"))
    phase = ("backfill" if mode == "dual" and backfill else "drop_scratch" if mode == "events_only" and drop else mode)
    return {"present": True, "phase": phase if on_v4 else "v3", "web": web, "worker": worker, "mode": mode,
            "backfill": backfill, "drop_scratch": drop}


def v4_record_problem(record, deployed, namespace, requested=""):
    """'' when the recorded v3 -> v4 phase may be trusted for this run, else the refusal: both facts, what was
    not changed, and the command to run. `record` is the ConfigMap's data ({} when missing), `deployed` what
    v4_deployed_phase found, `requested` the phase an upgrade.yml run carries out ('' for any other run)."""
    record = record or {}
    phase, state = record.get("phase", ""), record.get("state", "done") or "done"
    since = record.get("since", "?")
    if state == "started":
        resumes = requested == phase or (requested == "rollback" and phase in ("dual", "backfill"))
        if resumes:
            return ""
        finish = (f"ansible-playbook playbooks/upgrade.yml -e upgrade_phase={phase}"
                  + (f" -e upgrade_confirm_cutover={namespace}" if phase == "cutover" else "")
                  + (f" -e upgrade_confirm_drop_scratch={namespace}" if phase == "drop_scratch" else ""))
        one_way = ("A cut-over is one-way: it is not rolled back to v3, and it is finished only when confirmed again. "
                   if phase == "cutover" else "")
        return (f"upgrade.yml's v3 -> v4 phase {phase} was started at {since} and did not finish (the run was stopped); "
                f"the release runs {_says(deployed)}. {one_way}This run changed nothing. Finish that phase first: {finish}")
    if not deployed.get("present"):
        return ""
    allowed = RECORD_FOR.get(deployed["phase"], ())
    if phase in allowed:
        return ""
    found = f"phase {phase} recorded at {since}" if phase else "no phase recorded (ConfigMap missing or empty)"
    repair = REPAIRED_PHASE.get(deployed["phase"])
    return (f"The v3 -> v4 migration record of {namespace} does not match the release: {found}, but the release runs "
            f"{_says(deployed)}. Going on would set a write mode from a record that is wrong (a lost record during dual "
            f"would cut over to events_only, the one-way step, unconfirmed). This run changed nothing. "
            + (f"If the release is right, rewrite the record from it (phase {repair}) with: ansible-playbook "
               f"playbooks/install.yml -e langfuse_helm_v4_record_repair={namespace}, then run this again."
               if repair else "Set the write mode you mean with langfuse_helm_v4_write_mode, or repair the release first."))


def _says(deployed):
    if deployed.get("phase") == "v3":
        return f"Langfuse {deployed.get('web')} (v3, worker {deployed.get('worker')})"
    return (f"Langfuse web {deployed.get('web')} / worker {deployed.get('worker')} in write mode {deployed.get('mode')}"
            f"{' with the historic backfill on' if deployed.get('backfill') else ''}"
            f"{' with the drop of the backfill scratch table on' if deployed.get('drop_scratch') else ''}")


def unfinished_jobs(jobs):
    """The names of the Jobs (as k8s_info returns them) with no Complete or Failed condition yet: still running,
    or not started. A Job a killed run left running keeps going in the cluster."""
    names = []
    for job in jobs or []:
        conditions = ((job or {}).get("status") or {}).get("conditions") or []
        if not any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions):
            names.append(job["metadata"]["name"])
    return sorted(names)


class FilterModule:
    def filters(self):
        return {"helm_pending": helm_pending, "v4_deployed_phase": v4_deployed_phase, "v4_record_problem": v4_record_problem,
                "unfinished_jobs": unfinished_jobs}
