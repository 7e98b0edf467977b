# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helm post-renderer for the Langfuse release: the probes the official chart (1.5.x and 2.0.0) cannot be told.

The chart renders no startupProbe (web or worker), no readinessProbe for the worker, and the worker's
livenessProbe path hard-coded to /api/health. Users ask for each (langfuse-k8s issues); upstream's worker reads
`/api/health?failIfEventPropagationStuck=true` as a liveness signal for the v3 -> v4 dual write, with an initial
delay of at least 60 s (worker/src/env.ts). This adds them to the rendered Deployments, and nothing else:

- `startupProbe` on the web and the worker container, only where the chart rendered none;
- `readinessProbe` on the worker container (upstream's /api/ready, which fails once SIGTERM arrived), only where
  the chart rendered none;
- the worker's livenessProbe path, only while it is exactly the chart's `/api/health`, and its initialDelaySeconds
  raised to the given floor.

When the chart learns a probe, it renders it, this leaves it alone, and the role passes it as a chart value
instead; the patch then goes away. The configuration is the JSON in LANGFUSE_OPS_POST_RENDER (the release's values
carry the same under langfuseOps.postRender, so a change of it is a change Helm sees); `{}` changes nothing.

Reads the manifests on stdin and writes them on stdout; documents it does not change are written as they came, the
ones it patches as JSON.
"""
import copy
import json
import os
import re
import sys

import yaml


class CoreLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """YAML 1.2's core schema, as Helm and Kubernetes read manifests: PyYAML's default (YAML 1.1) would also read
    yes/no/on/off as booleans, 1:20 as a number and 2026-12-03 as a date."""


CoreLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
        ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
        ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
        ("tag:yaml.org,2002:float",
         r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
         list("-+.0123456789"))):
    CoreLoader.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def patch_container(container, patch):
    """`container` with `patch` ({startupProbe, readinessProbe, livenessPath, livenessInitialDelaySeconds}) applied
    where the chart left room for it, and whether anything changed."""
    patched = copy.deepcopy(container)
    for probe in ("startupProbe", "readinessProbe"):
        if patch.get(probe) and not patched.get(probe):
            patched[probe] = copy.deepcopy(patch[probe])
    liveness = patched.get("livenessProbe") or {}
    if patch.get("livenessPath") and (liveness.get("httpGet") or {}).get("path") == "/api/health":
        liveness["httpGet"]["path"] = patch["livenessPath"]
        floor = int(patch.get("livenessInitialDelaySeconds") or 0)
        liveness["initialDelaySeconds"] = max(int(liveness.get("initialDelaySeconds") or 0), floor)
    return patched, patched != container


def patch_document(document, config):
    """The Deployment `document` patched for its component, or None when it is none of config's."""
    if not isinstance(document, dict) or document.get("kind") != "Deployment":
        return None
    name = (document.get("metadata") or {}).get("name", "")
    for component, patch in (config.get("components") or {}).items():
        if name != f"{config['fullname']}-{component}":
            continue
        containers = document["spec"]["template"]["spec"]["containers"]
        changed = False
        for index, container in enumerate(containers):
            if container.get("name") == patch["container"]:
                containers[index], changed = patch_container(container, patch)
        return document if changed else None
    return None


def split_documents(text):
    """The YAML documents of Helm's output, each as its text (the `---` lines dropped)."""
    documents, current = [], []
    for line in text.splitlines(keepends=True):
        if line.rstrip() == "---":
            documents.append("".join(current))
            current = []
        else:
            current.append(line)
    documents.append("".join(current))
    return [d for d in documents if d.strip()]


def render(text, config):
    out = []
    for source in split_documents(text):
        patched = patch_document(yaml.load(source, Loader=CoreLoader), config) if config else None  # noqa: S506
        # JSON is YAML that every reader takes the same way: each string stays a string.
        out.append(source if patched is None else json.dumps(patched, indent=2) + "\n")
    return "".join(f"---\n{d if d.endswith(chr(10)) else d + chr(10)}" for d in out)


def main():
    config = json.loads(os.environ.get("LANGFUSE_OPS_POST_RENDER") or "{}")
    sys.stdout.write(render(sys.stdin.read(), config))


if __name__ == "__main__":
    main()
