#!/usr/bin/env bash
# The local test cluster: the real control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) run by `kwokctl --runtime binary`,
# with KWOK playing three nodes in three zones. Everything binds 127.0.0.1.
#
#   cluster.sh up       build binaries if needed, start the cluster, wait Ready
#                       (and the stand-ins and the job runner, also when it is already up)
#   cluster.sh down     stop it and delete its state
#   cluster.sh status   say whether it is up
#   cluster.sh env      print the exports that point kubectl/helm/ansible at it
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${LOCALENV_CLUSTER_NAME:=langfuse-ops}"
: "${LOCALENV_APISERVER_PORT:=16443}"
: "${LOCALENV_PYTHON:=$LOCALENV_DIR/../../.venv/bin/python}"
# The stand-in Langfuse server that port-forwards to web/worker pods reach.
: "${LOCALENV_STANDIN_WEB_PORT:=13000}"
export KWOK_WORKDIR="$LOCALENV_STATE/kwok"
KUBECONFIG_PATH="$LOCALENV_STATE/kubeconfig"
KWOKCTL="$(kwok_bin_dir)/kwokctl"
KUBECTL="$(k8s_bin_dir)/kubectl"

kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

api_up() { [ -f "$KUBECONFIG_PATH" ] && kctl get --raw /readyz >/dev/null 2>&1; }

print_env() {
  cat <<ENV
export KUBECONFIG=$KUBECONFIG_PATH
export PATH=$(k8s_bin_dir):$(helm_bin_dir):$(kwok_bin_dir):$LOCALENV_CACHE/promtool/$LOCALENV_PROMTOOL_VERSION:\$PATH
ENV
}

write_config() {
  local bins
  bins=$(printf '{"kubeApiserverBinary":"%s","kubeControllerManagerBinary":"%s","kubeSchedulerBinary":"%s","kubectlBinary":"%s","etcdBinary":"%s","kwokControllerBinary":"%s"}' \
    "$(k8s_bin_dir)/kube-apiserver" "$(k8s_bin_dir)/kube-controller-manager" "$(k8s_bin_dir)/kube-scheduler" \
    "$(k8s_bin_dir)/kubectl" "$(etcd_bin_dir)/etcd" "$(kwok_bin_dir)/kwok")
  [ -x "$LOCALENV_PYTHON" ] || die "no Python with PyYAML at $LOCALENV_PYTHON: run 'make venv' first (or set LOCALENV_PYTHON)"
  local forwards
  forwards=$(printf '{"standin_web":%s,"clickhouse_http":%s,"clickhouse_tcp":%s,"postgres":%s}' \
    "$LOCALENV_STANDIN_WEB_PORT" "${LOCALENV_CLICKHOUSE_HTTP_PORT:-18123}" "${LOCALENV_CLICKHOUSE_TCP_PORT:-19000}" \
    "${LOCALENV_POSTGRES_PORT:-15432}")
  "$LOCALENV_PYTHON" "$LOCALENV_DIR/kwok_config.py" "$(kwok_bin_dir)/stage" "$LOCALENV_KUBERNETES_VERSION" "$bins" \
    "$forwards" "$LOCALENV_STATE/kwok.yaml"
}

seed_cluster() {
  log "adding 3 KWOK nodes in zones a/b/c and the 'standard' StorageClass"
  kctl apply -f "$LOCALENV_DIR/manifests/" >/dev/null
  kctl wait --for=condition=Ready node --all --timeout=60s >/dev/null
  # The namespace controller creates it; the API refuses pods until it exists.
  for _ in $(seq 100); do kctl -n default get serviceaccount default >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "the default ServiceAccount never appeared: kube-controller-manager is not working (see $KWOK_WORKDIR/clusters/$LOCALENV_CLUSTER_NAME/logs)"
}

