"""The canonical form of a SQLite value: what "the same row" means for `verify --lossless`.

Two values are the same when SQLite would store the same thing: the same storage
class (`typeof()`: integer, real, text, blob, null) and the same payload. TEXT is
compared by its bytes (valid UTF-8 as `str`, other bytes as `RawText`: either way the
bytes SQLite holds), REAL by its 64-bit pattern (so -0.0 is not 0.0, and inf is
itself), INTEGER as a 64-bit integer. Python's own `==` will not do: 1 == 1.0 ==
True, and -0.0 == 0.0, yet each is another value to SQLite.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from legacy_adapters.values import RawText
from syncd.projection.context import INT64_MAX, INT64_MIN

Canonical = tuple[str, Any]
SHOWN_CHARS = 60
_pack_double = struct.Struct(">d").pack


def canonical(value: Any) -> Canonical:
    """(storage class, payload) of a value as sqlite3 reads it; ("not sqlite", type
    name) for anything SQLite cannot hold (a datetime or dict an inverse left as is)."""
    cls = value.__class__
    if value is None:
        return ("null", None)
    if cls is int and INT64_MIN <= value <= INT64_MAX:
        return ("integer", value)
    if cls is float:
        return ("real", _pack_double(value))
    if cls is str:
        return ("text", value.encode("utf-8", "surrogatepass"))
    if cls is RawText:
        return ("text", bytes(value))
    if cls in (bytes, bytearray, memoryview):
        return ("blob", bytes(value))
    return ("not sqlite", cls.__name__)


def canonical_row(values: Sequence[Any]) -> tuple[Canonical, ...]:
    return tuple(map(canonical, values))


def typeof(value: Any) -> str:
    """SQLite's `typeof()` of a value (or what it is, when SQLite cannot hold it)."""
    kind, payload = canonical(value)
    return kind if kind != "not sqlite" else f"not a SQLite value ({payload})"


def shown(value: Any) -> str:
    """A value for a report: its storage class and a bounded repr."""
    kind, payload = canonical(value)
    if kind == "text" and value.__class__ is RawText:
        text = f"x'{bytes(value).hex()}' (not UTF-8)"
    elif kind == "blob":
        text = f"x'{payload.hex()}'"
    else:
        text = repr(value)
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS] + f"... ({len(text)} chars)"
    return f"{typeof(value)} {text}"


def first_difference(names: Sequence[str], row: Sequence[Any],
                     back: Sequence[Any]) -> tuple[str, Any, Any] | None:
    """(column, row's value, given-back value) of the first column that differs."""
    for name, a, b in zip(names, row, back):
        if canonical(a) != canonical(b):
            return name, a, b
    return None
