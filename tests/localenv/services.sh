#!/usr/bin/env bash
# Real data services for the tests, from Debian packages (and moto for S3),
# on 127.0.0.1 only, with throwaway data under $LOCALENV_STATE/services:
#   PostgreSQL 15, Redis 7 (maxmemory-policy noeviction), S3 (moto server),
#   ClickHouse 26 (chDB, the engine in process, behind chdb_http.py: the
#   embedded default's ClickHouse, HTTP only) and Debian's ClickHouse 18.16
#   (a network server with the native protocol, for the tests that need one);
#   an age key pair for the app secrets in the backups (its identity is a file
#   next to the settings, as a secret store would hold it).
#
#   services.sh up      install missing packages (apt), start all, wait ready
#   services.sh down    stop all and delete their data
#   services.sh status
#   services.sh env     print connection settings (sourceable; holds the
#                       throwaway passwords generated at first start)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${LOCALENV_POSTGRES_PORT:=15432}"
: "${LOCALENV_REDIS_PORT:=16379}"
: "${LOCALENV_CLICKHOUSE_HTTP_PORT:=18123}"
: "${LOCALENV_CLICKHOUSE_TCP_PORT:=19000}"
: "${LOCALENV_S3_PORT:=15000}"
: "${LOCALENV_CHDB_HTTP_PORT:=18124}"
: "${LOCALENV_VENV:=$LOCALENV_DIR/../../.venv}"
SVC="$LOCALENV_STATE/services"
PG_BIN=/usr/lib/postgresql/15/bin
ENV_FILE="$SVC/services.env"

random_password() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 32; }

write_env_file() {
  [ -f "$ENV_FILE" ] && return
  umask 077
  cat >"$ENV_FILE" <<ENV
LOCALENV_POSTGRES_HOST=127.0.0.1
LOCALENV_POSTGRES_PORT=$LOCALENV_POSTGRES_PORT
LOCALENV_POSTGRES_USER=postgres
LOCALENV_POSTGRES_PASSWORD=$(random_password)
LOCALENV_REDIS_HOST=127.0.0.1
LOCALENV_REDIS_PORT=$LOCALENV_REDIS_PORT
LOCALENV_REDIS_PASSWORD=$(random_password)
LOCALENV_CLICKHOUSE_HOST=127.0.0.1
LOCALENV_CLICKHOUSE_HTTP_PORT=$LOCALENV_CLICKHOUSE_HTTP_PORT
LOCALENV_CLICKHOUSE_TCP_PORT=$LOCALENV_CLICKHOUSE_TCP_PORT
LOCALENV_CLICKHOUSE_USER=default
LOCALENV_CLICKHOUSE_PASSWORD=$(random_password)
LOCALENV_S3_ENDPOINT=http://127.0.0.1:$LOCALENV_S3_PORT
LOCALENV_S3_REGION=us-east-1
LOCALENV_S3_ACCESS_KEY_ID=localenv
LOCALENV_S3_SECRET_ACCESS_KEY=$(random_password)
ENV
}

# Settings added after a state directory was first made: appended when missing, so an older one keeps working.
add_env_setting() {
  grep -q "^$1=" "$ENV_FILE" || { umask 077; echo "$1=$2" >>"$ENV_FILE"; }
}

