"""The crash-consistency suite: each playbook killed at points spread over its whole run, then run again.

For every scenario (install, a v4 minor upgrade, backup, restore, the v3 -> v4 phases) it takes a reference run's
list of tasks, picks kill points spread over it plus named ones (a moment into the Helm step, into a migration
Job, between restore's Postgres and ClickHouse steps), and for each point: runs the command with the
kill_at_task callback, which SIGKILLs the run's whole process group there; runs the same command again; where
that refuses, follows the way out its message names (`-e langfuse_take_over_lock=...`,
`-e langfuse_helm_recover_pending=...`, or the playbook command it gives) and then the same command once more.
Then it checks the invariants: Postgres and ClickHouse row counts and checksums as they should be, app-secret
fingerprints unchanged, the write mode never events_only without the cut-over's confirmation, web and worker at
their replicas, no Helm release pending, no lock left, no backup CronJob left suspended, no upgrade or
restore record left started. It also starts two runs
of each playbook together: one must be refused, naming the other, and both must leave the invariants.

It prints one table (playbook, kill points, converged, refused with a named way out, stuck, lost) and exits 1
when anything was stuck or lost. Langfuse's own pods do not run here (KWOK plays the nodes, the stand-in server
answers health calls); the API server, Helm's storage, helm, the backup and restore Jobs (the job runner), and
the databases are real.

    tests/crash/suite.py                          # every scenario, 10 spread points each (make crash)
    tests/crash/suite.py --points 2 --scenarios restore,upgrade   # a bounded run of two scenarios
    tests/crash/suite.py --points 1 --scenarios backup --no-named  # what CI runs (make crash-ci)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from conftest import BACKUP_BUCKET, SUITE_LINE, V3, kubectl, migrated_databases, pg, run  # noqa: E402
from test_restore import damage, figures, seed  # noqa: E402
from test_v4_phases import BACKGROUND_DDL  # noqa: E402

CALLBACKS = str(Path(__file__).resolve().parent / "callback_plugins")
WAYS_OUT = ("langfuse_take_over_lock", "langfuse_helm_recover_pending")
QUICK = {"upgrade_skip_backup": True, "upgrade_observe_seconds": 3, "upgrade_canary_observe_seconds": 3}
V4 = {"langfuse_helm_release_line": "v4", "langfuse_helm_chart_version": "2.0.0", "langfuse_helm_app_version": "4.4.0",
      "clickhouse_operator_server_version": "25.12", "upgrade_v4_disk_factor": 0}


def playbook(name, variables, env=None, timeout=1500):
    variables = {"backup_cron_bucket": BACKUP_BUCKET, **SUITE_LINE, **variables}
    full = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=CALLBACKS, ANSIBLE_CALLBACKS_ENABLED="kill_at_task", **(env or {}))
    started = time.monotonic()
    proc = subprocess.Popen(["ansible-playbook", "-i", "inventories/local", f"playbooks/{name}.yml", "-e", json.dumps(variables)],
                            cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = proc.communicate(timeout=timeout)[0]
    return proc.returncode, out, time.monotonic() - started


def text(out):
    return " ".join(out.split())


def tasks_of(name, variables):
    """A reference run's tasks, in order (it changes the cluster like any run: callers account for it)."""
    with tempfile.NamedTemporaryFile("r", suffix=".tasks") as log:
        rc, out, _seconds = playbook(name, variables, {"CRASH_TASK_LOG": log.name})
        if rc != 0:
            raise SystemExit(f"reference run of {name}.yml failed:\n{out[-3000:]}")
        return [line.split("\t", 1)[1].strip() for line in Path(log.name).read_text().splitlines() if "\t" in line]


