"""The overrides of one chart line that the other line's chart would silently ignore."""
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.filter.chart_values import chart_line_foreign_keys  # noqa: E402


def test_v3_keys_are_refused_for_chart_2_with_the_key_to_use():
    values = {"clickhouse": {"clusterEnabled": False, "replicaCount": 3, "host": "ch"}, "global": {"imageRegistry": "x"},
              "langfuse": {"web": {"replicas": 2}}}
    assert chart_line_foreign_keys(values, "v4") == [
        "langfuse_helm_values.clickhouse.clusterEnabled is not read by chart 2.x (v4): use clickhouse.cluster.enabled "
        "(chart 2.x defaults it to true)",
        "langfuse_helm_values.clickhouse.replicaCount is not read by chart 2.x (v4): use clickhouse.cluster.replicas",
        "langfuse_helm_values.global is not read by chart 2.x (v4): use each image's own repository (chart 2.x has no global section)",
    ]


def test_v4_keys_are_refused_for_chart_1_5():
    values = {"clickhouse": {"cluster": {"enabled": False}}, "langfuse": {"allowV1Upgrade": True}}
    assert [m.split(" is not")[0] for m in chart_line_foreign_keys(values, "v3")] == [
        "langfuse_helm_values.clickhouse.cluster", "langfuse_helm_values.langfuse.allowV1Upgrade"]


def test_keys_both_lines_read_pass():
    values = {"clickhouse": {"host": "ch", "auth": {"existingSecret": "s"}}, "langfuse": {"web": {"image": {"tag": "4.4.0"}}},
              "redis": {"cluster": {"enabled": True}}}
    assert chart_line_foreign_keys(values, "v3") == [] and chart_line_foreign_keys(values, "v4") == []
    assert chart_line_foreign_keys({}, "v4") == []


def test_bad_arguments():
    with pytest.raises(AnsibleFilterError):
        chart_line_foreign_keys({}, "v5")
    with pytest.raises(AnsibleFilterError):
        chart_line_foreign_keys([], "v4")
