"""`ScanFeed`: follow a source without writing to it (`scan` mode).

New rows are found past a per-table high-water mark; updates and deletes only by
the periodic reconcile (every 300 s by default in this mode). A round reads one
batch of new rows per table, round robin, so that a table written faster than a
batch is applied (epoch_history while a run trains) does not hold back the tables
after it; it then asks for another step rather than draining, so schema checks and
stops come in between.

The marks have one writer: this feed. They are saved for `syncd status` only
(syncd.checkpoint.positions): a scan start-up reconciles every table before it
takes fresh marks, so nothing resumes from them.
"""

from __future__ import annotations

from typing import Any

from legacy_adapters.base import TableInfo
from legacy_adapters.feed import FeedItem, FeedRound, FeedStatus, Opening, Then
from syncd.checkpoint.positions import save_scan_marks
from syncd.daemon.follow import FeedParts
from syncd.engine.backfill import encode_position


class ScanFeed:
    """Per-table high-water marks; writes nothing to the source."""

    mode = "scan"

    def __init__(self, parts: FeedParts) -> None:
        self.source, self.store, self.synced = parts.source, parts.store, parts.synced
        self.hwm: dict[str, Any] = {}
        self._start: dict[str, Any] = {}

    def open(self, tables: list[TableInfo], migrating: bool) -> Opening:
        """Take the marks now: whatever is added while the target catches up lies past
        them. Never resumes: the start-up reconciles every table (or migrates). Opened
        again (the start-up runs again after an outage), a table keeps its first mark:
        what was added since is read, never skipped."""
        marks = {info.name: self.source.high_water(info) for info in tables
                 if info.name in self.synced.pairs}
        self._start = {name: self._start.get(name, mark) for name, mark in marks.items()}
        return Opening(resumes=False)

    def settle(self) -> None:
        self.hwm, self._start = self._start, {}
        self._save()

    def read(self, limit: int) -> FeedRound | None:
        """One batch of new rows per table past its mark."""
        items = []
        for table, (info, _) in self.synced.pairs.items():
            chunk = self.source.scan(info, self.hwm.get(table), limit)
            if chunk.rows:
                # Rows past the high-water mark are new (the sink still replaces any
                # whose document exists: a crash re-apply, a reused rowid).
                items.append(FeedItem(info, chunk, inserted=True))
        if not items:
            return None
        marks = {item.table.name: item.chunk.last for item in items}
        return FeedRound(items, marks, Then.NEXT_STEP)

    def advance(self, round_: FeedRound) -> None:
        self.hwm.update(round_.position)
        self._save()

    def save(self, force: bool = False) -> None:
        """The marks are saved at every move (`advance`)."""

    def schema_changed(self, tables: list[TableInfo], added: list[str]) -> None:
        """A new table is read from its first row (its reconcile finds what it had)."""
        for table in added:
            self.hwm.setdefault(table, None)

    def prune(self) -> None:
        """Nothing to prune: a scan writes nothing to the source."""

    def _marks(self) -> dict[str, Any]:
        return {table: encode_position(mark) for table, mark in list(self.hwm.items())}

    def _save(self) -> None:
        save_scan_marks(self.store, self._marks())

    def status(self) -> FeedStatus:
        return FeedStatus(marks=self._marks())

    def close(self) -> None:
        """Nothing held open."""
