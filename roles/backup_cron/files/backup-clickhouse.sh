#!/usr/bin/env bash
# Native ClickHouse backups of Langfuse's database to S3: BACKUP DATABASE ...
# TO S3(...) run by the server itself, a weekly full and daily incrementals
# (base_backup = the previous backup of the chain).
#
#   backup-clickhouse.sh full | incremental
#
# Layout: <prefix>/clickhouse/<chain>/<id>/ is a backup, <chain>/<id>.json its
# manifest, written last; <chain> is the ID of the chain's full backup. An
# incremental with no complete full to build on becomes a full. Retention
# removes whole chains only (the newest BACKUP_KEEP_CHAINS stay), so it never
# breaks one.
#
# Environment: CLICKHOUSE_URL (http://host:8123) CLICKHOUSE_USER
# CLICKHOUSE_PASSWORD [CLICKHOUSE_DATABASE=default] [CLICKHOUSE_CLUSTER]
# [CLICKHOUSE_S3_ENDPOINT: S3 as the server reaches it]; S3_* and AWS_* as
# backup-postgres.sh; [BACKUP_KEEP_CHAINS=4] [LANGFUSE_HEALTH_URL] [APP_FINGERPRINTS_DIR];
# BACKUP_SIGNING_KEY signs the manifest, which names the ETag of the backup's .backup index.
source "$(dirname "$0")/backup-lib.sh"

DB=${CLICKHOUSE_DATABASE:-default}
plain_name "$DB" "CLICKHOUSE_DATABASE must be a plain name (letters, digits, _); is '$DB'"

backup() {
  need S3_BUCKET
  local type=$1 id chain base="" started
  id=$(backup_id)
  started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  if [ "$type" = incremental ]; then
    base=$(ch_complete | awk -F/ -v newest="$(ch_complete | sed -n 's#^\([^/]*\)/\1$#\1#p' | tail -n1)" '$1 == newest' | tail -n1)
    [ -n "$base" ] || { log "no complete full backup to build on: taking a full one"; type=full; }
  fi
  if [ "$type" = full ]; then chain=$id; else chain=${base%%/*}; fi
  local migration tables settings=""
  migration=$(ch_query "SELECT toString(version) FROM $(ch_ident "$DB").schema_migrations ORDER BY sequence DESC LIMIT 1" 60 2>/dev/null || true)
  tables=$(ch_query "SELECT concat('{', arrayStringConcat(groupArray(concat('\"', table, '\": ', toString(rows))), ', '), '}')
    FROM (SELECT table, sum(rows) AS rows FROM system.parts WHERE active AND database = '$DB' GROUP BY table ORDER BY table)" 60) \
    || die "ClickHouse at $CLICKHOUSE_URL: $tables"
  [ "$type" = full ] || settings=" SETTINGS base_backup = $(ch_s3 "clickhouse/$base")"
  log "$type backup of database $DB to $(s3_base clickhouse)/$chain/$id/${base:+ (base $base)}"
  local answer op
  answer=$(ch_query "BACKUP DATABASE $(ch_ident "$DB")$(ch_on_cluster) TO $(ch_s3 "clickhouse/$chain/$id")$settings ASYNC" 120) \
    || die "ClickHouse refused the backup: $answer"
  op=$(printf '%s' "$answer" | cut -f1)
  ch_wait "$op" BACKUP_CREATED
  # The backup's own index (every file with its size and checksum), pinned by its ETag in the signed manifest.
  local etag
  etag=$(s3_etag "clickhouse/$chain/$id/.backup") || die "cannot read the ETag of the backup's .backup"
  printf '{"kind": "clickhouse", "id": "%s", "chain": "%s", "type": "%s", "base": %s, "database": "%s", "etag": %s,
 "started_at": "%s", "completed_at": "%s", "langfuse_version": %s, "latest_migration": %s, "app_secrets": %s,
 "tables": %s}\n' \
    "$id" "$chain" "$type" "$( [ -n "$base" ] && json_string "${base#*/}" || echo null)" "$DB" "$(json_string "$etag")" \
    "$started" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(json_string "$(langfuse_version)")" "$(json_string "$migration")" \
    "$(app_secrets_json)" "$tables" \
    | manifest_sign | s3 s3 cp --only-show-errors - "$(s3_base clickhouse)/$chain/$id.json" --content-type application/json
  log "backup $chain/$id complete"
  retention
  echo "$chain/$id"
}

retention() {
  local keep=${BACKUP_KEEP_CHAINS:-4} fulls chain
  fulls=$(ch_complete | sed -n 's#^\([^/]*\)/\1$#\1#p')
  [ "$(printf '%s\n' "$fulls" | grep -c .)" -gt "$keep" ] || return 0
  local oldest_kept
  oldest_kept=$(printf '%s\n' "$fulls" | tail -n "$keep" | head -n1)
  for chain in $(s3_folders "$(s3_base clickhouse)"); do
    [[ $chain < $oldest_kept ]] || continue
    log "retention: removing chain $chain (keeping the newest $keep)"
    s3 s3 rm --only-show-errors --recursive "$(s3_base clickhouse)/$chain/"
  done
}

case "${1:-}" in
  full | incremental) backup "$1" ;;
  *) die "usage: $0 full|incremental" ;;
esac
