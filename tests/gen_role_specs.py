"""Regenerate roles/*/meta/argument_specs.yml from roles/*/defaults/main.yml.

defaults/main.yml is where a variable is written down: its default and the
comment above it. This keeps the specs in step (tests/unit/test_role_specs.py
fails when they drift): descriptions come from the comments, types from the
values, `required` from `# name:  (required, no default)` lines. What a
comment cannot say (choices, elements, no_log, suboptions, a type the value
does not show) is kept from the spec file as it is.

Usage: .venv/bin/python tests/gen_role_specs.py [ROLE ...]   (default: every role with specs)
"""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("type", "choices", "elements", "no_log", "options")


def comments_and_values(text):
    """(name, description, required) for each variable, in file order."""
    out, block, after_variable = [], [], False
    for line in text.splitlines():
        required = re.match(r"^# ([a-z0-9_]+):\s+\(required, no default\)", line)
        if required:
            out.append((required.group(1), " ".join(block).strip(), True))
            after_variable = True
        elif line.startswith("#"):
            if after_variable:
                block, after_variable = [], False
            block.append(line.lstrip("#").strip())
        elif re.match(r"^[a-z0-9_]+:", line):
            out.append((line.split(":")[0], " ".join(block).strip(), False))
            after_variable = True
        elif not line.strip():
            block, after_variable = [], False
    return out


class _Dumper(yaml.SafeDumper):
    """Indented lists, and every entry written out (no anchors)."""

    def ignore_aliases(self, data):
        return True

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def type_of(value):
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (dict, "dict"), (list, "list")):
        if isinstance(value, kind):
            return name
    return "str"


def generate(role):
    defaults_text = (role / "defaults" / "main.yml").read_text()
    defaults = yaml.safe_load(defaults_text) or {}
    spec_path = role / "meta" / "argument_specs.yml"
    specs = yaml.safe_load(spec_path.read_text())["argument_specs"]
    old = {}
    for entry in specs.values():
        old.update(entry.get("options", {}))
    options = {}
    for name, description, required in comments_and_values(defaults_text):
        option = {"type": type_of(defaults[name]) if name in defaults else "str"}
        if required:
            option["required"] = True
        option["description"] = description or old.get(name, {}).get("description", "")
        option.update({k: v for k, v in old.get(name, {}).items() if k in KEPT})
        options[name] = option
    for entry in specs.values():
        entry["options"] = options
    body = yaml.dump({"argument_specs": specs}, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    spec_path.write_text(body)


def main(names):
    roles = [ROOT / "roles" / n for n in names] or sorted(p.parents[1] for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
    for role in roles:
        generate(role)
        print(f"regenerated {role.relative_to(ROOT)}/meta/argument_specs.yml")


if __name__ == "__main__":
    main(sys.argv[1:])
