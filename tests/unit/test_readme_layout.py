"""README's Layout section against the tree: every role, playbook, inventory, module, action, module_utils and filter
file, and test folder is named there, and every name it gives in those lists exists, so the two cannot drift."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def layout():
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```\n(.*?)```", section, flags=re.S)
    return block


def entry(block, folder):
    """The text of one folder's entry: its line and the indented lines after it."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(folder))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    return " ".join(lines[start:end])


def names(text):
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", text))


TREE = {
    "roles/": lambda: {p.name for p in (REPO / "roles").iterdir() if p.is_dir()},
    "playbooks/": lambda: {p.name for p in (REPO / "playbooks").glob("*.yml")},
    "inventories/": lambda: {p.name for p in (REPO / "inventories").iterdir() if p.is_dir()},
    "plugins/": lambda: {p.stem for p in (REPO / "plugins").glob("*/*.py") if p.stem != "__init__"},
    "tests/": lambda: {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))},
}


@pytest.mark.parametrize("folder", sorted(TREE))
def test_every_file_of_the_tree_is_named_in_the_layout(folder):
    assert TREE[folder]() - names(entry(layout(), folder)) == set()


def test_every_role_the_layout_names_exists():
    text = entry(layout(), "roles/")
    listed = set(re.findall(r"\b[a-z0-9]+_[a-z0-9_]+\b|\b(?:preflight|postgres|redis|observability|upgrade|restore)\b", text))
    assert listed - TREE["roles/"]() == set()
    assert len(listed) == len(TREE["roles/"]())
