"""The copy of record against hostile but plausible legacy files, on real servers: a table
whose capture layout id happens to be all decimal digits, and `syncd run` following it
(and others: WITHOUT ROWID, composite and moved keys, reused rowids, quoted names,
every storage class) while `syncd restore --as-of` gives back copies taken meanwhile."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_capture import Capture
from legacy_adapters.sqlite_values import Layout
from syncd.projection.ids import derive_id
from syncd.sinks.history import HistoryStore, version
from syncd.sinks.julian import shown_jd
from tests.conftest import run_cli
from tests.daemon_support import Daemon, legacy_write, wait_for
from tests.restore_support import backup, dump, moment

# `tp`'s format-3 layout id is "7838441285": all decimal digits, which once read as
# format 2's "U<key width>" and stopped `syncd run` on every start (IndexError).
SOURCE = "testhost"  # tests/conftest.py target_args
DIGITS = "CREATE TABLE tp (name TEXT PRIMARY KEY, v)"
HOSTILE = """
CREATE TABLE wr (a TEXT, b INTEGER, v, PRIMARY KEY (a, b)) WITHOUT ROWID;
CREATE TABLE comp (a TEXT, b INTEGER, v, PRIMARY KEY (a, b));
CREATE TABLE norow (v);
CREATE TABLE "we ird ""t" ("col ""q" TEXT, "ünï" INTEGER PRIMARY KEY, [x y]);
CREATE TABLE mixed (id INTEGER PRIMARY KEY, x);
CREATE TABLE old (id INTEGER PRIMARY KEY, v);
CREATE TABLE recre (id INTEGER PRIMARY KEY, v);
CREATE VIEW vre AS SELECT * FROM recre;
"""


def test_a_layout_id_of_decimal_digits_is_read_as_format_3(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    conn = sqlite3.connect(path)
    conn.execute(DIGITS)
    conn.execute("INSERT INTO tp VALUES ('a', 1)")
    conn.commit()
    conn.close()
    source = SQLiteSource(path)
    try:
        table = source.schema().tables["tp"]
    finally:
        source.close()
    assert Layout.of(table, rowid_key=False).id.isdigit()  # the case this test is about
    capture = Capture(path)
    try:
        capture.install([table])
        legacy_write(path, "UPDATE tp SET name = 'c', v = 2 WHERE name = 'a'")
        legacy_write(path, "INSERT INTO tp VALUES ('b', 3)")
        got = [(c.op, c.key[0], c.columns and dict(zip(c.columns, c.values, strict=True)))
               for c in capture.read(0, 100)]
    finally:
        capture.close()
    assert got == [("u", "c", {"name": "c", "v": 2}), ("d", "a", None),
                   ("i", "b", {"name": "b", "v": 3})]


def test_restore_as_of_moments_while_syncd_run_follows_hostile_tables(
        tmp_path: Path, target_args: list[str], db: Any) -> None:
    legacy = tmp_path / "metadata.db"
    conn = sqlite3.connect(legacy)
    conn.executescript(DIGITS + ";" + HOSTILE)
    conn.executemany("INSERT INTO wr VALUES (?,?,?)", [("x", 1, 1), ("x", 2, 2.5), ("y", 1, b"z")])
    conn.executemany("INSERT INTO comp VALUES (?,?,?)", [("x", 1, 1), ("x", 2, 2.5),
                                                         ("y", 1, b"z")])
    conn.executemany("INSERT INTO norow VALUES (?)", [(i,) for i in range(5)])
    conn.executemany('INSERT INTO "we ird ""t" VALUES (?,?,?)', [("a", 1, 1), ("b", 2, None)])
    conn.executemany("INSERT INTO mixed VALUES (?,?)", [(1, 1), (2, 1.5), (3, "t"), (4, b"b"),
                                                        (5, None)])
    conn.execute("INSERT INTO mixed VALUES (6, CAST(x'ff00fe' AS TEXT))")
    conn.executemany("INSERT INTO tp VALUES (?,?)", [("a", 1), ("b", 2)])
    conn.executemany("INSERT INTO old VALUES (?,?)", [(1, 1), (2, 2)])
    conn.executemany("INSERT INTO recre VALUES (?,?)", [(1, 1), (2, 2)])
    conn.commit()
    conn.close()
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    copies: dict[str, tuple[str, Path]] = {}

    def keep(name: str) -> None:
        at = moment()
        backup(legacy, tmp_path / f"{name}.db")
        copies[name] = (at, tmp_path / f"{name}.db")

    def write(sql: str, params: tuple[Any, ...] = ()) -> None:
        legacy_write(legacy, sql, params)

    def caught_up() -> None:
        write("INSERT INTO mixed (x) VALUES ('mark')")
        mark = sqlite3.connect(legacy).execute("SELECT max(id) FROM mixed").fetchone()[0]

        def recorded() -> Any:
            if daemon.proc.poll() is not None:
                pytest.fail(f"syncd run exited: {daemon.proc.communicate()[1][-2000:]}")
            return db["_syncd_history"].find_one({"table": "mixed", "key": [mark],
                                                  "op": "insert"})
        wait_for(recorded, what="syncd run to catch up")

    keep("migrated")
    daemon = Daemon(tmp_path, legacy, target_args)
    try:
        daemon.wait_ready(db)
        write("UPDATE wr SET v = 'new' WHERE a = 'x' AND b = 1")
        write("UPDATE wr SET a = 'z' WHERE a = 'y'")
        write("UPDATE comp SET b = 9 WHERE a = 'x' AND b = 2")
        write("DELETE FROM norow WHERE v = 4")
        write("INSERT INTO norow VALUES ('reused')")  # takes the deleted row's rowid
        write("DELETE FROM norow WHERE v = 1")
        write("UPDATE norow SET rowid = 100 WHERE v = 2")
        write('UPDATE "we ird ""t" SET "col ""q" = ? WHERE "ünï" = 2', ("ü" * 100000,))
        write('UPDATE "we ird ""t" SET "ünï" = 7 WHERE "ünï" = 1')
        write("UPDATE mixed SET x = CAST(x'80' AS TEXT) WHERE id = 1")
        write("UPDATE mixed SET x = 9223372036854775807 WHERE id = 5")
        write("UPDATE tp SET name = 'c' WHERE name = 'a'")
        write("INSERT OR REPLACE INTO tp VALUES ('b', 22)")
        caught_up()
        keep("changed")
        write("ALTER TABLE old RENAME TO renamed")
        write("INSERT INTO renamed VALUES (3, 3)")
        write("DROP TABLE recre")  # the view vre now names a table that is gone
        caught_up()
        keep("dropped")
        write("CREATE TABLE recre (id INTEGER PRIMARY KEY, w TEXT, v)")
        write("INSERT INTO recre VALUES (5, 'x', 5)")
        caught_up()
        keep("recreated")
        live = tmp_path / "while-following.db"
        result = run_cli("restore", "--to", live, *target_args)
        assert result.code == 0, result
        assert dump(live) == dump(legacy)
    finally:
        daemon.stop()
    for name, (at, copy) in copies.items():
        out = tmp_path / f"restored-{name}.db"
        result = run_cli("restore", "--to", out, "--as-of", at, *target_args)
        assert result.code == 0, (name, result)
        assert dump(out) == dump(copy), name


def test_rows_after_a_text_that_is_not_utf8_are_restored(
        tmp_path: Path, target_args: list[str]) -> None:
    """A value that needs its own INSERT (TEXT that is not UTF-8) in the middle of a
    batch: the rows after it in the batch are restored too."""
    legacy = tmp_path / "metadata.db"
    conn = sqlite3.connect(legacy)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"n{i}") for i in range(1, 6)])
    conn.execute("UPDATE notes SET body = CAST(x'636166e9' AS TEXT) WHERE id = 2")
    conn.execute("CREATE TABLE pairs (a, b)")  # a second statement shape, then the first
    conn.executemany("INSERT INTO pairs VALUES (?, ?)", [(1, "x"), (2, "y")])
    conn.commit()
    conn.close()
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    out = tmp_path / "restored.db"
    result = run_cli("restore", "--to", out, *target_args)
    assert result.code == 0, result
    assert dump(out) == dump(legacy)


def _sqlite_julianday(moment: datetime) -> float:
    """What the capture triggers' julianday('now') gives at `moment` (a whole ms)."""
    conn = sqlite3.connect(":memory:")
    try:
        return conn.execute("SELECT julianday(?)", (moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],)
                            ).fetchone()[0]
    finally:
        conn.close()


