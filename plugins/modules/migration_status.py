#!/usr/bin/python
# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_status
short_description: Report and gate on Langfuse's Postgres (Prisma) and ClickHouse (golang-migrate) schema migrations
description:
  - Reads the migration state Langfuse's web container leaves at start-up, where it runs C(prisma migrate deploy) on
    Postgres and golang-migrate C(up) on ClickHouse. Changes nothing, in check mode or not.
  - Postgres, from Prisma's C(_prisma_migrations) table. A row neither finished nor rolled back is a failed migration,
    unless a migration run is in progress; the module tells the two apart as follows. Prisma wrote an error into
    C(logs) - failed. No error, and Prisma Migrate's advisory lock (key 72707369) is held in the database - in
    progress. No error, no lock, started less than O(in_progress_grace) seconds ago - in progress (the lock is
    invisible when C(PRISMA_SCHEMA_DISABLE_ADVISORY_LOCK) is set or a pooler sits in between). Otherwise failed,
    reported as C(interrupted) (a probe or a rollout killed the migrating pod).
  - ClickHouse, from golang-migrate's C(schema_migrations) table (the row with the highest C(sequence) is the current
    state), over the HTTP interface. C(dirty) means a migration started and did not finish; there is no lock to tell
    whether it is still running, so O(wait) waits for it to clear.
  - A missing table is a fresh database (RV(postgres.fresh)/RV(clickhouse.fresh)), not an error.
  - Connects directly, or through the Kubernetes API server's port-forward to a pod or to a Ready pod behind a
    Service (the controller then needs no route into the cluster). Each connection gets a port-forward stream of its
    own, through a listener on 127.0.0.1 that lives as long as the check.
  - On a failed assertion it fails with the state in the result and a message that names the migration and the
    recovery step (C(prisma migrate resolve ...) or C(migrate ... force ...), run from the Langfuse web image).
version_added: 0.1.0
author: langfuse_ops.platform maintainers (@langfuse-ops)
extends_documentation_fragment:
  - langfuse_ops.platform.k8s_read_only
