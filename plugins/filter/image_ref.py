# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A container image reference read as the OCI distribution spec writes it: `[registry[:port]/]path:tag[@sha256:hex]`.

Every image the collection runs must name a version tag other than `latest` (the version checks read it), and may
add a digest, which then decides what runs: `valkey/valkey:8.1.11@sha256:<64 hex>`. A registry with a port
(`registry.internal:5000/valkey/valkey:8.1.11`) is a registry, not a tag.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

_REFERENCE = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:[._-][a-z0-9]+|[._-]{2}[a-z0-9]+)*"  # first component, or a registry host
    r"(?::[0-9]+)?"  # a registry's port
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"  # the path
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$")


def image_ref(image):
    """{repository, tag, digest, problem}: problem is '' for an image pinned to a version tag (not latest), with or
    without a digest, else what is wrong with it."""
    if not isinstance(image, str):
        raise AnsibleFilterError(f"image_ref expects an image reference, a string, got {image!r}")
    match = _REFERENCE.match(image)
    if not match:
        # A host with an upper-case letter or a registry given a port but no path are not references either.
        return {"repository": "", "tag": "", "digest": "", "problem": "not an image reference (name:tag or name:tag@sha256:<64 hex>)"}
    ref = {k: match[k] or "" for k in ("repository", "tag", "digest")}
    if not ref["tag"]:
        problem = "no version tag (a digest alone does not say which version runs; write name:tag@sha256:...)"
    elif ref["tag"] == "latest":
        problem = "the tag latest moves"
    else:
        problem = ""
    return {**ref, "problem": problem}


class FilterModule:
    def filters(self):
        return {"image_ref": image_ref}
