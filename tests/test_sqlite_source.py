"""The legacy SQLite source: reflection, paging, faithful values, read-only and brief locks."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_capture import Capture
from legacy_adapters.values import RawText
from tests.oddities import make_odd_db


@pytest.fixture
def odd(tmp_path):
    path = tmp_path / "odd.db"
    return path, make_odd_db(path)


def _all_rows(source, info, chunk):
    rows, pos = [], None
    while True:
        c = source.scan(info, pos, chunk)
        if not c.rows:
            return rows
        rows.extend(c.rows)
        pos = c.last


def test_reflection(odd):
    path, _ = odd
    schema = SQLiteSource(path).schema()
    assert schema.views == ["mixed_view"]
    t = schema.tables
    assert t["mixed"].primary_key == ("id",) and not t["mixed"].without_rowid
    assert t["composite"].primary_key == ("run", "epoch")
    assert t["nokey"].primary_key == () and t["nokey"].rowid == "rowid"
    assert t["wr"].without_rowid and t["wr"].rowid is None and t["wr"].primary_key == ("k",)
    assert t["odd names"].column_names == ["a.b", "$price", "_id", "plain"]
    assert t["shadow"].rowid == "_rowid_"  # a column is named rowid
    assert [c.type for c in t["mixed"].columns] == ["INTEGER", "INTEGER", "REAL", "TEXT",
                                                     "BLOB", ""]


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_paging_reads_every_row_once_in_key_order(odd, chunk):
    path, expected = odd
    source = SQLiteSource(path)
    schema = source.schema()
    comp = _all_rows(source, schema.tables["composite"], chunk)
    assert [r[1:] for r in comp] == expected["composite"]
    wr = _all_rows(source, schema.tables["wr"], chunk)
    assert sorted(wr, key=lambda r: r[0]) == sorted(expected["wr"], key=lambda r: r[0])
    assert [r[0] for r in wr] == sorted(r[0] for r in expected["wr"])
    nokey = _all_rows(source, schema.tables["nokey"], chunk)
    assert [r[1:] for r in nokey] == expected["nokey"]
    assert len({r[0] for r in nokey}) == 3  # rowids tell the duplicate rows apart


def test_values_keep_their_storage_class(odd):
    path, expected = odd
    source = SQLiteSource(path)
    info = source.schema().tables["mixed"]
    rows = {r[1]: r[1:] for r in _all_rows(source, info, 100)}
    for row in expected["mixed"]:
        got = rows[row[0]]
        assert got == row
        assert [type(v) for v in got] == [type(v) for v in row]
    assert rows[3][2] == -float("inf") and rows[2][2] == float("inf")
    # Invalid UTF-8 text comes back byte-exact, marked as text (not a BLOB).
    assert rows[7][3] == RawText(b"caf\xe9") and type(rows[7][3]) is RawText
    assert rows[8][3] == RawText(b"\xff\x00\xfe")
    assert rows[8][1] == 1


def test_source_is_read_only_and_changes_nothing(odd):
    path, _ = odd
    before = (path.stat().st_mtime_ns, path.read_bytes())
    source = SQLiteSource(path)
    info = source.schema().tables["mixed"]
    _all_rows(source, info, 2)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        source.conn.execute("INSERT INTO mixed (id) VALUES (99)")
    source.close()
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert not os.path.exists(str(path) + "-wal")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_writer_commits_between_chunks(odd):
    """Between chunks syncd holds no lock: a legacy writer commits without waiting."""
    path, _ = odd
    source = SQLiteSource(path)
    info = source.schema().tables["mixed"]
    first = source.scan(info, None, 2)
    writer = sqlite3.connect(path, timeout=0)  # would fail at once on any lock
    writer.execute("INSERT INTO mixed (id, n) VALUES (100, 1)")
    writer.commit()
    writer.close()
    rest = _all_rows(source, info, 2)
    assert 100 in [r[0] for r in rest]
    assert first.rows[0][0] == 1


def test_long_read_is_split_to_keep_the_lock_brief(tmp_path):
    path = tmp_path / "big.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, "x" * 200) for i in range(60000)))
    conn.commit()
    conn.close()
    source = SQLiteSource(path, max_lock_seconds=0.0005)
    info = source.schema().tables["t"]
    chunk = source.scan(info, None, 60000)
    # The guard interrupted the 60,000-row statement and the chunk was halved until it fit.
    assert 0 < len(chunk.rows) < 60000
    assert [r[0] for r in chunk.rows] == list(range(len(chunk.rows)))


def test_change_log_read_on_the_shared_connection_gets_its_own_lock_budget(tmp_path):
    """The follower reads the change log on the source's connection. Each statement
    gets the lock guard's full budget, however long ago the previous one ran (a stale
    deadline once interrupted `syncd run`'s catch-up read of a long log)."""
    path = tmp_path / "log.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    source = SQLiteSource(path, max_lock_seconds=0.05)
    info = source.schema().tables["t"]
    Capture(path).install([info])
    conn.executemany("INSERT INTO t (v) VALUES (?)", (("x",) for _ in range(3000)))
    conn.commit()
    conn.close()
    capture = Capture(path, source=source)
    with source.read_transaction():
        source.scan(info, None, 1000)  # a statement on the shared connection ...
        time.sleep(0.1)  # ... and then longer than the budget before the log read
        changes = capture.read(0, 5000)
    assert [c.rowid for c in changes] == list(range(1, 3001))
    capture.close()
    source.close()


