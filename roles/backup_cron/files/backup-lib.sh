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

# ---- Signed manifests ----
# A manifest carries an HMAC-SHA256 of its own text under BACKUP_SIGNING_KEY (a Secret only the backup and restore
# Jobs read), as its last field: whoever can write to the bucket but holds no key cannot make a manifest a restore
# accepts, and a manifest names the exact objects (their ETags) a restore then reads. age, which encrypts the app
# secrets, is for secrecy only: anyone may encrypt to a public recipient. Built from sha256sum and bash's printf
# (the backup images have no openssl and no Python on PATH); the key never reaches a command line.
hmac_sha256() {
  need BACKUP_SIGNING_KEY
  local key i byte ipad="" opad="" inner
  key=$(printf '%s' "$BACKUP_SIGNING_KEY" | od -An -v -tx1 | tr -d ' \n')
  [ "${#key}" -le 128 ] || key=$(printf '%s' "$BACKUP_SIGNING_KEY" | sha256sum | cut -c1-64)
  while [ "${#key}" -lt 128 ]; do key+=00; done
  for ((i = 0; i < 128; i += 2)); do
    byte=$((16#${key:i:2}))
    printf -v ipad '%s\\x%02x' "$ipad" $((byte ^ 0x36))
    printf -v opad '%s\\x%02x' "$opad" $((byte ^ 0x5c))
  done
  inner=$({ printf '%b' "$ipad"; cat; } | sha256sum | cut -c1-64)
  # shellcheck disable=SC2001  # bash 4 (the aws-cli image's) has no & in ${var//pattern/replacement}
  { printf '%b' "$opad"; printf '%b' "$(sed 's/../\\x&/g' <<<"$inner")"; } | sha256sum | cut -c1-64
}

SIGNATURE_FIELD=', "signature": "hmac-sha256:'
# stdin: a manifest (JSON, ending in }); stdout: the same with its signature as the last field.
manifest_sign() {
  local text signature
  text=$(cat)
  [[ $text == *\} ]] || die "manifest_sign: not a JSON object"
  signature=$(printf '%s\n' "$text" | hmac_sha256)
  printf '%s%s%s"}\n' "${text%\}}" "$SIGNATURE_FIELD" "$signature"
}

# manifest_verify <file> <what> [<id> [<chain>]]: succeeds when the manifest's signature is the key's and (given <id>)
# it describes backup <id> (of <chain>); else dies naming <what>. An unsigned manifest (made before backups were signed) passes only
# with BACKUP_ACCEPT_UNSIGNED=true.
manifest_verify() {
  local file=$1 what=$2 id=${3:-} chain=${4:-} text signature unsigned
  if [ -n "$id" ] && { [ "$(manifest_field "$file" id)" != "$id" ] || [ "$(manifest_field "$file" chain)" != "$chain" ]; }; then
    die "$what describes another backup ($(manifest_field "$file" chain)${chain:+/}$(manifest_field "$file" id)): refusing it"
  fi
  text=$(cat "$file")
  signature=$(sed -n '$s/.*, "signature": "hmac-sha256:\([0-9a-f]\{64\}\)"}$/\1/p' "$file")
  if [ -z "$signature" ]; then
    [ "${BACKUP_ACCEPT_UNSIGNED:-false}" = true ] || die "$what is not signed (made before backups were signed, or \
written by someone without the signing key): refusing it. Nothing was restored."
    log "WARNING: $what is not signed; restoring it as confirmed"
    return 0
  fi
  unsigned=${text%"$SIGNATURE_FIELD$signature\"}"}\}
  [ "$(printf '%s\n' "$unsigned" | hmac_sha256)" = "$signature" ] || die "$what does not carry a valid signature under \
the backup signing key: it was changed or written by someone else, or the key is not the one it was signed with. Nothing was restored."
}

# manifest_field <file> <name>: a string field of a manifest (its values never hold a quote).
manifest_field() { sed -n 's/.*"'"$2"'": "\([^"]*\)".*/\1/p' "$1" | head -n1; }

# The key of an object of the bucket (s3_base without s3://bucket/).
s3_key() { printf '%s%s' "${S3_PREFIX:+${S3_PREFIX%/}/}" "$1"; }

# The ETag S3 gives an object: S3 computes it, so no one can make another content with the ETag a manifest names.
# Without its quotes: a manifest's strings hold none.
s3_etag() {
  local etag
  etag=$(s3 s3api head-object --bucket "$S3_BUCKET" --key "$(s3_key "$1")" --query ETag --output text) || return 1
  printf '%s\n' "${etag//\"/}"
}

# Fails unless <kind>/<object> still has the ETag its signed manifest recorded; <what> names it in the refusal.
s3_check_etag() {
  local object=$1 want=$2 what=$3 have
  [ -n "$want" ] || { [ "${BACKUP_ACCEPT_UNSIGNED:-false}" = true ] && return 0; die "$what: its manifest records no ETag"; }
  have=$(s3_etag "$object" 2>&1) || die "$what: $have"
  [ "$have" = "$want" ] || die "$what is not the object its signed manifest names (ETag $have, the manifest's $want): \
it was replaced after the backup. The backup bucket keeps versions: if the original is a noncurrent version of \
s3://$S3_BUCKET/$(s3_key "$object"), deleting the versions above it (aws s3api list-object-versions, then delete-object \
--version-id) makes it current again with its own ETag; a copy of it would get another. Nothing was restored."
}

# stdin to stdout, its SHA-256 (hex) written to <file> once the stream ended (wait_for_file <file> to read it).
sha256_tee() { tee >(sha256sum | cut -c1-64 >"$1.tmp" && mv "$1.tmp" "$1"); }
wait_for_file() {
  local waited=0
  until [ -s "$1" ]; do
    [ "$waited" -lt 600 ] || die "$1 never appeared"
    sleep 0.1; waited=$((waited + 1))
  done
}

# plain_name <name> <refusal>: dies with <refusal> unless <name> is a plain SQL name (letters, digits, _), so that it
# may reach SQL as it is.
plain_name() { [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "$2"; }

# A ClickHouse identifier in backquotes, whatever it holds.
# shellcheck disable=SC2016  # the backquotes are the output
ch_ident() { local name=${1//\\/\\\\}; printf '`%s`' "${name//\`/\\\`}"; }

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
