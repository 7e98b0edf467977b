"""migration_status's check_v4_clickhouse_grants: the grants Langfuse v4 needs, asked with CHECK GRANT.

Unit tier, no cluster. The grant checks run for real against chDB 4.4 (the ClickHouse 26.9 engine), served
over ClickHouse's HTTP interface by tests/localenv/chdb_http.py, one private instance per user on a free port
of 127.0.0.1 that each test module starts and stops. The module's own HTTP client and SQL talk to it.

How a least-privilege user exists in chDB: chDB runs clickhouse-local, which authenticates its session as
`default`, but reads that user from the users.xml that `Session("data?config-file=config.xml")` points it at
(user_directories.users_xml). So each instance gets a config whose `default` user holds exactly the grants
of the test (<grants><query>GRANT ...</query></grants>) and the settings profile of the test. `CREATE USER`
does not work (clickhouse-local adds no writable access storage; local_directory in the config is ignored),
nor does `EXECUTE AS` (clickhouse-local does not read access_control_improvements, so allow_impersonate_user
stays off), nor a session user other than `default` (`?user=` and default_session_user are ignored).

What this leaves unexercised against a real engine, and tests here with a stubbed CHECK GRANT instead:
  - missing grants on system tables (SELECT ON system.parts and the others): clickhouse-local ignores
    access_control_improvements.select_from_system_db_requires_grant, so chDB grants SELECT on every system
    table implicitly and CHECK GRANT answers 1 for them whatever users.xml says;
  - a missing CLUSTER ON *.*: on_cluster_queries_require_cluster_grant is ignored likewise, and CHECK GRANT
    CLUSTER answers 1;
  - a server that refuses CHECK GRANT (older than 24.9).
Not exercised at all: a real cluster (chDB has no ON CLUSTER, so the ON CLUSTER statements are only parsed,
with EXPLAIN AST), grants that differ between replicas, roles (CHECK GRANT counts them; chDB's users.xml
user here has direct grants only), and the first CHECK GRANT implementation (24.9), which also answered 0 for
a table that does not exist yet (26.9 checks the grant alone, which the scratch-table checks rely on).
"""
import json
import sys
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.module_utils import migration_state as ms  # noqa: E402
from ansible_collections.langfuse_ops.platform.plugins.modules import migration_status as module  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "localenv"))
from chdb_process import ChdbProcess  # noqa: E402 (tests/localenv)


def documented_grants(db):
    """The grants langfuse-docs lists (clickhouse.mdx "User Permissions", PR #3588), as users.xml takes them (no TO).

    Written out here rather than taken from migration_state, so that the module is checked against the docs.
    """
    return [
        f"GRANT SELECT, INSERT ON {db}.*",
        f"GRANT ALTER UPDATE, ALTER DELETE ON {db}.*",
        f"GRANT CREATE, DROP TABLE, DROP VIEW ON {db}.*",
        f"GRANT ALTER ADD COLUMN, ALTER MODIFY COLUMN, ALTER VIEW MODIFY QUERY ON {db}.*",
        f"GRANT ALTER ADD INDEX, ALTER DROP INDEX, ALTER MATERIALIZE INDEX ON {db}.*",
        "GRANT SELECT(database, table, name, partition, partition_id, active, rows) ON system.parts",
        "GRANT SELECT(database, table, is_done) ON system.mutations",
        "GRANT SELECT(database, name, engine) ON system.tables",
        "GRANT SELECT ON system.processes",
        "GRANT SELECT ON system.query_log*",
        "GRANT READ ON REMOTE",
        "GRANT CLUSTER ON *.*",
        f"GRANT SYSTEM SYNC REPLICA, SYSTEM MERGES, ALTER SETTINGS ON {db}.observations_pid_tid_sorting",
    ]


