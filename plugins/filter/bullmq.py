# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis key names of Langfuse's BullMQ queues."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def bullmq_queue_keys(queues, key_prefix="", cluster=False, lists=("wait", "delayed")):
    """The keys BullMQ keeps a queue's jobs in, as Langfuse names its queues.

    Langfuse hands BullMQ the prefix REDIS_KEY_PREFIX (BullMQ's own default
    `bull` when unset). In Redis Cluster mode every key of a queue must hash to
    one slot, so Langfuse wraps `<REDIS_KEY_PREFIX>:<queue>` (or the queue name
    alone) in a hash tag: `{ingestion-queue}:ingestion-queue:wait`.
    """
    if isinstance(queues, str):
        queues = [queues]
    if isinstance(lists, str):
        lists = [lists]
    keys = []
    for queue in queues or []:
        if not queue or not isinstance(queue, str):
            raise AnsibleFilterError(f"bullmq_queue_keys: queue names must be non-empty strings, got {queue!r}")
        if cluster:
            prefix = "{" + (f"{key_prefix}:{queue}" if key_prefix else queue) + "}"
        else:
            prefix = key_prefix or "bull"
        keys.extend(f"{prefix}:{queue}:{suffix}" for suffix in lists)
    return keys


# The queues Langfuse shards, and the env var that sets each one's shard count
# (packages/shared/src/env.ts; IngestionQueue.getShardNames and its siblings name shard i > 0 "<queue>-<i>").
SHARDED_QUEUES = {
    "ingestion-queue": "LANGFUSE_INGESTION_QUEUE_SHARD_COUNT",
    "otel-ingestion-queue": "LANGFUSE_OTEL_INGESTION_QUEUE_SHARD_COUNT",
    "trace-upsert": "LANGFUSE_TRACE_UPSERT_QUEUE_SHARD_COUNT",
}


def bullmq_shard_names(queues, shards=None):
    """Each queue's shard names as Langfuse names them: `ingestion-queue`, `ingestion-queue-1`, ...

    shards maps a sharded queue's name to its shard count (absent: 1); other queues stay as they are.
    """
    if isinstance(queues, str):
        queues = [queues]
    shards = shards or {}
    unknown = sorted(set(shards) - set(SHARDED_QUEUES))
    if unknown:
        raise AnsibleFilterError(f"bullmq_shard_names: Langfuse shards only {', '.join(SHARDED_QUEUES)}, not {', '.join(unknown)}")
    names = []
    for queue in queues or []:
        count = shards.get(queue, 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise AnsibleFilterError(f"bullmq_shard_names: the shard count of {queue} must be a whole number >= 1, got {count!r}")
        names.extend(queue if i == 0 else f"{queue}-{i}" for i in range(count))
    return names


def bullmq_shard_env(shards):
    """The env vars that set the shard counts above 1 (a count of 1 is Langfuse's default and is left out)."""
    bullmq_shard_names(list(shards or {}), shards)
    return {SHARDED_QUEUES[q]: str(n) for q, n in sorted((shards or {}).items()) if n > 1}


def bullmq_shard_decreases(deployed_env, target_env):
    """'<VAR> <deployed> -> <target>' for each shard count the target lowers (absent counts are 1)."""
    deployed_env, target_env = deployed_env or {}, target_env or {}
    out = []
    for var in SHARDED_QUEUES.values():
        was, now = int(deployed_env.get(var) or 1), int(target_env.get(var) or 1)
        if now < was:
            out.append(f"{var} {was} -> {now}")
    return out


class FilterModule:
    def filters(self):
        return {"bullmq_queue_keys": bullmq_queue_keys, "bullmq_shard_names": bullmq_shard_names,
                "bullmq_shard_env": bullmq_shard_env, "bullmq_shard_decreases": bullmq_shard_decreases}
