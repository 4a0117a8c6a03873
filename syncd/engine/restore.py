"""`syncd restore`: a new SQLite file from MongoDB alone, as of any moment of history.

What is rebuilt, from `_syncd_schemas` and `_syncd_history` (syncd.sinks.history):
each table with its CREATE statement as SQLite stored it, its rows as of the moment
(values and storage classes: TEXT byte-exact, BLOB, REAL, 64-bit INTEGER, NULL; rowids
kept), its indexes, its AUTOINCREMENT counter, then the views and the legacy triggers
(created last, so that they do not fire while rows go in). syncd's own capture
objects were never recorded, so they are not restored.

How the rows are read: one pass over the table's versions in the server's natural
order (the cheapest read the server has; a sort there costs more than all of the
rest). Snapshots (one per row, nearly every version in practice) go straight into
the file in large `executemany` batches; the few later versions are kept, each
row's last one wins, and the snapshot it supersedes is taken out again.

The file is written beside PATH under a temporary name, with the journal and syncs
off (it is new: a crash leaves only that temporary file, removed on the next
error), checked with `PRAGMA integrity_check`, synced, and only then linked into
place, refusing a PATH that appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson.binary import Binary
from pymongo.database import Database

from legacy_adapters.sqlite_sql import quote_ident
from syncd.errors import ConfigError, SyncdError
from syncd.progress import Progress
from syncd.sinks.history import HistoryReader, from_julian_day, order

ROWID_NAMES = ("rowid", "_rowid_", "oid")
BATCH = 20000
_AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)
_BINARY = Binary
_FIRST = operator.itemgetter(0)


@dataclass(frozen=True)
class RestoreOptions:
    """What to restore: the source's history, as of `as_of` (a julian day; None: now)."""

    path: Path
    source_id: str
    as_of: float | None = None


@dataclass
class RestoreReport:
    path: str
    source: str
    as_of: float | None
    history_starts: float | None
    tables: list[dict[str, Any]] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    triggers: int = 0
    not_restored: list[dict[str, str]] = field(default_factory=list)
    integrity: str = ""
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t["rows"] for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        def when(jd: float | None) -> str | None:
            return None if jd is None else from_julian_day(jd).isoformat()

        return {"path": self.path, "source": self.source, "as_of": when(self.as_of),
                "history_starts": when(self.history_starts), "tables": self.tables,
                "views": self.views, "triggers": self.triggers, "rows": self.rows,
                "not_restored": self.not_restored, "integrity": self.integrity,
                "seconds": round(self.seconds, 3)}


def _text(value: Any) -> bool:
    """A stored non-UTF-8 TEXT value (Binary of the TEXT subtype; a BLOB decodes as bytes)."""
    return value.__class__ is Binary


