"""The capture triggers' SQL, and reading back what they log (the log's row formats).

Every legacy write opens a new connection, and a new connection parses the whole
schema, every trigger included, before its first statement: the triggers cost each
legacy write their parse even when they never fire. So they are as small as exact
capture allows (docs/performance.md, "The triggers' cost"): one trigger per
operation and table, each one INSERT of as few values as identify the row.

Log row formats (`op` says which; every format stays readable, so entries logged by
an earlier install are applied after an upgrade):

- `i`, `u`, `d`: the row's rowid in `rid` and its key values in `k0`..`k7`
  (format 1, and format 2's INSERT/DELETE of tables keyed otherwise).
- `I`, `D`: a table whose primary key is its rowid (INTEGER PRIMARY KEY): `rid` only.
- `R`: an UPDATE of such a table: `rid` the new rowid, `k0` the old one.
- `U<n>`: an UPDATE of a table with an n-column key: `rid` the new rowid (NULL
  WITHOUT ROWID), `k0`.. the n new key values, then the n old ones, then (rowid
  tables) the old rowid. A changed key becomes a `u` of the new key and a `d` of the
  old one, as format 1 logged it with a second INSERT.
- format 1 logged that `d` with a second INSERT in the UPDATE trigger; tables with
  too many key columns for one row (more than 3 with a rowid, 4 without) still do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from legacy_adapters.base import TableInfo
from legacy_adapters.changelog import Change
from legacy_adapters.sqlite_sql import LOG_TABLE, PRIVATE_PREFIX, quote_ident

MAX_KEY_COLUMNS = 8
TRIGGER_PREFIX = PRIVATE_PREFIX + "trg_"
KEY_COLUMNS = tuple(f"k{i}" for i in range(MAX_KEY_COLUMNS))
OPS = ("i", "u", "d")
# The trigger format: part of the trigger names, so triggers of an older format show
# up as outdated and are replaced (in one transaction: no change goes unlogged).
FORMAT = 2


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def trigger_names(table: TableInfo, version: int = FORMAT) -> dict[str, str]:
    """The trigger names for `table`; they encode its key layout (a changed key, a
    table dropped and recreated differently, shows up as missing triggers) and the
    trigger format (an older one shows up as outdated)."""
    parts = [table.name, table.rowid or "", *table.primary_key]
    if version != 1:
        parts.insert(0, f"format {version}")
    tag = hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]
    return {op: f"{TRIGGER_PREFIX}{tag}_{op}" for op in OPS}


def capturable(table: TableInfo) -> bool:
    return table.addressable and len(table.primary_key) <= MAX_KEY_COLUMNS


def delete_body(table: TableInfo, rowid_key: bool = False) -> str:
    """The DELETE trigger's body (format 2's, also format 3's: a delete needs the key)."""
    rid = quote_ident(table.rowid) if table.rowid else None
    if rowid_key and rid:
        return _insert(table, "D", [f"OLD.{rid}"])
    return _insert(table, "d", [f"OLD.{rid}" if rid else "NULL",
                                *(f"OLD.{quote_ident(k)}" for k in table.primary_key)])


def _insert(table: TableInfo, op: str, values: list[str]) -> str:
    cols = ",".join(["tbl", "op", "rid", *KEY_COLUMNS[:len(values) - 1]])
    return (f"INSERT INTO {quote_ident(LOG_TABLE)}({cols})VALUES("
            f"{literal(table.name)},{literal(op)},{','.join(values)});")


def trigger_sql(table: TableInfo, rowid_key: bool = False) -> list[str]:
    """CREATE TRIGGER statements for `table` (format 2). `rowid_key`: its primary key
    is its rowid (an INTEGER PRIMARY KEY column), so the rowid alone identifies a row."""
    names = trigger_names(table)
    src = quote_ident(table.name)
    rid = quote_ident(table.rowid) if table.rowid else None
    keys = [quote_ident(c) for c in table.primary_key]
    n = len(keys)

    def row(r: str) -> list[str]:
        return [f"{r}.{rid}" if rid else "NULL", *(f"{r}.{k}" for k in keys)]

    if rowid_key and rid:
        ins = _insert(table, "I", [f"NEW.{rid}"])
        upd = _insert(table, "R", [f"NEW.{rid}", f"OLD.{rid}"])
    else:
        ins = _insert(table, "i", row("NEW"))
        if 2 * n + (1 if rid else 0) <= MAX_KEY_COLUMNS:
            old = [f"OLD.{k}" for k in keys] + ([f"OLD.{rid}"] if rid else [])
            upd = _insert(table, f"U{n}", row("NEW") + old)
        else:  # too wide for one row: a second INSERT logs the old key when it moved
            moved = [f"OLD.{k} IS NOT NEW.{k}" for k in keys] + (
                [f"OLD.{rid} IS NOT NEW.{rid}"] if rid else [])
            cols = ",".join(["tbl", "op", "rid", *KEY_COLUMNS[:n]])
            upd = _insert(table, "u", row("NEW")) + (
                f"INSERT INTO {quote_ident(LOG_TABLE)}({cols})SELECT {literal(table.name)},"
                f"'d',{','.join(row('OLD'))} WHERE {' OR '.join(moved)};")
    return [f"CREATE TRIGGER {quote_ident(names[op])} AFTER {event} ON {src} BEGIN {body}END"
            for op, event, body in (("i", "INSERT", ins), ("u", "UPDATE", upd),
                                    ("d", "DELETE", delete_body(table, rowid_key)))]


def pad(values: tuple[Any, ...] | list[Any]) -> tuple[Any, ...]:
    return tuple(values) + (None,) * (MAX_KEY_COLUMNS - len(values))


def typed(values: tuple[Any, ...]) -> tuple[tuple[str, Any], ...]:
    return tuple((type(v).__name__, v) for v in values)


def expand(seq: int, table: str, op: str, rid: Any, keys: tuple[Any, ...],
           at: float | None) -> Iterator[Change]:
    """The changes one log row stands for (one, or two for an UPDATE that moved a key),
    in the format-1 vocabulary the follower applies ('i', 'u', 'd' with key values)."""
    if op in ("I", "D"):
        yield Change(seq, table, op.lower(), rid, pad((rid,)), at)
    elif op == "R":
        yield Change(seq, table, "u", rid, pad((rid,)), at)
        if typed((keys[0],)) != typed((rid,)):
            yield Change(seq, table, "d", keys[0], pad((keys[0],)), at)
    elif op.startswith("U") and op[1:].isdigit():
        n = int(op[1:])
        new, old = keys[:n], keys[n:2 * n]
        old_rid = keys[2 * n] if rid is not None else None
        yield Change(seq, table, "u", rid, pad(new), at)
        if typed((old_rid, *old)) != typed((rid, *new)):
            yield Change(seq, table, "d", old_rid, pad(old), at)
    else:
        yield Change(seq, table, op, rid, tuple(keys), at)