# Stand-ins for what KWOK cannot run: processes on loopback that play the
# Langfuse pods behind port-forwards, the reconcilers of the Altinity, the
# official ClickHouse (clickhouse.com) and the CloudNativePG operators, and a
# Gateway API controller (status only) for the GatewayClass `standin`.
start_standin() {
  local name=$1; shift
  local pid="$LOCALENV_STATE/standin-$name.pid"
  if [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; then return; fi
  [ "$name" != web ] || require_free_port "$LOCALENV_STANDIN_WEB_PORT" "the stand-in Langfuse server"
  KUBECONFIG="$KUBECONFIG_PATH" nohup "$LOCALENV_PYTHON" "$@" >"$LOCALENV_STATE/standin-$name.log" 2>&1 &
  echo $! >"$pid"
}

start_standins() {
  start_standin web "$LOCALENV_DIR/../standins/langfuse_web.py" "$LOCALENV_STANDIN_WEB_PORT"
  wait_for_port "$LOCALENV_STANDIN_WEB_PORT" "the stand-in Langfuse server"
  start_standin altinity-operator "$LOCALENV_DIR/../standins/altinity_operator.py"
  start_standin cnpg-operator "$LOCALENV_DIR/../standins/cnpg_operator.py"
  start_standin clickhouse-official-operator "$LOCALENV_DIR/../standins/clickhouse_official_operator.py"
  start_standin gateway-controller "$LOCALENV_DIR/../standins/gateway_controller.py"
}

# CRDs of what the cluster does not run (stand-ins under manifests/crds/): applied on
# every `up`, so a cluster that is already up gets new or changed ones too.
apply_crds() {
  local dir="$LOCALENV_DIR/manifests/crds"
  compgen -G "$dir/*.yaml" >/dev/null || return 0
  local names; names=$(kctl apply -f "$dir" -o name | sed 's|.*/||')
  # shellcheck disable=SC2086 # one CRD name a word
  wait_established $names
}

# Waits, with crds.py, until the CRDs named are Established.
wait_established() {
  KUBECONFIG="$KUBECONFIG_PATH" PATH="$(dirname "$KUBECTL"):$PATH" "$LOCALENV_PYTHON" "$LOCALENV_DIR/crds.py" "$@"
}

# Gateway API's standard-channel CRDs, upstream's files that build-binaries.sh fetches from the Go module
# sigs.k8s.io/gateway-api into the cache (never into the repo), then the GatewayClass `standin` of the stand-in
# controller (manifests/gateway-api/): applied on every `up`, like apply_crds, so a cluster already up gets them too.
apply_gateway_api() {
  local dir f names api crds=() policies=()
  dir=$(gateway_api_dir)
  # An `up` of a cluster that is already up does not run build-binaries.sh: fetch them here when they are missing.
  [ -d "$dir" ] || "$LOCALENV_DIR/build-binaries.sh" gateway_api
  for f in "$dir"/*.yaml; do
    if grep -q '^kind: CustomResourceDefinition' "$f"; then crds+=(-f "$f"); else policies+=(-f "$f"); fi
  done
  # Server-side, as upstream installs them: client-side apply would keep a copy of each CRD in an annotation, and
  # the HTTPRoute CRD (~430 kB) is over the API server's 256 kB limit for annotations.
  names=$(kctl apply --server-side --force-conflicts "${crds[@]}" -o name | sed 's|.*/||')
  # shellcheck disable=SC2086 # one CRD name a word
  wait_established $names
  # Beside the CRDs upstream ships a ValidatingAdmissionPolicy and its binding (safe-upgrades.gateway.networking.k8s.io):
  # they refuse experimental-channel CRDs over these standard ones, and Gateway API CRDs older than v1.5.0. The API
  # server serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies from Kubernetes 1.30; an older one
  # (LOCALENV_KUBERNETES_VERSION) does not know the kind, and the policy is left out there.
  if [ ${#policies[@]} -gt 0 ]; then
    api=$(kctl get --raw /apis/admissionregistration.k8s.io/v1 2>/dev/null || true)
    if [[ $api == *'"validatingadmissionpolicies"'* ]]; then
      kctl apply --server-side --force-conflicts "${policies[@]}" >/dev/null
    else
      log "gateway-api: ValidatingAdmissionPolicy safe-upgrades.gateway.networking.k8s.io left out: this API server does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy"
    fi
  fi
  kctl apply -f "$LOCALENV_DIR/manifests/gateway-api/" >/dev/null
}

# The job runner (job_runner.py): runs the containers of the backup/restore Job pods in namespaces
# labelled localenv.langfuse-ops.io/run-jobs=true for real on this machine. It needs root (a mount
# namespace per container); without root it is not started and KWOK completes those pods as before.
start_job_runner() {
  local pid="$LOCALENV_STATE/job-runner.pid" ready="$LOCALENV_STATE/job-runner/ready"
  if [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; then return; fi
  if [ "$(id -u)" -ne 0 ]; then log "job runner not started: it needs root; KWOK completes every Job pod without running it"; return; fi
  rm -f "$ready"
  KUBECONFIG="$KUBECONFIG_PATH" nohup "$LOCALENV_PYTHON" "$LOCALENV_DIR/job_runner.py" --state "$LOCALENV_STATE/job-runner" \
    --kwok-config "$KWOK_WORKDIR/clusters/$LOCALENV_CLUSTER_NAME/kwok.yaml" >>"$LOCALENV_STATE/job-runner.log" 2>&1 &
  echo $! >"$pid"
  for _ in $(seq 150); do
    [ -f "$ready" ] && return 0
    kill -0 "$(cat "$pid")" 2>/dev/null || break
    sleep 0.2
  done
  tail -n 20 "$LOCALENV_STATE/job-runner.log" >&2
  die "the job runner did not start; see $LOCALENV_STATE/job-runner.log"
}

stop_job_runner() {
  local pid="$LOCALENV_STATE/job-runner.pid"
  [ -f "$pid" ] || return 0
  kill "$(cat "$pid")" 2>/dev/null || true
  # It kills the containers it runs, then exits; wait so a following `up` does not find it still alive.
  for _ in $(seq 50); do kill -0 "$(cat "$pid")" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pid"
}

stop_standins() {
  local pid
  for pid in "$LOCALENV_STATE"/standin-*.pid; do
    [ -f "$pid" ] || continue
    kill "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
}

up() {
  local start=$SECONDS
  if api_up; then apply_crds; apply_gateway_api; start_standins; start_job_runner; log "cluster '$LOCALENV_CLUSTER_NAME' already up"; print_env; return; fi
  # The cluster's own binaries. promtool and Argo Rollouts' controller are built by what uses them, when it first
  # needs them (test_observability.py, tests/localenv/argo_rollouts.py): CI's tier runs neither, and a cold build of
  # the two takes about 6 minutes on 2 cores.
  "$LOCALENV_DIR/build-binaries.sh" etcd kwok helm gateway_api kubernetes
  # A cluster whose processes are gone (machine restarted) is thrown away.
  "$KWOKCTL" delete cluster --name "$LOCALENV_CLUSTER_NAME" --kubeconfig "$KUBECONFIG_PATH" >/dev/null 2>&1 || true
  require_free_port "$LOCALENV_APISERVER_PORT" kube-apiserver
  mkdir -p "$LOCALENV_STATE"
  write_config
  log "starting cluster '$LOCALENV_CLUSTER_NAME' ($LOCALENV_KUBERNETES_VERSION) on https://127.0.0.1:$LOCALENV_APISERVER_PORT"
  "$KWOKCTL" create cluster --name "$LOCALENV_CLUSTER_NAME" -c "$LOCALENV_STATE/kwok.yaml" \
    --kube-apiserver-port "$LOCALENV_APISERVER_PORT" --kubeconfig "$KUBECONFIG_PATH" \
    --wait 120s >"$LOCALENV_STATE/kwokctl-create.log" 2>&1 \
    || { tail -n 30 "$LOCALENV_STATE/kwokctl-create.log" >&2; die "kwokctl could not create the cluster (full log: $LOCALENV_STATE/kwokctl-create.log)"; }
  seed_cluster
  apply_crds
  apply_gateway_api
  start_standins
  start_job_runner
  log "cluster up in $((SECONDS - start))s; kubeconfig: $KUBECONFIG_PATH"
  print_env
}

down() {
  stop_job_runner
  stop_standins
  [ -x "$KWOKCTL" ] || { log "kwokctl not built: nothing to stop"; return; }
  "$KWOKCTL" delete cluster --name "$LOCALENV_CLUSTER_NAME" --kubeconfig "$KUBECONFIG_PATH" >/dev/null 2>&1 || true
  rm -rf "$KWOK_WORKDIR" "$KUBECONFIG_PATH" "$LOCALENV_STATE/job-runner"
  log "cluster '$LOCALENV_CLUSTER_NAME' stopped"
}

status() {
  if api_up; then
    log "cluster '$LOCALENV_CLUSTER_NAME' is up: $(kctl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n1)"
    kctl get nodes -L topology.kubernetes.io/zone
  else
    log "cluster '$LOCALENV_CLUSTER_NAME' is down"; return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