options:
  postgres:
    description:
      - Check the Postgres database Langfuse's C(DATABASE_URL) points at.
      - At least one of O(postgres) and O(clickhouse) is required.
    type: dict
    suboptions:
      host:
        description:
          - Server host name. Required unless O(postgres.forward) is set; with O(postgres.forward) it is only the name
            that O(postgres.sslmode=verify-full) checks the certificate against.
        type: str
      port:
        description: Server port; with O(postgres.forward.service), the Service port (mapped to its targetPort).
        type: int
        default: 5432
      user:
        description: User name.
        type: str
        required: true
      password:
        description: Password.
        type: str
      database:
        description: Database name (the path of C(DATABASE_URL)).
        type: str
        required: true
      schema:
        description: Schema that holds C(_prisma_migrations) (the C(schema=) parameter of C(DATABASE_URL)).
        type: str
        default: public
      sslmode:
        description: libpq C(sslmode).
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      ca_path:
        description: CA bundle that signed the server's certificate (libpq C(sslrootcert)).
        type: path
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
        default: 10
      forward:
        description: Reach the server through a Kubernetes port-forward instead of directly.
        type: dict
        suboptions:
          namespace:
            description: Namespace of the Service or pod.
            type: str
            required: true
          service:
            description: Service whose Ready pods serve the database (one of them is used).
            type: str
          pod:
            description: Pod to forward to; O(postgres.port) is then the pod's port.
            type: str
  clickhouse:
    description:
      - Check the ClickHouse database Langfuse migrates (C(CLICKHOUSE_DB)), over the HTTP interface.
      - At least one of O(postgres) and O(clickhouse) is required.
    type: dict
    suboptions:
      host:
        description:
          - Server host name (a single node or a cluster Service). Required unless O(clickhouse.forward) is set;
            with O(clickhouse.forward) it is only the name the TLS certificate is checked against.
        type: str
      port:
        description: HTTP(S) port; with O(clickhouse.forward.service), the Service port (mapped to its targetPort).
        type: int
        default: 8123
      user:
        description: User name (HTTP basic auth).
        type: str
        default: default
      password:
        description: Password.
        type: str
      database:
        description: Database that holds C(schema_migrations) (C(CLICKHOUSE_DB)).
        type: str
        default: default
      https:
        description: Use HTTPS.
        type: bool
        default: false
      validate_certs:
        description: Verify the server's certificate with HTTPS.
        type: bool
        default: true
      ca_path:
        description: CA bundle to verify the server's certificate with.
        type: path
      timeout:
        description: Seconds to wait for a connection or an answer.
        type: int
        default: 10
      forward:
        description: Reach the server through a Kubernetes port-forward instead of directly.
        type: dict
        suboptions:
          namespace:
            description: Namespace of the Service or pod.
            type: str
            required: true
          service:
            description: Service whose Ready pods serve ClickHouse (one of them is used).
            type: str
          pod:
            description: Pod to forward to; O(clickhouse.port) is then the pod's port.
            type: str
  wait:
    description:
      - Poll until no migration is in progress (no Postgres migration in progress, ClickHouse not dirty) and fail if
        that takes longer than O(wait_timeout). Connection errors are retried meanwhile.
      - Without it the state is read once; a Postgres migration in progress is reported (RV(settled=false)) and warned
        about, not failed.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait with O(wait).
    type: int
    default: 300
  wait_interval:
    description: Seconds between polls with O(wait).
    type: int
    default: 5
  in_progress_grace:
    description:
      - A Postgres migration without an error and without Prisma's lock counts as in progress for this many seconds
        after it started, then as failed (C(interrupted)).
    type: int
    default: 300
  expect_no_failed:
    description: Fail when a Postgres migration failed or was interrupted (and is not rolled back).
    type: bool
    default: true
  expect_background_migrations_done:
    description:
      - Fail unless every background migration (Postgres table C(background_migrations), run by the worker) has
        finished, naming each failed or unfinished one. Upstream asks that they finish before the next upgrade.
      - Needs O(postgres). A database without the table (a Langfuse older than background migrations) passes.
    type: bool
    default: false
  clickhouse_disk_factor:
    description:
      - Fail unless ClickHouse's disks can hold this many times the data of its active parts, that is unless the free space
        of the disk with the most free space is at least (factor - 1) times the bytes on disk of every active part (system.parts).
      - Langfuse v4's historic backfill needs about 3 (upgrade-v3-to-v4.mdx). Reads C(system.disks), which ClickHouse has
        since 19.15. Needs O(clickhouse).
    type: float
  backfill_scratch:
    description:
      - Also read the Langfuse v4 historic backfill's scratch table C(observations_pid_tid_sorting) (its active parts, rows,
        bytes on disk) and the background migrations that decide whether it may be dropped (step 4 of the backfill, and
        step 5, which drops it once the worker runs with C(LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES=true)),
        into RV(backfill_scratch).
      - Needs O(postgres) and O(clickhouse).
    type: bool
    default: false
  expect_backfill_scratch_droppable:
    description:
      - With O(backfill_scratch), fail unless step 5 has run or may run now - registered (Langfuse 4.16.0 or later), not
        failed, and step 4 finished. Upstream's step 5 marks itself failed for good when it starts before step 4 has
        finished, so its gate must not go on earlier.
    type: bool
    default: false
  expect_backfill_scratch_dropped:
    description:
      - With O(backfill_scratch), fail unless step 5 has finished (the worker dropped the table). With O(wait), wait for
        it to finish or fail, up to O(wait_timeout).
    type: bool
    default: false
  check_v4_clickhouse_grants:
    description:
      - Fail unless the ClickHouse user (O(clickhouse.user), the one Langfuse runs as) holds every grant Langfuse v4
        needs, as upstream lists them per purpose (langfuse-docs C(self-hosting/deployment/infrastructure/clickhouse.mdx),
        "User Permissions"; step 1 of C(upgrade-v3-to-v4.mdx) lists what is new over v3) - the database's tables and
        schema migrations, column reads of C(system.parts), C(system.mutations), C(system.tables), reads of
        C(system.processes) and C(system.query_log*), merge control on the historic backfill's scratch table, and,
        clustered, C(READ ON REMOTE) and C(CLUSTER ON *.*).
      - Asks the server with one C(CHECK GRANT) per privilege (ClickHouse 24.9 or later), which answers for the
        current user, its roles included, and changes nothing. The failure names each missing grant, what Langfuse
        uses it for, and the C(GRANT ... TO <user>) statements an admin runs (C(statements) of RV(clickhouse.grants)).
      - Answers for the node that served the connection (RV(clickhouse.host)). Grants are per node unless the users live
        in a replicated access storage, so without one check each replica through O(clickhouse.forward.pod).
      - Needs O(clickhouse).
    type: bool
    default: false
  clickhouse_cluster_enabled:
    description:
      - Whether Langfuse runs with C(CLICKHOUSE_CLUSTER_ENABLED=true), which adds C(READ ON REMOTE) and C(CLUSTER ON *.*)
        to the grants O(check_v4_clickhouse_grants) checks and C(ON CLUSTER default) to the statements it proposes.
      - When omitted, C(schema_migrations) tells (a C(Replicated*) engine means clustered migrations ran); without that
        table, Langfuse's default (clustered) applies.
      - Needs O(check_v4_clickhouse_grants).
    type: bool
  clickhouse_lightweight_update:
    description:
      - Langfuse runs with C(CLICKHOUSE_USE_LIGHTWEIGHT_UPDATE=true), so O(check_v4_clickhouse_grants) also requires the
        user's C(enable_lightweight_update) setting to be on (read with C(getSetting) as the user), else proposes upstream's
        settings profile.
      - Needs O(check_v4_clickhouse_grants).
    type: bool
  expect_not_dirty:
    description:
      - Fail when ClickHouse's current migration is dirty (with O(wait), once waiting did not clear it).
      - With V(false), O(wait) does not wait for a dirty version to clear.
    type: bool
    default: true
  min_clickhouse_version:
    description: Fail unless the ClickHouse schema is at this golang-migrate version or later (and that one not dirty).
    type: int
  expect_postgres_migrations:
    description: Fail unless each of these Prisma migrations (directory names) is applied.
    type: list
    elements: str
    aliases: [expect_postgres_migration]
  expect_replicated:
    description:
      - Fail unless C(schema_migrations) is (V(true)) or is not (V(false)) a C(Replicated*) table, that is unless
        migrations ran with C(CLICKHOUSE_CLUSTER_ENABLED) on (V(true)) or off (V(false)). Not checked when omitted.
    type: bool