def test_restore_as_of_exactly_a_versions_time_includes_it(
        tmp_path: Path, target_args: list[str], db: Any) -> None:
    """A version stamped by SQLite's julianday('now'), restored `--as-of` its own time as
    shown: the version is in (the moment is one the float `2440587.5 + ts / 86400`
    put one ulp before the stamp)."""
    legacy = tmp_path / "metadata.db"
    conn = sqlite3.connect(legacy)
    conn.execute("CREATE TABLE runs (run_id INTEGER PRIMARY KEY, status TEXT)")
    conn.execute("INSERT INTO runs VALUES (1, 'running')")
    conn.commit()
    conn.close()
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    while 2440587.5 + moment.timestamp() / 86400 >= _sqlite_julianday(moment):
        moment += timedelta(milliseconds=1)
    jd = _sqlite_julianday(moment)
    HistoryStore(db, SOURCE).record([version(
        SOURCE, "runs", derive_id(SOURCE, "runs", (1,)), (1,), 1, "update", jd, 1, 1,
        {"run_id": 1, "status": "done"})])
    shown = shown_jd(jd)
    assert datetime.fromisoformat(shown) == moment
    out = tmp_path / "restored.db"
    result = run_cli("restore", "--to", out, "--as-of", shown, *target_args)
    assert result.code == 0, result
    assert sqlite3.connect(out).execute("SELECT status FROM runs").fetchall() == [("done",)]


