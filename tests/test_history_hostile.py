"""The copy of record against what legacy scripts and SQLite itself do, on real servers:
foreign-key cascades, a legacy trigger, UPSERT, REPLACE with recursive triggers, UPDATE
OR REPLACE onto another key, savepoints and rollbacks, many versions in one
transaction, awkward values and schema changes while `syncd run` follows; and schema
changes made while it was stopped. `syncd restore --as-of` each moment must equal a
copy of metadata.db taken then (SQLite backup API)."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

from tests.followed_story import Story, write

SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT UNIQUE);
CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id)
  ON DELETE CASCADE ON UPDATE CASCADE, v);
CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT);
CREATE TRIGGER legacy_audit AFTER INSERT ON parent BEGIN
  INSERT INTO audit (what) VALUES ('new ' || NEW.name); END;
CREATE TABLE kv (k TEXT PRIMARY KEY, v, n INTEGER DEFAULT 0);
CREATE TABLE seqd (id INTEGER PRIMARY KEY AUTOINCREMENT, v);
CREATE TABLE vals (id INTEGER PRIMARY KEY, r REAL, x);
CREATE TABLE mark (id INTEGER PRIMARY KEY, v);
"""


def fill(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO parent VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    conn.executemany("INSERT INTO child VALUES (?, ?, ?)",
                     [(1, 1, 1), (2, 1, 2), (3, 2, 3), (4, 3, 4)])
    conn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)", [("a", 1), ("b", 2), ("c", 3)])
    conn.executemany("INSERT INTO seqd (v) VALUES (?)", [(i,) for i in range(5)])
    conn.executemany("INSERT INTO vals VALUES (?, ?, ?)", [(1, 1.0, 1), (2, 2.0, 2)])


def test_what_sqlite_does_on_its_own_restores_as_of_every_moment(
        tmp_path: Path, target_args: list[str], db: Any) -> None:
    story, legacy = Story(tmp_path, target_args, db, fill), tmp_path / "metadata.db"
    story.start()
    try:
        story.caught_up()
        story.keep("start")
        fk = ("foreign_keys=ON",)
        write(legacy, "DELETE FROM parent WHERE id = 1", pragmas=fk)  # cascades to child
        write(legacy, "UPDATE parent SET id = 20 WHERE id = 2", pragmas=fk)  # ... and here
        write(legacy, "INSERT INTO parent VALUES (4, 'd')")  # the legacy trigger writes audit
        story.caught_up()
        story.keep("cascade")
        write(legacy, "INSERT INTO kv (k, v) VALUES ('a', 10) "
                      "ON CONFLICT(k) DO UPDATE SET v = excluded.v, n = n + 1")
        write(legacy, "INSERT OR REPLACE INTO kv (k, v) VALUES ('b', 20)",
              pragmas=("recursive_triggers=ON",))  # the replaced row's DELETE fires
        write(legacy, "UPDATE OR REPLACE kv SET k = 'c' WHERE k = 'a'")  # 'c' is replaced
        story.caught_up()
        story.keep("upsert")
        write(legacy, "UPDATE kv SET v = 1 WHERE k = 'b'", "UPDATE kv SET v = 2 WHERE k = 'b'",
              "INSERT INTO kv (k, v) VALUES ('t', 1)", "DELETE FROM kv WHERE k = 't'",
              "INSERT INTO kv (k, v) VALUES ('t', 2)", "SAVEPOINT s",
              "UPDATE kv SET v = 99 WHERE k = 't'", "INSERT INTO kv (k, v) VALUES ('u', 1)",
              "ROLLBACK TO s", "RELEASE s", "UPDATE kv SET v = 3 WHERE k = 'b'")
        conn = sqlite3.connect(legacy)
        conn.execute("UPDATE kv SET v = 'rolled back'")
        conn.execute("INSERT INTO kv (k, v) VALUES ('rb', 1)")
        conn.rollback()
        conn.close()
        write(legacy, "DELETE FROM seqd WHERE id = 5")  # the counter stays at 5
        write(legacy, "INSERT INTO seqd (v) VALUES ('six')", "DELETE FROM seqd WHERE id = 6")
        story.caught_up()
        story.keep("transactions")
        write(legacy, ("INSERT INTO vals VALUES (3, ?, ?)", (float("inf"), float("-inf"))),
              ("INSERT INTO vals VALUES (4, ?, ?)", (-0.0, -0.0)),
              ("INSERT INTO vals VALUES (5, ?, ?)", (2**63 - 1, -2**63)),
              ("INSERT INTO vals VALUES (6, ?, ?)", (None, b"")),
              ("INSERT INTO vals VALUES (7, ?, ?)", ("a\x00b", "x\x00")),
              ("INSERT INTO vals VALUES (8, ?, CAST(x'ff00' AS TEXT))", (1e308,)),
              ("INSERT INTO vals VALUES (9, ?, ?)", (float("nan"), 5e-324)),
              "INSERT INTO vals VALUES (10, '12', '12')",
              ("INSERT INTO vals VALUES (11, ?, ?)", (b"\x00\x01", "")))
        story.caught_up()
        story.keep("values")
        write(legacy, "ALTER TABLE kv ADD COLUMN extra TEXT DEFAULT 'dflt'")
        write(legacy, "UPDATE kv SET v = 'after add', extra = 'E' WHERE k = 'b'")
        write(legacy, "INSERT INTO kv (k, v) VALUES ('new', 1)")
        story.caught_up()
        story.keep("added")
        write(legacy, "ALTER TABLE kv RENAME COLUMN v TO value")
        write(legacy, "UPDATE kv SET value = 'after rename' WHERE k = 'b'")
        write(legacy, "CREATE INDEX kv_value ON kv(value)")
        story.caught_up()
        story.keep("renamed")
        write(legacy, "DROP INDEX kv_value")
        write(legacy, "DROP TABLE vals")
        write(legacy, "CREATE TABLE vals (id TEXT PRIMARY KEY, other BLOB)")
        write(legacy, "INSERT INTO vals VALUES ('x', x'00')")
        story.caught_up()
        story.keep("recreated")
    finally:
        assert story.daemon is not None
        story.daemon.stop()
    assert story.differences() == []


