"""Writing a new SQLite file from recorded rows: what `syncd restore` writes with.

The reading side (which rows, as of when) is syncd's (syncd.engine.restore); this
module only writes SQLite: the schema statements as they were stored, rows in large
`executemany` batches with their rowids, TEXT that is not UTF-8 through
`CAST(? AS TEXT)` of its bytes (the caller names the type such values come as), the
AUTOINCREMENT counters, and `PRAGMA integrity_check` at the end. The file is new, so
its journal and syncs are off while it is written (a crash leaves a file the caller
removes); it is synced once complete.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from legacy_adapters.base import RestoreConflict
from legacy_adapters.errors import SourceError
from legacy_adapters.sqlite_definitions import autoincrement
from legacy_adapters.sqlite_sql import quote_ident

ROWID_NAMES = ("rowid", "_rowid_", "oid")
BATCH = 20000
T = TypeVar("T")


class RestoreWriteError(SourceError):
    """The new SQLite file could not be written or fails its integrity check (exit 1)."""


def _unique_conflict(exc: sqlite3.Error) -> bool:
    """Whether the rows broke a UNIQUE constraint or index (a `RestoreConflict`: the
    record kept a row the legacy file no longer held then)."""
    return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)


def _writing(method: Callable[..., T]) -> Callable[..., T]:
    """SQLite's errors while writing the new file, as one error that says so."""
    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            if _unique_conflict(exc):
                raise RestoreConflict(f"restore failed writing the new file: {exc}") from None
            raise RestoreWriteError(f"restore failed writing the new file: "
                                    f"{type(exc).__name__}: {exc}") from None
    return wrapped


class RestoreFile:
    """A new SQLite file being written in one transaction."""

    def __init__(self, path: Path, raw_text: type) -> None:
        self.path, self.raw_text = path, raw_text
        try:
            self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode = OFF")  # new: nothing to roll back to
            self.conn.execute("PRAGMA synchronous = OFF")
            self.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise RestoreWriteError(f"restore cannot write {path}: {exc}") from None

    def execute(self, sql: str) -> None:
        """One schema statement (CREATE TABLE/INDEX/VIEW/TRIGGER) as it was stored."""
        try:
            self.conn.execute(sql)
        except sqlite3.Error as exc:
            said = f"restore failed writing the new file: {exc} (in {sql[:200]!r})"
            # a UNIQUE index made over the rows finds the conflict here
            raise (RestoreConflict if _unique_conflict(exc) else RestoreWriteError)(
                said) from None

    def table(self, name: str) -> TableWriter:
        """The writer of `name`'s rows (created with `execute` first)."""
        return TableWriter(self.conn, name, self.raw_text)

    @_writing
    def sequence(self, table: str, sql: str, recorded: int | None,
                 inserted: int | None) -> int | None:
        """Set `table`'s AUTOINCREMENT counter (see `set_sequence`)."""
        return set_sequence(self.conn, table, sql, recorded, inserted)

    def finish(self) -> str:
        """Commit, check (`PRAGMA integrity_check`: raises unless "ok") and sync the
        file; returns what the check said."""
        try:
            self.conn.execute("COMMIT")
            checked = [str(r[0]) for r in self.conn.execute("PRAGMA integrity_check")]
        except sqlite3.Error as exc:
            raise RestoreWriteError(f"restore failed writing the new file: {exc}") from None
        said = "; ".join(checked)
        if checked != ["ok"]:
            raise RestoreWriteError(f"the restored file fails PRAGMA integrity_check: "
                                    f"{said[:300]}")
        self.close()
        with open(self.path, "rb+") as f:
            os.fsync(f.fileno())
        return said

    def close(self) -> None:
        self.conn.close()


