#!/usr/bin/env bash
# Shared by the backup and restore scripts of langfuse_ops.platform. They run
# in the backup Jobs' containers (from the ConfigMap the backup_cron role makes)
# and, unchanged, in the collection's CI against a real PostgreSQL and S3.
#
# A backup is complete when its manifest.json exists: the manifest is written
# last, so a restore never picks a backup that stopped half-way.
set -euo pipefail

log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need() { local v; for v in "$@"; do [ -n "${!v:-}" ] || die "environment variable $v is not set"; done; }

# aws, pointed at the configured endpoint (empty: AWS itself), path-style when asked.
s3() {
  if [ "${S3_FORCE_PATH_STYLE:-false}" = true ] && [ -z "${AWS_CONFIG_FILE:-}" ]; then
    AWS_CONFIG_FILE=$(mktemp)
    printf '[default]\ns3 =\n    addressing_style = path\n' >"$AWS_CONFIG_FILE"
    export AWS_CONFIG_FILE
  fi
  aws ${S3_ENDPOINT:+--endpoint-url "$S3_ENDPOINT"} "$@"
}

# s3://bucket/prefix/<kind>, the folder one kind of backup lives in.
s3_base() { need S3_BUCKET; printf 's3://%s/%s%s' "$S3_BUCKET" "${S3_PREFIX:+${S3_PREFIX%/}/}" "$1"; }

# The sub-folders (backup IDs, sortable timestamps) under an s3:// folder, oldest first.
s3_folders() {
  { s3 s3 ls "${1%/}/" || true; } | awk '$1 == "PRE" { sub("/$", "", $2); print $2 }' | sort
}

s3_exists() { s3 s3 ls "$1" >/dev/null 2>&1; }

backup_id() { date -u +%Y%m%dT%H%M%SZ; }

# The two halves of a streamed backup or restore, the FIFO between them, here in one place (what the
# Job's two containers do with a shared emptyDir): `run_halves <script> <background half> <foreground half>`.
make_fifo() { [ -p "$FIFO" ] || mkfifo "$FIFO" 2>/dev/null || [ -p "$FIFO" ] || die "cannot create the FIFO $FIFO"; }
run_halves() {
  local rc=0 background
  STREAM_DIR=$(mktemp -d); FIFO=$STREAM_DIR/dump; export STREAM_DIR
  make_fifo
  "$1" "$2" & background=$!
  "$1" "$3" || rc=$?
  wait "$background" || [ "$rc" -ne 0 ] || rc=1
  rm -rf "$STREAM_DIR"
  return "$rc"
}

# The version the running Langfuse reports, or "unknown": recorded so a restore
# can refuse a backup taken by a newer Langfuse than the one deployed.
langfuse_version() {
  local url=${LANGFUSE_HEALTH_URL:-} body
  [ -n "$url" ] || { echo unknown; return; }
  body=$(curl -fsS --max-time 10 "$url" 2>/dev/null) || { echo unknown; return; }
  printf '%s' "$body" | sed -n 's/.*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' | grep . || echo unknown
}

json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# The app secrets' fingerprints as JSON, or null: the ConfigMap <app secret>-fingerprints of namespace_secrets
# (HMACs under its hmac-key, never the values), mounted at APP_FINGERPRINTS_DIR. A restore checks the target's
# app secrets against them and finds the encrypted copy in the bucket by them.
app_secrets_json() {
  local dir=${APP_FINGERPRINTS_DIR:-} name out=""
  [ -n "$dir" ] || { echo null; return; }
  for name in hmac-key salt encryption-key nextauth-secret; do
    [ -s "$dir/$name" ] || { echo null; return; }
    out="${out:+$out, }\"$name\": $(json_string "$(cat "$dir/$name")")"
  done
  printf '{%s}' "$out"
}

# shellcheck disable=SC2034  # used by the scripts that source this file
# Exact row counts of every table, as JSON ordered by name; the same query on both sides of a restore.
COUNT_SQL="SELECT coalesce(json_object_agg(t.schemaname || '.' || t.tablename,
  (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', t.schemaname, t.tablename),
   false, true, '')))[1]::text::bigint ORDER BY t.schemaname, t.tablename), '{}')
FROM pg_tables t WHERE t.schemaname NOT IN ('pg_catalog', 'information_schema')"
# shellcheck disable=SC2034
# query_to_xml plans the inner query only when the table exists (a new database has none).
MIGRATION_SQL="SELECT CASE WHEN to_regclass('public._prisma_migrations') IS NULL THEN '' ELSE coalesce((xpath('/row/m/text()',
  query_to_xml('SELECT max(migration_name) AS m FROM public._prisma_migrations
   WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL', false, true, '')))[1]::text, '') END"
# shellcheck disable=SC2034
TABLES_SQL="SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"

# ---- ClickHouse (HTTP interface; the password never reaches a command line) ----
ch_query() {
  need CLICKHOUSE_URL CLICKHOUSE_USER
  curl -sS --fail-with-body --max-time "${2:-300}" -K <(printf 'user = "%s:%s"\n' "$CLICKHOUSE_USER" "${CLICKHOUSE_PASSWORD:-}") \
    --data-binary @- "${CLICKHOUSE_URL%/}/" <<<"$1"
}

# S3('<url>', '<key id>', '<secret>') for a folder of the backup bucket, as the ClickHouse server reaches S3.
ch_s3() {
  local endpoint=${CLICKHOUSE_S3_ENDPOINT:-${S3_ENDPOINT:-https://s3.${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}.amazonaws.com}}
  printf "S3('%s/%s/%s%s/', '%s', '%s')" "${endpoint%/}" "$S3_BUCKET" "${S3_PREFIX:+${S3_PREFIX%/}/}" "$1" \
    "${AWS_ACCESS_KEY_ID:-}" "${AWS_SECRET_ACCESS_KEY:-}"
}

ch_on_cluster() { [ -z "${CLICKHOUSE_CLUSTER:-}" ] || printf " ON CLUSTER '%s'" "$CLICKHOUSE_CLUSTER"; }

# Waits for an ASYNC BACKUP/RESTORE by its ID; succeeds on the status given.
ch_wait() {
  local id=$1 want=$2 status="" waited=0
  while :; do
    status=$(ch_query "SELECT status, error FROM system.backups WHERE id = '$id' FORMAT TSV" 60) || die "ClickHouse: $status"
    case "$status" in
      "$want"*) return 0 ;;
      *FAILED*|*CANCELLED*) die "ClickHouse: operation $id: $(printf '%s' "$status" | cut -f2-)" ;;
    esac
    [ "$waited" -lt "${CLICKHOUSE_TIMEOUT:-21600}" ] || die "ClickHouse: operation $id still '$status' after ${waited}s"
    sleep 5; waited=$((waited + 5))
  done
}

# Complete ClickHouse backups as <chain>/<id>, oldest first (a manifest marks each complete one).
ch_complete() {
  { s3 s3 ls --recursive "$(s3_base clickhouse)/" || true; } | awk '{print $4}' | sed -n 's#.*clickhouse/\([^/]*\)/\([^/]*\)\.json$#\1/\2#p' | sort
}
