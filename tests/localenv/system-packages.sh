#!/usr/bin/env bash
# Installs the Debian packages the tests need, where missing: the data
# servers the local services run, and shellcheck for ansible-test sanity.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
command -v psql >/dev/null || missing+=(postgresql-client-15)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v clickhouse-server >/dev/null || missing+=(clickhouse-server)
command -v clickhouse-client >/dev/null || missing+=(clickhouse-client)
command -v shellcheck >/dev/null || missing+=(shellcheck)
# The job runner records the programs a Job's containers start (and their arguments) with it.
[ -x /usr/bin/strace ] || missing+=(strace)
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]})"
log "installing ${missing[*]} from Debian"
mkdir -p "$LOCALENV_STATE"
# policy-rc.d keeps the packages' own services (on their default, shared
# ports) from starting; ours start on their own ports from services.sh.
policy_created=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_created=1
fi
trap '[ $policy_created -eq 0 ] || rm -f /usr/sbin/policy-rc.d' EXIT
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$LOCALENV_STATE/apt.log" 2>&1 \
  || die "apt-get could not install ${missing[*]} (is the Debian mirror reachable?); see $LOCALENV_STATE/apt.log"
