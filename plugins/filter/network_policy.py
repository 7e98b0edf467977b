# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who may talk to whom in Langfuse's namespace, as NetworkPolicy objects (networking.k8s.io/v1).

`network_policies(plan)` returns one policy per kind of pod the collection runs there, each holding every ingress and
egress rule of those pods, and `<prefix>-default-deny` (every pod, both directions, no rule) last. One policy per
kind of pod, complete, is what makes a run killed half way safe: a pod is cut off only by a policy that selects it,
and every such policy already allows all its pod needs; until the default deny is applied the rest stay open.

The kinds: web (canaries share its labels), worker, the migration Job, the backup and restore Jobs, and the exporters
always; Valkey, CloudNativePG's instances and ClickHouse with its Keeper when they run in the namespace. Services
outside the namespace (managed databases, S3, LLM providers) are reached by the `to` peers of `plan` (ipBlocks),
on their ports only.
"""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError

DNS_PORTS = ({"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53})


def _app(release, app):
    """web's or the worker's pods, as the chart labels them."""
    return {"matchLabels": {"app.kubernetes.io/name": "langfuse", "app.kubernetes.io/instance": release, "app": app}}


def _exists(key):
    return {"matchExpressions": [{"key": key, "operator": "Exists"}]}


CLICKHOUSE_PODS = {
    # Altinity: every pod of a ClickHouseInstallation / ClickHouseKeeperInstallation.
    "operator": (_exists("clickhouse.altinity.com/chi"), _exists("clickhouse-keeper.altinity.com/chk")),
    # ClickHouse's operator (internal/controllerutil/labels.go): clickhouse.com/role.
    "official": ({"matchLabels": {"clickhouse.com/role": "clickhouse-server"}},
                 {"matchLabels": {"clickhouse.com/role": "clickhouse-keeper"}}),
}
CLICKHOUSE_METRICS = {"operator": (9363, 7000), "official": (9363, 9090)}


def _ports(*ports, protocol="TCP"):
    return [{"protocol": protocol, "port": int(p)} for p in ports if p]


def _peer_pods(selector):
    return {"podSelector": selector}


def _namespace(name):
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def _rule(key, peers, ports=None):
    rule = {key: list(peers)}
    if ports:
        rule["ports"] = list(ports)
    return rule


def _require(plan, key, kind):
    value = plan.get(key)
    if not isinstance(value, kind):
        raise AnsibleFilterError(f"network_policies: plan.{key} must be a {kind.__name__}")
    return value


def _peers(plan, key):
    peers = _require(plan, key, list)
    for peer in peers:
        if not isinstance(peer, dict) or not set(peer) <= {"podSelector", "namespaceSelector", "ipBlock"} or not peer:
            raise AnsibleFilterError(
                f"network_policies: every peer of {key} must be a NetworkPolicy peer (podSelector, namespaceSelector "
                f"and/or ipBlock), got {peer!r}")
    return peers


def network_policies(plan):
    """The NetworkPolicy objects for `plan` (the network_policy role builds it from the roles' connection facts)."""
    if not isinstance(plan, dict):
        raise AnsibleFilterError("network_policies expects the network_policy role's plan, a dict")
    prefix = _require(plan, "prefix", str)
    release = _require(plan, "release", str)
    labels = _require(plan, "labels", dict)
    web_port, worker_port = int(plan.get("web_port", 3000)), int(plan.get("worker_port", 3030))
    postgres, redis, clickhouse, s3 = (_require(plan, k, dict) for k in ("postgres", "redis", "clickhouse", "s3"))
    ch_mode = clickhouse.get("mode", "external")
    if ch_mode not in ("external", "operator", "official"):
        raise AnsibleFilterError(f"network_policies: clickhouse.mode must be external, operator or official, got {ch_mode!r}")

    web, worker = _app(release, "web"), _app(release, "worker")
    migrate = {"matchLabels": {"app.kubernetes.io/name": "langfuse", "app.kubernetes.io/instance": release,
                               "app.kubernetes.io/component": "migrate"}}
    jobs = {"matchLabels": {"app.kubernetes.io/name": "langfuse-backup"},
            "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["backup", "restore"]}]}
    redis_exporter = {"matchLabels": {"app.kubernetes.io/name": "redis-exporter"}}
    blackbox = {"matchLabels": {"app.kubernetes.io/name": "blackbox-exporter"}}
    postgres_pods = _exists("cnpg.io/cluster") if postgres.get("in_cluster") else None
    valkey_pods = redis.get("pods") or None
    ch_pods, keeper_pods = CLICKHOUSE_PODS.get(ch_mode, (None, None))

    dns = _rule("to", _peers(plan, "dns_to"), DNS_PORTS)
    prometheus = _peers(plan, "prometheus_from")

    def service_egress(service, pods, ports):
        """Egress to a data service: its pods in the namespace, or the inventory's peers outside it."""
        peers = [_peer_pods(pods)] if pods else _peers(service, "to")
        return _rule("to", peers, _ports(*ports))

    to_postgres = service_egress(postgres, postgres_pods, _require(postgres, "ports", list))
    to_redis = service_egress(redis, valkey_pods, _require(redis, "ports", list))
    ch_ports = [clickhouse["http_port"], clickhouse["native_port"]]
    to_clickhouse = service_egress(clickhouse, ch_pods, ch_ports)
    to_clickhouse_http = service_egress(clickhouse, ch_pods, [clickhouse["http_port"]])
    to_s3 = _rule("to", _peers(s3, "to"), _ports(*_require(s3, "ports", list)))
    internet = plan.get("internet") or {}
    to_internet = ([_rule("to", _excepting(_peers(internet, "to"), plan.get("internet_except") or []),
                          _ports(*internet.get("ports", [443])))] if internet.get("to") else [])

    def policy(name, selector, ingress, egress, what):
        # No rule in a direction: the key is left out (policyTypes still denies it). The API server stores an empty
        # list as none, and a re-applied empty list would count as a change on every run.
        rules = {k: v for k, v in (("ingress", ingress), ("egress", egress)) if v}
        return {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"{prefix}-{name}", "labels": labels,
                         "annotations": {"langfuse-ops.io/allows": what}},
            "spec": {"podSelector": selector, "policyTypes": ["Ingress", "Egress"], **rules},
        }

    app_egress = [dns, to_postgres, to_redis, to_clickhouse, to_s3] + to_internet
    policies = [
        policy("web", web,
               [_rule("from", _peers(plan, "web_from"), _ports(web_port)),
                _rule("from", [_peer_pods(jobs), _peer_pods(blackbox)], _ports(web_port))],
               app_egress,
               "web: from the ingress or Gateway controller, the backup Jobs and the health probe; to the data "
               "services, S3 and LLM providers"),
        policy("worker", worker,
               [_rule("from", [_peer_pods(blackbox)], _ports(worker_port))],
               app_egress,
               "worker: from the health probe; to the data services, S3 and LLM providers"),
        policy("migrate", migrate, [], [dns, to_postgres, to_clickhouse],
               "the migration Job: to Postgres and ClickHouse"),
        policy("backup", jobs, [], [dns, to_postgres, to_clickhouse_http, to_s3, _rule("to", [_peer_pods(web)], _ports(web_port))],
               "the backup and restore Jobs: to Postgres, ClickHouse, S3 and web's health"),
        policy("redis-exporter", redis_exporter, [_rule("from", prometheus, _ports(9121))], [dns, to_redis],
               "redis_exporter: from Prometheus; to Redis"),
        policy("blackbox-exporter", blackbox, [_rule("from", prometheus, _ports(9115))],
               [dns, _rule("to", [_peer_pods(web)], _ports(web_port)), _rule("to", [_peer_pods(worker)], _ports(worker_port))],
               "blackbox_exporter: from Prometheus; to web's and the worker's health"),
    ]
    clients = [_peer_pods(web), _peer_pods(worker)]
    if valkey_pods:
        policies.append(policy(
            "valkey", valkey_pods,
            [_rule("from", clients + [_peer_pods(redis_exporter)], _ports(*redis["ports"]))], [],
            "Valkey: from web, the worker and redis_exporter; to nothing"))
    if postgres_pods:
        operator = _namespace(_require(postgres, "operator_namespace", str))
        policies.append(policy(
            "postgres", postgres_pods,
            [_rule("from", clients + [_peer_pods(migrate), _peer_pods(jobs)], _ports(*postgres["ports"])),
             _rule("from", [_peer_pods(postgres_pods), operator]),
             _rule("from", prometheus, _ports(9187))],
            [dns, _rule("to", [_peer_pods(postgres_pods)]), to_s3,
             *([_rule("to", _peers(plan, "api_server_to"), _ports(*plan.get("api_server_ports") or [443]))]
               if plan.get("api_server_to") else [])],
            "CloudNativePG's instances: from web, the worker, the Jobs, each other, the operator and Prometheus; "
            "to each other, S3 (Barman Cloud) and the API server"))
    if ch_pods:
        operator = _namespace(_require(clickhouse, "operator_namespace", str))
        ensemble = [_peer_pods(ch_pods), _peer_pods(keeper_pods)]
        ch_metrics, keeper_metrics = CLICKHOUSE_METRICS[ch_mode]
        keeper_metrics = int(clickhouse.get("keeper_metrics_port") or keeper_metrics)
        policies.append(policy(
            "clickhouse", ch_pods,
            [_rule("from", clients + [_peer_pods(migrate)], _ports(*ch_ports)),
             _rule("from", [_peer_pods(jobs)], _ports(clickhouse["http_port"])),
             _rule("from", ensemble + [operator]),
             _rule("from", prometheus, _ports(ch_metrics))],
            [dns, _rule("to", ensemble), to_s3],
            "ClickHouse: from web, the worker, the Jobs, ClickHouse and Keeper, the operator and Prometheus; "
            "to ClickHouse and Keeper, and S3 (BACKUP/RESTORE)"))
        policies.append(policy(
            "keeper", keeper_pods,
            [_rule("from", ensemble + [operator]), _rule("from", prometheus, _ports(keeper_metrics))],
            [dns, _rule("to", ensemble)],
            "Keeper: from ClickHouse and Keeper, the operator and Prometheus; to ClickHouse and Keeper"))
    policies.append({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{prefix}-default-deny", "labels": labels,
                     "annotations": {"langfuse-ops.io/allows": "nothing: every other pod of the namespace is cut off"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    })
    return policies


def _excepting(peers, cidrs):
    """`peers` with the addresses `cidrs` cut out of every ipBlock that holds them (the API server out of the
    internet: web and the worker have no business there)."""
    out = []
    for peer in peers:
        block = peer.get("ipBlock")
        if block:
            net = ipaddress.ip_network(block["cidr"], strict=False)
            cut = [c for c in cidrs if (n := ipaddress.ip_network(c, strict=False)).version == net.version
                   and n != net and n.subnet_of(net)]
            kept = sorted(set(block.get("except", [])) | set(cut))
            peer = {**peer, "ipBlock": {**block, **({"except": kept} if kept else {})}}
        out.append(peer)
    return out


def _ip_peers(cidrs):
    return [{"ipBlock": {"cidr": c}} for c in cidrs]


def network_peers_for(hosts, cidrs=None):
    """The ipBlock peers for a service outside the namespace at `hosts` (a host or a list): the inventory's `cidrs`
    when given, else each host's own address (/32, /128) when all are IP literals, else every address (0.0.0.0/0
    and ::/0: a name's addresses are not known here; the rules still allow only the service's ports)."""
    if isinstance(hosts, str):
        hosts = [hosts]
    if cidrs:
        for c in cidrs:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError as e:
                raise AnsibleFilterError(f"network_peers_for: {c!r} is not a CIDR ({e})") from None
        return _ip_peers(cidrs)
    try:
        addresses = [ipaddress.ip_address(str(h).strip("[]")) for h in hosts]
    except ValueError:
        return _ip_peers(["0.0.0.0/0", "::/0"])
    if not addresses:
        raise AnsibleFilterError("network_peers_for: no host and no CIDR given")
    return _ip_peers(sorted({f"{a}/{a.max_prefixlen}" for a in addresses}))


class FilterModule:
    def filters(self):
        return {"network_policies": network_policies, "network_peers_for": network_peers_for}
