"""The filters that put Langfuse's app secrets into the backup bucket and check them on a restore."""
import json
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from pyrage import x25519

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
import app_secrets_backup as f  # noqa: E402
from secret_fingerprints import secret_fingerprints  # noqa: E402

VALUES = {"salt": "s" * 44, "encryption-key": "ab" * 32, "nextauth-secret": "n" * 44}
KEY = "k" * 64


def fingerprints(values=None, key=KEY):
    return {"hmac-key": key} | secret_fingerprints(VALUES if values is None else values, key)


def test_the_id_follows_the_fingerprints_and_ignores_the_key_beside_them():
    first = f.app_secrets_backup_id(fingerprints())
    assert len(first) == 16 and int(first, 16) >= 0
    assert f.app_secrets_backup_id(fingerprints() | {"hmac-key": "other"}) == first
    assert f.app_secrets_backup_id(fingerprints(VALUES | {"salt": "t" * 44})) != first
    assert f.app_secrets_backup_id(fingerprints(key="j" * 64)) != first


def test_the_id_needs_every_fingerprint():
    with pytest.raises(AnsibleFilterError, match="no fingerprint for nextauth-secret"):
        f.app_secrets_backup_id({"salt": "hmac-sha256:1", "encryption-key": "hmac-sha256:2"})


def test_encrypted_to_the_recipient_only_its_identity_decrypts():
    identity = x25519.Identity.generate()
    armored = f.age_encrypt({"data": VALUES}, str(identity.to_public()))
    assert armored.startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    assert not any(value in armored for value in VALUES.values())
    assert json.loads(f.age_decrypt(armored, str(identity)))["data"] == VALUES
    with pytest.raises(AnsibleFilterError, match="does not decrypt") as error:
        f.age_decrypt(armored, str(x25519.Identity.generate()))
    assert "AGE-SECRET-KEY" not in str(error.value)


def test_keys_of_the_wrong_kind_are_refused_without_echoing_them():
    identity = x25519.Identity.generate()
    with pytest.raises(AnsibleFilterError, match="not an age X25519 recipient"):
        f.age_encrypt("x", str(identity))  # the identity given where the public key belongs
    with pytest.raises(AnsibleFilterError, match="not an age X25519 identity") as error:
        f.age_decrypt("x", "secret-not-a-key")
    assert "secret-not-a-key" not in str(error.value)


def test_compare_names_keys_only():
    assert f.app_secrets_compare(VALUES, fingerprints()) == {"match": list(VALUES), "differ": [], "missing": []}
    other = VALUES | {"salt": "other-salt-value-xxxxxxxx"}
    del other["nextauth-secret"]
    result = f.app_secrets_compare(other, fingerprints())
    assert result == {"match": ["encryption-key"], "differ": ["salt"], "missing": ["nextauth-secret"]}
    assert "other-salt" not in json.dumps(result)


def test_compare_needs_the_hmac_key_and_real_fingerprints():
    with pytest.raises(AnsibleFilterError, match="no hmac-key"):
        f.app_secrets_compare(VALUES, secret_fingerprints(VALUES, KEY))
    with pytest.raises(AnsibleFilterError, match="no hmac-sha256 fingerprint for salt"):
        f.app_secrets_compare(VALUES, fingerprints() | {"salt": "md5:abc"})
