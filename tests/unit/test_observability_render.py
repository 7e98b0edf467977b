"""The observability role's objects and rules, rendered by Ansible for the modes the local cluster does not run.

No cluster: a playbook on localhost runs the role's validate tasks with the facts the other roles would
publish, then renders templates/objects.yml.j2 and templates/rules.yml.j2 as the role does.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "roles" / "observability" / "templates"

FACTS = {
    "langfuse_namespace": "lf",
    "langfuse_helm_namespace": "lf",
    "langfuse_helm_release_name": "prod",
    "langfuse_helm_fullname": "prod-langfuse",
    "redis_connection": {"mode": "standalone", "host": "redis.example", "port": 6379, "nodes": [], "username": "default",
                         "tls": False, "secret_name": "langfuse-redis", "key_prefix": ""},
    "clickhouse_operator_mode": "external",
    "postgres_connection": {"in_cluster": False},
}

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: langfuse_ops.platform.observability
        tasks_from: validate
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: >-
          {{ {'objects': lookup('ansible.builtin.template', templates ~ '/objects.yml.j2') | from_yaml,
              'rules': lookup('ansible.builtin.template', templates ~ '/rules.yml.j2') | from_yaml,
              'preflight': observability_preflight} | to_json }}
"""


def render(tmp_path, **overrides):
    (tmp_path / "render.yml").write_text(PLAYBOOK)
    variables = {**FACTS, **overrides, "out": str(tmp_path / "out.json"), "templates": str(TEMPLATES),
                 "ansible_python_interpreter": sys.executable}
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "render.yml"),
                           "-e", json.dumps(variables)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    if proc.returncode != 0:
        return proc, None
    data = json.loads((tmp_path / "out.json").read_text())
    data["present"] = {(o["definition"]["kind"], o["definition"]["metadata"]["name"]): o["definition"]
                       for o in data["objects"] if o["state"] == "present"}
    data["absent"] = {(o["definition"]["kind"], o["definition"]["metadata"]["name"]) for o in data["objects"]
                      if o["state"] == "absent"}
    data["alerts"] = {r["alert"]: r for g in data["rules"]["spec"]["groups"] for r in g["rules"] if "alert" in r}
    data["records"] = {r["record"]: r for g in data["rules"]["spec"]["groups"] for r in g["rules"] if "record" in r}
    return proc, data


