#!/usr/bin/env bash
# pg_dump of Langfuse's Postgres in custom format, streamed to S3 with no
# temporary file, then a manifest and the retention count.
#
#   backup-postgres.sh dump     pg_dump into the FIFO $STREAM_DIR/dump (image with pg_dump)
#   backup-postgres.sh upload   the FIFO to S3, manifest, retention   (image with the aws CLI)
#   backup-postgres.sh run      both, for a host or image that has both tools
#
# The two halves run as two containers of one Job pod sharing an emptyDir, so
# each can use its official image. Row counts are taken inside the snapshot
# pg_dump dumps, so a restore can be checked against them exactly.
#
# Environment: PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD [PGSSLMODE] (libpq);
# S3_BUCKET [S3_PREFIX] [S3_ENDPOINT] [S3_FORCE_PATH_STYLE] AWS_REGION and
# credentials (the AWS CLI's); [BACKUP_KEEP=14] [STREAM_DIR=/stream]
# [LANGFUSE_HEALTH_URL] [S3_EXPECTED_SIZE] [APP_FINGERPRINTS_DIR: the app secrets'
# fingerprints, recorded in the manifest]; BACKUP_SIGNING_KEY signs the manifest, which names the dump's ETag.
source "$(dirname "$0")/backup-lib.sh"

STREAM_DIR=${STREAM_DIR:-/stream}
FIFO=$STREAM_DIR/dump

dump() {
  need PGHOST PGDATABASE PGUSER
  make_fifo
  # Whatever happens, the uploader must see the stream end and the result.
  DUMP_RC=1 OPENED=false
  trap 'echo "$DUMP_RC" >"$STREAM_DIR/dump.rc.tmp" && mv "$STREAM_DIR/dump.rc.tmp" "$STREAM_DIR/dump.rc";
        $OPENED || : >"$FIFO"' EXIT
  # One REPEATABLE READ transaction exports its snapshot to pg_dump and counts rows in it.
  coproc PSQL { psql -X -At -q -v ON_ERROR_STOP=1 2>&1; }
  local snapshot counts migration version
  printf '%s\n' "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;" "SELECT pg_export_snapshot();" >&"${PSQL[1]}"
  read -r -t 60 snapshot <&"${PSQL[0]}" || die "psql did not answer (connection to $PGHOST as $PGUSER)"
  [[ $snapshot =~ ^[0-9A-F-]+$ ]] || die "psql: $snapshot"
  printf '%s;\n' "$(tr '\n' ' ' <<<"$COUNT_SQL")" "$(tr '\n' ' ' <<<"$MIGRATION_SQL")" "SHOW server_version" >&"${PSQL[1]}"
  if ! { read -r -t 600 counts && read -r -t 60 migration && read -r -t 60 version; } <&"${PSQL[0]}"; then
    die "psql: counting rows failed"
  fi
  [[ $counts == \{* ]] || die "psql: $counts"
  printf '{"database": %s, "server_version": %s, "latest_migration": %s, "tables": %s}\n' \
    "$(json_string "$PGDATABASE")" "$(json_string "${version%% *}")" "$(json_string "$migration")" "$counts" \
    >"$STREAM_DIR/meta.json"
  log "dumping $PGDATABASE on $PGHOST (snapshot $snapshot, $(grep -o ':' <<<"$counts" | wc -l) tables)"
  OPENED=true
  local rc=0
  pg_dump --format=custom --no-owner --no-privileges --snapshot="$snapshot" >"$FIFO" || rc=$?
  printf 'COMMIT;\n\\q\n' >&"${PSQL[1]}" || true
  wait "$PSQL_PID" 2>/dev/null || true
  [ "$rc" -eq 0 ] || die "pg_dump exited $rc"
  DUMP_RC=0
  log "pg_dump finished"
}

upload() {
  need S3_BUCKET
  make_fifo
  local id started base key bytes
  id=$(backup_id)
  started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  base=$(s3_base postgres)/$id
  key=$base/dump.pgcustom
  log "streaming the dump to $key"
  if ! sha256_tee "$STREAM_DIR/dump.sha256" <"$FIFO" \
      | s3 s3 cp --only-show-errors - "$key" --expected-size "${S3_EXPECTED_SIZE:-107374182400}"; then
    s3 s3 rm --only-show-errors "$key" >/dev/null 2>&1 || true
    die "upload to $key failed"
  fi
  local waited=0
  until [ -f "$STREAM_DIR/dump.rc" ]; do
    [ $waited -lt 120 ] || { s3 s3 rm --only-show-errors "$key" || true; die "pg_dump never reported its result; removed $key"; }
    sleep 1; waited=$((waited + 1))
  done
  if [ "$(cat "$STREAM_DIR/dump.rc")" != 0 ] || [ ! -s "$STREAM_DIR/meta.json" ]; then
    s3 s3 rm --only-show-errors "$key" || true
    die "pg_dump failed (see the dump container's log); removed the partial $key"
  fi
  bytes=$(s3 s3 ls "$key" | awk '{print $3}')
  [ "${bytes:-0}" -gt 0 ] || die "the uploaded dump $key is empty"
  local meta etag
  meta=$(cat "$STREAM_DIR/meta.json")
  etag=$(s3_etag "postgres/$id/dump.pgcustom") || die "cannot read the ETag of $key"
  wait_for_file "$STREAM_DIR/dump.sha256"
  printf '{"kind": "postgres", "id": "%s", "format": "pg_dump custom", "object": "dump.pgcustom", "bytes": %s, "etag": %s,
 "sha256": "%s", "started_at": "%s", "completed_at": "%s", "langfuse_version": %s, "app_secrets": %s, %s\n' \
    "$id" "$bytes" "$(json_string "$etag")" "$(cat "$STREAM_DIR/dump.sha256")" "$started" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$(json_string "$(langfuse_version)")" \
    "$(app_secrets_json)" "${meta#\{}" \
    | manifest_sign | s3 s3 cp --only-show-errors - "$base/manifest.json" --content-type application/json
  log "backup $id complete: $bytes bytes"
  retention
  echo "$id"
}

# Keep the newest BACKUP_KEEP complete backups; older folders (complete or not) go.
retention() {
  local keep=${BACKUP_KEEP:-14} folders complete=() id
  folders=$(s3_folders "$(s3_base postgres)")
  for id in $folders; do
    s3_exists "$(s3_base postgres)/$id/manifest.json" && complete+=("$id")
  done
  [ "${#complete[@]}" -gt "$keep" ] || return 0
  local oldest_kept=${complete[${#complete[@]}-keep]}
  for id in $folders; do
    [[ $id < $oldest_kept ]] || continue
    log "retention: removing backup $id (keeping the newest $keep)"
    s3 s3 rm --only-show-errors --recursive "$(s3_base postgres)/$id/"
  done
}

case "${1:-}" in
  dump) dump ;;
  upload) upload ;;
  run) run_halves "$0" dump upload ;;
  *) die "usage: $0 dump|upload|run" ;;
esac