# The v3-era list plus part of v4's: no ALTER ADD COLUMN, no ALTER MATERIALIZE INDEX, no SYSTEM SYNC REPLICA on
# the scratch table, no READ ON REMOTE, no system table grants (which chDB grants implicitly anyway). No DROP VIEW
# either, which ClickHouse grants implicitly with DROP TABLE (as CREATE VIEW with CREATE TABLE): CHECK GRANT says 1.
PARTIAL_DB = "lf-data"
PARTIAL_GRANTS = [
    "GRANT SELECT, INSERT ON `lf-data`.*",
    "GRANT ALTER UPDATE, ALTER DELETE ON `lf-data`.*",
    "GRANT CREATE, DROP TABLE ON `lf-data`.*",
    "GRANT ALTER MODIFY COLUMN, ALTER VIEW MODIFY QUERY ON `lf-data`.*",
    "GRANT ALTER ADD INDEX, ALTER DROP INDEX ON `lf-data`.*",
    "GRANT SYSTEM MERGES, ALTER SETTINGS ON `lf-data`.observations_pid_tid_sorting",
]


class ChdbInstance:
    """chdb_http.py on a free 127.0.0.1 port, its chDB session user `default` holding `grants` only."""

    def __init__(self, path, grants, lightweight_update):
        path.mkdir(parents=True, exist_ok=True)
        # chdb_http runs `USE default` around each request, which takes some grant on database default.
        queries = "".join(f"<query>{q}</query>" for q in grants + ["GRANT SHOW DATABASES ON default.*"])
        (path / "users.xml").write_text(
            "<clickhouse><profiles><default>"
            f"<enable_lightweight_update>{int(lightweight_update)}</enable_lightweight_update></default></profiles>"
            "<users><default><password></password><networks><ip>::/0</ip></networks>"
            f"<profile>default</profile><quota>default</quota><grants>{queries}</grants></default></users>"
            "<quotas><default></default></quotas></clickhouse>\n")
        (path / "config.xml").write_text(
            "<clickhouse><user_directories><users_xml><path>users.xml</path></users_xml></user_directories></clickhouse>\n")
        # A relative path: chdb_http makes the directory it is given (here one named after the whole string, left
        # empty), chDB reads `data` and the ?config-file= option, relative to cwd.
        self.server = ChdbProcess("data?config-file=config.xml", path / "chdb_http.log", args=("--user", "langfuse"), cwd=path)
        self.password, self.port = self.server.password, self.server.port

    def opts(self, database):
        return dict(host="127.0.0.1", port=self.port, user="langfuse", password=self.password, database=database,
                    https=False, validate_certs=True, ca_path=None, timeout=30, forward=None)

    def client(self):
        return module.ClickHouseHTTP(self.opts("default"), "127.0.0.1", self.port, f"127.0.0.1:{self.port}")

    def close(self):
        self.server.close()


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A user with every documented grant and enable_lightweight_update on, and a MergeTree schema_migrations."""
    instance = ChdbInstance(tmp_path_factory.mktemp("chdb-full"), documented_grants("langfuse"), lightweight_update=True)
    client = instance.client()
    try:
        # As that user (CREATE ON langfuse.* includes CREATE DATABASE): golang-migrate's table on a single node.
        # Not in chDB's database default, whose Overlay engine wants READ ON FILE for a CREATE TABLE.
        client._post("/", "CREATE DATABASE langfuse")
        client._post("/", "CREATE TABLE langfuse.schema_migrations (version Int64, dirty UInt8, sequence UInt64) "
                          "ENGINE = MergeTree ORDER BY sequence")
        client._post("/", "INSERT INTO langfuse.schema_migrations VALUES (37, 0, 1)")
    except BaseException:
        instance.close()
        raise
    finally:
        client.close()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    instance = ChdbInstance(tmp_path_factory.mktemp("chdb-partial"), PARTIAL_GRANTS, lightweight_update=False)
    try:
        yield instance
    finally:
        instance.close()


def read(instance, database, cluster_enabled=None, lightweight_update=False):
    return module.read_clickhouse(instance.opts(database), "127.0.0.1", instance.port, f"127.0.0.1:{instance.port}",
                                  None, {"cluster_enabled": cluster_enabled, "lightweight_update": lightweight_update})


def by_check(state):
    return {(m["privilege"], m["on"]) for m in state["missing"]}


# --- against chDB --------------------------------------------------------------------------------------

def test_chdb_answers_check_grant_for_a_restricted_user(full, partial):
    """The harness itself: the users.xml user is restricted, and CHECK GRANT says so (the premise of the rest)."""
    client = partial.client()
    try:
        assert client.select("SELECT currentUser() AS user") == [{"user": "default"}]
        assert client.check_grant("CHECK GRANT INSERT ON `lf-data`.*") is True
        assert client.check_grant("CHECK GRANT ALTER ADD COLUMN ON `lf-data`.*") is False
        assert client.check_grant("CHECK GRANT DROP VIEW ON `lf-data`.*") is True  # implied by DROP TABLE
        assert client.check_grant("CHECK GRANT INSERT ON default.*") is False
        # CREATE ON `lf-data`.* is granted, yet CHECK GRANT CREATE asks for the global parts of CREATE too
        assert client.check_grant("CHECK GRANT CREATE ON `lf-data`.*") is False
        assert client.check_grant("CHECK GRANT CREATE DATABASE, CREATE TABLE, CREATE VIEW, CREATE DICTIONARY ON `lf-data`.*")
        with pytest.raises(module.QueryError, match="SYNTAX_ERROR"):
            client.check_grant("CHECK GRANT NO SUCH THING ON `lf-data`.*")
        # and the connection is still usable after the error
        assert client.check_grant("CHECK GRANT SELECT ON `lf-data`.*") is True
    finally:
        client.close()


def test_user_with_every_documented_grant_passes_unclustered_from_the_engine(full):
    state = read(full, "langfuse", lightweight_update=True)
    assert state["table_exists"] and state["engine"] == "MergeTree" and state["version"] == 37
    grants = state["grants"]
    assert grants["user"] == "default"
    assert (grants["clustered"], grants["clustered_from"]) == (False, "schema_migrations engine MergeTree")
    assert grants["checked"] == grants["granted"] == 21
    assert grants["missing"] == grants["errors"] == grants["statements"] == []
    assert grants["lightweight_update"] == {"enabled": True, "error": None}
    assert grants["enough"] is True
    assert ms.grant_problems(grants, "langfuse", state["host"]) == []


def test_user_with_every_documented_grant_passes_clustered(full):
    grants = read(full, "langfuse", cluster_enabled=True)["grants"]
    assert (grants["clustered"], grants["clustered_from"]) == (True, "option clickhouse_cluster_enabled")
    assert grants["checked"] == grants["granted"] == 23
    assert grants["enough"] is True and grants["lightweight_update"] is None


def test_missing_grants_are_named_with_the_statements_that_add_them(partial):
    state = read(partial, PARTIAL_DB, lightweight_update=True)
    assert state["table_exists"] is False
    grants = state["grants"]
    # No schema_migrations to tell: Langfuse's default, clustered, so READ ON REMOTE is required too.
    assert grants["clustered"] is True and "CLICKHOUSE_CLUSTER_ENABLED=true" in grants["clustered_from"]
    assert by_check(grants) == {
        ("ALTER ADD COLUMN", "`lf-data`.*"), ("ALTER MATERIALIZE INDEX", "`lf-data`.*"),
        ("SYSTEM SYNC REPLICA", "`lf-data`.observations_pid_tid_sorting"), ("READ", "REMOTE")}
    assert [m["since"] for m in grants["missing"]] == ["v4"] * 4
    assert grants["lightweight_update"]["enabled"] is False
    assert grants["statements"] == [
        "GRANT ON CLUSTER default ALTER ADD COLUMN, ALTER MATERIALIZE INDEX ON `lf-data`.* TO default",
        "GRANT ON CLUSTER default READ ON REMOTE TO default",
        "GRANT ON CLUSTER default SYSTEM SYNC REPLICA ON `lf-data`.observations_pid_tid_sorting TO default",
        "CREATE SETTINGS PROFILE langfuse_lightweight_update ON CLUSTER default SETTINGS enable_lightweight_update = 1 "
        "TO default",
    ]
    assert grants["enough"] is False
    [msg] = ms.grant_problems(grants, PARTIAL_DB, state["host"])
    assert msg.startswith(f"ClickHouse user default (on {state['host']}, database lf-data) lacks 5 of what Langfuse v4 needs")
    for needle in ("ALTER ADD COLUMN ON `lf-data`.* (Langfuse's tables: schema migrations at start)",
                   "READ ON REMOTE (clustered ClickHouse (CLICKHOUSE_CLUSTER_ENABLED=true): reading the system tables",
                   "SYSTEM SYNC REPLICA ON `lf-data`.observations_pid_tid_sorting (the historic backfill's scratch table",
                   "setting enable_lightweight_update = 1 (lightweight updates",
                   "Not enough privileges", "this check saw one node only",
                   "An admin runs, before the v4 server upgrade: GRANT ON CLUSTER default ALTER ADD COLUMN, ALTER MATERIALIZE INDEX "
                   "ON `lf-data`.* TO default; GRANT ON CLUSTER default READ ON REMOTE TO default;",
                   "enable_lightweight_update = 1 TO default. The statements say ON CLUSTER default"):
        assert needle in msg, needle


def test_unclustered_missing_grants_go_without_on_cluster_and_skip_the_cluster_grants(partial):
    grants = read(partial, PARTIAL_DB, cluster_enabled=False)["grants"]
    assert ("READ", "REMOTE") not in by_check(grants) and grants["checked"] == 21
    assert grants["statements"][0] == "GRANT ALTER ADD COLUMN, ALTER MATERIALIZE INDEX ON `lf-data`.* TO default"
    assert grants["lightweight_update"] is None
    assert "ON CLUSTER" not in " ".join(ms.grant_problems(grants, PARTIAL_DB))


def test_proposed_statements_parse_on_clickhouse(full, partial):
    """chDB has no cluster and no writable access storage: EXPLAIN AST checks the statements' syntax, ON CLUSTER included."""
    clustered = read(partial, PARTIAL_DB, lightweight_update=True)["grants"]["statements"]
    single = read(partial, PARTIAL_DB, cluster_enabled=False, lightweight_update=True)["grants"]["statements"]
    client = full.client()
    try:
        for statement in clustered + single:
            assert client._post("/", f"EXPLAIN AST {statement}").split("\n", 1)[0] in ("GrantQuery", "CreateSettingsProfileQuery")
    finally:
        client.close()


