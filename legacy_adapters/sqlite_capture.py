"""Trigger-based change capture for the legacy metadata.db (`triggers` mode).

syncd adds AFTER INSERT/UPDATE/DELETE triggers to each synced table and one change
log table, `_syncd_changes`; the legacy scripts are untouched (the technique of
Marmot and sqlite-history). Every committed change then leaves, inside the
writer's own transaction, one row naming the table, the operation, the row's key
and (format 3, for history) its values. syncd reads the log in order and prunes
what it has applied, in small batches.

This is the only code in syncd that writes to the legacy database, and it writes
only that: the log table, the triggers, and deletes of applied log rows, each in a
short transaction under the same 5 s busy timeout the legacy scripts use. It
never changes a PRAGMA. `uninstall` drops everything it added, leaving the
schema and data exactly as before.

Log layout: `seq INTEGER PRIMARY KEY` (no AUTOINCREMENT, which would create
sqlite_sequence behind the user's back), so pruning always keeps the last applied
row: seq never goes back, and seqs are contiguous (a consumer that finds the entry
after its checkpoint missing knows it has a gap). Row seq=0 holds the install id,
so a checkpoint taken against an earlier install of the log is recognised as stale.

Several consumers (`syncd run` into different targets) may follow one log. Each
records its saved position in the log's consumer registry (legacy_adapters/
sqlite_consumers.py), and pruning never passes the lowest position of a consumer
seen within the retention window; one gone longer finds a gap when it returns and
reconciles.

The triggers' SQL and row formats: sqlite_triggers.py (formats 1, 2: keys only) and
sqlite_values.py (format 3: values). An older install is upgraded in place by
`install`, in one transaction: no change unlogged, entries of every format read alike.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import quote

from legacy_adapters.base import Source, TableInfo
from legacy_adapters.changelog import CONSUMER_REFRESH_SECONDS, Change, Consumer
from legacy_adapters.errors import SourceError, write_error
from legacy_adapters.sqlite_consumers import (
    CONSUMERS_SQL,
    CONSUMERS_SQL_1,
    CONSUMERS_TABLE,
    consumers_upgrade,
    record,
)
from legacy_adapters.sqlite_sql import fetch_all, quote_ident, read_careful
from legacy_adapters.sqlite_triggers import (
    KEY_COLUMNS,
    LOG_TABLE,
    MAX_KEY_COLUMNS,
    TRIGGER_PREFIX,
    capturable,
    expand,
    trigger_names,
    trigger_sql,
)
from legacy_adapters.sqlite_values import (
    FORMAT,
    LAYOUTS_SQL,
    Layout,
    complete_any,
    expand_values,
    is_values_op,
    layout_row,
    values_trigger_sql,
)
from legacy_adapters.sqlite_values import trigger_names as values_trigger_names

__all__ = ["CONSUMERS_TABLE", "CONSUMER_REFRESH_SECONDS", "LOG_TABLE", "TRIGGER_PREFIX",
           "Capture", "capturable", "complete", "trigger_names", "trigger_sql"]

# A consumer that recorded itself this recently counts as running (capture uninstall
# refuses); it refreshes its row at least every CONSUMER_REFRESH_SECONDS while it runs.
CONSUMER_LIVE_SECONDS = 90.0


def complete(table: TableInfo, have: dict[str, str], version: int = FORMAT) -> bool:
    """Whether `have` holds every trigger of `table` in format `version` (the current
    one by default; format 3 whatever column layout it logs)."""
    if version == 3:
        return complete_any(table, have)
    return all(n in have for n in trigger_names(table, version).values())


def captured(table: TableInfo, have: dict[str, str]) -> bool:
    """Whether every change to `table` is logged, in any format."""
    return any(complete(table, have, v) for v in (1, 2, 3))


class Capture:
    """Installs, reads, prunes and removes the change log of one metadata.db (the
    SQLite `ChangeLog`)."""

    def __init__(self, path: Path, busy_timeout: float = 5.0,
                 source: Source | None = None, keys_only: Collection[str] = ()) -> None:
        """`source`: read the log through this source's connection and lock guard (the
        follower reads the log and the changed rows in one read transaction); by
        default through a read-only connection of its own. `keys_only`: tables whose
        triggers log only the key (format 2: left out of history), not the values."""
        self.path = Path(path)
        self.keys_only = frozenset(keys_only)
        self._layouts: dict[str, Layout] = {}
        self.busy_timeout = busy_timeout
        self._ro_uri = "file:" + quote(str(self.path.resolve())) + "?mode=ro"
        self._source = source
        self._reader: sqlite3.Connection | None = None

    # -- connections -------------------------------------------------------------------

    def _writer(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(self._ro_uri, uri=True, timeout=self.busy_timeout,
                                           isolation_level=None, check_same_thread=False)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None

    def _write(self, statements: list[str | tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements in one short IMMEDIATE transaction."""
        conn = self._writer()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in statements:
                    if isinstance(stmt, tuple):
                        conn.execute(*stmt)
                    else:
                        conn.execute(stmt)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise write_error(exc, f"--sqlite {self.path}: cannot change the capture schema",
                              self.busy_timeout) from None
        finally:
            conn.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._source is not None:
            return self._source.query(sql, params)
        # A logged key may be TEXT that is not UTF-8: read it as bytes rather than fail.
        reader = self.reader
        return read_careful(reader, lambda: fetch_all(reader, sql, params))[0]

    # -- state ---------------------------------------------------------------------------

    def _table_exists(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                (name,)))

    def log_exists(self) -> bool:
        """Whether the log table is installed."""
        return self._table_exists(LOG_TABLE)

    def install_id(self) -> str | None:
        """The id of this installation of the log (row seq=0); None if not installed."""
        if not self.log_exists():
            return None
        rows = self._query(f"SELECT tbl FROM {quote_ident(LOG_TABLE)} WHERE seq = 0")
        return rows[0][0] if rows else None

    def triggers(self) -> dict[str, str]:
        """Installed syncd triggers: name -> table."""
        rows = self._query("SELECT name, tbl_name FROM sqlite_master WHERE type='trigger' "
                           "AND name LIKE ? ESCAPE '\\'", (TRIGGER_PREFIX.replace("_", "\\_")
                                                          + "%",))
        return dict(rows)

    def missing(self, tables: list[TableInfo]) -> list[TableInfo]:
        """Tables whose triggers are absent or describe an old key layout (changes to
        them may have gone unlogged). Triggers of an older format still log every
        change: `install` replaces them, and they are not missing."""
        have = self.triggers()
        return [t for t in tables if capturable(t) and not captured(t, have)]

    def capturable(self, table: TableInfo) -> bool:
        """Whether triggers can log `table` (at most MAX_KEY_COLUMNS key columns)."""
        return capturable(table)

    def _rowid_key(self, table: TableInfo) -> bool:
        """Whether `table`'s primary key is its rowid (an INTEGER PRIMARY KEY column):
        a rowid table with a one-column key that has no index of its own."""
        if table.without_rowid or not table.rowid or len(table.primary_key) != 1:
            return False
        rows = self._query("SELECT 1 FROM pragma_index_list(?) WHERE origin = 'pk'",
                           (table.name,))
        return not rows

    # -- install / uninstall -------------------------------------------------------------

    def install(self, tables: list[TableInfo]) -> list[str]:
        """Create the log (if needed) and the triggers of `tables` that are missing.

        Returns the names of the tables whose triggers were (re)created: changes to
        them before this moment were not logged, so they need a reconcile. Two
        followers starting at once may both see the log missing; the one that loses
        the race finds it created ("already exists") and looks again.
        """
        try:
            return self._install(tables)
        except SourceError as exc:
            if "already exists" not in str(exc):
                raise
            return self._install(tables)

    def _value_columns(self) -> int:
        """How many value slots (`v0`..) the log has (format 3 adds them as needed)."""
        rows = self._query("SELECT count(*) FROM pragma_table_info(?) WHERE name GLOB "
                           "'v[0-9]*'", (LOG_TABLE,))
        return int(rows[0][0])

    def _wanted(self, table: TableInfo) -> tuple[Layout | None, list[str], set[str]]:
        """The layout (None: keys only), the CREATE TRIGGER statements and the trigger
        names `table` should have."""
        rowid_key = self._rowid_key(table)
        if table.name in self.keys_only:
            return None, trigger_sql(table, rowid_key), set(trigger_names(table).values())
        layout = Layout.of(table, rowid_key)
        return (layout, values_trigger_sql(table, layout),
                set(values_trigger_names(table, layout).values()))

    def _install(self, tables: list[TableInfo]) -> list[str]:
        exists = self.log_exists()
        width = before = self._value_columns() if exists else 0
        have = self.triggers()
        todo, changes = [], []
        for table in tables:
            if not capturable(table):
                continue
            layout, creates, wanted = self._wanted(table)
            if wanted <= set(have):
                continue
            todo.append(table)
            if layout is not None:
                changes.append(layout_row(layout))
                width = max(width, layout.width)
            # Triggers of an older format, key layout or column layout are replaced.
            changes.extend(f"DROP TRIGGER IF EXISTS {quote_ident(name)}"
                           for name, on in have.items() if on == table.name)
            changes.extend(creates)
        statements: list[str | tuple[str, tuple[Any, ...]]] = []
        if not exists:
            key_cols = ", ".join(KEY_COLUMNS)
            statements.append(
                f"CREATE TABLE {quote_ident(LOG_TABLE)} (seq INTEGER PRIMARY KEY, "
                f"tbl TEXT NOT NULL, op TEXT NOT NULL, rid INTEGER, {key_cols}, "
                f"at REAL DEFAULT (julianday('now')))")
            statements.append((f"INSERT INTO {quote_ident(LOG_TABLE)} (seq, tbl, op) "
                               "VALUES (0, ?, '#')", (uuid.uuid4().hex,)))
        if self._table_exists(CONSUMERS_TABLE):  # format 1: the registry moves into the log
            statements.extend(consumers_upgrade())
        statements.extend(f"ALTER TABLE {quote_ident(LOG_TABLE)} ADD COLUMN v{i}"
                          for i in range(before, width))
        statements.extend(changes)
        if statements:
            self._write(statements)
        # Triggers of an older format were replaced in the same transaction: their
        # tables lost no change. Only tables that had none need a reconcile.
        return [t.name for t in todo if not captured(t, have)]

    def uninstall(self) -> int:
        """Drop every syncd trigger and the log table; returns how many triggers."""
        names = list(self.triggers())
        statements: list[str | tuple[str, tuple[Any, ...]]] = [
            f"DROP TRIGGER IF EXISTS {quote_ident(n)}" for n in names]
        for name in (LOG_TABLE, CONSUMERS_TABLE):
            if self._table_exists(name):
                statements.append(f"DROP TABLE {quote_ident(name)}")
        if statements:
            self._write(statements)
        return len(names)

    # -- reading and pruning -------------------------------------------------------------

    def read(self, after: int, limit: int) -> list[Change]:
        """Logged changes with seq > `after`, oldest first (format 3's with the values)."""
        rows = self._query(f"SELECT * FROM {quote_ident(LOG_TABLE)} WHERE seq > ? "
                           "ORDER BY seq LIMIT ?", (max(after, 0), limit))
        out: list[Change] = []
        k, at = 4, 4 + MAX_KEY_COLUMNS  # seq, tbl, op, rid, k0..k7, at, v0..
        for r in rows:
            if is_values_op(r[2]):
                out.extend(expand_values(r[0], r[2], r[3], r[at + 1:], r[at],
                                         self.layout(r[2][1:])))
            else:
                out.extend(expand(r[0], r[1], r[2], r[3], tuple(r[k:at]), r[at]))
        return out

    def layout(self, layout_id: str) -> Layout:
        """A format-3 layout by id (stored in the log when its triggers were made)."""
        if layout_id not in self._layouts:
            for found, text in self._query(LAYOUTS_SQL):
                self._layouts.setdefault(found, Layout.from_json(text))
        if layout_id not in self._layouts:
            raise SourceError(f"--sqlite {self.path}: the change log names layout "
                              f"{layout_id!r}, which it does not hold")
        return self._layouts[layout_id]

    def last_seq(self) -> int:
        """The highest seq logged (0: none yet)."""
        rows = self._query(f"SELECT max(seq) FROM {quote_ident(LOG_TABLE)}")
        return int(rows[0][0] or 0)

    def pending(self, after: int) -> dict[str, tuple[int, float | None]]:
        """Per table: (changes not yet applied, julian day of the oldest)."""
        rows = self._query(f"SELECT tbl, count(*), min(at) FROM {quote_ident(LOG_TABLE)} "
                           "WHERE seq > ? GROUP BY tbl", (max(after, 0),))
        return {r[0]: (int(r[1]), r[2]) for r in rows}

    # -- consumers ---------------------------------------------------------------------

    def consumers(self) -> list[Consumer]:
        """Every consumer recorded in the log's registry, lowest position first."""
        rows = self._query(CONSUMERS_SQL) if self.log_exists() else []
        if self._table_exists(CONSUMERS_TABLE):  # not upgraded yet (format 1)
            rows += self._query(CONSUMERS_SQL_1)
        return sorted((Consumer(r[0], r[1] or "", int(r[2]), float(r[3]), bool(r[4]))
                       for r in rows), key=lambda c: c.seq)

    def live_consumers(self, exclude: str | None = None) -> list[Consumer]:
        """Consumers that say they run and recorded themselves recently."""
        return [c for c in self.consumers() if c.running and c.consumer != exclude
                and c.seen_seconds_ago < CONSUMER_LIVE_SECONDS]

    def record_consumer(self, consumer: str, label: str, seq: int,
                        running: bool = True) -> bool:
        """Record `consumer`'s saved position (one short write that never waits on a
        legacy writer: a busy database is left for the next call). True if written."""
        if not self.log_exists():
            return False
        conn = sqlite3.connect(self.path, timeout=0.05, isolation_level=None)
        try:
            return record(conn, consumer, label, seq, running)
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()

    def prune_bound(self, upto: int, retention_seconds: float) -> int:
        """How far the log may be pruned: `upto`, or less if another consumer seen within
        `retention_seconds` has not applied that far yet."""
        others = [c.seq for c in self.consumers() if c.seen_seconds_ago < retention_seconds]
        return min([upto, *others])

    def prune(self, upto: int, batch: int = 500, budget_seconds: float = 0.5) -> int:
        """Delete applied changes (seq < upto), a small transaction per batch.

        The row seq=upto stays, so seq never goes back; a busy database is left
        for the next round rather than waited on. Callers that share the log pass
        `prune_bound(...)` as `upto`.
        """
        deleted = 0
        deadline = time.monotonic() + budget_seconds
        log = quote_ident(LOG_TABLE)
        while time.monotonic() < deadline:
            rows = self._query(f"SELECT min(seq) FROM {log} WHERE seq > 0")
            low = rows[0][0]
            if low is None or low >= upto:
                break
            high = min(upto, low + batch)
            conn = sqlite3.connect(self.path, timeout=0.05, isolation_level=None)
            try:
                deleted += conn.execute(f"DELETE FROM {log} WHERE seq >= ? AND seq < ?",
                                        (low, high)).rowcount
            except sqlite3.OperationalError:
                break  # a legacy writer is busy: never make it wait; try next round
            finally:
                conn.close()
        return deleted
