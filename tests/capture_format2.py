"""The change capture as syncd installed it before format 3 (2026-12): its SQL, copied,
so tests can make a format-2 install (keys only, the consumer registry in the log) to
upgrade. syncd installs format 2 now only for tables left out of history."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any

LOG = '"_syncd_changes"'
KEYS = [f"k{i}" for i in range(8)]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _insert(table: str, op: str, values: list[str]) -> str:
    cols = ",".join(["tbl", "op", "rid", *KEYS[:len(values) - 1]])
    return f"INSERT INTO {LOG}({cols})VALUES('{table}','{op}',{','.join(values)});"


def _triggers(conn: sqlite3.Connection, info: Any, rowid_key: bool) -> None:
    parts = ["format 2", info.name, info.rowid or "", *info.primary_key]
    tag = hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]
    rid = _q(info.rowid) if info.rowid else None
    keys = [_q(c) for c in info.primary_key]
    n = len(keys)

    def row(r: str) -> list[str]:
        return [f"{r}.{rid}" if rid else "NULL", *(f"{r}.{k}" for k in keys)]

    if rowid_key and rid:
        ins = _insert(info.name, "I", [f"NEW.{rid}"])
        upd = _insert(info.name, "R", [f"NEW.{rid}", f"OLD.{rid}"])
        dele = _insert(info.name, "D", [f"OLD.{rid}"])
    else:
        ins, dele = _insert(info.name, "i", row("NEW")), _insert(info.name, "d", row("OLD"))
        if 2 * n + (1 if rid else 0) <= 8:
            old = [f"OLD.{k}" for k in keys] + ([f"OLD.{rid}"] if rid else [])
            upd = _insert(info.name, f"U{n}", row("NEW") + old)
        else:
            moved = [f"OLD.{k} IS NOT NEW.{k}" for k in keys] + (
                [f"OLD.{rid} IS NOT NEW.{rid}"] if rid else [])
            cols = ",".join(["tbl", "op", "rid", *KEYS[:n]])
            upd = _insert(info.name, "u", row("NEW")) + (
                f"INSERT INTO {LOG}({cols})SELECT '{info.name}','d',{','.join(row('OLD'))} "
                f"WHERE {' OR '.join(moved)};")
    for op, event, body in (("i", "INSERT", ins), ("u", "UPDATE", upd), ("d", "DELETE", dele)):
        conn.execute(f'CREATE TRIGGER "_syncd_trg_{tag}_{op}" AFTER {event} ON {_q(info.name)} '
                     f"BEGIN {body}END")


def install_format2(path: Path, tables: list[Any]) -> str:
    """A format-2 install on `path` for `tables` (TableInfo); returns the install id."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"CREATE TABLE {LOG} (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, "
                 f"op TEXT NOT NULL, rid INTEGER, {', '.join(KEYS)}, "
                 "at REAL DEFAULT (julianday('now')))")
    install_id = uuid.uuid4().hex
    conn.execute(f"INSERT INTO {LOG} (seq, tbl, op) VALUES (0, ?, '#')", (install_id,))
    for t in tables:
        pk_index = conn.execute("SELECT 1 FROM pragma_index_list(?) WHERE origin = 'pk'",
                                (t.name,)).fetchall()
        rowid_key = bool(not t.without_rowid and t.rowid and len(t.primary_key) == 1
                         and not pk_index)
        _triggers(conn, t, rowid_key)
    conn.close()
    return install_id