def test_the_proposed_grants_are_enough(partial, tmp_path):
    """Granting what the check proposed (TO dropped: users.xml grants to its user) makes the check pass."""
    proposed = read(partial, PARTIAL_DB, cluster_enabled=True)["grants"]["statements"]
    added = [s.replace("ON CLUSTER default ", "").rsplit(" TO ", 1)[0] for s in proposed]
    fixed = ChdbInstance(tmp_path / "chdb-fixed", PARTIAL_GRANTS + added, lightweight_update=True)
    try:
        grants = read(fixed, PARTIAL_DB, cluster_enabled=True, lightweight_update=True)["grants"]
        assert grants["missing"] == [] and grants["enough"] is True
    finally:
        fixed.close()


# --- stubbed CHECK GRANT: what chDB cannot make fail ----------------------------------------------------

class StrictSystemTables:
    """The partial instance's real client, except that CHECK GRANT answers as a server with
    select_from_system_db_requires_grant (upstream's default) would for a user without grants on system.parts
    and without CLUSTER, and refuses CHECK GRANT on system.processes (as a server too old for it would)."""

    def __init__(self, real):
        self.real, self.asked = real, []

    def select(self, query):
        return self.real.select(query)

    def check_grant(self, statement):
        self.asked.append(statement)
        if statement.endswith(" ON system.parts") or statement == "CHECK GRANT CLUSTER ON *.*":
            return False
        if statement.endswith(" ON system.processes"):
            raise module.QueryError("ClickHouse x answered HTTP 400: ...", "Code: 62. DB::Exception: Syntax error (SYNTAX_ERROR)")
        return self.real.check_grant(statement)


