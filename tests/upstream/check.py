"""The collection against the official Langfuse charts, on the local control plane.

    make upstream-check UPSTREAM=<langfuse-k8s git repository>    (a clone, or a bare/mirror git dir)

The stand-in charts of tests/standins are ours; the released charts are the truth. This takes the
official chart at each ref (`git archive`, into a temporary directory: nothing of upstream enters this
repository), drops its sub-chart dependencies (every `*.deploy` is false in our values, and nothing can
be downloaded here) and runs the collection's real playbooks with it against the local control plane:

  v3 line:  install v3 -> re-run (changed=0) -> upgrade v3 -> phases infra and dual (v3 -> v4) -> re-runs
            -> the v4 record deleted: install refused, then the record repaired from the release -> re-run
  v4 line:  install v4 -> re-run (changed=0) -> upgrade v4 -> re-run (changed=0)   (per v4 chart ref)
  Argo:     the v3 line's install and phases infra and dual with the web as an Argo Rollout
            (langfuse_helm_web_workload: argo_rollout), Argo Rollouts' own controller watching the namespace,
            then the Rollout's state

then audits every Helm revision those runs created (tests/upstream/release_audit.py: no literal
secret, CLICKHOUSE_CLUSTER_ENABLED as the inventory says, pinned images, no web pod-template change
in a worker step), renders every inventory's values with each real chart and audits those manifests
the same way, and prints one table. It exits non-zero when any row is red.

It cannot run in CI: CI has no copy of the upstream charts (fetching them is the developer's step).
Run it before every change that touches chart values, upgrades or chart versions, and put its table
in the closing note. The local environment must be up (`make localenv-up`).

KWOK runs no container: the pods the official chart creates are played by the stand-in Langfuse
server behind the API server's port-forward, and migration Jobs complete without migrating.
"""
import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests" / "localenv"))
import argo_rollouts  # noqa: E402  pylint: disable=wrong-import-position
import release_audit  # noqa: E402  pylint: disable=wrong-import-position

INVENTORIES = ["local", "dev", "staging", "prod"]
POST_RENDERER = REPO / "roles" / "langfuse_helm" / "files" / "post_render.sh"
V4_DATA_SERVICES = {"clickhouse_operator_server_version": "25.12"}