# The age key pair backups encrypt Langfuse's app secrets to: the recipient (public) goes into the inventory, the
# identity stays in a file only restores read, as a real one stays in the secret store.
write_age_key_pair() {
  local identity="$SVC/app-secrets.age-identity"
  if [ ! -s "$identity" ]; then
    [ -x "$LOCALENV_VENV/bin/python" ] || die "the venv is missing ($LOCALENV_VENV): run 'make venv' first"
    (umask 077; "$LOCALENV_VENV/bin/python" -c 'from pyrage import x25519; print(x25519.Identity.generate())' >"$identity.new") \
      || die "could not generate an age identity with pyrage"
    mv "$identity.new" "$identity"
    sed -i '/^LOCALENV_AGE_RECIPIENT=/d' "$ENV_FILE"
  fi
  add_env_setting LOCALENV_AGE_IDENTITY_FILE "$identity"
  add_env_setting LOCALENV_AGE_RECIPIENT "$("$LOCALENV_VENV/bin/python" -c 'import sys
from pyrage import x25519
print(x25519.Identity.from_str(open(sys.argv[1]).read().strip()).to_public())' "$identity")"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_postgres() {
  local data="$SVC/postgres"
  if [ -f "$data/postmaster.pid" ] && kill -0 "$(head -n1 "$data/postmaster.pid")" 2>/dev/null; then log "postgres: running"; return; fi
  require_free_port "$LOCALENV_POSTGRES_PORT" PostgreSQL
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"; chown postgres: "$data" 2>/dev/null || true
    local pwfile; pwfile=$(mktemp); echo "$LOCALENV_POSTGRES_PASSWORD" >"$pwfile"; chmod 644 "$pwfile"
    as_postgres "$PG_BIN/initdb" -D "$data" -U postgres --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 >"$SVC/postgres-init.log" 2>&1 \
      || { rm -f "$pwfile"; die "initdb failed; see $SVC/postgres-init.log"; }
    rm -f "$pwfile"
  fi
  log "postgres: starting on 127.0.0.1:$LOCALENV_POSTGRES_PORT"
  touch "$SVC/postgres.log"; chown postgres: "$SVC/postgres.log" 2>/dev/null || true
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$SVC/postgres.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -c port=$LOCALENV_POSTGRES_PORT -c unix_socket_directories=$data -c fsync=off" >/dev/null \
    || die "postgres did not start; see $SVC/postgres.log"
}

# initdb and postgres refuse to run as root.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_redis() {
  local pid="$SVC/redis.pid"
  pid_alive "$pid" && { log "redis: running"; return; }
  require_free_port "$LOCALENV_REDIS_PORT" Redis
  mkdir -p "$SVC/redis"
  log "redis: starting on 127.0.0.1:$LOCALENV_REDIS_PORT (maxmemory-policy noeviction)"
  umask 077
  cat >"$SVC/redis.conf" <<CONF
bind 127.0.0.1
port $LOCALENV_REDIS_PORT
protected-mode yes
daemonize yes
pidfile $pid
logfile $SVC/redis.log
dir $SVC/redis
requirepass $LOCALENV_REDIS_PASSWORD
maxmemory 256mb
maxmemory-policy noeviction
CONF
  redis-server "$SVC/redis.conf"
  wait_for_port "$LOCALENV_REDIS_PORT" Redis
}

start_clickhouse() {
  local pid="$SVC/clickhouse.pid" dir="$SVC/clickhouse"
  pid_alive "$pid" && { log "clickhouse: running"; return; }
  require_free_port "$LOCALENV_CLICKHOUSE_HTTP_PORT" "ClickHouse HTTP"
  require_free_port "$LOCALENV_CLICKHOUSE_TCP_PORT" "ClickHouse native"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
  log "clickhouse: starting on 127.0.0.1:$LOCALENV_CLICKHOUSE_HTTP_PORT (http), :$LOCALENV_CLICKHOUSE_TCP_PORT (native)"
  umask 077
  cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$SVC/clickhouse.log</log><errorlog>$SVC/clickhouse.err.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$LOCALENV_CLICKHOUSE_HTTP_PORT</http_port>
    <tcp_port>$LOCALENV_CLICKHOUSE_TCP_PORT</tcp_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
</yandex>
XML
  cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password>$LOCALENV_CLICKHOUSE_PASSWORD</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
  clickhouse-server --config-file="$dir/config.xml" --pid-file="$pid" --daemon >"$SVC/clickhouse-start.log" 2>&1 \
    || die "clickhouse-server did not start; see $SVC/clickhouse-start.log and $SVC/clickhouse.err.log"
  wait_for_port "$LOCALENV_CLICKHOUSE_HTTP_PORT" "ClickHouse HTTP" 300
}

