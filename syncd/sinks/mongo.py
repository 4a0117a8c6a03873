"""The MongoDB sink: bulk writes, unordered, with per-document rejection.

A batch MongoDB rejects for one bad document does not fail the rest: the write
is unordered, and each refused document comes back as `Rejected` (its id and the
server's reason) for the quarantine.

An upsert sends the documents it is told are fresh (rows just inserted) as
inserts: a server inserts a batch of new documents for a fraction of what a
replace-with-upsert of each costs (a third on the embedded SecantusDB). A fresh
document that exists after all (a change applied again after a crash, a row the
backfill or a reconcile already copied) fails with a duplicate key and is then
replaced, so the outcome is exactly that of a replace.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from pymongo import DeleteOne, InsertOne, ReplaceOne
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidDocument,
    WriteError,
)

from syncd.redact import scrub
from syncd.retry import raise_if_passing
from syncd.sinks.base import LegacyKeys, Rejected, Sink

DUPLICATE_KEY = 11000


def _write_errors(exc: BulkWriteError) -> list[dict[str, Any]]:
    """The documents' errors; a batch that failed for a passing server state raises
    `BatchNotTaken` (an `AutoReconnect`) instead (`raise_if_passing`)."""
    raise_if_passing(exc)
    return list(exc.details.get("writeErrors", []))


def _rejections(errors: list[dict[str, Any]], docs: Sequence[dict[str, Any]]) -> list[Rejected]:
    """The documents these write errors refer to (by index), with the server's reason."""
    return [Rejected(docs[e["index"]]["_id"], scrub(str(e.get("errmsg", e)))) for e in errors]


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

    def insert(self, collection: str, docs: Sequence[dict[str, Any]],
               keys: LegacyKeys | None = None) -> list[Rejected]:
        if not docs:
            return []
        try:
            self.db[collection].insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            # A duplicate means the same deterministic document is already there.
            return _rejections([e for e in _write_errors(exc)
                                if e.get("code") != DUPLICATE_KEY], docs)
        except (DocumentTooLarge, InvalidDocument, OverflowError):
            return self._one_by_one(collection, docs, upsert=False)
        return []

    def upsert(self, collection: str, docs: Sequence[dict[str, Any]],
               fresh: Collection[Any] = (), keys: LegacyKeys | None = None) -> list[Rejected]:
        if not docs:
            return []
        inserted = [d["_id"] in fresh for d in docs] if fresh else [False] * len(docs)
        ops = [InsertOne(d) if new else ReplaceOne({"_id": d["_id"]}, d, upsert=True)
               for d, new in zip(docs, inserted, strict=True)]
        try:
            self.db[collection].bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            # A fresh document that exists after all is replaced instead.
            again, refused = [], []
            for err in _write_errors(exc):
                exists = inserted[err["index"]] and err.get("code") == DUPLICATE_KEY
                (again if exists else refused).append(err)
            retried = self.upsert(collection, [docs[e["index"]] for e in again])
            return _rejections(refused, docs) + retried
        except (DocumentTooLarge, InvalidDocument, OverflowError):
            return self._one_by_one(collection, docs, upsert=True)
        return []

    def delete(self, collection: str, ids: Sequence[Any],
               keys: LegacyKeys | None = None) -> int:
        if not ids:
            return 0
        try:
            result = self.db[collection].bulk_write([DeleteOne({"_id": i}) for i in ids],
                                                    ordered=False)
        except BulkWriteError as exc:
            raise_if_passing(exc)
            raise
        return result.deleted_count
