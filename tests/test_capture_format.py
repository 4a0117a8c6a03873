"""The capture triggers' formats: format 2 (one small INSERT per trigger, the consumer
registry in the log) logs what format 1 logged; format 3 logs the same changes with the
row's values; installs of formats 1 and 2 are upgraded in place."""

from __future__ import annotations

import sqlite3

from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_capture import Capture
from legacy_adapters.sqlite_consumers import CONSUMERS_TABLE
from tests.capture_format1 import install_format1
from tests.capture_format2 import install_format2

TABLES = [
    "CREATE TABLE alias (id INTEGER PRIMARY KEY, v)",
    "CREATE TABLE named (name TEXT PRIMARY KEY, v)",
    "CREATE TABLE nokey (v)",
    "CREATE TABLE wr (a TEXT, b INTEGER, v, PRIMARY KEY (a, b)) WITHOUT ROWID",
    "CREATE TABLE wide (a, b, c, d, v, PRIMARY KEY (a, b, c, d))",
    "CREATE TABLE desc_key (id INTEGER PRIMARY KEY DESC, v)",
]
WRITES = [
    "INSERT INTO alias VALUES (1, 'x')", "UPDATE alias SET v = 'y'",
    "UPDATE alias SET id = 7", "DELETE FROM alias",
    "INSERT INTO named VALUES ('a', 1)", "UPDATE named SET name = 'b'", "DELETE FROM named",
    "INSERT INTO nokey VALUES (1)", "UPDATE nokey SET v = 2", "UPDATE nokey SET rowid = 9",
    "DELETE FROM nokey",
    "INSERT INTO wr VALUES ('a', 1, 0)", "UPDATE wr SET b = 2", "UPDATE wr SET v = 3",
    "DELETE FROM wr",
    "INSERT INTO wide VALUES (1, 2, 3, 4, 0)", "UPDATE wide SET d = 5", "DELETE FROM wide",
    "INSERT INTO desc_key (v) VALUES (1)", "UPDATE desc_key SET id = 5", "DELETE FROM desc_key",
]
# What each write must log, as (table, op, rowid, key values): an UPDATE that moves a
# row's key logs the new key and a delete of the old one.
EXPECTED = [
    ("alias", "i", 1, (1,)), ("alias", "u", 1, (1,)),
    ("alias", "u", 7, (7,)), ("alias", "d", 1, (1,)), ("alias", "d", 7, (7,)),
    ("named", "i", 1, ("a",)), ("named", "u", 1, ("b",)), ("named", "d", 1, ("a",)),
    ("named", "d", 1, ("b",)),
    ("nokey", "i", 1, ()), ("nokey", "u", 1, ()), ("nokey", "u", 9, ()), ("nokey", "d", 1, ()),
    ("nokey", "d", 9, ()),
    ("wr", "i", None, ("a", 1)), ("wr", "u", None, ("a", 2)), ("wr", "d", None, ("a", 1)),
    ("wr", "u", None, ("a", 2)), ("wr", "d", None, ("a", 2)),
    ("wide", "i", 1, (1, 2, 3, 4)), ("wide", "u", 1, (1, 2, 3, 5)), ("wide", "d", 1, (1, 2, 3, 4)),
    ("wide", "d", 1, (1, 2, 3, 5)),
    ("desc_key", "i", 1, (None,)), ("desc_key", "u", 1, (5,)), ("desc_key", "d", 1, (None,)),
    ("desc_key", "d", 1, (5,)),
]


def _db(path):
    conn = sqlite3.connect(path)
    for sql in TABLES:
        conn.execute(sql)
    conn.commit()
    conn.close()
    source = SQLiteSource(path)
    try:
        return list(source.schema().tables.values())
    finally:
        source.close()


def _write(path, statements):
    for sql in statements:  # the legacy pattern: a connection per write
        conn = sqlite3.connect(path)
        conn.execute(sql)
        conn.commit()
        conn.close()


def _logged(capture, after=0):
    return [(c.table, c.op, c.rowid, tuple(v for v in c.key[:_width(c.table)]))
            for c in capture.read(after, 1000)]


def _width(table):
    return {"alias": 1, "named": 1, "nokey": 0, "wr": 2, "wide": 4, "desc_key": 1}[table]


def _bodies(path):
    conn = sqlite3.connect(path)
    bodies = dict(conn.execute("SELECT tbl_name, group_concat(sql) FROM sqlite_master "
                               "WHERE type = 'trigger' GROUP BY tbl_name"))
    conn.close()
    return bodies


def test_format_2_logs_every_change_and_a_moved_key(tmp_path):
    path = tmp_path / "metadata.db"
    tables = _db(path)
    capture = Capture(path, keys_only=[t.name for t in tables])  # left out of history
    assert sorted(capture.install(tables)) == sorted(t.name for t in tables)
    _write(path, WRITES)
    assert _logged(capture) == EXPECTED
    assert all(c.values is None for c in capture.read(0, 1000))
    # one small INSERT per trigger, except a key too wide to log old and new in one row
    bodies = _bodies(path)
    assert all(sql.count("INSERT INTO") == 3 for t, sql in bodies.items() if t != "wide")
    assert bodies["wide"].count("INSERT INTO") == 4
    capture.close()


