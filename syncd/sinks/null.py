"""A sink that discards: measures the read + project path alone (bench/backfill.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from syncd.sinks.base import LegacyKeys, Rejected, Sink


class NullSink(Sink):
    def __init__(self) -> None:
        self.documents = 0

    def insert(self, collection: str, docs: Sequence[dict[str, Any]],
               keys: LegacyKeys | None = None) -> list[Rejected]:
        self.documents += len(docs)
        return []

    def upsert(self, collection: str, docs: Sequence[dict[str, Any]],
               fresh: Collection[Any] = (), keys: LegacyKeys | None = None) -> list[Rejected]:
        self.documents += len(docs)
        return []

    def delete(self, collection: str, ids: Sequence[Any],
               keys: LegacyKeys | None = None) -> int:
        return 0
