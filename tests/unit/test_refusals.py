"""install.yml's preflight refuses a wrong inventory, judged without a cluster.

The same checks install.yml runs first (playbooks/tasks/preflight.yml: every role's validate entry point,
then preflight), on inventories/local plus one mistake per case, with the cluster's answer recorded
(tests/unit/data/cluster_answer.json, what preflight's read step publishes from the local control plane)
instead of asked. All cases run in one ansible-playbook: one inventory host per case, each with its
mistake as host variables. Each case asserts its host failed and the message names the variable and
says what to do; a host with no mistake passes every check, so the refusals come from the mistakes.
tests/integration/test_install_refuses_bad_inputs.py keeps a few of them end to end (no namespace, no
Helm release created).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSWER = json.loads((Path(__file__).parent / "data" / "cluster_answer.json").read_text())
# What tests/localenv/services.sh writes, with made-up values: the unit tier needs no local service.
SERVICES_ENV = {
    "LOCALENV_CHDB_HTTP_PORT": "18124", "LOCALENV_S3_ENDPOINT": "http://127.0.0.1:15000",
    "LOCALENV_S3_ACCESS_KEY_ID": "unit-key", "LOCALENV_S3_SECRET_ACCESS_KEY": "unit-secret",
    "LOCALENV_POSTGRES_PASSWORD": "unitpassword1", "LOCALENV_REDIS_PASSWORD": "unitpassword2",
    "LOCALENV_CLICKHOUSE_PASSWORD": "unitpassword3", "LOCALENV_AGE_RECIPIENT": "age1" + "q" * 58,
    "LOCALENV_AGE_IDENTITY_FILE": "/nonexistent", "LOCALENV_BACKUP_SIGNING_KEY": "unit-signing-key-" + "k" * 32,
}
LOCAL_CREDENTIALS = {
    "postgres": {"source": "vault", "secret_name": "langfuse-postgres", "values": {"password": "okpassword1"}},
    "redis": {"source": "vault", "secret_name": "langfuse-redis", "values": {"password": "okpassword2"}},
    "clickhouse": {"source": "vault", "secret_name": "langfuse-clickhouse", "values": {"password": "okpassword3"}},
    "s3": {"source": "vault", "secret_name": "langfuse-s3", "values": {"access-key-id": "a", "secret-access-key": "b"}},
    "backup_s3": {"source": "vault", "secret_name": "langfuse-backup-s3", "values": {"access-key-id": "c", "secret-access-key": "d"}},
    "backup_signing": {"source": "vault", "secret_name": "langfuse-backup-signing", "values": {"key": "s" * 64}},
}
INGRESS = {"enabled": True, "class_name": "nginx", "cluster_issuer": "", "tls_secret_name": "t", "body_size": "1m",
           "timeout_seconds": 60}
BY_INGRESS = {"langfuse_helm_exposure": "ingress"}
GATEWAY = {"create": True, "class_name": "standin", "cluster_issuer": "", "tls_secret_name": "t", "name": "", "namespace": "",
           "section_name": "", "controller": "other", "body_size": "1m", "timeout_seconds": 60, "annotations": {},
           "wait_seconds": 30}
HPA = {"enabled": True, "min_replicas": 1, "max_replicas": 2, "target_cpu_percent": 70}
WEB = {"replicas": 1, "resources": {}, "hpa": HPA}
WORKER = {"replicas": 1, "resources": {}, "autoscaling": "hpa",
          "hpa": {"min_replicas": 1, "max_replicas": 2, "target_cpu_percent": 70},
          "keda": {"min_replicas": 1, "max_replicas": 2, "list_length_target": 10, "queues": ["ingestion-queue"]}}
CH_EXTERNAL = {"host": "127.0.0.1", "http_port": 18124, "native_port": 19000, "secure": False, "cluster_enabled": False}
OBSERVABILITY = {"observability_enabled": True}
DIGEST = "sha256:" + "ab" * 32
# A case runs on inventories/local's line (v4, the default for a new install) unless it pins one.
V3 = {"langfuse_helm_release_line": "v3", "langfuse_helm_chart_version": "1.5.41", "langfuse_helm_app_version": "3.224.1"}
V4 = {"langfuse_helm_release_line": "v4", "langfuse_helm_chart_version": "2.0.0", "langfuse_helm_app_version": "4.4.0",
      "postgres_server_version": "15", "clickhouse_operator_server_version": "26.4"}


def credentials(service, **change):
    creds = json.loads(json.dumps(LOCAL_CREDENTIALS))
    creds[service].update(change)
    return {"namespace_secrets_credentials": creds}


def env_override(name, value="x"):
    return {"langfuse_helm_values": {"langfuse": {"additionalEnv": [{"name": name, "value": value}]}}}


def altinity_configs(section, filename, text):
    """The Altinity operator installed, with one configuration file of its chart's `configs` given as text."""
    return {"clickhouse_operator_mode": "operator",
            "clickhouse_operator_operator_values": {"configs": {section: {filename: text}}}}


USERS_XML = "<clickhouse>\n  <users>\n    <{user}>\n      {auth}\n      <profile>default</profile>\n    </{user}>\n  </users>\n</clickhouse>\n"


