"""The change capture as syncd installed it before format 2 (2026-11-30): its SQL, a
frozen copy of tests/capture_format1.py (format 1 is history and never changes; the
benches import nothing from tests/), so that bench/triggers.py and bench/contention.py
can measure a format-1 install. Nothing in syncd installs format 1 any more."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any

LOG = '"_syncd_changes"'


def _triggers(conn: sqlite3.Connection, table: str, rowid: str | None, keys: list[str]) -> None:
    tag = hashlib.sha1("\x1f".join([table, rowid or "", *keys]).encode()).hexdigest()[:16]
    cols = ", ".join(["tbl", "op", "rid", *[f"k{i}" for i in range(len(keys))]])

    def values(row: str, op: str) -> str:
        return ", ".join([f"'{table}'", f"'{op}'", f'{row}."{rowid}"' if rowid else "NULL",
                          *[f'{row}."{k}"' for k in keys]])

    moved = " OR ".join([f'OLD."{k}" IS NOT NEW."{k}"' for k in keys]
                        + ([f'OLD."{rowid}" IS NOT NEW."{rowid}"'] if rowid else []))
    name = f"_syncd_trg_{tag}"
    conn.execute(f'CREATE TRIGGER "{name}_i" AFTER INSERT ON "{table}" BEGIN INSERT INTO {LOG} '
                 f"({cols}) VALUES ({values('NEW', 'i')}); END")
    conn.execute(f'CREATE TRIGGER "{name}_u" AFTER UPDATE ON "{table}" BEGIN INSERT INTO {LOG} '
                 f"({cols}) VALUES ({values('NEW', 'u')}); INSERT INTO {LOG} ({cols}) SELECT "
                 f"{values('OLD', 'd')} WHERE {moved}; END")
    conn.execute(f'CREATE TRIGGER "{name}_d" AFTER DELETE ON "{table}" BEGIN INSERT INTO {LOG} '
                 f"({cols}) VALUES ({values('OLD', 'd')}); END")


def install_format1(path: Path, tables: list[Any]) -> str:
    """A format-1 install on `path` for `tables` (TableInfo): the log, the separate
    `_syncd_consumers` table and three triggers a table. Returns the install id."""
    conn = sqlite3.connect(path, isolation_level=None)
    keys = ", ".join(f"k{i}" for i in range(8))
    conn.execute('CREATE TABLE "_syncd_consumers" (consumer TEXT PRIMARY KEY, label TEXT, '
                 "seq INTEGER NOT NULL, seen REAL NOT NULL, running INTEGER NOT NULL DEFAULT 1)")
    conn.execute(f"CREATE TABLE {LOG} (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, "
                 f"op TEXT NOT NULL, rid INTEGER, {keys}, at REAL DEFAULT (julianday('now')))")
    install_id = uuid.uuid4().hex
    conn.execute(f"INSERT INTO {LOG} (seq, tbl, op) VALUES (0, ?, '#')", (install_id,))
    for t in tables:
        _triggers(conn, t.name, t.rowid, list(t.primary_key))
    conn.close()
    return install_id
