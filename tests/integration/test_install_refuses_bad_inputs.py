"""install.yml refuses a wrong inventory in preflight, before any object exists.

Each case runs the real playbook with inventories/local plus one mistake
(as extra vars, into a namespace of its own) against the local cluster, and
asserts: the run fails, the message names the variable (or the missing
thing) and says what to do, and neither the namespace nor a Helm release
was created.
"""
import json
import uuid

import pytest

from conftest import REPO, kubectl, run

LOCAL_CREDENTIALS = {
    "postgres": {"source": "vault", "secret_name": "langfuse-postgres", "values": {"password": "okpassword1"}},
    "redis": {"source": "vault", "secret_name": "langfuse-redis", "values": {"password": "okpassword2"}},
    "clickhouse": {"source": "vault", "secret_name": "langfuse-clickhouse", "values": {"password": "okpassword3"}},
    "s3": {"source": "vault", "secret_name": "langfuse-s3", "values": {"access-key-id": "a", "secret-access-key": "b"}},
}
INGRESS = {"enabled": True, "class_name": "nginx", "cluster_issuer": "", "tls_secret_name": "t", "body_size": "1m",
           "timeout_seconds": 60}
WORKER = {"replicas": 1, "resources": {}, "autoscaling": "hpa",
          "hpa": {"min_replicas": 1, "max_replicas": 2, "target_cpu_percent": 70},
          "keda": {"min_replicas": 1, "max_replicas": 2, "list_length_target": 10, "queues": ["ingestion-queue"]}}
V4 = {"langfuse_helm_release_line": "v4", "langfuse_helm_chart_version": "2.0.0", "langfuse_helm_app_version": "4.4.0",
      "postgres_server_version": "15", "clickhouse_operator_server_version": "26.4"}


def credentials(service, **change):
    creds = json.loads(json.dumps(LOCAL_CREDENTIALS))
    creds[service].update(change)
    return {"namespace_secrets_credentials": creds}


