"""Statement helpers and the names of syncd's own objects, shared by the SQLite source,
its definitions, its integrity checks and its change log.

Each statement is run and fetched at once, its cursor closed, so no statement
holds a SHARED lock a legacy writer would wait on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from legacy_adapters.values import RawText, text_factory

PRIVATE_PREFIX = "_syncd_"  # every table and trigger syncd puts in a legacy file
LOG_TABLE = PRIVATE_PREFIX + "changes"  # the capture triggers' log (sqlite_triggers)
CONSUMERS_TABLE = PRIVATE_PREFIX + "consumers"  # format 1's registry (sqlite_consumers)
OWN_TABLES = frozenset({LOG_TABLE, CONSUMERS_TABLE})


def quote_ident(name: str) -> str:
    """`name` as an SQL identifier (double-quoted, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def fetch_all(conn: sqlite3.Connection, sql: str,
              params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement and fetch every row; the cursor is closed at once, so the
    statement holds no lock afterwards."""
    cur = conn.execute(sql, params)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def read_careful(conn: sqlite3.Connection,
                 fetch: Callable[[], list[tuple[Any, ...]]]) -> tuple[list[tuple[Any, ...]], int]:
    """`fetch()`'s rows; if some TEXT is not UTF-8, fetched again keeping such values
    as `RawText` bytes (the fast path decodes in C; this one only when needed).
    Returns the rows and how many values were kept as bytes."""
    try:
        return fetch(), 0
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc).lower():
            raise
    old = conn.text_factory
    conn.text_factory = text_factory
    try:
        rows = fetch()
    finally:
        conn.text_factory = old
    return rows, sum(1 for row in rows for v in row if v.__class__ is RawText)
