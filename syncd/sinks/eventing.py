"""A sink that announces what another sink wrote (the daemon's writes become events)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from syncd.checkpoint.store import STAGE_PREFIX
from syncd.sinks.base import Rejected, Sink
from syncd.sinks.events import EventPublisher


class EventingSink(Sink):
    """Writes through `inner`, then announces the documents it accepted.

    `tables` maps collection -> legacy table for the events. Staging collections
    are not announced: their documents become visible only at the swap.
    """

    def __init__(self, inner: Sink, publisher: EventPublisher,
                 tables: dict[str, str] | None = None) -> None:
        self.inner, self.publisher = inner, publisher
        self.tables = tables if tables is not None else {}

    def _announce(self, collection: str, operation: str, docs: Sequence[dict[str, Any]],
                  rejected: list[Rejected]) -> None:
        if collection.startswith(STAGE_PREFIX):
            return
        bad = {r.id for r in rejected}
        ids = [d["_id"] for d in docs if d["_id"] not in bad]
        self.publisher.announce(collection, self.tables.get(collection), operation, ids)

    def insert(self, collection: str, docs: Sequence[dict[str, Any]]) -> list[Rejected]:
        rejected = self.inner.insert(collection, docs)
        self._announce(collection, "upsert", docs, rejected)
        return rejected

    def upsert(self, collection: str, docs: Sequence[dict[str, Any]],
               fresh: Collection[Any] = ()) -> list[Rejected]:
        rejected = self.inner.upsert(collection, docs, fresh)
        self._announce(collection, "upsert", docs, rejected)
        return rejected

    def delete(self, collection: str, ids: Sequence[Any]) -> int:
        deleted = self.inner.delete(collection, ids)
        if not collection.startswith(STAGE_PREFIX):
            self.publisher.announce(collection, self.tables.get(collection), "delete", ids)
        return deleted

    def close(self) -> None:
        self.inner.close()