CASES = {
    "app-version-latest": ({"langfuse_helm_app_version": "latest"}, ["langfuse_helm_app_version", "never `latest`"]),
    "app-version-empty": ({"langfuse_helm_app_version": ""}, ["langfuse_helm_app_version"]),
    "worker-version-latest": ({"langfuse_helm_worker_app_version": "latest"}, ["langfuse_helm_worker_app_version"]),
    "chart-version-latest": ({"langfuse_helm_chart_version": "latest"}, ["langfuse_helm_chart_version"]),
    "release-line-unknown": ({"langfuse_helm_release_line": "v5"}, ["langfuse_helm_release_line"]),
    "v3-line-with-v4-chart": ({"langfuse_helm_chart_version": "2.0.0"}, ["langfuse_helm_chart_version is 2.0.0", "release_line v3"]),
    "two-shards": ({"clickhouse_operator_shards": 2}, ["clickhouse_operator_shards", "Distributed", "clickhouse_operator_shards: 1"]),
    "cluster-named-prod": ({"clickhouse_operator_cluster_name": "prod"}, ["clickhouse_operator_cluster_name", "ON CLUSTER default"]),
    "nextauth-url-http": ({"langfuse_helm_public_url": "http://langfuse.local.test"}, ["langfuse_helm_public_url", "https"]),
    "nextauth-url-with-path": ({"langfuse_helm_public_url": "https://example.com/langfuse"}, ["langfuse_helm_public_url"]),
    "encryption-key-32-chars": ({"namespace_secrets_app_secrets": {"encryption_key": "ab" * 16}},
                                ["namespace_secrets_app_secrets", "64 hex", "openssl rand -hex 32"]),
    "encryption-key-not-hex": ({"namespace_secrets_app_secrets": {"encryption_key": "z" * 64}}, ["encryption_key", "64 hex"]),
    "salt-too-short": ({"namespace_secrets_app_secrets": {"salt": "short"}}, ["salt", "at least 16"]),
    "at-in-postgres-password": (credentials("postgres", values={"password": "p@ss"}),
                                ["namespace_secrets_credentials.postgres.values.password", "URL-safe"]),
    "colon-in-clickhouse-password": (credentials("clickhouse", values={"password": "a:b"}),
                                     ["namespace_secrets_credentials.clickhouse.values.password"]),
    "slash-in-redis-password": (credentials("redis", values={"password": "a/b"}), ["namespace_secrets_credentials.redis.values.password"]),
    "vault-source-without-values": (credentials("s3", values={"access-key-id": "a"}),
                                    ["namespace_secrets_credentials.s3", "secret-access-key"]),
    "external-source-without-store": (credentials("postgres", source="external"), ["namespace_secrets_credentials.postgres", "external.store"]),
    "unknown-credentials-source": (credentials("redis", source="plaintext"), ["namespace_secrets_credentials.redis", "vault|existing|external"]),
    "minio-without-path-style": ({"s3_buckets_provider": "minio", "s3_buckets_force_path_style": False},
                                 ["s3_buckets_force_path_style: true", "MinIO"]),
    "bad-bucket-name": ({"s3_buckets_names": {"events": "Langfuse_Events", "media": "m-b", "exports": "e-b"}}, ["s3_buckets_names"]),
    "redis-allkeys-lru": ({"redis_maxmemory_policy": "allkeys-lru"}, ["redis_maxmemory_policy", "noeviction"]),
    "redis-sentinel-without-nodes": ({"redis_topology": "sentinel"}, ["redis_topology", "redis_nodes"]),
    "postgres-host-with-port": ({"postgres_host": "db.example.com:5432"}, ["postgres_host", "postgres_port"]),
    "postgres-sslmode-unknown": ({"postgres_sslmode": "prefer"}, ["postgres_sslmode"]),
    "v4-with-clickhouse-24-8": ({**V4, "clickhouse_operator_server_version": "24.8"},
                                ["ClickHouse >= 25.12", "clickhouse_operator_server_version"]),
    "v4-with-postgres-14": ({**V4, "postgres_server_version": "14"}, ["PostgreSQL >= 15", "postgres_server_version"]),
    "v3-with-postgres-11": ({"postgres_server_version": "11"}, ["PostgreSQL >= 12"]),
    "redis-6": ({"redis_server_version": "6.2"}, ["Redis/valkey >= 7.0", "redis_server_version"]),
    "missing-ingress-class": ({"langfuse_helm_ingress": {**INGRESS, "class_name": "traefik"}},
                              ["IngressClass \"traefik\"", "langfuse_helm_ingress.class_name"]),
    "cluster-issuer-without-cert-manager": ({"langfuse_helm_ingress": {**INGRESS, "cluster_issuer": "letsencrypt"}},
                                            ["clusterissuers.cert-manager.io"]),
    "keda-without-keda": ({"langfuse_helm_worker": {**WORKER, "autoscaling": "keda"}}, ["scaledobjects.keda.sh"]),
    "unknown-worker-autoscaling": ({"langfuse_helm_worker": {**WORKER, "autoscaling": "vpa"}},
                                   ["value of autoscaling must be one of: hpa, keda, none, got: vpa found in langfuse_helm_worker"]),
    "missing-storage-class": ({"preflight_storage_class": "fast-ssd"}, ["StorageClass fast-ssd", "preflight_storage_class"]),
    "namespace-upper-case": ({"langfuse_namespace": "Langfuse-Prod"}, ["namespace_secrets_namespace (langfuse_namespace) is 'Langfuse-Prod'"]),
    "postgres-port-out-of-range": ({"postgres_port": 70000}, ["postgres_port is 70000", "1 to 65535"]),
    "backup-cron-hour-24": ({"backup_cron_postgres_schedule": "0 24 * * *"},
                            ["backup_cron_postgres_schedule", "the hour field '24' is outside 0-23"]),
    "timeout-without-unit": ({"langfuse_helm_timeout": "15"}, ["langfuse_helm_timeout is '15'", "Go duration"]),
    "database-url-in-additional-env": ({"langfuse_helm_values": {"langfuse": {"additionalEnv": [
        {"name": "DATABASE_URL", "value": "postgresql://postgres@127.0.0.1:15432/langfuse"}]}}},
        ["langfuse_helm_values.langfuse.additionalEnv[0] sets DATABASE_URL"]),
    "salt-literal-in-values": ({"langfuse_helm_values": {"langfuse": {"salt": {"value": "plain"}}}}, ["langfuse.salt.value", "secretKeyRef"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_install_refuses_before_changing_anything(cluster, services, case):
    overrides, expected = CASES[case]
    namespace = f"bad-{uuid.uuid4().hex[:8]}"
    extra = {"langfuse_namespace": namespace, **overrides}
    namespace = extra["langfuse_namespace"]
    proc = run("ansible-playbook", "-i", "inventories/local", "playbooks/install.yml", "-e", json.dumps(extra),
               check=False, cwd=REPO, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    for text in expected:
        assert text in " ".join(output.split()), f"{text!r} not in the output:\n{output[-3000:]}"
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0, "the namespace was created"
    assert run("helm", "list", "-n", namespace, "-q", check=False).stdout.strip() == ""