class TableWriter:
    """Inserts one table's rows: many at once where no value needs a CAST."""

    def __init__(self, conn: sqlite3.Connection, table: str) -> None:
        self.conn, self.table = conn, table
        self.quoted = quote_ident(table)
        self.rows = 0
        self.max_rowid: int | None = None
        self._sql: dict[tuple[tuple[str, ...], bool], tuple[str, bool, str]] = {}
        self._pending: list[Sequence[Any]] = []
        self._pending_sql = ""
        self._pending_rid = False

    def _statement(self, cols: Sequence[str], with_rowid: bool) -> tuple[str, bool, str]:
        """(the INSERT up to VALUES, whether a rowid leads, the all-placeholders form)."""
        key = (tuple(cols), with_rowid)
        found = self._sql.get(key)
        if found is None:
            taken = {c.lower() for c in cols}
            rowid = next((r for r in ROWID_NAMES if r not in taken), None) if with_rowid \
                else None
            names = ([rowid] if rowid else []) + list(cols)
            head = (f"INSERT INTO {self.quoted} ({', '.join(map(quote_ident, names))}) "
                    "VALUES (")
            found = (head, rowid is not None, head + ", ".join("?" * len(names)) + ")")
            self._sql[key] = found
        return found

    def add(self, versions: Iterable[dict[str, Any]],
            columns: Sequence[str] | None = None) -> None:
        """Insert the row each version holds (`columns`: the columns of every one of
        them, when known; else each version's `cols`)."""
        pending = self._pending
        last_cols: Any = None
        last_bare = False
        head, rid = "", False
        for v in versions:
            vals, rowid = v["vals"], v["rowid"]
            cols = columns or v["cols"]
            if cols != last_cols or (rowid is None) is not last_bare:
                head, rid, full = self._statement(cols, rowid is not None)
                last_cols, last_bare = cols, rowid is None
                if full != self._pending_sql:
                    self.flush()
                    self._pending_sql, self._pending_rid = full, rid
            if _BINARY in set(map(type, vals)):  # TEXT that is not UTF-8: CAST its bytes
                row = (rowid, *vals) if rid else tuple(vals)
                marks = (["?"] if rid else []) + ["CAST(? AS TEXT)" if _text(x) else "?"
                                                  for x in vals]
                self.flush()
                self.conn.execute(head + ", ".join(marks) + ")",
                                  tuple(bytes(x) if _text(x) else x for x in row))
                self.rows += 1
                self.seen(rowid)
                continue
            pending.append((rowid, *vals) if rid else vals)
            if len(pending) >= BATCH:
                self.flush()

    def seen(self, rowid: int | None) -> None:
        if rowid is not None and (self.max_rowid is None or rowid > self.max_rowid):
            self.max_rowid = rowid

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self.conn.executemany(self._pending_sql, pending)
            self.rows += len(pending)
            if self._pending_rid:
                self.seen(max(map(_FIRST, pending)))
            self._pending = []

    def remove(self, snapshot: dict[str, Any]) -> None:
        """Take out the row a superseded snapshot put in (by rowid, else primary key)."""
        self.flush()
        if snapshot.get("rowid") is not None:
            self.conn.execute(f"DELETE FROM {self.quoted} WHERE rowid = ?",
                              (snapshot["rowid"],))
        else:
            pk = [r[1] for r in sorted((r for r in self.conn.execute(
                f"PRAGMA table_info({self.quoted})") if r[5]), key=lambda r: r[5])]
            where = " AND ".join(f"{quote_ident(c)} = " + ("CAST(? AS TEXT)" if _text(k)
                                                             else "?")
                                 for c, k in zip(pk, snapshot["key"], strict=True))
            self.conn.execute(f"DELETE FROM {self.quoted} WHERE {where}",
                              tuple(bytes(k) if _text(k) else k for k in snapshot["key"]))
        self.rows -= 1


def restore_rows(reader: HistoryReader, writer: TableWriter, table: str,
                 jd: float | None, task: Any) -> None:
    """The rows of `table` as of `jd`: the snapshots as they come, then the last state
    of each row a later version touched (syncd.sinks.history: the order)."""
    since, columns = reader.baseline_as_of(table, jd)
    changed: set[Any] = set()
    for batch in reader.version_batches(table, since, jd, with_cols=columns is None):
        snapshots = [v for v in batch if v["op"] == "snapshot"]
        if len(snapshots) != len(batch):
            changed.update(v["doc"] for v in batch if v["op"] != "snapshot")
        writer.add(snapshots, columns)
        task.advance(len(batch))
    writer.flush()
    if not changed:
        return
    last: dict[Any, dict[str, Any]] = {}
    snaps: dict[Any, dict[str, Any]] = {}
    for v in reader.versions_of(table, list(changed), since, jd):
        if v["op"] == "snapshot":
            snaps[v["doc"]] = v
        else:
            writer.seen(v["rowid"])  # a counter also counts rows deleted since
        if v["doc"] not in last or order(v) > order(last[v["doc"]]):
            last[v["doc"]] = v
    finals = []
    for doc, final in last.items():
        snap = snaps.get(doc)
        if final is snap:
            continue  # the snapshot is the row's last state; it is in already
        if snap is not None:
            writer.remove(snap)
        if final["cols"] is not None:
            finals.append(final)
    writer.add(finals)
    writer.flush()


