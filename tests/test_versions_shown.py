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


def test_one_field_past_the_limit_is_shown_not_counted():
    """An insert of 13 fields shows all 13 (never "and 1 more", which hides `notes` in
    the line that would name it); 14 are cut to 12 and "and 2 more", in the CLI
    (`history REF --versions`) and on the dashboard's run page alike."""
    from syncd.cli.render_history import _what as cli_what
    from syncd.http.dashboard.pages_history import _what as page_what

    for n, more in ((13, None), (14, "and 2 more")):
        doc = {f"field_{i:02d}": i for i in range(n - 1)} | {"notes": "kept"}
        version = RunVersion("insert", dt.datetime(2026, 12, 7), 1, doc, changes(None, doc))
        line, page = cli_what(version), page_what(version.to_dict())
        if more is None:
            assert "notes=kept" in line and "more" not in line, line
            assert "<code>notes</code>" in page and "more" not in page, page
        else:
            assert line.endswith("; and 2 more") and "notes" not in line, line
            assert page.count("<li>") == 13 and "<li>and 2 more</li>" in page, page