notes:
  - The Postgres session is read-only; the ClickHouse queries are SELECTs and, with O(check_v4_clickhouse_grants),
    C(CHECK GRANT)s, which only read.
  - ClickHouse queries go over one keep-alive connection, so behind a Service they are all answered by the same
    replica (RV(clickhouse.host)).
requirements:
  - psycopg >= 3 (Python, for O(postgres))
  - kubernetes (Python, for O(postgres.forward) and O(clickhouse.forward))
"""

EXAMPLES = r"""
- name: Gate an upgrade on settled, healthy migrations (through the API server)
  langfuse_ops.platform.migration_status:
    postgres:
      user: langfuse
      password: "{{ langfuse_postgres_password }}"
      database: langfuse
      forward: {namespace: langfuse-data, service: langfuse-postgres-rw}
    clickhouse:
      user: langfuse
      password: "{{ langfuse_clickhouse_password }}"
      forward: {namespace: langfuse-data, service: clickhouse-langfuse}
    wait: true
    wait_timeout: 900
    expect_replicated: true
  register: migrations

- name: After the upgrade, require the new schema
  langfuse_ops.platform.migration_status:
    postgres:
      host: langfuse.abcdefgh.eu-west-1.rds.amazonaws.com
      user: langfuse
      password: "{{ langfuse_postgres_password }}"
      database: langfuse
      sslmode: verify-full
      ca_path: /etc/ssl/rds-global-bundle.pem
    clickhouse:
      host: clickhouse.example.internal
      port: 8443
      https: true
      user: langfuse
      password: "{{ langfuse_clickhouse_password }}"
    min_clickhouse_version: 37
    expect_postgres_migrations:
      - 20260721120000_add_boolean_score_widget_views

- name: Before the v4 server upgrade, require the grants Langfuse v4 needs
  langfuse_ops.platform.migration_status:
    clickhouse:
      user: langfuse
      password: "{{ langfuse_clickhouse_password }}"
      database: langfuse
      forward: {namespace: langfuse-data, service: clickhouse-langfuse}
    check_v4_clickhouse_grants: true
    clickhouse_cluster_enabled: true
"""

RETURN = r"""
postgres:
  description: Prisma's migration state in the Postgres database.
  returned: when O(postgres) is given and could be read
  type: dict
  contains:
    fresh:
      description: No C(_prisma_migrations) table yet (nothing ever migrated).
      type: bool
    applied_count:
      description: Migrations applied (finished and not rolled back).
      type: int
    latest_migration:
      description: The highest applied migration name (Prisma applies them in name order; names start with a timestamp).
      type: str
      sample: 20260721120000_add_boolean_score_widget_views
    latest_finished_at:
      description: When RV(postgres.latest_migration) finished (ISO 8601).
      type: str
    failed:
      description: Migrations neither finished nor rolled back and not in progress, with Prisma's C(logs).
      type: list
      elements: dict
      sample: [{migration_name: 20240604133340_backfill_manual_scores, reason: failed, logs: "...", started_at: "...", id: "..."}]
    in_progress:
      description: Migrations running now (see the description for how they are told from failed ones).
      type: list
      elements: dict
      sample: [{migration_name: 20260721120000_add_boolean_score_widget_views, running_seconds: 12}]
    rolled_back:
      description: Migrations marked rolled back; C(reapplied) says whether a later run applied them again.
      type: list
      elements: dict
    migrate_lock_held:
      description: Prisma Migrate's advisory lock is held in this database (a C(migrate deploy) is running).
      type: bool
    background_migrations:
      description:
        - The worker's background migrations (table C(background_migrations)); C(table_exists) false on a Langfuse
          older than them.
        - C(finished) lists names; C(unfinished) has C(name), C(locked_at), C(running); C(failed) has C(name),
          C(failed_at), C(failed_reason).
      type: dict
    connected_via:
      description: C(direct), or C(pod <namespace>/<pod>:<port>) through a port-forward.
      type: str
