# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How users' requests reach the web, and how upgrade.yml reads their 5xx share.

- `gateway_manifests`: the Gateway API objects (gateway.networking.k8s.io/v1, standard channel) that expose the
  web Service at the public host: an HTTPRoute, the Gateway it attaches to when the role makes one (one HTTPS
  listener, its certificate from cert-manager's Gateway support), and the request body size where the controller
  needs a policy for it (Gateway API has no field for it; NGINX Gateway Fabric's default is nginx's 1m, too small
  for ingestion batches; Envoy Gateway and Traefik proxy a body of any size unless told otherwise).
- `error_ratio_query`: the PromQL share of the web's requests answered 5xx over a window, for the controller in
  front of the web. Each controller names its metrics differently:
  ingress-nginx `nginx_ingress_controller_requests` (namespace label); Envoy Gateway
  `envoy_cluster_upstream_rq_xx` per cluster, named `httproute/<ns>/<route>/rule/<n>` (or `service/<ns>/<svc>/<port>`
  where backends share a cluster, Envoy Gateway >= 1.8); Traefik `traefik_service_requests_total`, services of its
  Gateway provider named after `<ns>-<service>-<port>`; NGINX Gateway Fabric only with NGINX Plus, upstreams named
  `<ns>_<service>_<port>` in the exporter's `nginxplus_upstream_server_responses` (NGINX OSS reports no response codes
  per upstream).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

GATEWAY_GROUP = "gateway.networking.k8s.io"
CONTROLLERS = ("envoy_gateway", "nginx_gateway_fabric", "traefik", "other")
TRAFFIC_CONTROLLERS = ("ingress_nginx", "envoy_gateway", "traefik", "nginx_gateway_fabric")


def gateway_manifests(gateway, fullname, host, web_port=3000):
    """The objects, as dicts, for `gateway` (langfuse_helm_gateway): HTTPRoute <fullname> for `host` to Service
    <fullname>-web:`web_port`; with gateway.create also Gateway <fullname>; for nginx_gateway_fabric a
    ClientSettingsPolicy with the body size and timeout."""
    if not isinstance(gateway, dict):
        raise AnsibleFilterError("gateway_manifests expects langfuse_helm_gateway, a dict")
    if gateway.get("controller", "other") not in CONTROLLERS:
        raise AnsibleFilterError(f"langfuse_helm_gateway.controller must be one of {', '.join(CONTROLLERS)}")
    timeout = f"{int(gateway.get('timeout_seconds', 300))}s"
    objects = []
    if gateway.get("create", True):
        annotations = dict(gateway.get("annotations") or {})
        if gateway.get("cluster_issuer"):
            annotations["cert-manager.io/cluster-issuer"] = gateway["cluster_issuer"]
        objects.append({
            "apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "Gateway",
            "metadata": {"name": fullname, **({"annotations": annotations} if annotations else {})},
            "spec": {
                "gatewayClassName": gateway["class_name"],
                "listeners": [{
                    "name": "https", "hostname": host, "port": 443, "protocol": "HTTPS",
                    "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": gateway["tls_secret_name"]}]},
                    "allowedRoutes": {"namespaces": {"from": "Same"}},
                }],
            },
        })
        parent = {"name": fullname, "sectionName": "https"}
    else:
        parent = {"name": gateway["name"]}
        if gateway.get("namespace"):
            parent["namespace"] = gateway["namespace"]
        if gateway.get("section_name"):
            parent["sectionName"] = gateway["section_name"]
    objects.append({
        "apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute",
        "metadata": {"name": fullname},
        "spec": {
            "parentRefs": [parent],
            "hostnames": [host],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": f"{fullname}-web", "port": int(web_port)}],
                "timeouts": {"request": timeout},
            }],
        },
    })
    if gateway.get("controller") == "nginx_gateway_fabric":
        objects.append({
            "apiVersion": "gateway.nginx.org/v1alpha1", "kind": "ClientSettingsPolicy",
            "metadata": {"name": fullname},
            "spec": {"targetRef": {"group": GATEWAY_GROUP, "kind": "HTTPRoute", "name": fullname},
                     "body": {"maxSize": str(gateway.get("body_size", "100m")), "timeout": timeout}},
        })
    return objects


def route_parent_problems(route, parent_ref, route_namespace):
    """Why the HTTPRoute `route` (as k8s_info returns it) is not serving through `parent_ref` yet: [] when a
    controller reports Accepted and ResolvedRefs True for it at the route's current generation, else each condition
    that is not, with its reason and message (or that no controller has reported on the parent)."""
    if not route:
        return ["the HTTPRoute does not exist"]
    generation = (route.get("metadata") or {}).get("generation")
    want = {"name": parent_ref["name"], "namespace": parent_ref.get("namespace") or route_namespace,
            "sectionName": parent_ref.get("sectionName")}
    for parent in ((route.get("status") or {}).get("parents") or []):
        ref = parent.get("parentRef") or {}
        got = {"name": ref.get("name"), "namespace": ref.get("namespace") or route_namespace,
               "sectionName": ref.get("sectionName")}
        if got != want:
            continue
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        problems = []
        for kind in ("Accepted", "ResolvedRefs"):
            condition = conditions.get(kind)
            if condition is None:
                problems.append(f"{kind}: not reported yet")
            elif condition.get("status") != "True":
                problems.append(f"{kind}={condition.get('status')} ({condition.get('reason', '')}: {condition.get('message', '')})")
            elif generation is not None and condition.get("observedGeneration") not in (None, generation):
                problems.append(f"{kind}: reported for generation {condition.get('observedGeneration')}, not {generation}")
        return problems
    where = f"{want['namespace']}/{want['name']}" + (f" listener {want['sectionName']}" if want["sectionName"] else "")
    return [f"no Gateway controller has reported on parent Gateway {where} yet (is the GatewayClass's controller running?)"]


def error_ratio_query(controller, namespace, window_seconds, route="", service="", port=3000):
    """PromQL: the share of the web's requests answered 5xx over the last `window_seconds`, for `controller`."""
    queries = {  # controller: (metric, the web's series, its 5xx)
        "ingress_nginx": ("nginx_ingress_controller_requests", f'namespace="{namespace}"', 'status=~"5.."'),
        "envoy_gateway": ("envoy_cluster_upstream_rq_xx",
                          f'envoy_cluster_name=~"httproute/{namespace}/{route}/rule/.*|service/{namespace}/{service}/.*"',
                          'envoy_response_code_class="5"'),
        "traefik": ("traefik_service_requests_total", f'service=~".*{namespace}-{service}-{port}.*@kubernetesgateway"',
                    'code=~"5.."'),
        "nginx_gateway_fabric": ("nginxplus_upstream_server_responses", f'upstream="{namespace}_{service}_{port}"', 'code="5xx"'),
    }
    if controller not in queries:
        raise AnsibleFilterError(f"upgrade_traffic_controller must be one of {', '.join(TRAFFIC_CONTROLLERS)} (is {controller!r})")
    metric, selector, errors = queries[controller]
    window = f"{int(window_seconds)}s"
    return (f"sum(rate({metric}{{{selector},{errors}}}[{window}])) / "
            f"clamp_min(sum(rate({metric}{{{selector}}}[{window}])), 1e-9)")


class FilterModule:
    def filters(self):
        return {"gateway_manifests": gateway_manifests, "route_parent_problems": route_parent_problems,
                "error_ratio_query": error_ratio_query}
