# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shapes Kubernetes, Helm and cron accept, checked before anything is created."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Go's time.ParseDuration, as Helm's --timeout reads it.
GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
CRON_SECONDS = ("second", 0, 59)
CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _cron_field(text, name, low, high):
    """Why one cron field is wrong, or None (numbers, *, ranges, lists, steps; no names)."""
    for part in text.split(","):
        base, step = part.partition("/")[::2]
        if step and (not step.isdigit() or int(step) < 1):
            return f"the {name} field {text!r} has a bad step {step!r}"
        if base == "*":
            continue
        bounds = base.split("-")
        if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
            return f"the {name} field {text!r} is not a number, range, list or step ({low}-{high})"
        values = [int(b) for b in bounds]
        if any(v < low or v > high for v in values):
            return f"the {name} field {text!r} is outside {low}-{high}"
        if len(values) == 2 and values[0] > values[1]:
            return f"the {name} field {text!r} is a range that runs backwards"
    return None


def cron_problem(expression, seconds=False):
    """Why a cron expression is wrong, field by field (Kubernetes CronJob: five; CloudNativePG: six, seconds first)."""
    text = str(expression).strip()
    if not seconds and text in CRON_MACROS:
        return None
    fields = text.split()
    spec = ((CRON_SECONDS,) if seconds else ()) + CRON_FIELDS
    if len(fields) != len(spec):
        return f"{text!r} has {len(fields)} fields, not {len(spec)} ({' '.join(f[0] for f in spec)})"
    for field, (name, low, high) in zip(fields, spec):
        problem = _cron_field(field, name, low, high)
        if problem:
            return problem
    return None


def shape_problems(checks):
    """One message per failing check. Each check: [variable, kind, value, ...]:

    dns1123_label (max length as 4th item, default 63), port, go_duration, positive_int,
    cron, cron_seconds, min_max (value = [min, max]).
    """
    problems = []
    for check in checks:
        variable, kind, value = check[0], check[1], check[2]
        if kind == "dns1123_label":
            limit = check[3] if len(check) > 3 else 63
            if not isinstance(value, str) or not DNS1123_LABEL.match(value) or len(value) > limit:
                problems.append(f"{variable} is {value!r}: Kubernetes takes lower-case letters, digits and '-', starting and "
                                f"ending with a letter or digit, at most {limit} characters (e.g. langfuse-prod)")
        elif kind == "port":
            if isinstance(value, bool) or not str(value).isdigit() or not 1 <= int(value) <= 65535:
                problems.append(f"{variable} is {value!r}: a port is a whole number from 1 to 65535")
        elif kind == "go_duration":
            if not isinstance(value, str) or not GO_DURATION.match(value):
                problems.append(f"{variable} is {value!r}: Helm takes a Go duration such as 15m, 90s or 1h30m")
        elif kind == "positive_int":
            if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
                problems.append(f"{variable} is {value!r}: it must be a whole number, 1 or more")
        elif kind in ("cron", "cron_seconds"):
            problem = cron_problem(value, seconds=kind == "cron_seconds")
            if problem:
                problems.append(f"{variable}: {problem}")
        elif kind == "min_max":
            low, high = value
            if all(str(v).isdigit() for v in (low, high)) and int(low) > int(high):
                problems.append(f"{variable}: the minimum {low} is above the maximum {high}; the autoscaler cannot work")
        else:
            raise AnsibleFilterError(f"shape_problems: unknown kind {kind!r}")
    return problems


QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
SUFFIXES = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
            "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def quantity(value):
    """A Kubernetes resource quantity (500m, 2, 1.5Gi, 512M) as a number, or None when it is not one."""
    if isinstance(value, bool):
        return None
    match = QUANTITY.match(str(value).strip())
    return float(match.group(1)) * SUFFIXES[match.group(2)] if match else None


def unschedulable_requests(requests, nodes):
    """Resource requests that no node can hold, one message each.

    requests: [[variable, {cpu: .., memory: ..}], ...] (a pod's requests); nodes: [[name, allocatable], ...]
    as the cluster reports them. A request fits when one node's allocatable holds every resource of it.
    A request that is not a quantity is named too; with no nodes read, nothing is judged.
    """
    problems = []
    if not nodes:
        return problems
    for variable, wanted in requests:
        wanted = {k: v for k, v in (wanted or {}).items() if v not in (None, "")}
        bad = [k for k, v in wanted.items() if quantity(v) is None]
        if bad:
            problems.append(f"{variable}.{bad[0]} is {wanted[bad[0]]!r}: a Kubernetes quantity looks like 500m, 2, 512Mi or 4Gi")
            continue
        if not wanted:
            continue
        fits = [name for name, allocatable in nodes
                if all(quantity((allocatable or {}).get(k, 0)) is not None and quantity(v) <= quantity((allocatable or {}).get(k, 0))
                       for k, v in wanted.items())]
        if not fits:
            largest = ", ".join(f"{k} {max((quantity((a or {}).get(k, 0)) or 0) for _name, a in nodes):g}" for k in wanted)
            asked = ", ".join(f"{k} {v}" for k, v in wanted.items())
            problems.append(f"{variable} asks for {asked}, which no node of the cluster can hold (the most any node can "
                            f"give: {largest}, counting cpu in cores and memory in bytes); the pods would stay Pending. "
                            "Lower the request or add larger nodes")
    return problems


class FilterModule:
    def filters(self):
        return {"shape_problems": shape_problems, "unschedulable_requests": unschedulable_requests}
