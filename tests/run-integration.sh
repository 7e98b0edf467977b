#!/usr/bin/env bash
# The integration stage: the groups of tests/integration/groups.py side by side on the local cluster (that file
# says which tests run beside which, and why). A group is one pytest process, its files in order; its output is
# printed when it ends, and a line says when each group starts and ends. INTEGRATION_TIER=ci (what `make test`
# and CI run) leaves out the tests groups.py lists in FULL_TIER_ONLY; INTEGRATION_TIER=full runs them all.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$SECONDS rc=0 pids=() names=()
echo "::: integration tier ${INTEGRATION_TIER:-ci}"
for group in $(python3 tests/integration/groups.py); do
  echo "::: integration group $group: started"
  LOCALENV_TEST_GROUP=$group tests/pytest.sh tests/integration --group "$group" --tier "${INTEGRATION_TIER:-ci}" \
    > "$logs/$group.log" 2>&1 &
  pids+=("$!") names+=("$group")
done
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then result=passed; else result=FAILED rc=1; fi
  echo "::: integration group ${names[$i]}: $result ($((SECONDS - start))s in)"
  cat "$logs/${names[$i]}.log"
done
echo "::: integration took $((SECONDS - start))s"
exit $rc