class TableWriter:
    """Inserts one table's rows: many at once where no value needs a CAST."""

    def __init__(self, conn: sqlite3.Connection, table: str, raw_text: type) -> None:
        self.conn, self.table, self.raw_text = conn, table, raw_text
        self.quoted = quote_ident(table)
        self.rows = 0
        self._sql: dict[tuple[tuple[str, ...], bool], tuple[str, bool, str]] = {}
        self._pending: list[Sequence[Any]] = []
        self._pending_sql = ""

    def _statement(self, cols: Sequence[str], with_rowid: bool) -> tuple[str, bool, str]:
        """(the INSERT up to VALUES, whether a rowid leads, the all-placeholders form)."""
        key = (tuple(cols), with_rowid)
        found = self._sql.get(key)
        if found is None:
            taken = {c.lower() for c in cols}
            rowid = next((r for r in ROWID_NAMES if r not in taken), None) if with_rowid \
                else None
            names = ([rowid] if rowid else []) + list(cols)
            head = (f"INSERT INTO {self.quoted} ({', '.join(map(quote_ident, names))}) "
                    "VALUES (")
            found = (head, rowid is not None, head + ", ".join("?" * len(names)) + ")")
            self._sql[key] = found
        return found

    @_writing
    def add(self, versions: Iterable[dict[str, Any]],
            columns: Sequence[str] | None = None) -> None:
        """Insert the row each version holds (`columns`: the columns of every one of
        them, when known; else each version's `cols`)."""
        raw = self.raw_text  # (not `self._pending` as a local: each flush replaces it)
        last_cols: Any = None
        last_bare = False
        head, rid = "", False
        for v in versions:
            vals, rowid = v["vals"], v["rowid"]
            cols = columns or v["cols"]
            if cols != last_cols or (rowid is None) is not last_bare:
                head, rid, full = self._statement(cols, rowid is not None)
                last_cols, last_bare = cols, rowid is None
                if full != self._pending_sql:
                    self.flush()
                    self._pending_sql = full
            if raw in set(map(type, vals)):  # TEXT that is not UTF-8: CAST its bytes
                row = (rowid, *vals) if rid else tuple(vals)
                marks = (["?"] if rid else []) + [self._mark(x) for x in vals]
                self.flush()
                self.conn.execute(head + ", ".join(marks) + ")", self._plain(row))
                self.rows += 1
                continue
            self._pending.append((rowid, *vals) if rid else vals)
            if len(self._pending) >= BATCH:
                self.flush()

    def _mark(self, value: Any) -> str:
        """The placeholder of `value`: TEXT given as bytes goes in through a CAST."""
        return "CAST(? AS TEXT)" if value.__class__ is self.raw_text else "?"

    def _plain(self, values: Iterable[Any]) -> tuple[Any, ...]:
        return tuple(bytes(v) if v.__class__ is self.raw_text else v for v in values)

    @_writing
    def flush(self) -> None:
        pending = self._pending
        if pending:
            self.conn.executemany(self._pending_sql, pending)
            self.rows += len(pending)
            self._pending = []

    @_writing
    def remove(self, snapshot: dict[str, Any]) -> None:
        """Take out the row a superseded snapshot put in (by rowid, else primary key)."""
        self.flush()
        if snapshot.get("rowid") is not None:
            self.conn.execute(f"DELETE FROM {self.quoted} WHERE rowid = ?",
                              (snapshot["rowid"],))
        else:
            pk = [r[1] for r in sorted((r for r in self.conn.execute(
                f"PRAGMA table_info({self.quoted})") if r[5]), key=lambda r: r[5])]
            where = " AND ".join(f"{quote_ident(c)} = {self._mark(k)}"
                                 for c, k in zip(pk, snapshot["key"], strict=True))
            self.conn.execute(f"DELETE FROM {self.quoted} WHERE {where}",
                              self._plain(snapshot["key"]))
        self.rows -= 1



def set_sequence(conn: sqlite3.Connection, table: str, sql: str, recorded: int | None,
                 inserted: int | None) -> int | None:
    """Set the AUTOINCREMENT counter to what it was: the counter recorded last (None: no
    row), or the highest rowid inserted since that record if higher (an INSERT raises
    the counter to its rowid; what else moves it, a script writing it or an insert that
    inserts nothing, is recorded by `syncd run` as it happens)."""
    if not autoincrement(sql):
        return None
    wanted = max((v for v in (recorded, inserted) if v is not None), default=None)
    got = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    if wanted is None:  # no counter row then (a reset): the one the rows' inserts made goes
        if got is not None:
            conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
        return None
    if got is None:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, wanted))
    elif got[0] != wanted:
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (wanted, table))
    return wanted


