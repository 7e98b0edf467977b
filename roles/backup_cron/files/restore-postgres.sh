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
# empty: the newest complete one. Its manifest must carry a valid signature under
# BACKUP_SIGNING_KEY (unsigned: only with BACKUP_ACCEPT_UNSIGNED=true) and its
# dump the ETag the manifest names. Other environment as backup-postgres.sh.
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
  [[ $id =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "BACKUP_ID must be latest or a backup ID like 20261126T021500Z; is '$id'"
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
  # Checked before the restore half sees it: the manifest by its signature (and that it is this backup's), the dump
  # by the ETag the manifest names; a dump swapped after that check fails the SHA-256 check below.
  s3 s3 cp --only-show-errors "$(s3_base postgres)/$id/manifest.json" "$STREAM_DIR/manifest.unchecked"
  manifest_verify "$STREAM_DIR/manifest.unchecked" "the manifest of Postgres backup $id" "$id"
  local sha bytes
  s3_check_etag "postgres/$id/dump.pgcustom" "$(manifest_field "$STREAM_DIR/manifest.unchecked" etag)" "the dump of Postgres backup $id"
  sha=$(manifest_field "$STREAM_DIR/manifest.unchecked" sha256)
  bytes=$(sed -n 's/.*"bytes": \([0-9]*\).*/\1/p' "$STREAM_DIR/manifest.unchecked" | head -n1)
  mv "$STREAM_DIR/manifest.unchecked" "$STREAM_DIR/manifest.json"
  log "streaming backup $id from $(s3_base postgres)/$id/"
  exec 3>"$FIFO"
  OPENED=true
  if [ -z "$sha" ]; then  # unsigned, accepted: nothing to check the stream against
    s3 s3 cp --only-show-errors "$(s3_base postgres)/$id/dump.pgcustom" - >&3 || die "download of backup $id failed"
  else
    # A dump swapped after the ETag check above: its SHA-256 is not the manifest's. The last 64 KiB are held back
    # until that is known, so pg_restore, which reads the whole archive before it commits, gets them only if it matches;
    # otherwise it meets a cut archive and rolls its one transaction back.
    local held=$((bytes > 65536 ? bytes - 65536 : 0))
    rm -f "$STREAM_DIR/download.sha256"
    s3 s3 cp --only-show-errors "$(s3_base postgres)/$id/dump.pgcustom" - | sha256_tee "$STREAM_DIR/download.sha256" \
      | { head -c "$held" >&3; cat >"$STREAM_DIR/tail"; } || die "download of backup $id failed"
    wait_for_file "$STREAM_DIR/download.sha256"
    [ "$(cat "$STREAM_DIR/download.sha256")" = "$sha" ] || die "the dump of Postgres backup $id streamed from the bucket is not \
the one its signed manifest names (SHA-256 $(cat "$STREAM_DIR/download.sha256"), the manifest's $sha): it was replaced during \
the restore. pg_restore never got its end, so its transaction rolled back. Nothing was restored."
    cat "$STREAM_DIR/tail" >&3
  fi
  exec 3>&-
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
    grep -qF "\"$table\"" "$STREAM_DIR/manifest.json" || echo "$table"; done)
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
