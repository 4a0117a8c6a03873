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
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson.binary import Binary
from pymongo.database import Database

from legacy_adapters.base import RestoreConflict, RestoreTarget, RowWriter
from syncd.errors import ConfigError
from syncd.progress import Progress
from syncd.sinks.history import counts, order
from syncd.sinks.history_reader import HistoryReader
from syncd.sinks.julian import from_julian_day


@dataclass(frozen=True)
class RestoreOptions:
    """What to restore: the source's history, as of `as_of` (a julian day; None: now)."""

    path: Path
    source_id: str
    as_of: float | None = None
    mode: int = 0o644  # the new file's permissions (syncd.api: 0666 less the user's umask)


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
            # a julian day (a double) holds a moment to about 50 microseconds: shown to
            # the millisecond, as the as-of answers show it
            if jd is None:
                return None
            return from_julian_day(jd + 0.0005 / 86400).isoformat(timespec="milliseconds")

        return {"path": self.path, "source": self.source, "as_of": when(self.as_of),
                "history_starts": when(self.history_starts), "tables": self.tables,
                "views": self.views, "triggers": self.triggers, "rows": self.rows,
                "not_restored": self.not_restored, "integrity": self.integrity,
                "seconds": round(self.seconds, 3)}


def restore_rows(reader: HistoryReader, writer: RowWriter, table: str,
                 jd: float | None, task: Any, counted_from: float) -> int | None:
    """The rows of `table` as of `jd`: the snapshots as they come, then the last state
    of each row a later version touched (syncd.sinks.history: the order). Returns the
    highest rowid inserted from `counted_from` on (the AUTOINCREMENT counter recorded
    then moves only with them), None if none was."""
    since, columns = reader.baseline_as_of(table, jd)
    changed: set[Any] = set()
    for batch in reader.version_batches(table, since, jd, with_cols=columns is None):
        snapshots = [v for v in batch if v["op"] == "snapshot" and counts(v, since)]
        if len(snapshots) != len(batch):
            changed.update(v["doc"] for v in batch if v["op"] != "snapshot")
        writer.add(snapshots, columns)
        task.advance(len(batch))
    writer.flush()
    inserted: int | None = None
    if not changed:
        return inserted
    last: dict[Any, dict[str, Any]] = {}
    snaps: dict[Any, dict[str, Any]] = {}
    for v in reader.versions_of(table, list(changed), since, jd):
        if not counts(v, since):
            continue
        if v["op"] == "snapshot":
            snaps[v["doc"]] = v
        elif (v["op"] == "insert" and v["jd"] >= counted_from and v["rowid"] is not None
              and (inserted is None or v["rowid"] > inserted)):
            inserted = v["rowid"]  # deleted since or not: the counter keeps it
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
    return inserted


def _check_time(reader: HistoryReader, options: RestoreOptions) -> float:
    """When history starts; a moment before it is refused, saying when it starts, and
    so is one before what `[history] keep` left (`HistoryReader.check_kept`)."""
    first = reader.first_schema_jd()
    if first is None:
        raise ConfigError(f"--source {options.source_id}: MongoDB holds no history of this "
                          "source (history starts at its first `syncd migrate`)")
    if options.as_of is not None and options.as_of < first:
        raise ConfigError(
            f"--as-of {from_julian_day(options.as_of).isoformat()}: that is before history "
            f"starts for source {options.source_id} (its first sync recorded the first "
            f"table at {from_julian_day(first).isoformat()}); nothing earlier can be restored")
    if options.as_of is not None:
        reader.check_kept(options.as_of)
    return first


def restore(db: Database, options: RestoreOptions, progress: Progress,
            open_file: Callable[[Path, type], RestoreTarget]) -> RestoreReport:
    """Write `options.path` from the source's history (see the module docstring), with
    `open_file(path, raw_text)` the writer of a new file (legacy_adapters: SQLite's)."""
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
        _write(open_file(tmp, Binary), reader, options, report, progress)
        if options.as_of is not None:  # a prune that began meanwhile changed what was read
            reader.check_kept(options.as_of)
        os.chmod(tmp, options.mode)  # as sqlite3 would make it for the user, not 0600
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


def _conflict_help(table: str, said: str) -> str:
    """What a UNIQUE conflict in the restored rows means, and what to do."""
    return (f"{said} (table {table!r}): history holds two rows with one value of a UNIQUE "
            "column at this moment. A row that an INSERT OR REPLACE removed through a "
            "UNIQUE column other than the key fires no delete trigger, so it is recorded "
            f"only when a reconcile reads the table: run `syncd reconcile {table}` (`syncd "
            "run` reconciles every [daemon] reconcile_seconds) and restore again; a moment "
            "between that statement and the reconcile cannot be restored exactly")


def _write(out: RestoreTarget, reader: HistoryReader, options: RestoreOptions,
           report: RestoreReport, progress: Progress) -> None:
    """Tables (rows, then indexes and counters), then views, then legacy triggers (last,
    so that they do not fire while rows go in); committed and checked by `out`."""
    jd = options.as_of
    objects = reader.objects_as_of(jd)
    tables = {n: d for n, d in objects.items() if d.get("kind", "table") == "table"}
    views = {n: d for n, d in objects.items() if d.get("kind") == "view"}
    for name in sorted(set(reader.tables()) - set(tables)):
        if reader.schema_as_of(name) is not None:
            report.not_restored.append({"table": name, "why": "its history starts after "
                                        "this moment (or it was dropped before it)"})
    try:
        triggers: list[str] = []
        for name, doc in sorted(tables.items(), key=lambda kv: (kv[1]["jd"], kv[0])):
            out.execute(doc["sql"])
            writer = out.table(name)
            inserted = None
            try:  # a UNIQUE conflict shows in the rows, or in an index made over them
                if doc.get("rows_kept", True):
                    task = progress.task(name, doc.get("rows"))
                    inserted = restore_rows(reader, writer, name, jd, task, doc["jd"])
                    task.finish()
                else:
                    why = ("not mirrored since then (a migration left it out)"
                           if doc.get("left_out") == "not mirrored"
                           else "left out of history ([history] exclude)")
                    report.not_restored.append({"table": name,
                                                "why": f"{why}: its schema only, no rows"})
                for sql in doc.get("indexes") or []:
                    out.execute(sql)
            except RestoreConflict as exc:
                raise RestoreConflict(_conflict_help(name, str(exc))) from None
            # the counter the last record read, moved on by the inserts since (a record is
            # stamped before its read: syncd.daemon.counters)
            seq = out.sequence(name, doc["sql"], doc.get("sequence"), inserted)
            report.tables.append({"table": name, "rows": writer.rows, "sequence": seq})
            triggers += doc.get("triggers") or []
        for name, doc in sorted(views.items()):
            out.execute(doc["sql"])
            report.views.append(name)
            triggers += doc.get("triggers") or []
        for sql in triggers:
            out.execute(sql)
        report.triggers = len(triggers)
        report.integrity = out.finish()
    finally:
        out.close()
