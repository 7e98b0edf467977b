"""The Grafana dashboard the observability role ships (roles/observability/files/langfuse-dashboard.json)."""
import json
from pathlib import Path

DASHBOARD = json.loads((Path(__file__).resolve().parents[2] / "roles" / "observability" / "files"
                        / "langfuse-dashboard.json").read_text())


def exprs():
    return [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]


def test_has_a_stable_uid_and_datasource_and_namespace_variables():
    assert DASHBOARD["uid"] == "langfuse-ops-overview"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"


def test_every_query_is_scoped_to_the_namespace_and_the_datasource():
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], target["expr"]


def test_panels_cover_queues_throughput_clickhouse_restarts_and_probes():
    joined = " ".join(exprs())
    for metric in ("redis_key_size", "langfuse:ingestion_backlog:sum", "rate(ClickHouseProfileEvents_InsertedRows",
                   "ClickHouseAsyncMetrics_MaxPartCountForPartition", "ClickHouseMetrics_BackgroundMergesAndMutationsPoolTask",
                   "kube_pod_container_status_restarts_total", "probe_success"):
        assert metric in joined, metric


def test_panels_have_unique_ids_and_fit_the_grid():
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
