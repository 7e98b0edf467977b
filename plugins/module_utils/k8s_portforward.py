# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connections to a pod through the API server's port-forward.

The controller often cannot reach pods or in-cluster Services directly; the
API server can, and `kubectl port-forward` uses the same channel. Two ways
in: `http_get` sends one HTTP request over a stream; `local_forward` opens a
local listener whose connections are piped to the pod, for clients (libpq,
http.client) that want a host and a port.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time

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


def custom_objects_api(kubeconfig=None, context=None):
    api_client = config.new_client_from_config(config_file=kubeconfig, context=context or None)
    return client.CustomObjectsApi(api_client)


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
    """GET path on pod:port through a port-forward; returns (status code, body text).

    The request names the pod it is meant for (X-Langfuse-Ops-Pod: <namespace>/<pod>): the forwarded stream
    carries no word of it, and the local test environment's stand-in answers for that pod. Langfuse ignores it.
    """
    forward = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    sock = forward.socket(port)
    sock.settimeout(timeout)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nX-Langfuse-Ops-Pod: {namespace}/{pod}\r\n"
                     "Connection: close\r\n\r\n".encode())
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


def service_target(api, namespace, service, port):
    """The Ready pod behind a Service and the pod port that Service port `port` leads to.

    The API server port-forwards to pods only, so a Service is resolved the
    way kube-proxy would: its selector picks the pods, its ports map `port`
    to a targetPort (a number, or a container port name looked up in the pod).
    Returns (pod name, pod port).
    """
    svc = api.read_namespaced_service(service, namespace)
    selector = svc.spec.selector or {}
    if not selector:
        raise ConnectionError(
            f"Service {namespace}/{service} has no selector (ExternalName, or endpoints of a database outside the cluster): "
            "there is no pod to port-forward to; connect to the database directly")
    pods = ready_pods(api, namespace, ",".join(f"{k}={v}" for k, v in sorted(selector.items())))
    if not pods:
        raise ConnectionError(f"no Ready pod behind Service {namespace}/{service} (selector {selector})")
    target = port
    for svc_port in svc.spec.ports or []:
        if svc_port.port == port:
            target = svc_port.target_port if svc_port.target_port is not None else port
            break
    if isinstance(target, str) and not target.isdigit():
        return pods[0], _named_container_port(api.read_namespaced_pod(pods[0], namespace), target, namespace)
    return pods[0], int(target)


def _named_container_port(pod, name, namespace):
    for container in pod.spec.containers or []:
        for cport in container.ports or []:
            if cport.name == name:
                return cport.container_port
    raise ConnectionError(f"pod {namespace}/{pod.metadata.name} has no container port named {name!r}")


class LocalForward:
    """A listener on 127.0.0.1:<ephemeral> whose connections go to pod:port through the API server.

    Each accepted connection gets a port-forward stream of its own (as
    `kubectl port-forward` does), so any TCP client works through it:
    libpq, HTTP, TLS end to end. Use it as a context manager; leaving it
    closes the listener and every open stream.
    """

    def __init__(self, api, namespace, pod, port, timeout=10):
        self.namespace, self.pod, self.remote_port = namespace, pod, port
        self.timeout = timeout
        self.errors = []
        # kubernetes.stream.portforward swaps the ApiClient's call_api while it
        # opens a stream: give the forwarder a client of its own, and open
        # one stream at a time, so the caller's client is never disturbed.
        self._api = client.CoreV1Api(client.ApiClient(api.api_client.configuration))
        self._open_lock = threading.Lock()
        self._conns = set()
        self._conns_lock = threading.Lock()
        self._threads = []
        self._closed = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name=f"forward {namespace}/{pod}:{port}", daemon=True)

    def __enter__(self):
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._conns_lock:
            for sock in list(self._conns):
                _close_quietly(sock)
        if self._acceptor.is_alive():
            self._acceptor.join(self.timeout)
        for thread in self._threads:
            thread.join(self.timeout)
        self._api.api_client.close()

    def failures(self, timeout=2):
        """The errors of the streams so far, once those still closing have finished (a client gave up on them)."""
        end = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0, end - time.monotonic()))
        return list(dict.fromkeys(self.errors))

    def _track(self, sock):
        with self._conns_lock:
            if self._closed.is_set():
                _close_quietly(sock)
                return False
            self._conns.add(sock)
            return True

    def _accept(self):
        while not self._closed.is_set():
            try:
                conn, _addr = self._listener.accept()
            except OSError:
                return
            if not self._track(conn):
                return
            thread = threading.Thread(target=self._pipe, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pipe(self, conn):
        forward = remote = None
        try:
            with self._open_lock:
                forward = portforward(self._api.connect_get_namespaced_pod_portforward, self.pod, self.namespace,
                                      ports=str(self.remote_port))
            remote = forward.socket(self.remote_port)
            if self._track(remote):
                _splice(conn, remote, self._closed)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if not self._closed.is_set():
                self.errors.append(f"port-forward to {self.namespace}/{self.pod}:{self.remote_port} failed: {exc}")
        finally:
            for sock in (conn, remote):
                if sock is not None:
                    _close_quietly(sock)
                    with self._conns_lock:
                        self._conns.discard(sock)
            if forward is not None:
                forward.close()
                error = forward.error(self.remote_port)
                if error:
                    self.errors.append(f"port-forward to {self.namespace}/{self.pod}:{self.remote_port} failed: {error.strip()}")


def local_forward(api, namespace, pod, port, timeout=10):
    """Context manager: `with local_forward(api, ns, pod, 5432) as fwd:` then connect to 127.0.0.1:fwd.port."""
    return LocalForward(api, namespace, pod, port, timeout=timeout)


def _splice(a, b, closed):
    """Copies bytes both ways until either side closes (or `closed` is set)."""
    peers = {a: b, b: a}
    while not closed.is_set():
        try:
            readable, _w, _x = select.select([a, b], [], [], 0.5)
        except (OSError, ValueError):  # a side was closed under us
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                peers[sock].sendall(data)
            except OSError:
                return


def _close_quietly(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