def test_format_3_logs_the_same_changes_with_the_rows_values(tmp_path):
    path = tmp_path / "metadata.db"
    tables = _db(path)
    capture = Capture(path)
    assert sorted(capture.install(tables)) == sorted(t.name for t in tables)
    _write(path, WRITES)
    assert _logged(capture) == EXPECTED
    rows = [(c.table, c.op, c.columns and dict(zip(c.columns, c.values, strict=True)))
            for c in capture.read(0, 1000)]
    assert rows[:5] == [("alias", "i", {"id": 1, "v": "x"}), ("alias", "u", {"id": 1, "v": "y"}),
                        ("alias", "u", {"id": 7, "v": "y"}), ("alias", "d", None),
                        ("alias", "d", None)]
    assert ("wr", "u", {"a": "a", "b": 2, "v": 3}) in rows
    assert ("nokey", "u", {"v": 2}) in rows
    # one INSERT per trigger, no json, no subquery: the values as they are
    bodies = _bodies(path)
    assert all(sql.count("INSERT INTO") == 3 for sql in bodies.values())
    assert not any(w in sql.lower() for sql in bodies.values() for w in ("json", "select"))
    capture.close()


def test_an_install_of_format_2_is_upgraded_in_place(tmp_path):
    path = tmp_path / "metadata.db"
    tables = _db(path)
    install_id = install_format2(path, tables)
    half = len(WRITES) // 2
    while not WRITES[half].startswith("INSERT"):
        half += 1
    _write(path, WRITES[:half])  # logged by format 2, keys only
    capture = Capture(path)
    capture.record_consumer("other", "host pid 1 -> database x", 3)
    assert capture.missing(tables) == []  # format 2 logs every change
    before, last = _logged(capture), capture.last_seq()
    assert capture.install(tables) == []  # upgraded, and no table needs a reconcile
    assert capture.install_id() == install_id and capture.last_seq() == last
    assert [c.consumer for c in capture.consumers()] == ["other"]  # layouts are not consumers
    _write(path, WRITES[half:])  # logged by format 3, with the values
    assert _logged(capture) == before + _logged(capture, last) == EXPECTED
    assert all(c.values is None for c in capture.read(0, last))
    assert any(c.values is not None for c in capture.read(last, 1000))
    assert capture.install(tables) == []
    assert len(capture.triggers()) == 3 * len(tables)
    capture.close()


def test_a_changed_column_layout_gets_new_triggers_and_old_entries_keep_theirs(tmp_path):
    path = tmp_path / "metadata.db"
    tables = _db(path)
    capture = Capture(path)
    capture.install(tables)
    _write(path, ["INSERT INTO named VALUES ('a', 1)", "ALTER TABLE named ADD COLUMN w",
                  "UPDATE named SET w = 5"])  # the old triggers: the old layout
    source = SQLiteSource(path)
    tables = list(source.schema().tables.values())
    source.close()
    assert capture.missing(tables) == []  # outdated, not missing: nothing went unlogged
    assert capture.install(tables) == []
    _write(path, ["UPDATE named SET w = 6"])
    logged = [dict(zip(c.columns, c.values, strict=True)) for c in capture.read(0, 100)]
    assert logged == [{"name": "a", "v": 1}, {"name": "a", "v": 1},
                      {"name": "a", "v": 1, "w": 6}]
    capture.close()


# -- format 1, as syncd installed it before (the triggers' SQL copied from that version) ---


def _install_format1(path, tables):
    install_id = install_format1(path, tables)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f'INSERT INTO "{CONSUMERS_TABLE}" VALUES (?, ?, ?, julianday(\'now\'), 1)',
                 ("other", "host pid 1 -> database x", 3))
    conn.close()
    return install_id


def test_an_install_of_format_1_is_upgraded_in_place(tmp_path):
    path = tmp_path / "metadata.db"
    tables = _db(path)
    install_id = _install_format1(path, tables)
    half = len(WRITES) // 2
    while not WRITES[half].startswith("INSERT"):
        half += 1
    _write(path, WRITES[:half])  # logged by format 1, not read yet
    capture = Capture(path)
    assert capture.missing(tables) == []  # format 1 logs every change: nothing to reconcile
    before = _logged(capture)
    last = capture.last_seq()
    assert capture.install(tables) == []  # upgraded, and no table needs a reconcile
    assert capture.install_id() == install_id and capture.last_seq() == last
    conn = sqlite3.connect(path)
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                            (CONSUMERS_TABLE,)).fetchall()
    conn.close()
    (other,) = capture.consumers()
    assert (other.consumer, other.seq, other.running) == ("other", 3, True)
    assert other.seen_seconds_ago < 60
    _write(path, WRITES[half:])  # logged by format 2
    assert _logged(capture) == before + _logged(capture, last) == EXPECTED
    seqs = [c.seq for c in capture.read(0, 1000)]
    assert sorted(set(seqs)) == list(range(1, max(seqs) + 1))  # still contiguous
    assert capture.install(tables) == []  # nothing left to do
    assert len(capture.triggers()) == 3 * len(tables)
    assert capture.uninstall() == 3 * len(tables)
    capture.close()


def test_the_consumer_registry_lives_in_the_log(tmp_path):
    path = tmp_path / "metadata.db"
    tables = _db(path)
    capture = Capture(path)
    capture.install(tables)
    _write(path, WRITES[:4])
    assert capture.record_consumer("a", "one", 2)
    assert capture.record_consumer("b", "two", 1, running=False)
    assert capture.record_consumer("a", "one again", 4)
    assert [(c.consumer, c.label, c.seq, c.running) for c in capture.consumers()] == [
        ("b", "two", 1, False), ("a", "one again", 4, True)]
    assert [c.consumer for c in capture.live_consumers()] == ["a"]
    assert capture.prune_bound(4, 3600) == 1
    assert capture.prune(capture.prune_bound(4, 3600)) == 0  # b still needs entry 2
    assert capture.prune(capture.prune_bound(4, 0.0)) == 3  # b is past its retention
    assert [c.seq for c in capture.read(0, 100)] == [4]  # the change log only
    assert capture.last_seq() == 4 and len(capture.consumers()) == 2
    capture.close()