clickhouse:
  description: golang-migrate's state in the ClickHouse database.
  returned: when O(clickhouse) is given and could be read
  type: dict
  contains:
    fresh:
      description: No C(schema_migrations) table, an empty one, or version -1 (everything migrated down).
      type: bool
    table_exists:
      description: C(schema_migrations) exists.
      type: bool
    version:
      description: Current migration version (the row with the highest C(sequence)).
      type: int
      sample: 37
    dirty:
      description: The current migration started and did not finish.
      type: bool
    sequence:
      description: C(sequence) of the current row.
      type: int
    engine:
      description: Table engine of C(schema_migrations).
      type: str
      sample: ReplicatedMergeTree
    replicated:
      description: The engine is C(Replicated*) (migrations ran with C(CLICKHOUSE_CLUSTER_ENABLED) on).
      type: bool
    host:
      description: C(hostName()) of the server that answered.
      type: str
    server_version:
      description: ClickHouse server version.
      type: str
    disk:
      description:
        - With O(clickhouse_disk_factor) only. C(bytes_on_disk) of the active parts, C(free) on the roomiest disk
          (C(disk)), C(needed_free), C(enough), and every disk of C(system.disks).
      type: dict
    grants:
      description:
        - With O(check_v4_clickhouse_grants) only. C(user) (as C(currentUser) names it), C(clustered) and C(clustered_from) (why),
          C(checked) and C(granted) (counts), C(missing) (each with C(purpose), C(privilege), C(on), C(since) v3 or v4,
          C(why) and its C(grant) statement), C(errors) (checks the server refused, with its C(error)),
          C(lightweight_update) (with O(clickhouse_lightweight_update) only, C(enabled), C(error), C(statement)),
          C(statements) (what an admin runs, one per object) and C(enough).
      type: dict
      sample:
        user: langfuse
        clustered: false
        clustered_from: schema_migrations engine MergeTree
        checked: 21
        granted: 20
        missing:
          - purpose: system_tables
            privilege: SELECT(database, table, name, partition, partition_id, active, rows)
            "on": system.parts
            since: v4
            why: "finding partitions and parts: ..."
            grant: GRANT SELECT(database, table, name, partition, partition_id, active, rows) ON system.parts TO langfuse
        errors: []
        lightweight_update: null
        statements: [GRANT SELECT(database, table, name, partition, partition_id, active, rows) ON system.parts TO langfuse]
        enough: false
    system_logs_without_ttl:
      description:
        - ClickHouse's own log tables (C(system.*_log), MergeTree) whose engine has no TTL, so they grow until the disk is
          full (the module warns); null when the user may not read C(system.tables.engine_full) (C(system_logs_error)
          says why). The operator modes set TTLs (clickhouse_operator_system_log_ttl_days); an external server is yours
          to configure.
      type: list
      elements: str
      sample: [query_log, part_log]
    system_logs_error:
      description: Why C(system_logs_without_ttl) is null (the server's answer to the read).
      type: str
    database:
      description: The database read.
      type: str
    connected_via:
      description: C(direct), or C(pod <namespace>/<pod>:<port>) through a port-forward.
      type: str
backfill_scratch:
  description:
    - With O(backfill_scratch) only. C(table) (C(name), C(exists), C(parts), C(rows), C(bytes_on_disk) or null with
      C(bytes_error) when the user may not read that column of C(system.parts)), C(gate) (the env variable), C(after)
      (step 4) and C(step) (step 5), each with C(name) and C(state) (missing, waiting, running, failed with C(failed_at)
      and C(failed_reason), finished). Sizes are what the server that answered holds.
  returned: success
  type: dict
  sample:
    table: {name: observations_pid_tid_sorting, exists: true, parts: 3, rows: 120000, bytes_on_disk: 5242880, bytes_error: null}
    gate: LANGFUSE_BACKGROUND_MIGRATION_V4_DROP_PID_TID_SORTING_TABLES
    after: {name: 20260701_v4_step_4_backfill_events_full_from_dataset_run_items, state: finished}
    step: {name: 20260701_v4_step_5_drop_pid_tid_sorting_tables, state: waiting, locked_at: null}
settled:
  description: No migration in progress (no Postgres migration in progress, ClickHouse not dirty).
  returned: always
  type: bool
waited:
  description: Seconds spent waiting with O(wait).
  returned: always
  type: int
problems:
  description: Each failed assertion, with its recovery step (C(msg) joins them).
  returned: failure
  type: list
  elements: str
"""

import base64
import http.client
import json
import ssl
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.langfuse_ops.platform.plugins.module_utils import k8s_portforward as pf
from ansible_collections.langfuse_ops.platform.plugins.module_utils import migration_state as ms

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row
    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = exc


class ReadError(Exception):
    """The state could not be read (connection, authentication, query).

    grants: what check_v4_clickhouse_grants found when only the rest of the state could not be read.
    """

    def __init__(self, message, grants=None):
        super().__init__(message)
        self.grants = grants


class QueryError(ReadError):
    """The server answered, with an error (HTTP status other than 200): the connection itself is fine."""

    def __init__(self, message, answer):
        super().__init__(message)
        self.answer = answer


FORWARD_SPEC = dict(
    namespace=dict(type="str", required=True),
    service=dict(type="str"),
    pod=dict(type="str"),
)
FORWARD_RULES = dict(mutually_exclusive=[("service", "pod")], required_one_of=[("service", "pod")])

POSTGRES_SPEC = dict(
    host=dict(type="str"),
    port=dict(type="int", default=5432),
    user=dict(type="str", required=True),
    password=dict(type="str", no_log=True),
    database=dict(type="str", required=True),
    schema=dict(type="str", default="public"),
    sslmode=dict(type="str", default="prefer", choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
    ca_path=dict(type="path"),
    connect_timeout=dict(type="int", default=10),
    forward=dict(type="dict", options=FORWARD_SPEC, **FORWARD_RULES),
)

CLICKHOUSE_SPEC = dict(
    host=dict(type="str"),
    port=dict(type="int", default=8123),
    user=dict(type="str", default="default"),
    password=dict(type="str", no_log=True),
    database=dict(type="str", default="default"),
    https=dict(type="bool", default=False),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    timeout=dict(type="int", default=10),
    forward=dict(type="dict", options=FORWARD_SPEC, **FORWARD_RULES),
)

ARGUMENT_SPEC = dict(
    postgres=dict(type="dict", options=POSTGRES_SPEC),
    clickhouse=dict(type="dict", options=CLICKHOUSE_SPEC),
    kubeconfig=dict(type="path"),
    context=dict(type="str"),
    wait=dict(type="bool", default=False),
    wait_timeout=dict(type="int", default=300),
    wait_interval=dict(type="int", default=5),
    in_progress_grace=dict(type="int", default=300),
    expect_no_failed=dict(type="bool", default=True),
    expect_background_migrations_done=dict(type="bool", default=False),
    clickhouse_disk_factor=dict(type="float"),
    backfill_scratch=dict(type="bool", default=False),
    expect_backfill_scratch_droppable=dict(type="bool", default=False),
    expect_backfill_scratch_dropped=dict(type="bool", default=False),
    check_v4_clickhouse_grants=dict(type="bool", default=False),
    clickhouse_cluster_enabled=dict(type="bool"),
    clickhouse_lightweight_update=dict(type="bool"),
    expect_not_dirty=dict(type="bool", default=True),
    min_clickhouse_version=dict(type="int"),
    expect_postgres_migrations=dict(type="list", elements="str", aliases=["expect_postgres_migration"]),
    expect_replicated=dict(type="bool"),
)


# --- Postgres ---------------------------------------------------------------

PRISMA_ROWS = """
SELECT id, migration_name, started_at, finished_at, rolled_back_at, logs, applied_steps_count,
       extract(epoch FROM now() - started_at)::float8 AS age_seconds
FROM {table} ORDER BY started_at, migration_name
"""

BACKGROUND_ROWS = """
SELECT name, finished_at, failed_at, failed_reason, locked_at FROM {table} ORDER BY name
"""

PRISMA_LOCK_HELD = """
SELECT EXISTS (
  SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
  WHERE l.locktype = 'advisory' AND d.datname = current_database() AND l.granted
    AND l.classid = %(high)s AND l.objid = %(low)s AND l.objsubid = 1)
"""


def _iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def read_postgres(opts, address, port, where, grace):
    """Returns (state, applied migration names)."""
    kwargs = dict(
        host=opts["host"] or address, port=port, user=opts["user"], dbname=opts["database"], sslmode=opts["sslmode"],
        connect_timeout=opts["connect_timeout"], application_name="langfuse_ops.migration_status",
    )
    if address and opts["host"] and address != opts["host"]:
        # libpq connects to hostaddr and checks the certificate against host.
        kwargs["hostaddr"] = address
    if opts["password"] is not None:
        kwargs["password"] = opts["password"]
    if opts["ca_path"]:
        kwargs["sslrootcert"] = opts["ca_path"]
    try:
        with psycopg.connect(**kwargs) as conn:
            conn.read_only = True
            table = sql.Identifier(opts["schema"], "_prisma_migrations")
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table.as_string(conn)]).fetchone()[0]
            if not exists:
                return dict(ms.fresh_postgres(), background_migrations=ms.classify_background_migrations(None)), set()
            cur = conn.cursor(row_factory=dict_row)
            rows = cur.execute(sql.SQL(PRISMA_ROWS).format(table=table)).fetchall()
            background = sql.Identifier(opts["schema"], "background_migrations")
            background_rows = None
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", [background.as_string(conn)]).fetchone()[0]:
                background_rows = cur.execute(sql.SQL(BACKGROUND_ROWS).format(table=background)).fetchall()
                for row in background_rows:
                    for col in ("finished_at", "failed_at", "locked_at"):
                        row[col] = _iso(row[col])
            key = ms.PRISMA_MIGRATE_LOCK_KEY
            lock_held = conn.execute(PRISMA_LOCK_HELD, {"high": key >> 32, "low": key & 0xFFFFFFFF}).fetchone()[0]
    except psycopg.Error as exc:
        raise ReadError(f"Postgres {where}, database {opts['database']}: {str(exc).strip()}") from exc
    for row in rows:
        for col in ("started_at", "finished_at", "rolled_back_at"):
            row[col] = _iso(row[col])
    state = ms.classify_prisma_rows(rows, lock_held, grace)
    state["background_migrations"] = ms.classify_background_migrations(background_rows)
    return state, ms.applied_names(rows)


# --- ClickHouse -------------------------------------------------------------

class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address` with the certificate checked against `tls_name` (they differ through a port-forward)."""

    def __init__(self, address, port, tls_name, context, timeout):
        super().__init__(address, port, timeout=timeout, context=context)
        self._tls_name = tls_name
        self._tls_context = context

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._tls_name)