def spread(tasks, count, skip_preflight=True):
    """`count` task numbers spread over the run, from the first task after the lock is taken on."""
    first = next((i for i, t in enumerate(tasks) if "namespace_lock" in t), 0) if skip_preflight else 0
    span = len(tasks) - first - 1
    # 1-based task numbers after the lock is taken, each in the middle of its share of the rest of the run.
    return sorted({first + 2 + (span * (2 * k + 1)) // (2 * count) for k in range(count)})


def way_out(out, name, variables):
    """What a refusal says to run: (playbook, variables) or None."""
    said = text(out)
    extra = dict(re.findall(r"-e (" + "|".join(WAYS_OUT) + r")=([a-z0-9-]+)", said))
    if extra and any(variables.get(k) != v for k, v in extra.items()):
        return name, {**variables, **extra}
    command = re.search(r"(?:Finish the restore first|Finish that phase first): ansible-playbook playbooks/(\w+)\.yml((?: -e \w+=[\w.-]+)*)", said)
    if command:
        given = dict(re.findall(r"-e (\w+)=([\w.-]+)", command[2]))
        return command[1], {k: v for k, v in variables.items() if k.startswith(("langfuse_namespace", "postgres_", "clickhouse_",
                                                                                "s3_", "langfuse_helm_", "upgrade_"))} | given
    return None


def recover(name, variables):
    """The re-run after a kill: the same command, the ways out it names, and the same command again.
    Returns (outcome, notes): converged, refused (with a named way out, then converged) or stuck."""
    notes, refused, current = [], False, (name, dict(variables))
    for _attempt in range(6):
        rc, out, _seconds = playbook(*current)
        if rc == 0 and current[0] == name:
            return ("refused" if refused else "converged"), notes
        if rc == 0:
            current = (name, {**variables, **{k: v for k, v in current[1].items() if k in WAYS_OUT}})
            continue
        found = way_out(out, *current)
        if not found:
            tail = text(out).rsplit("msg:", maxsplit=1)[-1][:400]
            notes.append(f"{current[0]}.yml refused with no way out: {tail}")
            return "stuck", notes
        refused = True
        named = " ".join(f"-e {k}={v}" for k, v in found[1].items() if k in WAYS_OUT or k.startswith(("restore_confirm", "upgrade_phase")))
        notes.append(f"{current[0]}.yml named: {found[0]}.yml {named}")
        current = found
    return "stuck", notes + ["no convergence after 6 runs"]


# Invariants -----------------------------------------------------------------------------------------------------

def release_statuses(namespace):
    proc = run("helm", "history", "langfuse", "-n", namespace, "-o", "json", check=False)
    return [r["status"] for r in json.loads(proc.stdout)] if proc.returncode == 0 else []


def get(namespace, kind, name=None):
    proc = kubectl("-n", namespace, "get", kind, *([name] if name else []), "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def app_secrets(namespace):
    secret = get(namespace, "secret", "langfuse-app-secrets")
    return (secret or {}).get("data")


def env_of(namespace, component):
    dep = get(namespace, "deployment", f"langfuse-{component}") or {}
    containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    return containers[0].get("image", ""), {e["name"]: e.get("value") for e in containers[0].get("env", [])}


def broken(namespace, expect):
    """What of the invariants does not hold (empty: all hold)."""
    problems = []
    statuses = release_statuses(namespace)
    if statuses and statuses[-1] != "deployed":
        problems.append(f"release {statuses[-1]}")
    if get(namespace, "lease", "langfuse-ops-lock"):
        problems.append("lock left")
    cronjobs = (get(namespace, "cronjobs") or {}).get("items", [])
    if [c for c in cronjobs if c["spec"].get("suspend")]:
        problems.append("backup CronJobs left suspended")
    for record in ("langfuse-upgrade", "langfuse-restore"):
        state = ((get(namespace, "configmap", record) or {}).get("data") or {}).get("state")
        if state == "started":
            problems.append(f"{record} record left started")
    deployments = replicas_of(namespace)
    for name, replicas in expect.get("replicas", {}).items():
        if deployments.get(name) != replicas:
            problems.append(f"{name} at {deployments.get(name)} replicas, not {replicas}")
    if expect.get("secrets") is not None and app_secrets(namespace) != expect["secrets"]:
        problems.append("app secrets changed")
    if expect.get("figures") is not None and figures(expect["services"], expect["database"]) != expect["figures"]:
        problems.append("data differs")
    if expect.get("version"):
        image = env_of(namespace, "web")[0]
        if not image.endswith(":" + expect["version"]):
            problems.append(f"web runs {image}, not {expect['version']}")
    if expect.get("no_events_only"):
        for component in ("web", "worker"):
            image, variables = env_of(namespace, component)
            if image.split(":")[-1].startswith("4.") and variables.get("LANGFUSE_MIGRATION_V4_WRITE_MODE") != "dual":
                problems.append(f"{component} on v4 without the dual write, before a confirmed cut-over")
    return problems


class Table:
    def __init__(self):
        self.rows, self.details = {}, []

    def add(self, scenario, point, outcome, problems, notes, seconds):
        row = self.rows.setdefault(scenario, {"points": 0, "converged": 0, "refused": 0, "stuck": 0, "lost": 0})
        row["points"] += 1
        row["lost" if problems else outcome] += 1
        self.details.append(f"  {scenario:10} {point:52} {('LOST: ' + '; '.join(problems)) if problems else outcome:10} "
                            f"{seconds:5.0f}s  {' | '.join(notes)}")
        print(self.details[-1], flush=True)

    def print(self):
        print("\n| playbook | kill points | converged | refused with a named way out | stuck | lost |")
        print("|---|---|---|---|---|---|")
        for scenario, r in self.rows.items():
            print(f"| {scenario} | {r['points']} | {r['converged']} | {r['refused']} | {r['stuck']} | {r['lost']} |")
        return sum(r["stuck"] + r["lost"] for r in self.rows.values())


def kill_and_recover(table, scenario, name, variables, point, expect, after_kill=None):
    """One kill point: the killed run, the recovery, the invariants, one row."""
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("r", suffix=".killed") as marker:
        env = {"CRASH_KILLED": marker.name}
        if isinstance(point, int):
            env["CRASH_KILL_AT"] = str(point)
        else:
            env["CRASH_KILL_TASK"], env["CRASH_KILL_AFTER"] = point[0], str(point[1])
        rc, out, _seconds = playbook(name, variables, env)
        hit = Path(marker.name).read_text().strip().replace("\t", " ")
    label = f"{name}.yml @ {hit or 'ended first'}"[:52]
    if after_kill:
        after_kill()
    outcome, notes = recover(name, variables)
    problems = broken(variables["langfuse_namespace"], expect) if outcome != "stuck" else []
    table.add(scenario, label, outcome, problems, notes, time.monotonic() - started)


# Scenarios -------------------------------------------------------------------------------------------------------

def scenario_install(table, services, points, named):
    """A first install, killed at each point in a namespace of its own; the app secrets the killed run made must be
    the ones the install ends with."""
    with migrated_databases(services, "crash") as database:
        seed(services, database)
        base = {"postgres_database": database, "clickhouse_operator_database": database}
        reference = f"crash-i-{uuid.uuid4().hex[:6]}"
        tasks = tasks_of("install", {"langfuse_namespace": reference, **base})
        replicas = replicas_of(reference)
        cleanup(reference)
        kill_points = spread(tasks, points) + ([("Install or upgrade the Langfuse release", 2.0)] if named else [])
        for point in kill_points:
            namespace = f"crash-i-{uuid.uuid4().hex[:6]}"
            # The app secrets are the killed run's, read after it (none, when it died before making them).
            expect = {**baseline(services, database, namespace, replicas), "version": "4.16.0"}
            kill_and_recover(table, "install", "install", {"langfuse_namespace": namespace, **base}, point, expect,
                             after_kill=lambda ns=namespace, e=expect: e.update(secrets=app_secrets(ns)))
            cleanup(namespace)


def installed(services, database, prefix, **extra):
    namespace = f"crash-{prefix}-{uuid.uuid4().hex[:6]}"
    variables = {"langfuse_namespace": namespace, "postgres_database": database, "clickhouse_operator_database": database, **extra}
    rc, out, _seconds = playbook("install", variables)
    if rc != 0:
        raise SystemExit(f"install for {prefix} failed:\n{out[-3000:]}")
    return namespace, variables


def replicas_of(namespace):
    return {d["metadata"]["name"]: d["spec"].get("replicas") for d in (get(namespace, "deployments") or {}).get("items", [])
            if d["metadata"]["name"] in ("langfuse-web", "langfuse-worker")}


def baseline(services, database, namespace, replicas=None, **more):
    """What must hold after every kill point of a scenario: the data as now, the app secrets as now, web and worker
    at the replicas they have now (or `replicas`), and `more`."""
    return {"figures": figures(services, database), "services": services, "database": database,
            "secrets": app_secrets(namespace), "replicas": replicas or replicas_of(namespace), **more}


def scenario_upgrade(table, services, points, named):
    with migrated_databases(services, "crash") as database:
        seed(services, database)
        namespace, base = installed(services, database, "u", langfuse_helm_app_version="4.4.0")
        expect = baseline(services, database, namespace)
        tasks = tasks_of("upgrade", {**base, **QUICK, "langfuse_helm_app_version": "4.5.0"})
        kill_points = spread(tasks, points) + ([("Move the worker", 4.0), ("Wait for the migration Job", 0.5)] if named else [])
        for k, point in enumerate(kill_points, start=1):
            version = f"4.{4 + k}.0"
            kill_and_recover(table, "upgrade", "upgrade", {**base, **QUICK, "langfuse_helm_app_version": version}, point,
                             {**expect, "version": version})
        cleanup(namespace)


def scenario_backup(table, services, points, named):
    with migrated_databases(services, "crash") as database:
        seed(services, database)
        namespace, base = installed(services, database, "b")
        expect = baseline(services, database, namespace)
        tasks = tasks_of("backup", base)
        kill_points = spread(tasks, points) + ([("Wait for the backups to finish", 1.0)] if named else [])
        for point in kill_points:
            kill_and_recover(table, "backup", "backup", base, point, expect)
        cleanup(namespace)


def scenario_restore(table, services, points, named):
    with migrated_databases(services, "crash") as database:
        seed(services, database)
        namespace, base = installed(services, database, "r")
        rc, out, _seconds = playbook("backup", base)
        if rc != 0:
            raise SystemExit(f"backup for restore failed:\n{out[-3000:]}")
        expect = baseline(services, database, namespace)  # the data as backed up: what every restore must bring back
        variables = {**base, "restore_confirm": namespace}
        damage(services, database)
        tasks = tasks_of("restore", variables)
        kill_points = spread(tasks, points) + ([("Record the step the restore is at, clickhouse", 0.0),
                                                ("Wait for the restore Job, ", 0.5)] if named else [])
        for point in kill_points:
            damage(services, database)
            kill_and_recover(table, "restore", "restore", variables, point, expect)
        cleanup(namespace)


def scenario_v4(table, services, points, named):
    """One walk through the phases, each phase's run killed once: dual in its worker step (helm waiting), backfill
    just after its record says started, cutover in its web step (the worker already events_only)."""
    with migrated_databases(services, "crash") as database:
        seed(services, database)
        with pg(services, database) as conn:
            conn.execute(BACKGROUND_DDL)
        namespace, base = installed(services, database, "v4", **V3)
        expect = baseline(services, database, namespace, version="4.4.0")
        rc, out, _seconds = playbook("upgrade", {**base, **V4, **QUICK, "upgrade_phase": "infra"})
        if rc != 0:
            raise SystemExit(f"phase infra failed:\n{out[-3000:]}")
        for phase, point, extra in (("dual", ("Move the worker", 4.0), {}),
                                    ("backfill", ("Move the chart on its own", 0.0), {}),
                                    ("cutover", ("Move the web", 3.0), {"upgrade_confirm_cutover": namespace})):
            kill_and_recover(table, f"v4 {phase}", "upgrade", {**base, **V4, **QUICK, "upgrade_phase": phase, **extra}, point,
                             {**expect, "no_events_only": phase != "cutover"})
        cleanup(namespace)


def two_at_once(table, services):
    """Two runs of each playbook started together on one namespace: one holds the lock, the other is refused
    naming it (or, started after the first ended, runs too); afterwards the invariants hold."""
    with migrated_databases(services, "crash") as database:
        seed(services, database)
        namespace, base = installed(services, database, "2x", langfuse_helm_app_version="4.4.0")
        playbook("backup", base)
        expect = baseline(services, database, namespace)
        for name, variables in (("install", base), ("upgrade", {**base, **QUICK, "langfuse_helm_app_version": "4.12.0"}),
                                ("backup", base), ("restore", {**base, "restore_confirm": namespace})):
            started = time.monotonic()
            procs = [subprocess.Popen(["ansible-playbook", "-i", "inventories/local", f"playbooks/{name}.yml", "-e",
                                       json.dumps({"backup_cron_bucket": BACKUP_BUCKET, **SUITE_LINE, **variables})], cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _run in range(2)]
            outs = [p.communicate(timeout=1500)[0] for p in procs]
            rcs = [p.returncode for p in procs]
            refused = [o for o, rc in zip(outs, rcs) if rc != 0]
            named = all("Another run holds namespace" in text(o) or "took the lock on namespace" in text(o) for o in refused)
            outcome = "refused" if refused and named and 0 in rcs else "converged" if rcs == [0, 0] else "stuck"
            notes = [f"rcs {rcs}"] + ([text(refused[0]).rsplit("Another run holds", maxsplit=1)[-1][:120]] if refused else [])
            problems = broken(namespace, expect)
            table.add("2 at once", f"{name}.yml x2", outcome, problems, notes, time.monotonic() - started)
        cleanup(namespace)


def cleanup(namespace):
    run("helm", "uninstall", "langfuse", "-n", namespace, "--wait", check=False, timeout=300)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


SCENARIOS = {"install": scenario_install, "upgrade": scenario_upgrade, "backup": scenario_backup,
             "restore": scenario_restore, "v4": scenario_v4}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--points", type=int, default=10, help="spread kill points per playbook (named ones come on top)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS) + ",twice")
    parser.add_argument("--no-named", action="store_true", help="leave out the named kill points")
    args = parser.parse_args()
    services = os.environ
    if "LOCALENV_POSTGRES_PASSWORD" not in services:
        raise SystemExit("the local services are not up: source <(tests/localenv/services.sh env)")
    table, started = Table(), time.monotonic()
    for name in args.scenarios.split(","):
        print(f"::: crash scenario {name}", flush=True)
        if name == "twice":
            two_at_once(table, services)
        else:
            SCENARIOS[name](table, services, args.points, not args.no_named)
    bad = table.print()
    print(f"crash suite took {time.monotonic() - started:.0f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
