"""Stand-in for a Gateway API controller (gateway.networking.k8s.io/v1, Gateway API v1.6) on the KWOK test cluster.

The cluster serves Gateway API's real standard-channel CRDs (tests/localenv/cluster.sh applies them) but runs no
Gateway API implementation. This process plays the status side of one, for the GatewayClasses whose controllerName
is ``langfuse-ops.io/standin-gateway`` (cluster.sh creates the class ``standin``) and nothing else, in every
namespace, polling the API server about once a second. What it reports follows the v1.6 API's documented condition
types and reasons (sigs.k8s.io/gateway-api apis/v1: gatewayclass_types.go, gateway_types.go, shared_types.go,
httproute_types.go):

* GatewayClass: condition ``Accepted`` True, reason ``Accepted``.
* Gateway of such a class: ``Accepted`` True / ``Accepted`` when every listener is accepted, True /
  ``ListenersNotValid`` when only some are, False / ``ListenersNotValid`` when none is; ``Programmed`` True /
  ``Programmed`` while Accepted is True (else False / ``Invalid``); ``status.addresses`` one IPAddress, 127.0.0.1.
  Per listener (``status.listeners[]``, in spec order): ``supportedKinds`` (HTTPRoute for HTTP and HTTPS; the
  listener's allowedRoutes.kinds narrow it), ``attachedRoutes`` (the HTTPRoutes Accepted on that listener, as
  v1.6 defines the count) and the conditions
  - ``Accepted``: True / ``Accepted``; False / ``UnsupportedProtocol`` for protocols other than HTTP and HTTPS;
  - ``ResolvedRefs``: False / ``InvalidRouteKinds`` for an allowedRoutes kind the protocol cannot carry; for HTTPS
    with tls.mode Terminate, per certificateRef: False / ``RefNotPermitted`` for a Secret in another namespace
    that no ReferenceGrant (gateway.networking.k8s.io/v1beta1, in the Secret's namespace, from this Gateway's
    namespace) allows, False / ``InvalidCertificateRef`` for a kind other than core Secret, a Secret that does
    not exist, one not of type kubernetes.io/tls or one with an empty tls.crt or tls.key; else True /
    ``ResolvedRefs``;
  - ``Programmed``: True / ``Programmed`` when Accepted and ResolvedRefs are True, else False / ``Invalid``.
* HTTPRoute: one ``status.parents[]`` entry per parentRef (group gateway.networking.k8s.io, kind Gateway) that
  names a Gateway of such a class or a Gateway that does not exist, with the parentRef as given,
  ``controllerName: langfuse-ops.io/standin-gateway`` and
  - ``Accepted``: False / ``NoMatchingParent`` when the Gateway does not exist or no listener matches the
    parentRef's sectionName and port; False / ``NotAllowedByListeners`` when no listener among those admits the
    route (allowedRoutes.namespaces.from Same (default) / All / Selector with matchLabels and matchExpressions,
    and HTTPRoute among the listener's kinds); False / ``NoMatchingListenerHostname`` when none of those that
    admit it has a hostname intersecting the route's hostnames (exact, or a ``*.`` wildcard matching one or more
    leading labels, either side, as the HTTPRoute spec's hostnames field describes); else True / ``Accepted``.
  - ``ResolvedRefs`` (the same for every parent): False / ``InvalidKind`` for a backendRef (or a RequestMirror
    filter's backendRef) that is not a core Service, False / ``RefNotPermitted`` for a Service in another
    namespace without a ReferenceGrant from HTTPRoutes of the route's namespace, False / ``BackendNotFound`` for
    a Service that does not exist or has no such port; else True / ``ResolvedRefs``. The first problem gives the
    reason; the message lists them all.
  Entries of other controllers are left as they are, in place; routes whose parents are all Gateways of other
  classes (or other kinds, ListenerSets included) are not touched.
  A parentRef to a Gateway that does not exist has no class, so no controller owns it: the spec lets an
  implementation report it (Accepted False / NoMatchingParent, as Istio does) or leave it without status (as the
  implementations that only reconcile their own Gateways do: Envoy Gateway, NGINX Gateway Fabric). This one leaves
  it without status, as those do (REPORT_MISSING_GATEWAYS), so the role's wait meets what they show.

Every condition carries the object's metadata.generation as observedGeneration; its lastTransitionTime changes only
when its status does; conditions of types it does not own are kept where they are. Status is written through the
status subresource (read-modify-write with the resourceVersion read), and only when it differs from what is there.

Not reproduced: any data plane: no traffic is proxied, no port is opened, no TLS is served or its PEM parsed; the
real controllers (Envoy Gateway, NGINX Gateway Fabric, Traefik, ...) and their infrastructure (Deployments,
Services, the addresses they get) are not run here, and requested spec.addresses are not honoured. Nor: listener
conflicts (Conflicted, OverlappingTLSConfig), the Gateway-level ResolvedRefs and GatewayClass SupportedVersion
conditions, parametersRef / infrastructure, frontend TLS validation, ListenerSets, GRPCRoute / TLSRoute / TCPRoute /
UDPRoute, BackendTLSPolicy, policies, filters' semantics (IncompatibleFilters, UnsupportedValue), PartiallyInvalid,
the GatewayClass finalizer, and route acceptance does not depend on the listener's ResolvedRefs or Programmed.

It waits quietly while the API server or the CRDs are missing, reloads the kubeconfig when the file changes, and
exits on SIGTERM / SIGINT.

Usage: gateway_controller.py (KUBECONFIG names the cluster)
"""
import copy
import datetime
import os
import signal
import sys
import threading

