#!/usr/bin/env bash
# Real data services for the tests, from Debian packages (and moto for S3),
# on 127.0.0.1 only, with throwaway data under $LOCALENV_STATE/services:
#   PostgreSQL 15, Redis 7 (maxmemory-policy noeviction), ClickHouse (HTTP),
#   S3 (moto server).
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
  local ch=(curl -fsS -u "default:$LOCALENV_CLICKHOUSE_PASSWORD" "http://127.0.0.1:$LOCALENV_CLICKHOUSE_HTTP_PORT/")
  "${ch[@]}" --data-binary 'CREATE TABLE IF NOT EXISTS default.schema_migrations (version Int64, dirty UInt8, sequence UInt64) ENGINE = MergeTree ORDER BY sequence' >/dev/null \
    || die "could not create schema_migrations in ClickHouse"
  [ "$("${ch[@]}" --data-binary 'SELECT count() FROM default.schema_migrations')" != 0 ] \
    || "${ch[@]}" --data-binary 'INSERT INTO default.schema_migrations VALUES (37, 0, 1)' >/dev/null \
    || die "could not seed schema_migrations in ClickHouse"
}

up() {
  mkdir -p "$SVC"; chmod 755 "$LOCALENV_STATE" "$SVC"
  "$LOCALENV_DIR/system-packages.sh"
  write_env_file
  # shellcheck source=/dev/null
  set -a; . "$ENV_FILE"; set +a
  start_postgres; start_redis; start_clickhouse; start_s3
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
  stop_pidfile "$SVC/redis.pid"; stop_pidfile "$SVC/clickhouse.pid"; stop_pidfile "$SVC/moto.pid"
  rm -rf "$SVC"
  log "services stopped, data removed"
}

status() {
  [ -f "$ENV_FILE" ] || { log "services are down"; return 1; }
  # shellcheck source=/dev/null
  set -a; . "$ENV_FILE"; set +a
  check_ready && log "postgres, redis, clickhouse, s3: up"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) [ -f "$ENV_FILE" ] || die "services are not up: run '$0 up'"; sed 's/^/export /' "$ENV_FILE" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
