"""Pure logic of the s3_point_in_time module: which version of a key was current at T, and what to do about it."""
import datetime
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.modules import s3_point_in_time as m  # noqa: E402

UTC = datetime.timezone.utc
BASE = datetime.datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)


def at(seconds):
    return BASE + datetime.timedelta(seconds=seconds)


def version(key, vid, seconds, latest=False, etag=None, size=None):
    """An object version; unless told otherwise, versions written at different times differ in size and ETag."""
    return {"Key": key, "VersionId": vid, "LastModified": at(seconds), "IsLatest": latest,
            "ETag": etag or f'"{vid}-etag"', "Size": 100 + int(seconds) if size is None else size,
            "StorageClass": "STANDARD"}


def marker(key, vid, seconds, latest=False):
    return {"Key": key, "VersionId": vid, "LastModified": at(seconds), "IsLatest": latest}


def history(versions=(), markers=(), order=None):
    """One key's history as the module builds it from a single ListObjectVersions page."""
    page = {"Versions": list(versions), "DeleteMarkers": list(markers), "IsTruncated": False}
    ((_key, hist),) = list(m.histories([(page, order)]))
    return hist


def action(hist, seconds):
    verdict, version_then, _current = m.plan_key(hist, at(seconds))
    return verdict, version_then and version_then["version_id"]


# --- parse_point_in_time -------------------------------------------------------

@pytest.mark.parametrize("text", ["2026-11-20T10:00:00Z", "2026-11-20T10:00:00+00:00", "2026-11-20T11:00:00+01:00",
                                  "2026-11-20T05:00:00-05:00", "2026-11-20 10:00:00z", "2026-11-20T10:00:00.000Z"])
def test_point_in_time_is_read_in_any_zone_and_returned_in_utc(text):
    when = m.parse_point_in_time(text)
    assert when == BASE
    assert when.tzinfo == UTC
    assert when.isoformat() == "2026-11-20T10:00:00+00:00"


def test_point_in_time_keeps_fractions_of_a_second():
    assert m.parse_point_in_time("2026-11-20T10:00:00.250Z") == BASE + datetime.timedelta(milliseconds=250)


@pytest.mark.parametrize("text, words", [("2026-11-20T10:00:00", "no time zone"), ("2026-11-20", "no time zone"),
                                         ("yesterday", "not an ISO 8601"), ("", "not an ISO 8601")])
def test_point_in_time_without_zone_or_not_a_timestamp_is_refused(text, words):
    with pytest.raises(ValueError, match=words):
        m.parse_point_in_time(text)


# --- version_at / plan_key ---------------------------------------------------------

def test_key_untouched_since_before_t_is_unchanged():
    hist = history([version("k", "v1", 0, latest=True)])
    assert action(hist, 5) == ("unchanged", "v1")


def test_overwritten_after_t_is_restored_to_the_newest_version_at_or_before_t():
    hist = history([version("k", "v3", 20, latest=True), version("k", "v2", 8), version("k", "v1", 0)])
    assert action(hist, 10) == ("restore", "v2")
    assert action(hist, 7) == ("restore", "v1")
    assert action(hist, 25) == ("unchanged", "v3")


def test_last_modified_equal_to_t_counts_as_at_t():
    hist = history([version("k", "v2", 10, latest=True), version("k", "v1", 0)])
    assert action(hist, 10) == ("unchanged", "v2")
    assert action(hist, 9.999) == ("restore", "v1")


def test_deleted_after_t_is_restored():
    hist = history([version("k", "v1", 0)], [marker("k", "d1", 20, latest=True)])
    assert action(hist, 10) == ("restore", "v1")


def test_created_after_t_is_deleted():
    hist = history([version("k", "v1", 20, latest=True)])
    assert action(hist, 10) == ("delete", None)


def test_deleted_before_t_and_still_deleted_is_unchanged():
    hist = history([version("k", "v1", 0)], [marker("k", "d1", 5, latest=True)])
    assert action(hist, 10) == ("unchanged", None)


def test_delete_marker_newer_than_the_version_and_still_before_t_means_absent_at_t():
    hist = history([version("k", "v2", 20, latest=True), version("k", "v1", 0)], [marker("k", "d1", 5)])
    assert action(hist, 10) == ("delete", None)
    assert action(hist, 4) == ("restore", "v1")


def test_delete_marker_before_t_then_the_key_written_again_before_t_exists_at_t():
    hist = history([version("k", "v2", 8), version("k", "v1", 0)],
                   [marker("k", "d2", 20, latest=True), marker("k", "d1", 5)])
    assert action(hist, 10) == ("restore", "v2")
    assert action(hist, 6) == ("unchanged", None)