def test_columns_and_names_changed_while_syncd_was_stopped(
        tmp_path: Path, target_args: list[str], db: Any) -> None:
    """ADD COLUMN (then a write of it), RENAME COLUMN and RENAME TABLE while `syncd run`
    is down: the old capture triggers go on logging the old columns (SQLite renames
    the trigger's NEW.v, not the layout syncd stored), so after the restart each such
    table needs a new baseline, and the renamed table's old name is gone."""
    story, legacy = Story(tmp_path, target_args, db, fill), tmp_path / "metadata.db"
    story.start()
    assert story.daemon is not None
    story.daemon.stop(signal.SIGKILL)
    write(legacy, "ALTER TABLE kv ADD COLUMN extra TEXT DEFAULT 'dflt'")
    write(legacy, "UPDATE kv SET v = 'after add', extra = 'E' WHERE k = 'b'")
    write(legacy, "INSERT INTO kv (k, v) VALUES ('new', 1)")
    write(legacy, "ALTER TABLE vals RENAME COLUMN x TO y")
    write(legacy, "UPDATE vals SET y = 'after rename' WHERE id = 1")
    write(legacy, "ALTER TABLE seqd RENAME TO seqd2")
    write(legacy, "INSERT INTO seqd2 (v) VALUES ('renamed')")
    write(legacy, "DELETE FROM seqd2 WHERE id = 1")
    story.start()
    try:
        story.caught_up()
        story.keep("restarted")
        write(legacy, "UPDATE kv SET extra = 'F' WHERE k = 'a'")
        write(legacy, "UPDATE vals SET y = 'later' WHERE id = 2")
        write(legacy, "INSERT INTO seqd2 (v) VALUES ('later')")
        story.caught_up()
        story.keep("later")
    finally:
        story.daemon.stop()
    assert story.differences() == []
