"""Which connections the NetworkPolicies on the API server allow: the truth table, computed by cyclonus.

cyclonus (github.com/mattfenwick/cyclonus; network-policy-api's policy-assistant grew out of it) reads a namespace's
NetworkPolicies from the API server and answers, for each connection asked (source pod or address, destination pod or
address, port, protocol), whether the policies let it through: ingress at the destination and egress at the source,
by the rules of networking.k8s.io/v1. That is the policies' meaning; that a CNI enforces it is the CNI's part and
is not exercised here (KWOK runs no network).

`peer(namespace, labels, namespace_labels)` and `address(ip)` build the two ends, `connection(...)` one row, and
`allowed(namespace, rows)` asks cyclonus for all of them in one run; `differences` compares its answers with a table.
"""
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

LOCALENV = Path(__file__).resolve().parent


def binary():
    """cyclonus, built from its Go module on first use (build-binaries.sh cyclonus) and cached."""
    where = subprocess.run(["bash", "-c", f". {LOCALENV}/lib.sh && cyclonus_dir"], check=True,
                           capture_output=True, text=True).stdout.strip()
    path = Path(where) / "cyclonus"
    if not path.exists():
        subprocess.run([str(LOCALENV / "build-binaries.sh"), "cyclonus"], check=True, timeout=1500)
    return path


def peer(namespace, labels, namespace_labels=None, ip="10.244.9.9"):
    """A pod: its namespace (with that namespace's labels) and its labels."""
    return {"Internal": {"Namespace": namespace, "PodLabels": dict(labels),
                         "NamespaceLabels": {"kubernetes.io/metadata.name": namespace, **(namespace_labels or {})}},
            "IP": ip}


def address(ip):
    """An address outside the cluster's pods (a managed service, an LLM provider)."""
    return {"Internal": None, "IP": ip}


def connection(source, destination, port, protocol="TCP"):
    return {"Source": source, "Destination": destination, "ResolvedPort": int(port), "ResolvedPortName": "",
            "Protocol": protocol}


ANSWER = re.compile(r"^\|\s*IS ALLOWED\?\s*\|\s*(TRUE|FALSE)\s*\|", re.M)


def allowed(namespace, rows, kubectl="kubectl"):
    """cyclonus's answer for each row (True: allowed), the policies read from `namespace` on the API server."""
    context = subprocess.run([kubectl, "config", "current-context"], check=True, capture_output=True,
                             text=True).stdout.strip()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(rows, f)
    try:
        proc = subprocess.run(
            [str(binary()), "analyze", "--namespace", namespace, "--context", context, "--mode", "query-traffic",
             "--traffic-path", f.name, "--verbosity", "warn"],
            check=False, capture_output=True, text=True, timeout=300, env=os.environ)
    finally:
        os.unlink(f.name)
    answers = ANSWER.findall(proc.stdout)
    assert proc.returncode == 0 and len(answers) == len(rows), (proc.returncode, proc.stderr[-3000:], proc.stdout[-3000:])
    return [a == "TRUE" for a in answers]


def differences(namespace, rows, expected_allowed):
    """The rows {(source, destination): connection} whose answer is not the expected one, as sentences: a
    destination is expected allowed when it is in expected_allowed[source], denied otherwise."""
    keys = list(rows)
    answers = dict(zip(keys, allowed(namespace, [rows[k] for k in keys])))
    return [f"{s} -> {d}: {'allowed' if answers[s, d] else 'denied'}, expected {'denied' if answers[s, d] else 'allowed'}"
            for s, d in keys if answers[s, d] != (d in expected_allowed[s])]