def exporter_env(data):
    container = data["present"][("Deployment", "langfuse-redis-exporter")]["spec"]["template"]["spec"]["containers"][0]
    return container, {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_cluster_mode_with_tls_prefix_operator_clickhouse_and_cloudnativepg(tmp_path):
    proc, data = render(
        tmp_path,
        redis_connection={**FACTS["redis_connection"], "mode": "cluster", "nodes": ["r1.example:6379", "r2.example:6379"],
                          "tls": True, "key_prefix": "lf"},
        clickhouse_operator_mode="operator", clickhouse_operator_installation_name="lfch",
        clickhouse_operator_operator_namespace="ch-op", clickhouse_operator_release_name="chop",
        postgres_connection={"in_cluster": True}, postgres_cnpg_cluster_name="lf-pg")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert data["preflight"]["crds"] == ["servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com",
                                         "probes.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"]
    container, env = exporter_env(data)
    assert env["REDIS_ADDR"] == "rediss://r1.example:6379" and container["args"] == ["--is-cluster"]
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "langfuse-redis", "key": "password"}}
    keys = env["REDIS_EXPORTER_CHECK_SINGLE_KEYS"].split(",")
    assert keys[:2] == ["{lf:ingestion-queue}:ingestion-queue:wait", "{lf:ingestion-queue}:ingestion-queue:delayed"]
    assert len(keys) == 10
    # The backlog regex (PromQL raw string) matches exactly the ingestion queues' keys, braces and all.
    expr = data["records"]["langfuse:ingestion_backlog:sum"]["expr"]
    regex = re.search(r"key=~`([^`]*)`", expr)[1]
    assert [k for k in keys if re.fullmatch(regex, k)] == [
        "{lf:ingestion-queue}:ingestion-queue:wait", "{lf:ingestion-queue}:ingestion-queue:delayed",
        "{lf:otel-ingestion-queue}:otel-ingestion-queue:wait", "{lf:otel-ingestion-queue}:otel-ingestion-queue:delayed"]
    operator = data["present"][("ServiceMonitor", "langfuse-clickhouse-operator-metrics")]["spec"]
    assert operator["namespaceSelector"] == {"matchNames": ["ch-op"]}
    assert operator["selector"]["matchLabels"] == {"app.kubernetes.io/name": "altinity-clickhouse-operator",
                                                   "app.kubernetes.io/instance": "chop"}
    assert operator["endpoints"][0]["port"] == "ch-metrics" and operator["endpoints"][0]["honorLabels"] is True
    pods = data["present"][("PodMonitor", "langfuse-clickhouse")]["spec"]
    assert pods["selector"]["matchLabels"] == {"clickhouse.altinity.com/chi": "lfch"}
    assert pods["podMetricsEndpoints"][0]["port"] == "prometheus"
    assert ("PodMonitor", "langfuse-clickhouse-keeper") in data["absent"]
    postgres = data["present"][("PodMonitor", "langfuse-postgres")]["spec"]
    assert postgres["selector"]["matchLabels"] == {"cnpg.io/cluster": "lf-pg"}
    assert postgres["podMetricsEndpoints"][0]["port"] == "metrics"
    assert 'cluster="lf-pg"' in data["alerts"]["LangfusePostgresDown"]["expr"]
    assert {"LangfuseClickHouseTooManyParts", "LangfuseClickHouseDiskNearlyFull"} <= set(data["alerts"])
    # Names follow the chart's fullname; the worker Service selects the release's worker pods.
    worker = data["present"][("Service", "prod-langfuse-worker-health")]["spec"]
    assert worker["selector"] == {"app.kubernetes.io/name": "langfuse", "app.kubernetes.io/instance": "prod", "app": "worker"}
    probe = data["present"][("Probe", "prod-langfuse-web-health")]["spec"]
    assert probe["targets"]["staticConfig"]["static"] == ["http://prod-langfuse-web.lf.svc:3000/api/public/health"]
    for definition in data["present"].values():
        if definition["apiVersion"].startswith("monitoring.coreos.com"):
            assert definition["metadata"]["labels"]["release"] == "kube-prometheus-stack"
            assert definition["metadata"]["namespace"] == "lf"


def test_sentinel_needs_an_address_for_the_exporter(tmp_path):
    sentinel = {**FACTS["redis_connection"], "mode": "sentinel", "nodes": ["s1:26379"]}
    proc, _rendered = render(tmp_path, redis_connection=sentinel)
    assert proc.returncode != 0
    assert "observability_redis_exporter_addr is \"\"" in proc.stdout and "Sentinel" in proc.stdout
    proc, data = render(tmp_path, redis_connection=sentinel, observability_redis_exporter_addr="replica-1.example:6379")
    assert proc.returncode == 0, proc.stdout[-3000:]
    container, env = exporter_env(data)
    assert env["REDIS_ADDR"] == "redis://replica-1.example:6379" and container["args"] == []


def test_ipv6_host_external_clickhouse_keeper_and_no_backups(tmp_path):
    proc, data = render(
        tmp_path, redis_connection={**FACTS["redis_connection"], "host": "fd00::5"},
        observability_clickhouse_external_metrics={"addresses": ["10.0.0.5"], "port": 9363},
        observability_clickhouse_keeper_metrics_port=7000, backup_cron_enabled=False,
        observability_alert_labels={"team": "platform"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert exporter_env(data)[1]["REDIS_ADDR"] == "redis://[fd00::5]:6379"
    endpoints = data["present"][("Endpoints", "langfuse-clickhouse-metrics")]
    assert endpoints["subsets"] == [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"name": "metrics", "port": 9363, "protocol": "TCP"}]}]
    # Keeper is scraped only in operator mode.
    assert ("PodMonitor", "langfuse-clickhouse-keeper") in data["absent"]
    assert "LangfuseBackupTooOld" not in data["alerts"] and "LangfusePostgresDown" not in data["alerts"]
    assert all(a["labels"]["team"] == "platform" for a in data["alerts"].values())


