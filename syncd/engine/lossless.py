"""`syncd verify --lossless`: every row comes back exactly from its document.

verify already proves the target equals the projection, byte for byte; this adds
inverse(projection(row)) == row on every row, value by value with its storage class
(syncd.projection.canonical). The projection is taken through BSON (encoded and
decoded, as MongoDB stores it: a date loses its microseconds there), so a value the
store cannot hold is caught even before it is written. A mapping whose builder has
no inverse cannot be proved: it is named as lossy instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bson

from syncd.projection.canonical import first_difference, shown
from syncd.projection.inverse import InverseError, Inverter
from syncd.projection.model import TableMap
from syncd.projection.project import Projector


@dataclass(frozen=True)
class Loss:
    """One row its document does not give back: where, and the two values."""

    key: dict[str, Any]
    column: str
    row_value: str
    given_back: str

    def document(self) -> dict[str, Any]:
        return {"key": self.key, "column": self.column, "row": self.row_value,
                "given_back": self.given_back}


def lossy_line(table: str, mapping: TableMap) -> str:
    """Why a mapping cannot be proved lossless, for the report."""
    return (f"table {table} -> {mapping.collection}: migration {mapping.version:04d} builds "
            "its documents and declares no inverse (map_table(..., inverse=)), so the "
            "rows cannot be given back from MongoDB: lossy")


def losses(projector: Projector, inverter: Inverter, rows: Sequence[Sequence[Any]],
           docs: Sequence[dict[str, Any]]) -> list[Loss]:
    """The rows of a chunk whose projected (and BSON-stored) document does not give them
    back. Rows without a document (quarantined) are verify's to count, not these."""
    by_id = {d["_id"]: d for d in docs}
    ids = projector.chunk_ids(rows) or [projector.make_id(projector.key(r)) for r in rows]
    out = []
    encode, decode = bson.encode, bson.decode
    for row, oid in zip(rows, ids):
        doc = by_id.get(oid)
        if doc is None:
            continue
        values = inverter.compared(row)
        try:
            back = inverter.row(decode(encode(doc)))
        except InverseError as exc:
            out.append(Loss(projector.key_document(row), exc.column or "-", "-", str(exc)))
            continue
        diff = first_difference(inverter.names, values, back)
        if diff is not None:
            column, a, b = diff
            out.append(Loss(projector.key_document(row), column, shown(a), shown(b)))
    return out