# case id: (the mistake, texts the refusal must contain). The kinds of issue #11: "nested" (a typo inside a
# nested option), "override" (through langfuse_helm_values), "shape" (names, ports, durations, cron, bounds),
# and "other" (the refusals install.yml had before).
CASES = {
    # other: versions, URLs, secrets, services, cluster
    "app-version-latest": ({"langfuse_helm_app_version": "latest"}, ["langfuse_helm_app_version", "never `latest`"]),
    "app-version-empty": ({"langfuse_helm_app_version": ""}, ["langfuse_helm_app_version"]),
    "worker-version-latest": ({"langfuse_helm_worker_app_version": "latest"}, ["langfuse_helm_worker_app_version"]),
    "chart-version-latest": ({"langfuse_helm_chart_version": "latest"}, ["langfuse_helm_chart_version"]),
    "release-line-unknown": ({"langfuse_helm_release_line": "v5"}, ["langfuse_helm_release_line"]),
    "v3-line-with-v4-chart": ({**V3, "langfuse_helm_chart_version": "2.0.0"}, ["langfuse_helm_chart_version is 2.0.0", "release_line v3"]),
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
    "v3-with-postgres-11": ({**V3, "postgres_server_version": "11"}, ["PostgreSQL >= 12"]),
    "redis-6": ({"redis_server_version": "6.2"}, ["Redis/valkey >= 7.0", "redis_server_version"]),
    "missing-ingress-class": ({**BY_INGRESS, "langfuse_helm_ingress": {**INGRESS, "class_name": "traefik"}},
                              ["IngressClass \"traefik\"", "langfuse_helm_ingress.class_name"]),
    "cluster-issuer-without-cert-manager": ({**BY_INGRESS, "langfuse_helm_ingress": {**INGRESS, "cluster_issuer": "letsencrypt"}},
                                            ["clusterissuers.cert-manager.io"]),
    # inventories/local exposes the web through Gateway API (class standin)
    "missing-gateway-class": ({"langfuse_helm_gateway": {**GATEWAY, "class_name": "eg"}},
                              ["GatewayClass \"eg\" (langfuse_helm_gateway.class_name) does not exist", "the cluster has: standin"]),
    "gateway-unnamed": ({"langfuse_helm_gateway": {**GATEWAY, "create": False}}, ["langfuse_helm_gateway.name is empty"]),
    "gateway-without-class": ({"langfuse_helm_gateway": {**GATEWAY, "class_name": ""}}, ["langfuse_helm_gateway.class_name is empty"]),
    "gateway-nginx-fabric-without-its-crds": ({"langfuse_helm_gateway": {**GATEWAY, "controller": "nginx_gateway_fabric"}},
                                              ["clientsettingspolicies.gateway.nginx.org"]),
    "gateway-issuer-without-cert-manager": ({"langfuse_helm_gateway": {**GATEWAY, "cluster_issuer": "letsencrypt"}},
                                            ["clusterissuers.cert-manager.io"]),
    "gateway-unknown-controller": ({"langfuse_helm_gateway": {**GATEWAY, "controller": "istio"}},
                                   ["langfuse_helm_gateway", "controller", "envoy_gateway"]),
    "exposure-unknown": ({"langfuse_helm_exposure": "loadbalancer"}, ["langfuse_helm_exposure", "ingress, gateway, none"]),
    "keda-without-keda": ({"langfuse_helm_worker": {**WORKER, "autoscaling": "keda"}}, ["scaledobjects.keda.sh"]),
    "missing-storage-class": ({"preflight_storage_class": "fast-ssd"}, ["StorageClass fast-ssd", "preflight_storage_class"]),
    # nested: a misspelt or unknown key inside a dict option
    "nested-unknown-worker-autoscaling": ({"langfuse_helm_worker": {**WORKER, "autoscaling": "vpa"}},
                                          ["value of autoscaling must be one of: hpa, keda, none, got: vpa found in langfuse_helm_worker"]),
    "nested-ingress-clas-name": ({**BY_INGRESS, "langfuse_helm_ingress": {**INGRESS, "clas_name": "traefik"}},
                                 ["langfuse_helm_ingress", "clas_name", "Supported parameters include"]),
    "nested-web-hpa-max-replica": ({"langfuse_helm_web": {**WEB, "hpa": {**HPA, "max_replica": 9}}},
                                   ["langfuse_helm_web.hpa", "max_replica", "Supported parameters include"]),
    "nested-web-replica": ({"langfuse_helm_web": {**WEB, "replica": 3}}, ["langfuse_helm_web", "replica", "Supported parameters include"]),
    "nested-worker-keda-queue": ({"langfuse_helm_worker": {**WORKER, "keda": {**WORKER["keda"], "queue": ["ingestion-queue"]}}},
                                 ["langfuse_helm_worker.keda", "queue", "Supported parameters include"]),
    "nested-queue-shards-underscore": ({"langfuse_helm_queue_shards": {"ingestion_queue": 4}},
                                       ["langfuse_helm_queue_shards", "ingestion_queue", "Supported parameters include"]),
    "nested-init-org-name-typo": ({"langfuse_helm_init": {"org_id": "local", "org_nam": "Local"}},
                                  ["langfuse_helm_init", "org_nam", "Supported parameters include"]),
    "nested-credentials-secret-nam": (credentials("postgres", secret_nam="pg"),
                                      ["namespace_secrets_credentials", "secret_nam", "Supported parameters include"]),
    "nested-app-secrets-encryptionkey": ({"namespace_secrets_app_secrets": {"encryptionKey": "ab" * 32}},
                                         ["namespace_secrets_app_secrets", "encryptionKey", "Supported parameters include"]),
    "nested-bucket-names-event": ({"s3_buckets_names": {"event": "ev", "media": "m-b", "exports": "e-b"}},
                                  ["s3_buckets_names", "event", "Supported parameters include"]),
    "nested-ingress-enabled-not-bool": ({"langfuse_helm_ingress": {**INGRESS, "enabled": "maybe"}},
                                        ["langfuse_helm_ingress", "enabled", "bool"]),
    "nested-worker-hpa-min-replica": ({"langfuse_helm_worker": {**WORKER, "hpa": {**WORKER["hpa"], "min_replica": 2}}},
                                      ["langfuse_helm_worker.hpa", "min_replica", "Supported parameters include"]),
    "nested-worker-autoscalling": ({"langfuse_helm_worker": {**WORKER, "autoscalling": "keda"}},
                                   ["langfuse_helm_worker", "autoscalling", "Supported parameters include"]),
    "nested-image-repositories-wbe": ({"langfuse_helm_image_repositories": {"wbe": "mirror.example.com/langfuse"}},
                                      ["langfuse_helm_image_repositories", "wbe", "Supported parameters include"]),
    "nested-ingress-timeout-second": ({"langfuse_helm_ingress": {**INGRESS, "timeout_second": 30}},
                                      ["langfuse_helm_ingress", "timeout_second", "Supported parameters include"]),
    "nested-credentials-external-remote-ky": (credentials("postgres", source="external", external={"store": "vault", "remote_ky": "pg"}),
                                              ["namespace_secrets_credentials.postgres.external", "remote_ky", "Supported parameters include"]),
    # nested, the data services' and observability's fixed-shape dicts: the refusal names option.key and what it takes
    "nested-clickhouse-resources-request": ({"clickhouse_operator_resources": {"request": {"cpu": "2"}, "limits": {"memory": "16Gi"}}},
                                            ["clickhouse_operator_resources.request. Supported parameters include: limits, requests."]),
    "nested-keeper-resources-limits-memroy": ({"clickhouse_operator_keeper_resources": {"requests": {"cpu": "250m"}, "limits": {"memroy": "2Gi"}}},
                                              ["clickhouse_operator_keeper_resources.limits.memroy. Supported parameters include: cpu, "
                                               "ephemeral-storage, memory."]),
    "nested-clickhouse-external-hostname": ({"clickhouse_operator_external": {**CH_EXTERNAL, "hostname": "ch.example.com"}},
                                            ["clickhouse_operator_external.hostname. Supported parameters include: cluster_enabled, host, "
                                             "http_port, native_port, secure."]),
    "nested-clickhouse-external-tls": ({"clickhouse_operator_external": {**CH_EXTERNAL, "tls": True}},
                                       ["clickhouse_operator_external.tls. Supported parameters include: cluster_enabled, host,"]),
    "nested-clickhouse-external-port-not-a-number": ({"clickhouse_operator_external": {**CH_EXTERNAL, "http_port": "eighty"}},
                                                     ["argument 'http_port' is of type str found in 'clickhouse_operator_external'",
                                                      "unable to convert to int"]),
    "nested-cnpg-resources-limit": ({"postgres_cnpg_resources": {"requests": {"cpu": "500m"}, "limit": {"memory": "2Gi"}}},
                                    ["postgres_cnpg_resources.limit. Supported parameters include: limits, requests."]),
    "nested-valkey-resources-requests-cpus": ({"redis_valkey_resources": {"requests": {"cpus": "1"}}},
                                              ["redis_valkey_resources.requests.cpus. Supported parameters include: cpu, ephemeral-storage, memory."]),
    "nested-redis-exporter-resources-request": ({**OBSERVABILITY, "observability_redis_exporter_resources": {"request": {"cpu": "10m"}}},
                                                ["observability_redis_exporter_resources.request. Supported parameters include: limits, requests."]),
    "nested-blackbox-exporter-resources-limits-mem": ({**OBSERVABILITY, "observability_blackbox_exporter_resources": {"limits": {"mem": "64Mi"}}},
                                                      ["observability_blackbox_exporter_resources.limits.mem. Supported parameters include: cpu,"]),
    "nested-observability-queue-shards-underscore": ({**OBSERVABILITY, "observability_queue_shards": {"ingestion_queue": 2}},
                                                     ["observability_queue_shards.ingestion_queue. Supported parameters include: ingestion-queue, "
                                                      "otel-ingestion-queue, trace-upsert."]),
    # its keys are CronJob names (yours too), so a spec cannot close them; a misspelt name of backup_cron's own is refused
    "nested-backup-max-age-postgresql": ({**OBSERVABILITY,
                                          "observability_backup_max_age": {"langfuse-backup-postgresql": "26h", "nightly-dump": "2d"}},
                                         ["observability_backup_max_age names langfuse-backup-postgresql: backup_cron creates no CronJob",
                                          "Use the names it creates (langfuse-backup-postgres, langfuse-backup-clickhouse-full,"]),
    # override: mistakes that come through langfuse_helm_values
    "override-web-image-latest": ({"langfuse_helm_values": {"langfuse": {"web": {"image": {"tag": "latest"}}}}},
                                  ["langfuse_helm_values.langfuse.web.image.tag is 'latest'", "pin an image tag"]),
    "override-worker-image-latest": ({"langfuse_helm_values": {"langfuse": {"worker": {"image": {"tag": "latest"}}}}},
                                     ["langfuse_helm_values.langfuse.worker.image.tag is 'latest'", "pin an image tag"]),
    "override-database-url": (env_override("DATABASE_URL", "postgresql://postgres@127.0.0.1:15432/langfuse"),
                              ["langfuse_helm_values.langfuse.additionalEnv[0] sets DATABASE_URL", "drops its own connection env"]),
    "override-redis-connection-string": (env_override("REDIS_CONNECTION_STRING", "redis://127.0.0.1:16379"),
                                         ["additionalEnv[0] sets REDIS_CONNECTION_STRING", "drops its own connection env"]),
    "override-clickhouse-migration-url": (env_override("CLICKHOUSE_MIGRATION_URL", "clickhouse://127.0.0.1:19000"),
                                          ["additionalEnv[0] sets CLICKHOUSE_MIGRATION_URL", "drops its own connection env"]),
    "override-clickhouse-shards": ({**V3, "langfuse_helm_values": {"clickhouse": {"shards": 2}}},
                                   ["langfuse_helm_values.clickhouse.shards is 2", "Distributed"]),
    "override-clickhouse-cluster-enabled": ({**V3, "langfuse_helm_values": {"clickhouse": {"clusterEnabled": True}}},
                                            ["clickhouse.clusterEnabled is True but the ClickHouse connection is a single node"]),
    "override-postgresql-deploy": ({"langfuse_helm_values": {"postgresql": {"deploy": True}}},
                                   ["langfuse_helm_values.postgresql.deploy is true", "bundled"]),
    "override-redis-deploy": ({"langfuse_helm_values": {"redis": {"deploy": True}}}, ["langfuse_helm_values.redis.deploy is true"]),
    "override-clickhouse-deploy": ({"langfuse_helm_values": {"clickhouse": {"deploy": True}}},
                                   ["langfuse_helm_values.clickhouse.deploy is true"]),
    "override-s3-deploy": ({"langfuse_helm_values": {"s3": {"deploy": True}}}, ["langfuse_helm_values.s3.deploy is true"]),
    "override-salt-literal": ({"langfuse_helm_values": {"langfuse": {"salt": {"value": "plain"}}}},
                              ["langfuse.salt.value", "secretKeyRef"]),
    "override-encryption-key-literal": ({"langfuse_helm_values": {"langfuse": {"encryptionKey": {"value": "0" * 64}}}},
                                        ["langfuse_helm_values.langfuse.encryptionKey.value holds a secret", "secretKeyRef"]),
    "override-nextauth-secret-literal": ({"langfuse_helm_values": {"langfuse": {"nextauth": {"secret": {"value": "s"}}}}},
                                         ["langfuse.nextauth.secret.value holds a secret", "secretKeyRef"]),
    "override-postgres-password-literal": ({"langfuse_helm_values": {"postgresql": {"auth": {"password": "p"}}}},
                                           ["langfuse_helm_values.postgresql.auth", "existingSecret"]),
    "override-env-secret-literal": (env_override("SALT", "plain"), ["additionalEnv[0] sets SALT as a literal value", "secretKeyRef"]),
    "override-v4-key-on-v3": ({**V3, "langfuse_helm_values": {"clickhouse": {"cluster": {"enabled": False}}}},
                              ["langfuse_helm_values.clickhouse.cluster is not read by chart", "clickhouse.clusterEnabled"]),
    "override-web-image-empty-tag": ({"langfuse_helm_values": {"langfuse": {"web": {"image": {"tag": ""}}}}},
                                     ["langfuse_helm_values.langfuse.web.image.tag is ''", "pin an image tag"]),
    "override-extra-manifest-image-latest": ({"langfuse_helm_values": {"extraManifests": [{
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sidecar"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:latest"}]}}}}]}},
        ["langfuse_helm_values.extraManifests[0].spec.template.spec.containers[0].image is 'busybox:latest'", "pin the image"]),
    "override-redis-password-literal": ({"langfuse_helm_values": {"redis": {"auth": {"password": "p"}}}},
                                        ["langfuse_helm_values.redis.auth.password holds a password in clear text", "existingSecret"]),
    "override-clickhouse-password-literal": ({"langfuse_helm_values": {"clickhouse": {"auth": {"password": "p"}}}},
                                             ["langfuse_helm_values.clickhouse.auth.password holds a password", "existingSecret"]),
    # override, the final values of the operator charts (role values + the override): pinned images, no literal secret
    "override-altinity-operator-image-latest": ({"clickhouse_operator_mode": "operator",
                                                 "clickhouse_operator_operator_values": {"operator": {"image": {"tag": "latest"}}}},
                                                ["clickhouse_operator_operator_values.operator.image.tag is 'latest'",
                                                 "pin an image tag (e.g. 0.25.6, the chart version", "Fix clickhouse_operator_operator_values"]),
    "override-altinity-secret-password": ({"clickhouse_operator_mode": "operator",
                                           "clickhouse_operator_operator_values": {"secret": {"password": "op-pass-1"}}},
                                          ["clickhouse_operator_operator_values.secret.password holds a literal secret",
                                           "put it in a Kubernetes Secret and give the chart its name"]),
    "override-altinity-crd-hook-unpinned": ({"clickhouse_operator_mode": "operator",
                                             "clickhouse_operator_operator_values": {"crdHook": {"enabled": True}}},
                                            ["clickhouse_operator_operator_values.crdHook.enabled is true without crdHook.image.tag",
                                             "bitnami/kubectl:latest", "leave crdHook.enabled false"]),
    "override-official-manager-image-latest": ({"clickhouse_operator_mode": "official",
                                                "clickhouse_operator_official_values": {"manager": {"image": {"tag": "latest"}}}},
                                               ["clickhouse_operator_official_values.manager.image.tag is 'latest'",
                                                "pin an image tag (e.g. v0.0.5", "Fix clickhouse_operator_official_values"]),
    "override-official-env-token-literal": ({"clickhouse_operator_mode": "official",
                                             "clickhouse_operator_official_values": {"manager": {"env": [{"name": "API_TOKEN", "value": "tok-1"}]}}},
                                            ["clickhouse_operator_official_values.manager.env[0] sets API_TOKEN as a literal value",
                                             "valueFrom.secretKeyRef"]),
    # override, ClickHouse configuration given as XML or YAML text in the Altinity chart's configs: the password inside
    "override-altinity-usersd-xml-literal-password": (
        altinity_configs("usersdFiles", "users.xml", USERS_XML.format(user="analyst", auth="<password>an-pass-1</password>")),
        ['clickhouse_operator_operator_values.configs.usersdFiles["users.xml"] holds a literal password in its XML text '
         "(clickhouse/users/analyst/password)", '<password from_env="VAR"/>', "<password_sha256_hex>",
         "Fix clickhouse_operator_operator_values"]),
    "override-altinity-files-yaml-literal-password": (
        altinity_configs("files", "users.yaml", "users:\n  analyst:\n    password: an-pass-2\n    profile: default\n"),
        ['clickhouse_operator_operator_values.configs.files["users.yaml"] holds a literal password in its YAML text '
         "(users.analyst.password)", 'password: {"@from_env": VAR}', "password_sha256_hex"]),
    "override-altinity-configd-xml-literal-s3-key": (
        altinity_configs("configdFiles", "s3.xml", "<clickhouse><storage_configuration><disks><s3><type>s3</type>"
                         "<secret_access_key>s3-key-1</secret_access_key></s3></disks></storage_configuration></clickhouse>"),
        ['clickhouse_operator_operator_values.configs.configdFiles["s3.xml"] holds a literal secret in its XML text',
         '<secret_access_key from_env="VAR"/>']),
    "override-altinity-usersd-xml-empty-password": (
        altinity_configs("usersdFiles", "users.xml", USERS_XML.format(user="default", auth="<password></password>")),
        ['clickhouse_operator_operator_values.configs.usersdFiles["users.xml"] leaves the password empty for ClickHouse user default',
         "anyone who reaches ClickHouse logs in as default without a password", '<password from_env="VAR"/>',
         "<password_sha256_hex>"]),
    "override-altinity-usersd-xml-no-password": (
        altinity_configs("usersdFiles", "users.xml", USERS_XML.format(user="reader", auth="<no_password/>")),
        ['configs.usersdFiles["users.xml"] sets no_password for ClickHouse user reader', "Give the user a password"]),
    "override-altinity-chi-user-literal-password": ({"clickhouse_operator_mode": "operator", "clickhouse_operator_operator_values": {
        "additionalResources": ["apiVersion: clickhouse.altinity.com/v1\nkind: ClickHouseInstallation\nmetadata: {name: extra}\n"
                                "spec:\n  configuration:\n    users:\n      analyst/password: an-pass-3\n"]}},
        ["clickhouse_operator_operator_values.additionalResources[0] holds a literal password in its YAML text "
         '(spec.configuration.users["analyst/password"])', "analyst/k8s_secret_password", "analyst/password_sha256_hex"]),
    "override-cnpg-image-latest": ({"postgres_mode": "cloudnativepg", "postgres_cnpg_operator_values": {"image": {"tag": "latest"}}},
                                   ["postgres_cnpg_operator_values.image.tag is 'latest'", "pin an image tag",
                                    "Fix postgres_cnpg_operator_values"]),
    "override-cnpg-config-secret-key-literal": ({"postgres_mode": "cloudnativepg",
                                                 "postgres_cnpg_operator_values": {"config": {"data": {"AWS_SECRET_ACCESS_KEY": "k-1"}}}},
                                                ["postgres_cnpg_operator_values.config.data.AWS_SECRET_ACCESS_KEY holds a literal secret",
                                                 "put it in a Kubernetes Secret"]),
    # shape: names, ports, durations, cron, replicas, bounds, PDB
    "release-name-trailing-hyphen": ({"langfuse_helm_release_name": "langfuse-"}, ["langfuse_helm_release_name is 'langfuse-'"]),
    "namespace-leading-hyphen": ({"langfuse_namespace": "-langfuse"}, ["(langfuse_namespace) is '-langfuse'"]),
    "postgres-port-name": ({"postgres_port": "postgres"}, ["argument 'postgres_port' is of type str", "cannot be converted to an int"]),
    "worker-keda-min-zero": ({"langfuse_helm_worker": {**WORKER, "keda": {**WORKER["keda"], "min_replicas": 0}}},
                             ["langfuse_helm_worker.keda.min_replicas is 0", "1 or more"]),
    # Issue 20: an exporter older than v1.83.0 ignores REDIS_EXPORTER_DISABLE_SCRAPE_ENDPOINT.
    "redis-exporter-without-the-scrape-switch": ({**OBSERVABILITY, "observability_redis_exporter_image": "oliver006/redis_exporter:v1.82.0"},
                                                 ["observability_redis_exporter_image", "v1.83.0 or later",
                                                  "REDIS_EXPORTER_DISABLE_SCRAPE_ENDPOINT"]),
    "redis-exporter-tag-without-a-version": ({**OBSERVABILITY, "observability_redis_exporter_image": "oliver006/redis_exporter:alpine"},
                                             ["observability_redis_exporter_image", "tagged with its version"]),
    # Issue 20: the salt and the encryption key are data; a backup without them restores data nobody can read.
    "app-secrets-backed-up-nowhere": ({"backup_cron_app_secrets_recipient": ""},
                                      ["backup_cron_app_secrets_recipient is empty", "age-keygen",
                                       "backup_cron_app_secrets_without_backup: true", "Nothing was changed"]),
    "backup-cron-step-zero": ({"backup_cron_postgres_schedule": "*/0 * * * *"}, ["backup_cron_postgres_schedule", "bad step"]),
    "namespace-upper-case": ({"langfuse_namespace": "Langfuse-Prod"}, ["namespace_secrets_namespace (langfuse_namespace) is 'Langfuse-Prod'"]),
    "namespace-underscore": ({"langfuse_namespace": "langfuse_prod"}, ["(langfuse_namespace) is 'langfuse_prod'", "lower-case"]),
    "namespace-too-long": ({"langfuse_namespace": "l" * 64}, ["(langfuse_namespace)", "at most 63"]),
    "release-name-upper-case": ({"langfuse_helm_release_name": "Langfuse"}, ["langfuse_helm_release_name is 'Langfuse'", "lower-case"]),
    "release-name-too-long": ({"langfuse_helm_release_name": "l" * 54}, ["langfuse_helm_release_name", "at most 53 characters"]),
    "postgres-port-out-of-range": ({"postgres_port": 70000}, ["postgres_port is 70000", "1 to 65535"]),
    "postgres-port-zero": ({"postgres_port": 0}, ["postgres_port is 0", "1 to 65535"]),
    "redis-port-out-of-range": ({"redis_port": 65536}, ["redis_port is 65536", "1 to 65535"]),
    "timeout-without-unit": ({"langfuse_helm_timeout": "15"}, ["langfuse_helm_timeout is '15'", "Go duration"]),
    "timeout-in-words": ({"langfuse_helm_timeout": "10 minutes"}, ["langfuse_helm_timeout is '10 minutes'", "Go duration"]),
    "migrations-timeout-zero": ({"langfuse_helm_migrations_timeout": 0}, ["langfuse_helm_migrations_timeout is 0", "1 or more"]),
    "backup-cron-hour-24": ({"backup_cron_postgres_schedule": "0 24 * * *"},
                            ["backup_cron_postgres_schedule", "the hour field '24' is outside 0-23"]),
    "backup-cron-four-fields": ({"backup_cron_postgres_schedule": "0 3 * *"}, ["backup_cron_postgres_schedule", "has 4 fields, not 5"]),
    "backup-cron-minute-60": ({"backup_cron_clickhouse_full_schedule": "60 2 * * 0"},
                              ["backup_cron_clickhouse_full_schedule", "the minute field '60' is outside 0-59"]),
    "backup-cron-day-names": ({"backup_cron_clickhouse_incremental_schedule": "0 3 * * MON"},
                              ["backup_cron_clickhouse_incremental_schedule", "is not a number"]),
    "web-replicas-zero": ({"langfuse_helm_web": {**WEB, "replicas": 0}}, ["langfuse_helm_web.replicas is 0", "1 or more"]),
    "worker-replicas-zero": ({"langfuse_helm_worker": {**WORKER, "replicas": 0}}, ["langfuse_helm_worker.replicas is 0", "1 or more"]),
    "web-hpa-min-above-max": ({"langfuse_helm_web": {**WEB, "hpa": {**HPA, "min_replicas": 8, "max_replicas": 4}}},
                              ["langfuse_helm_web.hpa: the minimum 8 is above the maximum 4"]),
    "worker-hpa-min-above-max": ({"langfuse_helm_worker": {**WORKER, "hpa": {**WORKER["hpa"], "min_replicas": 5, "max_replicas": 2}}},
                                 ["langfuse_helm_worker.hpa: the minimum 5 is above the maximum 2"]),
    "worker-keda-min-above-max": ({"langfuse_helm_worker": {**WORKER, "keda": {**WORKER["keda"], "min_replicas": 9, "max_replicas": 3}}},
                                  ["langfuse_helm_worker.keda: the minimum 9 is above the maximum 3"]),
    "web-hpa-min-zero": ({"langfuse_helm_web": {**WEB, "hpa": {**HPA, "min_replicas": 0}}},
                         ["langfuse_helm_web.hpa.min_replicas is 0", "1 or more"]),
    "web-request-no-node-holds": ({"langfuse_helm_web": {**WEB, "resources": {"requests": {"cpu": "64", "memory": "2Gi"}}}},
                                  ["langfuse_helm_web.resources.requests asks for cpu 64, memory 2Gi", "no node of the cluster can hold",
                                   "Lower the request or add larger nodes"]),
    "worker-request-memory-no-node-holds": ({"langfuse_helm_worker": {**WORKER, "resources": {"requests": {"memory": "256Gi"}}}},
                                            ["langfuse_helm_worker.resources.requests asks for memory 256Gi", "Lower the request"]),
    "worker-request-not-a-quantity": ({"langfuse_helm_worker": {**WORKER, "resources": {"requests": {"cpu": "two"}}}},
                                      ["langfuse_helm_worker.resources.requests.cpu is 'two'", "a Kubernetes quantity"]),
    "pdb-max-unavailable-zero": ({"langfuse_helm_pdb_max_unavailable": 0},
                                 ["langfuse_helm_pdb_max_unavailable is 0", "never lets a web or worker pod be evicted", "Use 1"]),
    "argo-rollout-without-its-crds": ({"langfuse_helm_web_workload": "argo_rollout"},
                                      ["These CRDs are missing: rollouts.argoproj.io", "Argo Rollouts for langfuse_helm_web_workload argo_rollout"]),
    # Issue 20: the operators' ClickHouse and Keeper pods get no restricted contexts; the API server would refuse them.
    "restricted-namespace-with-the-clickhouse-operator": ({"namespace_secrets_pod_security_level": "restricted",
                                                           "clickhouse_operator_mode": "operator"},
                                                          ["namespace_secrets_pod_security_level is restricted",
                                                           "ClickHouse and Keeper pods", "Set namespace_secrets_pod_security_level: baseline"]),
    # Issue 20: images may be pinned by digest, after a version tag; a digest alone, a broken one or latest are refused.
    "valkey-image-digest-without-tag": ({"redis_mode": "valkey", "redis_valkey_image": "valkey/valkey@" + DIGEST},
                                        ["redis_valkey_image pinned", "no version tag", "name:tag@sha256"]),
    "valkey-image-latest-with-digest": ({"redis_mode": "valkey", "redis_valkey_image": "valkey/valkey:latest@" + DIGEST},
                                        ["redis_valkey_image pinned", "the tag latest moves"]),
    "backup-image-short-digest": ({"backup_cron_aws_cli_image": "docker.io/amazon/aws-cli:2.15.61@sha256:abc"},
                                  ["backup_cron_aws_cli_image is", "not an image reference", "name:tag@sha256:..."]),
    "exporter-image-digest-only": ({**OBSERVABILITY, "observability_blackbox_exporter_image": "prom/blackbox-exporter@" + DIGEST},
                                   ["observability_blackbox_exporter_image must be pinned to a version tag"]),
    # Issue 20: the backups are written with keys of their own, not the ones web and the worker hold.
    "backup-with-langfuse-s3-key": ({"backup_cron_s3_secret_name": "langfuse-s3"},
                                    ["backup_cron_s3_secret_name is \"langfuse-s3\", the S3 Secret of Langfuse itself",
                                     "could delete or rewrite every backup", "namespace_secrets_credentials.backup_s3",
                                     "backup_cron_s3_shared_with_langfuse: true"]),
    "backup-without-its-own-key": ({"namespace_secrets_credentials": {k: v for k, v in LOCAL_CREDENTIALS.items() if k != "backup_s3"}},
                                   ["backup_cron_s3_secret_name is \"langfuse-backup-s3\", which no namespace_secrets_credentials entry",
                                    "(backup_s3 writes \"none\")"]),
    # Issue 20: backups nobody can forge: signed with a key of their own, long enough not to be guessed.
    "backup-without-signing-key": ({"namespace_secrets_credentials": {k: v for k, v in LOCAL_CREDENTIALS.items() if k != "backup_signing"}},
                                   ["No key to sign the backups with: namespace_secrets_credentials has no backup_signing entry",
                                    "plant a manifest, a dump or an app-secrets file", "openssl rand -hex 32"]),
    "backup-signing-key-short": (credentials("backup_signing", values={"key": "short"}),
                                 ["namespace_secrets_credentials.backup_signing.values.key is shorter than 32 characters"]),
    "backup-signing-secret-elsewhere": ({"backup_cron_signing_secret_name": "my-key"},
                                        ["backup_cron_signing_secret_name is \"my-key\", which no namespace_secrets_credentials entry writes",
                                         "(backup_signing writes \"langfuse-backup-signing\")"]),
    # Issue 20: who may reach web is named, never guessed; every peer is a NetworkPolicy peer; CIDRs are CIDRs.
    "network-web-from-unknown-controller": ({"network_policy_web_from": []},
                                            ["network_policy_web_from is empty", "Gateway controller other",
                                             "kubernetes.io/metadata.name: <the controller's namespace>",
                                             "network_policy_enabled: false"]),
    "network-web-from-unknown-ingress-class": ({**BY_INGRESS, "langfuse_helm_ingress": {**INGRESS, "class_name": "haproxy"},
                                                "network_policy_web_from": []},
                                               ["network_policy_web_from is empty", "ingress class haproxy"]),
    "network-peer-not-a-peer": ({"network_policy_prometheus_from": [{"namespace": "monitoring"}]},
                                ["every peer of prometheus_from must be a NetworkPolicy peer", "'namespace': 'monitoring'"]),
    "network-cidr-not-a-cidr": ({"network_policy_service_cidrs": {"postgres": ["10.0.0.0/33"]}},
                                ["'10.0.0.0/33' is not a CIDR"]),
    "argo-rollout-misspelt": ({"langfuse_helm_web_workload": "argo"},
                              ["value of langfuse_helm_web_workload must be one of: deployment, argo_rollout, got: argo"]),
}