def _ch_string(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ch_identifier(value):
    return "`" + value.replace("\\", "\\\\").replace("`", "\\`") + "`"


class ClickHouseHTTP:
    """SELECTs over one keep-alive HTTP connection (so a Service's replicas cannot answer by turns)."""

    def __init__(self, opts, address, port, where):
        self.where = f"ClickHouse {where}"
        if opts["https"]:
            context = ssl.create_default_context(cafile=opts["ca_path"])
            if not opts["validate_certs"]:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self.conn = _HTTPSConnection(address, port, opts["host"] or address, context, opts["timeout"])
        else:
            self.conn = http.client.HTTPConnection(address, port, timeout=opts["timeout"])
        credentials = f"{opts['user']}:{opts['password'] or ''}".encode()
        self.headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode(), "Content-Type": "text/plain"}

    def _post(self, path, query):
        try:
            self.conn.request("POST", path, body=query.encode(), headers=self.headers)
            response = self.conn.getresponse()
            body = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            raise ReadError(f"{self.where}: {exc}") from exc
        if response.status != 200:
            raise QueryError(f"{self.where} answered HTTP {response.status}: {body.strip()[:500]}",
                             body.strip()[:500] or f"HTTP {response.status} without a message")
        return body

    def select(self, query):
        body = self._post("/", query + " FORMAT JSON")
        try:
            return json.loads(body)["data"]
        except (ValueError, KeyError) as exc:
            raise ReadError(f"{self.where}: not a JSON answer: {body[:200]!r}") from exc

    def check_grant(self, statement):
        """CHECK GRANT's answer, True or False. It takes no FORMAT clause: its one UInt8 comes as TabSeparated."""
        body = self._post("/?default_format=TabSeparated", statement).strip()
        if body not in ("0", "1"):
            raise ReadError(f"{self.where}: not a CHECK GRANT answer: {body[:200]!r}")
        return body == "1"

    def close(self):
        self.conn.close()


