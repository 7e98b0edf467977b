"""s3_point_in_time against the local S3 stand-in (moto server), run through `ansible` as a playbook would run it.

Each test gets a bucket of its own with versioning on, writes a first state, notes T, changes things after T and
restores to T. moto, like S3, keeps LastModified to the second, so the tests wait a little over a second on each
side of T.
"""
import datetime
import json
import os
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from conftest import REPO, run

sys.path.insert(0, str(REPO / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.modules import s3_point_in_time as module  # noqa: E402

ANSIBLE = Path(sys.executable).parent / "ansible"
MODULE = "langfuse_ops.platform.s3_point_in_time"
TICK = 1.1  # S3 LastModified has second resolution


def run_module(args, *flags):
    """Runs the module on localhost with `ansible`; returns its result."""
    return run_module_output(args, *flags)[0]


def run_module_output(args, *flags, timeout=180):
    """Runs the module on localhost with `ansible`; returns (its result, the whole output)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1")
    # The credentials go in as module options (not the environment), to show they do not come out.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    proc = run(str(ANSIBLE), "localhost", "-m", MODULE, "-a", json.dumps(args), *flags,
               check=False, cwd=REPO, env=env, timeout=timeout)
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(f"no module result in:\n{proc.stdout}\n{proc.stderr}") from exc
    return result, proc.stdout + proc.stderr


@pytest.fixture
def s3(services):
    return boto3.client("s3", endpoint_url=services["LOCALENV_S3_ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=services["LOCALENV_S3_ACCESS_KEY_ID"],
                        aws_secret_access_key=services["LOCALENV_S3_SECRET_ACCESS_KEY"],
                        config=Config(s3={"addressing_style": "path"}))


def new_bucket(s3, versioned=True):
    name = f"pit-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def bucket(s3):
    name = new_bucket(s3)
    yield name
    empty_and_drop(s3, name)


def empty_and_drop(s3, name):
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


def args_for(services, bucket, when, **extra):
    return {"bucket": bucket, "point_in_time": when, "endpoint_url": services["LOCALENV_S3_ENDPOINT"],
            "region": "us-east-1", "access_key": services["LOCALENV_S3_ACCESS_KEY_ID"],
            "secret_key": services["LOCALENV_S3_SECRET_ACCESS_KEY"], "force_path_style": True, **extra}


def put(s3, bucket, key, body, **extra):
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body, **extra)


def contents(s3, bucket):
    """Every current object: key -> (body, content type, metadata)."""
    state = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            obj = s3.get_object(Bucket=bucket, Key=item["Key"])
            state[item["Key"]] = (obj["Body"].read().decode(), obj["ContentType"], obj["Metadata"])
    return state


def version_count(s3, bucket):
    count = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        count += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    return count


def mark_t():
    """Waits past the second of the last write, notes T, waits past T's second; returns T (UTC, with fractions)."""
    time.sleep(TICK)
    when = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(TICK)
    return when


def test_restores_a_prefix_to_t_in_check_mode_then_for_real_then_changes_nothing(s3, bucket, services):
    put(s3, bucket, "events/gone-before.json", "gone before T")
    # Not within the same second: moto lists a key's delete markers after its versions, so a tie between them is
    # not resolved as on S3 (see the module's notes).
    time.sleep(TICK)
    s3.delete_object(Bucket=bucket, Key="events/gone-before.json")
    put(s3, bucket, "events/keep.json", "keep v1")
    put(s3, bucket, "events/overwritten.json", "overwritten v1")
    put(s3, bucket, "events/deleted.json", "deleted v1")
    put(s3, bucket, "events/typed.json", '{"v": 1}', ContentType="application/json", Metadata={"origin": "v1"})
    put(s3, bucket, "events/same.json", "same content")
    put(s3, bucket, "media/outside.png", "outside v1")
    at_t = contents(s3, bucket)
    when = mark_t()

    put(s3, bucket, "events/overwritten.json", "overwritten v2")
    put(s3, bucket, "events/overwritten.json", "overwritten v3, longer")
    s3.delete_object(Bucket=bucket, Key="events/deleted.json")
    put(s3, bucket, "events/typed.json", "<v>2</v>", ContentType="application/xml", Metadata={"origin": "v2"})
    put(s3, bucket, "events/same.json", "same content")  # a new version, identical content
    put(s3, bucket, "events/new.json", "created after T")
    put(s3, bucket, "events/gone-before.json", "recreated after T")
    put(s3, bucket, "media/outside.png", "outside v2")
    after_t = contents(s3, bucket)
    versions_after_t = version_count(s3, bucket)

    # T written in another zone: the module works in UTC.
    t_text = when.astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat()
    args = args_for(services, bucket, t_text, prefix="events/")
    expected = {"restored_keys": ["events/deleted.json", "events/overwritten.json", "events/typed.json"],
                "deleted_keys": ["events/gone-before.json", "events/new.json"]}

    preview, output = run_module_output(args, "--check", "--diff")
    assert not preview.get("failed"), preview
    assert preview["changed"] is True
    assert {k: preview[k] for k in expected} == expected
    assert (preview["restored"], preview["deleted"], preview["unchanged"]) == (3, 2, 2)
    assert preview["point_in_time"] == when.isoformat()
    assert preview["keys_scanned"] == 7
    diff = preview["diff"]
    for key in expected["restored_keys"] + expected["deleted_keys"]:
        assert key in diff["before"] and key in diff["after"]
    assert "events/keep.json" not in diff["before"]
    assert services["LOCALENV_S3_SECRET_ACCESS_KEY"] not in output
    # Check mode changed nothing.
    assert contents(s3, bucket) == after_t
    assert version_count(s3, bucket) == versions_after_t

    result, output = run_module_output(args)
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert {k: result[k] for k in expected} == expected
    assert (result["restored"], result["deleted"], result["unchanged"]) == (3, 2, 2)
    assert services["LOCALENV_S3_SECRET_ACCESS_KEY"] not in output

    now = contents(s3, bucket)
    events_at_t = {k: v for k, v in at_t.items() if k.startswith("events/")}
    assert {k: v for k, v in now.items() if k.startswith("events/")} == events_at_t
    assert now["events/typed.json"] == ('{"v": 1}', "application/json", {"origin": "v1"})
    assert "events/new.json" not in now and "events/gone-before.json" not in now
    assert now["media/outside.png"] == after_t["media/outside.png"]  # outside the prefix
    # Nothing was lost: the versions written after T are all still there, plus 3 copies and 2 delete markers.
    assert version_count(s3, bucket) == versions_after_t + 5

    again = run_module(args)
    assert not again.get("failed"), again
    assert again["changed"] is False
    assert (again["restored"], again["deleted"], again["restored_keys"], again["deleted_keys"]) == (0, 0, [], [])
    assert again["unchanged"] == 7
    assert version_count(s3, bucket) == versions_after_t + 5


def test_whole_bucket_over_several_pages_with_a_report_cap(s3, bucket, services):
    for i in range(6):
        put(s3, bucket, f"k{i}", f"k{i} v1")
    put(s3, bucket, "k0", "k0 v2")  # k0: two versions before T
    at_t = contents(s3, bucket)
    when = mark_t()
    for i in range(6):
        put(s3, bucket, f"k{i}", f"k{i} v2 after T, longer")
    for i in range(3):
        put(s3, bucket, f"n{i}", f"n{i}")

    args = args_for(services, bucket, when.isoformat(), page_size=2, report_limit=2)
    result = run_module(args)
    assert not result.get("failed"), result
    assert (result["restored"], result["deleted"], result["unchanged"]) == (6, 3, 0)
    assert result["restored_keys"] == ["k0", "k1"] and result["deleted_keys"] == ["n0", "n1"]
    assert result["versions_scanned"] == 16
    assert contents(s3, bucket) == at_t
    again = run_module(args)
    assert (again["changed"], again["restored"], again["deleted"]) == (False, 0, 0)
    assert again["unchanged"] == 9  # the 3 keys created after T count too: absent then and now


def test_refuses_a_bucket_without_versioning_and_changes_nothing(s3, services):
    name = new_bucket(s3, versioned=False)
    try:
        put(s3, name, "a.json", "a")
        when = mark_t()
        put(s3, name, "b.json", "b")
        result, output = run_module_output(args_for(services, name, when.isoformat()))
        assert result.get("failed") is True
        assert "versioning is not enabled" in result["msg"]
        assert "put-bucket-versioning" in result["msg"] and "Status=Enabled" in result["msg"]
        assert set(contents(s3, name)) == {"a.json", "b.json"}
        assert services["LOCALENV_S3_SECRET_ACCESS_KEY"] not in output
    finally:
        empty_and_drop(s3, name)


def test_refuses_suspended_versioning(s3, services):
    name = new_bucket(s3)
    try:
        put(s3, name, "a.json", "a")
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
        result = run_module(args_for(services, name, datetime.datetime.now(datetime.timezone.utc).isoformat()))
        assert result.get("failed") is True
        assert "versioning is suspended" in result["msg"]
    finally:
        empty_and_drop(s3, name)


def test_refuses_a_future_point_in_time(s3, bucket, services):
    put(s3, bucket, "a.json", "a")
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    result = run_module(args_for(services, bucket, future))
    assert result.get("failed") is True
    assert "in the future" in result["msg"]


def test_refuses_a_point_in_time_without_zone(s3, bucket, services):
    result = run_module(args_for(services, bucket, "2026-01-01T00:00:00"))
    assert result.get("failed") is True
    assert "no time zone" in result["msg"]


def test_before_history_is_refused_unless_allowed_then_deletes_everything(s3, bucket, services):
    when = mark_t()
    put(s3, bucket, "a.json", "a")
    put(s3, bucket, "b/c.json", "c")
    result = run_module(args_for(services, bucket, when.isoformat()))
    assert result.get("failed") is True
    assert "older than the oldest version" in result["msg"] and "allow_before_history" in result["msg"]
    assert set(contents(s3, bucket)) == {"a.json", "b/c.json"}

    result = run_module(args_for(services, bucket, when.isoformat(), allow_before_history=True))
    assert not result.get("failed"), result
    assert result["deleted_keys"] == ["a.json", "b/c.json"]
    assert contents(s3, bucket) == {}
    assert version_count(s3, bucket) == 4  # the two versions and two delete markers


def test_large_object_multipart_copy_keeps_content_type_and_metadata(s3, bucket, services):
    """The copy path of objects over 5 GiB (UploadPartCopy), exercised with a 5 MiB limit on a 6 MiB object.

    Its ETag then differs from the original's, so the module compares the content and leaves the key alone.
    """
    body = os.urandom(6 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=body, ContentType="application/x-langfuse",
                  Metadata={"origin": "v1"}, CacheControl="no-cache")
    v1 = s3.head_object(Bucket=bucket, Key="big.bin")["VersionId"]
    put(s3, bucket, "same-size.txt", "aaaa")
    when = mark_t()
    s3.put_object(Bucket=bucket, Key="big.bin", Body=b"small", ContentType="text/plain")
    put(s3, bucket, "same-size.txt", "bbbb")

    client = module.s3_client(args_for(services, bucket, "", validate_certs=True, ca_bundle=None, session_token=None,
                                       profile=None, workers=2))
    module.copy_version(client, bucket, "big.bin", v1, len(body), single_copy_limit=5 * 1024 * 1024,
                        chunk_size=5 * 1024 * 1024)
    obj = s3.get_object(Bucket=bucket, Key="big.bin")
    assert obj["Body"].read() == body
    assert obj["ContentType"] == "application/x-langfuse"
    assert obj["Metadata"] == {"origin": "v1"}
    assert obj["CacheControl"] == "no-cache"
    assert obj["ETag"] != s3.head_object(Bucket=bucket, Key="big.bin", VersionId=v1)["ETag"]

    result = run_module(args_for(services, bucket, when.isoformat()))
    assert not result.get("failed"), result
    # big.bin: same content, different ETag: unchanged. same-size.txt: same size, other content: restored.
    assert (result["restored_keys"], result["deleted"], result["unchanged"]) == (["same-size.txt"], 0, 1)
    assert s3.get_object(Bucket=bucket, Key="same-size.txt")["Body"].read() == b"aaaa"
