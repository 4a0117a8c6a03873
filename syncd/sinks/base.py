"""The Sink boundary. Every write is idempotent: documents carry deterministic ids."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A document's `_id` -> the legacy key of its row (primary key column -> value, or
# {"rowid": n}): what a sink that reports its writes (events) names them by.
LegacyKeys = Mapping[Any, Mapping[str, Any]]


@dataclass(frozen=True)
class Rejected:
    """A document the target refused, and why (it goes to the quarantine)."""

    id: Any
    error: str


class Sink(ABC):
    """Writes documents to named collections.

    `keys` (every write's optional last argument) are the legacy keys of the written
    documents, for a sink that reports what it wrote; writers compute them only where
    `wants_keys` is true, and a sink that does not report ignores them.
    """

    wants_keys = False

    @abstractmethod
    def insert(self, collection: str, docs: Sequence[dict[str, Any]],
               keys: LegacyKeys | None = None) -> list[Rejected]:
        """Add documents known to be absent (fresh staging collections, missing rows)."""

    @abstractmethod
    def upsert(self, collection: str, docs: Sequence[dict[str, Any]],
               fresh: Collection[Any] = (), keys: LegacyKeys | None = None) -> list[Rejected]:
        """Insert or replace whole documents by `_id`.

        `fresh` holds the ids of documents that are probably absent (their rows were
        just inserted). It is a hint for speed only: a sink may try to insert those,
        but must replace any that turn out to exist, so the result is the same.
        """

    @abstractmethod
    def delete(self, collection: str, ids: Sequence[Any],
               keys: LegacyKeys | None = None) -> int:
        """Remove documents by `_id`; returns how many were removed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
