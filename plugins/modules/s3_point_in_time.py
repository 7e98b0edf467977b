#!/usr/bin/python
# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: s3_point_in_time
short_description: Restore the objects of a versioned S3 bucket (or of a prefix in it) to a point in time
description:
  - Brings every key of O(bucket) under O(prefix) back to the state it had at O(point_in_time), from the bucket's
    object versions. Used when restoring Langfuse to a backup, so that its buckets (events, media, exports) match the
    moment the Postgres and ClickHouse backups were taken.
  - The version of a key current at O(point_in_time) is the newest entry (object version or delete marker) whose
    C(LastModified) is at or before it. A delete marker there, or no entry at all, means the key did not exist then.
  - A key whose current content differs from its version at O(point_in_time) gets that version copied over it
    (C(CopyObject) with the source C(VersionId); content type, metadata and tags are kept. Objects over 5 GiB are
    copied in parts, keeping content type and metadata but not tags). A key that did not exist then but exists now is
    deleted with a plain delete, which adds a delete marker. Nothing is lost either way, every version stays in the
    bucket, so a restore can itself be undone the same way.
  - A key whose current version has the same size and ETag as its version at O(point_in_time) is left alone, and so
    is one with the same size whose content turns out identical (compared by reading both versions when the ETags
    differ, as they do after multipart uploads or copies, or with SSE-KMS). So a second run changes nothing.
  - Refuses, changing nothing, when versioning is not C(Enabled) on the bucket, when O(point_in_time) is in the
    future, or when O(point_in_time) is older than the oldest version under O(prefix) (the bucket holds no history
    for it, and restoring would delete every key) unless O(allow_before_history) is set.
  - In check mode, lists what would be restored and deleted and changes nothing; with C(--diff) the diff names the
    keys, their versions now and at O(point_in_time).
