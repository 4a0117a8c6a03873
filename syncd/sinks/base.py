"""The Sink boundary. Every write is idempotent: documents carry deterministic ids."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rejected:
    """A document the target refused, and why (it goes to the quarantine)."""

    id: Any
    error: str


class Sink(ABC):
    """Writes documents to named collections."""

    @abstractmethod
    def insert(self, collection: str, docs: Sequence[dict[str, Any]]) -> list[Rejected]:
        """Add documents known to be absent (fresh staging collections, missing rows)."""

    @abstractmethod
    def upsert(self, collection: str, docs: Sequence[dict[str, Any]],
               fresh: Collection[Any] = ()) -> list[Rejected]:
        """Insert or replace whole documents by `_id`.

        `fresh` holds the ids of documents that are probably absent (their rows were
        just inserted). It is a hint for speed only: a sink may try to insert those,
        but must replace any that turn out to exist, so the result is the same.
        """

    @abstractmethod
    def delete(self, collection: str, ids: Sequence[Any]) -> int:
        """Remove documents by `_id`; returns how many were removed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
