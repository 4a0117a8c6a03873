"""The SQL of a legacy SQLite database's tables, views, indexes and triggers, as stored.

History records it beside the rows (`syncd restore` rebuilds the file from it): the
`CREATE` statements exactly as `sqlite_master` keeps them, so the restored file's
schema is the original's text for text. Left out: SQLite's own objects
(`sqlite_*`, automatic indexes, whose `sql` is NULL), syncd's change log and
registry, and syncd's capture triggers; a legacy trigger is kept.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

from legacy_adapters.base import Definition
from legacy_adapters.sqlite_sql import PRIVATE_PREFIX

_AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)
_MASTER = ("SELECT type, name, tbl_name, sql FROM sqlite_master "
           "WHERE sql IS NOT NULL ORDER BY rowid")


def own_object(name: str) -> bool:
    """Whether a schema object is SQLite's or syncd's own (its change log, registry and
    capture triggers, all named `_syncd_...`), never the legacy data's."""
    return name.startswith("sqlite_") or name.startswith(PRIVATE_PREFIX)


def autoincrement(sql: str | None) -> bool:
    """Whether a `CREATE TABLE` asks for AUTOINCREMENT (a counter in sqlite_sequence)."""
    return sql is not None and _AUTOINCREMENT.search(sql) is not None


def read_sequences(query: Callable[[str], list[tuple[Any, ...]]]) -> dict[str, int]:
    """Each table's AUTOINCREMENT counter now (`sqlite_sequence`; a table without a row
    is absent): one small read, so a follower can notice a script writing the counters
    itself (the reset idiom), which fires no trigger and moves no schema version."""
    try:
        rows = query("SELECT name, seq FROM sqlite_sequence")
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # no AUTOINCREMENT table was ever created
            return {}
        raise
    return {str(n): int(s) for n, s in rows if isinstance(n, str) and isinstance(s, int)}


def read_definitions(query: Callable[[str], list[tuple[Any, ...]]]) -> dict[str, Definition]:
    """Every legacy table and view with its indexes, triggers and AUTOINCREMENT counter,
    read by `query` (two statements; run them in one read transaction to see one state)."""
    rows = query(_MASTER)
    names = {r[1] for r in rows if r[0] == "table"}
    sequence = read_sequences(query) if "sqlite_sequence" in names else {}
    found: dict[str, dict[str, Any]] = {}
    for kind, name, _table, sql in rows:
        if kind in ("table", "view") and not own_object(name):
            found[name] = {"kind": kind, "sql": sql, "indexes": [], "triggers": []}
    for kind, name, table, sql in rows:
        owner = found.get(table)
        if owner is None or own_object(name):
            continue  # on syncd's own table, or syncd's capture trigger (_syncd_trg_)
        if kind == "index":
            owner["indexes"].append(sql)
        elif kind == "trigger":
            owner["triggers"].append(sql)
    return {name: Definition(name, d["kind"], d["sql"], tuple(d["indexes"]),
                             tuple(d["triggers"]), sequence.get(name),
                             d["kind"] == "table" and autoincrement(d["sql"]))
            for name, d in found.items()}