def read_grants(client, database, clustered, clustered_from, lightweight_update):
    """CHECK GRANT, as the connected user, for each privilege Langfuse v4 needs; see ms.required_grants."""
    user = client.select("SELECT currentUser() AS user")[0]["user"]
    checks = ms.required_grants(database, clustered)
    results = []
    for entry in checks:
        try:
            results.append(client.check_grant(entry["check"]))
        except QueryError as exc:  # refused (e.g. a server without CHECK GRANT): reported, the others still checked
            results.append(exc.answer)
    lightweight = None
    if lightweight_update:
        try:
            lightweight = bool(int(client.select(
                "SELECT toUInt8(getSetting('enable_lightweight_update')) AS enabled")[0]["enabled"]))
        except QueryError as exc:
            lightweight = exc.answer
    return ms.summarize_grants(checks, results, user, clustered, clustered_from, lightweight)


def read_system_logs_without_ttl(client):
    """{system_logs_without_ttl: [names]}: the system log tables without a TTL; None (with system_logs_error) when the
    server would not say, which the caller reports and never fails on (a user with upstream's grants reads only the
    database, name and engine columns of system.tables)."""
    try:
        rows = client.select(
            "SELECT name FROM system.tables WHERE database = 'system' AND endsWith(name, '_log') AND engine LIKE '%MergeTree' "
            "AND position(engine_full, ' TTL ') = 0 ORDER BY name")
    except QueryError as exc:
        return {"system_logs_without_ttl": None, "system_logs_error": str(exc)}
    return {"system_logs_without_ttl": [r["name"] for r in rows]}


