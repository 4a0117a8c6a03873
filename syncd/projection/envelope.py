"""The document envelope: the fields syncd adds around what a row projects to.

Every mirrored document is `_id` first, then the row's fields (the builder's, or every
column's, with `_rowid` for a table without a primary key), then `_orig` when a builder
converted a value its mapping's inverse could not give back exactly (the part the
conversion drops: syncd.projection.inverse), then `_flags` when a value was kept as it
was, then `_source` (which source wrote it) and `_v` (which migration version made it).
`envelope()` builds that, and `envelope_display()` the same as a dict display for the
per-table functions compiled once (`compiled.py`); nothing else spells the reserved
fields out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ID, ROWID, FLAGS, SOURCE, VERSION = "_id", "_rowid", "_flags", "_source", "_v"
ORIG = "_orig"
RESERVED_FIELDS = frozenset({ID, ROWID, ORIG, FLAGS, SOURCE, VERSION})


def envelope(oid: Any, body: Mapping[str, Any] | Iterable[tuple[str, Any]], source: str,
             version: int, flags: list[str] | None = None,
             orig: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document of one row: `_id`, `body`'s fields, `_orig` and `_flags` (if any),
    `_source`, `_v`.

    `body` is what the builder returned (a dict, or anything `dict.update` takes: what
    it raises for an odd return value goes to the quarantine)."""
    if not flags and body.__class__ is dict:  # the common cases: one dict display
        if orig:
            return {ID: oid, **body, ORIG: orig, SOURCE: source, VERSION: version}  # type: ignore[dict-item]
        return {ID: oid, **body, SOURCE: source, VERSION: version}  # type: ignore[dict-item]
    doc = {ID: oid}
    doc.update(body)
    if orig:
        doc[ORIG] = orig
    if flags:
        doc[FLAGS] = flags
    doc[SOURCE] = source
    doc[VERSION] = version
    return doc


def envelope_display(items: str, rowid: str | None = None) -> str:
    """`envelope()` as the source of a dict display: `items` (generated `key: value, `
    pairs) between `_id` (the name `oid`) and `_source`, `_v` (`source`, `version`);
    `rowid`, the expression of `_rowid`, after them."""
    rowid_item = f"{ROWID!r}: {rowid}, " if rowid is not None else ""
    return f"{{{ID!r}: oid, {items}{rowid_item}{SOURCE!r}: source, {VERSION!r}: version}}"