def _locked_briefly(path, seconds=0.3):
    """A writer holding the database EXCLUSIVE for a moment (then COMMIT), and the list
    its release writes "commit" to: a read that had to wait finds it there when it
    returns (a read that had not waited would find it empty)."""
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")
    events: list[str] = []

    def release():
        writer.execute("COMMIT")
        events.append("commit")
    timer = threading.Timer(seconds, release)
    timer.start()
    return writer, timer, events


def test_reader_waits_out_a_writer_lock(odd):
    """A writer holding the database briefly: the read retries instead of failing."""
    path, _ = odd
    source = SQLiteSource(path, busy_timeout=0.05)
    info = source.schema().tables["mixed"]
    writer, release, events = _locked_briefly(path)
    rows = source.scan(info, None, 100).rows
    assert events == ["commit"]  # it did have to wait for the writer
    release.join()
    assert len(rows) == 8
    writer.close()


def test_schema_read_waits_out_a_writer_lock(odd):
    """The schema read every command starts with waits out a writer holding the lock past
    the busy timeout, like every other read: it once failed `syncd migrate` at start
    with "cannot read the schema (database is locked)", exit 2."""
    path, _ = odd
    source = SQLiteSource(path, busy_timeout=0.05)
    expected = source.schema()
    writer, release, events = _locked_briefly(path, 0.4)
    assert source.schema() == expected
    assert events == ["commit"]
    release.join()
    writer.close()


@pytest.mark.parametrize("table", ["mixed", "wr"])
def test_integrity_checks_wait_out_a_writer_lock_too(odd, table):
    """The checks migrate and verify run around a table's pass (`PRAGMA quick_check`,
    the key-order rule of a WITHOUT ROWID table) retry a locked database like every
    read: a writer committing in a tight loop under load once failed `syncd migrate`
    with a bare "database is locked" from the quick_check."""
    path, _ = odd
    source = SQLiteSource(path, busy_timeout=0.05)
    info = source.schema().tables[table]
    writer, release, events = _locked_briefly(path)
    source.check_intact(info)  # raises on damage; a lock is not damage
    assert events == ["commit"]
    release.join()
    writer.close()
    writer, release, events = _locked_briefly(path)
    assert len(source.scan(info, None, 100).rows) > 0  # the key-order rule read too
    assert events == ["commit"]
    release.join()
    writer.close()


class _DropsWhileReflecting(SQLiteSource):
    """A source whose fourth connection (the schema read has initialised, listed the views and the
    tables, and reflects the first table, `a`, on it) first lets a legacy script drop
    that table: a real DROP TABLE on the file."""

    def __init__(self, path, table: str) -> None:
        super().__init__(path)
        self.table, self.opened = table, 0

    def connect(self) -> sqlite3.Connection:
        self.opened += 1
        if self.opened == 4:
            writer = sqlite3.connect(self.path)
            writer.execute(f"DROP TABLE IF EXISTS {self.table}")
            writer.commit()
            writer.close()
        return super().connect()


def test_a_table_dropped_while_the_schema_is_read_is_left_out(tmp_path):
    """`syncd run` exited with NoSuchTableError when a legacy script dropped a table
    between the schema read's listing of the tables and its reflection of that one."""
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE a (id INTEGER PRIMARY KEY); "
                       "CREATE TABLE z (id INTEGER PRIMARY KEY); "
                       "CREATE VIEW vz AS SELECT * FROM z;")
    conn.close()
    source = _DropsWhileReflecting(path, "a")
    try:
        schema = source.schema()
    finally:
        source.close()
    assert source.opened >= 4  # the drop happened during the read
    assert sorted(schema.tables) == ["z"] and schema.views == ["vz"]
