"""The langfuse_helm role's chart values, composed by Ansible without a cluster: shards, KEDA, write modes.

A playbook on localhost includes the role's `values` entry point with the connections the data-service
roles would publish, and writes langfuse_helm_effective_values out.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FACTS = {
    "langfuse_namespace": "lf", "langfuse_helm_release_line": "v3", "langfuse_helm_chart_version": "1.5.41",
    "langfuse_helm_app_version": "3.224.1", "langfuse_helm_public_url": "https://langfuse.example.com",
    "postgres_connection": {"host": "pg", "port": 5432, "database": "langfuse", "username": "langfuse", "secret_name": "pg"},
    "redis_connection": {"mode": "cluster", "host": "", "port": 6379, "nodes": ["r1:6379", "r2:6379"], "username": "default",
                         "tls": True, "secret_name": "redis", "key_prefix": "lf"},
    "clickhouse_operator_connection": {"host": "ch", "http_port": 8123, "native_port": 9000, "secret_name": "ch",
                                       "database": "default", "username": "default", "cluster_enabled": False},
    "s3_buckets_connection": {"endpoint": "", "region": "eu-west-1", "force_path_style": False, "secret_name": "s3",
                              "buckets": {"events": "ev", "media": "me", "exports": "ex"}},
}
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: langfuse_ops.platform.langfuse_helm
        tasks_from: values
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ langfuse_helm_effective_values | to_json }}"
"""


def values(tmp_path, **overrides):
    (tmp_path / "values.yml").write_text(PLAYBOOK)
    variables = {**FACTS, **overrides, "out": str(tmp_path / "out.json"), "ansible_python_interpreter": sys.executable}
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "values.yml"),
                           "-e", json.dumps(variables)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def env(rendered):
    return {e["name"]: e["value"] for e in rendered["langfuse"]["additionalEnv"]}


def test_keda_triggers_follow_every_shard_of_every_queue(tmp_path):
    worker = {"replicas": 3, "resources": {}, "autoscaling": "keda",
              "hpa": {"min_replicas": 3, "max_replicas": 10, "target_cpu_percent": 70},
              "keda": {"min_replicas": 3, "max_replicas": 20, "list_length_target": 500,
                       "queues": ["ingestion-queue", "otel-ingestion-queue"]}}
    rendered = values(tmp_path, langfuse_helm_worker=worker, langfuse_helm_queue_shards={"ingestion-queue": 4})
    scaled = next(m for m in rendered["extraManifests"] if m["kind"] == "ScaledObject")
    assert [t["metadata"]["listName"] for t in scaled["spec"]["triggers"]] == [
        "{lf:ingestion-queue}:ingestion-queue:wait", "{lf:ingestion-queue-1}:ingestion-queue-1:wait",
        "{lf:ingestion-queue-2}:ingestion-queue-2:wait", "{lf:ingestion-queue-3}:ingestion-queue-3:wait",
        "{lf:otel-ingestion-queue}:otel-ingestion-queue:wait"]
    assert {t["type"] for t in scaled["spec"]["triggers"]} == {"redis-cluster"}
    assert env(rendered)["LANGFUSE_INGESTION_QUEUE_SHARD_COUNT"] == "4"
    assert "LANGFUSE_OTEL_INGESTION_QUEUE_SHARD_COUNT" not in env(rendered)


def test_one_shard_each_sets_no_env(tmp_path):
    assert not [n for n in env(values(tmp_path)) if n.endswith("_SHARD_COUNT")]


V4 = {"langfuse_helm_release_line": "v4", "langfuse_helm_chart_version": "2.0.0", "langfuse_helm_app_version": "4.4.0"}


@pytest.mark.parametrize("phase, mode, expected", [
    ("", "events_only", {}),
    ("dual", "events_only", {"LANGFUSE_MIGRATION_V4_WRITE_MODE": "dual",
                             "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL": "false"}),
    ("backfill", "events_only", {"LANGFUSE_MIGRATION_V4_WRITE_MODE": "dual",
                                 "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL": "true"}),
    # A recorded migration wins over the inventory's write mode until the cut-over.
    ("dual", "legacy", {"LANGFUSE_MIGRATION_V4_WRITE_MODE": "dual",
                        "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL": "false"}),
    ("cutover", "legacy", {}),
    ("drop_scratch", "legacy", {"LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES": "true"}),
    ("", "legacy", {"LANGFUSE_MIGRATION_V4_WRITE_MODE": "legacy",
                    "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL": "false",
                    "LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR": "dual_write",
                    "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN": "false"}),
])
def test_the_write_mode_follows_the_recorded_phase(tmp_path, phase, mode, expected):
    rendered = values(tmp_path, **V4, langfuse_helm_v4_write_mode=mode, langfuse_helm_v4_migration={"phase": phase})
    got = {k: v for k, v in env(rendered).items() if k.startswith(("LANGFUSE_MIGRATION_V4", "LANGFUSE_BACKGROUND_MIGRATION"))}
    assert got == expected
    assert rendered["clickhouse"]["cluster"] == {"enabled": False} and "clusterEnabled" not in rendered["clickhouse"]


def test_v3_values_carry_no_v4_env_and_keep_the_1_5_keys(tmp_path):
    rendered = values(tmp_path, langfuse_helm_v4_write_mode="dual")
    assert not [k for k in env(rendered) if "V4" in k]
    assert rendered["clickhouse"]["clusterEnabled"] is False and rendered["clickhouse"]["shards"] == 1
    assert rendered["langfuse"]["web"]["image"]["repository"] == "langfuse/langfuse"


