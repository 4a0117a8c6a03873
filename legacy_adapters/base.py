"""The Source boundary: what every legacy table source offers the engine and daemon.

One interface, backends beside it (`legacy_adapters/sqlite.py` is the one today):
`syncd/engine/*` and `syncd/daemon/*` are typed against `Source`, never against a
concrete class. The change log a source may carry is the `ChangeLog` protocol
(`legacy_adapters/changelog.py`); what the daemon follows is a `ChangeFeed`
(`legacy_adapters/feed.py`).

A **position** names a row's place in its table's key order: the rowid (an int)
for rowid tables, the primary-key tuple for WITHOUT ROWID tables; `None` means
"before the first row". Positions are what checkpoints store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# Part of the contract: every method may raise `SourceBusy` when another connection (a
# legacy writer's long transaction) held the database locked past the busy timeout.
from legacy_adapters.errors import SourceBusy as SourceBusy
from legacy_adapters.errors import SourceError


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class TableInfo:
    """One legacy table as reflected: its columns, declared key and row addressing.

    `rowid` is the name to select the rowid by ("rowid", or "_rowid_"/"oid" when a
    column shadows it); None for WITHOUT ROWID tables, which are paged by their
    primary key instead.
    """

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    without_rowid: bool = False
    rowid: str | None = "rowid"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def addressable(self) -> bool:
        """Whether rows can be paged and keyed (false only if columns shadow every rowid name)."""
        return self.rowid is not None or bool(self.primary_key)

    @property
    def key_kind(self) -> str:
        if self.primary_key:
            return "primary key (" + ", ".join(self.primary_key) + ")"
        return "rowid"


@dataclass
class Chunk:
    """Rows read in one short read transaction, and the position after them.

    For rowid tables each row is `(rowid, *columns)`; for WITHOUT ROWID tables it
    is `(*columns)`. `raw_text` counts TEXT values kept as bytes (not UTF-8).
    """

    rows: list[tuple[Any, ...]]
    last: Any
    raw_text: int = 0


@dataclass
class Schema:
    """`reserved`: user tables named like syncd's own (the `_syncd_` prefix), which are
    not in `tables` and are reported as not mirrored rather than silently left out."""

    tables: dict[str, TableInfo] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)
    reserved: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Definition:
    """One schema object as the store keeps its SQL, for a restore to rebuild it.

    `kind` is "table" or "view"; `sql` the `CREATE` statement exactly as stored;
    `indexes` and `triggers` the `CREATE INDEX` / `CREATE TRIGGER` statements on it
    (automatic indexes, which the `CREATE TABLE` itself makes, and syncd's own
    capture triggers left out); `sequence` the table's AUTOINCREMENT counter
    (`sqlite_sequence`), None when it has none; `autoincrement` whether the table
    asks for one (its counter row may be absent: before the first insert, or after
    a script deleted it).
    """

    name: str
    kind: str
    sql: str
    indexes: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    sequence: int | None = None
    autoincrement: bool = False


@runtime_checkable
class Source(Protocol):
    """A read-only legacy source of tables.

    It never holds a lock a legacy writer could wait on for long: every method is
    one short read (its own read transaction) unless called inside
    `read_transaction()`, and no statement stays open between calls.
    """

    # Called with one line when a read first waits for a writer's lock (None: nobody
    # listens): a long legacy transaction is said at its start, not after the retries.
    on_busy: Callable[[str], None] | None

    def schema(self) -> Schema:
        """The tables (columns, declared key, rowid addressing) and views as they are now;
        syncd's own private tables are left out, other tables with their prefix are
        listed in `reserved`."""
        ...

    def definitions(self) -> dict[str, Definition]:
        """Every legacy table and view by name, with its SQL, indexes, triggers and
        AUTOINCREMENT counter as they are now (one short read): what a restore needs
        beyond the rows. syncd's own tables and capture triggers are left out."""
        ...

    def sequences(self) -> dict[str, int]:
        """Each table's AUTOINCREMENT counter now (`sqlite_sequence`; a table without one
        is absent): one small read, cheap enough for every step that finds a commit."""
        ...

    def scan(self, table: TableInfo, after: Any, limit: int, upto: Any = None) -> Chunk:
        """Up to `limit` rows strictly after position `after` (None: from the start) and
        at most up to position `upto` (None: no bound), in key order.

        `Chunk.last` is the position of the last row returned, or `after` when none
        came (an empty chunk means the range is exhausted). A source may return fewer
        than `limit` rows to keep its read lock short. Rows out of key order mean a
        damaged store: it raises a `SourceError`, never returns them.
        """
        ...

    def high_water(self, table: TableInfo) -> Any:
        """The last position in the table now (None if empty): a whole-table read's end
        mark, so a pass ends however fast the legacy scripts append."""
        ...

    def count(self, table: TableInfo) -> int | None:
        """Rows in the table, for progress only: an estimate, or None, if an exact count
        would hold the read lock too long."""
        ...

    def fetch(self, table: TableInfo, rowids: Sequence[int] = (),
              keys: Sequence[tuple[Any, ...]] = ()) -> Chunk:
        """The current rows with these rowids and/or primary-key tuples, in `scan`'s row
        format and in no particular order; a key with no row means the row is gone.
        `Chunk.last` is None (a fetch moves no position)."""
        ...

    def read_transaction(self) -> AbstractContextManager[None]:
        """Several reads that see one consistent state under one read lock.

        The lock is taken at the first read inside the block and dropped when the block
        ends; nested blocks join the outer one. Keep the block short (a follower's
        round: versions, change log, changed rows): legacy writers wait on it.
        """
        ...

    def data_version(self) -> int:
        """An opaque number that changes whenever another connection commits; equal
        values mean nothing was committed in between (cheap to poll)."""
        ...

    def schema_version(self) -> int:
        """An opaque number that changes whenever the schema changes (a table, column,
        trigger or index), and at a VACUUM (which may renumber rowids)."""
        ...

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One read statement on the source's own connection, so a helper (the change
        log) reads inside the caller's `read_transaction` under the same lock guard;
        text that is not UTF-8 comes back as `RawText` bytes."""
        ...

    def check_intact(self, table: TableInfo) -> None:
        """Raise if the store itself reports the table damaged (migrate and verify call
        it before a whole-table read; a source may skip a check too costly to run)."""
        ...

    def confirm_read(self, table: TableInfo, rows: int, upto: Any) -> None:
        """Raise if a whole-table read up to `upto` that gave `rows` rows missed some:
        a short read is an error, never a silent pass (and never grounds to delete)."""
        ...

    def close(self) -> None:
        """Release the connection; a later call opens a new one."""
        ...


class RowWriter(Protocol):
    """Writes one table's rows into a new file (`RestoreTarget.table`)."""

    rows: int

    def add(self, versions: Iterable[dict[str, Any]],
            columns: Sequence[str] | None = None) -> None:
        """Insert the row each recorded version holds (`vals`, `rowid`, `cols`)."""
        ...

    def flush(self) -> None:
        ...

    def remove(self, snapshot: dict[str, Any]) -> None:
        """Take out the row a superseded version put in (by rowid, else its key)."""
        ...


class RestoreConflict(SourceError):
    """Rows given to a RestoreTarget hold one value of a UNIQUE column twice: the
    record kept a row the legacy file no longer held then (exit 1)."""


class RestoreTarget(Protocol):
    """A new legacy file being written from recorded rows and schema (`syncd restore`)."""

    def execute(self, sql: str) -> None:
        """One schema statement as it was stored."""
        ...

    def table(self, name: str) -> RowWriter:
        ...

    def sequence(self, table: str, sql: str, recorded: int | None,
                 inserted: int | None) -> int | None:
        """Set the table's AUTOINCREMENT counter (the `recorded` one, or the highest rowid
        `inserted` since that record if higher); returns it (None: it has none)."""
        ...

    def finish(self) -> str:
        """Commit, check and sync; returns what the integrity check said (raises if bad)."""
        ...

    def close(self) -> None:
        ...
