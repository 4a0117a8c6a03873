"""The change log's consumer registry: which consumers follow the log, and how far each
has saved (pruning never passes a consumer seen within the retention window).

Format 2 keeps the registry inside the log table, one row per consumer at a negative
seq (`op` 'consumer', `tbl` the consumer, `rid` its saved seq, `k0` its label, `k1`
running, `at` when it last said so; format 3 keeps its column layouts at negative
seqs too, legacy_adapters/sqlite_values.py), rather than in a table of its own:
every legacy write parses the whole schema on its new connection, and a second
table with its primary-key index cost each one about as much as three triggers.
Readers of changes see only seq > 0. Format 1's `_syncd_consumers` table is moved
in by `consumers_upgrade`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from legacy_adapters.sqlite_sql import CONSUMERS_TABLE, LOG_TABLE, quote_ident

CONSUMER_OP = "consumer"
_LOG = quote_ident(LOG_TABLE)
# consumer, label, seq, seconds since seen, running
CONSUMERS_SQL = (f"SELECT tbl, k0, rid, (julianday('now') - at) * 86400, k1 FROM {_LOG} "
                 f"WHERE seq < 0 AND op = '{CONSUMER_OP}'")
CONSUMERS_SQL_1 = ("SELECT consumer, label, seq, (julianday('now') - seen) * 86400, running "
                   f"FROM {quote_ident(CONSUMERS_TABLE)}")
_NEXT = f"(SELECT min(coalesce(min(seq), 0), 0) - 1 FROM {_LOG})"


def record(conn: sqlite3.Connection, consumer: str, label: str, seq: int,
           running: bool) -> bool:
    """Insert or update `consumer`'s row in one short IMMEDIATE transaction on `conn`
    (autocommit mode; the caller's busy timeout decides how long it may wait)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = conn.execute(f"UPDATE {_LOG} SET k0 = ?, rid = ?, k1 = ?, at = julianday('now') "
                            f"WHERE seq < 0 AND op = '{CONSUMER_OP}' AND tbl = ?",
                            (label, seq, int(running), consumer)).rowcount
        if not done:
            conn.execute(f"INSERT INTO {_LOG} (seq, tbl, op, rid, k0, k1, at) VALUES "
                         f"({_NEXT}, ?, ?, ?, ?, ?, julianday('now'))",
                         (consumer, CONSUMER_OP, seq, label, int(running)))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def consumers_upgrade() -> list[str | tuple[str, tuple[Any, ...]]]:
    """Statements (run in the install's transaction, after the log exists) that move a
    format-1 registry table into the log and drop it."""
    return [f"INSERT INTO {_LOG} (seq, tbl, op, rid, k0, k1, at) "
            f"SELECT {_NEXT} - row_number() OVER (ORDER BY consumer), consumer, "
            f"'{CONSUMER_OP}', seq, label, running, seen FROM {quote_ident(CONSUMERS_TABLE)}",
            f"DROP TABLE {quote_ident(CONSUMERS_TABLE)}"]