from kubernetes.client.rest import ApiException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from standin_kube import forget_said, log, reconcile_forever, say_once  # noqa: E402

GROUP, VERSION = "gateway.networking.k8s.io", "v1"
GRANT_VERSION = "v1beta1"
CONTROLLER = "langfuse-ops.io/standin-gateway"
ADDRESS = "127.0.0.1"
# Whether a parentRef to a Gateway that does not exist gets an entry (Accepted False / NoMatchingParent) from this
# controller; False leaves it without status, as controllers that only reconcile their own Gateways do.
REPORT_MISSING_GATEWAYS = False
# Route kinds each supported listener protocol carries.
PROTOCOL_KINDS = {"HTTP": ("HTTPRoute",), "HTTPS": ("HTTPRoute",)}
POLL_SECONDS = 1.0
TIMEOUT = (3, 15)
STOP = threading.Event()
API = None


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(old, wanted, generation):
    """`old` conditions updated with `wanted` [(type, status, reason, message)]: lastTransitionTime kept while the
    status stays, conditions of other types kept in place, new types appended."""
    old = old or []
    previous = {c.get("type"): c for c in old}
    new = {}
    for ctype, status, reason, message in wanted:
        prev = previous.get(ctype)
        kept = prev is not None and prev.get("status") == status and prev.get("lastTransitionTime")
        new[ctype] = {"type": ctype, "status": status, "reason": reason, "message": message,
                      "observedGeneration": generation,
                      "lastTransitionTime": prev["lastTransitionTime"] if kept else now()}
    merged = [new.pop(c.get("type")) if c.get("type") in new else c for c in old]
    return merged + list(new.values())


def describe(conditions):
    return ", ".join(f"{c['type']} {c['status']} ({c['reason']})" for c in conditions)


