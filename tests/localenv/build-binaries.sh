#!/usr/bin/env bash
# Builds, once per version, the binaries of the local test cluster from their
# official Go modules and caches them under $LOCALENV_CACHE:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#   kwok, kwokctl, helm, promtool, redis_exporter, cyclonus, and Argo Rollouts' rollouts-controller with its CRDs;
# and, from the Go module sigs.k8s.io/gateway-api, Gateway API's standard-channel CRDs (no binary).
# What is already in the cache is not rebuilt nor fetched again, so a warm run takes seconds. With names
# (e.g. `build-binaries.sh promtool`) it builds only those: `cluster.sh up` builds the cluster's own, and
# promtool and rollouts-controller are built by the tests that use them.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd go "install Go >= 1.26 (https://go.dev/doc/install); it builds the control plane"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
SCRATCH="$LOCALENV_CACHE/src"
mkdir -p "$SCRATCH"

check_proxy() {
  local proxy
  proxy=$(go env GOPROXY | cut -d, -f1)
  case "$proxy" in off|direct) return 0 ;; esac
  curl -fsS -m 20 -o /dev/null "$proxy/k8s.io/kubernetes/@v/$LOCALENV_KUBERNETES_VERSION.info" \
    || die "the Go module proxy $proxy does not answer for k8s.io/kubernetes@$LOCALENV_KUBERNETES_VERSION; the control plane is built from Go modules and needs it (check GOPROXY and the network, or the version)"
}

# Builds into a temporary dir and moves it into place, so an interrupted
# build never looks cached.
install_dir() {
  local final=$1 tmp=$2
  chmod 755 "$tmp"; rm -rf "$final"; mkdir -p "$(dirname "$final")"; mv "$tmp" "$final"
}

cached() { local d=$1; shift; for b in "$@"; do [ -x "$d/$b" ] || return 1; done; }

build_etcd() {
  local dir; dir=$(etcd_bin_dir)
  cached "$dir" etcd && { log "etcd $LOCALENV_ETCD_VERSION: cached"; return; }
  log "etcd $LOCALENV_ETCD_VERSION: building (go.etcd.io/etcd/server/v3 module root)"
  local mod="$SCRATCH/etcd-$LOCALENV_ETCD_VERSION" tmp; tmp=$(mktemp -d "$LOCALENV_CACHE/tmp.XXXX")
  mkdir -p "$mod"
  # server/v3's own go.mod replaces its siblings with ../ paths, which only work
  # in etcd's repo; from a scratch module the published versions are used.
  [ -f "$mod/go.mod" ] || (cd "$mod" && go mod init localenv/etcd >/dev/null 2>&1)
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@$LOCALENV_ETCD_VERSION" >/dev/null \
     && go build -trimpath -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  install_dir "$dir" "$tmp"
}

build_kubernetes() {
  local dir; dir=$(k8s_bin_dir)
  cached "$dir" kube-apiserver kube-controller-manager kube-scheduler kubectl \
    && { log "kubernetes $LOCALENV_KUBERNETES_VERSION: cached"; return; }
  local v=${LOCALENV_KUBERNETES_VERSION#v} major minor patch
  IFS=. read -r major minor patch <<<"$v"
  local staging="v0.$minor.${patch%%-*}"
  log "kubernetes $LOCALENV_KUBERNETES_VERSION: building apiserver, controller-manager, scheduler, kubectl (cold: ~20-40 min on 2 cores)"
  local mod="$SCRATCH/kubernetes-$LOCALENV_KUBERNETES_VERSION" tmp; tmp=$(mktemp -d "$LOCALENV_CACHE/tmp.XXXX")
  mkdir -p "$mod"
  local gomod
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$LOCALENV_KUBERNETES_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$LOCALENV_KUBERNETES_VERSION from the Go module proxy"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
  # with ./staging paths; a dependent module must point them at the published
  # v0.<minor>.<patch> tags instead.
  {
    echo "module localenv/kubernetes"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $LOCALENV_KUBERNETES_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s\.io/[a-z0-9.-]*\) => \./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ")"
  } >"$mod/go.mod"
  local commit date ldflags="" pkg
  commit=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$LOCALENV_KUBERNETES_VERSION" | sed -n 's/^\s*"Hash": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  # Stamp the version the way hack/lib/version.sh does: helm's kubeVersion
  # checks and our preflight read it from /version.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$LOCALENV_KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit=${commit:-unknown} -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  (cd "$mod" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  install_dir "$dir" "$tmp"
}

