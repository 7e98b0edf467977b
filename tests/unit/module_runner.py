"""A module's main() run with arguments, as Ansible would, for the unit tier's module tests."""
import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes


def run_module(monkeypatch, capsys, main, params):
    """Runs a module's main() with `params` as its arguments; returns what it printed (exit_json/fail_json)."""
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": params})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    with pytest.raises(SystemExit):
        main()
    return json.loads(capsys.readouterr().out)