def selector_matches(selector, labels):
    """A metav1.LabelSelector against a namespace's labels (an empty selector matches every namespace)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def hostname_intersects(listener_host, route_host):
    """Whether two hostnames (either a `*.` wildcard, matching one or more leading labels) share a name."""
    a, b = listener_host.lower(), route_host.lower()
    if a == b:
        return True
    a_wild, b_wild = a.startswith("*."), b.startswith("*.")
    if a_wild and b_wild:
        return a[1:].endswith(b[1:]) or b[1:].endswith(a[1:])
    if a_wild:
        return b.endswith(a[1:])
    if b_wild:
        return a.endswith(b[1:])
    return False


def hostnames_match(listener, route):
    listener_host = listener.get("hostname")
    route_hosts = route["spec"].get("hostnames") or []
    if not listener_host or not route_hosts:
        return True
    return any(hostname_intersects(listener_host, host) for host in route_hosts)


def listener_kinds(listener):
    """(supportedKinds, the allowedRoutes kinds the listener's protocol cannot carry)."""
    carried = PROTOCOL_KINDS.get(listener.get("protocol"), ())
    wanted = (listener.get("allowedRoutes") or {}).get("kinds")
    if not wanted:
        return [{"group": GROUP, "kind": kind} for kind in carried], []
    kinds, invalid = [], []
    for entry in wanted:
        group = entry.get("group", GROUP)
        if group == GROUP and entry.get("kind") in carried:
            kinds.append({"group": GROUP, "kind": entry["kind"]})
        else:
            invalid.append(f"{group or 'core'}/{entry.get('kind')}")
    return kinds, invalid


class World:
    """What one poll reads besides the Gateway API objects, each read at most once a poll."""

    def __init__(self, api):
        self.api = api
        self._namespaces = None
        self._services = {}
        self._secrets = {}
        self._grants = None

    def namespace_labels(self, name):
        if self._namespaces is None:
            self._namespaces = {ns.metadata.name: ns.metadata.labels or {}
                                for ns in self.api.core.list_namespace(_request_timeout=TIMEOUT).items}
        return self._namespaces.get(name)

    def service(self, namespace, name):
        if namespace not in self._services:
            self._services[namespace] = {
                svc.metadata.name: svc
                for svc in self.api.core.list_namespaced_service(namespace, _request_timeout=TIMEOUT).items}
        return self._services[namespace].get(name)

    def secret(self, namespace, name):
        if (namespace, name) not in self._secrets:
            try:
                found = self.api.core.read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
            except ApiException as e:
                if e.status != 404:
                    raise
                found = None
            self._secrets[(namespace, name)] = found
        return self._secrets[(namespace, name)]

    def granted(self, source, target_group, target_kind, target_namespace, target_name):
        """Whether a ReferenceGrant in target_namespace lets `source` (group, kind, namespace) refer to the target."""
        if self._grants is None:
            try:
                self._grants = self.api.custom.list_cluster_custom_object(
                    GROUP, GRANT_VERSION, "referencegrants", _request_timeout=TIMEOUT)["items"]
            except ApiException as e:
                if e.status != 404:
                    raise
                self._grants = []
        group, kind, namespace = source
        for grant in self._grants:
            if grant["metadata"]["namespace"] != target_namespace:
                continue
            spec = grant.get("spec") or {}
            if not any(f.get("group", "") == group and f.get("kind") == kind and f.get("namespace") == namespace
                       for f in spec.get("from") or []):
                continue
            if any(t.get("group", "") == target_group and t.get("kind") == target_kind
                   and t.get("name") in (None, "", target_name) for t in spec.get("to") or []):
                return True
        return False


def certificate_problem(world, gateway_ns, ref):
    """(reason, message) of a listener's certificateRef that does not resolve, or None."""
    group, kind = ref.get("group", ""), ref.get("kind", "Secret")
    namespace, name = ref.get("namespace") or gateway_ns, ref.get("name")
    if group != "" or kind != "Secret":
        return "InvalidCertificateRef", f"certificateRef {group or 'core'}/{kind} {name}: only core Secrets are supported"
    if namespace != gateway_ns and not world.granted((GROUP, "Gateway", gateway_ns), "", "Secret", namespace, name):
        return "RefNotPermitted", f"Secret {namespace}/{name} is in another namespace and no ReferenceGrant allows it"
    secret = world.secret(namespace, name)
    if secret is None:
        return "InvalidCertificateRef", f"Secret {namespace}/{name} does not exist"
    if secret.type != "kubernetes.io/tls":
        return "InvalidCertificateRef", f"Secret {namespace}/{name} is of type {secret.type}, not kubernetes.io/tls"
    data = secret.data or {}
    if not data.get("tls.crt") or not data.get("tls.key"):
        return "InvalidCertificateRef", f"Secret {namespace}/{name} has an empty tls.crt or tls.key"
    return None


def listener_conditions(world, gateway, listener):
    """The listener's wanted conditions [(type, status, reason, message)] and its supportedKinds."""
    protocol = listener.get("protocol")
    kinds, invalid_kinds = listener_kinds(listener)
    problems = []
    if invalid_kinds:
        problems.append(("InvalidRouteKinds", f"route kinds not supported on {protocol}: {', '.join(invalid_kinds)}"))
    tls = listener.get("tls") or {}
    if protocol == "HTTPS" and tls.get("mode", "Terminate") == "Terminate":
        refs = tls.get("certificateRefs") or []
        if not refs:
            problems.append(("InvalidCertificateRef", "tls.mode Terminate without certificateRefs"))
        for ref in refs:
            problem = certificate_problem(world, gateway["metadata"]["namespace"], ref)
            if problem:
                problems.append(problem)
    if protocol in PROTOCOL_KINDS:
        accepted = ("Accepted", "True", "Accepted", "Listener accepted")
    else:
        accepted = ("Accepted", "False", "UnsupportedProtocol",
                    f"protocol {protocol} is not supported (this controller serves HTTP and HTTPS)")
    if problems:
        resolved = ("ResolvedRefs", "False", problems[0][0], "; ".join(message for _reason, message in problems))
    else:
        resolved = ("ResolvedRefs", "True", "ResolvedRefs", "All references resolved")
    if accepted[1] == "True" and not problems:
        programmed = ("Programmed", "True", "Programmed", "Listener programmed (stand-in: no data plane)")
    else:
        programmed = ("Programmed", "False", "Invalid", "Listener is not valid: " + (accepted[3] if accepted[1] != "True"
                                                                                     else resolved[3]))
    return [accepted, programmed, resolved], kinds


def same_parent(a, b, route_ns):
    def norm(ref):
        return (ref.get("group", GROUP), ref.get("kind", "Gateway"), ref.get("namespace") or route_ns,
                ref.get("name"), ref.get("sectionName"), ref.get("port"))
    return norm(a or {}) == norm(b or {})


class Controller:
    def __init__(self):
        self.world = None
        self.classes = set()
        self.gateways = {}

    def poll(self):
        try:
            classes = API.custom.list_cluster_custom_object(GROUP, VERSION, "gatewayclasses",
                                                            _request_timeout=TIMEOUT)["items"]
            gateways = API.custom.list_cluster_custom_object(GROUP, VERSION, "gateways", _request_timeout=TIMEOUT)["items"]
            routes = API.custom.list_cluster_custom_object(GROUP, VERSION, "httproutes", _request_timeout=TIMEOUT)["items"]
        except ApiException as e:
            if e.status == 404:
                say_once("crds", "Gateway API CRDs (gateway.networking.k8s.io/v1) not installed yet; waiting")
                return
            raise
        say_once("crds", "Gateway API CRDs found: reconciling")
        self.world = World(API)
        self.classes = {c["metadata"]["name"] for c in classes if c["spec"].get("controllerName") == CONTROLLER}
        self.gateways = {(g["metadata"]["namespace"], g["metadata"]["name"]): g for g in gateways}
        for gateway_class in classes:
            if gateway_class["metadata"]["name"] in self.classes:
                self.guard(f"gatewayclass {gateway_class['metadata']['name']}", self.reconcile_class, gateway_class)
        attached = {}
        route_status = []
        for route in routes:
            if not route["metadata"].get("deletionTimestamp"):
                key = f"httproute {route['metadata']['namespace']}/{route['metadata']['name']}"
                route_status.append((key, route, self.guard(key, self.route_parents, route, attached)))
        for (namespace, name), gateway in self.gateways.items():
            if gateway["spec"].get("gatewayClassName") in self.classes and not gateway["metadata"].get("deletionTimestamp"):
                self.guard(f"gateway {namespace}/{name}", self.reconcile_gateway, gateway, attached)
        for key, route, parents in route_status:
            if parents is not None:
                self.guard(key, self.write_route, key, route, parents)

    def guard(self, key, func, *args):
        """func(*args); an API error is said once under key, and the next poll tries again."""
        try:
            result = func(*args)
            forget_said(key + " error")
            return result
        except ApiException as e:
            if e.status not in (404, 409):  # deleted or changed meanwhile: the next poll sees the new state
                say_once(key + " error", f"{key}: API error {e.status}: {e.reason}; retrying")
        return None

    def write_status(self, plural, obj, status, key, summary):
        if status == (obj.get("status") or {}):
            return
        body = copy.deepcopy(obj)
        body["status"] = status
        meta = obj["metadata"]
        if plural == "gatewayclasses":
            API.custom.replace_cluster_custom_object_status(GROUP, VERSION, plural, meta["name"], body,
                                                            _request_timeout=TIMEOUT)
        else:
            API.custom.replace_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], plural, meta["name"],
                                                               body, _request_timeout=TIMEOUT)
        log(f"{key} (generation {meta.get('generation')}): {summary}")

    def reconcile_class(self, gateway_class):
        old = gateway_class.get("status") or {}
        conditions = merge_conditions(old.get("conditions"), [
            ("Accepted", "True", "Accepted", f"Accepted by {CONTROLLER} (stand-in: status only, no data plane)")],
            gateway_class["metadata"].get("generation"))
        self.write_status("gatewayclasses", gateway_class, {**old, "conditions": conditions},
                          f"gatewayclass {gateway_class['metadata']['name']}", describe(conditions))

    def reconcile_gateway(self, gateway, attached):
        meta = gateway["metadata"]
        generation = meta.get("generation")
        old = gateway.get("status") or {}
        old_listeners = {entry.get("name"): entry for entry in old.get("listeners") or []}
        listeners, accepted = [], []
        for listener in gateway["spec"].get("listeners") or []:
            wanted, kinds = listener_conditions(self.world, gateway, listener)
            accepted.append(wanted[0][1] == "True")
            previous = old_listeners.get(listener["name"]) or {}
            listeners.append({
                "name": listener["name"], "supportedKinds": kinds,
                "attachedRoutes": len(attached.get((meta["namespace"], meta["name"], listener["name"]), ())),
                "conditions": merge_conditions(previous.get("conditions"), wanted, generation)})
        if accepted and all(accepted):
            gateway_accepted = ("Accepted", "True", "Accepted", "Gateway accepted")
        elif any(accepted):
            gateway_accepted = ("Accepted", "True", "ListenersNotValid", "Some listeners are not valid")
        else:
            gateway_accepted = ("Accepted", "False", "ListenersNotValid", "No listener is valid")
        if gateway_accepted[1] == "True":
            programmed = ("Programmed", "True", "Programmed",
                          f"Address {ADDRESS} assigned (stand-in: no data plane, nothing is proxied)")
        else:
            programmed = ("Programmed", "False", "Invalid", gateway_accepted[3])
        conditions = merge_conditions(old.get("conditions"), [gateway_accepted, programmed], generation)
        status = {**old, "addresses": [{"type": "IPAddress", "value": ADDRESS}], "conditions": conditions,
                  "listeners": listeners}
        summary = describe(conditions) + "; " + "; ".join(
            f"listener {entry['name']}: attachedRoutes {entry['attachedRoutes']}, {describe(entry['conditions'])}"
            for entry in listeners)
        self.write_status("gateways", gateway, status, f"gateway {meta['namespace']}/{meta['name']}", summary)

    def parent_accepted(self, route, ref):
        """(Accepted condition, names of the listeners the route attaches to) for a parentRef this controller
        answers for, or None for one it leaves to others."""
        if ref.get("group", GROUP) != GROUP or ref.get("kind", "Gateway") != "Gateway":
            return None
        route_ns = route["metadata"]["namespace"]
        namespace, name = ref.get("namespace") or route_ns, ref.get("name")
        gateway = self.gateways.get((namespace, name))
        if gateway is None:
            if not REPORT_MISSING_GATEWAYS:
                return None
            return ("Accepted", "False", "NoMatchingParent", f"Gateway {namespace}/{name} does not exist"), []
        if gateway["spec"].get("gatewayClassName") not in self.classes:
            return None
        section, port = ref.get("sectionName"), ref.get("port")
        listeners = [listener for listener in gateway["spec"].get("listeners") or []
                     if (section is None or listener.get("name") == section) and (port is None or listener.get("port") == port)]
        wanted = " and ".join(filter(None, [section and f"sectionName {section}", port and f"port {port}"]))
        if not listeners:
            return ("Accepted", "False", "NoMatchingParent", f"Gateway {namespace}/{name} has no listener with {wanted}"), []
        admitting = [listener for listener in listeners if self.admits(gateway, listener, route_ns)]
        if not admitting:
            return ("Accepted", "False", "NotAllowedByListeners",
                    f"no listener of Gateway {namespace}/{name}{' with ' + wanted if wanted else ''} admits HTTPRoutes "
                    f"from namespace {route_ns} (allowedRoutes)"), []
        matching = [listener["name"] for listener in admitting if hostnames_match(listener, route)]
        if not matching:
            return ("Accepted", "False", "NoMatchingListenerHostname",
                    f"no listener of Gateway {namespace}/{name} admitting the route has a hostname matching "
                    f"{', '.join(route['spec'].get('hostnames') or [])}"), []
        return ("Accepted", "True", "Accepted", f"Accepted on listener(s) {', '.join(matching)}"), matching

    def admits(self, gateway, listener, route_ns):
        kinds, _invalid = listener_kinds(listener)
        if {"group": GROUP, "kind": "HTTPRoute"} not in kinds:
            return False
        namespaces = (listener.get("allowedRoutes") or {}).get("namespaces") or {}
        source = namespaces.get("from", "Same")
        if source == "All":
            return True
        if source == "Same":
            return route_ns == gateway["metadata"]["namespace"]
        if source == "Selector":
            labels = self.world.namespace_labels(route_ns)
            return labels is not None and selector_matches(namespaces.get("selector") or {}, labels)
        return False

    def route_resolved(self, route):
        route_ns = route["metadata"]["namespace"]
        refs = []
        for rule in route["spec"].get("rules") or []:
            for backend in rule.get("backendRefs") or []:
                refs.append(backend)
                refs += [f["requestMirror"]["backendRef"] for f in backend.get("filters") or []
                         if f.get("type") == "RequestMirror" and (f.get("requestMirror") or {}).get("backendRef")]
            refs += [f["requestMirror"]["backendRef"] for f in rule.get("filters") or []
                     if f.get("type") == "RequestMirror" and (f.get("requestMirror") or {}).get("backendRef")]
        problems = []
        for ref in refs:
            group, kind = ref.get("group", ""), ref.get("kind", "Service")
            namespace, name, port = ref.get("namespace") or route_ns, ref.get("name"), ref.get("port")
            if group != "" or kind != "Service":
                problems.append(("InvalidKind", f"backendRef {group or 'core'}/{kind} {name}: only core Services are supported"))
            elif namespace != route_ns and not self.world.granted((GROUP, "HTTPRoute", route_ns), "", "Service",
                                                                  namespace, name):
                problems.append(("RefNotPermitted",
                                 f"Service {namespace}/{name} is in another namespace and no ReferenceGrant allows it"))
            else:
                service = self.world.service(namespace, name)
                if service is None:
                    problems.append(("BackendNotFound", f"Service {namespace}/{name} does not exist"))
                elif port not in [p.port for p in service.spec.ports or []]:
                    problems.append(("BackendNotFound", f"Service {namespace}/{name} has no port {port}"))
        if problems:
            return "ResolvedRefs", "False", problems[0][0], "; ".join(message for _reason, message in problems)
        return "ResolvedRefs", "True", "ResolvedRefs", "All references resolved"

    def route_parents(self, route, attached):
        """The route's new status.parents (others' entries in place), counting its attachments into `attached`;
        None when it has none of this controller's, now or before."""
        meta = route["metadata"]
        route_ns, generation = meta["namespace"], meta.get("generation")
        old = (route.get("status") or {}).get("parents") or []
        ours = []
        resolved = None
        for ref in route["spec"].get("parentRefs") or []:
            result = self.parent_accepted(route, ref)
            if result is None:
                continue
            accepted, listeners = result
            for listener in listeners:
                gateway_ns = ref.get("namespace") or route_ns
                attached.setdefault((gateway_ns, ref["name"], listener), set()).add((route_ns, meta["name"]))
            resolved = resolved or self.route_resolved(route)
            previous = next((p for p in old if p.get("controllerName") == CONTROLLER
                             and same_parent(p.get("parentRef"), ref, route_ns)), {})
            ours.append({"parentRef": copy.deepcopy(ref), "controllerName": CONTROLLER,
                         "conditions": merge_conditions(previous.get("conditions"), [accepted, resolved], generation)})
        if not ours and not any(p.get("controllerName") == CONTROLLER for p in old):
            return None
        parents, placed = [], set()
        for entry in old:
            if entry.get("controllerName") != CONTROLLER:
                parents.append(entry)
                continue
            index = next((i for i, new in enumerate(ours)
                          if i not in placed and same_parent(new["parentRef"], entry.get("parentRef"), route_ns)), None)
            if index is not None:
                parents.append(ours[index])
                placed.add(index)
        parents += [new for i, new in enumerate(ours) if i not in placed]
        return parents

    def write_route(self, key, route, parents):
        old = route.get("status") or {}
        if parents == (old.get("parents") or []):
            return
        summary = "; ".join(f"parent {p['parentRef'].get('namespace') or route['metadata']['namespace']}/"
                            f"{p['parentRef'].get('name')}: {describe(p['conditions'])}"
                            for p in parents if p.get("controllerName") == CONTROLLER)
        self.write_status("httproutes", route, {**old, "parents": parents}, key, summary or "no parent of ours")


def stop(*_args):
    STOP.set()


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"stand-in Gateway API controller {CONTROLLER} started (pid {os.getpid()})")
    controller = Controller()
    reconcile_forever(globals(), controller.poll, STOP, POLL_SECONDS)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
