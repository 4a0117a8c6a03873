"""Versions of the rows a reconcile repairs: what no change log gave.

History is fed by the capture triggers while `syncd run` follows. A change no trigger
logged (committed between `syncd migrate` and the first `syncd run`, in scan mode, in a
gap of the log) is found only by a reconcile, which rewrites the row's document or
deletes it. The reconcile records it here too, so that history, restore and the as-of
answers agree with the documents: the row as the reconcile read it (`insert` for a row
the target lacked, `update` for one that differed), or a `delete` for a document whose
row is gone, stamped with the moment before the chunk was read (a change committed
after that has a later stamp and wins). A table with no baseline yet is not repaired
here: its baseline pass records every row anyway.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from legacy_adapters.base import Chunk, TableInfo
from syncd.projection.project import Projected, Projector
from syncd.sinks.history import HistoryStore, version
from syncd.sinks.julian import julian_day_now


class Repairs:
    """One table's reconcile pass: the versions of the rows it repairs."""

    def __init__(self, store: HistoryStore, info: TableInfo) -> None:
        self.store, self.info = store, info
        self.names = info.column_names
        self.offset = 1 if info.rowid else 0
        self.stamp = julian_day_now()
        self.recorded = 0

    def add(self, chunk: Chunk, projector: Projector, projected: Projected,
            inserted: Collection[Any], updated: Collection[Any]) -> None:
        """Record the rows of `chunk` whose documents were `inserted` or `updated` (their
        `_id`s); then stamp the next chunk."""
        if inserted or updated:
            if len(projected.docs) == len(chunk.rows) and not projected.quarantined:
                ids = [d["_id"] for d in projected.docs]
            else:
                ids = [projector.make_id(projector.key(r)) for r in chunk.rows]
            table, source, off = self.info.name, self.store.source_id, self.offset
            found = []
            for doc, row in zip(ids, chunk.rows, strict=True):
                op = "insert" if doc in inserted else "update" if doc in updated else None
                if op is not None:
                    found.append(version(source, table, doc, projector.key(row),
                                         row[0] if off else None, op, self.stamp, 0, 0,
                                         dict(zip(self.names, row[off:], strict=True)),
                                         found=True))
            self.recorded += self.store.record(found)
        self.stamp = julian_day_now()

    def deleted(self, ids: Iterable[Any]) -> None:
        """Record a `delete` of each document whose row is gone (its key and rowid as
        history last recorded them; a row history never held needs none)."""
        last = self.store.last_versions(self.info.name, list(ids))
        self.recorded += self.store.record(
            version(self.store.source_id, self.info.name, v["doc"], v["key"], v["rowid"],
                    "delete", self.stamp, 0, 0, None, found=True)
            for v in last.values() if v["op"] != "delete")
