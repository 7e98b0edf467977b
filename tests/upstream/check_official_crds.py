"""The role's KeeperCluster and ClickHouseCluster (official mode) against the official operator's real CRDs.

    python tests/upstream/check_official_crds.py --upstream <ClickHouse/clickhouse-operator git repository> [--ref REF]

The local cluster serves hand-written minimal CRDs of ours for clickhouse.com (tests/localenv/manifests/crds/
clickhouse-com-*.yaml): they keep names and status fields but accept almost any spec. This check takes upstream's
real CRDs (config/crd/bases/clickhouse.com_{clickhouseclusters,keeperclusters}.yaml at REF, read with `git show`
into a temporary directory: nothing of upstream enters this repository), puts them on the local API server in
place of ours, renders the role's templates (roles/clickhouse_operator/templates/official_*.yml.j2) for a few
variable sets, and for every object:

  * `kubectl create --dry-run=server` (the real schema's types, enums, required fields, minimums);
    with strict field validation (`--validate=strict`: a field the schema does not know is an error, not
    silently pruned);
  * a real create in a throwaway namespace, read back: every field the role sent must be stored as sent, and the
    fields the schema's defaults added are listed;
  * a control object with a field the schema does not have must be caught (else the check is blind).

It prints one table row per object and exits non-zero when any row is red. Afterwards our CRDs are put back
(`kubectl replace`). It cannot run in CI: CI has no copy of upstream's repository (fetching it is the
developer's step). The local environment must be up (`tests/localenv/cluster.sh up`); run nothing else that
uses clickhouse.com objects meanwhile.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "localenv"))
import crds as localenv_crds  # noqa: E402  pylint: disable=wrong-import-position
OURS = REPO / "tests" / "localenv" / "manifests" / "crds"
CRDS = {"KeeperCluster": "keeperclusters", "ClickHouseCluster": "clickhouseclusters"}
TEMPLATES = {"KeeperCluster": "official_keeper.yml.j2", "ClickHouseCluster": "official_cluster.yml.j2"}
# Variable sets the role renders: its defaults, a small single-replica one, and the integration test's.
CASES = {
    "defaults": {},
    "single-gp3": {"clickhouse_operator_replicas": 1, "clickhouse_operator_keeper_replicas": 1,
                   "clickhouse_operator_storage_class": "gp3", "clickhouse_operator_image": "clickhouse/clickhouse-server:26.4",
                   "clickhouse_operator_keeper_image": "clickhouse/clickhouse-keeper:26.4"},
    "localenv-test": {"clickhouse_operator_storage_class": "standard", "clickhouse_operator_storage_size": "1Gi",
                      "clickhouse_operator_keeper_storage_size": "1Gi",
                      "clickhouse_operator_resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                      "clickhouse_operator_keeper_resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
}


def sh(*args, check=True, **kwargs):
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=300, **kwargs)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def upstream_crds(upstream, ref, into):
    git = ["git", "-C", upstream] if (Path(upstream) / ".git").exists() else ["git", f"--git-dir={upstream}"]
    commit = sh(*git, "rev-parse", f"{ref}^{{commit}}").stdout.strip()
    paths = {}
    for kind, plural in CRDS.items():
        text = sh(*git, "show", f"{commit}:config/crd/bases/clickhouse.com_{plural}.yaml").stdout
        paths[kind] = Path(into) / f"{plural}.yaml"
        paths[kind].write_text(text)
    return commit, paths


def render(namespace, into):
    """{case: {kind: object}} as the role renders them (its defaults plus the case's variables)."""
    out = Path(into) / "rendered.json"
    tasks = [{"name": "Render", "ansible.builtin.copy": {"dest": str(out), "mode": "0600", "content": "{{ _rendered | to_json }}"},
              "vars": {"_rendered": {
                  case: {kind: f"{{{{ lookup('ansible.builtin.template', '{REPO}/roles/clickhouse_operator/templates/{tpl}',"
                               f" template_vars={json.dumps({**variables, 'clickhouse_operator_installation_name': case})}) | from_yaml }}}}"
                         for kind, tpl in TEMPLATES.items()}
                  for case, variables in CASES.items()}}}]
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars_files": [str(REPO / "roles" / "clickhouse_operator" / "defaults" / "main.yml")],
             "tasks": tasks}]
    playbook = Path(into) / "render.yml"
    playbook.write_text(yaml.safe_dump(play))
    extra = {"clickhouse_operator_mode": "official", "clickhouse_operator_namespace": namespace,
             "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    sh("ansible-playbook", "-i", "localhost,", "-e", json.dumps(extra), str(playbook), cwd=REPO)
    return json.loads(out.read_text())


def leaves(obj, path=""):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{path}[{i}]")
    else:
        yield path, obj


def lookup(obj, path):
    """The value at a leaves() path, or a sentinel when it is gone."""
    cur = obj
    for part in path.replace("[", ".[").strip(".").split("."):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(cur, list) or index >= len(cur):
                return KeyError
            cur = cur[index]
        else:
            if not isinstance(cur, dict) or part not in cur:
                return KeyError
            cur = cur[part]
    return cur


def check(obj):
    """(dry-run result, pruned or changed fields, fields added by the schema's defaults)."""
    body = json.dumps(obj)
    dry = sh("kubectl", "create", "--validate=strict", "--dry-run=server", "-o", "json", "-f", "-", input=body, check=False)
    if dry.returncode != 0:
        return "refused: " + dry.stderr.strip().splitlines()[-1].split("STDIN\": ")[-1][:200], None, None
    made = sh("kubectl", "create", "--validate=strict", "-o", "json", "-f", "-", input=body, check=False)
    if made.returncode != 0:
        return "create refused: " + made.stderr.strip().splitlines()[-1][:160], None, None
    stored = json.loads(made.stdout)
    lost = [p for p, v in leaves(obj["spec"], ".spec") if lookup(stored, p) != v]
    sent = {leaf[0] for leaf in leaves(obj["spec"], ".spec")}
    added = [leaf[0] for leaf in leaves(stored["spec"], ".spec") if leaf[0] not in sent]
    return "accepted", lost, added


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="a clone, or a bare/mirror git dir, of ClickHouse/clickhouse-operator")
    parser.add_argument("--ref", default="HEAD", help="the ref whose CRDs to check against (default HEAD)")
    args = parser.parse_args()
    if "KUBECONFIG" not in os.environ:
        raise SystemExit("KUBECONFIG is not set: source <(tests/localenv/cluster.sh env) first")
    namespace = f"chof-crd-{uuid.uuid4().hex[:6]}"
    rows, red = [], False
    with tempfile.TemporaryDirectory() as tmp:
        commit, crds = upstream_crds(args.upstream, args.ref, tmp)
        rendered = render(namespace, tmp)
        try:
            for path in crds.values():
                sh("kubectl", "apply", "--server-side", "--force-conflicts", "--field-manager=upstream-check", "-f", str(path))
            localenv_crds.wait_established([f"{p}.clickhouse.com" for p in CRDS.values()])
            sh("kubectl", "create", "namespace", namespace)
            for case, objects in rendered.items():
                for kind in ("KeeperCluster", "ClickHouseCluster"):
                    obj = objects[kind]
                    result, lost, added = check(obj)
                    ok = result == "accepted" and not lost
                    red |= not ok
                    rows.append((kind, case, result, ", ".join(lost or []) or "-", ", ".join(added or []) or "-",
                                 "ok" if ok else "RED"))
            # The control: a field the real schema lacks must be seen as pruned.
            control = json.loads(json.dumps(rendered["defaults"]["KeeperCluster"]))
            control["metadata"]["name"] = "control"
            control["spec"]["replicaz"] = 3
            result, lost, added = check(control)
            ok = (result.startswith("refused") and 'unknown field "spec.replicaz"' in result) or lost == [".spec.replicaz"]
            red |= not ok
            rows.append(("KeeperCluster", "control (spec.replicaz)", result, ", ".join(lost or []) or "-", "-",
                         "ok (caught)" if ok else "RED (not caught)"))
        finally:
            sh("kubectl", "delete", "namespace", namespace, "--wait=false", check=False)
            for plural in CRDS.values():
                sh("kubectl", "replace", "-f", str(OURS / f"clickhouse-com-{plural}.yaml"), check=False)
    print(f"Role's official-mode objects against ClickHouse/clickhouse-operator CRDs at {commit[:12]}")
    header = ("object", "variables", "server dry-run + create (strict)", "fields pruned or changed", "defaulted fields", "result")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    return 1 if red else 0


if __name__ == "__main__":
    sys.exit(main())
