"""The legacy SQLite source: schema reflection (SQLAlchemy) and chunked, short reads.

Promises to the legacy writers, who use a rollback journal and a 5 s busy timeout:
- the database is opened read-only (`mode=ro`); no PRAGMA that changes anything;
- every read is one statement over a bounded chunk in autocommit mode, so the
  SHARED lock lives only while that chunk is read; a progress handler interrupts
  any statement that holds it longer than `max_lock_seconds`, and the chunk is
  retried smaller;
- no connection holds a statement open between chunks.

Values keep their SQLite storage class. TEXT that is not valid UTF-8 makes the
fast path fail; that chunk is re-read with a text factory that keeps such values
as bytes (`RawText`).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from legacy_adapters import sqlite_integrity as integrity
from legacy_adapters.base import Chunk, Column, Definition, Schema, TableInfo
from legacy_adapters.errors import SourceBusy, SourceConfigError, SourceError
from legacy_adapters.sqlite_definitions import read_definitions, read_sequences
from legacy_adapters.sqlite_sql import (
    OWN_TABLES,
    PRIVATE_PREFIX,
    fetch_all,
    quote_ident,
    read_careful,
)

log = logging.getLogger(__name__)

ROWID_NAMES = ("rowid", "_rowid_", "oid")
FETCH_BATCH = 200
LOCKED_RETRIES = 8
SCHEMA_READS = 5  # reads of the schema while legacy scripts keep changing it
_FIRST = operator.itemgetter(0)
T = TypeVar("T")


class _LockGuard:
    """A progress handler that interrupts a statement holding its lock too long."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.deadline: float | None = None

    def arm(self) -> None:
        self.deadline = None

    def __call__(self) -> int:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.limit
            return 0
        return 1 if now > self.deadline else 0