def test_missing_system_table_grants_are_reported_with_their_columns(partial):
    client = StrictSystemTables(partial.client())
    try:
        grants = module.read_grants(client, PARTIAL_DB, True, "option clickhouse_cluster_enabled", False)
    finally:
        client.real.close()
    assert "CHECK GRANT SELECT(database, table, name, partition, partition_id, active, rows) ON system.parts" in client.asked
    assert "CHECK GRANT SELECT ON system.query_log*" in client.asked
    parts = next(m for m in grants["missing"] if m["on"] == "system.parts")
    assert parts["grant"] == ("GRANT ON CLUSTER default SELECT(database, table, name, partition, partition_id, active, rows) "
                              "ON system.parts TO default")
    assert "event propagation" in parts["why"] and parts["purpose"] == "system_tables"
    assert ("CLUSTER", "*.*") in by_check(grants)
    assert "GRANT ON CLUSTER default CLUSTER ON *.* TO default" in grants["statements"]
    assert [(e["privilege"], e["on"]) for e in grants["errors"]] == [("SELECT", "system.processes")]
    problems = ms.grant_problems(grants, PARTIAL_DB, "chi-0")
    assert len(problems) == 2
    assert "SELECT(database, table, name, partition, partition_id, active, rows) ON system.parts (system tables: finding " \
           "partitions and parts: the dual write's event propagation" in problems[0]
    assert problems[1].startswith("Could not check SELECT ON system.processes for ClickHouse user default (on chi-0): "
                                  "Code: 62. DB::Exception: Syntax error (SYNTAX_ERROR)")
    assert grants["enough"] is False


