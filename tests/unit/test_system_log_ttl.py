"""The retention the operator modes give ClickHouse's system log tables, started on a real ClickHouse (chDB, 26.x).

The role's ClickHouseInstallation and ClickHouseCluster templates are rendered by Ansible on localhost with the
role's defaults; what they hand the operator is then laid over the base configuration that operator starts
ClickHouse from, and chDB starts with the result (`config-file=`, which reads config.d/ beside it as the server
does), writes its logs and creates its log tables. The test reads each table's engine from system.tables.

The bases are written here from what the operators ship, not copied from them:
- Altinity (release-0.25.6): the server's own config.xml (its log sections as in ClickHouse 26.x's
  programs/server/config.xml) under the operator's config.d/01-clickhouse-03/04/05 files, which give query_log,
  part_log and trace_log an engine with TTL 30 days (replace="1") and remove query_thread_log;
- the official operator (ClickHouse/clickhouse-operator 581494e): its config.yaml replaces config.xml and
  config.d/00-logs-tables.yaml turns on query_log, part_log and text_log, with nothing else in them.
chDB is built without yaml-cpp, so the official operator's YAML (and the extraConfig mapping, which it writes as
config.d/99-extra-config.yaml) is given as the XML ClickHouse's YAML parser makes of it (a key an element, a scalar
its text). What stays unexercised: the operators themselves writing these files into their ConfigMaps, and a server
restart moving an existing log table aside.
"""
import json
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))
sys.path.insert(0, str(REPO / "tests" / "localenv"))
sys.path.insert(0, str(REPO / ".build" / "collections"))
import clickhouse_config  # noqa: E402  pylint: disable=wrong-import-position
from chdb_process import ChdbProcess  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.langfuse_ops.platform.plugins.module_utils import migration_state as ms  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.langfuse_ops.platform.plugins.modules import migration_status  # noqa: E402  pylint: disable=wrong-import-position

TEMPLATES = REPO / "roles" / "clickhouse_operator" / "templates"
DEFAULTS = REPO / "roles" / "clickhouse_operator" / "defaults" / "main.yml"
ALTINITY_FILE = "config.d/90-langfuse-ops-system-log-ttl.xml"

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars_files: ["{{ defaults }}"]
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: >-
          {{ {'operator': lookup('ansible.builtin.template', templates ~ '/installation.yml.j2') | from_yaml,
              'official': lookup('ansible.builtin.template', templates ~ '/official_cluster.yml.j2') | from_yaml}
             | to_json }}
"""

# ClickHouse 26.x's config.xml: the log tables it turns on (opentelemetry_span_log with an engine of its own).
SERVER_LOGS = ["query_log", "trace_log", "query_thread_log", "query_views_log", "part_log", "text_log", "metric_log",
               "latency_log", "error_log", "query_metric_log", "asynchronous_metric_log", "processors_profile_log",
               "asynchronous_insert_log", "backup_log", "s3queue_log", "blob_storage_log"]
SERVER_CONFIG = "<clickhouse>\n" + "".join(
    f"  <{t}><database>system</database><table>{t}</table><flush_interval_milliseconds>7500"
    f"</flush_interval_milliseconds></{t}>\n" for t in SERVER_LOGS) + """
  <opentelemetry_span_log><engine>engine MergeTree partition by toYYYYMM(finish_date) order by (finish_date, finish_time_us)</engine>
    <database>system</database><table>opentelemetry_span_log</table></opentelemetry_span_log>
