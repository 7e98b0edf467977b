"""Stand-in for the Langfuse web and worker processes behind KWOK pods.

KWOK runs no containers, so nothing would answer a port-forward to a
Langfuse pod. The local cluster forwards ports 3000 (web) and 3030 (worker)
of every pod here instead (see tests/localenv/kwok_config.py), and this
server answers like Langfuse does:

* GET /api/public/health -> {"status": "OK", "version": <tag>}, where <tag>
  is the image tag of the pod asked, as the real endpoint reports its own
  version. A forwarded connection carries no word of which pod it was meant
  for; the collection's requests name it (X-Langfuse-Ops-Pod: <ns>/<pod>,
  plugins/module_utils/k8s_portforward.py). A request through a Service
  (a Job's curl, which the job runner points here) carries the Service's
  namespace (?localenv-namespace=) and gets the newest Ready web pod's tag of
  that namespace; a request with neither, the newest Ready one cluster-wide.
* GET /api/public/ready -> {"status": "OK"}; the worker's /api/health and
  /api/ready -> {"status": "ok"}.
* GET /api/health?failIfEventPropagationStuck=true (v4's worker): 503 while the
  dual write's event propagation is stuck, which the tests signal with the label
  localenv.langfuse-ops.io/event-propagation-stuck=true on a Ready worker pod
  (of the asked pod's namespace; without the header, of any); 200 otherwise
  (upstream: it passes where no dual write runs).

Usage: langfuse_web.py PORT (KUBECONFIG names the cluster)
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from kubernetes import client, config


def asked_pod(headers):
    """(namespace, name) the request names, or None."""
    value = headers.get("X-Langfuse-Ops-Pod", "")
    return tuple(value.split("/", 1)) if value.count("/") == 1 else None


def asked_namespace(query):
    return (parse_qs(query).get("localenv-namespace") or [None])[0]


def web_version(pod):
    return next(c.image for c in pod.spec.containers if c.name == "langfuse-web").rsplit(":", 1)[-1]


def deployed_version(asked=None, namespace=None):
    api = client.CoreV1Api()
    if asked:
        try:
            return web_version(api.read_namespaced_pod(asked[1], asked[0]))
        except Exception:  # noqa: BLE001 (gone, or not a web pod: no answer, as from a pod that is not there)
            return None
    selector = "app.kubernetes.io/name=langfuse,app=web"
    pods = (api.list_namespaced_pod(namespace, label_selector=selector) if namespace
            else api.list_pod_for_all_namespaces(label_selector=selector)).items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
    if not ready:
        return None
    return web_version(max(ready, key=lambda p: p.metadata.creation_timestamp))


STUCK = "localenv.langfuse-ops.io/event-propagation-stuck=true"


def propagation_stuck(asked=None):
    api = client.CoreV1Api()
    selector = f"app.kubernetes.io/name=langfuse,app=worker,{STUCK}"
    if asked:
        return bool(api.list_namespaced_pod(asked[0], label_selector=selector).items)
    return bool(api.list_pod_for_all_namespaces(label_selector=selector).items)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/api/health" and parse_qs(url.query).get("failIfEventPropagationStuck") == ["true"]:
            stuck = propagation_stuck(asked_pod(self.headers))
            self.reply(503 if stuck else 200, {"status": "error", "message": "Event propagation is stuck"} if stuck
                       else {"status": "ok"})
        elif url.path == "/api/public/health":
            version = deployed_version(asked_pod(self.headers), asked_namespace(url.query))
            self.reply(200 if version else 503, {"status": "OK" if version else "NOT_READY", "version": version})
        elif self.path == "/api/public/ready":
            self.reply(200, {"status": "OK"})
        elif self.path in ("/api/health", "/api/ready"):
            # The worker's endpoints answer in lower case (worker/src/api/index.ts).
            self.reply(200, {"status": "ok"})
        else:
            self.reply(404, {"message": "not found"})

    def reply(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    config.load_kube_config()
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