def read_scratch_table(client, database):
    """The v4 backfill's scratch table on this server: {exists, parts, rows, bytes_on_disk, bytes_error}. Upstream's
    grants give the Langfuse user some columns of system.parts only, without bytes_on_disk: then the size on disk is
    None and bytes_error says why."""
    where = f"database = {_ch_string(database)} AND table = {_ch_string(ms.BACKFILL_SCRATCH_TABLE)}"
    exists = bool(client.select(f"SELECT name FROM system.tables WHERE database = {_ch_string(database)} "
                                f"AND name = {_ch_string(ms.BACKFILL_SCRATCH_TABLE)}"))
    counts = client.select(f"SELECT toUInt64(count()) AS parts, toUInt64(sum(rows)) AS rows FROM system.parts "
                           f"WHERE active AND {where}")[0]
    table = {"exists": exists, "parts": int(counts["parts"]), "rows": int(counts["rows"]), "bytes_on_disk": None,
             "bytes_error": None}
    try:
        table["bytes_on_disk"] = int(client.select(f"SELECT toUInt64(sum(bytes_on_disk)) AS b FROM system.parts "
                                                   f"WHERE active AND {where}")[0]["b"])
    except QueryError as exc:
        table["bytes_error"] = str(exc)
    return table


def read_clickhouse(opts, address, port, where, disk_factor=None, grants=None, scratch=False):
    """grants: None, or {cluster_enabled, lightweight_update} to check the user's grants for Langfuse v4; scratch:
    read the v4 backfill's scratch table too."""
    client = ClickHouseHTTP(opts, address, port, where)
    disks = used = None
    grant_state = None
    try:
        info = client.select("SELECT hostName() AS host, version() AS server_version")[0]
        try:
            tables = client.select(
                f"SELECT engine FROM system.tables WHERE database = {_ch_string(opts['database'])} AND name = 'schema_migrations'")
            engine = tables[0]["engine"] if tables else None
            row = None
            if engine is not None:
                rows = client.select(
                    f"SELECT version, dirty, sequence FROM {_ch_identifier(opts['database'])}.schema_migrations "
                    "ORDER BY sequence DESC LIMIT 1")
                row = rows[0] if rows else None
            if disk_factor is not None:
                used = int(client.select("SELECT toUInt64(sum(bytes_on_disk)) AS used FROM system.parts WHERE active")[0]["used"])
                disks = client.select("SELECT name, path, toUInt64(free_space) AS free_space, "
                                      "toUInt64(total_space) AS total_space FROM system.disks")
        except QueryError as exc:
            if grants is None:
                raise
            # Typically a user without SELECT ON system.tables on a server that wants grants for system tables (a v3
            # user before the v4 grants): the grant check still names everything that is missing.
            clustered, clustered_from = ms.resolve_clustered(grants.get("cluster_enabled"), None)
            grant_state = read_grants(client, opts["database"], clustered, clustered_from, grants.get("lightweight_update"))
            found = ms.grant_problems(grant_state, opts["database"], info["host"])
            raise ReadError(f"{exc} | the grant check ran nonetheless: {' | '.join(found) or 'nothing is missing'}",
                            grants=grant_state) from exc
        state = ms.summarize_clickhouse(engine, row)
        state.update(read_system_logs_without_ttl(client))
        if scratch:
            state["backfill_scratch_table"] = read_scratch_table(client, opts["database"])
        if grants is not None:
            clustered, clustered_from = ms.resolve_clustered(grants.get("cluster_enabled"), state)
            grant_state = read_grants(client, opts["database"], clustered, clustered_from, grants.get("lightweight_update"))
    finally:
        client.close()
    state.update(host=info["host"], server_version=info["server_version"], database=opts["database"])
    if disk_factor is not None:
        state["disk"] = ms.disk_headroom(used, disks, disk_factor)
    if grant_state is not None:
        state["grants"] = grant_state
    return state


# --- orchestration ----------------------------------------------------------

def through_target(module, opts, read, *args):
    """Calls read(opts, address, port, where, *args) directly or through a port-forward; adds connected_via."""
    forward = opts["forward"]
    if not forward:
        where = f"{opts['host']}:{opts['port']}"
        result = read(opts, opts["host"], opts["port"], where, *args)
        via = "direct"
    else:
        api = kube_api(module)
        namespace = forward["namespace"]
        what = f"Service {namespace}/{forward['service']}" if forward["service"] else f"pod {namespace}/{forward['pod']}"
        try:
            if forward["service"]:
                pod, pod_port = pf.service_target(api, namespace, forward["service"], opts["port"])
            else:
                pod, pod_port = forward["pod"], opts["port"]
        except pf.client.exceptions.ApiException as exc:
            raise ReadError(f"Kubernetes API: {exc.status} {exc.reason} reading {what}") from exc
        except ConnectionError as exc:
            raise ReadError(str(exc)) from exc
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # urllib3 errors when the API server does not answer: worth a retry under wait.
            raise ReadError(f"Kubernetes API unreachable reading {what}: {exc}") from exc
        via = f"pod {namespace}/{pod}:{pod_port}"
        with pf.local_forward(api, namespace, pod, pod_port) as fwd:
            try:
                result = read(opts, "127.0.0.1", fwd.port, f"{via} (port-forward)", *args)
            except ReadError as exc:
                failures = fwd.failures()
                raise ReadError(f"{exc}{' | ' + '; '.join(failures) if failures else ''}", grants=exc.grants) from exc
    state = result[0] if isinstance(result, tuple) else result
    state["connected_via"] = via
    return result


