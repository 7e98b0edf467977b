"""The Gateway API objects langfuse_helm_exposure gateway puts in the release (filter gateway_manifests), checked
by the local API server against Gateway API's real standard-channel CRDs (tests/localenv/cluster.sh applies them
from the Go module sigs.k8s.io/gateway-api): a strict server-side dry run, so an unknown or misspelt field, a value
out of the CRD's pattern, or a CEL rule the objects break fails here. NGINX Gateway Fabric's ClientSettingsPolicy
is the one object not checked so: its CRD comes with NGF's module, which the Go module proxy here does not serve
(tests/unit/test_traffic.py checks its shape)."""
import json
import sys

import pytest

from conftest import REPO, kubectl

sys.path.insert(0, str(REPO / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.filter.traffic import gateway_manifests  # noqa: E402

OWN = {"create": True, "class_name": "standin", "cluster_issuer": "letsencrypt", "tls_secret_name": "langfuse-tls",
       "name": "", "namespace": "", "section_name": "", "controller": "envoy_gateway", "body_size": "100m",
       "timeout_seconds": 300, "annotations": {"example.com/team": "platform"}}
SHARED = {**OWN, "create": False, "name": "public", "namespace": "gateways", "section_name": "https"}


def dry_run(namespace, objects):
    return kubectl("-n", namespace, "apply", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-",
                   input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}), check=False)


@pytest.mark.parametrize("gateway", [OWN, SHARED, {**OWN, "controller": "traefik", "timeout_seconds": 3600}],
                         ids=["own-gateway", "shared-gateway", "long-timeout"])
def test_the_objects_pass_the_real_crds_strictly(namespace, gateway):
    objects = [o for o in gateway_manifests(gateway, "langfuse", "langfuse.example.com")
               if o["apiVersion"].startswith("gateway.networking.k8s.io/")]
    proc = dry_run(namespace, objects)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    kinds = [item["kind"] for item in answer.get("items", [answer])]  # kubectl prints one object as itself
    assert kinds == [o["kind"] for o in objects]


def test_the_dry_run_would_refuse_what_the_crds_do_not_allow(namespace):
    # The check above can fail: a misspelt field and a timeout out of the CRD's pattern are refused.
    [route] = [o for o in gateway_manifests(SHARED, "langfuse", "langfuse.example.com") if o["kind"] == "HTTPRoute"]
    misspelt = json.loads(json.dumps(route))
    misspelt["spec"]["rules"][0]["timeout"] = misspelt["spec"]["rules"][0].pop("timeouts")
    assert "unknown field" in dry_run(namespace, [misspelt]).stderr
    bad_timeout = json.loads(json.dumps(route))
    bad_timeout["spec"]["rules"][0]["timeouts"]["request"] = "5 minutes"
    assert dry_run(namespace, [bad_timeout]).returncode != 0
