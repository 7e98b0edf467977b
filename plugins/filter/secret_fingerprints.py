# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fingerprints of secret values, and what a run does with Langfuse's app secrets.

A fingerprint is HMAC-SHA256(key, value), written `hmac-sha256:<hex>`: it tells
whether a value is the one recorded earlier without holding the value. The
same check by hand: `printf %s "$value" | openssl dgst -sha256 -hmac "$key"`.
"""

from __future__ import annotations

import hashlib
import hmac

from ansible.errors import AnsibleFilterError

ALGORITHM = "hmac-sha256"
APP_SECRET_KEYS = ("salt", "encryption-key", "nextauth-secret")

# What a run does with each app secret (the state names the role reports):
#   unchanged   in the Secret, its recorded fingerprint matches (or none is recorded yet), nothing else given
#   drifted     in the Secret, but it differs from its recorded fingerprint: changed outside this collection
#   rotating    in the Secret, and namespace_secrets_app_secrets gives another value
#   restored    missing from the Secret; the value given matches the recorded fingerprint
#   mismatch    missing from the Secret; the value given differs from the recorded fingerprint
#   unverified  missing from the Secret of an existing install; a value is given, but no fingerprint to check it
#   supplied    missing, a value is given, and there is no install yet
#   lost        missing from the Secret of an existing install, and no value given: a new one would replace it
#   generated   missing, no value given, no install yet: a new one is generated
# The states that need a confirmation before anything is written.
NEEDS_ROTATION_CONFIRMATION = ("drifted", "rotating", "mismatch")
NEEDS_REGENERATION_CONFIRMATION = ("lost",)


def _key_bytes(key):
    if not isinstance(key, str) or not key:
        raise AnsibleFilterError("secret_fingerprints: the HMAC key must be a non-empty string")
    return key.encode("utf-8")


def _fingerprint(key, value):
    digest = hmac.new(_key_bytes(key), str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{ALGORITHM}:{digest}"


def secret_fingerprints(values, key):
    """{'salt': 'v', ...} -> {'salt': 'hmac-sha256:<hex>', ...}; never the values themselves."""
    return {name: _fingerprint(key, value) for name, value in (values or {}).items()}


def _matches(key, value, recorded, name):
    if not isinstance(recorded, str) or not recorded.startswith(ALGORITHM + ":"):
        raise AnsibleFilterError(
            f"the recorded fingerprint of {name} is not an {ALGORITHM} fingerprint ({ALGORITHM}:<64 hex>): "
            "the fingerprints ConfigMap was edited by hand. Delete it to record the fingerprints afresh "
            "from the Secret as it is.")
    return hmac.compare_digest(_fingerprint(key, value), recorded)


def app_secret_plan(current, supplied=None, fingerprints=None, key="", generated=None, install_exists=False,
                    keys=APP_SECRET_KEYS):
    """Which value each app secret gets, and why.

    current: the Secret's decoded data ({} when it is missing); supplied: the values the user gave, by the
    Secret's key names; fingerprints: the recorded ones ({} when none); key: the HMAC key they were made
    with; generated: a fresh candidate for every key; install_exists: a Helm release or recorded
    fingerprints exist in the namespace. Returns {'states': {name: state}, 'values': {name: value}}:
    `values` is what the Secret holds after the run, when every needed confirmation is given.
    """
    current, supplied, fingerprints, generated = current or {}, supplied or {}, fingerprints or {}, generated or {}
    if fingerprints and not key:
        raise AnsibleFilterError("app_secret_plan: fingerprints are recorded but no HMAC key was given to check them")
    states, values = {}, {}
    for name in keys:
        have, give, recorded = current.get(name), supplied.get(name), fingerprints.get(name)
        have = None if have in (None, "") else str(have)
        give = None if give in (None, "") else str(give)
        if have is not None:
            if give is not None and give != have:
                states[name], values[name] = "rotating", give
            elif recorded is not None and not _matches(key, have, recorded, name):
                states[name], values[name] = "drifted", have
            else:
                states[name], values[name] = "unchanged", have
        elif give is not None:
            if recorded is not None:
                states[name] = "restored" if _matches(key, give, recorded, name) else "mismatch"
            else:
                states[name] = "unverified" if install_exists else "supplied"
            values[name] = give
        else:
            if name not in generated or generated[name] in (None, ""):
                raise AnsibleFilterError(f"app_secret_plan: no generated candidate for {name}")
            states[name] = "lost" if install_exists else "generated"
            values[name] = str(generated[name])
    return {"states": states, "values": values}


class FilterModule:
    def filters(self):
        return {
            "secret_fingerprints": secret_fingerprints,
            "app_secret_plan": app_secret_plan,
        }
