#!/usr/bin/env bash
# The fast tier, no cluster: the unit tests on every core (one file per worker, as the files share their fixtures)
# and, beside them, the integration files that need the local data services but no cluster (the groups
# `tests/integration/groups.py --no-cluster` prints). The unit tier's longest file keeps one worker busy long after
# the other is done, so the services' files cost little time there; in the integration stage they would wait on the
# cluster's groups. Called by `make unit` once the services are up; their output is printed when they end.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# shellcheck source=/dev/null
source <(tests/localenv/services.sh env)
start=$SECONDS rc=0 pids=() names=()
for group in $(python3 tests/integration/groups.py --no-cluster); do
  echo "::: integration group $group (no cluster): started beside the unit tests"
  LOCALENV_TEST_GROUP=$group tests/pytest.sh tests/integration --group "$group" --tier "${INTEGRATION_TIER:-ci}" \
    > "$logs/$group.log" 2>&1 &
  pids+=("$!") names+=("$group")
done
tests/pytest.sh tests/unit -n auto --dist loadfile || rc=1
echo "::: unit tests: $([ $rc -eq 0 ] && echo passed || echo FAILED) ($((SECONDS - start))s in)"
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then result=passed; else result=FAILED rc=1; fi
  echo "::: integration group ${names[$i]} (no cluster): $result ($((SECONDS - start))s in)"
  cat "$logs/${names[$i]}.log"
done
exit $rc
