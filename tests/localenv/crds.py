"""Waiting for freshly applied CRDs to be Established, for the tests and the upstream checks.

`kubectl wait --for=condition=Established` right after `kubectl apply` fails at once, with
".status.conditions accessor error: <nil> is of the type <nil>", while the API server has not yet written the
CRD's first status (kubectl 1.3x; seen in CI on the Argo Rollouts CRDs). So the status is polled instead.

`python crds.py NAME...` waits for those CRDs (cluster.sh, for the stand-in CRDs it applies).
"""
import json
import subprocess
import sys
import time


def wait_established(names, kubectl="kubectl", timeout=60):
    """Return once every CRD in `names` has Established=True; raise naming the ones that have not."""
    deadline, pending = time.monotonic() + timeout, list(names)
    while True:
        out = subprocess.run([kubectl, "get", "crd", *pending, "-o", "json", "--ignore-not-found"],
                             capture_output=True, text=True, check=False)
        if out.returncode == 0:
            got = json.loads(out.stdout or '{"items": []}')
            items = got["items"] if "items" in got else [got]  # for one name kubectl prints the object itself
            established = {item["metadata"]["name"] for item in items
                           if any(c["type"] == "Established" and c["status"] == "True"
                                  for c in item.get("status", {}).get("conditions") or [])}
            pending = [name for name in pending if name not in established]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not Established after {timeout}s: {', '.join(pending)} ({out.stderr.strip() or 'no error'})")
        time.sleep(0.5)


if __name__ == "__main__":
    try:
        wait_established(sys.argv[1:])
    except TimeoutError as exc:
        raise SystemExit(f"[localenv] ERROR: {exc}") from None
