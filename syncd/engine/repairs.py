"""Versions of the rows a reconcile repairs: what no change log gave.

History is fed by the capture triggers while `syncd run` follows. A change no trigger
logged (committed between `syncd migrate` and the first `syncd run`, in scan mode, in a
gap of the log) is found only by a reconcile, which rewrites the row's document or
deletes it. The reconcile records it here too, so that history, restore and the as-of
answers agree with the documents: the row as the reconcile read it (`insert` for a row
the target lacked, `update` for one that differed), or a `delete` for a document whose
row is gone, stamped with the moment just before the chunk was read (a change
committed after that has a later stamp and wins). The stamp is taken as the chunk is
asked for (`stamping`), after the reconcile's pause before it: a stamp taken before
the pause, while the daemon applies new changes, would put a change committed during
it (and read by the chunk) before the moment its statement ran. A table with no
baseline yet is not repaired here: its baseline pass records every row anyway.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any, TypeVar

from legacy_adapters.base import Chunk, TableInfo
from syncd.projection.project import Projected, Projector
from syncd.sinks.history import HistoryStore, version
from syncd.sinks.julian import julian_day_now

T = TypeVar("T")


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
        `_id`s), stamped as `stamping` read it."""
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

    def stamping(self, chunks: Iterable[T]) -> Iterator[T]:
        """`chunks`, each read just after `stamp` is taken (the pause before it, where
        the daemon applies new changes, is over by then)."""
        read = iter(chunks)
        while True:
            self.stamp = julian_day_now()
            try:
                chunk = next(read)
            except StopIteration:
                return
            yield chunk

    def deleted(self, ids: Iterable[Any]) -> None:
        """Record a `delete` of each document whose row is gone (its key and rowid as
        history last recorded them; a row history never held needs none)."""
        last = self.store.last_versions(self.info.name, list(ids))
        self.recorded += self.store.record(
            version(self.store.source_id, self.info.name, v["doc"], v["key"], v["rowid"],
                    "delete", self.stamp, 0, 0, None, found=True)
            for v in last.values() if v["op"] != "delete")
