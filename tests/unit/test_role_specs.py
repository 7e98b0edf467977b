"""Every role's meta/argument_specs.yml against its defaults/main.yml, checked for what a spec must say.

The specs are written by hand (nested options, choices, no_log), so these checks hold them to the
defaults: every default has a spec entry (else it is unchecked), a default the spec states is the value
defaults/main.yml sets (where that value is a literal, not a Jinja template), the spec's type takes that
value, and every description is its own: no two options share one, and none only repeats the option's name.
Inputs without a default appear in defaults/main.yml only as a comment: `# <name>:  (required, no default)`, or
`# <name>:  (set by the caller, no default)` for what an including role passes to an entry point when it needs to.
"""
import re
from pathlib import Path

import pytest
import yaml

ROLES = sorted(p.parent.parent for p in (Path(__file__).resolve().parents[2] / "roles").glob("*/meta/argument_specs.yml"))
TYPES = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "dict": (dict,), "list": (list,)}


def load(role):
    text = (role / "defaults" / "main.yml").read_text()
    defaults = yaml.safe_load(text) or {}
    required = set(re.findall(r"^# ([a-z0-9_]+):\s+\(required, no default\)", text, flags=re.M))
    by_caller = set(re.findall(r"^# ([a-z0-9_]+):\s+\(set by the caller, no default\)", text, flags=re.M))
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    return defaults, required, by_caller, specs


def nested(options, path=""):
    for name, option in (options or {}).items():
        yield f"{path}.{name}" if path else name, option
        if isinstance(option, dict):
            yield from nested(option.get("options"), f"{path}.{name}" if path else name)


def is_template(value):
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(is_template(v) for v in value.values())
    if isinstance(value, list):
        return any(is_template(v) for v in value)
    return False


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_has_a_spec_entry(role):
    defaults, required, by_caller, specs = load(role)
    options = {}
    for spec in specs.values():
        options.update(spec.get("options", {}))
    assert not set(defaults) - set(options), f"{role.name}: defaults with no spec entry: {sorted(set(defaults) - set(options))}"
    unmarked = set(options) - set(defaults) - required - by_caller
    assert not unmarked, f"{role.name}: spec entries with no default, not marked required or set by the caller: {sorted(unmarked)}"
    for entry, spec in specs.items():
        for name, option in spec.get("options", {}).items():
            assert name.startswith(role.name + "_"), f"{name} is not prefixed with the role name"
            assert not option.get("required") or name in required, f"{role.name}:{entry}:{name} is required but has a default"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_defaults_and_types_are_the_defaults(role):
    defaults, specs = load(role)[0], load(role)[3]
    for entry, spec in specs.items():
        for name, option in spec.get("options", {}).items():
            if name not in defaults or is_template(defaults[name]):
                continue
            value = defaults[name]
            if "default" in option:
                assert option["default"] == value, (
                    f"{role.name}:{entry}:{name}: spec default {option['default']!r}, defaults {value!r}")
            kind = option.get("type", "str")
            if kind in TYPES and value is not None:
                ok = isinstance(value, TYPES[kind]) and not (kind in ("int", "float") and isinstance(value, bool))
                assert ok, f"{role.name}:{entry}:{name} is type {kind} but defaults/main.yml sets {value!r}"
            if option.get("choices") and value not in ("", None):
                allowed = set(value) <= set(option["choices"]) if kind == "list" else value in option["choices"]
                assert allowed, f"{role.name}:{entry}:{name}: default {value!r} is not one of its choices"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_description_is_its_own(role):
    specs = load(role)[3]
    for entry, spec in specs.items():
        seen = {}
        for path, option in nested(spec.get("options")):
            assert isinstance(option, dict), f"{role.name}:{entry}:{path} is {option!r}"
            description = option.get("description")
            text = " ".join(description) if isinstance(description, list) else str(description or "")
            text = " ".join(text.split())
            assert text, f"{role.name}:{entry}:{path} has no description"
            words = re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
            assert words not in {path.split(".")[-1].replace("_", " "), path.replace("_", " ").replace(".", " ")}, (
                f"{role.name}:{entry}:{path}: the description only repeats the name")
            assert text not in seen, f"{role.name}:{entry}: {path} and {seen.get(text)} share the description {text!r}"
            seen[text] = path
            assert option.get("type", "str") in {"str", "int", "float", "bool", "dict", "list", "raw", "path"}, path


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_commented(role):
    lines = (role / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z0-9_]+:", line):
            block = []
            for above in lines[:i][::-1]:
                if not above.strip():
                    break
                block.append(above)
            assert any(ln.startswith("#") for ln in block), f"{role.name}: {line.split(':')[0]} has no comment"