# --- the module end to end (AnsibleModule, arguments, exit/fail) against chDB -----------------------------

def run_module(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def test_module_passes_and_fails_as_the_user_is_granted(full, partial, capsys):
    ok = run_module({"clickhouse": full.opts("langfuse"), "check_v4_clickhouse_grants": True,
                     "clickhouse_lightweight_update": True}, capsys)
    assert not ok.get("failed") and ok["clickhouse"]["grants"]["enough"] is True and ok["changed"] is False
    failed = run_module({"clickhouse": partial.opts(PARTIAL_DB), "check_v4_clickhouse_grants": True,
                         "clickhouse_cluster_enabled": False}, capsys)
    assert failed["failed"] is True
    assert failed["msg"] == failed["problems"][0]
    assert "lacks 3 of what Langfuse v4 needs" in failed["msg"]
    assert "GRANT ALTER ADD COLUMN, ALTER MATERIALIZE INDEX ON `lf-data`.* TO default" in failed["msg"]
    for result in (ok, failed):
        assert partial.password not in json.dumps(result) and full.password not in json.dumps(result)
    without = run_module({"clickhouse": partial.opts(PARTIAL_DB)}, capsys)
    assert not without.get("failed") and "grants" not in without["clickhouse"]


def test_grants_are_checked_even_when_the_user_cannot_read_system_tables(partial, monkeypatch, capsys):
    """A v3 user on a server that wants grants for system tables cannot read system.tables (stubbed: chDB lets it);
    the module still reports every missing grant, in the message and as clickhouse.grants."""
    denied = ("Code: 497. DB::Exception: default: Not enough privileges. To execute this query, it's necessary to have "
              "the grant SELECT(engine, database, name) ON system.tables. (ACCESS_DENIED)")

    class NoSystemTables(module.ClickHouseHTTP):
        def select(self, query):
            if "FROM system.tables" in query:
                raise module.QueryError(f"{self.where} answered HTTP 403: {denied}", denied)
            return super().select(query)

        def check_grant(self, statement):
            return False if statement.endswith(" ON system.tables") else super().check_grant(statement)

    monkeypatch.setattr(module, "ClickHouseHTTP", NoSystemTables)
    failed = run_module({"clickhouse": partial.opts(PARTIAL_DB), "check_v4_clickhouse_grants": True}, capsys)
    assert failed["failed"] is True and failed["msg"].startswith("could not read the migration state: ClickHouse 127.0.0.1:")
    assert "ACCESS_DENIED" in failed["msg"] and "| the grant check ran nonetheless: ClickHouse user default" in failed["msg"]
    grants = failed["clickhouse"]["grants"]
    assert "schema_migrations could not be read" in grants["clustered_from"] and grants["clustered"] is True
    assert ("SELECT(database, name, engine)", "system.tables") in by_check(grants)
    assert "GRANT ON CLUSTER default SELECT(database, name, engine) ON system.tables TO default" in grants["statements"]
    assert partial.password not in json.dumps(failed)


# --- pure logic ------------------------------------------------------------------------------------------

def test_required_grants_follow_the_documented_list():
    single = ms.required_grants("default", clustered=False)
    clustered = ms.required_grants("default", clustered=True)
    assert len(single) == 21 and len(clustered) == 23
    assert [c["check"] for c in clustered if c["purpose"] == "cluster"] == [
        "CHECK GRANT READ ON REMOTE", "CHECK GRANT CLUSTER ON *.*"]
    assert {c["on"] for c in single} == {"default.*", "system.parts", "system.mutations", "system.tables",
                                         "system.processes", "system.query_log*", "default.observations_pid_tid_sorting"}
    assert {c["privilege"] for c in single if c["since"] == "v3"} == {
        "SELECT", "INSERT", "ALTER UPDATE", "ALTER DELETE", "CREATE", "DROP TABLE", "ALTER DROP INDEX"}
    assert {c["purpose"] for c in single} == {"tables", "system_tables", "backfill"}


@pytest.mark.parametrize("name, sql", [("default", "default"), ("lf_db2", "lf_db2"), ("lf-data", "`lf-data`"),
                                       ("a`b", "`a\\`b`"), ("2x", "`2x`")])
def test_names_are_quoted_only_when_needed(name, sql):
    assert ms.ch_name(name) == sql


def test_clustered_comes_from_the_option_then_the_engine_then_langfuse_default():
    replicated = ms.summarize_clickhouse("ReplicatedMergeTree", {"version": 3, "dirty": 0, "sequence": 1})
    plain = ms.summarize_clickhouse("MergeTree", {"version": 3, "dirty": 0, "sequence": 1})
    assert ms.resolve_clustered(False, replicated) == (False, "option clickhouse_cluster_enabled")
    assert ms.resolve_clustered(None, replicated) == (True, "schema_migrations engine ReplicatedMergeTree")
    assert ms.resolve_clustered(None, plain)[0] is False
    assert ms.resolve_clustered(None, ms.summarize_clickhouse(None, None))[0] is True


def test_lightweight_update_error_is_reported_not_taken_as_missing():
    checks = ms.required_grants("default", clustered=False)
    state = ms.summarize_grants(checks, [True] * len(checks), "langfuse", False, "option", "Unknown setting (UNKNOWN_SETTING)")
    assert state["missing"] == [] and state["statements"] == [] and state["enough"] is False
    [msg] = ms.grant_problems(state, "default")
    assert msg.startswith("Could not check setting enable_lightweight_update for ClickHouse user langfuse")


@pytest.mark.parametrize("params, error", [
    ({"postgres": {"host": "pg"}, "check_v4_clickhouse_grants": True}, "check_v4_clickhouse_grants needs clickhouse"),
    ({"clickhouse": {"host": "ch"}, "clickhouse_cluster_enabled": True},
     "clickhouse_cluster_enabled needs check_v4_clickhouse_grants"),
    ({"clickhouse": {"host": "ch"}, "clickhouse_lightweight_update": False},
     "clickhouse_lightweight_update needs check_v4_clickhouse_grants"),
])
def test_grant_options_are_checked(params, error):
    assert error in ms.validate_params(params)


# --- the v4 backfill's scratch table (backfill_scratch) ------------------------------------------------

def test_scratch_table_is_measured_then_dropped_with_upstreams_statement_under_upstreams_grants(full):
    """What the drop step reports it frees, read as the user with upstream's grants, before and after step 5's own
    statement (buildDropScratchTableQuery, unclustered: DROP TABLE IF EXISTS <db>.<table> SYNC)."""
    client = full.client()
    try:
        assert module.read_scratch_table(client, "langfuse") == {
            "exists": False, "parts": 0, "rows": 0, "bytes_on_disk": 0, "bytes_error": None}
        client._post("/", f"CREATE TABLE langfuse.{ms.BACKFILL_SCRATCH_TABLE} (project_id String, id String, "
                          "start_time DateTime64(3)) ENGINE = MergeTree ORDER BY (project_id, id)")
        for part in range(3):
            client._post("/", f"INSERT INTO langfuse.{ms.BACKFILL_SCRATCH_TABLE} SELECT 'p{part}', toString(number), "
                              "now64(3) FROM numbers(20000)")
        before = module.read_scratch_table(client, "langfuse")
        assert (before["exists"], before["parts"], before["rows"], before["bytes_error"]) == (True, 3, 60000, None)
        assert before["bytes_on_disk"] > 60000  # at least a byte a row: the ids alone are longer
        assert ms.scratch_size(before).startswith(f"{ms.BACKFILL_SCRATCH_TABLE} holds 60000 rows in 3 active parts (")
        client._post("/", f"DROP TABLE IF EXISTS langfuse.{ms.BACKFILL_SCRATCH_TABLE} SYNC")
        after = module.read_scratch_table(client, "langfuse")
        assert (after["exists"], after["parts"], after["rows"], after["bytes_on_disk"]) == (False, 0, 0, 0)
        assert ms.scratch_size(after) == f"{ms.BACKFILL_SCRATCH_TABLE} does not exist"
    finally:
        client.close()


def test_scratch_size_without_bytes_on_disk_says_why(full):
    """Upstream's grants give SELECT on seven columns of system.parts, not bytes_on_disk. chDB grants every system table
    (see the module docstring), so the server's refusal is stubbed here; the rest of the read is chDB's."""
    denied = "Code: 497. DB::Exception: langfuse: Not enough privileges. (ACCESS_DENIED)"

    class NoBytes(module.ClickHouseHTTP):
        def select(self, query):
            if "bytes_on_disk" in query:
                raise module.QueryError(f"{self.where} answered HTTP 403: {denied}", denied)
            return super().select(query)

    client = NoBytes(full.opts("default"), "127.0.0.1", full.port, f"127.0.0.1:{full.port}")
    try:
        client._post("/", f"CREATE TABLE langfuse.{ms.BACKFILL_SCRATCH_TABLE} (id String) ENGINE = MergeTree ORDER BY id")
        client._post("/", f"INSERT INTO langfuse.{ms.BACKFILL_SCRATCH_TABLE} SELECT toString(number) FROM numbers(10)")
        table = module.read_scratch_table(client, "langfuse")
        assert (table["exists"], table["rows"], table["bytes_on_disk"]) == (True, 10, None)
        assert "ACCESS_DENIED" in table["bytes_error"]
        assert "size on disk unknown: " in ms.scratch_size(table) and "holds 10 rows in 1 active parts" in ms.scratch_size(table)
    finally:
        client._post("/", f"DROP TABLE IF EXISTS langfuse.{ms.BACKFILL_SCRATCH_TABLE} SYNC")
        client.close()
