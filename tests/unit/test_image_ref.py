"""plugins/filter/image_ref.py: image references as the OCI distribution spec writes them, and which are pinned."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from image_ref import image_ref  # noqa: E402

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("image, repository, tag, digest", [
    ("valkey/valkey:8.1.11", "valkey/valkey", "8.1.11", ""),
    ("clickhouse/clickhouse-server:26.4@" + DIGEST, "clickhouse/clickhouse-server", "26.4", DIGEST),
    ("registry.internal:5000/valkey/valkey:8.1.11", "registry.internal:5000/valkey/valkey", "8.1.11", ""),
    ("registry.internal:5000/prom/blackbox-exporter:v0.28.0@" + DIGEST, "registry.internal:5000/prom/blackbox-exporter",
     "v0.28.0", DIGEST),
    ("ghcr.io/cloudnative-pg/postgresql:17.9-minimal-trixie", "ghcr.io/cloudnative-pg/postgresql", "17.9-minimal-trixie", ""),
    ("docker.io/library/postgres:17.6-bookworm", "docker.io/library/postgres", "17.6-bookworm", ""),
])
def test_pinned_references(image, repository, tag, digest):
    assert image_ref(image) == {"repository": repository, "tag": tag, "digest": digest, "problem": ""}


@pytest.mark.parametrize("image, problem", [
    ("valkey/valkey", "no version tag"),
    ("valkey/valkey@" + DIGEST, "no version tag"),
    ("registry.internal:5000/valkey/valkey", "no version tag"),
    ("valkey/valkey:latest", "the tag latest moves"),
    ("valkey/valkey:latest@" + DIGEST, "the tag latest moves"),
    ("valkey/valkey:8.1@sha256:short", "not an image reference"),
    ("Valkey/valkey:8.1", "not an image reference"),
    ("valkey/valkey:8.1 ", "not an image reference"),
    ("", "not an image reference"),
])
def test_unpinned_or_malformed_references_name_the_problem(image, problem):
    assert image_ref(image)["problem"].startswith(problem)


RENDER = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: langfuse_ops.platform.clickhouse_operator
        tasks_from: validate
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: >-
          {{ {'cluster': lookup('ansible.builtin.template', templates ~ '/official_cluster.yml.j2') | from_yaml,
              'keeper': lookup('ansible.builtin.template', templates ~ '/official_keeper.yml.j2') | from_yaml} | to_json }}
"""


@pytest.mark.parametrize("suffix, image", [
    ("", {"repository": "clickhouse/clickhouse-server", "tag": "26.4"}),
    ("@" + DIGEST, {"repository": "clickhouse/clickhouse-server", "hash": DIGEST}),
])
def test_the_official_operator_gets_a_tag_or_the_digest(tmp_path, suffix, image):
    # ClickHouse's operator takes a tag or a hash (api/v1alpha1/common.go ContainerImage: mutually exclusive) and runs
    # <repository>@<hash> when given one.
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "render.yml").write_text(RENDER)
    variables = {"clickhouse_operator_mode": "official", "clickhouse_operator_image": "clickhouse/clickhouse-server:26.4" + suffix,
                 "clickhouse_operator_keeper_image": "clickhouse/clickhouse-keeper:26.4" + suffix,
                 "out": str(tmp_path / "out.json"), "templates": str(repo / "roles" / "clickhouse_operator" / "templates"),
                 "ansible_python_interpreter": sys.executable}
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "render.yml"),
                           "-e", json.dumps(variables)], capture_output=True, text=True, cwd=repo, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rendered = json.loads((tmp_path / "out.json").read_text())
    assert rendered["cluster"]["spec"]["containerTemplate"]["image"] == image
    assert rendered["keeper"]["spec"]["containerTemplate"]["image"] == {
        k: v.replace("server", "keeper") for k, v in image.items()}
