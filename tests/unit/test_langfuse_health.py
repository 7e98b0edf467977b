"""langfuse_health's observation window (the upgrade's canary): each call to the one pod counts, and a
pod that stops being Ready, answers wrong or restarts fails the window. The pod and its answers are
scripted here; the module's own loop, counting and verdict run as they do on a cluster."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from module_runner import run_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.modules import langfuse_health  # noqa: E402

POD = "langfuse-web-canary-7d9f-abcde"


class Script:
    """Answers for call i (0 = the first, passing check): (ready, http code, body, restarts)."""

    def __init__(self, answers):
        self.answers, self.calls = answers, 0

    def now(self):
        return self.answers[min(self.calls, len(self.answers) - 1)]

    def ready_pods(self, api, namespace, selector):
        assert "langfuse-ops.io/canary=true" in selector
        return [POD] if self.now()[0] else []

    def http_get(self, api, namespace, pod, port, path):
        assert pod == POD
        code, body = self.now()[1:3]
        self.calls += 1
        return code, body

    def read_namespaced_pod(self, name, namespace):
        restarts = self.now()[3]
        return SimpleNamespace(status=SimpleNamespace(container_statuses=[SimpleNamespace(restart_count=restarts)]),
                               spec=SimpleNamespace(containers=[SimpleNamespace(image="langfuse/langfuse:3.226.0")]))


OK = (True, 200, json.dumps({"status": "OK", "version": "3.226.0"}), 0)


def run(monkeypatch, capsys, script, **args):
    monkeypatch.setattr(langfuse_health.pf, "ready_pods", script.ready_pods)
    monkeypatch.setattr(langfuse_health.pf, "http_get", script.http_get)
    monkeypatch.setattr(langfuse_health.pf, "core_api", lambda *a: SimpleNamespace(read_namespaced_pod=script.read_namespaced_pod))
    monkeypatch.setattr(langfuse_health.time, "sleep", lambda s: None)
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(langfuse_health.time, "monotonic", lambda: next(clock))  # one "second" a reading
    params = {"namespace": "it", "selector": "langfuse-ops.io/canary=true", "expected_version": "3.226.0",
              "retries": 3, "delay": 1, **args}
    return run_module(monkeypatch, capsys, langfuse_health.main, params)


def test_a_healthy_canary_passes_every_call_of_the_window(monkeypatch, capsys):
    result = run(monkeypatch, capsys, Script([OK]), observe_seconds=10)
    assert not result.get("failed"), result
    assert result["probes"]["failed"] == 0 and result["probes"]["restarts"] == 0
    assert result["probes"]["calls"] >= 5


@pytest.mark.parametrize("bad, why", [
    ((False, 200, "", 0), f"{POD} is not Ready"),
    ((True, 500, "boom", 0), "answered HTTP 500"),
    ((True, 200, json.dumps({"status": "OK", "version": "3.225.4"}), 0), "reports version 3.225.4, not 3.226.0"),
])
def test_a_canary_that_goes_bad_in_the_window_fails_it(monkeypatch, capsys, bad, why):
    result = run(monkeypatch, capsys, Script([OK, OK, bad]), observe_seconds=10)
    assert result["failed"] is True
    assert result["probes"]["failed"] >= 1 and why in result["probes"]["errors"][0], result
    assert f"{POD} failed {result['probes']['failed']} of {result['probes']['calls']} health calls over 10 s" in result["msg"]


def test_a_restart_fails_the_window_even_when_every_call_passed(monkeypatch, capsys):
    result = run(monkeypatch, capsys, Script([OK, OK, OK, (True, 200, OK[2], 1)]), observe_seconds=10)
    assert result["failed"] is True and result["probes"]["failed"] == 0 and result["probes"]["restarts"] == 1
    assert "restarted 1 times" in result["msg"]


def test_the_tolerated_ratio_lets_one_failed_call_in_ten_pass(monkeypatch, capsys):
    answers = [OK, OK, (True, 500, "boom", 0)] + [OK] * 20
    assert not run(monkeypatch, capsys, Script(answers), observe_seconds=10, max_error_ratio=0.2).get("failed")
    assert run(monkeypatch, capsys, Script(answers), observe_seconds=10, max_error_ratio=0.0)["failed"] is True
