"""The copy of record against hostile but plausible legacy files, on real servers."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import run_cli

# `tp`'s format-3 layout id is "7838441285": all decimal digits, which once read as
# format 2's "U<key width>" and stopped `syncd run` on every start (IndexError).
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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dump(path: Path) -> dict[str, Any]:
    """Schema (syncd's objects left out), every row with its rowid and each value's
    bytes and typeof(), the AUTOINCREMENT counters; any name, however quoted."""
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    try:
        schema = sorted((t.decode(), n.decode(), (s or b"").decode()) for t, n, s in conn.execute(
            "SELECT type, name, sql FROM sqlite_master") if not n.startswith(b"_syncd_"))
        rows = {}
        for _, name, _ in (s for s in schema if s[0] == "table"):
            if name.startswith("sqlite_"):
                continue
            cols = [r[1].decode() for r in conn.execute(f"PRAGMA table_info({_quote(name)})")]
            typed = ", ".join(f"{_quote(c)}, typeof({_quote(c)})" for c in cols)
            try:
                got = conn.execute(f"SELECT _rowid_, {typed} FROM {_quote(name)}").fetchall()
            except sqlite3.OperationalError:  # WITHOUT ROWID
                got = conn.execute(f"SELECT {typed} FROM {_quote(name)}").fetchall()
            rows[name] = sorted(got, key=repr)
        seq = sorted(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall()) \
            if any(n == "sqlite_sequence" for _, n, _ in schema) else []
        return {"schema": schema, "rows": rows, "sequence": seq}
    finally:
        conn.close()


def _backup(path: Path, to: Path) -> None:
    src, dst = sqlite3.connect(path), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _moment() -> str:
    time.sleep(0.05)
    at = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    return at


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
