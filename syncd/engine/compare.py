"""Source-vs-target comparison by BSON bytes: what reconcile repairs and verify reports.

Two documents are equal when their BSON encodings are byte-identical (same
fields, order, types and values; NaN and -0.0 included). The target side is read
once per collection into a map of `_id` -> 16-byte digest, so comparing N rows
costs one collection scan and one pass over the source, not N lookups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

RAW = CodecOptions(document_class=RawBSONDocument)
# The embedded SecantusDB tests each document found against the whole `$in` list: a
# query for 5,000 present ids takes 22 s, in batches of 100 well under one.
RECHECK_BATCH = 100
_OID_HEAD = b"\x07_id\x00"


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


IdKey = bytes | str


def raw_id_key(raw: bytes) -> IdKey:
    """A stable key for a stored document's `_id`: the ObjectId's 12 bytes when it is one,
    else (ids syncd never makes) the hex of the `_id` encoded as BSON."""
    if raw[4:9] == _OID_HEAD:
        return raw[9:21]
    return id_key(bson.decode(raw)["_id"])


def id_key(value: Any) -> IdKey:
    """The same key for an `_id` value as `raw_id_key` gives for the stored document."""
    if isinstance(value, bson.ObjectId):
        return value.binary
    return bson.encode({"_id": value}).hex()


def digest_steps(collection: Collection, query: dict[str, Any] | None,
                 out: dict[IdKey, bytes]) -> Iterator[int]:
    """Fill `out` with `_id` key -> digest of the stored BSON for every document of
    `collection` matching `query`, pausing (yielding the count) every 10,000."""
    raw_coll = collection.with_options(codec_options=RAW)
    for n, doc in enumerate(raw_coll.find(query or {}, batch_size=2000), start=1):
        raw = doc.raw
        out[raw_id_key(raw)] = _digest(raw)
        if n % 10_000 == 0:
            yield n


def target_digests(collection: Collection, tick: Callable[[], None] | None = None,
                   query: dict[str, Any] | None = None) -> dict[IdKey, bytes]:
    """`_id` key -> digest of the stored BSON, for every document of `collection` that
    matches `query` (one source's: other sources' documents are never compared).

    `tick` is called every 10,000 documents (long scans stay visibly alive).
    """
    out: dict[IdKey, bytes] = {}
    for _ in digest_steps(collection, query, out):
        if tick is not None:
            tick()
    return out


def compare_docs(docs: list[dict[str, Any]], digests: dict[IdKey, bytes]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split projected docs into (missing, different); matched ids are removed from `digests`.

    What is left in `digests` afterwards are the target's extra documents.
    """
    missing, different = [], []
    encode, pop = bson.encode, digests.pop
    for doc in docs:
        old = pop(id_key(doc["_id"]), None)
        if old is None:
            missing.append(doc)
        elif old != _digest(encode(doc)):
            different.append(doc)
    return missing, different


def recheck(collection: Collection, missing: list[dict[str, Any]],
            different: list[dict[str, Any]]
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(missing, different) against `collection` as it is now: a query for a chunk's
    differing documents (in batches), only when there are. A reconcile compares with digests read
    at its start while the daemon applies the change log between its chunks; a row
    changed meanwhile already has its document, and repairing it again would write it
    twice and record a version the log did give as one it did not (`found`)."""
    docs = missing + different
    raw_coll, now = collection.with_options(codec_options=RAW), {}
    for at in range(0, len(docs), RECHECK_BATCH):
        ids = [d["_id"] for d in docs[at:at + RECHECK_BATCH]]
        now.update((raw_id_key(d.raw), _digest(d.raw))
                   for d in raw_coll.find({"_id": {"$in": ids}}))
    return compare_docs(docs, now)


def key_to_id(key: IdKey) -> Any:
    """The `_id` value back from a key made by `id_key`/`raw_id_key`."""
    if isinstance(key, bytes):
        return bson.ObjectId(key)
    return bson.decode(bytes.fromhex(key))["_id"]
