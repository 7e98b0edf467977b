"""How users' requests reach the web (the Gateway API objects of langfuse_helm_exposure gateway, and when a route
serves) and how upgrade.yml reads their 5xx share per controller. tests/integration/test_gateway_exposure.py puts
the same objects on the local control plane, against the real Gateway API CRDs."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.langfuse_ops.platform.plugins.filter.traffic import (  # noqa: E402
    error_ratio_query, gateway_manifests, route_parent_problems)

GATEWAY = {"create": True, "class_name": "eg", "cluster_issuer": "letsencrypt", "tls_secret_name": "langfuse-tls",
           "name": "", "namespace": "", "section_name": "", "controller": "envoy_gateway", "body_size": "100m",
           "timeout_seconds": 300, "annotations": {}}


def by_kind(objects):
    return {o["kind"]: o for o in objects}


def test_the_roles_own_gateway_terminates_tls_for_the_host_with_a_cert_manager_certificate():
    objects = gateway_manifests(GATEWAY, "langfuse", "langfuse.example.com")
    assert [o["kind"] for o in objects] == ["Gateway", "HTTPRoute"]
    gateway = by_kind(objects)["Gateway"]
    assert gateway["metadata"] == {"name": "langfuse", "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"}}
    [listener] = gateway["spec"]["listeners"]
    assert gateway["spec"]["gatewayClassName"] == "eg"
    assert listener == {"name": "https", "hostname": "langfuse.example.com", "port": 443, "protocol": "HTTPS",
                        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "langfuse-tls"}]},
                        "allowedRoutes": {"namespaces": {"from": "Same"}}}


def test_the_route_sends_every_path_of_the_host_to_the_web_with_the_timeout():
    route = by_kind(gateway_manifests(GATEWAY, "lf-langfuse", "lf.example.com"))["HTTPRoute"]
    assert route["spec"]["parentRefs"] == [{"name": "lf-langfuse", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["lf.example.com"]
    assert route["spec"]["rules"] == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                       "backendRefs": [{"name": "lf-langfuse-web", "port": 3000}],
                                       "timeouts": {"request": "300s"}}]


def test_a_shared_gateway_is_attached_to_not_made():
    shared = {**GATEWAY, "create": False, "name": "public", "namespace": "gateways", "section_name": "https-langfuse"}
    objects = gateway_manifests(shared, "langfuse", "langfuse.example.com")
    assert [o["kind"] for o in objects] == ["HTTPRoute"]
    assert objects[0]["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways", "sectionName": "https-langfuse"}]


def test_nginx_gateway_fabric_gets_the_body_size_its_default_would_refuse():
    objects = by_kind(gateway_manifests({**GATEWAY, "controller": "nginx_gateway_fabric"}, "langfuse", "h.example.com"))
    policy = objects["ClientSettingsPolicy"]
    assert policy["apiVersion"] == "gateway.nginx.org/v1alpha1"
    assert policy["spec"] == {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "langfuse"},
                              "body": {"maxSize": "100m", "timeout": "300s"}}
    for controller in ("envoy_gateway", "traefik", "other"):
        assert "ClientSettingsPolicy" not in by_kind(gateway_manifests({**GATEWAY, "controller": controller}, "l", "h"))


def test_an_unknown_controller_is_refused():
    with pytest.raises(AnsibleFilterError, match="envoy_gateway, nginx_gateway_fabric, traefik, other"):
        gateway_manifests({**GATEWAY, "controller": "istio"}, "l", "h")


def route(parents, generation=2):
    return {"metadata": {"name": "langfuse", "generation": generation}, "spec": {"parentRefs": [{"name": "gw"}]},
            "status": {"parents": parents}}


def parent(name="gw", namespace=None, section=None, accepted=("True", "Accepted"), resolved=("True", "ResolvedRefs"),
           generation=2):
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace:
        ref["namespace"] = namespace
    if section:
        ref["sectionName"] = section
    conditions = [{"type": kind, "status": status, "reason": reason, "message": f"{kind} says {reason}",
                   "observedGeneration": generation}
                  for kind, (status, reason) in (("Accepted", accepted), ("ResolvedRefs", resolved)) if status]
    return {"parentRef": ref, "controllerName": "example.com/gw", "conditions": conditions}


def test_a_route_accepted_with_its_references_resolved_serves():
    assert route_parent_problems(route([parent()]), {"name": "gw"}, "lf") == []
    # The namespace of a parentRef defaults to the route's.
    assert route_parent_problems(route([parent(namespace="lf")]), {"name": "gw"}, "lf") == []


def test_each_condition_that_is_not_true_is_named_with_its_reason():
    problems = route_parent_problems(route([parent(resolved=("False", "BackendNotFound"))]), {"name": "gw"}, "lf")
    assert problems == ["ResolvedRefs=False (BackendNotFound: ResolvedRefs says BackendNotFound)"]
    problems = route_parent_problems(route([parent(accepted=("False", "NotAllowedByListeners"), resolved=(None, None))]),
                                     {"name": "gw"}, "lf")
    assert problems == ["Accepted=False (NotAllowedByListeners: Accepted says NotAllowedByListeners)",
                        "ResolvedRefs: not reported yet"]


def test_a_status_of_an_older_generation_or_another_parent_does_not_count():
    assert route_parent_problems(route([parent(generation=1)]), {"name": "gw"}, "lf") == [
        "Accepted: reported for generation 1, not 2", "ResolvedRefs: reported for generation 1, not 2"]
    other = route_parent_problems(route([parent(name="other"), parent(section="http")]), {"name": "gw", "sectionName": "https"}, "lf")
    assert len(other) == 1 and "no Gateway controller has reported on parent Gateway lf/gw listener https" in other[0]
    assert route_parent_problems({}, {"name": "gw"}, "lf") == ["the HTTPRoute does not exist"]


@pytest.mark.parametrize("controller, metric, errors", [
    ("ingress_nginx", 'nginx_ingress_controller_requests{namespace="lf"', 'status=~"5.."'),
    ("envoy_gateway", 'envoy_cluster_upstream_rq_xx{envoy_cluster_name=~"httproute/lf/langfuse/rule/.*|service/lf/langfuse-web/.*"',
     'envoy_response_code_class="5"'),
    ("traefik", 'traefik_service_requests_total{service=~".*lf-langfuse-web-3000.*@kubernetesgateway"', 'code=~"5.."'),
    ("nginx_gateway_fabric", 'nginxplus_upstream_server_responses{upstream="lf_langfuse-web_3000"', 'code="5xx"'),
])
def test_each_controller_has_its_own_5xx_query(controller, metric, errors):
    query = error_ratio_query(controller, "lf", 300, route="langfuse", service="langfuse-web")
    numerator, denominator = query.split(" / ")
    assert numerator == f"sum(rate({metric},{errors}}}[300s]))"
    assert denominator == f"clamp_min(sum(rate({metric}}}[300s])), 1e-9)"


def test_an_unknown_traffic_controller_is_refused_naming_the_variable():
    with pytest.raises(AnsibleFilterError, match="upgrade_traffic_controller must be one of"):
        error_ratio_query("haproxy", "lf", 60)
