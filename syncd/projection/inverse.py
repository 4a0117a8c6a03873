"""Documents back to rows: the inverse each mapping states beside its projection.

The generic mapping (no builder) is its own inverse: every column is a field of the
same (escaped) name holding the value in its BSON form, and `from_bson` undoes that.
A builder's mapping declares `inverse(doc, ctx)`, returning every column's value;
`InverseContext` (syncd.projection.inverse_context) has one helper per `RowContext`
conversion, undoing it with the help of the document's `_orig` (what the conversion
dropped, see syncd.projection.context):

- `datetime`: a BSON date back to the naive wall time in the configured zone, as
  `isoformat()` writes it, plus the kept sub-millisecond microseconds; or the kept text;
- `json_object`: an embedded document back to `json.dumps(obj)`, or the kept text;
- `boolean`: true/false back to the INTEGER 1/0, or the kept value.

A field that holds anything else (the conversion flagged the value and kept it as it
was) gives that value back. `verify --lossless` proves on every row that this
reproduces the row (syncd.projection.canonical says what "the same" means).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from legacy_adapters.base import TableInfo
from syncd.projection.context import Params, raised_at
from syncd.projection.envelope import ORIG, ROWID
from syncd.projection.inverse_context import InverseContext
from syncd.projection.model import TableMap
from syncd.projection.values import escape_field, from_bson

_MISSING = object()


class InverseError(Exception):
    """A document the inverse cannot turn back into its row; `column` says where."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


class Inverter:
    """One table's inverse: a stored document back to the values `compared` takes from
    the table's rows (every column, and the rowid where the document keeps one)."""

    def __init__(self, table: TableInfo, mapping: TableMap, params: Params) -> None:
        self.columns = list(table.column_names)
        self.fields = [escape_field(c) for c in self.columns]
        self.offset = 1 if table.rowid else 0
        # The generic document of a table without a primary key holds its rowid.
        self.with_rowid = mapping.build is None and bool(table.rowid) and \
            not table.primary_key
        self.names = self.columns + (["rowid"] if self.with_rowid else [])
        self.inverse = mapping.inverse
        self.generic = mapping.build is None
        self.ctx = InverseContext(params)

    def compared(self, row: Sequence[Any]) -> list[Any]:
        """The values of a source row (as `Source.scan` gives it) that `row()` gives back."""
        values = list(row[self.offset:])
        if self.with_rowid:
            values.append(row[0])
        return values

    def row(self, doc: Mapping[str, Any]) -> list[Any]:
        """The row's values back from its stored document, in `names` order."""
        if self.generic:
            out = [doc.get(f, _MISSING) for f in self.fields]
            if self.with_rowid:
                out.append(doc.get(ROWID, _MISSING))
            for name, value in zip(self.names, out):
                if value is _MISSING:
                    raise InverseError(name, "the document has no field for it")
            return [from_bson(v) for v in out]
        if self.inverse is None:
            raise InverseError("", "the mapping declares no inverse")
        self.ctx.orig = doc.get(ORIG) or {}
        try:
            given = self.inverse(doc, self.ctx)
        except Exception as exc:  # any failure names the row, not the whole run
            raise InverseError("", f"the inverse failed ({type(exc).__name__}: {exc})"
                               f"{raised_at(exc)}") from None
        extra = set(given) - set(self.columns)
        if extra:
            raise InverseError(sorted(extra)[0], "the inverse gives a column the table "
                               "does not have")
        out = []
        for name in self.columns:
            value = given.get(name, _MISSING)
            if value is _MISSING:
                raise InverseError(name, "the inverse gives no value for it")
            out.append(from_bson(value))
        return out