def _sequence(conn: sqlite3.Connection, table: str, sql: str, recorded: int | None,
              max_rowid: int | None) -> int | None:
    """Set the AUTOINCREMENT counter to what it was: the recorded counter or the highest
    rowid history has seen, whichever is higher."""
    if not _AUTOINCREMENT.search(sql):
        return None
    wanted = max((v for v in (recorded, max_rowid) if v is not None), default=None)
    if wanted is None:
        return None
    got = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    if got is None:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, wanted))
    elif got[0] != wanted:
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (wanted, table))
    return wanted


def _check_time(reader: HistoryReader, options: RestoreOptions) -> float:
    """When history starts; a moment before it is refused, saying when it starts."""
    first = reader.first_schema_jd()
    if first is None:
        raise ConfigError(f"--source {options.source_id}: MongoDB holds no history of this "
                          "source (history starts at its first `syncd migrate`)")
    if options.as_of is not None and options.as_of < first:
        raise ConfigError(
            f"--as-of {from_julian_day(options.as_of).isoformat()}: that is before history "
            f"starts for source {options.source_id} (its first sync recorded the first "
            f"table at {from_julian_day(first).isoformat()}); nothing earlier can be restored")
    return first


def restore(db: Database, options: RestoreOptions, progress: Progress) -> RestoreReport:
    """Write `options.path` from the source's history (see the module docstring)."""
    started = time.monotonic()
    path = options.path
    if path.exists() or path.is_symlink():
        raise ConfigError(f"--to {path}: it exists; restore writes a new file only (move "
                          "it away or name another path)")
    if not path.parent.is_dir():
        raise ConfigError(f"--to {path}: its folder {path.parent} does not exist")
    reader = HistoryReader(db, options.source_id)
    report = RestoreReport(str(path), options.source_id, options.as_of,
                           _check_time(reader, options))
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".restoring")
    os.close(fd)
    tmp = Path(name)
    try:
        _write(tmp, reader, options, report, progress)
        try:
            os.link(tmp, path)  # fails if PATH appeared meanwhile: never replaced
        except FileExistsError:
            raise ConfigError(f"--to {path}: it appeared while restoring; the restored "
                              "file was not put there") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    report.seconds = time.monotonic() - started
    return report


def _write(tmp: Path, reader: HistoryReader, options: RestoreOptions,
           report: RestoreReport, progress: Progress) -> None:
    jd = options.as_of
    objects = reader.objects_as_of(jd)
    tables = {n: d for n, d in objects.items() if d.get("kind", "table") == "table"}
    views = {n: d for n, d in objects.items() if d.get("kind") == "view"}
    for name in sorted(set(reader.tables()) - set(tables)):
        if reader.schema_as_of(name) is not None:
            report.not_restored.append({"table": name, "why": "its history starts after "
                                        "this moment (or it was dropped before it)"})
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")  # a new file: nothing to roll back to
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        triggers: list[str] = []
        for name, doc in sorted(tables.items(), key=lambda kv: (kv[1]["jd"], kv[0])):
            conn.execute(doc["sql"])
            writer = TableWriter(conn, name)
            if doc.get("rows_kept", True):
                task = progress.task(name, doc.get("rows"))
                restore_rows(reader, writer, name, jd, task)
                task.finish()
            else:
                report.not_restored.append({"table": name, "why": "left out of history "
                                            "([history] exclude): its schema only, no rows"})
            for sql in doc.get("indexes") or []:
                conn.execute(sql)
            seq = _sequence(conn, name, doc["sql"], doc.get("sequence"), writer.max_rowid)
            report.tables.append({"table": name, "rows": writer.rows, "sequence": seq})
            triggers += doc.get("triggers") or []
        for name, doc in sorted(views.items()):
            conn.execute(doc["sql"])
            report.views.append(name)
            triggers += doc.get("triggers") or []
        for sql in triggers:
            conn.execute(sql)
        report.triggers = len(triggers)
        conn.execute("COMMIT")
        checked = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        report.integrity = "; ".join(map(str, checked))
        if checked != ["ok"]:
            raise SyncdError(f"the restored file fails PRAGMA integrity_check: "
                             f"{report.integrity[:300]}")
    except sqlite3.Error as exc:
        raise SyncdError(f"restore failed writing the new file: {exc}") from None
    finally:
        conn.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