@pytest.mark.parametrize("line", ["v3", "v4"])
def test_an_argo_rollout_web_holds_the_chart_deployment_at_zero(tmp_path, line):
    rendered = values(tmp_path, langfuse_helm_web_workload="argo_rollout",
                      **({**V4, "langfuse_helm_v4_migration": {"phase": ""}} if line == "v4" else {}))
    # The chart writes `web.replicas | default langfuse.replicas`, and sprig's default takes 0 for unset.
    assert rendered["langfuse"]["replicas"] == 0 and rendered["langfuse"]["web"]["replicas"] == 0
    assert rendered["langfuse"]["web"]["hpa"]["enabled"] is False
    assert rendered["langfuse"]["worker"]["replicas"] == 3  # the role's default: the worker keeps its own
    deployment = values(tmp_path)
    assert "replicas" not in deployment["langfuse"] and deployment["langfuse"]["web"]["replicas"] == 3
    assert deployment["langfuse"]["web"]["hpa"]["enabled"] is True


HPA = {"enabled": True, "min_replicas": 3, "max_replicas": 6, "target_cpu_percent": 70}
VALIDATE = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: langfuse_ops.platform.langfuse_helm
        tasks_from: validate
"""


def validate(tmp_path, **overrides):
    (tmp_path / "validate.yml").write_text(VALIDATE)
    variables = {**FACTS, **overrides, "ansible_python_interpreter": sys.executable}
    return subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "validate.yml"),
                           "-e", json.dumps(variables)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)


@pytest.mark.parametrize("overrides, message", [
    ({"langfuse": {"worker": {"image": {"tag": "latest"}}}}, "langfuse_helm_values.langfuse.worker.image.tag is 'latest'"),
    ({"langfuse": {"additionalEnv": [{"name": "REDIS_CONNECTION_STRING", "value": "redis://r:6379"}]}},
     "sets REDIS_CONNECTION_STRING: the chart then drops its own connection env"),
    ({"clickhouse": {"clusterEnabled": True}}, "clickhouse.clusterEnabled is True but the ClickHouse connection is a single node"),
    ({"postgresql": {"deploy": True}}, "langfuse_helm_values.postgresql.deploy is true"),
    ({"langfuse": {"encryptionKey": {"value": "0" * 64}}}, "langfuse_helm_values.langfuse.encryptionKey.value holds a secret"),
])
def test_validate_refuses_traps_that_come_through_the_overrides(tmp_path, overrides, message):
    proc = validate(tmp_path, langfuse_helm_values=overrides)
    assert proc.returncode != 0 and message in " ".join(proc.stdout.split()), proc.stdout[-2000:]
    assert "Nothing was changed" in proc.stdout


@pytest.mark.parametrize("overrides, message", [
    ({"langfuse_helm_release_name": "Langfuse"}, "langfuse_helm_release_name is 'Langfuse': Kubernetes takes lower-case"),
    ({"langfuse_helm_release_name": "l" * 54}, "at most 53 characters"),
    ({"langfuse_helm_timeout": "10 minutes"}, "langfuse_helm_timeout is '10 minutes': Helm takes a Go duration"),
    ({"langfuse_helm_pdb_max_unavailable": 0}, "langfuse_helm_pdb_max_unavailable is 0: a PodDisruptionBudget with maxUnavailable 0"),
    ({"langfuse_helm_web": {"replicas": 0, "resources": {}, "hpa": HPA}},
     "langfuse_helm_web.replicas is 0: it must be a whole number, 1 or more"),
    ({"langfuse_helm_web": {"replicas": 3, "resources": {}, "hpa": {**HPA, "min_replicas": 8, "max_replicas": 4}}},
     "langfuse_helm_web.hpa: the minimum 8 is above the maximum 4"),
])
def test_validate_refuses_shapes_naming_the_variable(tmp_path, overrides, message):
    proc = validate(tmp_path, **overrides)
    assert proc.returncode != 0 and message in " ".join(proc.stdout.split()), proc.stdout[-2000:]


@pytest.mark.parametrize("variable, value, unknown", [
    ("langfuse_helm_ingress", {"enabled": True, "class_name": "nginx", "cluster_issuer": "", "tls_secret_name": "t",
                               "body_size": "1m", "timeout_seconds": 60, "clas_name": "traefik"}, "clas_name"),
    ("langfuse_helm_web", {"replicas": 3, "resources": {}, "hpa": {**HPA, "max_replica": 9}}, "max_replica"),
    ("langfuse_helm_queue_shards", {"ingestion_queue": 4}, "ingestion_queue"),
])
def test_a_misspelt_nested_key_is_refused(tmp_path, variable, value, unknown):
    proc = validate(tmp_path, **{variable: value})
    text = " ".join(proc.stdout.split())
    assert proc.returncode != 0 and f"{variable}." in text and unknown in text and "Supported parameters include" in text, proc.stdout[-2000:]


def test_validate_passes_the_role_values(tmp_path):
    proc = validate(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]


@pytest.mark.parametrize("line", ["v3", "v4"])
def test_web_and_worker_meet_pod_security_restricted_by_default(tmp_path, line):
    rendered = values(tmp_path, **({**V4, "langfuse_helm_v4_migration": {"phase": ""}} if line == "v4" else {}))
    pod, container = rendered["langfuse"]["podSecurityContext"], rendered["langfuse"]["securityContext"]
    # What Pod Security "restricted" asks of a pod and its containers; the images' user is 1001 by name only.
    assert pod == {"runAsNonRoot": True, "runAsUser": 1001, "runAsGroup": 1001, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
