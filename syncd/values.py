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

TEXT_SUBTYPE = 0x80
RESERVED_FIELDS = frozenset({"_id", "_rowid", "_flags"})


class RawText(bytes):
    """A TEXT value whose bytes are not valid UTF-8 (as read by `text_factory`)."""


def text_factory(data: bytes) -> str | RawText:
    """sqlite3 text factory for the careful path: decode, or keep the raw bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return RawText(data)


def to_bson(value: Any) -> Any:
    """The BSON form of a value read by the careful path (`RawText` -> Binary)."""
    if value.__class__ is RawText:
        return Binary(bytes(value), TEXT_SUBTYPE)
    return value


def escape_field(name: str) -> str:
    """A MongoDB-safe field name for a legacy column name (reversible)."""
    out = name.replace(".", "\uff0e")
    if out.startswith("$"):
        out = "\uff04" + out[1:]
    if out in RESERVED_FIELDS:
        out = "\uff3f" + out[1:]
    return out


def unescape_field(name: str) -> str:
    """The legacy column name of a field made by `escape_field`."""
    if name.startswith("\uff3f") and "_" + name[1:] in RESERVED_FIELDS:
        name = "_" + name[1:]
    if name.startswith("\uff04"):
        name = "$" + name[1:]
    return name.replace("\uff0e", ".")
