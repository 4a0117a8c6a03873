"""The change follower: read a round from the feed, write it, move the feed on.

What a round holds depends on the feed (legacy_adapters/feed.py; the change log in
feed_triggers.py, new rows past high-water marks in feed_scan.py); the follower
only reads it inside one read transaction, writes it through the applier and tells
the feed it was written. Each read is a SHARED lock a committing legacy writer may
have to wait for: nothing is read that cannot be needed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from legacy_adapters.base import Source, TableInfo
from legacy_adapters.feed import ChangeFeed, FeedRound, Then
from syncd.cancel import CancelToken
from syncd.checkpoint.resync import PendingReconciles
from syncd.checkpoint.store import StateStore
from syncd.daemon.health import Health
from syncd.daemon.options import DaemonOptions
from syncd.engine.apply import Applier
from syncd.faults import crashpoint
from syncd.projection.model import Model, TableMap

if TYPE_CHECKING:
    from syncd.daemon.history import VersionRecorder


class Synced:
    """What is synced right now: the model, each table's (info, mapping), the applier.

    Set by the start-up sync, replaced when the legacy schema changes.
    """

    def __init__(self, health: Health, by_collection: dict[str, str]) -> None:
        self.health = health
        self.by_collection = by_collection  # collection -> table, shared with the event sink
        self.pairs: dict[str, tuple[TableInfo, TableMap]] = {}
        self.model: Model | None = None
        self.applier: Applier | None = None

    def set_pairs(self, pairs: list[tuple[TableInfo, TableMap]]) -> None:
        self.pairs = {info.name: (info, mapping) for info, mapping in pairs}
        self.by_collection.clear()
        self.by_collection.update({m.collection: i.name for i, m in pairs})
        self.health.track(pairs)


@dataclass(frozen=True)
class FeedParts:
    """What a feed is given by the daemon: the source, the target's state store, the
    pending-reconcile set, what is synced now, the options, and where versions go
    (None: history is off)."""

    source: Source
    store: StateStore
    resync: PendingReconciles
    synced: Synced
    options: DaemonOptions
    history: VersionRecorder | None = None


class Follower:
    """Reads rounds from the feed and writes them; owns `data_version`, the source's
    commit counter when it last read. Only the loop's thread uses it."""

    def __init__(self, feed: ChangeFeed, parts: FeedParts, health: Health,
                 stop: CancelToken, wake: threading.Event) -> None:
        self.feed, self.source, self.synced = feed, parts.source, parts.synced
        self.resync, self.health, self.batch = parts.resync, health, parts.options.batch
        self.history = parts.history
        self.stop, self.wake = stop, wake
        self.data_version: int | None = None
        self.live = False  # long work may interleave follow steps (after start-up)
        self._between_at = 0.0

    def committed(self, version: int) -> bool:
        """Note the source's commit counter; whether it moved since the last note."""
        moved = version != self.data_version
        self.data_version = version
        return moved

    # -- rounds --------------------------------------------------------------------------

    def follow(self, first: FeedRound | None = None) -> None:
        """Read a round (in one read transaction), write it, until nothing is left.

        The feed says what comes next (`Then`): a change log is drained while rounds
        are whole batches (a shorter one read everything committed before it, and a
        later commit wakes the loop); a scan does one round and asks for the next
        step, so schema checks and stops come in between.
        """
        round_ = first
        while not self.stop.is_set():
            if round_ is None:
                round_ = self.read_round()
            if round_ is None:
                return
            self.write_round(round_)
            if round_.then is Then.NEXT_STEP:
                self.wake.set()
                return
            if round_.then is Then.DONE:
                return
            round_ = None

    def follow_between(self) -> None:
        """During long work (a reconcile), apply new changes every so often."""
        now = time.monotonic()
        if not self.live or now - self._between_at < 0.25:
            return
        self._between_at = now
        self.follow()

    def read_round(self) -> FeedRound | None:
        """What the feed has since its position, read in one read transaction."""
        with self.source.read_transaction():
            return self.feed.read(self.batch)

    def write_round(self, round_: FeedRound) -> None:
        """Apply a round to MongoDB and record its versions (prepared before, stored
        after the documents), then move the feed past it (a crash before the move
        repeats both; each stores once)."""
        applier, pairs = self.synced.applier, self.synced.pairs
        assert applier is not None
        versions = (self.history.prepare(round_, pairs, applier)
                    if self.history is not None else [])
        for item in round_.items:
            info = item.table
            mapping = pairs[info.name][1]
            self.apply(info.name, lambda item=item, mapping=mapping: applier.write(
                item.table, mapping, item.chunk, item.keys, item.inserted))
        if self.history is not None:
            self.history.store_versions(versions)
            self.history.counters.saw(round_)
        crashpoint("daemon.after_apply")
        self.feed.advance(round_)

    def apply(self, table: str, action: Callable[[], Any]) -> None:
        """Run one table's write, counting what it did (or its error) for the status."""
        try:
            result = action()
        except Exception as exc:
            self.health.failed(table, exc)
            raise
        self.health.applied(table, result)
        if result.upserted or result.deleted:
            self.resync.touched.add(table)
