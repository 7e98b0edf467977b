#!/usr/bin/env bash
# Restores a backup-clickhouse.sh backup: RESTORE DATABASE ... AS <side
# database> FROM S3(...) (an incremental brings its base backups along), then
# EXCHANGE TABLES swaps each restored table with the live one, then the views
# are replaced by the backup's, then each table's rows are printed next to the
# manifest's count, taken as the backup began. The backup's database (its
# manifest names it) may have another name than CLICKHOUSE_DATABASE: a restore
# into a new cluster or namespace.
#
#   restore-clickhouse.sh run      restore BACKUP_ID (<chain>/<id>; "latest" or empty: the newest complete)
#   restore-clickhouse.sh latest   print the newest complete backup
#
# Every manifest of the chain must carry a valid signature under BACKUP_SIGNING_KEY (unsigned: only
# with BACKUP_ACCEPT_UNSIGNED=true) and name the ETag its .backup index has. Environment as backup-clickhouse.sh.
source "$(dirname "$0")/backup-lib.sh"

DB=${CLICKHOUSE_DATABASE:-default}
plain_name "$DB" "CLICKHOUSE_DATABASE must be a plain name (letters, digits, _); is '$DB'"

latest() {
  local newest
  newest=$(ch_complete | tail -n1)
  [ -n "$newest" ] || die "no complete ClickHouse backup under $(s3_base clickhouse)/"
  echo "$newest"
}

# Checks a backup and every base it builds on (RESTORE reads them all): each manifest's signature, that it describes
# that backup, and that the backup's .backup index (which lists every file with its checksum) has the manifest's ETag.
# The manifests checked are kept in $CHECKED; the restore reads them from there, never again from the bucket.
CHECKED=$(mktemp -d)
verify_chain() {
  local backup=$1 chain=${1%%/*} file base
  while [ -n "$backup" ]; do
    file=$CHECKED/${backup//\//_}.json
    s3 s3 cp --only-show-errors "$(s3_base clickhouse)/$backup.json" "$file" || die "backup $backup has no manifest"
    manifest_verify "$file" "the manifest of ClickHouse backup $backup" "${backup#*/}" "$chain"
    s3_check_etag "clickhouse/$backup/.backup" "$(manifest_field "$file" etag)" "the .backup index of ClickHouse backup $backup"
    base=$(manifest_field "$file" base)
    backup=${base:+$chain/$base}
  done
}

restore() {
  need S3_BUCKET
  local backup=${BACKUP_ID:-latest}
  [ "$backup" != latest ] || backup=$(latest)
  [[ $backup =~ ^[0-9]{8}T[0-9]{6}Z/[0-9]{8}T[0-9]{6}Z$ ]] \
    || die "BACKUP_ID must be latest or <chain>/<id> like 20261122T031500Z/20261126T031500Z; is '$backup'"
  s3_exists "$(s3_base clickhouse)/$backup.json" || die "backup $backup has no manifest under $(s3_base clickhouse)/: incomplete or absent"
  verify_chain "$backup"
  # Restored beside the live tables first, then swapped in table by table: a
  # restore that fails leaves the live data as it was, and the replaced tables
  # stay in the side database until you drop it.
  local side answer op from_db
  side="${DB}_before_restore_$(backup_id | tr 'TZ' 'tz')"
  from_db=$(manifest_field "$CHECKED/${backup//\//_}.json" database)
  from_db=${from_db:-$DB}
  plain_name "$from_db" "the manifest of $backup names the database '$from_db', not a plain name: refusing it"
  log "restoring $backup (database $from_db) into database $side"
  answer=$(ch_query "RESTORE DATABASE $(ch_ident "$from_db") AS $(ch_ident "$side")$(ch_on_cluster) FROM $(ch_s3 "clickhouse/$backup") ASYNC" 120) \
    || die "ClickHouse refused the restore: $answer"
  op=$(printf '%s' "$answer" | cut -f1)
  ch_wait "$op" RESTORED
  local restored live table engine swapped=0 views=() tables=()
  restored=$(ch_query "SELECT name, engine FROM system.tables WHERE database = '$side' ORDER BY name FORMAT TSV" 60) \
    || die "ClickHouse: $restored"
  live=$(ch_query "SELECT name FROM system.tables WHERE database = '$DB' FORMAT TSV" 60) || die "ClickHouse: $live"
  while IFS=$'\t' read -r table engine; do
    [ -n "$table" ] || continue
    # Views hold no data and name their tables by database: swapped in, the restored ones would read from and write
    # to the side database (dropping it would cut them off), and the live ones, swapped out, would keep writing to the
    # live tables. They are replaced below instead. The inner tables of views without TO come back with their view.
    case "$engine" in *View) views+=("$table"); continue ;; esac
    case "$table" in .inner.* | .inner_id.*) continue ;; esac
    tables+=("$(ch_ident "$from_db").$(ch_ident "$table")")
    if grep -qx "$table" <<<"$live"; then
      ch_query "EXCHANGE TABLES $(ch_ident "$DB").$(ch_ident "$table") AND $(ch_ident "$side").$(ch_ident "$table")$(ch_on_cluster)" 600 >/dev/null
    else
      ch_query "RENAME TABLE $(ch_ident "$side").$(ch_ident "$table") TO $(ch_ident "$DB").$(ch_ident "$table")$(ch_on_cluster)" 600 >/dev/null
    fi || die "ClickHouse: swapping in $DB.$table failed; tables swapped so far hold the backup, the others live data ($side has the rest)"
    swapped=$((swapped + 1))
  done <<<"$restored"
  log "swapped in $swapped tables; the replaced ones are in $side: drop it once the restore is checked"
  if [ "${#views[@]}" -gt 0 ]; then
    # The backup's views, restored straight into the live database (so they name its tables), in place of the live ones.
    local elements="" view
    for view in "${views[@]}"; do
      ch_query "DROP TABLE IF EXISTS $(ch_ident "$DB").$(ch_ident "$view")$(ch_on_cluster) SYNC" 600 >/dev/null \
        || die "ClickHouse: dropping the view $DB.$view failed; the tables hold the backup, views dropped so far are missing"
      elements="${elements:+$elements, }TABLE $(ch_ident "$DB").$(ch_ident "$view")"
    done
    # From a database of another name: the whole database but its tables, renamed, so that ClickHouse renames the
    # tables the views name too (a TABLE element renames only itself).
    [ "$from_db" = "$DB" ] || elements="DATABASE $(ch_ident "$from_db") AS $(ch_ident "$DB") EXCEPT TABLES $(IFS=,; echo "${tables[*]}")"
    answer=$(ch_query "RESTORE $elements$(ch_on_cluster) FROM $(ch_s3 "clickhouse/$backup") ASYNC" 120) \
      || die "ClickHouse refused to restore the views: $answer"
    ch_wait "$(printf '%s' "$answer" | cut -f1)" RESTORED
    log "dropped the live views and restored the backup's in their place: ${views[*]}"
  fi
  log "restored $backup; rows now (the manifest's counts were taken as the backup began):"
  ch_query "SELECT name, total_rows FROM system.tables WHERE database = '$DB' AND engine LIKE '%MergeTree' ORDER BY name FORMAT TSV" 60
  sed -n 's/.*"tables": \({[^}]*}\).*/manifest: \1/p' "$CHECKED/${backup//\//_}.json"
}

case "${1:-}" in
  latest) latest ;;
  run) restore ;;
  *) die "usage: $0 run|latest" ;;
esac
