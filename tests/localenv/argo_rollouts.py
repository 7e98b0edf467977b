"""Argo Rollouts' own controller on the local control plane, for tests and the upstream check.

build-binaries.sh builds rollouts-controller from Argo Rollouts' Go module and keeps the module's CRDs
beside it (LOCALENV_CACHE/argo-rollouts/<version>). `controller(namespace)` applies the CRDs (they are
cluster-wide and stay) and runs the controller in namespaced mode for that one namespace, so runs side by
side do not share a controller. It listens for its metrics and healthz on every interface, as it has no
bind-address flag; nothing connects to those ports.
"""
import contextlib
import os
import socket
import subprocess
from pathlib import Path

import crds

LOCALENV = Path(__file__).resolve().parent


def directory():
    out = subprocess.run(["bash", "-c", f". {LOCALENV}/lib.sh && argo_rollouts_dir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def controller(namespace, log, kubectl="kubectl"):
    """CRDs applied, `namespace` created (when missing) and watched by a controller while the block runs."""
    where = directory()
    binary = where / "rollouts-controller"
    if not binary.exists():
        # Built on first use (`cluster.sh up` leaves it out: CI's tier has no Argo test); cached afterwards.
        subprocess.run([str(LOCALENV / "build-binaries.sh"), "argo_rollouts"], check=True)
    subprocess.run([kubectl, "apply", "--server-side", "-f", str(where / "crds")], check=True, capture_output=True)
    crds.wait_established(["rollouts.argoproj.io"], kubectl)
    subprocess.run([kubectl, "create", "namespace", namespace], check=False, capture_output=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(  # noqa: S603 (the binary build-binaries.sh built)
            [str(binary), "--kubeconfig", os.environ["KUBECONFIG"], "--namespaced", "--namespace", namespace,
             "--leader-elect=false", "--metricsPort", str(_free_port()), "--healthzPort", str(_free_port())],
            stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)
