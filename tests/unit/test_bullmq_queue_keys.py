"""Key names of Langfuse's BullMQ queues, as KEDA and the queue-depth exporter read them."""
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.filter.bullmq import bullmq_queue_keys  # noqa: E402


def test_standalone_without_prefix_uses_bullmqs_default():
    assert bullmq_queue_keys(["ingestion-queue"]) == ["bull:ingestion-queue:wait", "bull:ingestion-queue:delayed"]


def test_standalone_with_prefix():
    assert bullmq_queue_keys(["trace-upsert"], "lf", lists=["wait"]) == ["lf:trace-upsert:wait"]


def test_cluster_wraps_queue_in_a_hash_tag():
    assert bullmq_queue_keys(["otel-ingestion-queue"], cluster=True, lists=["wait"]) == [
        "{otel-ingestion-queue}:otel-ingestion-queue:wait"]


def test_cluster_with_prefix_puts_prefix_inside_the_tag():
    assert bullmq_queue_keys(["batch-export-queue"], "lf", True, ["delayed"]) == [
        "{lf:batch-export-queue}:batch-export-queue:delayed"]


def test_rejects_empty_queue_name():
    with pytest.raises(AnsibleFilterError, match="non-empty"):
        bullmq_queue_keys(["ingestion-queue", ""])


# --- shards (LANGFUSE_*_QUEUE_SHARD_COUNT) ------------------------------------------------------

from ansible_collections.langfuse_ops.platform.plugins.filter.bullmq import bullmq_shard_env, bullmq_shard_names  # noqa: E402


def test_shard_names_follow_langfuse_and_leave_unsharded_queues_alone():
    assert bullmq_shard_names(["ingestion-queue", "batch-export-queue", "trace-upsert"],
                              {"ingestion-queue": 4, "trace-upsert": 2}) == [
        "ingestion-queue", "ingestion-queue-1", "ingestion-queue-2", "ingestion-queue-3", "batch-export-queue",
        "trace-upsert", "trace-upsert-1"]
    assert bullmq_shard_names(["otel-ingestion-queue"]) == ["otel-ingestion-queue"]


def test_four_shards_give_four_hash_tagged_key_sets_in_cluster_mode():
    names = bullmq_shard_names(["ingestion-queue"], {"ingestion-queue": 4})
    assert bullmq_queue_keys(names, "lf", True, ["wait"]) == [
        "{lf:ingestion-queue}:ingestion-queue:wait", "{lf:ingestion-queue-1}:ingestion-queue-1:wait",
        "{lf:ingestion-queue-2}:ingestion-queue-2:wait", "{lf:ingestion-queue-3}:ingestion-queue-3:wait"]


@pytest.mark.parametrize("shards", [{"ingestion-queue": 0}, {"ingestion-queue": "2"}, {"ingestion-queue": True},
                                    {"evaluation-execution-queue": 2}])
def test_bad_shard_counts_are_refused(shards):
    with pytest.raises(AnsibleFilterError):
        bullmq_shard_names(["ingestion-queue"], shards)


def test_shard_env_sets_only_counts_above_one():
    assert bullmq_shard_env({"ingestion-queue": 4, "trace-upsert": 1, "otel-ingestion-queue": 2}) == {
        "LANGFUSE_INGESTION_QUEUE_SHARD_COUNT": "4", "LANGFUSE_OTEL_INGESTION_QUEUE_SHARD_COUNT": "2"}
    assert bullmq_shard_env({}) == {}


def test_shard_decreases_name_each_lowered_count():
    from ansible_collections.langfuse_ops.platform.plugins.filter.bullmq import bullmq_shard_decreases
    deployed = {"LANGFUSE_INGESTION_QUEUE_SHARD_COUNT": "4", "LANGFUSE_TRACE_UPSERT_QUEUE_SHARD_COUNT": "2", "OTHER": "x"}
    assert bullmq_shard_decreases(deployed, {"LANGFUSE_INGESTION_QUEUE_SHARD_COUNT": "2"}) == [
        "LANGFUSE_INGESTION_QUEUE_SHARD_COUNT 4 -> 2", "LANGFUSE_TRACE_UPSERT_QUEUE_SHARD_COUNT 2 -> 1"]
    assert bullmq_shard_decreases(deployed, {"LANGFUSE_INGESTION_QUEUE_SHARD_COUNT": "8",
                                             "LANGFUSE_TRACE_UPSERT_QUEUE_SHARD_COUNT": "2"}) == []
    assert bullmq_shard_decreases({}, {}) == []