def test_current_copy_with_the_same_size_and_etag_is_unchanged():
    """What a restore leaves: a newer version, a copy of the version at T (CopyObject keeps a single-part ETag)."""
    hist = history([version("k", "v3", 30, latest=True, etag='"aaa"', size=10), version("k", "v2", 20, etag='"bbb"'),
                    version("k", "v1", 0, etag='"aaa"', size=10)])
    assert action(hist, 10) == ("unchanged", "v1")


def test_same_size_different_etag_needs_a_content_comparison():
    """Multipart uploads and copies, and SSE-KMS, give identical contents different ETags."""
    hist = history([version("k", "v2", 20, latest=True, etag='"aaa-2"', size=10),
                    version("k", "v1", 0, etag='"bbb"', size=10)])
    assert action(hist, 10) == ("compare", "v1")


def test_different_size_is_restored_without_comparison():
    hist = history([version("k", "v2", 20, latest=True, size=11), version("k", "v1", 0, size=10)])
    assert action(hist, 10) == ("restore", "v1")


def test_key_deleted_now_is_restored_even_when_its_last_version_matches():
    hist = history([version("k", "v1", 0)], [marker("k", "d1", 20, latest=True)])
    verdict, version_then, current = m.plan_key(hist, at(10))
    assert (verdict, version_then["version_id"], current["version_id"]) == ("restore", "v1", "d1")


def test_version_before_versioning_was_enabled_is_the_null_version():
    hist = history([version("k", "v2", 20, latest=True), version("k", None, 0)])
    assert action(hist, 10) == ("restore", "null")


# --- ties within one second ----------------------------------------------------------

def test_tie_between_versions_goes_to_is_latest():
    hist = history([version("k", "old", 10), version("k", "new", 10, latest=True)])
    assert [e["version_id"] for e in hist] == ["new", "old"]


def test_tie_between_noncurrent_versions_keeps_listing_order_newest_first():
    hist = history([version("k", "v3", 20, latest=True), version("k", "v2b", 10), version("k", "v2a", 10),
                    version("k", "v1", 0)])
    assert [e["version_id"] for e in hist] == ["v3", "v2b", "v2a", "v1"]
    assert action(hist, 15) == ("restore", "v2b")


def test_tie_between_a_version_and_a_delete_marker_follows_the_raw_listing_order():
    # The key was written (v2) and deleted (d1) in the same second, then written again (v3).
    versions = [version("k", "v3", 20, latest=True), version("k", "v2", 10), version("k", "v1", 0)]
    markers = [marker("k", "d1", 10)]
    # As S3 lists them: v3, d1, v2, v1 (children 0-2 are IsTruncated, Name, Prefix).
    order = {"Version": [3, 5, 6], "DeleteMarker": [4]}
    hist = history(versions, markers, order)
    assert [e["version_id"] for e in hist] == ["v3", "d1", "v2", "v1"]
    assert action(hist, 15) == ("delete", None)
    # Deleted first, then written in the same second: v3, v2, d1, v1.
    hist = history(versions, markers, {"Version": [3, 4, 6], "DeleteMarker": [5]})
    assert action(hist, 15) == ("restore", "v2")


def test_without_the_raw_order_versions_come_before_delete_markers_in_a_tie():
    hist = history([version("k", "v2", 10, latest=True), version("k", "v1", 10)], [marker("k", "d1", 10)])
    assert [e["version_id"] for e in hist] == ["v2", "v1", "d1"]


def test_listing_order_reads_the_interleaving_from_the_raw_answer():
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>events/</Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>
  <MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
  <Version><Key>a</Key><VersionId>v3</VersionId></Version>
  <DeleteMarker><Key>a</Key><VersionId>d1</VersionId></DeleteMarker>
  <Version><Key>a</Key><VersionId>v2</VersionId></Version>
  <DeleteMarker><Key>b</Key><VersionId>d2</VersionId></DeleteMarker>
  <Version><Key>b</Key><VersionId>v1</VersionId></Version>
