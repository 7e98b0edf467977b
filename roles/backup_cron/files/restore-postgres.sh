#!/usr/bin/env bash
# Restores a backup-postgres.sh backup over Langfuse's database, streamed from
# S3 (no temporary file), in one transaction, then checks every table's row
# count against the manifest, which was counted in the dump's own snapshot.
#
#   restore-postgres.sh download   S3 into the FIFO $STREAM_DIR/dump     (image with the aws CLI)
#   restore-postgres.sh restore    the FIFO into pg_restore, then counts (image with pg_restore)
#   restore-postgres.sh run        both
#   restore-postgres.sh latest     print the newest complete backup ID
#
# BACKUP_ID names the backup (a folder under <prefix>/postgres/); "latest" or
# empty: the newest complete one. Other environment as backup-postgres.sh.
source "$(dirname "$0")/backup-lib.sh"

STREAM_DIR=${STREAM_DIR:-/stream}
FIFO=$STREAM_DIR/dump

latest() {
  local id newest=""
  for id in $(s3_folders "$(s3_base postgres)"); do
    s3_exists "$(s3_base postgres)/$id/manifest.json" && newest=$id
  done
  [ -n "$newest" ] || die "no complete Postgres backup under $(s3_base postgres)/"
  echo "$newest"
}

chosen() {
  local id=${BACKUP_ID:-latest}
  [ "$id" != latest ] || id=$(latest)
  s3_exists "$(s3_base postgres)/$id/manifest.json" || die "backup $id has no manifest under $(s3_base postgres)/: incomplete or absent"
  echo "$id"
}

download() {
  need S3_BUCKET
  make_fifo
  local id
  DOWNLOAD_RC=1 OPENED=false
  trap 'echo "$DOWNLOAD_RC" >"$STREAM_DIR/download.rc"; $OPENED || : >"$FIFO"' EXIT
  id=$(chosen)
  s3 s3 cp --only-show-errors "$(s3_base postgres)/$id/manifest.json" "$STREAM_DIR/manifest.json"
  log "streaming backup $id from $(s3_base postgres)/$id/"
  OPENED=true
  s3 s3 cp --only-show-errors "$(s3_base postgres)/$id/dump.pgcustom" - >"$FIFO" || die "download of backup $id failed"
  DOWNLOAD_RC=0
}

restore() {
  need PGHOST PGDATABASE PGUSER
  make_fifo
  local waited=0
  until [ -s "$STREAM_DIR/manifest.json" ] || [ -f "$STREAM_DIR/download.rc" ]; do
    [ $waited -lt 120 ] || die "the download never started"
    sleep 1; waited=$((waited + 1))
  done
  [ -s "$STREAM_DIR/manifest.json" ] || { : <"$FIFO"; die "the download failed before it started; nothing was restored"; }
  # pg_restore --clean drops only what the backup has: a table a later migration
  # added would survive and break the next migration run. Refuse before touching anything.
  local extra
  extra=$(psql -X -At -v ON_ERROR_STOP=1 -c "$TABLES_SQL" | while read -r table; do
    grep -q "\"$table\"" "$STREAM_DIR/manifest.json" || echo "$table"; done)
  if [ -n "$extra" ]; then
    : <"$FIFO"
    die "tables not in the backup exist in $PGDATABASE: $(tr '\n' ' ' <<<"$extra"). They come from a newer schema than the backup's;
restore into an empty database (or drop them after checking) and run again. Nothing was restored."
  fi
  log "restoring into $PGDATABASE on $PGHOST (pg_restore --clean --if-exists, one transaction)"
  local rc=0
  pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction --exit-on-error \
    --dbname="$PGDATABASE" <"$FIFO" || rc=$?
  waited=0
  until [ -f "$STREAM_DIR/download.rc" ]; do
    [ $waited -lt 120 ] || die "the download never reported its result"
    sleep 1; waited=$((waited + 1))
  done
  [ "$(cat "$STREAM_DIR/download.rc")" = 0 ] || die "the download failed; pg_restore ran in one transaction, so the database is unchanged"
  [ "$rc" -eq 0 ] || die "pg_restore exited $rc; it ran in one transaction, so the database is unchanged"
  check_counts
}

check_counts() {
  local expected actual
  expected=$(sed -n 's/.*"tables": \({[^}]*}\).*/\1/p' "$STREAM_DIR/manifest.json" | tr -d ' \n')
  actual=$(psql -X -At -v ON_ERROR_STOP=1 -c "$COUNT_SQL" | tr -d ' \n')
  [ -n "$expected" ] || die "the manifest has no row counts"
  if [ "$expected" != "$actual" ]; then
    log "row counts differ from the backup's: expected $expected, got $actual"
    exit 1
  fi
  log "row counts equal the backup's ($(grep -o ':' <<<"$expected" | wc -l) tables)"
  printf '%s\n' "$actual"
}

case "${1:-}" in
  latest) latest ;;
  download) download ;;
  restore) restore ;;
  run) run_halves "$0" download restore ;;
  *) die "usage: $0 latest|download|restore|run" ;;
esac
