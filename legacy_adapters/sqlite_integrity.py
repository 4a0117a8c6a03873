"""Telling a corrupt legacy database from a complete read of it.

A damaged b-tree page does not always make SQLite fail: a leaf cell whose rowid
became huge ends a bounded range scan early (`rowid <= upto` is false there), so
half a table reads as the whole of it. Three checks keep such a read from ever
passing as complete:

- **key order, always** (every chunk, also the daemon's): positions must strictly
  increase within a chunk and past the position it started after. When a bounded
  read looks finished, the next two positions after it are read *without* the
  bound; a corrupt cell shows there as a key out of order.
- **a count, after a whole-table read**: fewer rows read than `count(*)` up to the
  end mark means rows were skipped, or were inserted below the read position
  meanwhile; `PRAGMA quick_check(TABLE)` decides which.
- **`PRAGMA quick_check(TABLE)` before migrate and verify read a table**, but only
  while the database file is at most `QUICK_CHECK_MAX_BYTES`. The check is one
  statement under one SHARED lock and SQLite (before 3.43) cannot interrupt it
  midway, so on a large file it would hold legacy writers' commits for seconds
  (past their 5 s busy timeout). Above the limit it is skipped (logged) and only
  the read checks apply; the daemon's rounds never run it, except to word the
  error once an inconsistency has been found.
"""

from __future__ import annotations

import itertools
import logging
import operator
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from legacy_adapters.base import TableInfo
from legacy_adapters.errors import SourceError
from legacy_adapters.sqlite_sql import quote_ident
from legacy_adapters.values import RawText

log = logging.getLogger(__name__)
T = TypeVar("T")

QUICK_CHECK_MAX_BYTES = 64 * 1024 * 1024  # about 0.1-0.3 s of quick_check
CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


class CorruptSource(SourceError):
    """The legacy database is damaged: reading it cannot give every row (exit 1)."""


def corrupt_error(path: Path, table: str, detail: str) -> CorruptSource:
    """One line naming the table, what was seen and the way to check and recover."""
    return CorruptSource(
        f"--sqlite {path}: table {table}: the legacy database is corrupt ({detail}); "
        "nothing was removed from the target. Check it with "
        f"`sqlite3 {path} 'PRAGMA integrity_check'` and recover a copy with "
        f"`sqlite3 {path} .recover | sqlite3 recovered.db`")


def is_corruption(exc: BaseException) -> bool:
    """Whether an sqlite3 error says the file itself is damaged."""
    return isinstance(exc, sqlite3.DatabaseError) and (
        getattr(exc, "sqlite_errorcode", None) in CORRUPT_CODES
        or "malformed" in str(exc) or "not a database" in str(exc))


def _fold(collation: str) -> Callable[[str], str] | None:
    """How a declared collation orders text (None: one syncd cannot mimic)."""
    name = collation.upper()
    if name == "BINARY":
        return lambda s: s
    if name == "NOCASE":  # SQLite folds ASCII letters only
        return lambda s: s.translate(_ASCII_LOWER)
    if name == "RTRIM":
        return lambda s: s.rstrip(" ")
    return None


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _value_key(value: Any, fold: Callable[[str], str]) -> tuple[Any, ...]:
    """SQLite's order of one value: NULL < numbers < TEXT < BLOB."""
    if value is None:
        return (0,)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, RawText):  # TEXT that is not UTF-8: bytes order, as BINARY
        return (2, bytes(value))
    if isinstance(value, str):
        # UTF-8 byte order is code point order: compare the str itself.
        return (2, fold(value))
    return (3, bytes(value))


OrderKey = Callable[[Any], Any]


def order_key(conn: sqlite3.Connection, table: TableInfo) -> OrderKey | None:
    """A function giving each position a Python value in the table's key order.

    Rowids are integers. Primary keys order by their columns' collations, read from
    the key's index; a collation syncd cannot mimic turns the check off (None).
    """
    if table.rowid:
        return same
    folds: list[Callable[[str], str]] = []
    cur = conn.execute("SELECT name FROM pragma_index_list(?) WHERE origin = 'pk'",
                       (table.name,))
    index = cur.fetchone()
    cur.close()
    colls: dict[str, str] = {}
    if index is not None:
        cur = conn.execute("SELECT name, coll FROM pragma_index_xinfo(?) WHERE key = 1",
                           (index[0],))
        colls = {name: coll or "BINARY" for name, coll in cur.fetchall() if name}
        cur.close()
    for column in table.primary_key:
        fold = _fold(colls.get(column, "BINARY"))
        if fold is None:
            return None
        folds.append(fold)
    return lambda position: tuple(_value_key(v, f) for v, f in zip(position, folds))


def same(position: Any) -> Any:
    """The order key of a rowid: the rowid itself."""
    return position


def in_order(keys: Sequence[Any], prev: Any) -> bool:
    """Whether `keys` strictly increase, the first past `prev` (None: no bound).

    The check every chunk pays, so it runs in C (`map` over `operator.gt`)."""
    if not keys:
        return True
    if prev is not None and not keys[0] > prev:
        return False
    return all(map(operator.gt, itertools.islice(keys, 1, None), keys))


def first_disorder(key: OrderKey, after: Any, positions: Sequence[Any]) -> str | None:
    """A description of the first position not past the one before it (None: all in order)."""
    prev = None if after is None else key(after)
    if in_order(positions if key is same else list(map(key, positions)), prev):
        return None
    shown = after
    for position in positions:
        now = key(position)
        if prev is not None and not now > prev:
            return f"key {position!r} read after {shown!r}: rows out of key order"
        prev, shown = now, position
    return None