# host: what must pass every check, beside the clean inventory: what the refusals tell you to do instead.
PASSES = {
    # Every image pinned by a digest after its version tag, and from a registry with a port.
    "pass-images-by-digest": {
        "redis_mode": "valkey", "redis_valkey_image": "registry.internal:5000/valkey/valkey:8.1.11@" + DIGEST,
        "backup_cron_postgres_image": "docker.io/library/postgres:17.6-bookworm@" + DIGEST,
        "backup_cron_aws_cli_image": "registry.internal:5000/amazon/aws-cli:2.15.61@" + DIGEST,
        # The recorded cluster has no Prometheus Operator CRDs, so observability is left out here; its digest refusal
        # above and tests/unit/test_observability_render.py's images take the same filter.
    },
    "pass-clickhouse-images-by-digest": {
        "clickhouse_operator_mode": "operator", "namespace_secrets_pod_security_level": "baseline",
        "clickhouse_operator_image": "clickhouse/clickhouse-server:26.4@" + DIGEST,
        "clickhouse_operator_keeper_image": "clickhouse/clickhouse-keeper:26.4@" + DIGEST},
    # One key for Langfuse and its backups, accepted by name.
    "pass-backup-shares-langfuse-s3-key": {
        "namespace_secrets_credentials": {k: v for k, v in LOCAL_CREDENTIALS.items() if k != "backup_s3"},
        "backup_cron_s3_shared_with_langfuse": True},
    # The controllers whose proxies' namespace the role knows; or no policies at all.
    "pass-network-envoy-gateway": {"langfuse_helm_gateway": {**GATEWAY, "controller": "envoy_gateway"}, "network_policy_web_from": []},
    "pass-network-ingress-nginx": {**BY_INGRESS, "langfuse_helm_ingress": INGRESS, "network_policy_web_from": []},
    "pass-network-off": {"network_policy_enabled": False, "network_policy_web_from": []},
    "pass-app-secrets-without-backup-accepted": {"backup_cron_app_secrets_recipient": "",
                                                 "backup_cron_app_secrets_without_backup": True},
    "pass-altinity-configs-password-references-and-hashes": {
        "clickhouse_operator_mode": "operator", "namespace_secrets_pod_security_level": "baseline",
        "clickhouse_operator_operator_values": {"configs": {
            "usersdFiles": {
                "users.xml": USERS_XML.format(user="analyst", auth='<password from_env="CLICKHOUSE_ANALYST_PASSWORD"/>'),
                "hashed.xml": USERS_XML.format(user="reader", auth="<password_sha256_hex>5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
                                               "</password_sha256_hex>"),
                "sha1.xml": USERS_XML.format(user="bi", auth="<password_double_sha1_hex>" + "a" * 40 + "</password_double_sha1_hex>")},
            "files": {"users.yaml": "users:\n  writer:\n    password:\n      '@from_env': CLICKHOUSE_WRITER_PASSWORD\n"
                                    "  auditor:\n    password_sha256_hex: " + "0" * 64 + "\n"},
            "configdFiles": {"s3.xml": '<clickhouse><storage_configuration><disks><s3><secret_access_key from_env="S3_KEY"/>'
                                       "</s3></disks></storage_configuration></clickhouse>"}}},
    },
}


