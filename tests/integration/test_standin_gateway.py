"""The stand-in Gateway API controller reports what a conformant controller reports, on Gateway API's real CRDs.

What this stands in for: a Gateway API implementation (Envoy Gateway, NGINX Gateway Fabric, Traefik), of which
only the status side can be played here (KWOK runs no data plane):

* tests/localenv/cluster.sh applies the standard-channel CRDs (and the ValidatingAdmissionPolicy beside them) of
  the Go module sigs.k8s.io/gateway-api at LOCALENV_GATEWAY_API_VERSION, as build-binaries.sh caches them, and
  creates the GatewayClass `standin`;
* tests/standins/gateway_controller.py, started by cluster.sh, writes the status of that class, its Gateways and
  the HTTPRoutes attached to them (conditions and reasons of the v1.6 API).

Every test reads the status back from the API server, polling until it is as expected or DEADLINE passes.
"""
import contextlib
import json
import subprocess
import time
import uuid

import pytest

from conftest import LOCALENV, kubectl

GROUP = "gateway.networking.k8s.io"
CLASS = "standin"
CONTROLLER = "langfuse-ops.io/standin-gateway"
HOST = "langfuse.example.test"
# The stand-in polls about once a second; this leaves room for a loaded machine.
DEADLINE = 30
# A Secret of type kubernetes.io/tls; the stand-in, which serves no TLS, does not parse the PEM.
PEM = {"tls.crt": "-----BEGIN CERTIFICATE-----\nc3RhbmQtaW4=\n-----END CERTIFICATE-----\n",
       "tls.key": "-----BEGIN PRIVATE KEY-----\nc3RhbmQtaW4=\n-----END PRIVATE KEY-----\n"}


def gateway_api_version():
    out = subprocess.run(["bash", "-c", f". {LOCALENV}/lib.sh && echo $LOCALENV_GATEWAY_API_VERSION"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def apply(namespace, *docs):
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}))


def get(namespace, kind, name):
    """The object as JSON ({} when it does not exist); namespace None for a cluster-scoped kind."""
    out = kubectl(*(["-n", namespace] if namespace else []), "get", kind, name, "-o", "json", "--ignore-not-found").stdout
    return json.loads(out) if out.strip() else {}


def tls_secret(name, secret_type="kubernetes.io/tls"):
    """A Secret with a certificate and key, by default of the type a listener's certificateRef requires."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": secret_type, "stringData": PEM}


def service(name, port):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": port}]}}


def https_listener(name="https", secret="tls", hostname=HOST, **extra):
    return {"name": name, "protocol": "HTTPS", "port": 443, "hostname": hostname,
            "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]}, **extra}


def gateway(name, *listeners, class_name=CLASS):
    return {"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": name},
            "spec": {"gatewayClassName": class_name, "listeners": list(listeners) or [https_listener()]}}


def route(name, *parents, backend="web", port=3000, hostnames=(HOST,), **rule):
    return {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": list(parents) or [{"name": "gw"}], "hostnames": list(hostnames),
                     "rules": [{"backendRefs": [{"name": backend, "port": port}], **rule}]}}


def condition(conditions, ctype):
    return next((c for c in conditions or [] if c["type"] == ctype), {})


def state(conditions, ctype):
    found = condition(conditions, ctype)
    return found.get("status"), found.get("reason")


def settle(what, read, done):
    """read() until done(value) holds; fails with the last value read after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}; last read:\n"
                                 f"{json.dumps(value, indent=1)[:4000]}")
        time.sleep(0.3)


def our_parents(obj):
    return [p for p in (obj.get("status") or {}).get("parents") or [] if p.get("controllerName") == CONTROLLER]


def route_parent(namespace, name, accepted, resolved, gateway_name="gw"):
    """The route once the stand-in's entry for its parent `gateway_name` has Accepted and ResolvedRefs as
    (status, reason) for the route's current generation; returns (route, entry)."""
    def done(obj):
        entry = next((p for p in our_parents(obj) if p["parentRef"]["name"] == gateway_name), None)
        return (entry is not None and state(entry["conditions"], "Accepted") == accepted
                and state(entry["conditions"], "ResolvedRefs") == resolved
                and all(c.get("observedGeneration") == obj["metadata"]["generation"] for c in entry["conditions"]))
    obj = settle(f"HTTPRoute {namespace}/{name} parent {gateway_name}: Accepted {accepted}, ResolvedRefs {resolved}",
                 lambda: get(namespace, "httproute", name), done)
    return obj, next(p for p in our_parents(obj) if p["parentRef"]["name"] == gateway_name)


