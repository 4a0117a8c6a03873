"""A sink that announces what another sink wrote (the daemon's writes become events)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from syncd.checkpoint.store import STAGE_PREFIX
from syncd.sinks.base import LegacyKeys, Rejected, Sink
from syncd.sinks.events import EventPublisher


class EventingSink(Sink):
    """Writes through `inner`, then announces the documents it accepted, by id and by
    the legacy key of their rows where the writer gave it (`keys`).

    `tables` maps collection -> legacy table for the events. Staging collections
    are not announced: their documents become visible only at the swap.
    """

    def __init__(self, inner: Sink, publisher: EventPublisher,
                 tables: dict[str, str] | None = None) -> None:
        self.inner, self.publisher = inner, publisher
        self.tables = tables if tables is not None else {}

    @property
    def wants_keys(self) -> bool:  # type: ignore[override]
        return self.publisher.client is not None

    def _announce(self, collection: str, operation: str, docs: Sequence[dict[str, Any]],
                  rejected: list[Rejected], keys: LegacyKeys | None) -> None:
        if collection.startswith(STAGE_PREFIX):
            return
        bad = {r.id for r in rejected}
        ids = [d["_id"] for d in docs if d["_id"] not in bad]
        self.publisher.announce(collection, self.tables.get(collection), operation, ids, keys)

    def insert(self, collection: str, docs: Sequence[dict[str, Any]],
               keys: LegacyKeys | None = None) -> list[Rejected]:
        rejected = self.inner.insert(collection, docs, keys)
        self._announce(collection, "upsert", docs, rejected, keys)
        return rejected

    def upsert(self, collection: str, docs: Sequence[dict[str, Any]],
               fresh: Collection[Any] = (), keys: LegacyKeys | None = None) -> list[Rejected]:
        rejected = self.inner.upsert(collection, docs, fresh, keys)
        self._announce(collection, "upsert", docs, rejected, keys)
        return rejected

    def delete(self, collection: str, ids: Sequence[Any],
               keys: LegacyKeys | None = None) -> int:
        deleted = self.inner.delete(collection, ids, keys)
        if not collection.startswith(STAGE_PREFIX):
            self.publisher.announce(collection, self.tables.get(collection), "delete", ids,
                                    keys)
        return deleted

    def close(self) -> None:
        self.inner.close()