def test_a_moment_outside_the_years_utc_holds_is_refused_in_one_line(
        tmp_path: Path, target_args: list[str]) -> None:
    legacy = tmp_path / "metadata.db"
    sqlite3.connect(legacy).execute("CREATE TABLE runs (run_id INTEGER PRIMARY KEY)").close()
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    for far in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+01:00"):
        result = run_cli("restore", "--to", tmp_path / "restored.db", "--as-of", far,
                         *target_args)
        assert result.code == 2, result
        assert result.err.strip().splitlines() == [
            f"syncd: error: --as-of: as of {far!r}: out of range (in UTC it falls outside "
            "the years 1 to 9999)"]
        assert not (tmp_path / "restored.db").exists()


@pytest.mark.parametrize("table, schema", [
    ("uq", "CREATE TABLE uq (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, v);"),
    # a UNIQUE index, not column: the restore adds indexes after the rows, so the
    # conflict shows there, and is explained the same way
    ("ux", "CREATE TABLE ux (id INTEGER PRIMARY KEY, name TEXT, v);"
           "CREATE UNIQUE INDEX ux_name ON ux(name);"),
])
def test_a_row_replaced_through_another_unique_column_is_explained(
        tmp_path: Path, target_args: list[str], db: Any, table: str, schema: str) -> None:
    """`INSERT OR REPLACE` that removes a row through a UNIQUE column (or index) other
    than the key fires no delete trigger: until a reconcile records the removal, history
    holds two rows with one unique value. Restore says so and what to do, in one error
    (exit 1), and leaves no file; the moment before that statement still restores."""
    legacy = tmp_path / "metadata.db"
    conn = sqlite3.connect(legacy)
    conn.executescript(schema)
    conn.executemany(f"INSERT INTO {table} (name, v) VALUES (?, ?)", [("a", 1), ("b", 2)])
    conn.commit()
    conn.close()
    assert run_cli("migrate", "--sqlite", legacy, *target_args).code == 0
    before = moment()
    time.sleep(0.01)
    # What `syncd run` records for `INSERT OR REPLACE INTO t (name, v) VALUES ('a', 11)`:
    # the insert of row 3, and nothing for row 1 (its delete comes with a reconcile).
    jd = _sqlite_julianday(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1))
    HistoryStore(db, SOURCE).record([version(
        SOURCE, table, derive_id(SOURCE, table, (3,)), (3,), 3, "insert", jd, 1, 0,
        {"id": 3, "name": "a", "v": 11})])
    out = tmp_path / "restored.db"
    result = run_cli("restore", "--to", out, *target_args)
    assert result.code == 1, result
    said = result.err.strip().splitlines()[-1]
    assert "UNIQUE constraint failed" in said and f"syncd reconcile {table}" in said, said
    assert not out.exists()
    result = run_cli("restore", "--to", out, "--as-of", before, *target_args)
    assert result.code == 0, result
    assert sqlite3.connect(out).execute(f"SELECT id, name, v FROM {table} ORDER BY id"
                                        ).fetchall() == [(1, "a", 1), (2, "b", 2)]
