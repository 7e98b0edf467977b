"""Every role's argument_specs and defaults describe the same variables.

A variable in one and not the other is a bug: undocumented, or unchecked.
Required inputs have no default; they appear in defaults/main.yml only as a
comment `# <name>:  (required, no default)`.
"""
import re
from pathlib import Path

import pytest
import yaml

ROLES = sorted(p.parent.parent for p in (Path(__file__).resolve().parents[2] / "roles").glob("*/meta/argument_specs.yml"))


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_specs_match_defaults(role):
    text = (role / "defaults" / "main.yml").read_text()
    defaults = set(yaml.safe_load(text) or {})
    required = set(re.findall(r"^# ([a-z0-9_]+):\s+\(required, no default\)", text, flags=re.M))
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    for entry, spec in specs.items():
        options = spec.get("options", {})
        assert set(options) == defaults | required, f"{role.name}:{entry}"
        assert {k for k, v in options.items() if v.get("required")} == required, f"{role.name}:{entry}"
        for name, option in options.items():
            assert name.startswith(role.name + "_"), f"{name} is not prefixed with the role name"
            assert option.get("description"), f"{name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_documented(role):
    lines = (role / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z0-9_]+:", line):
            above = lines[:i][::-1]
            # a comment right above, or the key belongs to a commented group without a blank line between
            block = []
            for ln in above:
                if not ln.strip():
                    break
                block.append(ln)
            assert any(ln.startswith("#") for ln in block), f"{role.name}: {line.split(':')[0]} has no comment"


def _nested(options, path):
    for name, option in (options or {}).items():
        yield f"{path}.{name}", option
        if isinstance(option, dict):
            yield from _nested(option.get("options"), f"{path}.{name}")


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_nested_option_is_a_described_option(role):
    # A comma in an unquoted flow-mapping description once split it into a bogus option with no spec.
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    for entry, spec in specs.items():
        for path, option in _nested(spec.get("options"), entry):
            assert isinstance(option, dict) and option.get("description"), f"{role.name}:{path} is {option!r}"
            assert option.get("type", "str") in {"str", "int", "float", "bool", "dict", "list", "raw", "path"}, path
