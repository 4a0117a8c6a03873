"""History's starting point: every row as the first sync reads it, then its SQL.

SQLite keeps no past, so history can only start where syncd first reads a table.
The backfill (`syncd migrate`, and the first `syncd run`) hands each chunk it reads
to a `TablePass` in the same read pass, which records a `snapshot` version per row
(through `HistoryStore`, the one writer of the history collections), stamped with
the moment before the chunk was read: a change committed after that moment has a
later stamp and wins over the snapshot. After the last chunk the table's SQL
(CREATE statement, indexes, legacy triggers, AUTOINCREMENT counter) is recorded:
that record is the mark that the baseline is complete (syncd.sinks.history).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from legacy_adapters.base import Chunk, Definition, Source, TableInfo
from syncd.engine.repairs import Repairs
from syncd.projection.project import Projected, Projector
from syncd.sinks.history import HistoryStore
from syncd.sinks.julian import julian_day_now


class TablePass:
    """One table's baseline pass, begun at `start` (a julian day, kept in the job so a
    resumed pass records the same snapshot ids)."""

    def __init__(self, baseline: Baseline, info: TableInfo, start: float,
                 kept: bool) -> None:
        self.baseline, self.info, self.start, self.kept = baseline, info, start, kept
        # Each chunk is stamped with a moment before its read began (the start, then
        # the end of the previous chunk's recording): a change committed after the
        # stamp is in the read or after it, and its own version, stamped later, wins.
        self.stamp = start
        self.names = info.column_names
        self.offset = 1 if info.rowid else 0
        self.rows = 0

    def add(self, chunk: Chunk, projector: Projector, projected: Projected) -> None:
        """Record a snapshot of every row of `chunk` (also rows the projection refused:
        history keeps the legacy row, whatever the model makes of it)."""
        if not self.kept or not chunk.rows:
            return
        rows = chunk.rows
        self.rows += len(rows)
        if len(projected.docs) == len(rows) and not projected.quarantined:
            docs = [d["_id"] for d in projected.docs]  # in row order (Projector.legacy_keys)
        else:
            docs = projector.chunk_ids(rows) or [projector.make_id(projector.key(r))
                                                 for r in rows]
        keys = list(map(projector.key, rows))
        off = self.offset
        rowids = [r[0] for r in rows] if off else [None] * len(rows)
        values = [r[off:] for r in rows] if off else rows
        self.baseline.store.record_snapshots(self.info.name, self.start, self.stamp, docs,
                                             keys, rowids, self.names, values,
                                             chunk.raw_text > 0)
        self.stamp = julian_day_now()

    def finish(self) -> None:
        """Record the table's SQL: the baseline is complete from here on."""
        jd = julian_day_now()  # before the read: its counter holds every insert until then
        found = self.baseline.source.definitions().get(self.info.name)
        if found is None or found.kind != "table":
            return  # dropped meanwhile: it has no SQL to restore
        self.baseline.record(found, jd, baseline=self.start, rows_kept=self.kept,
                             rows=self.rows if self.kept else None,
                             columns=self.names)


class Baseline:
    """Decides which tables still need a baseline and records views' SQL."""

    def __init__(self, store: HistoryStore, source: Source,
                 exclude: Collection[str] = ()) -> None:
        self.store, self.source, self.exclude = store, source, frozenset(exclude)
        store.ensure_indexes()

    def begin(self, info: TableInfo, start: float | None = None) -> TablePass | None:
        """A pass for `info` if it has no baseline of its columns as they are now (None
        otherwise): none yet, or one from before a column was added or renamed (versions
        logged before the capture triggers were renewed lack the new column: a new
        baseline, read after, makes the rows exact again), or one that did not keep the
        rows of a table since taken back into history. `start`: the start of a pass
        being resumed."""
        if not self.needed(info):
            return None
        return TablePass(self, info, julian_day_now() if start is None else start,
                         info.name not in self.exclude)

    def needed(self, info: TableInfo) -> bool:
        """Whether `info` has no baseline of its columns as they are now, nor one that
        keeps (or leaves out) its rows as `[history] exclude` says now."""
        last = self.store.last_baseline(info.name)
        return not (last is not None and last.get("columns") == list(info.column_names)
                    and last.get("rows_kept", True) == (info.name not in self.exclude))

    def undo(self, table: str, start: float | None, docs: list[Any]) -> None:
        """Forget the snapshots a pass begun at `start` recorded of a chunk a crash left
        unfinished: read again, its rows are recorded as they are then."""
        if start is not None:
            self.store.drop_snapshots(table, start, docs)

    def repairs(self, info: TableInfo) -> Repairs | None:
        """The recorder of the rows a reconcile of `info` repairs (None: left out of
        history)."""
        return None if info.name in self.exclude else Repairs(self.store, info)

    def record(self, found: Definition, jd: float, **fields: Any) -> None:
        self.store.record_schema(found.name, jd, 0, found.sql,
                                 list(found.indexes), found.sequence,
                                 triggers=list(found.triggers), kind=found.kind, **fields)

    def record_views(self) -> None:
        """Record each view whose SQL history does not hold as it is now (new or
        changed), and the drop of a recorded view that is gone: `record_changed`, the
        rule the daemon's start and schema changes share (the tables' SQL is recorded
        by their passes)."""
        jd = julian_day_now()
        self.store.record_changed(self.source.definitions(), exclude=self.exclude, jd=jd)

    def record_left_out(self, mirrored: Collection[str]) -> None:
        """Mark the tables history kept until now and keeps no more (`[history] exclude`,
        or no longer `mirrored`): `HistoryStore.record_left_out`, the rule the daemon's
        start shares."""
        self.store.record_left_out(self.source.definitions(), mirrored, self.exclude)


def start_of(entry: dict[str, Any]) -> float | None:
    """The baseline start a job entry saved (None: none yet)."""
    value = entry.get("baseline")
    return float(value) if isinstance(value, (int, float)) else None