def listener(namespace, gateway_name, name, done):
    """The Gateway's status entry for listener `name` once done(entry) holds."""
    def read():
        obj = get(namespace, "gateway", gateway_name)
        return next((entry for entry in (obj.get("status") or {}).get("listeners") or [] if entry["name"] == name), {})
    return settle(f"Gateway {namespace}/{gateway_name} listener {name}", read, lambda entry: bool(entry) and done(entry))


def listener_states(entry):
    return {ctype: state(entry["conditions"], ctype) for ctype in ("Accepted", "Programmed", "ResolvedRefs")}


@contextlib.contextmanager
def other_namespace(labels=None):
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    try:
        if labels:
            kubectl("label", "namespace", name, *[f"{k}={v}" for k, v in labels.items()])
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_crds_are_upstreams_standard_channel(namespace):
    crd = json.loads(kubectl("get", "crd", f"httproutes.{GROUP}", "-o", "json").stdout)
    annotations = crd["metadata"]["annotations"]
    assert annotations[f"{GROUP}/bundle-version"] == gateway_api_version()
    assert annotations[f"{GROUP}/channel"] == "standard"
    assert [v["name"] for v in crd["spec"]["versions"] if v["storage"]] == ["v1"]

    def dry_run(doc):
        return kubectl("-n", namespace, "apply", "--dry-run=server", "--validate=strict", "-f", "-",
                       input=json.dumps(doc), check=False)

    unknown = dry_run(route("strict", bogusField="x"))
    assert unknown.returncode != 0, unknown.stdout
    assert 'unknown field "spec.rules[0].bogusField"' in unknown.stderr, unknown.stderr
    timeouts = dry_run(route("timeouts", timeouts={"request": "300s"}))
    assert timeouts.returncode == 0, timeouts.stderr
    # The CRD's CEL rules run too.
    longer = dry_run(route("longer", timeouts={"request": "10s", "backendRequest": "300s"}))
    assert longer.returncode != 0, longer.stdout
    assert "backendRequest timeout cannot be longer than request timeout" in longer.stderr, longer.stderr


def test_upstreams_admission_policy_refuses_older_crds(cluster):
    """The ValidatingAdmissionPolicy shipped beside the CRDs is in force (where the API server serves it)."""
    if cluster("get", "validatingadmissionpolicy", f"safe-upgrades.{GROUP}", check=False).returncode != 0:
        if "validatingadmissionpolicies" in cluster("api-resources", "--api-group=admissionregistration.k8s.io",
                                                    "-o", "name").stdout:
            pytest.fail(f"ValidatingAdmissionPolicy safe-upgrades.{GROUP} is missing though the API server serves the kind")
        pytest.skip("this API server serves no ValidatingAdmissionPolicy; cluster.sh leaves it out")
    older = cluster("annotate", "crd", f"gatewayclasses.{GROUP}", f"{GROUP}/bundle-version=v1.4.0", "--overwrite",
                    "--dry-run=server", check=False)
    assert older.returncode != 0, older.stdout
    assert "Installing CRDs with version before v1.5.0 is prohibited" in older.stderr, older.stderr


def test_a_route_to_a_service_on_an_https_listener_is_accepted(namespace):
    gateway_class = settle(f"GatewayClass {CLASS} Accepted", lambda: get(None, "gatewayclass", CLASS),
                           lambda obj: state((obj.get("status") or {}).get("conditions"), "Accepted") == ("True", "Accepted"))
    assert gateway_class["spec"]["controllerName"] == CONTROLLER
    assert condition(gateway_class["status"]["conditions"], "Accepted")["observedGeneration"] == \
        gateway_class["metadata"]["generation"]
    apply(namespace, tls_secret("tls"), service("web", 3000), gateway("gw"), route("app"))

    obj, entry = route_parent(namespace, "app", ("True", "Accepted"), ("True", "ResolvedRefs"))
    assert entry["parentRef"] == obj["spec"]["parentRefs"][0]
    assert entry["controllerName"] == CONTROLLER
    https = listener(namespace, "gw", "https", lambda e: e["attachedRoutes"] == 1)
    assert listener_states(https) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed"),
                                      "ResolvedRefs": ("True", "ResolvedRefs")}
    assert https["supportedKinds"] == [{"group": GROUP, "kind": "HTTPRoute"}]
    gw = get(namespace, "gateway", "gw")
    assert state(gw["status"]["conditions"], "Accepted") == ("True", "Accepted")
    assert state(gw["status"]["conditions"], "Programmed") == ("True", "Programmed")
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]

    # A new generation of the route: observedGeneration follows, lastTransitionTime stays while the status does.
    before = {c["type"]: c["lastTransitionTime"] for c in entry["conditions"]}
    apply(namespace, route("app", matches=[{"path": {"type": "PathPrefix", "value": "/api"}}]))
    obj, entry = route_parent(namespace, "app", ("True", "Accepted"), ("True", "ResolvedRefs"))
    assert obj["metadata"]["generation"] == 2
    assert {c["type"]: c["lastTransitionTime"] for c in entry["conditions"]} == before


