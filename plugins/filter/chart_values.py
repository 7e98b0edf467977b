# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chart values of one Langfuse release line that the other line's chart does not read."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

# From a diff of the official values.yaml at langfuse-k8s tags langfuse-1.5.41 and langfuse-2.0.0.
# Chart 2.x has no values.schema.json: it renders an unknown key silently, so a 1.5 key left in an
# override takes 2.x's default instead (clickhouse.cluster.enabled defaults to true there).
V3_ONLY = {
    "clickhouse.clusterEnabled": "clickhouse.cluster.enabled (chart 2.x defaults it to true)",
    "clickhouse.replicaCount": "clickhouse.cluster.replicas",
    "clickhouse.shards": "nothing: chart 2.x runs one shard",
    "clickhouse.resourcesPreset": "clickhouse.cluster.resources",
    "clickhouse.image": "clickhouse.cluster.image",
    "clickhouse.zookeeper": "clickhouse.keeper",
    "global": "each image's own repository (chart 2.x has no global section)",
    "postgresql.architecture": "nothing: chart 2.x's bundled Postgres is standalone",
    "postgresql.primary": "postgresql.* (service.port, resources, storage ...)",
    "redis.architecture": "redis.replica.enabled",
    "redis.primary": "redis.valkeyConfig / redis.resources / redis.dataStorage",
    "s3.image": "s3.allInOne.image",
}
V4_ONLY = {
    "clickhouse.cluster": "clickhouse.clusterEnabled / clickhouse.replicaCount",
    "clickhouse.keeper": "clickhouse.zookeeper",
    "clickhouse.crdCheck": "nothing: chart 1.5.x deploys no ClickHouse operator resources",
    "langfuse.allowV1Upgrade": "nothing: it guards the upgrade to chart 2.x",
    "postgresql.settings": "postgresql.auth",
    "postgresql.userDatabase": "postgresql.auth",
    "postgresql.storage": "postgresql.primary.persistence",
    "redis.valkeyConfig": "redis.primary.extraFlags",
    "redis.dataStorage": "redis.primary.persistence",
    "s3.allInOne": "the Bitnami MinIO sub-chart's keys",
}


def _has(values, dotted):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def chart_line_foreign_keys(values, release_line, variable="langfuse_helm_values"):
    """Messages for each key of `values` that the chart of `release_line` does not read."""
    if release_line not in ("v3", "v4"):
        raise AnsibleFilterError(f"chart_line_foreign_keys: release_line must be v3 or v4, got {release_line!r}")
    if not isinstance(values, dict):
        raise AnsibleFilterError(f"chart_line_foreign_keys: {variable} must be a dict")
    foreign, chart = (V3_ONLY, "2.x (v4)") if release_line == "v4" else (V4_ONLY, "1.5.x (v3)")
    return [f"{variable}.{key} is not read by chart {chart}: use {instead}"
            for key, instead in foreign.items() if _has(values, key)]


class FilterModule:
    def filters(self):
        return {"chart_line_foreign_keys": chart_line_foreign_keys}