def sh(*args, check=True, timeout=1500, **kwargs):
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def extract_chart(upstream, ref, into):
    """charts/langfuse of upstream at ref, without its sub-chart dependencies."""
    git = ["git", f"--git-dir={upstream}"] if not (Path(upstream) / ".git").exists() else ["git", "-C", upstream]
    target = Path(into) / ref
    target.mkdir(parents=True)
    archive = subprocess.run([*git, "archive", ref, "charts/langfuse"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target), "--strip-components=2"], input=archive, check=True)
    chart = yaml.safe_load((target / "Chart.yaml").read_text())
    chart.pop("dependencies", None)
    (target / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
    for leftover in ("Chart.lock", "charts"):
        shutil.rmtree(target / leftover, ignore_errors=True) if (target / leftover).is_dir() else (target / leftover).unlink(missing_ok=True)
    return target, str(chart["version"]), str(chart["appVersion"])


def recap_changed(output):
    match = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", output)
    return int(match[1]) if match else None


def playbook(name, variables):
    start = time.monotonic()
    proc = sh("ansible-playbook", "-i", "inventories/local", f"playbooks/{name}.yml", "-e", json.dumps(variables),
              check=False, cwd=REPO)
    last_error = ""
    for line in proc.stdout.splitlines():
        if '"msg":' in line or "FAILED!" in line:
            last_error = line.strip()
    return {"rc": proc.returncode, "changed": recap_changed(proc.stdout), "seconds": round(time.monotonic() - start),
            "error": last_error[:400], "output": proc.stdout}


def chart_vars(chart_dir, version, line, app):
    return {"langfuse_helm_chart_ref": str(chart_dir), "langfuse_helm_chart_version": version,
            "langfuse_helm_release_line": line, "langfuse_helm_app_version": app,
            **(V4_DATA_SERVICES if line == "v4" else {})}


def namespace_secrets(namespace):
    items = json.loads(sh("kubectl", "-n", namespace, "get", "secrets", "-o", "json").stdout)["items"]
    values = set()
    for item in items:
        if item.get("type") == "helm.sh/release.v1":
            continue
        for value in (item.get("data") or {}).values():
            values.add(base64.b64decode(value).decode(errors="replace"))
    return values


def run_line(title, namespace, steps, log):
    """Runs the steps (name, playbook, variables, expect[, before]) in namespace; returns table rows. `expect` is
    True for a run that must change nothing, False for any successful run, or a text: the run must refuse saying it.
    `before(namespace)`, when given, runs first (e.g. deletes a record)."""
    rows = []
    for step, name, variables, expect, *before in steps:
        for action in before:
            action(namespace)
        result = playbook(name, {"langfuse_namespace": namespace, "upgrade_observe_seconds": 5, "upgrade_canary_observe_seconds": 5, **variables})
        log.write(f"\n===== {title} / {step} =====\n{result['output']}")
        if isinstance(expect, str):
            ok = result["rc"] != 0 and expect in " ".join(result["output"].split())
            note = "" if ok else f"expected a refusal saying {expect!r}"
        else:
            ok = result["rc"] == 0 and (not expect or result["changed"] == 0)
            note = "" if ok else (f"changed={result['changed']}" if result["rc"] == 0 else result["error"])
        rows.append((title, step, "ok" if ok else "FAIL", f"rc={result['rc']} changed={result['changed']} {result['seconds']}s", note))
        if result["rc"] != 0 and not (isinstance(expect, str) and ok):
            break
    return rows


def delete_v4_record(namespace):
    sh("kubectl", "-n", namespace, "delete", "configmap", "langfuse-v4-migration")


def audit_rows(title, namespace):
    rows = []
    history = release_audit.revisions(namespace)
    for row in release_audit.audit(history, namespace_secrets(namespace), cluster_enabled=False):
        rows.append((title, f"revision {row['revision']} ({row['chart']}, {row['moved']})",
                     "ok" if not row["problems"] and row["status"] in ("deployed", "superseded") else "FAIL",
                     f"{row['status']}; web {row['web']}; worker {row['worker']}", "; ".join(row["problems"])))
    return rows


def argo_rows(title, namespace, version):
    """The web Rollout after the Argo scenario: the chart's Deployment at 0, the Rollout Healthy on `version`."""
    def get(*args):
        proc = sh("kubectl", "-n", namespace, "get", *args, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else {}
    deployment, rollout = get("deployment", "langfuse-web"), get("rollout", "langfuse-web")
    pods = [p for p in get("pods", "-l", "app=web").get("items", []) if not p["metadata"].get("deletionTimestamp")]
    status = rollout.get("status", {})
    tags = sorted(p["spec"]["containers"][0]["image"].rsplit(":", 1)[1] for p in pods)
    problems = []
    if deployment.get("spec", {}).get("replicas") != 0:
        problems.append(f"web Deployment at {deployment.get('spec', {}).get('replicas')} replicas, not 0")
    if status.get("phase") != "Healthy" or status.get("stableRS") != status.get("currentPodHash"):
        problems.append(f"Rollout {status.get('phase')} ({status.get('message', '')})")
    if tags != [version] * rollout.get("spec", {}).get("replicas", -1):
        problems.append(f"web pods {tags}")
    return [(title, "web Rollout", "FAIL" if problems else "ok",
             f"{status.get('phase')}; {len(pods)} pods on {', '.join(sorted(set(tags)))}; Deployment replicas "
             f"{deployment.get('spec', {}).get('replicas')}", "; ".join(problems))]


def render_inventories(charts):
    """Every inventory's langfuse_helm values, composed by the role, rendered by each real chart and audited."""
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for inventory in INVENTORIES:
            for chart_dir, version, line, app in charts:
                target = Path(out) / f"{inventory}-{version}.json"
                # The vault example's placeholders stand in for the real vault: only Secrets' names reach the values.
                vault = REPO / "inventories" / inventory / "group_vars" / "langfuse" / "vault.yml.example"
                proc = sh("ansible-playbook", "-i", f"inventories/{inventory}", "tests/upstream/compose_values.yml",
                          *(["-e", f"@{vault}"] if vault.exists() else []),
                          "-e", json.dumps({**chart_vars(chart_dir, version, line, app), "compose_values_to": str(target)}),
                          check=False, cwd=REPO)
                if proc.returncode != 0:
                    rows.append(("render", f"{inventory} with {version}", "FAIL", "compose", proc.stdout[-300:].strip()))
                    continue
                composed = json.loads(target.read_text())
                # With the role's post-renderer, as the role runs helm.
                post_render = (composed["values"].get("langfuseOps") or {}).get("postRender") or {}
                render = sh("helm", "template", "langfuse", str(chart_dir), "--namespace", "langfuse", "--kube-version",
                            "1.37.0", "--values", "-", "--post-renderer", str(POST_RENDERER),
                            input=json.dumps(composed["values"]), check=False,
                            env={**os.environ, "LANGFUSE_OPS_PYTHON": sys.executable,
                                 "LANGFUSE_OPS_POST_RENDER": json.dumps(post_render)})
                if render.returncode != 0:
                    rows.append(("render", f"{inventory} with {version}", "FAIL", "helm template", render.stderr.strip()[-300:]))
                    continue
                problems = release_audit.revision_problems(release_audit.documents(render.stdout), json.dumps(composed["values"]),
                                                           set(), composed["cluster_enabled"], "langfuse")
                rows.append(("render", f"{inventory} with {version}", "FAIL" if problems else "ok",
                             f"{len(release_audit.documents(render.stdout))} objects", "; ".join(problems)))
    return rows


def table(rows):
    widths = [max(len(str(r[i])) for r in rows + [("scenario", "step", "result", "detail", "problems")]) for i in range(4)]
    lines = []
    for r in [("scenario", "step", "result", "detail", "problems")] + rows:
        lines.append(" | ".join(str(r[i]).ljust(widths[i]) for i in range(4)) + " | " + str(r[4]))
        if len(lines) == 1:
            lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 8)
    return "\n".join(lines)


def v3_line(args, v3, v4s, namespaces, log):
    """install v3, upgrade it, phases infra and dual, the lost record refused and repaired."""
    rows = []
    ns = f"uc-v3-{uuid.uuid4().hex[:5]}"
    namespaces.append(ns)
    v3_vars = chart_vars(v3[0], v3[1], "v3", v3[2])
    first_v4 = v4s[0]
    v4_vars = chart_vars(first_v4[1], first_v4[2], "v4", first_v4[3])
    title = f"{args.v3_ref} -> {first_v4[0]}"
    rows += run_line(title, ns, [
        (f"install {v3[2]}", "install", v3_vars, False),
        ("re-run install", "install", v3_vars, True),
        (f"upgrade -> {args.v3_upgrade_to}", "upgrade", {**v3_vars, "langfuse_helm_app_version": args.v3_upgrade_to}, False),
        # Debian's ClickHouse 18.16 has no system.disks: the headroom check is tested on chDB in the suite.
        ("phase infra", "upgrade", {**v4_vars, "upgrade_phase": "infra", "upgrade_v4_disk_factor": 0}, False),
        (f"phase dual -> {first_v4[3]}", "upgrade", {**v4_vars, "upgrade_phase": "dual"}, False),
        ("re-run upgrade", "upgrade", v4_vars, True),
        ("re-run install", "install", v4_vars, True),
        # Issue 18: a lost record during dual must not make the next run cut over: it is refused from the
        # write mode the official chart's manifest runs, and repaired from it.
        ("record lost: install refused", "install", v4_vars,
         "no phase recorded (ConfigMap missing or empty), but the release runs", delete_v4_record),
        ("repair the record from the release", "install", {**v4_vars, "langfuse_helm_v4_record_repair": ns}, False),
        ("re-run install", "install", v4_vars, True),
    ], log)
    rows += audit_rows(title, ns)
    return rows


def v4_lines(args, v4s, namespaces, log):
    """install v4 on each v4 ref, upgrade it, re-runs."""
    rows = []
    for ref, chart_dir, version, app in v4s:
        ns = f"uc-v4-{uuid.uuid4().hex[:5]}"
        namespaces.append(ns)
        v4_vars = chart_vars(chart_dir, version, "v4", app)
        title = f"{ref} ({version})"
        rows += run_line(title, ns, [
            (f"install {app}", "install", v4_vars, False),
            ("re-run install", "install", v4_vars, True),
            (f"upgrade -> {args.v4_upgrade_to}", "upgrade", {**v4_vars, "langfuse_helm_app_version": args.v4_upgrade_to}, False),
            ("re-run upgrade", "upgrade", {**v4_vars, "langfuse_helm_app_version": args.v4_upgrade_to}, True),
            ("re-run install", "install", {**v4_vars, "langfuse_helm_app_version": args.v4_upgrade_to}, True),
        ], log)
        rows += audit_rows(title, ns)
    return rows


def argo_line(args, v3, v4s, namespaces, log):
    """the v3 line's install and phases infra and dual with the web as an Argo Rollout."""
    rows = []
    # The same phased jump with the web as an Argo Rollout: the chart step, the worker and the web each
    # move the Rollout through its gated canary (or, with an unchanged web template, leave it Healthy).
    ns = f"uc-argo-{uuid.uuid4().hex[:5]}"
    namespaces.append(ns)
    argo = {"langfuse_helm_web_workload": "argo_rollout", "langfuse_helm_canary_observe_seconds": 5}
    first_v4 = v4s[0]
    v3_vars = chart_vars(v3[0], v3[1], "v3", v3[2])
    v4_vars = chart_vars(first_v4[1], first_v4[2], "v4", first_v4[3])
    title = f"{args.v3_ref} -> {first_v4[0]}, web as an Argo Rollout"
    with argo_rollouts.controller(ns, Path(args.log).with_suffix(".argo-rollouts.log")):
        rows += run_line(title, ns, [
            (f"install {v3[2]}", "install", {**v3_vars, **argo}, False),
            ("re-run install", "install", {**v3_vars, **argo}, True),
            ("phase infra", "upgrade", {**v4_vars, **argo, "upgrade_phase": "infra", "upgrade_v4_disk_factor": 0}, False),
            (f"phase dual -> {first_v4[3]}", "upgrade", {**v4_vars, **argo, "upgrade_phase": "dual"}, False),
            ("re-run upgrade", "upgrade", {**v4_vars, **argo}, True),
            ("re-run install", "install", {**v4_vars, **argo}, True),
        ], log)
        rows += argo_rows(title, ns, first_v4[3])
    rows += audit_rows(title, ns)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("upstream", help="a langfuse-k8s git repository (clone or bare mirror); never committed here")
    parser.add_argument("--v3-ref", default="langfuse-1.5.41", help="the v3 chart's ref (default %(default)s)")
    parser.add_argument("--v4-ref", action="append", help="v4 chart refs (default: langfuse-2.0.0 and main, the fixed template)")
    parser.add_argument("--v3-upgrade-to", default="3.225.4")
    parser.add_argument("--v4-upgrade-to", default="4.16.0")
    parser.add_argument("--log", default="/tmp/langfuse-ops-upstream-check.log")
    parser.add_argument("--keep", action="store_true", help="keep the namespaces for a look afterwards")
    parser.add_argument("--lines", default="v3,v4,argo",
                        help="which lines to run, of v3, v4 and argo (default all; the inventories are rendered always)")
    args = parser.parse_args()
    lines = set(args.lines.split(","))
    v4_refs = args.v4_ref or ["langfuse-2.0.0", "main"]

    work = tempfile.mkdtemp(prefix="langfuse-upstream-")
    v3 = extract_chart(args.upstream, args.v3_ref, work)
    v4s = [(ref, *extract_chart(args.upstream, ref, work)) for ref in v4_refs]
    rows, namespaces = [], []
    with open(args.log, "w", encoding="utf-8") as log:
        rows += v3_line(args, v3, v4s, namespaces, log) if "v3" in lines else []
        rows += v4_lines(args, v4s, namespaces, log) if "v4" in lines else []
        rows += argo_line(args, v3, v4s, namespaces, log) if "argo" in lines else []
        rows += render_inventories([(v3[0], v3[1], "v3", v3[2])] + [(ref[1], ref[2], "v4", ref[3]) for ref in v4s])
    if not args.keep:
        for ns in namespaces:
            sh("helm", "uninstall", "langfuse", "-n", ns, "--wait", check=False)
            sh("kubectl", "delete", "namespace", ns, "--wait=false", check=False)
    shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    red = [r for r in rows if r[2] != "ok"]
    print(f"\nupstream check: {len(rows) - len(red)} rows green, {len(red)} red (playbook output: {args.log})")
    return 1 if red else 0


if __name__ == "__main__":
    sys.exit(main())