</clickhouse>
"""
ALTINITY_ENGINE_30 = "Engine = MergeTree PARTITION BY event_date ORDER BY event_time TTL event_date + interval 30 day"
ALTINITY_OPERATOR_FILES = {
    f"01-clickhouse-0{n}-{t}.xml": (f'<yandex><{t} replace="1"><database>system</database><table>{t}</table>'
                                    f"<engine>{ALTINITY_ENGINE_30}</engine></{t}>{extra}</yandex>\n")
    for n, t, extra in [(3, "query_log", '<query_thread_log remove="1"/>'), (4, "part_log", ""), (5, "trace_log", "")]
}
# chDB (embedded, 26.9) collects no latency histogram, so it never creates latency_log: its section is read but
# its table is not made here.
NOT_WRITTEN_BY_CHDB = {"latency_log"}
OFFICIAL_CONFIG = "<clickhouse><query_log/><part_log/><text_log/></clickhouse>\n"


def render(tmp_path, **variables):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "render.yml").write_text(PLAYBOOK)
    extra = {**variables, "defaults": str(DEFAULTS), "templates": str(TEMPLATES), "out": str(tmp_path / "out.json"),
             "ansible_python_interpreter": sys.executable}
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "render.yml"),
                           "-e", json.dumps(extra)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def as_xml(mapping):
    """What ClickHouse's YAML parser makes of a mapping of mappings and scalars."""
    def element(key, value):
        inner = "".join(element(k, v) for k, v in value.items()) if isinstance(value, dict) else escape(str(value))
        return f"<{key}>{inner}</{key}>"
    return "<clickhouse>" + "".join(element(k, v) for k, v in mapping.items()) + "</clickhouse>\n"