</ListVersionsResult>"""
    assert m.listing_order(body) == {"Version": [6, 8, 10], "DeleteMarker": [7, 9]}
    assert m.listing_order(b"not xml") is None
    assert m.listing_order(None) is None


def test_raw_order_that_does_not_match_the_parsed_page_is_ignored():
    hist = history([version("k", "v2", 10, latest=True), version("k", "v1", 10)], [marker("k", "d1", 10)],
                   order={"Version": [0], "DeleteMarker": []})
    assert [e["version_id"] for e in hist] == ["v2", "v1", "d1"]


# --- pages and the whole plan ---------------------------------------------------------

def test_a_key_spanning_pages_is_planned_once_with_its_whole_history():
    pages = [
        ({"Versions": [version("a", "a1", 0, latest=True), version("b", "b3", 20, latest=True)],
          "IsTruncated": True, "NextKeyMarker": "b", "NextVersionIdMarker": "b3"}, None),
        ({"Versions": [version("b", "b2", 8)], "DeleteMarkers": [marker("b", "bd", 4)],
          "IsTruncated": True, "NextKeyMarker": "b", "NextVersionIdMarker": "bd"}, None),
        ({"Versions": [version("b", "b1", 0), version("c", "c1", 20, latest=True)], "IsTruncated": False}, None),
    ]
    keys = [(key, [e["version_id"] for e in hist]) for key, hist in m.histories(pages)]
    assert keys == [("a", ["a1"]), ("b", ["b3", "b2", "bd", "b1"]), ("c", ["c1"])]
    result = m.plan(m.histories(pages), at(10))
    assert [(key, then["version_id"]) for key, then, _now in result["restore"]] == [("b", "b2")]
    assert [key for key, _then, _now in result["delete"]] == ["c"]
    assert result["unchanged"] == 1
    assert (result["keys"], result["versions"], result["oldest"]) == (3, 6, at(0))


def test_plan_sorts_keys_and_counts_every_kind():
    page = {"Versions": [version("e", "e1", 0, latest=True),
                         version("d", "d2", 20, latest=True, etag='"x-2"', size=5),
                         version("d", "d1", 0, etag='"y"', size=5), version("c", "c1", 30, latest=True),
                         version("b", "b1", 0)],
            "DeleteMarkers": [marker("b", "bd", 20, latest=True), marker("a", "ad", 1, latest=True)],
            "IsTruncated": False}
    page["Versions"].append(version("a", "a1", 0))
    result = m.plan(m.histories([(page, None)]), at(10))
    assert [key for key, _then, _now in result["restore"]] == ["b"]
    assert [key for key, _then, _now in result["delete"]] == ["c"]
    assert [key for key, _then, _now in result["compare"]] == ["d"]
    assert result["unchanged"] == 2  # a (absent then and now), e
    assert result["oldest"] == at(0)


def test_empty_scope_has_no_oldest_version():
    result = m.plan(m.histories([({"IsTruncated": False}, None)]), at(10))
    assert result == {"restore": [], "delete": [], "compare": [], "unchanged": 0, "oldest": None, "versions": 0,
                      "keys": 0}


# --- refusals -------------------------------------------------------------------

def test_future_point_in_time_is_refused():
    assert "in the future" in m.time_problem(at(11), at(10), at(0), False)
    assert "in the future" in m.time_problem(at(11), at(10), None, True)


def test_point_in_time_before_history_is_refused_unless_allowed():
    problem = m.time_problem(at(-1), at(10), at(0), False)
    assert "older than the oldest version" in problem and "allow_before_history" in problem
    assert m.time_problem(at(-1), at(10), at(0), True) is None
    assert m.time_problem(at(0), at(10), at(0), False) is None
    assert m.time_problem(at(-1), at(10), None, False) is None


# --- diff -----------------------------------------------------------------------

def test_diff_names_each_key_before_and_after_and_is_capped():
    hist_b = history([version("b", "b2", 20, latest=True), version("b", "b1", 0)])
    hist_c = history([version("c", "c1", 20, latest=True)])
    restore = [("b", hist_b[1], hist_b[0])]
    delete = [("c", None, hist_c[0])]
    diff = m.make_diff("bkt", "events/", at(10), restore, delete, 10)
    assert diff["before_header"] == "s3://bkt/events/ now"
    assert diff["after_header"] == "s3://bkt/events/ at 2026-11-20T10:00:10+00:00"
    assert diff["before"].splitlines()[0].startswith("b: version b2 ")
    assert diff["after"].splitlines()[0].startswith("b: version b1 ")
    assert diff["after"].splitlines()[1].startswith("c: absent")
    capped = m.make_diff("bkt", "", at(10), restore, delete, 1)
    assert capped["before"].splitlines() == [capped["before"].splitlines()[0], "... and 1 more keys"]


def test_run_all_stops_at_the_first_error():
    done = []

    def work(item):
        if item == 3:
            raise m.RestoreError("boom on 3")
        done.append(item)
        return item

    results, error = m.run_all(work, list(range(10)), workers=1)
    assert str(error) == "boom on 3"
    assert results[:3] == [0, 1, 2] and results[3:] == [None] * 7
    results, error = m.run_all(work, [0, 1, 2], workers=4)
    assert (results, error) == ([0, 1, 2], None)
