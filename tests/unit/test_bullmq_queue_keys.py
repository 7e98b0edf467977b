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