_API = {}


def kube_api(module):
    if "api" not in _API:
        if not pf.HAS_KUBERNETES:
            module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(pf.KUBERNETES_IMPORT_ERROR))
        try:
            _API["api"] = pf.core_api(module.params["kubeconfig"], module.params["context"])
        except Exception as exc:  # pylint: disable=broad-exception-caught
            module.fail_json(msg=f"cannot load the kubeconfig for the port-forward: {exc}")
    return _API["api"]


def read_state(module):
    params = module.params
    result, applied = {}, set()
    if params["postgres"]:
        result["postgres"], applied = through_target(module, params["postgres"], read_postgres, params["in_progress_grace"])
    if params["clickhouse"]:
        grants = None
        if params["check_v4_clickhouse_grants"]:
            grants = {"cluster_enabled": params["clickhouse_cluster_enabled"],
                      "lightweight_update": bool(params["clickhouse_lightweight_update"])}
        result["clickhouse"] = through_target(module, params["clickhouse"], read_clickhouse,
                                              params["clickhouse_disk_factor"], grants, params["backfill_scratch"])
    if params["backfill_scratch"]:
        result["backfill_scratch"] = ms.scratch_state(result["postgres"]["background_migrations"],
                                                      result["clickhouse"].pop("backfill_scratch_table"))
    return result, applied


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_one_of=[("postgres", "clickhouse")], supports_check_mode=True)
    params = module.params
    errors = ms.validate_params(params)
    if errors:
        module.fail_json(msg="; ".join(errors))
    if params["postgres"] and not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=str(PSYCOPG_IMPORT_ERROR))

    start = time.monotonic()
    deadline = start + params["wait_timeout"]
    while True:
        try:
            state, applied = read_state(module)
        except ReadError as exc:
            if params["wait"] and time.monotonic() < deadline:
                time.sleep(params["wait_interval"])
                continue
            waited = f" (waited {int(time.monotonic() - start)}s)" if params["wait"] else ""
            found = {"clickhouse": {"grants": exc.grants}} if exc.grants is not None else {}
            module.fail_json(msg=f"could not read the migration state{waited}: {exc}", settled=False,
                             waited=int(time.monotonic() - start), **found)
        pending = ms.pending_reasons(state, dirty_counts=params["expect_not_dirty"])
        if params["expect_backfill_scratch_dropped"] and state["backfill_scratch"]["step"]["state"] in ("waiting", "running"):
            pending.append(f"{ms.SCRATCH_DROP_STEP} {state['backfill_scratch']['step']['state']}")
        if not params["wait"] or not pending or time.monotonic() >= deadline:
            break
        time.sleep(params["wait_interval"])

    waited = int(time.monotonic() - start) if params["wait"] else 0
    result = dict(state, changed=False, settled=not ms.pending_reasons(state), waited=waited)
    problems = []
    if "postgres" in state:
        problems += ms.postgres_problems(state["postgres"], applied, params["expect_no_failed"], params["expect_postgres_migrations"])
        if params["expect_background_migrations_done"]:
            problems += ms.background_problems(state["postgres"]["background_migrations"])
        for entry in state["postgres"]["in_progress"]:
            if params["wait"]:
                problems.append(f"Postgres migration {entry['migration_name']} is still in progress after waiting {waited}s "
                                f"(running {entry['running_seconds']}s); raise wait_timeout, or look at the web pod running it")
            else:
                module.warn(f"Postgres migration {entry['migration_name']} is in progress (running {entry['running_seconds']}s); "
                            "use wait=true to wait for it")
    if "clickhouse" in state:
        if state["clickhouse"].get("system_logs_without_ttl"):
            module.warn(ms.system_log_warning(state["clickhouse"]["system_logs_without_ttl"], state["clickhouse"]["host"]))
        problems += ms.clickhouse_problems(state["clickhouse"], params["clickhouse"]["database"], params["expect_not_dirty"],
                                           params["min_clickhouse_version"], params["expect_replicated"],
                                           waited=waited if params["wait"] else None)
        if "disk" in state["clickhouse"]:
            problems += ms.disk_problems(state["clickhouse"]["disk"])
        if "grants" in state["clickhouse"]:
            problems += ms.grant_problems(state["clickhouse"]["grants"], params["clickhouse"]["database"],
                                          state["clickhouse"]["host"])
    if params["backfill_scratch"] and params["expect_backfill_scratch_droppable"]:
        problems += ms.scratch_problems(state["backfill_scratch"])
    if params["backfill_scratch"] and params["expect_backfill_scratch_dropped"]:
        problems += ms.scratch_drop_problems(state["backfill_scratch"], waited if params["wait"] else None)
    if problems:
        module.fail_json(msg=" | ".join(problems), problems=problems, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
