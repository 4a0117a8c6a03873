"""Capture format 3: triggers that log the row's values, so every version is kept.

Format 2 logged only which row changed, and syncd read the row's state when it
applied the entry: two updates before syncd's next read, or any number while it was
stopped, left only the last state. Format 3's INSERT and UPDATE triggers log the
row's new values in the log row itself, as they are (no json, no subquery: one
INSERT of the values as SQLite holds them, storage class and all), with the
statement's time (`at`, `julianday('now')`, which SQLite fixes per statement).
DELETE triggers stay format 2's (the key says which row went).

Log row formats (beside format 2's, which stay readable; `L` is a layout id):

- `I<L>`: an INSERT: `v0`.. the new row's columns in the layout's order; `rid` the
  rowid (left out when the primary key is the rowid: its value is among the columns).
- `U<L>`: an UPDATE: `rid` the new rowid (likewise), `v0`.. the new columns, then the
  old key (the old rowid for a table keyed by its rowid; else the old primary key
  values, then the old rowid for rowid tables). A moved key becomes a `u` of the new
  key and a `d` of the old one, as before.

A layout (`Layout`: the table's column names in order and how it is keyed) is
stored once in the log, at a negative seq like the consumer registry (`op` 'layout',
`k0` its id, `k1` its JSON; `rid` 0 and `at` 0, so a reader that takes every negative
seq for a consumer sees one long gone). Its id is a hash of its content and is part
of the trigger names, so a table whose columns changed (ALTER TABLE ADD, RENAME or
DROP COLUMN) shows up as outdated and gets triggers of its new layout; entries logged
before keep the layout they were logged with.

SQLite refuses `ALTER TABLE ... DROP COLUMN` of a column a trigger names ("error in
trigger ...: no such column"), and format 3 names every column: a table whose columns
the legacy scripts drop is left out of history (`[history] exclude`), which gives it
format 2's triggers again (docs/following.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from legacy_adapters.base import TableInfo
from legacy_adapters.changelog import Change
from legacy_adapters.sqlite_sql import LOG_TABLE, quote_ident
from legacy_adapters.sqlite_triggers import (
    TRIGGER_PREFIX,
    delete_body,
    literal,
    pad,
    typed,
)

FORMAT = 3
LAYOUT_OP = "layout"
_LOG = quote_ident(LOG_TABLE)
LAYOUTS_SQL = f"SELECT k0, k1 FROM {_LOG} WHERE seq < 0 AND op = '{LAYOUT_OP}'"
# A layout id is this many hex digits; format 2's ops are at most two characters
# ('U' and a key width), so the length alone tells the formats apart (an id may be
# all decimal digits: "U7838441285" is format 3).
LAYOUT_ID_LENGTH = 10


@dataclass(frozen=True)
class Layout:
    """What a format-3 entry's values mean: the table's columns in order, the indexes
    of its primary-key columns, whether its rows have a rowid, and whether that rowid
    is the primary key (an INTEGER PRIMARY KEY column)."""

    table: str
    columns: tuple[str, ...]
    key: tuple[int, ...]
    rowid: bool
    rowid_key: bool

    @classmethod
    def of(cls, table: TableInfo, rowid_key: bool) -> Layout:
        names = table.column_names
        return cls(table.name, tuple(names), tuple(names.index(k) for k in table.primary_key),
                   table.rowid is not None, rowid_key and table.rowid is not None)

    def to_json(self) -> str:
        return json.dumps([self.table, list(self.columns), list(self.key), self.rowid,
                           self.rowid_key], ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Layout:
        table, columns, key, rowid, rowid_key = json.loads(text)
        return cls(table, tuple(columns), tuple(key), rowid, rowid_key)

    @property
    def id(self) -> str:
        digest = hashlib.sha1(("format 3\x1f" + self.to_json()).encode()).hexdigest()
        return digest[:LAYOUT_ID_LENGTH]

    @property
    def old_width(self) -> int:
        """How many values an UPDATE logs after the new columns (the old key)."""
        return 1 if self.rowid_key else len(self.key) + (1 if self.rowid else 0)

    @property
    def width(self) -> int:
        """How many value slots (`v0`..) the layout's UPDATE needs."""
        return len(self.columns) + self.old_width