def quick_check(conn: sqlite3.Connection, path: Path, table: TableInfo) -> str | None:
    """`PRAGMA quick_check(TABLE)`'s first complaint (None: ok or skipped as too large).

    Skipped, with a log line, when the file is over `QUICK_CHECK_MAX_BYTES`: see the
    module docstring for why. The caller's progress handler must let it run.
    """
    size = path.stat().st_size if path.exists() else 0
    if size > QUICK_CHECK_MAX_BYTES:
        log.info("skipping PRAGMA quick_check(%s): %s is %d MiB, so it would hold the "
                 "read lock too long; the key-order and count checks still apply",
                 table.name, path, size >> 20)
        return None
    cur = conn.execute(f"PRAGMA quick_check({quote_ident(table.name)})")
    try:
        lines = [line for (text,) in cur.fetchall() for line in str(text).splitlines()]
    finally:
        cur.close()
    problems = [line for line in lines if line != "ok" and not line.startswith("***")]
    return problems[0] if problems else None


class CheckedReads:
    """The integrity checks of `SQLiteSource` (mixed in; uses its connection and reads)."""

    path: Path
    conn: sqlite3.Connection
    _guard: Any
    _order: dict[TableInfo, OrderKey | None]

    def _select(self, table: TableInfo, first: bool, bounded: bool) -> str: ...

    def _read(self, sql: str, params: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], int]: ...

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...

    def _retrying(self, read: Callable[[], T]) -> T: ...

    @staticmethod
    def _key_params(table: TableInfo, position: Any) -> tuple[Any, ...]: ...

    @staticmethod
    def _position(table: TableInfo, row: tuple[Any, ...]) -> Any: ...

    @staticmethod
    def _positions(table: TableInfo, rows: Sequence[tuple[Any, ...]]) -> list[Any]: ...

    def _corrupt(self, table: TableInfo, detail: str) -> CorruptSource:
        """The error for an inconsistent read, worded by quick_check when it can run."""
        try:
            found = self._quick_check(table)
        except sqlite3.Error as exc:
            found = None
            log.info("PRAGMA quick_check(%s) failed: %s", table.name, exc)
        if found:
            detail = f"{detail}; quick_check: {found}"
        return corrupt_error(self.path, table.name, detail)

    def _quick_check(self, table: TableInfo) -> str | None:
        """quick_check of one table, the lock guard relaxed (it cannot stop it midway)."""
        limit = self._guard.limit
        self._guard.limit = 3600.0
        try:
            return self._retrying(lambda: quick_check(self.conn, self.path, table))
        finally:
            self._guard.limit = limit

    def _check_order(self, table: TableInfo, after: Any, positions: list[Any]) -> None:
        """Positions must strictly increase past `after`: else a page is corrupt."""
        if table not in self._order:
            self._order[table] = self._retrying(lambda: order_key(self.conn, table))
        key = self._order[table]
        if key is None:
            return
        wrong = first_disorder(key, after, positions)
        if wrong is not None:
            raise self._corrupt(table, wrong)

    def _check_end(self, table: TableInfo, last: Any) -> None:
        """A bounded read looks finished: the next keys past `last`, read without the
        bound, must still be in order (a corrupt huge key ends a bounded scan early)."""
        sql = self._select(table, last is None, False)
        keys = () if last is None else self._key_params(table, last)
        rows, _ = self._read(sql, (*keys, 2))
        self._check_order(table, last, self._positions(table, rows))

    def check_intact(self, table: TableInfo) -> None:
        """Raise `CorruptSource` if `PRAGMA quick_check(TABLE)` finds damage.

        For migrate and verify, which read every row anyway; skipped on large files
        (it would hold the read lock too long), never run by the daemon's rounds.
        """
        try:
            found = self._quick_check(table)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            found = str(exc)
        if found:
            raise corrupt_error(self.path, table.name, f"quick_check: {found}")

    def confirm_read(self, table: TableInfo, rows: int, upto: Any) -> None:
        """After a whole-table read up to `upto` that returned `rows` rows: fewer than the
        table holds up to there is an error unless quick_check finds the file sound
        (rows inserted below the read position meanwhile)."""
        if upto is None:
            return
        src = quote_ident(table.name)
        if table.rowid:
            where, params = f"{quote_ident(table.rowid)} <= ?", (upto,)
        else:
            pk = ", ".join(quote_ident(c) for c in table.primary_key)
            holes = ", ".join("?" * len(table.primary_key))
            where = f"({pk}) <= ({holes})" if len(table.primary_key) > 1 else f"{pk} <= ?"
            params = tuple(upto)
        try:
            held = int(self._execute(f"SELECT count(*) FROM {src} WHERE {where}", params)[0][0])
        except sqlite3.OperationalError:
            return  # counting would hold the read lock too long: the order checks stay
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                raise corrupt_error(self.path, table.name, str(exc)) from None
            raise
        if rows >= held:
            return
        detail = f"read {rows} of its {held} rows"
        if self.path.stat().st_size > QUICK_CHECK_MAX_BYTES:
            raise CorruptSource(
                f"--sqlite {self.path}: table {table.name}: {detail}: the legacy database "
                "may be corrupt, or rows were inserted behind the read meanwhile; nothing "
                "was removed from the target. Run again; check it with "
                f"`sqlite3 {self.path} 'PRAGMA integrity_check'`")
        found = self._quick_check(table)
        if found:
            raise corrupt_error(self.path, table.name, f"{detail}; quick_check: {found}")
        log.info("%s: read %d of %d rows; quick_check finds the file sound, so rows were "
                 "inserted below the read position meanwhile", table.name, rows, held)
