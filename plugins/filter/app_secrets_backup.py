# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The app secrets' copy in the backup bucket: age encryption, its name, and the restore's comparison.

The backup side holds only an age X25519 recipient (public key): whatever writes backups can encrypt,
never decrypt. The identity (private key) stays in the user's secret store and is given to a restore only.
The object is an ASCII-armored age file: `age -d -i identity.txt <id>.age` reads it without this collection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re

from ansible.errors import AnsibleFilterError

try:
    import pyrage
    from pyrage import x25519
except ImportError:  # pragma: no cover - named in the error below
    pyrage = None

APP_SECRET_KEYS = ("salt", "encryption-key", "nextauth-secret")
ALGORITHM = "hmac-sha256"


def _need_pyrage():
    if pyrage is None:
        raise AnsibleFilterError("the Python package pyrage is needed where Ansible runs (requirements/runtime.txt)")


def app_secrets_backup_id(fingerprints):
    """The name of one set of app secrets in the bucket: 16 hex of a SHA-256 over the three fingerprints.

    The fingerprints are HMACs under a key of the install, so the ID says nothing about the values; a
    rotation gives a new ID, and so a new object, while an unchanged set keeps its object.
    """
    fingerprints = fingerprints or {}
    missing = [name for name in APP_SECRET_KEYS if not fingerprints.get(name)]
    if missing:
        raise AnsibleFilterError(f"app_secrets_backup_id: no fingerprint for {', '.join(missing)}")
    text = "".join(f"{name}={fingerprints[name]}\n" for name in APP_SECRET_KEYS)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def age_encrypt(data, recipient):
    """data (a dict is written as JSON) encrypted to an age X25519 recipient `age1...`, as an ASCII-armored age file."""
    _need_pyrage()
    if isinstance(data, (dict, list)):
        data = json.dumps(data, sort_keys=True)
    try:
        public = x25519.Recipient.from_str(str(recipient).strip())
    except Exception as exc:
        raise AnsibleFilterError(f"age_encrypt: not an age X25519 recipient (age1...): {type(exc).__name__}") from None
    return pyrage.encrypt(str(data).encode("utf-8"), [public], armored=True).decode("ascii")


def age_decrypt(data, identity):
    """The text of an age file (ASCII-armored, or binary as bytes), decrypted with an X25519 identity `AGE-SECRET-KEY-1...`.

    Errors never carry the identity or the plaintext.
    """
    _need_pyrage()
    try:
        secret = x25519.Identity.from_str(str(identity).strip())
    except Exception:
        raise AnsibleFilterError("age_decrypt: the identity is not an age X25519 identity (AGE-SECRET-KEY-1...)") from None
    try:
        return pyrage.decrypt(data if isinstance(data, bytes) else str(data).encode("ascii"), [secret]).decode("utf-8")
    except Exception:
        raise AnsibleFilterError("age_decrypt: this identity does not decrypt the object (it was encrypted to another "
                                 "recipient, or the object is damaged)") from None


def app_secrets_compare(values, fingerprints, keys=APP_SECRET_KEYS):
    """Which app secrets in `values` (decoded, by the Secret's key names) are the ones `fingerprints` describe.

    fingerprints: a backup manifest's, with their `hmac-key`. Returns {'match': [...], 'differ': [...],
    'missing': [...]}: key names only, never values.
    """
    values, fingerprints = values or {}, fingerprints or {}
    key = fingerprints.get("hmac-key")
    if not isinstance(key, str) or not key:
        raise AnsibleFilterError("app_secrets_compare: the fingerprints carry no hmac-key")
    out = {"match": [], "differ": [], "missing": []}
    for name in keys:
        value, recorded = values.get(name), fingerprints.get(name)
        if not isinstance(recorded, str) or not recorded.startswith(ALGORITHM + ":"):
            raise AnsibleFilterError(f"app_secrets_compare: no {ALGORITHM} fingerprint for {name}")
        if value in (None, ""):
            out["missing"].append(name)
            continue
        mine = ALGORITHM + ":" + hmac.new(key.encode("utf-8"), str(value).encode("utf-8"), hashlib.sha256).hexdigest()
        out["match" if hmac.compare_digest(mine, recorded) else "differ"].append(name)
    return out


SIGNATURE = re.compile(r', "signature": "hmac-sha256:([0-9a-f]{64})"\}$')


def backup_manifest_signature(text, key):
    """Whether a backup manifest's text carries a valid signature under the backup signing key.

    Returns 'valid', 'unsigned' (no signature: made before backups were signed) or 'invalid' (changed, or signed
    with another key). The signature, written by backup-lib.sh's manifest_sign, is the manifest's last field: an
    HMAC-SHA256 under the key of the text with that field removed, ending in one newline.
    """
    if not isinstance(text, str):
        raise AnsibleFilterError("backup_manifest_signature: the manifest must be text")
    if not isinstance(key, str) or not key:
        raise AnsibleFilterError("backup_manifest_signature: no signing key")
    text = text.rstrip("\n")
    found = SIGNATURE.search(text)
    if not found:
        return "unsigned"
    unsigned = text[:found.start()] + "}\n"
    mine = hmac.new(key.encode("utf-8"), unsigned.encode("utf-8"), hashlib.sha256).hexdigest()
    return "valid" if hmac.compare_digest(mine, found.group(1)) else "invalid"


class FilterModule:
    def filters(self):
        return {
            "app_secrets_backup_id": app_secrets_backup_id,
            "age_encrypt": age_encrypt,
            "age_decrypt": age_decrypt,
            "app_secrets_compare": app_secrets_compare,
            "backup_manifest_signature": backup_manifest_signature,
        }
