"""Stand-in for the Langfuse web and worker processes behind KWOK pods.

KWOK runs no containers, so nothing would answer a port-forward to a
Langfuse pod. The local cluster forwards ports 3000 (web) and 3030 (worker)
of every pod here instead (see tests/localenv/kwok_config.py), and this
server answers like Langfuse does:

* GET /api/public/health -> {"status": "OK", "version": <tag>}, where <tag>
  is the image tag of the newest Ready Langfuse web pod: the version the
  Deployment actually rolled out, as the real endpoint would report it.
  A forwarded connection carries no word of which pod it was meant for, so
  tests keep one Langfuse version on the cluster at a time.
* GET /api/public/ready -> {"status": "OK"}; the worker's /api/health and
  /api/ready -> {"status": "ok"}.
* GET /api/health?failIfEventPropagationStuck=true (v4's worker): 503 while the
  dual write's event propagation is stuck, which the tests signal with the label
  localenv.langfuse-ops.io/event-propagation-stuck=true on a Ready worker pod;
  200 otherwise (upstream: it passes where no dual write runs).

Usage: langfuse_web.py PORT (KUBECONFIG names the cluster)
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from kubernetes import client, config


def deployed_version():
    api = client.CoreV1Api()
    pods = api.list_pod_for_all_namespaces(label_selector="app.kubernetes.io/name=langfuse,app=web").items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
    if not ready:
        return None
    newest = max(ready, key=lambda p: p.metadata.creation_timestamp)
    image = next(c.image for c in newest.spec.containers if c.name == "langfuse-web")
    return image.rsplit(":", 1)[-1]


STUCK = "localenv.langfuse-ops.io/event-propagation-stuck=true"


def propagation_stuck():
    api = client.CoreV1Api()
    return bool(api.list_pod_for_all_namespaces(label_selector=f"app.kubernetes.io/name=langfuse,app=worker,{STUCK}").items)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/api/health" and parse_qs(url.query).get("failIfEventPropagationStuck") == ["true"]:
            stuck = propagation_stuck()
            self.reply(503 if stuck else 200, {"status": "error", "message": "Event propagation is stuck"} if stuck
                       else {"status": "ok"})
        elif self.path == "/api/public/health":
            version = deployed_version()
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
