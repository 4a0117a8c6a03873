"""The change follower: read a round of legacy changes, write it, move the position.

- `triggers` mode: the change log (legacy_adapters/sqlite_capture.py) is read in
  order; each round applies the changed rows' current state and moves the log
  position, saved in MongoDB (syncd.checkpoint.positions) after the write. Seqs are
  contiguous: a hole after the position means entries were pruned unseen (a gap),
  and every table is marked for a reconcile before anything else happens.
- `scan` mode: one batch of new rows per table past its high-water mark.

A round's reads share one read transaction, and each read is a SHARED lock a
committing legacy writer may have to wait for: nothing is read that cannot be
needed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from legacy_adapters.base import Chunk, Source, TableInfo
from legacy_adapters.changelog import ChangeLog
from legacy_adapters.sqlite_capture import CONSUMER_REFRESH_SECONDS
from syncd.checkpoint.positions import CapturePosition, consumer_id, save_scan_marks
from syncd.checkpoint.resync import Resync
from syncd.checkpoint.store import StateStore
from syncd.daemon.health import Health
from syncd.engine.apply import Applier, group_keys
from syncd.engine.backfill import encode_position
from syncd.faults import crashpoint
from syncd.projection.model import Model, TableMap

log = logging.getLogger(__name__)


class RoundItem(NamedTuple):
    """One table's part of a round: its rows, in triggers mode the changed keys, and
    the keys of rows that are probably new (first logged as an INSERT; in scan mode
    every row past the high-water mark)."""

    table: str
    info: TableInfo
    mapping: TableMap
    chunk: Chunk
    keys: set[Any] | None = None
    inserted: set[Any] | Literal[True] | None = None


@dataclass
class Round:
    """What one round reads: per table its rows (and the changed keys, triggers mode)
    and the log position it reaches (None in scan mode)."""

    items: list[RoundItem]
    seq: int | None
    full: bool = False  # a whole batch: more may be waiting right now


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


class Follower:
    """Owns the position (`seq` applied, `saved_seq` saved; `hwm` in scan mode) and the
    rounds that move it. Only the loop's thread reads, writes and saves."""

    def __init__(self, source: Source, store: StateStore, options: dict[str, Any],
                 synced: Synced, resync: Resync, health: Health,
                 stop_event: threading.Event, wake: threading.Event,
                 capture: ChangeLog | None = None, pruner: ChangeLog | None = None) -> None:
        self.source, self.store, self.options = source, store, options
        self.synced, self.resync, self.health = synced, resync, health
        self.stop_event, self.wake = stop_event, wake
        # The loop reads the change log on the source's own connection: one read
        # transaction per round covers the log and the changed rows. The pruner runs
        # on a scheduler thread with a connection of its own.
        self.capture, self.pruner = capture, pruner
        self.seq = 0  # the log position applied
        self.saved_seq = 0  # ... and saved in MongoDB (pruning never passes it)
        self._saved_at = 0.0
        self.install_id: str | None = None
        self.hwm: dict[str, Any] = {}
        self.data_version: int | None = None
        self.consumer: str | None = None  # this target's name in the change log's registry
        self._recorded: tuple[int, float] = (-1, 0.0)  # consumer position last recorded
        self.live = False  # long work may interleave follow steps (after start-up)
        self._between_at = 0.0

    # -- rounds --------------------------------------------------------------------------

    def follow(self, first: Round | None = None) -> None:
        """Read a round (in one read transaction), write it, until nothing is left.

        Triggers mode drains the log: it reads again only after a full batch. A
        shorter round read everything committed before it, and whatever commits
        later wakes the loop (or changes `data_version`), so an extra read that would
        find nothing is skipped: each read is a SHARED lock a committing legacy
        writer may have to wait for. Scan mode does one round and, if it found rows,
        wakes the loop for another, so schema checks and stops come in between.
        """
        round_ = first
        while not self.stop_event.is_set():
            if round_ is None:
                with self.source.read_transaction():
                    round_ = self.read_round()
            if round_ is None:
                return
            self.write_round(round_)
            if self.capture is None:
                self.wake.set()  # rows came: there may be more (a full batch)
                return
            if not round_.full:
                return
            round_ = None

    def follow_between(self) -> None:
        """During long work (a reconcile), apply new changes every so often."""
        now = time.monotonic()
        if not self.live or now - self._between_at < 0.25:
            return
        self._between_at = now
        self.follow()

    def read_round(self) -> Round | None:
        """What one round applies: logged changes with their rows' current state, or
        (scan mode) one batch of new rows per table, round robin, so that a table
        written faster than a batch is applied (epoch_history while a run trains) does
        not hold back the tables after it."""
        applier, pairs = self.synced.applier, self.synced.pairs
        assert applier is not None
        batch = self.options["batch"]
        items: list[RoundItem] = []
        if self.capture is not None:
            changes = self.capture.read(self.seq, batch)
            if not changes:
                return None
            if changes[0].seq != self.seq + 1:
                # Seqs are contiguous: entries after the checkpoint were pruned by
                # another consumer (or while this one was away past the retention).
                self.resync.add(list(pairs), f"the change log has a gap after entry "
                                f"{self.seq} (the next kept is {changes[0].seq})")
            tables = {name: info for name, (info, _) in pairs.items()}
            grouped = group_keys(((c.table, c.op, c.rowid, c.key) for c in changes), tables)
            for table, ops in grouped.items():
                info, mapping = pairs[table]
                keys = set(ops)
                inserted = {k for k, op in ops.items() if op == "i"}
                items.append(RoundItem(table, info, mapping, applier.fetch(info, keys),
                                       keys, inserted))
            return Round(items, changes[-1].seq, full=len(changes) >= batch)
        for table, (info, mapping) in pairs.items():
            chunk = self.source.scan(info, self.hwm.get(table), batch)
            if chunk.rows:
                # Rows past the high-water mark are new (the sink still replaces any
                # whose document exists: a crash re-apply, a reused rowid).
                items.append(RoundItem(table, info, mapping, chunk, inserted=True))
        return Round(items, None) if items else None

    def write_round(self, round_: Round) -> None:
        """Apply a round to MongoDB, then move (and lazily save) the position."""
        applier = self.synced.applier
        assert applier is not None
        for item in round_.items:
            self.apply(item.table, lambda item=item: applier.write(
                item.info, item.mapping, item.chunk, item.keys, item.inserted))
            if item.keys is None:
                self.hwm[item.table] = item.chunk.last
        crashpoint("daemon.after_apply")
        if round_.seq is not None:
            self.seq = round_.seq
            self.save_position(force=False)
        else:
            self.save_marks()

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

    # -- positions -------------------------------------------------------------------------

    def save_position(self, force: bool = True) -> None:
        """Save the applied log position (at most every `checkpoint_seconds` unless forced).

        Only the loop's thread saves, so `saved_seq` is exactly what MongoDB holds.
        """
        if self.seq == self.saved_seq and not force:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < self.options["checkpoint_seconds"]:
            return
        seq = self.seq
        CapturePosition(self.install_id, seq).save(self.store)
        self.saved_seq, self._saved_at = seq, now

    def marks(self) -> dict[str, Any]:
        """The high-water marks, BSON-encoded (scan mode)."""
        return {table: encode_position(mark) for table, mark in self.hwm.items()}

    def save_marks(self) -> None:
        save_scan_marks(self.store, self.marks())

    # -- the change log's consumer registry ----------------------------------------------------

    def register(self) -> None:
        """Learn this target's stable name in the change log's consumer registry."""
        self.consumer = consumer_id(self.store)

    def _label(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()} -> database {self.store.db.name}"

    def record_consumer(self, force: bool = False) -> None:
        """Tell other consumers of the log how far this one has saved (they never prune
        past it); at most every CONSUMER_REFRESH_SECONDS when nothing moved."""
        capture = self.capture if force else self.pruner  # the caller's thread's connection
        if capture is None or self.consumer is None:
            return
        now = time.monotonic()
        seq = self.saved_seq
        if not force and seq == self._recorded[0] and \
                now - self._recorded[1] < CONSUMER_REFRESH_SECONDS:
            return
        if capture.record_consumer(self.consumer, self._label(), seq):
            self._recorded = (seq, now)

    def record_stopped(self) -> None:
        """At exit: this consumer is stopped (others keep its entries for a while)."""
        if self.pruner is not None and self.consumer is not None:
            self.pruner.record_consumer(self.consumer, self._label(), self.saved_seq,
                                        running=False)

    def prune(self) -> None:
        """Remove applied entries no consumer still needs (a scheduler thread)."""
        assert self.pruner is not None
        try:
            self.record_consumer()
            bound = self.pruner.prune_bound(self.saved_seq,
                                            self.options["log_retention_seconds"])
            removed = self.pruner.prune(bound)
            if removed:
                log.debug("pruned %d applied changes from the log", removed)
        except Exception as exc:  # pruning is housekeeping: never fatal
            log.warning("could not prune the change log: %s", exc)
