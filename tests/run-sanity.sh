#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection: ansible-test must run from
# inside ansible_collections/<namespace>/<name>, which this repo's root is not.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Not under the repo's .build: ansible-test skips every file below a hidden dir.
work=$(mktemp -d "${TMPDIR:-/tmp}/langfuse-ops-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/langfuse_ops/platform"
mkdir -p "$dest"
cd "$repo"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$dest"
cd "$dest"
# The pip version ansible-test bootstraps, and our offline bootstrap for it.
pip_version=$(python - <<'PY'
import pathlib, re, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", src.read_text()).group(1))
PY
)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
[ -f "$cache" ] || { mkdir -p "$(dirname "$cache")"; cp "$repo/tests/get_pip_offline.py" "$cache"; }
# --venv: each sanity test gets the pinned requirements ansible-test ships.
ansible-test sanity --venv --requirements --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" --color no "$@"
