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


class FilterModule:
    def filters(self):
        return {"bullmq_queue_keys": bullmq_queue_keys}
