# shellcheck shell=bash
# Shared helpers for the local test environment scripts (sourced, not run).
LOCALENV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$LOCALENV_DIR/versions.env"

log() { printf '[localenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[localenv] ERROR: %s\n' "$*" >&2; exit 1; }

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

# Fails, naming the port and its owner, when something already listens there.
require_free_port() {
  local port=$1 what=$2
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port 127.0.0.1:$port (for $what) is already in use; stop whatever listens there (ss -ltnp 'sport = :$port') or set the matching LOCALENV_*_PORT"
  fi
}

wait_for_port() {
  local port=$1 what=$2 tries=${3:-100}
  for _ in $(seq "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.2
  done
  die "$what did not start listening on 127.0.0.1:$port; see its log under $LOCALENV_STATE"
}

k8s_bin_dir()  { echo "$LOCALENV_CACHE/kubernetes/$LOCALENV_KUBERNETES_VERSION"; }
etcd_bin_dir() { echo "$LOCALENV_CACHE/etcd/$LOCALENV_ETCD_VERSION"; }
kwok_bin_dir() { echo "$LOCALENV_CACHE/kwok/$LOCALENV_KWOK_VERSION"; }
helm_bin_dir() { echo "$LOCALENV_CACHE/helm/$LOCALENV_HELM_VERSION"; }
argo_rollouts_dir() { echo "$LOCALENV_CACHE/argo-rollouts/$LOCALENV_ARGO_ROLLOUTS_VERSION"; }
cyclonus_dir() { echo "$LOCALENV_CACHE/cyclonus/$LOCALENV_CYCLONUS_VERSION"; }
redis_exporter_dir() { echo "$LOCALENV_CACHE/redis_exporter/$LOCALENV_REDIS_EXPORTER_VERSION"; }
gateway_api_dir() { echo "$LOCALENV_CACHE/gateway-api/$LOCALENV_GATEWAY_API_VERSION"; }
