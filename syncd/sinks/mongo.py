"""The MongoDB sink: bulk writes, unordered, with per-document rejection.

A batch MongoDB rejects for one bad document does not fail the rest: the write
is unordered, and each refused document comes back as `Rejected` (its id and the
server's reason) for the quarantine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import DeleteOne, ReplaceOne
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidDocument,
    WriteError,
)

from syncd.redact import scrub
from syncd.sinks.base import Rejected, Sink

DUPLICATE_KEY = 11000


def _rejections(exc: BulkWriteError, docs: Sequence[dict[str, Any]],
                allow_duplicates: bool) -> list[Rejected]:
    out = []
    for err in exc.details.get("writeErrors", []):
        if allow_duplicates and err.get("code") == DUPLICATE_KEY:
            continue
        out.append(Rejected(docs[err["index"]]["_id"], scrub(str(err.get("errmsg", err)))))
    return out


class MongoSink(Sink):
    def __init__(self, db: Database) -> None:
        self.db = db

    def _one_by_one(self, collection: str, docs: Sequence[dict[str, Any]],
                    upsert: bool) -> list[Rejected]:
        """Fallback when the client refuses a whole batch (a document too large to send)."""
        coll = self.db[collection]
        rejected = []
        for doc in docs:
            try:
                if upsert:
                    coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
                else:
                    coll.insert_one(doc)
            except DuplicateKeyError:
                if upsert:
                    raise
            except (DocumentTooLarge, InvalidDocument, OverflowError, WriteError) as exc:
                rejected.append(Rejected(doc["_id"], scrub(f"{type(exc).__name__}: {exc}")))
        return rejected

    def insert(self, collection: str, docs: Sequence[dict[str, Any]]) -> list[Rejected]:
        if not docs:
            return []
        try:
            self.db[collection].insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            # A duplicate means the same deterministic document is already there.
            return _rejections(exc, docs, allow_duplicates=True)
        except (DocumentTooLarge, InvalidDocument, OverflowError):
            return self._one_by_one(collection, docs, upsert=False)
        return []

    def upsert(self, collection: str, docs: Sequence[dict[str, Any]]) -> list[Rejected]:
        if not docs:
            return []
        ops = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
        try:
            self.db[collection].bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            return _rejections(exc, docs, allow_duplicates=False)
        except (DocumentTooLarge, InvalidDocument, OverflowError):
            return self._one_by_one(collection, docs, upsert=True)
        return []

    def delete(self, collection: str, ids: Sequence[Any]) -> int:
        if not ids:
            return 0
        result = self.db[collection].bulk_write([DeleteOne({"_id": i}) for i in ids],
                                                ordered=False)
        return result.deleted_count