# ClickHouse 26: chDB behind ClickHouse's HTTP interface (chdb_http.py), same user and password as the 18.16 server,
# recording its queries in system.query_log as a server does (the leak checks read it).
start_chdb() {
  local pid="$SVC/chdb.pid"
  pid_alive "$pid" && { log "clickhouse 26 (chDB): running"; return; }
  require_free_port "$LOCALENV_CHDB_HTTP_PORT" "ClickHouse 26 (chDB) HTTP"
  [ -x "$LOCALENV_VENV/bin/python" ] || die "the venv is missing ($LOCALENV_VENV): run 'make venv' first"
  log "clickhouse 26 (chDB): starting on 127.0.0.1:$LOCALENV_CHDB_HTTP_PORT (http)"
  CHDB_HTTP_PASSWORD=$LOCALENV_CLICKHOUSE_PASSWORD nohup "$LOCALENV_VENV/bin/python" "$LOCALENV_DIR/chdb_http.py" \
    --port "$LOCALENV_CHDB_HTTP_PORT" --path "$SVC/chdb" --query-log >"$SVC/chdb.out" 2>"$SVC/chdb.log" &
  echo $! >"$pid"
  wait_for_port "$LOCALENV_CHDB_HTTP_PORT" "ClickHouse 26 (chDB)" 600
}

start_s3() {
  local pid="$SVC/moto.pid"
  pid_alive "$pid" && { log "s3 (moto): running"; return; }
  require_free_port "$LOCALENV_S3_PORT" "S3 (moto)"
  [ -x "$LOCALENV_VENV/bin/moto_server" ] || die "moto_server is not in $LOCALENV_VENV: run 'make venv' first"
  log "s3 (moto): starting on 127.0.0.1:$LOCALENV_S3_PORT"
  nohup "$LOCALENV_VENV/bin/moto_server" -H 127.0.0.1 -p "$LOCALENV_S3_PORT" >"$SVC/moto.log" 2>&1 &
  echo $! >"$pid"
  wait_for_port "$LOCALENV_S3_PORT" "S3 (moto)"
}

check_ready() {
  PGPASSWORD=$LOCALENV_POSTGRES_PASSWORD psql -h 127.0.0.1 -p "$LOCALENV_POSTGRES_PORT" -U postgres -Atc 'select 1' >/dev/null \
    || die "postgres does not answer queries on 127.0.0.1:$LOCALENV_POSTGRES_PORT"
  [ "$(REDISCLI_AUTH=$LOCALENV_REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "$LOCALENV_REDIS_PORT" ping)" = PONG ] \
    || die "redis does not answer PING on 127.0.0.1:$LOCALENV_REDIS_PORT"
  local ok=""
  for _ in $(seq 50); do
    ok=$(curl -fsS -u "default:$LOCALENV_CLICKHOUSE_PASSWORD" "http://127.0.0.1:$LOCALENV_CLICKHOUSE_HTTP_PORT/" \
         --data-binary 'SELECT 1' 2>/dev/null || true)
    [ "$ok" = 1 ] && break; sleep 0.2
  done
  [ "$ok" = 1 ] || die "clickhouse does not answer 'SELECT 1' over HTTP on 127.0.0.1:$LOCALENV_CLICKHOUSE_HTTP_PORT"
  ok=$(curl -fsS -u "default:$LOCALENV_CLICKHOUSE_PASSWORD" "http://127.0.0.1:$LOCALENV_CHDB_HTTP_PORT/" --data-binary 'SELECT 1' 2>/dev/null || true)
  [ "$ok" = 1 ] || die "clickhouse 26 (chDB) does not answer 'SELECT 1' over HTTP on 127.0.0.1:$LOCALENV_CHDB_HTTP_PORT; see $SVC/chdb.log"
  curl -fsS -o /dev/null "http://127.0.0.1:$LOCALENV_S3_PORT/" || die "moto (S3) does not answer on 127.0.0.1:$LOCALENV_S3_PORT"
}

