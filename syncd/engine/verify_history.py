"""verify's check of history: each row's last version is the row as it is now.

`syncd restore` and `Tracker(as_of=...)` rebuild rows from `_syncd_history`; verify proves
that what they read as of now is the table: each row's last version (from the last
completed baseline on, as a restore reads them: `HistoryReader.latest`) holds the row's
rowid and every column's value with its storage class (syncd.projection.canonical), and
a row no longer in the table ends in a delete. Earlier versions are not compared: nothing
is left of the past to compare them with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from bson.int64 import Int64

from legacy_adapters.base import TableInfo
from syncd.engine.compare import IdKey, id_key
from syncd.projection.canonical import canonical_row
from syncd.sinks.history import decode_value
from syncd.sinks.history_reader import HistoryReader


def _stored(value: Any) -> Any:
    """A version's value as sqlite3 reads it (BSON gives an int64 back as `Int64`)."""
    value = decode_value(value)
    return int(value) if value.__class__ is Int64 else value


def _digest(rowid: Any, cols: Sequence[str], values: Iterable[Any]) -> bytes:
    blob = repr((rowid, tuple(cols), canonical_row(list(values))))
    return hashlib.blake2b(blob.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class HistoryCompare:
    """One table's rows against their last versions, chunk by chunk (like `compare_docs`:
    what is left in `last` after the table's last chunk holds rows the table no longer has)."""

    def __init__(self, reader: HistoryReader, info: TableInfo) -> None:
        self.cols = list(info.column_names)
        self.offset = 1 if info.rowid else 0
        # doc `_id` key -> (digest of the last version, its key); a row whose last version
        # is a delete is not in it (the table has no such row: nothing to compare).
        self.last: dict[IdKey, tuple[bytes, list[Any]]] = {}
        for doc in reader.latest(info.name):
            if doc.get("cols") is None:
                continue
            values = map(_stored, doc["vals"])
            self.last[id_key(doc["doc"])] = (_digest(doc.get("rowid"), doc["cols"], values),
                                             doc.get("key") or [])

    def compare(self, ids: Sequence[Any], rows: Sequence[Sequence[Any]]
                ) -> tuple[list[int], list[int]]:
        """The positions in `rows` (with their documents' `ids`) of rows that have no
        version, and of rows whose last version differs."""
        missing, different = [], []
        off, pop = self.offset, self.last.pop
        for i, (oid, row) in enumerate(zip(ids, rows, strict=True)):
            found = pop(id_key(oid), None)
            if found is None:
                missing.append(i)
            elif found[0] != _digest(row[0] if off else None, self.cols, row[off:]):
                different.append(i)
        return missing, different

    def extra_keys(self) -> list[list[Any]]:
        """The keys of the rows history still holds that the table no longer has."""
        return [key for _, key in self.last.values()]
