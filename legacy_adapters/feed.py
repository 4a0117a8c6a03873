"""The ChangeFeed boundary: what changed in a legacy source since a position.

A daemon follows a source through one feed, chosen once when it starts (in
`syncd.api`); everything mode-specific lives behind this protocol, so the daemon's
loop reads the same whatever the feed:

- **position**: each feed owns where it stands (a change-log seq, per-table
  high-water marks, ...) and is the only writer of it, in memory and saved;
- **start-up** (`open`, then `settle` once the target is caught up);
- **reading** (`read`) what changed since the position, inside the caller's read
  transaction, and moving the position after the write (`advance`);
- **schema changes** (`schema_changed`), **pruning** (`prune`) and **shutdown**
  (`close`).

Only protocols and types here (as in `base.py` and `changelog.py`): the feeds
themselves are given their stores as objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol, runtime_checkable

from legacy_adapters.base import Chunk, TableInfo


class Then(Enum):
    """What the reader of a round does next."""

    DONE = "done"  # everything committed before the read was read
    NOW = "now"  # a whole batch: read again at once
    NEXT_STEP = "next step"  # rows came: read again at the next step of the loop


@dataclass
class FeedItem:
    """One table's part of a round: its rows' current state, the changed keys (None:
    every row of the chunk is one that changed), and the keys of rows that are
    probably new (True: every row of the chunk)."""

    table: TableInfo
    chunk: Chunk
    keys: set[Any] | None = None
    inserted: set[Any] | Literal[True] | None = None


@dataclass
class FeedRound:
    """What one read found, and the position the feed reaches once it is written."""

    items: list[FeedItem]
    position: Any
    then: Then = Then.DONE
    changes: list[Any] = field(default_factory=list)  # the log entries read (a change log)


@dataclass(frozen=True)
class Opening:
    """What a feed found when it opened: whether it resumes a saved position (else the
    target is reconciled before following). Tables whose changes may have gone
    unrecorded meanwhile the feed marks for a reconcile itself."""

    resumes: bool


@dataclass(frozen=True)
class FeedStatus:
    """Where a feed stands, for the status document: a log seq, or per-table marks."""

    seq: int | None = None
    marks: dict[str, Any] = field(default_factory=dict)
    # per table: (changes not applied yet, julian day of the oldest)
    lag: dict[str, tuple[int, float | None]] = field(default_factory=dict)

    def checkpoint(self, table: str) -> dict[str, Any]:
        """One table's checkpoint as the status shows it."""
        return {"seq": self.seq} if self.seq is not None else {"hwm": self.marks.get(table)}


@runtime_checkable
class ChangeFeed(Protocol):
    """The changes of one legacy source, in order, from a position the feed owns."""

    mode: str  # the name users pick it by ("triggers", "scan")

    def open(self, tables: list[TableInfo], migrating: bool) -> Opening:
        """Start following `tables`: install what the feed needs and note where the
        source stands now (the position `settle` adopts unless resuming)."""
        ...

    def settle(self) -> None:
        """The target is caught up to where `open` noted: take that position (or the
        saved one when resuming) and save it."""
        ...

    def read(self, limit: int) -> FeedRound | None:
        """What changed since the position (at most about `limit` entries), read inside
        the caller's read transaction; None when nothing did."""
        ...

    def advance(self, round_: FeedRound) -> None:
        """`round_` is written: move the position past it (saved lazily)."""
        ...

    def save(self, force: bool = False) -> None:
        """Save the position if it moved since the last save: at once when forced, else
        when a save is due (saves are spaced out; applying again is idempotent)."""
        ...

    def schema_changed(self, tables: list[TableInfo], added: list[str]) -> None:
        """The source's schema changed; `tables` are followed now, `added` are new."""
        ...

    def prune(self) -> None:
        """Housekeeping (another thread): drop what every reader has applied."""
        ...

    def status(self) -> FeedStatus:
        """Where the feed stands (any thread)."""
        ...

    def close(self) -> None:
        """Save the position, say this reader stopped, release connections."""
        ...
