#!/usr/bin/env bash
# pytest, with "collected no tests" (exit 5) reported as the failure it is
# for us: a test directory that lost its tests must not pass quietly. A test
# that hangs fails after PYTEST_TIMEOUT seconds (default 1800) with its
# traceback, rather than running CI out of its time.
set -uo pipefail
pytest -q -p no:cacheprovider --durations=15 --timeout="${PYTEST_TIMEOUT:-1800}" "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests in: $*" >&2
  exit 1
fi
exit $rc