def log_tables(directory, files):
    """Starts chDB (in a process of its own: one embedded server a process) on config.xml and config.d/ as
    `files` gives them, lets it write its logs, and returns {table: engine_full} of system's log tables; raises
    with ClickHouse's error when it refuses the configuration."""
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    script = """
import json, sys, chdb
conn = chdb.connect(f"file:{sys.argv[1]}/data?config-file={sys.argv[1]}/config.xml")
cur = conn.cursor()
# Long enough for the query profiler to sample it, so that trace_log has rows to write too.
cur.execute("SELECT count() FROM numbers(20000000) WHERE sipHash64(number) % 7 = 1 "
            "SETTINGS query_profiler_cpu_time_period_ns = 1000000, query_profiler_real_time_period_ns = 1000000")
cur.execute("SYSTEM FLUSH LOGS")
cur.execute("SELECT name, engine_full FROM system.tables WHERE database = 'system' AND name LIKE '%\\\\_log'")
# user_query_log is chDB's own (a view, no engine), not a server log.
print(json.dumps({name: engine for name, engine in cur.fetchall() if name != "user_query_log"}))
"""
    # Some logs are first written when chDB shuts down (trace_log): the second start sees their tables too.
    for _start in range(2):
        proc = subprocess.run([sys.executable, "-c", script, str(directory)], capture_output=True, text=True,
                              timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render(tmp_path_factory.mktemp("render"), clickhouse_operator_system_log_ttl_days=7)


def test_the_altinity_operator_keeps_every_log_it_runs_for_the_days_set(rendered, tmp_path):
    files = rendered["operator"]["spec"]["configuration"]["files"]
    assert list(files) == [ALTINITY_FILE]
    tables = log_tables(tmp_path, {"config.xml": SERVER_CONFIG, **{f"config.d/{k}": v for k, v in ALTINITY_OPERATOR_FILES.items()},
                                   ALTINITY_FILE: files[ALTINITY_FILE]})
    expected = sorted(set(SERVER_LOGS) - {"query_thread_log"} - NOT_WRITTEN_BY_CHDB)
    assert sorted(t for t in tables if t in expected) == expected, tables
    for table in expected:
        assert "TTL event_date + toIntervalDay(7)" in tables[table], (table, tables[table])
    # The operator's engine shape stays where it set one, and what it removed stays off.
    assert tables["query_log"].startswith("MergeTree PARTITION BY event_date ORDER BY event_time TTL")
    assert "query_thread_log" not in tables
    assert "TTL" not in tables["opentelemetry_span_log"]


def test_a_ttl_merged_beside_the_altinity_engine_stops_clickhouse(tmp_path):
    """Why the filter replaces the operator's three sections: ClickHouse refuses `ttl` beside an `engine`."""
    naive = "<clickhouse><query_log><ttl>event_date + INTERVAL 7 DAY DELETE</ttl></query_log></clickhouse>\n"
    with pytest.raises(RuntimeError, match="TTL parameters should be specified directly inside 'engine'"):
        log_tables(tmp_path, {"config.xml": SERVER_CONFIG, **{f"config.d/{k}": v for k, v in ALTINITY_OPERATOR_FILES.items()},
                              ALTINITY_FILE: naive})


def test_the_official_operator_keeps_its_three_logs_for_the_days_set_and_turns_on_no_other(rendered, tmp_path):
    extra = rendered["official"]["spec"]["settings"]["extraConfig"]
    assert sorted(extra) == ["part_log", "query_log", "text_log"]
    tables = log_tables(tmp_path, {"config.xml": OFFICIAL_CONFIG, "config.d/99-extra-config.xml": as_xml(extra)})
    assert sorted(tables) == ["part_log", "query_log", "text_log"], tables
    for table, engine in tables.items():
        assert "TTL event_date + toIntervalDay(7)" in engine, (table, engine)


def test_the_default_is_30_days_and_0_leaves_the_operators_alone(tmp_path):
    assert "INTERVAL 30 DAY" in render(tmp_path / "default")["operator"]["spec"]["configuration"]["files"][ALTINITY_FILE]
    off = render(tmp_path / "off", clickhouse_operator_system_log_ttl_days=0)
    assert "files" not in off["operator"]["spec"]["configuration"]
    assert "extraConfig" not in off["official"]["spec"]["settings"]


@pytest.mark.parametrize("days", [0, -1, True, "7", 1.5])
def test_the_filter_refuses_what_is_not_a_number_of_days(days):
    with pytest.raises(Exception, match="clickhouse_operator_system_log_ttl_days must be a whole number of days"):
        clickhouse_config.system_log_ttl(days, "operator")


def test_the_filter_refuses_an_unknown_mode():
    with pytest.raises(Exception, match="mode must be one of operator, official"):
        clickhouse_config.system_log_ttl(7, "external")


def test_migration_status_names_the_log_tables_of_a_server_that_keeps_them_forever(tmp_path):
    """What an external ClickHouse is told: migration_status reads the log tables without a TTL (and warns of them,
    in every run that reads the ClickHouse migration state). Here a chDB server behind chdb_http.py (HTTP, as the
    module reaches ClickHouse) with query_log left as ClickHouse's config.xml has it and part_log given a TTL."""
    (tmp_path / "config.xml").write_text(
        "<clickhouse><query_log><database>system</database><table>query_log</table></query_log>"
        "<part_log><database>system</database><table>part_log</table>"
        "<ttl>event_date + INTERVAL 30 DAY DELETE</ttl></part_log></clickhouse>\n")
    server = ChdbProcess("data?config-file=config.xml", tmp_path / "chdb_http.log", cwd=tmp_path)
    try:
        opts = dict(host="127.0.0.1", port=server.port, user="default", password=server.password, database="default",
                    https=False, validate_certs=True, ca_path=None, timeout=30, forward=None)
        client = migration_status.ClickHouseHTTP(opts, "127.0.0.1", server.port, f"127.0.0.1:{server.port}")
        try:
            assert migration_status.read_system_logs_without_ttl(client) == {"system_logs_without_ttl": []}
            client.select("SELECT 1")
            client._post("/", "SYSTEM FLUSH LOGS")  # pylint: disable=protected-access
            found = migration_status.read_system_logs_without_ttl(client)
        finally:
            client.close()
    finally:
        server.close()
    assert found == {"system_logs_without_ttl": ["query_log"]}
    warning = ms.system_log_warning(found["system_logs_without_ttl"], "ch-0")
    assert "ClickHouse ch-0: system log tables without a TTL" in warning and "query_log." in warning
    assert "clickhouse_operator_system_log_ttl_days" in warning
