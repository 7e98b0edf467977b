"""Fingerprints of the app secrets, and the decision a run takes from them."""
import hashlib
import hmac
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.filter.secret_fingerprints import (  # noqa: E402
    app_secret_plan, secret_fingerprints)

KEY = "9f" * 32
OLD = {"salt": "s" * 44, "encryption-key": "ab" * 32, "nextauth-secret": "n" * 44}
NEW = {"salt": "t" * 44, "encryption-key": "cd" * 32, "nextauth-secret": "m" * 44}
RECORDED = secret_fingerprints(OLD, KEY)


def test_fingerprint_is_hmac_sha256_of_the_value_under_the_key():
    expected = hmac.new(KEY.encode(), OLD["salt"].encode(), hashlib.sha256).hexdigest()
    assert secret_fingerprints({"salt": OLD["salt"]}, KEY) == {"salt": "hmac-sha256:" + expected}


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_fingerprint_matches_the_openssl_command_the_readme_gives():
    out = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", KEY], input=OLD["salt"].encode(),
                         capture_output=True, check=True).stdout.decode()
    assert out.strip().split()[-1] == RECORDED["salt"].split(":", 1)[1]


def test_fingerprint_never_contains_the_value_and_depends_on_key_and_value():
    assert all(OLD[name] not in fingerprint for name, fingerprint in RECORDED.items())
    assert secret_fingerprints(OLD, "another key") != RECORDED
    assert secret_fingerprints(NEW, KEY)["salt"] != RECORDED["salt"]
    assert secret_fingerprints(OLD, KEY) == RECORDED  # deterministic: a re-run records the same


def test_fingerprint_rejects_an_empty_key():
    with pytest.raises(AnsibleFilterError, match="HMAC key"):
        secret_fingerprints(OLD, "")


def plan(current, supplied=None, fingerprints=None, install_exists=False):
    return app_secret_plan(current, supplied=supplied, fingerprints=fingerprints, key=KEY, generated=NEW,
                           install_exists=install_exists)


def test_first_install_generates_every_key():
    result = plan({})
    assert result["states"] == dict.fromkeys(OLD, "generated")
    assert result["values"] == NEW


def test_first_install_takes_given_values_and_generates_the_rest():
    result = plan({}, supplied={"salt": OLD["salt"], "encryption-key": "", "nextauth-secret": ""})
    assert result["states"] == {"salt": "supplied", "encryption-key": "generated", "nextauth-secret": "generated"}
    assert result["values"] == {**NEW, "salt": OLD["salt"]}


def test_secret_as_recorded_is_unchanged():
    result = plan(OLD, supplied={"salt": OLD["salt"]}, fingerprints=RECORDED, install_exists=True)
    assert result["states"] == dict.fromkeys(OLD, "unchanged")
    assert result["values"] == OLD


def test_secret_without_recorded_fingerprints_is_trusted_as_it_is():
    # An install made before fingerprints existed: the Secret becomes the record.
    assert plan(OLD, install_exists=True)["states"] == dict.fromkeys(OLD, "unchanged")


def test_lost_secret_of_an_existing_install_is_lost_not_generated():
    result = plan({}, fingerprints=RECORDED, install_exists=True)
    assert result["states"] == dict.fromkeys(OLD, "lost")
    assert result["values"] == NEW  # what a confirmed regeneration writes


def test_one_key_missing_from_the_secret_is_lost_alone():
    current = {k: v for k, v in OLD.items() if k != "encryption-key"}
    assert plan(current, fingerprints=RECORDED, install_exists=True)["states"] == {
        "salt": "unchanged", "encryption-key": "lost", "nextauth-secret": "unchanged"}


def test_old_values_given_back_are_a_restore():
    result = plan({}, supplied=OLD, fingerprints=RECORDED, install_exists=True)
    assert result["states"] == dict.fromkeys(OLD, "restored")
    assert result["values"] == OLD


def test_other_values_given_for_a_lost_secret_are_a_mismatch():
    supplied = {**OLD, "encryption-key": NEW["encryption-key"]}
    result = plan({}, supplied=supplied, fingerprints=RECORDED, install_exists=True)
    assert result["states"] == {"salt": "restored", "encryption-key": "mismatch", "nextauth-secret": "restored"}
    assert result["values"] == supplied


def test_values_given_without_fingerprints_for_an_existing_install_are_unverified():
    assert plan({}, supplied=OLD, install_exists=True)["states"] == dict.fromkeys(OLD, "unverified")


def test_other_values_than_the_secrets_are_a_rotation():
    result = plan(OLD, supplied={"nextauth-secret": NEW["nextauth-secret"]}, fingerprints=RECORDED, install_exists=True)
    assert result["states"] == {"salt": "unchanged", "encryption-key": "unchanged", "nextauth-secret": "rotating"}
    assert result["values"] == {**OLD, "nextauth-secret": NEW["nextauth-secret"]}


def test_secret_changed_behind_our_back_is_drifted_and_kept():
    current = {**OLD, "salt": NEW["salt"]}
    result = plan(current, fingerprints=RECORDED, install_exists=True)
    assert result["states"] == {"salt": "drifted", "encryption-key": "unchanged", "nextauth-secret": "unchanged"}
    assert result["values"] == current


def test_recorded_values_given_over_a_drifted_secret_still_replace_a_value_in_use():
    # The Secret's value may have been in use since it changed: replacing it is a rotation, confirmed or refused.
    current = {**OLD, "salt": NEW["salt"]}
    assert plan(current, supplied=OLD, fingerprints=RECORDED, install_exists=True)["states"]["salt"] == "rotating"


def test_fingerprint_of_an_unknown_form_is_refused_with_the_way_out():
    with pytest.raises(AnsibleFilterError, match="Delete it"):
        plan(OLD, fingerprints={**RECORDED, "salt": "sha1:abc"}, install_exists=True)


def test_fingerprints_without_their_key_are_refused():
    with pytest.raises(AnsibleFilterError, match="no HMAC key"):
        app_secret_plan(OLD, fingerprints=RECORDED, key="", generated=NEW)


def test_missing_generated_candidate_is_an_error_not_an_empty_secret():
    with pytest.raises(AnsibleFilterError, match="salt"):
        app_secret_plan({}, key=KEY, generated={})
