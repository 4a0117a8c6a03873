"""Deterministic document ids: the same legacy row always gets the same `_id`.

An id is the 12-byte BLAKE2b digest of (source id, table, primary key values),
wrapped as an ObjectId (the type the legacy experiment tracker's code expects).
Each key value is encoded with its SQLite storage class, so the INTEGER 1, the
REAL 1.0 and the TEXT '1' are different keys, as they are in SQLite.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bson import ObjectId

from legacy_adapters.values import RawText


def _part(tag: bytes, payload: bytes) -> bytes:
    return tag + str(len(payload)).encode() + b":" + payload


def encode_value(value: Any) -> bytes:
    """A canonical, typed byte encoding of one SQLite value."""
    if value is None:
        return b"n0:"
    if isinstance(value, bool):  # never produced by sqlite3; kept distinct from ints anyway
        return _part(b"o", b"1" if value else b"0")
    if isinstance(value, int):
        return b"i8:" + value.to_bytes(8, "big", signed=True)
    if isinstance(value, float):
        return _part(b"r", value.hex().encode())
    if isinstance(value, str):
        return _part(b"t", value.encode("utf-8", "surrogatepass"))
    if isinstance(value, RawText):  # TEXT that is not UTF-8: still TEXT, not a BLOB
        return _part(b"x", bytes(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _part(b"b", bytes(value))
    raise TypeError(f"cannot derive an id from a {type(value).__name__} key value")


def id_prefix(source_id: str, table: str) -> bytes:
    """The fixed part of every id of one table of one source."""
    return _part(b"s", source_id.encode()) + _part(b"t", table.encode())


def derive_id(source_id: str, table: str, key: Sequence[Any]) -> ObjectId:
    """The `_id` of the row of `table` whose primary key (or rowid) is `key`."""
    return id_maker(source_id, table)(key)


def id_maker(source_id: str, table: str) -> Callable[[Sequence[Any]], ObjectId]:
    """A fast `key -> ObjectId` function for one table (the prefix is hashed once)."""
    base = hashlib.blake2b(digest_size=12)
    base.update(id_prefix(source_id, table))

    def make(key: Sequence[Any]) -> ObjectId:
        h = base.copy()
        for value in key:
            if value.__class__ is int:  # the common case, inlined
                h.update(b"i8:" + value.to_bytes(8, "big", signed=True))
            else:
                h.update(encode_value(value))
        return ObjectId(h.digest())

    return make


def int_ids_maker(source_id: str, table: str) -> Callable[[Iterable[int]], list[ObjectId]]:
    """`id_maker` for a whole chunk of one-integer keys at once (a rowid or an INTEGER
    primary key: nearly every legacy row), giving the very same ids.

    Every value must be an `int` in SQLite's 64-bit range (the caller checks the
    class). The prefix and the integer's tag are hashed once; per key there is one
    state copy, one 8-byte update and the digest, with no per-value dispatch.
    """
    base = hashlib.blake2b(digest_size=12)
    base.update(id_prefix(source_id, table) + b"i8:")
    copy = base.copy
    pack = struct.Struct(">q").pack

    def make(values: Iterable[int]) -> list[ObjectId]:
        out = []
        append = out.append
        for value in values:
            h = copy()
            h.update(pack(value))
            append(ObjectId(h.digest()))
        return out

    return make
