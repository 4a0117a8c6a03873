"""Trigger-based change capture for the legacy metadata.db (`triggers` mode).

syncd adds AFTER INSERT/UPDATE/DELETE triggers to each synced table and one change
log table, `_syncd_changes`; the legacy scripts are untouched (the technique of
Marmot and sqlite-history). Every committed change then leaves, inside the
writer's own transaction, one small row naming the table, the operation and the
row's rowid and primary key. syncd reads the log in order and prunes what it has
applied, in small batches.

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
records its saved position in `_syncd_consumers`, and pruning never passes the
lowest position of a consumer seen within the retention window; one gone longer
finds a gap when it returns and reconciles.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from legacy_adapters.base import Source, TableInfo
from legacy_adapters.changelog import Change, Consumer
from legacy_adapters.errors import SourceError
from legacy_adapters.sqlite import PRIVATE_PREFIX
from legacy_adapters.sqlite_sql import fetch_all, quote_ident, read_careful

LOG_TABLE = "_syncd_changes"
CONSUMERS_TABLE = "_syncd_consumers"
# A consumer that recorded itself this recently counts as running (capture uninstall
# refuses); it refreshes its row at least every CONSUMER_REFRESH_SECONDS while it runs.
CONSUMER_LIVE_SECONDS = 90.0
CONSUMER_REFRESH_SECONDS = 30.0
MAX_KEY_COLUMNS = 8
TRIGGER_PREFIX = PRIVATE_PREFIX + "trg_"
KEY_COLUMNS = tuple(f"k{i}" for i in range(MAX_KEY_COLUMNS))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def trigger_names(table: TableInfo) -> dict[str, str]:
    """The trigger names for `table`; they encode its key layout, so a changed key
    (a table dropped and recreated differently) shows up as missing triggers."""
    shape = "\x1f".join([table.name, table.rowid or "", *table.primary_key])
    tag = hashlib.sha1(shape.encode()).hexdigest()[:16]
    return {op: f"{TRIGGER_PREFIX}{tag}_{op}" for op in ("i", "u", "d")}


def capturable(table: TableInfo) -> bool:
    return table.addressable and len(table.primary_key) <= MAX_KEY_COLUMNS


def trigger_sql(table: TableInfo) -> list[str]:
    """CREATE TRIGGER statements for `table`."""
    names = trigger_names(table)
    src, tbl = quote_ident(table.name), _literal(table.name)
    keys = [quote_ident(c) for c in table.primary_key]
    cols = ", ".join(["tbl", "op", "rid", *KEY_COLUMNS[:len(keys)]])
    rid = quote_ident(table.rowid) if table.rowid else None

    def values(row: str, op: str) -> str:
        parts = [tbl, _literal(op), f"{row}.{rid}" if rid else "NULL"]
        parts += [f"{row}.{k}" for k in keys]
        return ", ".join(parts)

    moved = [f"OLD.{k} IS NOT NEW.{k}" for k in keys] + (
        [f"OLD.{rid} IS NOT NEW.{rid}"] if rid else [])
    log = quote_ident(LOG_TABLE)
    return [
        f"CREATE TRIGGER {quote_ident(names['i'])} AFTER INSERT ON {src} BEGIN "
        f"INSERT INTO {log} ({cols}) VALUES ({values('NEW', 'i')}); END",
        f"CREATE TRIGGER {quote_ident(names['u'])} AFTER UPDATE ON {src} BEGIN "
        f"INSERT INTO {log} ({cols}) VALUES ({values('NEW', 'u')}); "
        f"INSERT INTO {log} ({cols}) SELECT {values('OLD', 'd')} "
        f"WHERE {' OR '.join(moved)}; END",
        f"CREATE TRIGGER {quote_ident(names['d'])} AFTER DELETE ON {src} BEGIN "
        f"INSERT INTO {log} ({cols}) VALUES ({values('OLD', 'd')}); END",
    ]


class Capture:
    """Installs, reads, prunes and removes the change log of one metadata.db (the
    SQLite `ChangeLog`)."""

    def __init__(self, path: Path, busy_timeout: float = 5.0,
                 source: Source | None = None) -> None:
        """`source`: read the log through this source's connection and lock guard (the
        follower reads the log and the changed rows in one read transaction); by
        default through a read-only connection of its own."""
        self.path = Path(path)
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
            raise SourceError(f"--sqlite {self.path}: cannot change the capture schema "
                             f"({exc})") from None
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
        """Tables whose triggers are absent or describe an old key layout."""
        have = self.triggers()
        return [t for t in tables if capturable(t)
                and not all(n in have for n in trigger_names(t).values())]

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

    def _install(self, tables: list[TableInfo]) -> list[str]:
        statements: list[str | tuple[str, tuple[Any, ...]]] = []
        if not self._table_exists(CONSUMERS_TABLE):
            statements.append(
                f"CREATE TABLE {quote_ident(CONSUMERS_TABLE)} (consumer TEXT PRIMARY KEY, "
                "label TEXT, seq INTEGER NOT NULL, seen REAL NOT NULL, "
                "running INTEGER NOT NULL DEFAULT 1)")
        if not self.log_exists():
            key_cols = ", ".join(KEY_COLUMNS)
            statements.append(
                f"CREATE TABLE {quote_ident(LOG_TABLE)} (seq INTEGER PRIMARY KEY, "
                f"tbl TEXT NOT NULL, op TEXT NOT NULL, rid INTEGER, {key_cols}, "
                f"at REAL DEFAULT (julianday('now')))")
            statements.append((f"INSERT INTO {quote_ident(LOG_TABLE)} (seq, tbl, op) "
                               "VALUES (0, ?, '#')", (uuid.uuid4().hex,)))
        have = self.triggers()
        todo = self.missing(tables)
        for table in todo:
            wanted = set(trigger_names(table).values())
            for name, on in have.items():  # stale triggers of an older key layout
                if on == table.name and name not in wanted:
                    statements.append(f"DROP TRIGGER IF EXISTS {quote_ident(name)}")
            for name in wanted:
                statements.append(f"DROP TRIGGER IF EXISTS {quote_ident(name)}")
            statements.extend(trigger_sql(table))
        if statements:
            self._write(statements)
        return [t.name for t in todo]

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
        """Logged changes with seq > `after`, oldest first."""
        cols = ", ".join(KEY_COLUMNS)
        rows = self._query(f"SELECT seq, tbl, op, rid, {cols}, at FROM "
                           f"{quote_ident(LOG_TABLE)} WHERE seq > ? ORDER BY seq LIMIT ?",
                           (max(after, 0), limit))
        return [Change(r[0], r[1], r[2], r[3], tuple(r[4:4 + MAX_KEY_COLUMNS]), r[-1])
                for r in rows]

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
        if not self._table_exists(CONSUMERS_TABLE):
            return []
        rows = self._query(f"SELECT consumer, label, seq, (julianday('now') - seen) * 86400, "
                           f"running FROM {quote_ident(CONSUMERS_TABLE)} ORDER BY seq")
        return [Consumer(r[0], r[1] or "", int(r[2]), float(r[3]), bool(r[4])) for r in rows]

    def live_consumers(self, exclude: str | None = None) -> list[Consumer]:
        """Consumers that say they run and recorded themselves recently."""
        return [c for c in self.consumers() if c.running and c.consumer != exclude
                and c.seen_seconds_ago < CONSUMER_LIVE_SECONDS]

    def record_consumer(self, consumer: str, label: str, seq: int,
                        running: bool = True) -> bool:
        """Record `consumer`'s saved position (one short write that never waits on a
        legacy writer: a busy database is left for the next call). True if written."""
        if not self._table_exists(CONSUMERS_TABLE):
            return False
        conn = sqlite3.connect(self.path, timeout=0.05, isolation_level=None)
        try:
            conn.execute(f"INSERT INTO {quote_ident(CONSUMERS_TABLE)} "
                         "(consumer, label, seq, seen, running) "
                         "VALUES (?, ?, ?, julianday('now'), ?) ON CONFLICT(consumer) DO UPDATE "
                         "SET label = excluded.label, seq = excluded.seq, "
                         "seen = excluded.seen, running = excluded.running",
                         (consumer, label, seq, int(running)))
            return True
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