# No Langfuse container runs on the local control plane, so no migration ever
# runs here: the install's migration Job completes without migrating. Seed
# what a migration run of Langfuse 3.224.1 (the local inventory's version)
# leaves in the two tables the migration gate reads, and nothing else: its
# latest Prisma migration, and golang-migrate at ClickHouse version 37, clean.
# Only where they are missing; tests that need other states use databases of
# their own.
seed_migration_state() {
  PGPASSWORD=$LOCALENV_POSTGRES_PASSWORD psql -h 127.0.0.1 -p "$LOCALENV_POSTGRES_PORT" -U postgres -Atqc \
    "SELECT 1 FROM pg_database WHERE datname = 'langfuse'" | grep -q 1 \
    || PGPASSWORD=$LOCALENV_POSTGRES_PASSWORD psql -h 127.0.0.1 -p "$LOCALENV_POSTGRES_PORT" -U postgres -qc 'CREATE DATABASE langfuse' \
    || die "could not create the database langfuse"
  PGPASSWORD=$LOCALENV_POSTGRES_PASSWORD psql -h 127.0.0.1 -p "$LOCALENV_POSTGRES_PORT" -U postgres -d langfuse -q \
    -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || die "could not seed _prisma_migrations in the database langfuse"
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL, "checksum" VARCHAR(64) NOT NULL, "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT, "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(), "applied_steps_count" INTEGER NOT NULL DEFAULT 0);
INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, applied_steps_count)
SELECT '00000000-0000-4000-8000-000000000001', repeat('0', 64), now(), '20260721120000_add_boolean_score_widget_views', 1
WHERE NOT EXISTS (SELECT 1 FROM "_prisma_migrations");
SQL
  # The local inventory's database is `langfuse`: chDB's `default` is an Overlay database, which
  # `RESTORE DATABASE ... AS` cannot recreate (a real server's `default` is Atomic). 18.16 gets it too, for the
  # operator modes, whose ClickHouse pods KWOK forwards to it; and `default`, as a bare server has it.
  seed_clickhouse "$LOCALENV_CLICKHOUSE_HTTP_PORT" default
  seed_clickhouse "$LOCALENV_CLICKHOUSE_HTTP_PORT" langfuse
  seed_clickhouse "$LOCALENV_CHDB_HTTP_PORT" langfuse
}

seed_clickhouse() {
  local port=$1 db=$2
  local ch=(curl -fsS -u "default:$LOCALENV_CLICKHOUSE_PASSWORD" "http://127.0.0.1:$port/")
  "${ch[@]}" --data-binary "CREATE DATABASE IF NOT EXISTS $db" >/dev/null || die "could not create the database $db in ClickHouse on :$port"
  "${ch[@]}" --data-binary "CREATE TABLE IF NOT EXISTS $db.schema_migrations (version Int64, dirty UInt8, sequence UInt64) ENGINE = MergeTree ORDER BY sequence" >/dev/null \
    || die "could not create schema_migrations in ClickHouse on :$port"
  [ "$("${ch[@]}" --data-binary "SELECT count() FROM $db.schema_migrations")" != 0 ] \
    || "${ch[@]}" --data-binary "INSERT INTO $db.schema_migrations VALUES (37, 0, 1)" >/dev/null \
    || die "could not seed schema_migrations in ClickHouse on :$port"
}

up() {
  mkdir -p "$SVC"; chmod 755 "$LOCALENV_STATE" "$SVC"
  "$LOCALENV_DIR/system-packages.sh"
  write_env_file
  add_env_setting LOCALENV_CHDB_HTTP_PORT "$LOCALENV_CHDB_HTTP_PORT"
  add_env_setting LOCALENV_BACKUP_SIGNING_KEY "$(random_password)$(random_password)"
  write_age_key_pair
  # shellcheck source=/dev/null
  set -a; . "$ENV_FILE"; set +a
  start_postgres; start_redis; start_clickhouse; start_chdb; start_s3
  check_ready
  seed_migration_state
  log "services ready; settings: $ENV_FILE"
}

stop_pidfile() {
  local pid=$1
  if pid_alive "$pid"; then
    kill "$(cat "$pid")" 2>/dev/null || true
    for _ in $(seq 50); do pid_alive "$pid" || break; sleep 0.2; done
  fi
  rm -f "$pid"
}

down() {
  if [ -f "$SVC/postgres/postmaster.pid" ]; then as_postgres "$PG_BIN/pg_ctl" -D "$SVC/postgres" -m fast stop >/dev/null 2>&1 || true; fi
  stop_pidfile "$SVC/redis.pid"; stop_pidfile "$SVC/clickhouse.pid"; stop_pidfile "$SVC/chdb.pid"
  stop_pidfile "$SVC/moto.pid"
  rm -rf "$SVC"
  log "services stopped, data removed"
}

status() {
  [ -f "$ENV_FILE" ] || { log "services are down"; return 1; }
  # shellcheck source=/dev/null
  set -a; . "$ENV_FILE"; set +a
  check_ready && log "postgres, redis, clickhouse 18.16, clickhouse 26 (chDB), s3: up"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) [ -f "$ENV_FILE" ] || die "services are not up: run '$0 up'"; sed 's/^/export /' "$ENV_FILE" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