def test_a_missing_backend_or_port_is_not_resolved_until_it_exists(namespace):
    apply(namespace, tls_secret("tls"), gateway("gw"), route("app"))
    _obj, entry = route_parent(namespace, "app", ("True", "Accepted"), ("False", "BackendNotFound"))
    assert f"Service {namespace}/web does not exist" in condition(entry["conditions"], "ResolvedRefs")["message"]
    accepted_since = condition(entry["conditions"], "Accepted")["lastTransitionTime"]
    # Attached all the same: the count is of routes Accepted on the listener.
    listener(namespace, "gw", "https", lambda e: e["attachedRoutes"] == 1)

    apply(namespace, service("web", 80))
    settle("ResolvedRefs to name the missing port", lambda: get(namespace, "httproute", "app"),
           lambda obj: "has no port 3000" in condition((our_parents(obj) or [{}])[0].get("conditions"),
                                                       "ResolvedRefs").get("message", ""))
    _obj, entry = route_parent(namespace, "app", ("True", "Accepted"), ("False", "BackendNotFound"))

    apply(namespace, service("web", 3000))
    _obj, entry = route_parent(namespace, "app", ("True", "Accepted"), ("True", "ResolvedRefs"))
    assert condition(entry["conditions"], "Accepted")["lastTransitionTime"] == accepted_since


def test_parents_that_do_not_take_the_route(namespace):
    apply(namespace, tls_secret("tls"), service("web", 3000), gateway("gw"),
          route("no-gateway", {"name": "absent"}),
          route("no-section", {"name": "gw", "sectionName": "nope"}),
          route("no-port", {"name": "gw", "port": 8443}),
          route("other-host", hostnames=["elsewhere.example.org"]),
          route("wildcard", hostnames=["*.example.test"]))
    with other_namespace() as neighbour:
        apply(neighbour, service("web", 3000), route("neighbour", {"name": "gw", "namespace": namespace}))
        route_parent(namespace, "no-section", ("False", "NoMatchingParent"), ("True", "ResolvedRefs"))
        route_parent(namespace, "no-port", ("False", "NoMatchingParent"), ("True", "ResolvedRefs"))
        route_parent(namespace, "other-host", ("False", "NoMatchingListenerHostname"), ("True", "ResolvedRefs"))
        route_parent(namespace, "wildcard", ("True", "Accepted"), ("True", "ResolvedRefs"))
        route_parent(neighbour, "neighbour", ("False", "NotAllowedByListeners"), ("True", "ResolvedRefs"))
        # A Gateway that does not exist has no class: like Envoy Gateway and NGINX Gateway Fabric, the stand-in leaves
        # that parent without status (the routes above, applied with it, were all judged since).
        assert our_parents(get(namespace, "httproute", "no-gateway")) == []
        # Of these routes only the one Accepted counts.
        listener(namespace, "gw", "https", lambda e: e["attachedRoutes"] == 1)

        # allowedRoutes from a Selector: the neighbour's label admits it, and no longer the gateway's own namespace.
        kubectl("label", "namespace", neighbour, f"gateway-access={namespace}")
        apply(namespace, gateway("gw", https_listener(allowedRoutes={"namespaces": {
            "from": "Selector", "selector": {"matchLabels": {"gateway-access": namespace}}}})))
        route_parent(neighbour, "neighbour", ("True", "Accepted"), ("True", "ResolvedRefs"))
        route_parent(namespace, "wildcard", ("False", "NotAllowedByListeners"), ("True", "ResolvedRefs"))
        listener(namespace, "gw", "https", lambda e: e["attachedRoutes"] == 1)


