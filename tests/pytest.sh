#!/usr/bin/env bash
# pytest, with "collected no tests" (exit 5) reported as the failure it is
# for us: a test directory that lost its tests must not pass quietly.
set -uo pipefail
pytest -q -p no:cacheprovider --durations=15 "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests in: $*" >&2
  exit 1
fi
exit $rc
