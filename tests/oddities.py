"""Generated legacy databases with every SQLite oddity syncd must carry faithfully."""

from __future__ import annotations

import sqlite3
from pathlib import Path

INF = float("inf")


def make_odd_db(path: Path) -> dict[str, list[tuple]]:
    """Write the odd database; return the rows each table holds (as sqlite3 would read them,
    invalid UTF-8 text given as bytes)."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE mixed (id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT, b BLOB, anything);
        CREATE TABLE composite (run TEXT, epoch INTEGER, loss REAL, PRIMARY KEY (run, epoch));
        CREATE TABLE nokey (a TEXT, b INTEGER);
        CREATE TABLE wr (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE TABLE "odd names" ("a.b" INTEGER, "$price" REAL, "_id" TEXT, "plain" TEXT);
        CREATE TABLE textkey (name TEXT PRIMARY KEY, note TEXT);
        CREATE TABLE shadow (rowid TEXT, val INTEGER);
        CREATE VIEW mixed_view AS SELECT id, n FROM mixed;
    """)
    mixed = [
        (1, 42, 1.5, "plain text", b"\x00\x01binary", None),
        (2, "not a number", INF, "ünïcödé ✓", b"", 3.25),
        (3, 2**63 - 1, -INF, "", None, "text"),
        (4, -(2**63), -0.0, "tab\tnew\nline\x00nul", b"\xff" * 300, b"blob"),
        (5, 3.75, 1e308, None, "text in a blob column", 7),
        (6, None, None, None, None, None),
    ]
    conn.executemany("INSERT INTO mixed VALUES (?,?,?,?,?,?)", mixed)
    # TEXT whose bytes are not UTF-8 (a legacy writer with another text encoding).
    conn.execute("INSERT INTO mixed (id, t) VALUES (7, CAST(x'636166e9' AS TEXT))")
    conn.execute("INSERT INTO mixed (id, n, t) VALUES (8, 1, CAST(x'ff00fe' AS TEXT))")
    composite = [("run-a", 1, 0.5), ("run-a", 2, 0.25), ("run-b", 1, 0.75), ("run-b", 2, None)]
    conn.executemany("INSERT INTO composite VALUES (?,?,?)", composite)
    nokey = [("dup", 1), ("dup", 1), ("other", None)]
    conn.executemany("INSERT INTO nokey VALUES (?,?)", nokey)
    wr = [("alpha", 1), ("beta", "two"), ("gamma", b"\x03"), ("delta", None)]
    conn.executemany("INSERT INTO wr VALUES (?,?)", wr)
    names = [(1, 9.99, "legacy-id-1", "x"), (2, None, None, "y")]
    conn.executemany('INSERT INTO "odd names" VALUES (?,?,?,?)', names)
    textkey = [("one", "first"), (None, "null key a"), (None, "null key b")]
    conn.executemany("INSERT INTO textkey VALUES (?,?)", textkey)
    conn.executemany("INSERT INTO shadow VALUES (?,?)", [("r1", 1), ("r2", 2)])
    conn.commit()
    conn.close()
    return {"mixed": mixed, "composite": composite, "nokey": nokey, "wr": wr,
            "odd names": names, "textkey": textkey}
