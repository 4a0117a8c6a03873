"""What `history REF --versions` and the dashboard show of a version's changes."""

import datetime as dt

from syncd.client.versions import RunVersion, changes


def test_orig_parts_of_a_changed_key_are_not_shown():
    before = {"status": "running", "end_time": None}
    after = {"status": "completed", "end_time": dt.datetime(2026, 12, 7, 18, 44, 19, 676000),
             "_orig": {"end_time": 632}}
    version = RunVersion("update", dt.datetime(2026, 12, 7), 1, after, changes(before, after))
    assert [c.key for c in version.changes] == ["status", "end_time", "_orig.end_time"]
    assert [c.key for c in version.shown_changes()] == ["status", "end_time"]


def test_an_orig_change_alone_is_still_shown():
    when = dt.datetime(2026, 12, 7, 18, 44, 19, 676000)
    before = {"end_time": when, "_orig": {"end_time": 632}}
    after = {"end_time": when, "_orig": {"end_time": 999}}
    version = RunVersion("update", dt.datetime(2026, 12, 7), 1, after, changes(before, after))
    assert [c.key for c in version.shown_changes()] == ["_orig.end_time"]
