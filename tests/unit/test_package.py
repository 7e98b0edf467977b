"""The collection as `ansible-galaxy collection build` packs it: what users install from the tarball.

Built for real into a temporary directory from this tree; the tarball's file list and files are then checked:
nothing of the repository's own tests and local environment ships, nothing that ships points at what does not, the
controller's Python requirements ship, every collection the roles, playbooks and plugins call is declared, and the
metadata names no invented repository."""
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXCLUDED = ("tests/", "molecule/", ".build/", ".ci/", "inventories/local")
# Collections that come with ansible-core, and this one.
BUILT_IN = {"ansible.builtin", "ansible.legacy", "langfuse_ops.platform"}


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("package")
    subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(out), str(REPO)], check=True,
                   capture_output=True, text=True)
    [path] = out.glob("langfuse_ops-platform-*.tar.gz")
    with tarfile.open(path) as tar:
        files = {m.name: (tar.extractfile(m).read().decode("utf-8", "replace") if m.isfile() else None) for m in tar.getmembers()}
    print(f"\n{path.name}: {sum(1 for v in files.values() if v is not None)} files, {path.stat().st_size} bytes")
    return files


def test_nothing_of_the_tests_or_the_local_environment_ships(tarball):
    shipped = [name for name in tarball if name.startswith(EXCLUDED) or name in ("Makefile", "ansible.cfg", ".ansible-lint", ".yamllint")]
    assert shipped == []
    assert {"MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml", "requirements/runtime.txt",
            "playbooks/install.yml", "roles/backup_cron/files/backup-lib.sh"} <= set(tarball)


def test_nothing_that_ships_points_at_what_does_not(tarball):
    """Comments may say where a stand-in lives; what runs (a value, a path, a task) may not need a file left out."""
    pointing = []
    for name, text in tarball.items():
        if text is None or name.startswith("changelogs/") or not name.endswith((".yml", ".yaml", ".j2", ".sh", ".cfg", ".py", ".txt")):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0] if not name.endswith(".py") else re.sub(r'""".*?"""|#.*', "", line)
            if any(excluded in code for excluded in EXCLUDED):
                pointing.append(f"{name}:{number}: {line.strip()}")
    assert pointing == []


def test_every_collection_called_is_declared(tarball):
    manifest = json.loads(tarball["MANIFEST.json"])["collection_info"]
    declared = set(manifest["dependencies"]) | BUILT_IN
    called = set()
    for name, text in tarball.items():
        if text is None or not name.startswith(("roles/", "playbooks/", "plugins/")):
            continue
        for match in re.finditer(r"(?<![\w.])([a-z_]+)\.([a-z_]+)\.([a-z_0-9]+)(?=[:\s'\"])", text):
            if name.endswith(".py") and match[1] in ("ansible", "ansible_collections", "kubernetes", "self", "os", "sys"):
                continue
            if match[1] in ("community", "kubernetes", "amazon", "ansible", "cloud", "langfuse_ops"):
                called.add(f"{match[1]}.{match[2]}")
    assert "kubernetes.core" in called and "ansible.utils" in called
    assert called - declared == set()


def test_the_metadata_names_no_invented_repository_and_the_runtime_requirements(tarball):
    manifest = json.loads(tarball["MANIFEST.json"])["collection_info"]
    assert "example.invalid" not in json.dumps(manifest)
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert manifest["dependencies"] == galaxy["dependencies"]
    assert "pyrage" in tarball["requirements/runtime.txt"] and "kubernetes" in tarball["requirements/runtime.txt"]
