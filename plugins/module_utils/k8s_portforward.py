# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP requests to a pod through the API server's port-forward.

The controller often cannot reach pods or in-cluster Services directly; the
API server can, and `kubectl port-forward` uses the same channel.
"""

from __future__ import annotations

import json

try:
    from kubernetes import client, config
    from kubernetes.stream import portforward
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = exc


def core_api(kubeconfig=None, context=None):
    api_client = config.new_client_from_config(config_file=kubeconfig, context=context or None)
    return client.CoreV1Api(api_client)


def ready_pods(api, namespace, selector):
    """Names of the Running pods matching selector whose Ready condition is True, newest first."""
    pods = api.list_namespaced_pod(namespace, label_selector=selector).items
    ready = [
        p for p in pods
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]
    ready.sort(key=lambda p: p.metadata.creation_timestamp, reverse=True)
    return [p.metadata.name for p in ready]


def http_get(api, namespace, pod, port, path, timeout=10):
    """GET path on pod:port through a port-forward; returns (status code, body text)."""
    forward = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    sock = forward.socket(port)
    sock.settimeout(timeout)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n".encode())
        data = b""
        # The port-forward stream does not always pass on the server's close,
        # so stop as soon as the response is complete.
        while not _complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
        forward.close()
    error = forward.error(port)
    if error:
        raise ConnectionError(f"port-forward to {namespace}/{pod}:{port} failed: {error}")
    return parse_http_response(data)


def _complete(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    headers = head.decode("iso-8859-1").lower()
    for line in headers.split("\r\n")[1:]:
        name, _sep, value = line.partition(":")
        if name.strip() == "content-length":
            return len(body) >= int(value.strip())
    if "transfer-encoding: chunked" in headers:
        return body.endswith(b"0\r\n\r\n")
    return False


def parse_http_response(data):
    head, _sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise ConnectionError(f"not an HTTP response: {data[:80]!r}")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _sep, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    return status, body.decode("utf-8", "replace")


def _unchunk(body):
    out = b""
    while body:
        size_line, _sep, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def parse_health(body):
    """Langfuse's /api/public/health answers {"status": "OK", "version": "x.y.z"}."""
    data = json.loads(body)
    return data.get("status"), data.get("version")