def key_tag(table: TableInfo) -> str:
    """The part of a format-3 trigger name that says the key layout (format 2's tag)."""
    parts = ["format 3", table.name, table.rowid or "", *table.primary_key]
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def trigger_names(table: TableInfo, layout: Layout) -> dict[str, str]:
    """Format-3 trigger names: the key layout, then the column layout's id."""
    return {op: f"{TRIGGER_PREFIX}{key_tag(table)}_{layout.id}_{op}" for op in "iud"}


def complete_any(table: TableInfo, have: dict[str, str]) -> bool:
    """Whether `have` holds format-3 triggers for every operation of `table`'s key
    layout, whatever column layout they log (an outdated one still logs every change)."""
    head = f"{TRIGGER_PREFIX}{key_tag(table)}_"
    mine = [n for n, on in have.items() if on == table.name and n.startswith(head)]
    return all(any(n.endswith("_" + op) for n in mine) for op in "iud")


def _values_insert(layout: Layout, op: str, rid: str | None, values: list[str]) -> str:
    cols = ["tbl", "op", *(["rid"] if rid else []), *(f"v{i}" for i in range(len(values)))]
    return (f"INSERT INTO {_LOG}({','.join(cols)})VALUES({literal(layout.table)},"
            f"'{op}{layout.id}',{','.join([*([rid] if rid else []), *values])});")


def values_trigger_sql(table: TableInfo, layout: Layout) -> list[str]:
    """CREATE TRIGGER statements of format 3 for `table`: INSERT and UPDATE log the
    values, DELETE the key (format 2's)."""
    names = trigger_names(table, layout)
    src = quote_ident(table.name)
    rid = quote_ident(table.rowid) if table.rowid else None
    cols = [quote_ident(c) for c in layout.columns]
    logged_rid = None if layout.rowid_key or rid is None else rid
    if layout.rowid_key:
        old = [f"OLD.{rid}"]
    else:
        old = [f"OLD.{quote_ident(k)}" for k in table.primary_key] + (
            [f"OLD.{rid}"] if rid else [])

    def new_rid() -> str | None:
        return f"NEW.{logged_rid}" if logged_rid else None

    ins = _values_insert(layout, "I", new_rid(), [f"NEW.{c}" for c in cols])
    upd = _values_insert(layout, "U", new_rid(), [f"NEW.{c}" for c in cols] + old)
    return [f"CREATE TRIGGER {quote_ident(names[op])} AFTER {event} ON {src} BEGIN {body}END"
            for op, event, body in (("i", "INSERT", ins), ("u", "UPDATE", upd),
                                    ("d", "DELETE", delete_body(table, layout.rowid_key)))]


def layout_row(layout: Layout) -> tuple[str, tuple[Any, ...]]:
    """The statement that stores `layout` in the log once (in the install's transaction)."""
    return (f"INSERT INTO {_LOG}(seq,tbl,op,rid,k0,k1,at)SELECT "
            f"(SELECT min(coalesce(min(seq),0),0)-1 FROM {_LOG}),?,'{LAYOUT_OP}',0,?,?,0 "
            f"WHERE NOT EXISTS(SELECT 1 FROM {_LOG} WHERE seq<0 AND op='{LAYOUT_OP}' AND k0=?)",
            (layout.table, layout.id, layout.to_json(), layout.id))


def is_values_op(op: str) -> bool:
    """Whether a log row's op is format 3's (`I`/`U` and a layout id), by its length:
    not by whether the id has a letter, which about one layout in a hundred lacks."""
    return len(op) == 1 + LAYOUT_ID_LENGTH and op[0] in "IU"


def expand_values(seq: int, op: str, rid: Any, values: tuple[Any, ...], at: float | None,
                  layout: Layout) -> Iterator[Change]:
    """The changes one format-3 row stands for (with the new row's values)."""
    n = len(layout.columns)
    new = tuple(values[:n])
    keys = tuple(new[i] for i in layout.key)
    if layout.rowid_key:
        rid = new[layout.key[0]]
    kind = "i" if op[0] == "I" else "u"
    yield Change(seq, layout.table, kind, rid, pad(keys), at, layout.columns, new)
    if kind == "u":
        old = tuple(values[n:n + layout.old_width])
        if layout.rowid_key:
            old_rid, old_keys = old[0], (old[0],)
        else:
            old_keys = old[:len(layout.key)]
            old_rid = old[len(layout.key)] if layout.rowid else None
        if typed((old_rid, *old_keys)) != typed((rid, *keys)):
            yield Change(seq, layout.table, "d", old_rid, pad(old_keys), at)