def test_keeper_podmonitor_when_its_port_is_set(tmp_path):
    proc, data = render(tmp_path, clickhouse_operator_mode="operator", clickhouse_operator_installation_name="lfch",
                        observability_clickhouse_keeper_metrics_port=7000)
    assert proc.returncode == 0, proc.stdout[-3000:]
    keeper = data["present"][("PodMonitor", "langfuse-clickhouse-keeper")]["spec"]
    assert keeper["selector"]["matchLabels"] == {"clickhouse-keeper.altinity.com/chk": "lfch"}
    assert keeper["podMetricsEndpoints"][0]["portNumber"] == 7000


@pytest.mark.parametrize("overrides, message", [
    ({"observability_clickhouse_external_metrics": {"addresses": ["ch.example"], "port": 9363}},
     "observability_clickhouse_external_metrics.addresses is"),
    ({"observability_prometheus_selector_labels": {"release": "has space"}}, "observability_prometheus_selector_labels is"),
    ({"observability_probe_for": "5 minutes"}, "observability_probe_for"),
    ({"observability_queues": "ingestion-queue"}, "observability_queues is"),
])
def test_bad_inputs_are_refused_naming_the_variable(tmp_path, overrides, message):
    proc, _rendered = render(tmp_path, **overrides)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]


def test_backup_max_ages_become_seconds(tmp_path):
    proc, data = render(tmp_path, observability_backup_max_age={"langfuse-backup-postgres": "90m", "nightly": "2w"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    groups = {g["name"]: g["rules"] for g in data["rules"]["spec"]["groups"]}
    exprs = {r["labels"]["cronjob"]: r["expr"] for r in groups["langfuse-backups"]}
    assert "> 5400" in exprs["langfuse-backup-postgres"] and "> 1209600" in exprs["nightly"]


def test_the_exporter_and_the_backlog_rule_follow_every_queue_shard(tmp_path):
    proc, data = render(
        tmp_path,
        redis_connection={**FACTS["redis_connection"], "mode": "cluster", "nodes": ["r1.example:6379"], "key_prefix": "lf"},
        langfuse_helm_queue_shards={"ingestion-queue": 4, "trace-upsert": 2})
    assert proc.returncode == 0, proc.stdout[-3000:]
    keys = exporter_env(data)[1]["REDIS_EXPORTER_CHECK_SINGLE_KEYS"].split(",")
    assert [k for k in keys if k.endswith(":wait") and "ingestion-queue" in k and "otel" not in k] == [
        "{lf:ingestion-queue}:ingestion-queue:wait", "{lf:ingestion-queue-1}:ingestion-queue-1:wait",
        "{lf:ingestion-queue-2}:ingestion-queue-2:wait", "{lf:ingestion-queue-3}:ingestion-queue-3:wait"]
    assert "{lf:trace-upsert-1}:trace-upsert-1:delayed" in keys
    assert len(keys) == 2 * (4 + 1 + 1 + 2 + 1)
    regex = re.search(r"key=~`([^`]*)`", data["records"]["langfuse:ingestion_backlog:sum"]["expr"])[1]
    assert len([k for k in keys if re.fullmatch(regex, k)]) == 2 * (4 + 1)


def test_the_redis_exporter_serves_no_scrape_endpoint(tmp_path):
    """redis_exporter's /scrape?target= logs in to any address the caller names with the exporter's Redis password
    (issue 20): REDIS_EXPORTER_DISABLE_SCRAPE_ENDPOINT (its --disable-scrape-endpoint, main.go) turns it off; only
    /metrics of the one Redis stays."""
    proc, data = render(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    _container, env = exporter_env(data)
    assert env["REDIS_EXPORTER_DISABLE_SCRAPE_ENDPOINT"] == "true"