version_added: 0.1.0
author: langfuse_ops.platform maintainers (@langfuse-ops)
options:
  bucket:
    description: The bucket to restore.
    type: str
    required: true
  prefix:
    description: Restore only the keys that start with this prefix (V('') is the whole bucket).
    type: str
    default: ''
  point_in_time:
    description:
      - The moment to restore to, ISO 8601 with a time zone (C(2026-11-20T03:00:00Z), C(2026-11-20T04:00:00+01:00)).
      - Compared with the versions' C(LastModified), which S3 keeps to the second; a version written in the same
        second as O(point_in_time), even a fraction after it, counts as written before it.
    type: str
    required: true
  allow_before_history:
    description:
      - Restore even when O(point_in_time) is older than the oldest version under O(prefix); every key there is then
        deleted (it did not exist yet as far as the bucket knows).
    type: bool
    default: false
  endpoint_url:
    description: S3 endpoint URL, for S3-compatible stores (MinIO, Ceph, ...); AWS's own when omitted.
    type: str
    aliases: [aws_endpoint_url, s3_url]
  region:
    description: Region; the AWS SDK's usual sources (C(AWS_REGION), C(~/.aws/config)) when omitted.
    type: str
    aliases: [aws_region]
  access_key:
    description:
      - Access key ID. When omitted, with O(secret_key), the AWS SDK's usual sources are used (environment,
        O(profile), shared credentials file, instance or pod role).
    type: str
    aliases: [aws_access_key_id, aws_access_key]
  secret_key:
    description: Secret access key, with O(access_key).
    type: str
    aliases: [aws_secret_access_key, aws_secret_key]
  session_token:
    description: Session token of temporary credentials, with O(access_key) and O(secret_key).
    type: str
    aliases: [aws_session_token]
  profile:
    description: Profile of the shared AWS configuration to take credentials and region from.
    type: str
    aliases: [aws_profile]
  validate_certs:
    description: Verify the endpoint's TLS certificate.
    type: bool
    default: true
  ca_bundle:
    description: CA bundle to verify the endpoint's TLS certificate with.
    type: path
    aliases: [aws_ca_bundle]
  force_path_style:
    description: Address the bucket in the path (C(https://endpoint/bucket/key), S3 C(addressing_style=path)), as most
      S3-compatible stores need, rather than in the host name.
    type: bool
    default: false
  workers:
    description: How many copies, deletes and content comparisons to run at once.
    type: int
    default: 8
  page_size:
    description: Versions per C(ListObjectVersions) request (at most 1000).
    type: int
    default: 1000
  report_limit:
    description: At most this many keys in RV(restored_keys), RV(deleted_keys) and the diff; the counts are complete.
    type: int
    default: 100
notes:
  - Ties. S3 keeps C(LastModified) to the second, so versions of a key written within one second carry the same
    time. They are ordered as S3 lists them, newest first (C(IsLatest) marks the current one); between object versions
    and delete markers, whose order the SDK's parsed answer loses, the module reads it from the raw
    C(ListObjectVersions) answer, where S3 interleaves them newest first. (Stand-ins that list all delete markers after
    all versions, as moto does, cannot be told apart in a tie.)
  - Versions removed by a lifecycle rule (noncurrent version expiration) are history the module cannot see; it acts
    on what the bucket still holds.
  - Objects in an archive storage class (Glacier, Deep Archive) cannot be copied before they are restored; the module
    then fails on the first such key, having done the keys before it. A second run carries on.
  - Stops at the first error; what was done by then is in the result, and a second run carries on from there.
  - Credentials are never part of the result or the messages.
requirements:
  - boto3 (Python)
"""

EXAMPLES = r"""
- name: Restore Langfuse's event uploads to the backup's moment
  langfuse_ops.platform.s3_point_in_time:
    bucket: langfuse-events
    prefix: events/
    point_in_time: "{{ backup.started_at }}"
    region: eu-west-1
  register: events_restore

- name: Preview a restore of the media bucket on MinIO
  langfuse_ops.platform.s3_point_in_time:
    bucket: langfuse-media
    point_in_time: "2026-11-20T03:00:00Z"
    endpoint_url: https://minio.example.internal:9000
    force_path_style: true
    access_key: "{{ minio_access_key }}"
    secret_key: "{{ minio_secret_key }}"
  check_mode: true
  diff: true
"""

RETURN = r"""
point_in_time:
  description: The point in time restored to, in UTC.
  returned: always
  type: str
  sample: "2026-11-20T03:00:00+00:00"
bucket:
  description: The bucket.
  returned: always
  type: str
prefix:
  description: The key prefix.
  returned: always
  type: str
restored:
  description: Keys whose version at RV(point_in_time) was (in check mode, would be) copied over them.
  returned: success
  type: int
  sample: 3
deleted:
  description: Keys that did not exist at RV(point_in_time) and were (would be) deleted.
  returned: success
  type: int
  sample: 2
unchanged:
  description: Keys already as they were at RV(point_in_time), including keys absent then and now.
  returned: success
  type: int
  sample: 1250
restored_keys:
  description: The first O(report_limit) of the restored keys, in key order.
  returned: success
  type: list
  elements: str
  sample: [events/project-1/trace/t1.json]
deleted_keys:
  description: The first O(report_limit) of the deleted keys, in key order.
  returned: success
  type: list
  elements: str
oldest_version:
  description: C(LastModified) of the oldest version or delete marker under the prefix, null when there is none.
  returned: when the versions could be listed
  type: str
  sample: "2026-01-05T10:12:44+00:00"
versions_scanned:
  description: Object versions and delete markers listed under the prefix.
  returned: when the versions could be listed
  type: int
keys_scanned:
  description: Distinct keys listed under the prefix.
  returned: when the versions could be listed
  type: int
"""

import datetime
import hashlib
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = exc

UTC = datetime.timezone.utc
# CopyObject copies up to 5 GiB in one request; larger objects take UploadPartCopy.
SINGLE_COPY_LIMIT = 5 * 1024 ** 3
MULTIPART_COPY_CHUNK = 512 * 1024 ** 2
# Object attributes a multipart copy must set itself (CopyObject keeps them on its own).
PRESERVED_ATTRIBUTES = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "ContentType",
                        "Expires", "Metadata")

ARGUMENT_SPEC = dict(
    bucket=dict(type="str", required=True),
    prefix=dict(type="str", default=""),
    point_in_time=dict(type="str", required=True),
    allow_before_history=dict(type="bool", default=False),
    endpoint_url=dict(type="str", aliases=["aws_endpoint_url", "s3_url"]),
    region=dict(type="str", aliases=["aws_region"]),
    access_key=dict(type="str", no_log=True, aliases=["aws_access_key_id", "aws_access_key"]),
    secret_key=dict(type="str", no_log=True, aliases=["aws_secret_access_key", "aws_secret_key"]),
    session_token=dict(type="str", no_log=True, aliases=["aws_session_token"]),
    profile=dict(type="str", aliases=["aws_profile"]),
    validate_certs=dict(type="bool", default=True),
    ca_bundle=dict(type="path", aliases=["aws_ca_bundle"]),
    force_path_style=dict(type="bool", default=False),
    workers=dict(type="int", default=8),
    page_size=dict(type="int", default=1000),
    report_limit=dict(type="int", default=100),
)


class RestoreError(Exception):
    """An S3 request failed; the message names the key and the request."""


# --- which version was current at T (pure) ----------------------------------

def parse_point_in_time(value):
    """An ISO 8601 timestamp with a time zone, as an aware datetime in UTC; ValueError otherwise."""
    text = str(value).strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"point_in_time {value!r} is not an ISO 8601 timestamp (e.g. 2026-11-20T03:00:00Z)") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"point_in_time {value!r} has no time zone: add Z or an offset such as +01:00")
    return when.astimezone(UTC)


def listing_order(body):
    """The positions of the <Version> and <DeleteMarker> elements in a raw ListObjectVersions answer.

    S3 lists each key's versions and delete markers together, newest first; the SDK parses them into two lists,
    which loses how they interleave. Returns {"Version": [...], "DeleteMarker": [...]} (the n-th entry is the position
    of the n-th element of that kind), or None when the body cannot be read.
    """
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, TypeError, ValueError):
        return None
    order = {"Version": [], "DeleteMarker": []}
    for index, child in enumerate(root):
        tag = child.tag.rsplit("}", 1)[-1]
        if tag in order:
            order[tag].append(index)
    return order


def entry(item, delete_marker, position):
    """One ListObjectVersions item (an object version or a delete marker), in the shape the functions here use."""
    return {
        "key": item["Key"],
        "version_id": item.get("VersionId") or "null",
        "last_modified": item["LastModified"],
        "is_latest": bool(item.get("IsLatest")),
        "delete_marker": delete_marker,
        "etag": item.get("ETag"),
        "size": item.get("Size"),
        "storage_class": item.get("StorageClass"),
        "position": position,
    }


def newest_first(entries):
    """A key's versions and delete markers, newest first.

    By LastModified; in a tie (the same second), the current one (IsLatest) first, then in listing order, which S3
    gives newest first.
    """
    return sorted(entries, key=lambda e: (not e["is_latest"], -e["last_modified"].timestamp(), e["position"]))


def version_at(history, when):
    """The entry of a key (newest first) that was current at `when`, a version or a delete marker; None if none yet."""
    for item in history:
        if item["last_modified"] <= when:
            return item
    return None


def plan_key(history, when):
    """What to do to one key (its history newest first) to bring it back to `when`.

    Returns (action, version at `when` or None, current entry), action one of:
    unchanged - already as it was (or absent then and now);
    restore   - copy the version at `when` over the key;
    delete    - it did not exist at `when` and exists now;
    compare   - same size, different ETag: identical or not, only the content can tell (restore if it differs).
    """
    current = history[0]
    at = version_at(history, when)
    exists_now = not current["delete_marker"]
    if at is None or at["delete_marker"]:
        return ("delete" if exists_now else "unchanged"), None, current
    if at["version_id"] == current["version_id"]:
        return "unchanged", at, current
    if exists_now and current["size"] == at["size"]:
        if current["etag"] and current["etag"] == at["etag"]:
            return "unchanged", at, current
        return "compare", at, current
    return "restore", at, current


def histories(pages):
    """Yields (key, history newest first) in key order, from ListObjectVersions pages.

    `pages` yields (page, order): a parsed answer and listing_order() of its raw body (or None). A key's entries may
    span pages; a key is complete once a page ends past it, or at the last page.
    """
    pending = {}
    seen = 0
    for page, order in pages:
        versions = page.get("Versions") or []
        markers = page.get("DeleteMarkers") or []
        if not order or len(order["Version"]) != len(versions) or len(order["DeleteMarker"]) != len(markers):
            order = {"Version": list(range(len(versions))),
                     "DeleteMarker": list(range(len(versions), len(versions) + len(markers)))}
        for item, position in zip(versions, order["Version"]):
            pending.setdefault(item["Key"], []).append(entry(item, False, seen + position))
        for item, position in zip(markers, order["DeleteMarker"]):
            pending.setdefault(item["Key"], []).append(entry(item, True, seen + position))
        seen += max(order["Version"] + order["DeleteMarker"], default=-1) + 1
        unfinished = page.get("NextKeyMarker") if page.get("IsTruncated") else None
        for key in sorted(k for k in pending if k != unfinished):
            yield key, newest_first(pending.pop(key))
    for key in sorted(pending):
        yield key, newest_first(pending.pop(key))


def plan(key_histories, when):
    """The restore plan over all keys: {"restore": [...], "delete": [...], "compare": [...], "unchanged": n, ...}.

    restore/delete/compare hold (key, version at `when`, current entry), in key order.
    """
    result = {"restore": [], "delete": [], "compare": [], "unchanged": 0, "oldest": None, "versions": 0, "keys": 0}
    for key, history in key_histories:
        result["keys"] += 1
        result["versions"] += len(history)
        oldest = min(item["last_modified"] for item in history)
        if result["oldest"] is None or oldest < result["oldest"]:
            result["oldest"] = oldest
        action, at, current = plan_key(history, when)
        if action == "unchanged":
            result["unchanged"] += 1
        else:
            result[action].append((key, at, current))
    return result


def time_problem(when, now, oldest, allow_before_history):
    """Why `when` cannot be restored to (a message), or None."""
    if when > now:
        return (f"point_in_time {when.isoformat()} is in the future (now {now.replace(microsecond=0).isoformat()}); "
                "nothing to restore to")
    if oldest is not None and when < oldest and not allow_before_history:
        return (f"point_in_time {when.isoformat()} is older than the oldest version in scope ({oldest.isoformat()}): "
                "the bucket holds no history that far back (versioning enabled later, or old versions expired by a "
                "lifecycle rule), and restoring would delete every key in scope; set allow_before_history=true to do "
                "that anyway")
    return None


def describe(item):
    if item is None:
        return "absent"
    if item["delete_marker"]:
        return f"deleted (delete marker {item['version_id']}, {item['last_modified'].isoformat()})"
    return f"version {item['version_id']} ({item['last_modified'].isoformat()}, {item['size']} bytes, ETag {item['etag']})"


def make_diff(bucket, prefix, when, restore, delete, limit):
    before, after = [], []
    changes = sorted(list(restore) + [(key, None, current) for key, _at, current in delete],
                     key=lambda change: change[0])
    for key, at, current in changes[:limit]:
        before.append(f"{key}: {describe(current)}")
        after.append(f"{key}: {describe(at) if at else 'absent (deleted: a delete marker is added)'}")
    if len(changes) > limit:
        more = f"... and {len(changes) - limit} more keys"
        before.append(more)
        after.append(more)
    where = f"s3://{bucket}/{prefix}"
    return {"before_header": f"{where} now", "after_header": f"{where} at {when.isoformat()}",
            "before": "".join(line + "\n" for line in before), "after": "".join(line + "\n" for line in after)}


# --- S3 ---------------------------------------------------------------------

def s3_client(params):
    session = boto3.session.Session(profile_name=params["profile"]) if params["profile"] else boto3.session.Session()
    config = dict(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=max(10, params["workers"] + 2))
    if params["force_path_style"]:
        config["s3"] = {"addressing_style": "path"}
    try:
        # Checksums only where S3 requires them: S3-compatible stores do not all know the newer ones.
        botocore_config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                                 **config)
    except TypeError:  # botocore < 1.36
        botocore_config = Config(**config)
    verify = params["ca_bundle"] or None
    if not params["validate_certs"]:
        verify = False
    return session.client("s3", endpoint_url=params["endpoint_url"], region_name=params["region"],
                          aws_access_key_id=params["access_key"], aws_secret_access_key=params["secret_key"],
                          aws_session_token=params["session_token"], verify=verify, config=botocore_config)


def error_text(exc):
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message') or exc}"
    return str(exc)


def versioning_problem(client, bucket):
    """Why the bucket's versions cannot be trusted for a restore (a message), or None."""
    try:
        status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    except (ClientError, BotoCoreError) as exc:
        raise RestoreError(f"cannot read the versioning of bucket {bucket}: {error_text(exc)}") from exc
    if status == "Enabled":
        return None
    state = "suspended" if status == "Suspended" else "not enabled"
    return (f"versioning is {state} on bucket {bucket}, so it holds no reliable history to restore from (and copies "
            "would overwrite the null version). Enable it (aws s3api put-bucket-versioning --bucket "
            f"{bucket} --versioning-configuration Status=Enabled, or amazon.aws.s3_bucket with versioning: true); "
            "only what is written after that can be restored")


def list_pages(client, bucket, prefix, page_size):
    """Yields (page, listing_order of its raw body) for every ListObjectVersions page."""
    raw = {}

    def keep_body(response_dict=None, **kwargs):
        raw["order"] = listing_order((response_dict or {}).get("body"))

    handler_id = f"s3_point_in_time-{id(raw)}"
    client.meta.events.register("before-parse.s3.ListObjectVersions", keep_body, unique_id=handler_id)
    try:
        paginator = client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            yield page, raw.pop("order", None)
    except (ClientError, BotoCoreError) as exc:
        raise RestoreError(f"cannot list the versions in s3://{bucket}/{prefix}: {error_text(exc)}") from exc
    finally:
        client.meta.events.unregister("before-parse.s3.ListObjectVersions", unique_id=handler_id)


def content_digest(client, bucket, key, version_id):
    digest = hashlib.sha256()
    body = client.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"]
    try:
        for chunk in body.iter_chunks(chunk_size=1024 * 1024):
            digest.update(chunk)
    finally:
        body.close()
    return digest.hexdigest()


def same_content(client, bucket, key, at, current):
    try:
        return (content_digest(client, bucket, key, at["version_id"]) ==
                content_digest(client, bucket, key, current["version_id"]))
    except (ClientError, BotoCoreError) as exc:
        raise RestoreError(f"cannot compare versions {at['version_id']} and {current['version_id']} of "
                           f"s3://{bucket}/{key}: {error_text(exc)}") from exc


def copy_version(client, bucket, key, version_id, size, single_copy_limit=SINGLE_COPY_LIMIT,
                 chunk_size=MULTIPART_COPY_CHUNK):
    """Copies version `version_id` of `key` over `key`, keeping its content type and metadata."""
    source = {"Bucket": bucket, "Key": key, "VersionId": version_id}
    if size is not None and size <= single_copy_limit:
        client.copy_object(Bucket=bucket, Key=key, CopySource=source)
        return
    head = client.head_object(Bucket=bucket, Key=key, VersionId=version_id)
    extra = {name: head[name] for name in PRESERVED_ATTRIBUTES if head.get(name) is not None}
    if head.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse"):
        extra["ServerSideEncryption"] = head["ServerSideEncryption"]
        if head.get("SSEKMSKeyId"):
            extra["SSEKMSKeyId"] = head["SSEKMSKeyId"]
    config = TransferConfig(multipart_threshold=single_copy_limit + 1, multipart_chunksize=chunk_size,
                            use_threads=False)
    client.copy(CopySource=source, Bucket=bucket, Key=key, ExtraArgs=extra, Config=config)


def run_all(function, items, workers):
    """Calls function(item) for each item, `workers` at a time; stops at the first RestoreError.

    Returns (results of the calls done, in item order with None for those not done, the first error or None).
    """
    results = [None] * len(items)
    stop = threading.Event()
    errors = []

    def one(index):
        if stop.is_set():
            return
        try:
            results[index] = function(items[index])
        except RestoreError as exc:
            errors.append((index, exc))
            stop.set()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, range(len(items))))
    first = min(errors, key=lambda error: error[0])[1] if errors else None
    return results, first


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_together=[("access_key", "secret_key")])
    params = module.params
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(BOTO3_IMPORT_ERROR))
    if not 1 <= params["page_size"] <= 1000:
        module.fail_json(msg="page_size must be between 1 and 1000")
    if params["workers"] < 1 or params["report_limit"] < 0:
        module.fail_json(msg="workers must be at least 1 and report_limit at least 0")
    try:
        when = parse_point_in_time(params["point_in_time"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    bucket, prefix, limit = params["bucket"], params["prefix"], params["report_limit"]
    result = dict(changed=False, point_in_time=when.isoformat(), bucket=bucket, prefix=prefix)

    now = datetime.datetime.now(UTC)
    problem = time_problem(when, now, None, params["allow_before_history"])
    if problem:
        module.fail_json(msg=problem, **result)

    try:
        client = s3_client(params)
    except (BotoCoreError, ValueError) as exc:
        module.fail_json(msg=f"cannot set up the S3 client: {error_text(exc)}", **result)

    try:
        problem = versioning_problem(client, bucket)
        if problem:
            module.fail_json(msg=problem, **result)
        todo = plan(histories(list_pages(client, bucket, prefix, params["page_size"])), when)
    except RestoreError as exc:
        module.fail_json(msg=str(exc), **result)
    result.update(oldest_version=todo["oldest"].isoformat() if todo["oldest"] else None,
                  versions_scanned=todo["versions"], keys_scanned=todo["keys"])
    problem = time_problem(when, now, todo["oldest"], params["allow_before_history"])
    if problem:
        module.fail_json(msg=problem, **result)

    # Same size, different ETag: restore only what really differs.
    compared, error = run_all(lambda change: same_content(client, bucket, *change), todo["compare"], params["workers"])
    if error:
        module.fail_json(msg=str(error), **result)
    restore = sorted(todo["restore"] + [change for change, same in zip(todo["compare"], compared) if not same],
                     key=lambda change: change[0])
    delete = todo["delete"]
    unchanged = todo["unchanged"] + sum(1 for same in compared if same)

    result.update(changed=bool(restore or delete), restored=len(restore), deleted=len(delete), unchanged=unchanged,
                  restored_keys=[key for key, _at, _current in restore[:limit]],
                  deleted_keys=[key for key, _at, _current in delete[:limit]])
    if module._diff:
        result["diff"] = make_diff(bucket, prefix, when, restore, delete, limit)
    if module.check_mode or not result["changed"]:
        module.exit_json(**result)

    def do_restore(change):
        key, at, _current = change
        try:
            copy_version(client, bucket, key, at["version_id"], at["size"])
        except (ClientError, BotoCoreError) as exc:
            raise RestoreError(f"cannot copy version {at['version_id']} over s3://{bucket}/{key}: {error_text(exc)}") from exc
        return True

    def do_delete(change):
        key = change[0]
        try:
            client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise RestoreError(f"cannot delete s3://{bucket}/{key}: {error_text(exc)}") from exc
        return True

    restored, error = run_all(do_restore, restore, params["workers"])
    deleted, delete_error = run_all(do_delete, delete, params["workers"]) if not error else ([None] * len(delete), None)
    error = error or delete_error
    if error:
        done_restored = [change[0] for change, done in zip(restore, restored) if done]
        done_deleted = [change[0] for change, done in zip(delete, deleted) if done]
        result.update(changed=bool(done_restored or done_deleted), restored=len(done_restored),
                      deleted=len(done_deleted), restored_keys=done_restored[:limit], deleted_keys=done_deleted[:limit])
        module.fail_json(msg=f"{error} (restored {len(done_restored)} of {len(restore)} keys, deleted "
                             f"{len(done_deleted)} of {len(delete)}; a second run carries on)", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