class SQLiteSource(integrity.CheckedReads):
    """Read-only access to a legacy metadata.db: the SQLite `Source` (its integrity
    checks: `CheckedReads`)."""

    def __init__(self, path: Path, busy_timeout: float = 5.0,
                 max_lock_seconds: float = 0.2) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._uri = "file:" + quote(str(self.path.resolve())) + "?mode=ro"
        self._guard = _LockGuard(max_lock_seconds)
        self._conn: sqlite3.Connection | None = None
        self._sql: dict[tuple[str, bool], str] = {}
        self._order: dict[TableInfo, integrity.OrderKey | None] = {}
        # Told (with the log line's words) the moment a read starts waiting out a
        # writer's lock, not after the retries run out: `syncd run` says so in systemd's
        # STATUS and its own status while it waits.
        self.on_busy: Callable[[str], None] | None = None

    # -- connections -------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new read-only, autocommit connection (no implicit transactions)."""
        try:
            return sqlite3.connect(self._uri, uri=True, timeout=self.busy_timeout,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise SourceConfigError(
                f"--sqlite {self.path}: cannot open read-only ({exc})") from None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self.connect()
            self._conn.set_progress_handler(self._guard, 2000)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[None]:
        """Several reads under one SHARED lock, taken at the first read, dropped at the end.

        A follower reads a few small things each round (schema and data versions,
        the change log, the changed rows); taking the lock once per round instead of
        once per read gives a committing writer fewer chances to find it held. The
        reads also see one consistent state.
        """
        conn = self.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # -- schema ------------------------------------------------------------------

    def schema(self) -> Schema:
        """Tables (with columns, primary key, rowid addressing) and views, via SQLAlchemy;
        a writer holding the lock past the busy timeout is waited out like for every read.

        The reflection is several statements: a legacy script may drop, rename or alter
        a table in between (SQLAlchemy then raises NoSuchTableError, or reads a table
        half gone). A read during which the schema version moved is read again."""
        try:
            for _ in range(SCHEMA_READS):
                before = self.schema_version()
                try:
                    schema = self._retrying(self._read_schema)
                except sa.exc.NoSuchTableError:
                    continue
                if self.schema_version() == before:
                    return schema
        except sa.exc.DatabaseError as exc:
            raise SourceConfigError(
                f"--sqlite {self.path}: cannot read the schema ({exc.orig})") from None
        raise SourceError(f"--sqlite {self.path}: the schema changed during each of "
                          f"{SCHEMA_READS} reads of it (a legacy script altering tables in "
                          "a tight loop?)")

    def _read_schema(self) -> Schema:
        engine = sa.create_engine("sqlite://", creator=self.connect, poolclass=NullPool)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sa.exc.SAWarning)
                insp = sa.inspect(engine)
                schema = Schema(views=sorted(insp.get_view_names()))
                for name in sorted(insp.get_table_names()):
                    if name.startswith(PRIVATE_PREFIX):
                        # syncd's own change log (triggers mode) is not legacy data; a
                        # user's table with that prefix is reported, not mirrored.
                        if name not in OWN_TABLES:
                            schema.reserved.append(name)
                        continue
                    columns = tuple(
                        Column(c["name"], "" if isinstance(c["type"], sa.types.NullType)
                               else str(c["type"]))
                        for c in insp.get_columns(name)
                    )
                    pk = tuple(insp.get_pk_constraint(name).get("constrained_columns") or ())
                    options = insp.get_table_options(name)
                    without_rowid = options.get("sqlite_with_rowid") is False
                    rowid = None
                    if not without_rowid:
                        taken = {c.name.lower() for c in columns}
                        rowid = next((r for r in ROWID_NAMES if r not in taken), None)
                    schema.tables[name] = TableInfo(name, columns, pk, without_rowid, rowid)
        finally:
            engine.dispose()
        return schema

    def definitions(self) -> dict[str, Definition]:
        """Every legacy table and view with its SQL, indexes, triggers and AUTOINCREMENT
        counter (sqlite_definitions), read in one short read transaction."""
        with self.read_transaction():
            return read_definitions(self.query)

    def sequences(self) -> dict[str, int]:
        """Each table's AUTOINCREMENT counter now (sqlite_definitions.read_sequences)."""
        return read_sequences(self.query)

    # -- reads -------------------------------------------------------------------

    def _select(self, table: TableInfo, first: bool, bounded: bool) -> str:
        key = (table, first, bounded)
        sql = self._sql.get(key)
        if sql is None:
            cols = ", ".join(quote_ident(c.name) for c in table.columns)
            src = quote_ident(table.name)
            if table.rowid:
                order = quote_ident(table.rowid)
                lead = f"{order}, "
                holes = "?"
            elif table.primary_key:
                pk = [quote_ident(c) for c in table.primary_key]
                order = ", ".join(pk)
                lead = ""
                holes = ", ".join("?" * len(pk))
                if len(pk) > 1:
                    order, holes = f"({order})", f"({holes})"
            else:
                raise SourceError(f"table {table.name} has no primary key and its rowid is "
                                 "shadowed by columns named rowid, _rowid_ and oid")
            conds = ([] if first else [f"{order} > {holes}"]) + (
                [f"{order} <= {holes}"] if bounded else [])
            where = (" WHERE " + " AND ".join(conds)) if conds else ""
            sql = (f"SELECT {lead}{cols} FROM {src}{where} ORDER BY "
                   f"{order.strip('()')} LIMIT ?")
            self._sql[key] = sql
        return sql

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one read statement and fetch every row, retrying a busy database."""
        conn = self.conn
        return self._retrying(lambda: fetch_all(conn, sql, params))

    def _retrying(self, read: Callable[[], T]) -> T:
        """`read()`, tried again (with backoff) while a writer keeps the database locked
        past the busy timeout: a writer committing in a tight loop can take the lock
        back each time the busy handler looks. Every read of rows, the schema and the
        integrity checks around a pass go through here."""
        for attempt in range(LOCKED_RETRIES):
            self._guard.arm()
            try:
                return read()
            except (sqlite3.OperationalError, sa.exc.OperationalError) as exc:
                cause = str(getattr(exc, "orig", exc))
                if "locked" not in cause and "busy" not in cause:
                    raise
                if attempt == 0:  # said at once: a command that seems to hang says why
                    self._busy()
                if attempt + 1 < LOCKED_RETRIES:  # no sleep before giving up
                    time.sleep(min(2.0, 0.05 * 2 ** attempt))
        raise SourceBusy(f"--sqlite {self.path}: the database stayed locked by a writer "
                         f"through {LOCKED_RETRIES} tries of {self.busy_timeout:g} s each "
                         "(a legacy script's long transaction)")

    def _busy(self) -> None:
        message = (f"--sqlite {self.path}: another connection (a legacy script's "
                   "transaction) holds the database locked; waiting for it (up to "
                   f"{LOCKED_RETRIES} tries of {self.busy_timeout:g} s)")
        if self.on_busy is not None:
            self.on_busy(message)  # which says it (once, in the daemon's outage)
        else:
            log.warning("%s", message)

    def _read(self, sql: str, params: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], int]:
        return read_careful(self.conn, lambda: self._execute(sql, params))

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One read statement on this source's connection, for a helper sharing its read
        transaction (the change log): the lock guard is armed for it like for every
        other statement, and TEXT that is not UTF-8 comes back as bytes."""
        return self._read(sql, params)[0]

    @staticmethod
    def _key_params(table: TableInfo, position: Any) -> tuple[Any, ...]:
        return (position,) if table.rowid else tuple(position)

    def high_water(self, table: TableInfo) -> Any:
        """The last position in the table now (None if empty): a backfill's end mark.

        Bounding a pass by it gives every pass an end, however fast the legacy
        scripts append; rows added later belong to the next pass.
        """
        src = quote_ident(table.name)
        if table.rowid:
            rows = self._execute(f"SELECT max({quote_ident(table.rowid)}) FROM {src}", ())
            return rows[0][0]
        pk = [quote_ident(c) for c in table.primary_key]
        desc = ", ".join(f"{c} DESC" for c in pk)
        rows = self._execute(f"SELECT {', '.join(pk)} FROM {src} ORDER BY {desc} LIMIT 1", ())
        return tuple(rows[0]) if rows else None

    def scan(self, table: TableInfo, after: Any, limit: int, upto: Any = None) -> Chunk:
        """Up to `limit` rows after position `after` (None: from the start) and up to
        position `upto` (None: no bound), in key order.

        The position is the rowid (rowid tables) or the primary-key tuple (WITHOUT
        ROWID). A chunk that would hold the read lock too long is split.
        """
        first = after is None
        bounded = upto is not None
        sql = self._select(table, first, bounded)
        keys = (() if first else self._key_params(table, after)) + (
            self._key_params(table, upto) if bounded else ())
        while True:
            try:
                rows, raw = self._read(sql, (*keys, limit))
                break
            except sqlite3.OperationalError as exc:
                if "interrupt" not in str(exc) or limit <= 1:
                    raise SourceError(f"--sqlite {self.path}: reading {table.name} "
                                     f"failed ({exc})") from None
                limit = max(1, limit // 2)
            except sqlite3.DatabaseError as exc:
                if integrity.is_corruption(exc):
                    raise self._corrupt(table, str(exc)) from None
                raise
        positions = self._positions(table, rows)
        self._check_order(table, after, positions)
        if bounded and len(rows) < limit:
            self._check_end(table, positions[-1] if positions else after)
        if not rows:
            return Chunk([], after, raw)
        return Chunk(rows, positions[-1], raw)

    @staticmethod
    def _position(table: TableInfo, row: tuple[Any, ...]) -> Any:
        if table.rowid:
            return row[0]
        names = table.column_names
        return tuple(row[names.index(c)] for c in table.primary_key)

    @staticmethod
    def _positions(table: TableInfo, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each row's position (a chunk's rowids taken in C, without a call per row)."""
        if table.rowid:
            return list(map(_FIRST, rows))
        return [SQLiteSource._position(table, row) for row in rows]

    def fetch(self, table: TableInfo, rowids: Sequence[int] = (),
              keys: Sequence[tuple[Any, ...]] = ()) -> Chunk:
        """The current rows with these rowids and/or primary keys (absent ones are gone).

        Rows come in `scan`'s format; one short statement per batch of keys.
        """
        src = quote_ident(table.name)
        cols = ", ".join(quote_ident(c.name) for c in table.columns)
        lead = f"{quote_ident(table.rowid)}, " if table.rowid else ""
        rows: list[tuple[Any, ...]] = []
        raw_total = 0
        batches: list[tuple[str, tuple[Any, ...]]] = []
        if rowids:
            if not table.rowid:
                raise SourceError(f"table {table.name} has no rowid to fetch by")
            rid = quote_ident(table.rowid)
            for start in range(0, len(rowids), FETCH_BATCH):
                part = tuple(rowids[start:start + FETCH_BATCH])
                batches.append((f"SELECT {lead}{cols} FROM {src} WHERE {rid} IN "
                                f"({', '.join('?' * len(part))})", part))
        if keys:
            pk = [quote_ident(c) for c in table.primary_key]
            width = len(pk)
            for start in range(0, len(keys), FETCH_BATCH):
                part = keys[start:start + FETCH_BATCH]
                if width == 1:
                    where = f"{pk[0]} IN ({', '.join('?' * len(part))})"
                else:
                    one = "(" + ", ".join("?" * width) + ")"
                    where = (f"({', '.join(pk)}) IN (VALUES "
                             f"{', '.join(one for _ in part)})")
                params = tuple(v for key in part for v in key)
                batches.append((f"SELECT {lead}{cols} FROM {src} WHERE {where}", params))
        for sql, params in batches:
            got, raw = self._read(sql, params)
            rows.extend(got)
            raw_total += raw
        return Chunk(rows, None, raw_total)

    def data_version(self) -> int:
        """Changes whenever another connection commits to the database (cheap to poll)."""
        return int(self._execute("PRAGMA data_version", ())[0][0])

    def schema_version(self) -> int:
        """Changes whenever the schema changes (a table, column, trigger or index)."""
        return int(self._execute("PRAGMA schema_version", ())[0][0])

    def count(self, table: TableInfo) -> int | None:
        """Row count for progress; an estimate (or None) if counting would hold the lock."""
        src = quote_ident(table.name)
        try:
            return int(self._execute(f"SELECT count(*) FROM {src}", ())[0][0])
        except sqlite3.OperationalError:
            pass
        if table.rowid:
            rid = quote_ident(table.rowid)
            lo, hi = self._execute(f"SELECT min({rid}), max({rid}) FROM {src}", ())[0]
            if lo is not None:
                return int(hi - lo + 1)
        return None