build_kwok() {
  local dir; dir=$(kwok_bin_dir)
  cached "$dir" kwok kwokctl && [ -d "$dir/stage" ] && { log "kwok $LOCALENV_KWOK_VERSION: cached"; return; }
  log "kwok/kwokctl $LOCALENV_KWOK_VERSION: building"
  local tmp; tmp=$(mktemp -d "$LOCALENV_CACHE/tmp.XXXX")
  GOBIN="$tmp" GOFLAGS='' go install -trimpath \
    -ldflags "-X sigs.k8s.io/kwok/pkg/consts.Version=$LOCALENV_KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$LOCALENV_KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$LOCALENV_KWOK_VERSION"
  # kwok's default Stages, from the same module, for kwok_config.py to extend.
  local src
  src=$(GOFLAGS='' go mod download -json "sigs.k8s.io/kwok@$LOCALENV_KWOK_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  cp -r "$src/kustomize/stage" "$tmp/stage" && chmod -R u+w "$tmp/stage"
  install_dir "$dir" "$tmp"
}

build_helm() {
  local dir; dir=$(helm_bin_dir)
  cached "$dir" helm && { log "helm $LOCALENV_HELM_VERSION: cached"; return; }
  log "helm $LOCALENV_HELM_VERSION: building"
  local tmp; tmp=$(mktemp -d "$LOCALENV_CACHE/tmp.XXXX")
  GOBIN="$tmp" GOFLAGS='' go install -trimpath \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=$LOCALENV_HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$LOCALENV_HELM_VERSION"
  install_dir "$dir" "$tmp"
}

promtool_bin_dir() { echo "$LOCALENV_CACHE/promtool/$LOCALENV_PROMTOOL_VERSION"; }

build_promtool() {
  local dir; dir=$(promtool_bin_dir)
  cached "$dir" promtool && { log "promtool $LOCALENV_PROMTOOL_VERSION: cached"; return; }
  log "promtool $LOCALENV_PROMTOOL_VERSION: building (github.com/prometheus/prometheus, ~10-15 min cold on 2 cores)"
  local tmp; tmp=$(mktemp -d "$LOCALENV_CACHE/tmp.XXXX")
  GOBIN="$tmp" GOFLAGS='' go install -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$LOCALENV_PROMTOOL_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$LOCALENV_PROMTOOL_VERSION"
  install_dir "$dir" "$tmp"
}

# A binary `go install`ed from a module at a version, cached under dir: go_install NAME DIR MODULE/PKG VERSION WHAT
go_install() {
  local name=$1 dir=$2 pkg=$3 version=$4 what=$5
  cached "$dir" "$name" && { log "$name $version: cached"; return; }
  log "$name $version: building ($what)"
  local tmp; tmp=$(mktemp -d "$LOCALENV_CACHE/tmp.XXXX")
  GOBIN="$tmp" GOFLAGS='' go install -trimpath -ldflags "-s -w" "$pkg@$version"
  install_dir "$dir" "$tmp"
}

build_redis_exporter() {
  go_install redis_exporter "$(redis_exporter_dir)" github.com/oliver006/redis_exporter "$LOCALENV_REDIS_EXPORTER_VERSION" \
    "github.com/oliver006/redis_exporter, ~1 min cold on 2 cores"
}

build_cyclonus() {
  go_install cyclonus "$(cyclonus_dir)" github.com/mattfenwick/cyclonus/cmd/cyclonus "$LOCALENV_CYCLONUS_VERSION" \
    "github.com/mattfenwick/cyclonus, ~1-2 min cold on 2 cores"
}

# Argo Rollouts replaces k8s.io modules in its go.mod, which `go install pkg@version` refuses: build
# inside a copy of the module instead. Its CRDs come from the same module (manifests/crds).
build_argo_rollouts() {
  local dir; dir=$(argo_rollouts_dir)
  cached "$dir" rollouts-controller && [ -f "$dir/crds/rollout-crd.yaml" ] \
    && { log "argo-rollouts $LOCALENV_ARGO_ROLLOUTS_VERSION: cached"; return; }
  log "argo-rollouts $LOCALENV_ARGO_ROLLOUTS_VERSION: building rollouts-controller (~3 min cold on 2 cores)"
  local src tmp mod="$SCRATCH/argo-rollouts-$LOCALENV_ARGO_ROLLOUTS_VERSION"
  tmp=$(mktemp -d "$LOCALENV_CACHE/tmp.XXXX")
  src=$(GOFLAGS='' go mod download -json "github.com/argoproj/argo-rollouts@$LOCALENV_ARGO_ROLLOUTS_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || die "could not download github.com/argoproj/argo-rollouts@$LOCALENV_ARGO_ROLLOUTS_VERSION from the Go module proxy"
  rm -rf "$mod"; cp -r "$src" "$mod"; chmod -R u+w "$mod"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$tmp/rollouts-controller" ./cmd/rollouts-controller)
  mkdir -p "$tmp/crds"; cp "$mod"/manifests/crds/*-crd.yaml "$tmp/crds/"
  install_dir "$dir" "$tmp"
}

# Gateway API's CRDs, upstream's files (never committed here): config/crd/standard of the Go module, which holds
# the standard channel's CRDs and the ValidatingAdmissionPolicy safe-upgrades.gateway.networking.k8s.io beside them.
# cluster.sh applies them on every `up`. Copied out of the module cache, whose files are read-only.
build_gateway_api() {
  local dir; dir=$(gateway_api_dir)
  [ -f "$dir/gateway.networking.k8s.io_httproutes.yaml" ] && { log "gateway-api $LOCALENV_GATEWAY_API_VERSION: cached"; return; }
  log "gateway-api $LOCALENV_GATEWAY_API_VERSION: fetching the standard-channel CRDs (sigs.k8s.io/gateway-api)"
  local src tmp
  src=$(GOFLAGS='' go mod download -json "sigs.k8s.io/gateway-api@$LOCALENV_GATEWAY_API_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  compgen -G "$src/config/crd/standard/*.yaml" >/dev/null \
    || die "could not download sigs.k8s.io/gateway-api@$LOCALENV_GATEWAY_API_VERSION (with config/crd/standard) from the Go module proxy"
  tmp=$(mktemp -d "$LOCALENV_CACHE/tmp.XXXX")
  cp "$src"/config/crd/standard/*.yaml "$tmp/" && chmod 644 "$tmp"/*.yaml
  install_dir "$dir" "$tmp"
}

main() {
  local start=$SECONDS targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=(etcd kwok helm promtool argo_rollouts redis_exporter cyclonus gateway_api kubernetes)
  mkdir -p "$LOCALENV_CACHE"
  if ! cached "$(k8s_bin_dir)" kubectl || ! cached "$(etcd_bin_dir)" etcd; then check_proxy; fi
  for t in "${targets[@]}"; do "build_$t"; done
  log "binaries ready in $((SECONDS - start))s under $LOCALENV_CACHE"
}
main "$@"