def run_cases(tmp_path, cases, passes=None):
    """One ansible-playbook over every case (and every host that must pass): {host: (failed, the failure messages)}."""
    services = tmp_path / "services.env"
    services.write_text("".join(f"{k}={v}\n" for k, v in SERVICES_ENV.items()))
    hosts = {"clean": {}, **(passes or {}), **{name: case[0] for name, case in cases.items()}}
    inventory = {"langfuse": {"hosts": {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                               "localenv_services_file": str(services), **mistake}
                                        for name, mistake in hosts.items()}}}
    (tmp_path / "cases.yml").write_text(yaml.safe_dump(inventory))
    # install.yml's preflight, with preflight's cluster read replaced by the recorded answer.
    tasks = yaml.safe_load((REPO / "playbooks" / "tasks" / "preflight.yml").read_text())
    assert tasks[-1]["ansible.builtin.import_role"] == {"name": "langfuse_ops.platform.preflight"}, tasks[-1]
    tasks[-1] = {"name": "Judge against the recorded cluster answer",
                 "ansible.builtin.import_role": {"name": "langfuse_ops.platform.preflight", "tasks_from": "judge"}}
    play = [{"name": "Preflight", "hosts": "langfuse:!localhost", "gather_facts": False,
             "pre_tasks": [{"name": "Recorded cluster answer", "ansible.builtin.set_fact": {"preflight_cluster": ANSWER}}],
             "tasks": tasks}]
    (tmp_path / "preflight.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    environ = {**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_FORKS": "4",
               "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run(["ansible-playbook", "-i", "inventories/local", "-i", str(tmp_path / "cases.yml"),
                           str(tmp_path / "preflight.yml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=REPO, timeout=900, check=False, env=environ)
    (tmp_path / "output.txt").write_text(proc.stdout)
    return parse(proc.stdout, hosts), proc


def parse(output, hosts):
    """{host: (failed, messages)}. Ansible prints a failure's message as `[ERROR]: Task failed: ...` (also when
    no_log censors the result) just before its `fatal: [host]` / `failed: [host]` line, but only once per text:
    a second host failing a task with the very same message gets none, and takes the one its task printed."""
    messages = {name: [] for name in hosts}
    pending, collecting, printed = [], False, []
    for line in output.splitlines():
        failure = re.match(r"^(?:fatal|failed): \[([^\]]+)\].*?=> (\{.*\})?$", line)
        if line.startswith("TASK ["):
            printed = []
        elif line.startswith("[ERROR]: "):
            pending.append(line[len("[ERROR]: "):])
            collecting = True
        elif collecting and (line.startswith("Origin:") or not line.strip()):
            collecting = False
        elif collecting:
            pending[-1] += " " + line
        elif failure:
            texts = [" ".join(m.split()) for m in pending]
            if not texts and len(set(printed)) == 1:
                texts = printed[:1]
            if failure.group(2) and "msg" in json.loads(failure.group(2)):
                texts.append(" ".join(str(json.loads(failure.group(2))["msg"]).split()))
            messages[failure.group(1)].extend(texts)
            printed.extend(" ".join(m.split()) for m in pending)
            pending = []
    recap = dict(re.findall(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)", output, flags=re.M))
    assert set(recap) == set(hosts), output[-3000:]
    return {name: (recap[name] != "0", messages[name]) for name in hosts}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return run_cases(tmp_path_factory.mktemp("refusals"), CASES, PASSES)


def test_the_clean_inventory_passes_every_check(outcomes):
    results, proc = outcomes
    assert results["clean"] == (False, []), proc.stdout[-3000:]


@pytest.mark.parametrize("host", sorted(PASSES))
def test_what_the_refusals_ask_for_passes(outcomes, host):
    failed, messages = outcomes[0][host]
    assert not failed and not messages, " ".join(messages)[:2000]


def test_there_are_sixty_cases_or_more():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", sorted(CASES))
def test_preflight_refuses(outcomes, case):
    results = outcomes[0]
    failed, messages = results[case]
    text = " ".join(messages)
    assert failed and messages, f"{case} was not refused"
    for expected in CASES[case][1]:
        assert expected in text, f"{expected!r} not in: {text[:2000]}"
