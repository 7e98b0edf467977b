"""install.yml when the app Secret is lost, restored, changed behind our back or regenerated.

The salt hashes project API keys and the encryption key encrypts stored LLM
API keys: a run that finds the Secret gone from a running install must not
write new ones. One install into a namespace of its own; each test then sets
the Secret up as its case needs (deleted, or put back by kubectl) and runs
install.yml against it. The runs that must refuse stop in namespace_secrets,
before any write, so they are short.
"""
import base64
import hashlib
import hmac
import json
import re
import uuid

import pytest

from conftest import installed_release, kubectl, playbook, run

SECRET = "langfuse-app-secrets"
FINGERPRINTS = "langfuse-app-secrets-fingerprints"
KEYS = ("salt", "encryption-key", "nextauth-secret")
CONSEQUENCES = ("LLM API keys stored in Langfuse", "project API key stops working", "everyone is logged out")


def install(namespace, *args, **variables):
    return playbook("install", {"langfuse_namespace": namespace, **variables}, *args)


def secret_values(namespace):
    """The app Secret's decoded data, or None when it does not exist."""
    proc = kubectl("-n", namespace, "get", "secret", SECRET, "-o", "json", "--ignore-not-found")
    if not proc.stdout.strip():
        return None
    return {k: base64.b64decode(v).decode() for k, v in json.loads(proc.stdout)["data"].items()}


def fingerprints(namespace):
    return json.loads(kubectl("-n", namespace, "get", "configmap", FINGERPRINTS, "-o", "json").stdout)


def hmac_of(key, value):
    return "hmac-sha256:" + hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def revisions(namespace):
    return [r["revision"] for r in json.loads(run("helm", "history", "langfuse", "-n", namespace, "-o", "json").stdout)]


def delete_secret(namespace):
    kubectl("-n", namespace, "delete", "secret", SECRET, "--ignore-not-found", "--wait")
    assert secret_values(namespace) is None


def put_secret(namespace, values):
    """The app Secret as someone with kubectl would write it (not through the collection)."""
    manifest = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": SECRET, "namespace": namespace,
                             "labels": {"app.kubernetes.io/part-of": "langfuse",
                                        "app.kubernetes.io/managed-by": "langfuse_ops.platform"}},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert secret_values(namespace) == values


def given(values):
    """namespace_secrets_app_secrets from the Secret's data."""
    return {k.replace("-", "_"): v for k, v in values.items()}


def one_line(output):
    """Ansible folds long messages over lines; the checks read them as one."""
    return " ".join(output.split())


def assert_no_secret_in(output, *values):
    for secret in values:
        assert len(secret) >= 16
        assert secret not in output
        assert base64.b64encode(secret.encode()).decode() not in output


@pytest.fixture(scope="module")
def installed(cluster, services):
    namespace = f"it-loss-{uuid.uuid4().hex[:6]}"
    with installed_release(namespace) as output:
        yield {"namespace": namespace, "output": output, "old": secret_values(namespace),
               "fingerprints": fingerprints(namespace)["data"], "revisions": revisions(namespace)}


def test_install_records_keyed_fingerprints_and_never_the_values(installed):
    namespace, old, recorded = installed["namespace"], installed["old"], installed["fingerprints"]
    assert set(old) == set(KEYS)
    assert "App secrets in %s/%s: generated: salt, encryption-key, nextauth-secret;" % (namespace, SECRET) in \
        one_line(installed["output"])
    configmap = fingerprints(namespace)
    assert configmap["metadata"]["labels"] == {"app.kubernetes.io/part-of": "langfuse",
                                               "app.kubernetes.io/managed-by": "langfuse_ops.platform"}
    assert set(recorded) == {"hmac-key", *KEYS}
    assert re.fullmatch(r"[0-9a-f]{64}", recorded["hmac-key"])
    for key in KEYS:
        assert recorded[key] == hmac_of(recorded["hmac-key"], old[key])
    assert_no_secret_in(json.dumps(configmap), *old.values())
    assert_no_secret_in(installed["output"], *old.values())


def test_lost_secret_is_refused_and_nothing_is_written(installed):
    namespace, old = installed["namespace"], installed["old"]
    delete_secret(namespace)
    proc = install(namespace)
    out = one_line(proc.stdout)
    assert proc.returncode != 0
    assert "Refused, nothing was written." in out
    assert f"the Secret {namespace}/{SECRET} is missing, and with it salt, encryption-key, nextauth-secret." in out
    assert "Helm release langfuse" in out and f"ConfigMap {FINGERPRINTS}" in out
    for consequence in CONSEQUENCES:
        assert consequence in out
    assert "restore the Secret langfuse-app-secrets from a backup" in out
    assert "namespace_secrets_app_secrets (salt, encryption_key, nextauth_secret)" in out
    assert f"-e namespace_secrets_confirm_app_secret_regeneration={namespace}" in out
    # Nothing written: no Secret, the same fingerprints, no new Helm revision.
    assert secret_values(namespace) is None
    assert fingerprints(namespace)["data"] == installed["fingerprints"]
    assert revisions(namespace) == installed["revisions"]
    assert_no_secret_in(proc.stdout + proc.stderr, *old.values())


