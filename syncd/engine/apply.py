"""Make the documents of some legacy rows match those rows as they are now.

Both change-capture modes end here. Given the identity keys of rows that changed
(inserted, updated, deleted, or re-keyed), the applier reads the rows' current
state in one short statement per batch, projects the ones that exist and upserts
them, and deletes the documents of the ones that are gone. It applies state, not
the logged operation, so applying a change twice, or out of order, or after a
later change to the same row, still lands on the truth.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from legacy_adapters.base import Chunk, Source, TableInfo
from syncd.checkpoint.store import StateStore
from syncd.engine.quarantine import quarantine
from syncd.projection.model import TableMap
from syncd.projection.project import NULL_KEY_MARK, Params, Projector, gc_paused
from syncd.sinks.base import Rejected, Sink


@dataclass
class Applied:
    """What one apply did to one collection."""

    table: str
    collection: str
    upserted: list[Any] = field(default_factory=list)
    deleted: list[Any] = field(default_factory=list)
    quarantined: int = 0


class Applier:
    """Applies changed keys of mapped tables to their collections."""

    def __init__(self, source: Source, sink: Sink, store: StateStore,
                 params: Params) -> None:
        self.source, self.sink, self.store, self.params = source, sink, store, params
        self._projectors: dict[str, Projector] = {}
        # Tables with rows in quarantine: only their applies look for rows to release.
        self.quarantined_tables: set[str] = set(store.quarantined_tables())

    def projector(self, info: TableInfo, mapping: TableMap) -> Projector:
        """A projector for the table as it is now (rebuilt when its columns change)."""
        current = self._projectors.get(info.name)
        if current is None or current.table != info or current.mapping != mapping:
            current = self._projectors[info.name] = Projector(info, mapping, self.params)
        return current

    @staticmethod
    def identity(info: TableInfo, rowid: int | None, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """The identity `Projector.key` gives a row, from a logged rowid and key values."""
        if not info.primary_key:
            return (rowid,)
        values = tuple(key[:len(info.primary_key)])
        if info.rowid and None in values:
            return (NULL_KEY_MARK, rowid)
        return values

    def fetch(self, info: TableInfo, wanted: set[tuple[Any, ...]]) -> Chunk:
        """The current rows of these identity keys (absent ones are gone)."""
        by_rowid = [k[-1] for k in wanted if not info.primary_key or k[0] is NULL_KEY_MARK]
        by_key = [k for k in wanted if info.primary_key and k[0] is not NULL_KEY_MARK]
        return self.source.fetch(info, rowids=by_rowid, keys=by_key)

    def write(self, info: TableInfo, mapping: TableMap, chunk: Chunk,
              wanted: set[tuple[Any, ...]] | None = None,
              inserted: set[tuple[Any, ...]] | Literal[True] | None = None) -> Applied:
        """Upsert the documents of `chunk`'s rows; with `wanted`, delete those of the
        wanted keys that are not among the rows (their rows are gone). `inserted`:
        keys whose rows were logged as inserted, or True for every row of the chunk
        (the sink may insert their documents, a hint that never changes the outcome)."""
        projector = self.projector(info, mapping)
        with gc_paused():
            projected = projector.project(chunk.rows, careful=chunk.raw_text > 0)
        result = Applied(info.name, mapping.collection)
        if inserted is True:
            fresh = {d["_id"] for d in projected.docs}
        else:
            fresh = {projector.make_id(k) for k in inserted} if inserted else set()
        # The rows' legacy keys, for a sink that names what it wrote by them (events).
        keys = (projector.legacy_keys(chunk.rows, projected.docs) if self.sink.wants_keys
                else None)
        rejected: list[Rejected] = self.sink.upsert(mapping.collection, projected.docs,
                                                    fresh, keys)
        bad = {r.id for r in rejected}
        result.upserted = [d["_id"] for d in projected.docs if d["_id"] not in bad]
        if wanted:
            present = {projector.key(row) for row in chunk.rows}
            gone_keys = [k for k in wanted if k not in present]
            gone = [projector.make_id(k) for k in gone_keys]
            if gone:
                self.sink.delete(mapping.collection, gone, {
                    oid: projector.identity_document(k) for oid, k in zip(gone, gone_keys)}
                    if self.sink.wants_keys else None)
                result.deleted = gone
        if projected.quarantined or rejected:
            result.quarantined = quarantine(self.store, projector, chunk.rows,
                                            projected.quarantined, rejected)
            self.quarantined_tables.add(info.name)
        if info.name in self.quarantined_tables:
            self.store.release_quarantine(info.name, result.upserted + result.deleted)
        return result


def group_keys(changes: Iterable[tuple[str, str, int | None, tuple[Any, ...]]],
               tables: dict[str, TableInfo]) -> dict[str, dict[tuple[Any, ...], str]]:
    """(table, op, rowid, key values) changes, oldest first, as identity keys per
    table (deduplicated), each with its first logged operation ('i', 'u', 'd')."""
    out: dict[str, dict[tuple[Any, ...], str]] = defaultdict(dict)
    for table, op, rowid, key in changes:
        info = tables.get(table)
        if info is not None:
            out[table].setdefault(Applier.identity(info, rowid, key), op)
    return out
