# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that shape Kubernetes Secret data."""

from __future__ import annotations

import base64


def b64encode_values(data):
    """{'k': 'v'} -> {'k': base64('v')}, the form of a Secret's data."""
    return {key: base64.b64encode(str(value).encode()).decode() for key, value in (data or {}).items()}


def b64decode_values(data):
    """A Secret's data -> its plain values."""
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


def external_secret_data(keys, remote_key):
    """The spec.data of an ExternalSecret that maps each key to a property of one remote secret."""
    return [{"secretKey": key, "remoteRef": {"key": remote_key, "property": key}} for key in keys]


class FilterModule:
    def filters(self):
        return {
            "b64encode_values": b64encode_values,
            "b64decode_values": b64decode_values,
            "external_secret_data": external_secret_data,
        }