def test_old_values_given_back_are_checked_and_restored(installed):
    namespace, old = installed["namespace"], installed["old"]
    delete_secret(namespace)
    proc = install(namespace, namespace_secrets_app_secrets=given(old))
    out = one_line(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert (f"App secrets in {namespace}/{SECRET}: restored from namespace_secrets_app_secrets (fingerprints match): "
            f"salt, encryption-key, nextauth-secret; fingerprints match ConfigMap {FINGERPRINTS}.") in out
    assert secret_values(namespace) == old
    assert fingerprints(namespace)["data"] == installed["fingerprints"]
    # The pods read exactly that Secret; the release did not need to change for it.
    web = json.loads(kubectl("-n", namespace, "get", "deployment", "langfuse-web", "-o", "json").stdout)
    env = {e["name"]: e for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SALT"]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "salt"}
    assert env["ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "encryption-key"}
    assert env["NEXTAUTH_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "nextauth-secret"}
    assert revisions(namespace) == installed["revisions"]
    assert_no_secret_in(proc.stdout + proc.stderr, *old.values())


def test_secret_changed_behind_our_back_is_reported_and_refused(installed):
    namespace, old = installed["namespace"], installed["old"]
    drifted = {**old, "salt": "x" * 44}
    put_secret(namespace, drifted)
    try:
        proc = install(namespace)
        out = one_line(proc.stdout)
        assert proc.returncode != 0
        assert "Refused, nothing was written." in out
        assert "changed outside this collection" in out and "for: salt." in out
        assert f"namespace_secrets_confirm_app_secret_rotation={namespace}" in out
        assert secret_values(namespace) == drifted
        assert fingerprints(namespace)["data"] == installed["fingerprints"]
        assert_no_secret_in(proc.stdout + proc.stderr, *old.values(), drifted["salt"])
    finally:
        put_secret(namespace, old)


def test_other_values_for_a_lost_secret_are_refused_without_the_rotation_confirmation(installed):
    namespace, old = installed["namespace"], installed["old"]
    delete_secret(namespace)
    other = {**old, "encryption-key": "0f" * 32}
    proc = install(namespace, namespace_secrets_app_secrets=given(other))
    out = one_line(proc.stdout)
    assert proc.returncode != 0
    assert "Refused, nothing was written." in out
    assert "gives others than the lost ones" in out and "for: encryption-key." in out
    assert f"namespace_secrets_confirm_app_secret_rotation={namespace}" in out
    assert secret_values(namespace) is None
    assert fingerprints(namespace)["data"] == installed["fingerprints"]
    assert revisions(namespace) == installed["revisions"]
    assert_no_secret_in(proc.stdout + proc.stderr, *old.values(), other["encryption-key"])


def test_confirmed_regeneration_in_check_mode_reports_it_and_writes_nothing(installed):
    namespace = installed["namespace"]
    delete_secret(namespace)
    proc = install(namespace, "--check", "--diff", namespace_secrets_confirm_app_secret_regeneration=namespace)
    out = one_line(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert (f"Check mode, nothing written; a real run: App secrets in {namespace}/{SECRET}: lost, NEW values generated "
            "as confirmed") in out
    assert f"fingerprints re-recorded in ConfigMap {FINGERPRINTS}" in out
    assert secret_values(namespace) is None
    assert fingerprints(namespace)["data"] == installed["fingerprints"]
    assert revisions(namespace) == installed["revisions"]


def test_confirmed_regeneration_writes_new_values_and_new_fingerprints(installed):
    namespace, old, recorded = installed["namespace"], installed["old"], installed["fingerprints"]
    delete_secret(namespace)
    proc = install(namespace, namespace_secrets_confirm_app_secret_regeneration=namespace)
    out = one_line(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert (f"App secrets in {namespace}/{SECRET}: lost, NEW values generated as confirmed (what depended on the old "
            f"ones stays unusable): salt, encryption-key, nextauth-secret; fingerprints re-recorded in ConfigMap "
            f"{FINGERPRINTS}.") in out
    new = secret_values(namespace)
    assert set(new) == set(KEYS)
    assert all(new[key] != old[key] for key in KEYS)
    assert re.fullmatch(r"[0-9a-f]{64}", new["encryption-key"])
    now = fingerprints(namespace)["data"]
    assert now["hmac-key"] == recorded["hmac-key"]
    for key in KEYS:
        assert now[key] == hmac_of(now["hmac-key"], new[key]) != recorded[key]
    assert_no_secret_in(proc.stdout + proc.stderr, *old.values(), *new.values())
