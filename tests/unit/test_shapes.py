"""Shapes Kubernetes, Helm and cron accept: each refusal names the variable and what it takes."""
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.filter.shapes import (  # noqa: E402
    cron_problem, quantity, shape_problems, unschedulable_requests)


@pytest.mark.parametrize("kind, value, ok", [
    ("dns1123_label", "langfuse", True), ("dns1123_label", "lf-prod-2", True), ("dns1123_label", "Langfuse", False),
    ("dns1123_label", "-lf", False), ("dns1123_label", "lf-", False), ("dns1123_label", "lf_prod", False),
    ("dns1123_label", "a" * 64, False), ("dns1123_label", "", False), ("dns1123_label", 7, False),
    ("port", 5432, True), ("port", "6379", True), ("port", 0, False), ("port", 65536, False), ("port", "http", False),
    ("port", True, False),
    ("go_duration", "15m", True), ("go_duration", "1h30m", True), ("go_duration", "90s", True), ("go_duration", "1.5h", True),
    ("go_duration", "15", False), ("go_duration", "15 min", False), ("go_duration", "15M", False), ("go_duration", "", False),
    ("positive_int", 3, True), ("positive_int", 0, False), ("positive_int", -1, False), ("positive_int", "two", False),
])
def test_single_value_shapes(kind, value, ok):
    problems = shape_problems([["the_variable", kind, value]])
    assert (problems == []) is ok, problems
    if not ok:
        assert problems[0].startswith("the_variable is ")


def test_a_label_limit_can_be_lower():
    assert shape_problems([["langfuse_helm_release_name", "dns1123_label", "a" * 40, 36]])
    assert not shape_problems([["langfuse_helm_release_name", "dns1123_label", "a" * 36, 36]])


@pytest.mark.parametrize("expression, problem", [
    ("0 3 * * *", None), ("*/15 * * * 1-5", None), ("0 3 1,15 * 0", None), ("@daily", None), ("0 0 * * 7", None),
    ("0 3 * *", "has 4 fields, not 5"), ("60 3 * * *", "the minute field '60' is outside 0-59"),
    ("0 24 * * *", "the hour field '24' is outside 0-23"), ("0 3 0 * *", "the day of month field '0' is outside 1-31"),
    ("0 3 * 13 *", "the month field '13' is outside 1-12"), ("0 3 * * 8", "the day of week field '8' is outside 0-7"),
    ("0 5-3 * * *", "runs backwards"), ("*/0 * * * *", "bad step"), ("0 3 * * MON", "is not a number"),
])
def test_cron_five_fields(expression, problem):
    got = cron_problem(expression)
    assert got is None if problem is None else problem in got, got


def test_cron_with_seconds():
    assert cron_problem("0 0 3 * * *", seconds=True) is None
    assert "has 5 fields, not 6" in cron_problem("0 3 * * *", seconds=True)
    assert "the second field '61'" in cron_problem("61 0 3 * * *", seconds=True)


def test_min_max_and_unknown_kinds():
    assert shape_problems([["langfuse_helm_web.hpa", "min_max", [3, 10]]]) == []
    assert shape_problems([["langfuse_helm_web.hpa", "min_max", [10, 3]]]) == [
        "langfuse_helm_web.hpa: the minimum 10 is above the maximum 3; the autoscaler cannot work"]
    with pytest.raises(AnsibleFilterError):
        shape_problems([["x", "colour", "blue"]])


NODES = [["a", {"cpu": "4", "memory": "16Gi", "pods": "110"}], ["b", {"cpu": "8", "memory": "8Gi", "pods": "110"}]]


@pytest.mark.parametrize("value, number", [("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("512Mi", 512 * 2 ** 20), ("1G", 1e9),
                                           ("4Gi", 4 * 2 ** 30), (3, 3.0), ("two", None), ("1 Gi", None), (True, None)])
def test_quantities(value, number):
    assert quantity(value) == number


@pytest.mark.parametrize("wanted, fits", [
    ({"cpu": "4", "memory": "16Gi"}, True),      # node a exactly
    ({"cpu": "6", "memory": "8Gi"}, True),       # only node b
    ({"cpu": "6", "memory": "12Gi"}, False),     # cpu only on b, memory only on a: no single node
    ({"cpu": "9000m"}, False), ({"memory": "17Gi"}, False), ({}, True), ({"cpu": ""}, True),
])
def test_a_request_fits_when_one_node_holds_all_of_it(wanted, fits):
    problems = unschedulable_requests([["langfuse_helm_web.resources.requests", wanted]], NODES)
    assert (problems == []) is fits, problems
    if not fits:
        assert problems[0].startswith("langfuse_helm_web.resources.requests asks for ") and "Lower the request" in problems[0]


def test_requests_are_not_judged_without_nodes_and_bad_quantities_are_named():
    assert unschedulable_requests([["x", {"cpu": "999"}]], []) == []
    assert unschedulable_requests([["x", {"memory": "lots"}]], NODES) == [
        "x.memory is 'lots': a Kubernetes quantity looks like 500m, 2, 512Mi or 4Gi"]
