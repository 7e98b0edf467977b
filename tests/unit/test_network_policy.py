"""The NetworkPolicy objects plugins/filter/network_policy.py makes for each kind of install.

What the policies allow, as a truth table, is asserted on the API server's objects by cyclonus in
tests/integration/test_install.py (external services) and test_install_dev_inventory.py (everything in the cluster);
these check the shape every install relies on: one complete policy per kind of pod, the default deny last, the
in-cluster services' pods selected by the labels their operators give them, and the ipBlocks of outside services.
"""
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from network_policy import network_peers_for, network_policies  # noqa: E402

ANY = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
EXTERNAL = {
    "prefix": "langfuse", "release": "langfuse", "labels": {"app.kubernetes.io/component": "network-policy"},
    "web_from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}}}],
    "prometheus_from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    "dns_to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
    "internet": {"to": ANY, "ports": [443]}, "api_server_to": ANY, "api_server_ports": [443, 6443],
    "postgres": {"in_cluster": False, "ports": [5432], "to": [{"ipBlock": {"cidr": "10.1.0.5/32"}}]},
    "redis": {"pods": {}, "ports": [6379], "to": [{"ipBlock": {"cidr": "10.1.0.6/32"}}]},
    "clickhouse": {"mode": "external", "http_port": 8443, "native_port": 9440, "to": [{"ipBlock": {"cidr": "10.1.0.7/32"}}]},
    "s3": {"ports": [443], "to": [{"ipBlock": {"cidr": "10.1.0.8/32"}}]},
}
VALKEY = {"matchLabels": {"app.kubernetes.io/name": "valkey", "app.kubernetes.io/instance": "langfuse-valkey"}}
IN_CLUSTER = {
    **EXTERNAL,
    "postgres": {"in_cluster": True, "operator_namespace": "cnpg-system", "ports": [5432], "to": []},
    "redis": {"pods": VALKEY, "ports": [6379], "to": []},
    "clickhouse": {"mode": "operator", "operator_namespace": "clickhouse-operator", "http_port": 8123, "native_port": 9000,
                   "to": []},
}


def by_name(policies):
    return {p["metadata"]["name"]: p["spec"] for p in policies}


def test_external_services_one_policy_per_kind_of_pod_and_the_default_deny_last():
    policies = network_policies(EXTERNAL)
    assert [p["metadata"]["name"] for p in policies] == [
        "langfuse-web", "langfuse-worker", "langfuse-migrate", "langfuse-backup", "langfuse-redis-exporter",
        "langfuse-blackbox-exporter", "langfuse-default-deny"]
    assert policies[-1]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for p in policies:
        assert p["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert p["metadata"]["annotations"]["langfuse-ops.io/allows"]


def test_a_direction_without_rules_is_left_out_not_an_empty_list():
    # The API server stores [] as nothing: applying [] again would change the object on every run.
    spec = by_name(network_policies(EXTERNAL))
    assert "ingress" not in spec["langfuse-migrate"] and "ingress" not in spec["langfuse-backup"]
    assert spec["langfuse-migrate"]["egress"]


def test_outside_services_are_reached_on_their_ports_only():
    spec = by_name(network_policies(EXTERNAL))
    web_egress = spec["langfuse-web"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.1.0.5/32"}}], "ports": [{"protocol": "TCP", "port": 5432}]} in web_egress
    assert {"to": [{"ipBlock": {"cidr": "10.1.0.7/32"}}],
            "ports": [{"protocol": "TCP", "port": 8443}, {"protocol": "TCP", "port": 9440}]} in web_egress
    # The migration Job needs no Redis, S3 nor the internet.
    assert [r["to"] for r in spec["langfuse-migrate"]["egress"]][1:] == [[{"ipBlock": {"cidr": "10.1.0.5/32"}}],
                                                                         [{"ipBlock": {"cidr": "10.1.0.7/32"}}]]


def test_in_cluster_services_get_policies_selecting_their_operators_pods():
    spec = by_name(network_policies(IN_CLUSTER))
    assert list(spec)[-5:] == ["langfuse-valkey", "langfuse-postgres", "langfuse-clickhouse", "langfuse-keeper",
                               "langfuse-default-deny"]
    assert spec["langfuse-valkey"]["podSelector"] == VALKEY and "egress" not in spec["langfuse-valkey"]
    assert spec["langfuse-postgres"]["podSelector"] == {"matchExpressions": [{"key": "cnpg.io/cluster", "operator": "Exists"}]}
    assert spec["langfuse-clickhouse"]["podSelector"] == {
        "matchExpressions": [{"key": "clickhouse.altinity.com/chi", "operator": "Exists"}]}
    # The operators reach their pods on any port.
    assert {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cnpg-system"}}}]} in [
        {"from": [p for p in r["from"] if "namespaceSelector" in p and "podSelector" not in p]} for r in spec["langfuse-postgres"]["ingress"]]
    # web reaches them by their pods, not by addresses.
    assert {"to": [{"podSelector": VALKEY}], "ports": [{"protocol": "TCP", "port": 6379}]} in spec["langfuse-web"]["egress"]


def test_the_official_operator_pods_are_selected_by_their_role_label():
    plan = {**IN_CLUSTER, "clickhouse": {**IN_CLUSTER["clickhouse"], "mode": "official"}}
    spec = by_name(network_policies(plan))
    assert spec["langfuse-clickhouse"]["podSelector"] == {"matchLabels": {"clickhouse.com/role": "clickhouse-server"}}
    assert spec["langfuse-keeper"]["podSelector"] == {"matchLabels": {"clickhouse.com/role": "clickhouse-keeper"}}
    assert {"from": [{"podSelector": {"matchLabels": {"clickhouse.com/role": "clickhouse-server"}}},
                     {"podSelector": {"matchLabels": {"clickhouse.com/role": "clickhouse-keeper"}}},
                     {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "clickhouse-operator"}}}]} \
        in spec["langfuse-keeper"]["ingress"]


