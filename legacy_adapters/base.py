"""The Source boundary: what every legacy adapter offers the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


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
    tables: dict[str, TableInfo] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)


class Source(Protocol):
    """A read-only legacy source of tables."""

    def schema(self) -> Schema: ...

    def scan(self, table: TableInfo, after: Any, limit: int, upto: Any = None) -> Chunk: ...

    def high_water(self, table: TableInfo) -> Any: ...

    def count(self, table: TableInfo) -> int | None: ...

    def check_intact(self, table: TableInfo) -> None:
        """Raise if the store itself reports the table damaged (migrate and verify call
        it before a whole-table read; a source may skip a check too costly to run)."""

    def confirm_read(self, table: TableInfo, rows: int, upto: Any) -> None:
        """Raise if a whole-table read up to `upto` that gave `rows` rows missed some:
        a short read is an error, never a silent pass (and never grounds to delete)."""

    def close(self) -> None: ...
