"""Signed backup manifests: backup-lib.sh's manifest_sign and manifest_verify (the Jobs' side, bash with sha256sum) and
the backup_manifest_signature filter (the restore plan's side, Python) agree, and both tell a forged manifest from a
signed one. The scripts run for real here; tests/integration/test_backup_scripts.py restores through them from S3."""
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "filter"))
from app_secrets_backup import backup_manifest_signature  # noqa: E402

LIB = REPO / "roles" / "backup_cron" / "files" / "backup-lib.sh"
KEY = "a-signing-key-of-32-characters-or-more-0123456789"
MANIFEST = ('{"kind": "postgres", "id": "20261207T021500Z", "bytes": 1234, "etag": "0f1e2d-2",\n'
            ' "app_secrets": {"hmac-key": "k", "salt": "hmac-sha256:00"}, "tables": {"public.projects": 200}}\n')


def bash(script, stdin="", **env):
    proc = subprocess.run(["bash", "-c", f"source {LIB}; {script}"], input=stdin, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, check=False)
    return proc


def signed(text=MANIFEST, key=KEY):
    proc = bash("manifest_sign", text, BACKUP_SIGNING_KEY=key)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def verify(text, key=KEY, tmp_path=None, **env):
    path = tmp_path / "manifest.json"
    path.write_text(text)
    return bash(f"manifest_verify {path} 'the manifest of backup X'", BACKUP_SIGNING_KEY=key, **env)


@pytest.mark.parametrize("key", ["k" * 32, KEY, "ü-non-ascii-key-" * 8, "x" * 200])
def test_the_bash_hmac_is_hmac_sha256(key):
    message = "any text\n with two lines\n"
    proc = bash("hmac_sha256", message, BACKUP_SIGNING_KEY=key)
    assert proc.stdout.strip() == hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def test_a_signed_manifest_is_still_the_json_it_was_with_the_signature_last():
    text = signed()
    data = json.loads(text)
    assert data == {**json.loads(MANIFEST), "signature": data["signature"]}
    assert list(data)[-1] == "signature" and data["signature"].startswith("hmac-sha256:")
    assert KEY not in text


def test_the_filter_and_the_script_accept_what_the_script_signed(tmp_path):
    text = signed()
    assert backup_manifest_signature(text, KEY) == "valid"
    assert verify(text, tmp_path=tmp_path).returncode == 0


@pytest.mark.parametrize("change", [
    ("tables", lambda t: t.replace('"public.projects": 200', '"public.projects": 201')),
    ("etag", lambda t: t.replace("0f1e2d-2", "0f1e2e-2")),
    ("fingerprints", lambda t: t.replace("hmac-sha256:00", "hmac-sha256:01")),
    ("signature", lambda t: t[:-4] + ("1" if t[-4] == "0" else "0") + t[-3:]),
])
def test_a_changed_manifest_is_refused_by_both(change, tmp_path):
    what, edit = change
    forged = edit(signed())
    assert forged != signed()
    assert backup_manifest_signature(forged, KEY) == "invalid", what
    proc = verify(forged, tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "the manifest of backup X does not carry a valid signature under the backup signing key" in proc.stderr


def test_a_manifest_signed_with_another_key_is_refused_by_both(tmp_path):
    theirs = signed(key="an attacker's own key, long enough to pass")
    assert backup_manifest_signature(theirs, KEY) == "invalid"
    assert verify(theirs, tmp_path=tmp_path).returncode != 0


def test_an_unsigned_manifest_passes_only_when_accepted_by_name(tmp_path):
    assert backup_manifest_signature(MANIFEST, KEY) == "unsigned"
    refused = verify(MANIFEST, tmp_path=tmp_path)
    assert refused.returncode != 0 and "the manifest of backup X is not signed" in refused.stderr
    accepted = verify(MANIFEST, tmp_path=tmp_path, BACKUP_ACCEPT_UNSIGNED="true")
    assert accepted.returncode == 0 and "WARNING: the manifest of backup X is not signed" in accepted.stderr


def test_a_forged_manifest_is_refused_even_when_unsigned_ones_are_accepted(tmp_path):
    forged = signed().replace("1234", "4321")
    assert verify(forged, tmp_path=tmp_path, BACKUP_ACCEPT_UNSIGNED="true").returncode != 0


@pytest.mark.parametrize("name, quoted", [
    ("traces", "`traces`"),
    ("odd`name", "`odd\\`name`"),
    ("a\\`; DROP DATABASE x; --", "`a\\\\\\`; DROP DATABASE x; --`"),
])
def test_clickhouse_identifiers_are_quoted_whatever_they_hold(name, quoted):
    assert bash('ch_ident "$NAME"', NAME=name).stdout == quoted