def test_no_internet_for_web_and_worker_when_asked():
    internet = {"to": ANY, "ports": [{"protocol": "TCP", "port": 443}]}
    assert internet in by_name(network_policies(EXTERNAL))["langfuse-worker"]["egress"]
    spec = by_name(network_policies({**EXTERNAL, "internet": {"to": [], "ports": [443]}}))
    assert len(spec["langfuse-web"]["egress"]) == len(spec["langfuse-worker"]["egress"]) == 5  # DNS, the 3 databases, S3
    assert internet not in spec["langfuse-worker"]["egress"]


@pytest.mark.parametrize("hosts, cidrs, peers", [
    ("10.1.0.5", None, ["10.1.0.5/32"]),
    ("[2001:db8::5]", None, ["2001:db8::5/128"]),
    (["10.1.0.5", "10.1.0.6", "10.1.0.5"], None, ["10.1.0.5/32", "10.1.0.6/32"]),
    ("db.example.com", None, ["0.0.0.0/0", "::/0"]),
    (["10.1.0.5", "db.example.com"], None, ["0.0.0.0/0", "::/0"]),
    ("db.example.com", ["10.20.0.0/16"], ["10.20.0.0/16"]),
])
def test_outside_peers(hosts, cidrs, peers):
    assert network_peers_for(hosts, cidrs) == [{"ipBlock": {"cidr": c}} for c in peers]


@pytest.mark.parametrize("plan, words", [
    ({**EXTERNAL, "web_from": [{"namespace": "x"}]}, "every peer of web_from must be a NetworkPolicy peer"),
    ({**EXTERNAL, "web_from": [{}]}, "every peer of web_from"),
    ({**EXTERNAL, "clickhouse": {**EXTERNAL["clickhouse"], "mode": "embedded"}}, "clickhouse.mode must be"),
    ({**IN_CLUSTER, "postgres": {**IN_CLUSTER["postgres"], "operator_namespace": None}}, "plan.operator_namespace must be a str"),
])
def test_a_bad_plan_is_refused_naming_what(plan, words):
    with pytest.raises(AnsibleFilterError, match=words):
        network_policies(plan)


def test_a_bad_cidr_is_refused():
    with pytest.raises(AnsibleFilterError, match="'10.0.0.0/33' is not a CIDR"):
        network_peers_for("db", ["10.0.0.0/33"])


def test_cloudnativepg_reaches_the_api_server_only_where_the_plan_says():
    # tasks/main.yml fills api_server_to with the addresses of Service default/kubernetes; before, none.
    egress = by_name(network_policies({**IN_CLUSTER, "api_server_to": []}))["langfuse-postgres"]["egress"]
    assert [list(r["to"][0]) for r in egress] == [["namespaceSelector"], ["podSelector"], ["ipBlock"]]  # DNS, each other, S3
    api = [{"ipBlock": {"cidr": "192.0.2.2/32"}}]
    plan = {**IN_CLUSTER, "api_server_to": api, "api_server_ports": [443, 16443]}
    egress = by_name(network_policies(plan))["langfuse-postgres"]["egress"]
    assert egress[-1] == {"to": api, "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 16443}]}


def test_the_api_server_is_cut_out_of_the_internet_web_and_the_worker_may_reach():
    plan = {**EXTERNAL, "internet": {"to": ANY + [{"ipBlock": {"cidr": "::/0"}}], "ports": [443]},
            "internet_except": ["10.0.0.1/32", "192.0.2.2/32", "0.0.0.0/0"]}
    egress = by_name(network_policies(plan))["langfuse-web"]["egress"]
    assert egress[-1]["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.1/32", "192.0.2.2/32"]}},
                                {"ipBlock": {"cidr": "::/0"}}]
