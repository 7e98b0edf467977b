# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The v4 historic backfill's scratch table in words, as migration_status reads it (upgrade.yml's phase
drop_scratch says what it frees with them)."""

from __future__ import annotations

from ansible_collections.langfuse_ops.platform.plugins.module_utils import migration_state as ms


def scratch_size(table):
    return ms.scratch_size(table)


def size_words(value):
    return ms.size_words(int(value))


class FilterModule:
    def filters(self):
        return {"scratch_size": scratch_size, "size_words": size_words}
