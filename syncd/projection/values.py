"""SQLite values as BSON, faithfully.

SQLite is dynamically typed: any column may hold any storage class. Integers,
reals (including +-Inf), text, BLOBs and NULL all have exact BSON forms and pass
through unchanged. TEXT that is not valid UTF-8 cannot be a BSON string; it is
kept byte-exact as Binary with the user subtype `TEXT_SUBTYPE`, and counted.

Column names become field names. MongoDB reserves `_id`, and `.` / a leading `$`
are awkward in queries, so those characters are swapped for their full-width
forms (and syncd's own `_id`, `_rowid`, `_flags` are protected the same way).
"""

from __future__ import annotations

from typing import Any

from bson.binary import Binary
from bson.int64 import Int64

from legacy_adapters.values import RawText
from syncd.projection.envelope import RESERVED_FIELDS

TEXT_SUBTYPE = 0x80


def to_bson(value: Any) -> Any:
    """The BSON form of a value read by the careful path (`RawText` -> Binary)."""
    if value.__class__ is RawText:
        return Binary(bytes(value), TEXT_SUBTYPE)
    return value


def from_bson(value: Any) -> Any:
    """A stored value as sqlite3 reads it: `to_bson` undone (TEXT that is not UTF-8 back
    to `RawText`, other binary to bytes, a BSON int64 to int); every other value is its own
    SQLite form."""
    cls = value.__class__
    if cls is Binary:
        return RawText(value) if value.subtype == TEXT_SUBTYPE else bytes(value)
    if cls is Int64:
        return int(value)
    return value


def escape_field(name: str) -> str:
    """A MongoDB-safe field name for a legacy column name (reversible)."""
    out = name.replace(".", "\uff0e")
    if out.startswith("$"):
        out = "\uff04" + out[1:]
    if out in RESERVED_FIELDS:
        out = "\uff3f" + out[1:]
    return out
