"""The rules the upstream check and the v4 integration tests audit Helm revisions by."""
import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "upstream"))
import release_audit as audit  # noqa: E402  pylint: disable=wrong-import-position


def deployment(component, image, env=None):
    return {"kind": "Deployment", "metadata": {"name": f"langfuse-{component}"},
            "spec": {"template": {"metadata": {"labels": {"app": component}},
                                  "spec": {"containers": [{"name": f"langfuse-{component}", "image": image,
                                                           "env": env if env is not None else [
                                                               {"name": "CLICKHOUSE_CLUSTER_ENABLED", "value": "false"},
                                                               {"name": "SALT", "valueFrom": {"secretKeyRef": {
                                                                   "name": "langfuse-app-secrets", "key": "salt"}}}]}]}}}}


def revision(web="langfuse/langfuse:3.224.1", worker="langfuse/langfuse-worker:3.224.1"):
    return [deployment("web", web), deployment("worker", worker)]


def problems(docs, secrets=(), cluster_enabled=False, values=""):
    return audit.revision_problems(docs, values, set(secrets), cluster_enabled, "langfuse")


def test_a_clean_revision_has_no_problem():
    assert problems(revision()) == []


@pytest.mark.parametrize("ref, ok", [
    ("langfuse/langfuse:3.224.1", True), ("docker.langfuse.com/langfuse/langfuse:4.4.0", True),
    ("registry:5000/langfuse/langfuse:4.4.0", True), ("langfuse/langfuse@sha256:" + "a" * 64, True),
    ("langfuse/langfuse", False), ("langfuse/langfuse:latest", False), ("registry:5000/langfuse/langfuse", False),
    ("langfuse/langfuse:", False),
])
def test_image_pinning(ref, ok):
    assert audit.pinned(ref) is ok
    assert bool(problems(revision(web=ref))) is not ok


def test_a_known_secret_value_anywhere_is_found():
    docs = revision()
    docs[0]["metadata"]["annotations"] = {"note": "s3cr3t-value-123"}
    assert problems(docs, secrets=["s3cr3t-value-123"]) == ["a secret value in clear text"]
    assert problems(revision(), secrets=["s3cr3t-value-123"], values="salt: s3cr3t-value-123") == ["a secret value in clear text"]
    assert problems(revision(), secrets=["s3cr3t-value-123"]) == []


def test_secret_named_env_with_a_literal_value_and_secret_objects_with_data():
    docs = revision()
    docs[1]["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "ENCRYPTION_KEY", "value": "0" * 64})
    docs.append({"kind": "Secret", "metadata": {"name": "langfuse-app"}, "data": {"salt": "eA=="}})
    docs.append({"kind": "Secret", "metadata": {"name": "langfuse-empty"}, "data": None})
    assert problems(docs) == ["Deployment/langfuse-worker env ENCRYPTION_KEY is a literal value",
                              "Secret/langfuse-app carries data (salt)"]


@pytest.mark.parametrize("name, value, ok", [
    ("REDIS_CONNECTION_STRING", "rediss://default:$(REDIS_PASSWORD)@redis:6379", True),
    ("REDIS_CONNECTION_STRING", "redis://redis:6379", True),
    ("DATABASE_URL", "postgresql://langfuse:$(DATABASE_PASSWORD)@pg:5432/langfuse", True),
    ("REDIS_CONNECTION_STRING", "rediss://default:hunter2@redis:6379", False),
    ("DATABASE_URL", "postgresql://langfuse:p$(X)w@pg/langfuse", False),
    ("LANGFUSE_INIT_ORG_NAME", "default:hunter2@x", True),
])
def test_connection_strings_may_reference_their_password_but_not_hold_it(name, value, ok):
    docs = revision()
    docs[0]["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": name, "value": value})
    assert (problems(docs) == []) is ok


def test_clickhouse_cluster_mode_must_match_the_inventory():
    assert problems(revision(), cluster_enabled=True) == [
        "web CLICKHOUSE_CLUSTER_ENABLED='false', the inventory says 'true'",
        "worker CLICKHOUSE_CLUSTER_ENABLED='false', the inventory says 'true'"]
    # Absent means Langfuse's default, true: what chart 2.0.0's default cluster.enabled gives a single node.
    docs = [deployment("web", "langfuse/langfuse:4.4.0", env=[]), deployment("worker", "langfuse/langfuse-worker:4.4.0")]
    assert problems(docs) == ["web CLICKHOUSE_CLUSTER_ENABLED='true', the inventory says 'false'"]
    assert problems(docs[1:]) == ["no Deployment langfuse-web"]


def test_a_worker_step_must_leave_the_web_pod_template_alone():
    before = revision()
    after = revision(worker="langfuse/langfuse-worker:4.4.0")
    assert audit.step_problems(before, after, "langfuse") == []
    assert audit.classify(before, after, "langfuse") == "worker"
    changed = copy.deepcopy(after)
    changed[0]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    assert audit.step_problems(before, changed, "langfuse") == [
        "the worker step (langfuse/langfuse-worker:3.224.1 -> langfuse/langfuse-worker:4.4.0) changed the web's pod template"]
    # A web step or a chart step may change the web's pod.
    web_step = revision(web="langfuse/langfuse:4.4.0", worker="langfuse/langfuse-worker:4.4.0")
    assert audit.step_problems(after, web_step, "langfuse") == []
    assert audit.classify(after, web_step, "langfuse") == "web"
    assert audit.classify(before, changed, "langfuse") == "worker"
    assert audit.classify(None, before, "langfuse") == "install"


def test_audit_walks_the_history_in_order():
    history = [{"revision": n, "status": s, "chart": c, "description": "", "docs": d, "values": ""} for n, s, c, d in [
        (1, "superseded", "langfuse-1.5.41", revision()),
        (2, "superseded", "langfuse-2.0.0", revision()),
        (3, "deployed", "langfuse-2.0.0", revision(worker="docker.langfuse.com/langfuse/langfuse-worker:4.4.0"))]]
    rows = audit.audit(history, set(), cluster_enabled=False)
    assert [(r["revision"], r["moved"], r["problems"]) for r in rows] == [
        (1, "install", []), (2, "no image", []), (3, "worker", [])]
