#!/usr/bin/env bash
# Every test, one make stage at a time, so a red run says which stage failed;
# all stages run even after a failure. Called by `make test`.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
start=$SECONDS
passed=0 failed=0 failed_names=()
for stage in lint syntax sanity unit integration crash-ci molecule; do
  echo "::: make $stage ($(date -u +%H:%M:%S), $((SECONDS - start))s in)"
  if make --no-print-directory "$stage"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$stage"); fi
done
echo "::: tests took $((SECONDS - start))s; failed stages: ${failed_names[*]:-none}"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
