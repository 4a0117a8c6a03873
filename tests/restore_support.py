"""What the restore tests compare: a legacy file's whole content, copies taken with
SQLite's backup API, and moments on either side of which a change is made."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dump(path: Path) -> dict[str, Any]:
    """Schema (syncd's objects left out), every row with its rowid and each value's
    bytes and typeof(), the AUTOINCREMENT counters; any name, however quoted."""
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    try:
        schema = sorted((t.decode(), n.decode(), (s or b"").decode()) for t, n, s in conn.execute(
            "SELECT type, name, sql FROM sqlite_master") if not n.startswith(b"_syncd_"))
        rows = {}
        for _, name, _ in (s for s in schema if s[0] == "table"):
            if name.startswith("sqlite_"):
                continue
            cols = [r[1].decode() for r in conn.execute(f"PRAGMA table_info({quote(name)})")]
            typed = ", ".join(f"{quote(c)}, typeof({quote(c)})" for c in cols)
            try:
                got = conn.execute(f"SELECT _rowid_, {typed} FROM {quote(name)}").fetchall()
            except sqlite3.OperationalError:  # WITHOUT ROWID
                got = conn.execute(f"SELECT {typed} FROM {quote(name)}").fetchall()
            rows[name] = sorted(got, key=repr)
        seq = sorted(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall()) \
            if any(n == "sqlite_sequence" for _, n, _ in schema) else []
        return {"schema": schema, "rows": rows, "sequence": seq}
    finally:
        conn.close()


def backup(path: Path, to: Path) -> None:
    src, dst = sqlite3.connect(path), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def moment() -> str:
    time.sleep(0.05)
    at = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    return at