def test_parents_of_other_controllers_are_left_alone(namespace):
    other_class = f"other-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": f"{GROUP}/v1", "kind": "GatewayClass", "metadata": {"name": other_class},
        "spec": {"controllerName": "example.com/other-gateway"}}))
    try:
        apply(namespace, tls_secret("tls"), gateway("gw"), gateway("theirs", class_name=other_class),
              route("app", {"name": "gw"}, {"name": "theirs"}),
              route("only-theirs", {"name": "theirs"}))
        obj, _entry = route_parent(namespace, "app", ("True", "Accepted"), ("False", "BackendNotFound"))
        assert [p["parentRef"]["name"] for p in our_parents(obj)] == ["gw"]
        theirs = {"parentRef": {"group": GROUP, "kind": "Gateway", "name": "theirs"},
                  "controllerName": "example.com/other-gateway",
                  "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                                  "observedGeneration": obj["metadata"]["generation"],
                                  "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        kubectl("-n", namespace, "patch", "httproute", "app", "--subresource=status", "--type=json",
                "-p", json.dumps([{"op": "add", "path": "/status/parents/-", "value": theirs}]))
        # The stand-in's next writes (the backend appears, then goes) keep the other controller's entry as it was.
        apply(namespace, service("web", 3000))
        obj, _entry = route_parent(namespace, "app", ("True", "Accepted"), ("True", "ResolvedRefs"))
        assert [p for p in obj["status"]["parents"] if p["controllerName"] != CONTROLLER] == [theirs]
        kubectl("-n", namespace, "delete", "service", "web")
        obj, _entry = route_parent(namespace, "app", ("True", "Accepted"), ("False", "BackendNotFound"))
        assert [p for p in obj["status"]["parents"] if p["controllerName"] != CONTROLLER] == [theirs]
        # A whole poll has run since these objects existed (the one before this write): it left them alone.
        assert not (get(namespace, "httproute", "only-theirs").get("status") or {}).get("parents")
        assert state(get(namespace, "gateway", "theirs")["status"]["conditions"], "Accepted") == ("Unknown", "Pending")
        assert state(get(None, "gatewayclass", other_class)["status"]["conditions"], "Accepted") == ("Unknown", "Pending")
    finally:
        kubectl("delete", "gatewayclass", other_class, "--wait=false", check=False)


def test_a_listener_whose_certificate_does_not_resolve(namespace):
    with other_namespace() as elsewhere:
        apply(elsewhere, tls_secret("shared"))
        apply(namespace, tls_secret("opaque", "Opaque"), gateway(
            "gw", https_listener("https", "tls"),
            https_listener("opaque", "opaque", hostname="opaque.example.test"),
            https_listener("cross", hostname="cross.example.test",
                           tls={"mode": "Terminate", "certificateRefs": [{"name": "shared", "namespace": elsewhere}]}),
            {"name": "http", "protocol": "HTTP", "port": 80}))
        missing = listener(namespace, "gw", "https", lambda e: True)
        assert listener_states(missing) == {"Accepted": ("True", "Accepted"), "Programmed": ("False", "Invalid"),
                                            "ResolvedRefs": ("False", "InvalidCertificateRef")}
        assert f"Secret {namespace}/tls does not exist" in condition(missing["conditions"], "ResolvedRefs")["message"]
        opaque = listener(namespace, "gw", "opaque", lambda e: True)
        assert listener_states(opaque)["ResolvedRefs"] == ("False", "InvalidCertificateRef")
        cross = listener(namespace, "gw", "cross", lambda e: True)
        assert listener_states(cross)["ResolvedRefs"] == ("False", "RefNotPermitted")
        http = listener(namespace, "gw", "http", lambda e: True)
        assert listener_states(http) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed"),
                                         "ResolvedRefs": ("True", "ResolvedRefs")}
        # Listeners with unresolved references are still accepted, and so is the Gateway.
        assert state(get(namespace, "gateway", "gw")["status"]["conditions"], "Accepted") == ("True", "Accepted")

        apply(namespace, tls_secret("tls"))
        listener(namespace, "gw", "https", lambda e: listener_states(e)["ResolvedRefs"] == ("True", "ResolvedRefs")
                 and listener_states(e)["Programmed"] == ("True", "Programmed"))
        apply(elsewhere, {"apiVersion": f"{GROUP}/v1beta1", "kind": "ReferenceGrant", "metadata": {"name": "gateways"},
                          "spec": {"from": [{"group": GROUP, "kind": "Gateway", "namespace": namespace}],
                                   "to": [{"group": "", "kind": "Secret", "name": "shared"}]}})
        listener(namespace, "gw", "cross", lambda e: listener_states(e)["ResolvedRefs"] == ("True", "ResolvedRefs"))
