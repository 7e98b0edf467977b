# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ClickHouse server configuration the operator modes hand to their operator.

`system_log_ttl`: a retention for ClickHouse's own `system.*_log` tables, which otherwise grow until the disk is
full (the self-hosting problem Langfuse's users report most). Each operator starts ClickHouse from a different base
configuration, and a TTL must fit that base or the server refuses to start:
- operator (Altinity): the server's own config.xml, under the operator's config.d files that give query_log,
  part_log and trace_log an `<engine>` of their own (config/chi/config.d/01-clickhouse-0[345]-*.xml: MergeTree
  PARTITION BY event_date ORDER BY event_time, TTL 30 days) and remove query_thread_log. ClickHouse refuses `<ttl>`
  beside an `<engine>`, so those three are replaced whole, with the operator's engine and our interval; the other
  logs config.xml turns on get a `<ttl>` merged into their section. The result is an XML file for
  spec.configuration.files (config.d/, merged after the operator's 01-* files).
- official (ClickHouse/clickhouse-operator): its own config.yaml replaces config.xml and turns on query_log,
  part_log and text_log only (templates/log_tables.yaml.tmpl); the TTLs are merged into those three through
  spec.settings.extraConfig (config.d/99-extra-config.yaml).
A log table that a section names and the base does not turn on would be turned on by it, so each mode names only
the tables its base runs. ClickHouse applies a changed TTL to an existing system log table by renaming it to
<table>_<n> and creating the table anew at its next start: the old rows stay in <table>_<n> until someone drops it.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from ansible.errors import AnsibleFilterError

# The tables the Altinity operator gives an engine of their own, with that engine's shape.
ALTINITY_ENGINE_TABLES = ("query_log", "part_log", "trace_log")
ALTINITY_ENGINE = "Engine = MergeTree PARTITION BY event_date ORDER BY event_time TTL event_date + INTERVAL {days} DAY"
# The other logs ClickHouse's config.xml (26.x) turns on, each with an event_date column; left out:
# query_thread_log (the Altinity operator removes it), opentelemetry_span_log (an engine of its own in config.xml,
# no event_date; filled only when tracing is on) and crash_log (a row per server crash).
SERVER_CONFIG_TABLES = (
    "query_views_log", "text_log", "metric_log", "latency_log", "error_log", "query_metric_log",
    "asynchronous_metric_log", "processors_profile_log", "asynchronous_insert_log", "backup_log", "s3queue_log",
    "blob_storage_log",
)
OFFICIAL_TABLES = ("query_log", "part_log", "text_log")
MODES = ("operator", "official")


def _ttl(days):
    return f"event_date + INTERVAL {days} DAY DELETE"


def system_log_tables(mode):
    """The system log tables `system_log_ttl` gives a retention in `mode`."""
    if mode == "operator":
        return list(ALTINITY_ENGINE_TABLES + SERVER_CONFIG_TABLES)
    if mode == "official":
        return list(OFFICIAL_TABLES)
    raise AnsibleFilterError(f"system_log_ttl: mode must be one of {', '.join(MODES)}, not {mode!r}")


def system_log_ttl(days, mode):
    """For `mode` operator: the XML text of a config.d file; for official: the extraConfig mapping. `days` >= 1."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise AnsibleFilterError(f"clickhouse_operator_system_log_ttl_days must be a whole number of days >= 1, not {days!r}")
    tables = system_log_tables(mode)
    if mode == "official":
        return {table: {"ttl": _ttl(days)} for table in tables}
    lines = ["<clickhouse>"]
    for table in tables:
        if table in ALTINITY_ENGINE_TABLES:
            lines += [
                f'  <{table} replace="1">',
                "    <database>system</database>",
                f"    <table>{table}</table>",
                f"    <engine>{escape(ALTINITY_ENGINE.format(days=days))}</engine>",
                "    <flush_interval_milliseconds>7500</flush_interval_milliseconds>",
                f"  </{table}>",
            ]
        else:
            lines.append(f"  <{table}><ttl>{escape(_ttl(days))}</ttl></{table}>")
    lines.append("</clickhouse>")
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return {"system_log_ttl": system_log_ttl}
