"""`TriggerFeed`: follow a source's change log (`triggers` mode, the default).

Triggers log each changed row's key inside the writer's transaction (the
`ChangeLog`; for SQLite legacy_adapters/sqlite_capture.py, handed in by
syncd/api/feeds.py). A round reads the log in order after the position, with the
changed rows' current state; once written, the position moves and is saved in
MongoDB (syncd.checkpoint.positions) at most every `checkpoint_seconds`. Seqs are
contiguous: a hole after the position means entries were pruned unseen (a gap),
and every table is marked for a reconcile before anything else happens.

The position is saved with the entry at it (`entry_mark`: taken from the round
applied, so no read per step). Pruning keeps that entry, so a start that finds
another one there knows the file went back in time (a backup copied over it, same
inode) even when the scripts wrote past the seq again since, and reconciles.

The position (`seq`, and the log's install id it counts in) has one writer: this
feed. Pruning and the lag run on scheduler threads, each on a connection of its
own (sqlite3 connections are not for concurrent use).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from legacy_adapters.base import TableInfo
from legacy_adapters.changelog import CONSUMER_REFRESH_SECONDS, Change, ChangeLog
from legacy_adapters.feed import FeedItem, FeedRound, FeedStatus, Opening, Then
from syncd.checkpoint.positions import CapturePosition, consumer_id
from syncd.daemon.follow import FeedParts
from syncd.engine.apply import group_keys

log = logging.getLogger(__name__)


def entry_mark(change: Change) -> dict[str, Any]:
    """What tells one log entry from another at the same seq: an entry a put-back
    file's scripts wrote anew has another time (and mostly another table or row)."""
    rid = change.rowid if isinstance(change.rowid, int) else None
    return {"seq": change.seq, "tbl": change.table, "op": change.op, "rid": rid,
            "at": change.at}


@dataclass(frozen=True)
class LogConnections:
    """The change log on three connections: `reader` reads through the source (one read
    transaction covers the log and the changed rows), `pruner` and `lag` are the
    scheduler threads' own."""

    reader: ChangeLog
    pruner: ChangeLog
    lag: ChangeLog

    def close(self) -> None:
        for log_ in (self.reader, self.pruner, self.lag):
            log_.close()


class TriggerFeed:
    """The change log from a saved seq; the only writer of that seq."""

    mode = "triggers"

    def __init__(self, logs: LogConnections, parts: FeedParts) -> None:
        self.logs, self.parts = logs, parts
        self.source, self.store, self.resync = parts.source, parts.store, parts.resync
        self.synced, self.options = parts.synced, parts.options
        self.seq = 0  # the log position applied
        self.saved_seq = 0  # ... and saved in MongoDB (pruning never passes it)
        self._saved_at = 0.0
        self.install_id: str | None = None
        self._start = 0  # where the log stood at `open` (adopted by `settle`)
        self._resume: CapturePosition | None = None
        self._mark: dict[str, Any] | None = None  # the entry at `seq`, once known
        self.consumer: str | None = None  # this target's name in the log's registry
        self._recorded: tuple[int, float] = (-1, 0.0)  # consumer position last recorded
        self._lag_lock = threading.Lock()

    # -- start-up --------------------------------------------------------------------------

    def open(self, tables: list[TableInfo], migrating: bool) -> Opening:
        """Install the triggers; tables whose triggers were missing may have changed
        unlogged. Resumes from the saved seq if it counts in this log."""
        capture, pairs = self.logs.reader, self.synced.pairs
        wide = [i.name for i in tables if not capture.capturable(i)]
        if wide:
            log.warning("tables with more than 8 key columns are followed by the "
                        "periodic reconcile only: %s", ", ".join(wide))
        saved = CapturePosition.load(self.store)
        known = saved.install_id if saved is not None else None
        if not migrating and known is not None and known == capture.install_id():
            # Changes to these tables before their triggers exist were never logged.
            self.resync.add([i.name for i in capture.missing(tables) if i.name in pairs],
                            "capture triggers were missing")
        newly = capture.install(tables)
        if newly:
            log.info("capture triggers installed on %s", ", ".join(newly))
        self.install_id = capture.install_id()
        resumes = not migrating and known is not None and known == self.install_id
        last = capture.last_seq()
        if resumes and saved is not None and saved.seq > last:
            # Pruning keeps the saved entry, so a log that ends before it is an older
            # copy of this file (a backup put back, `cp` over it): its next entries
            # reuse seqs already applied, and resuming would skip them.
            log.warning("the change log ends at entry %d, before the saved position %d: "
                        "%s went back (a backup put back, or a copy over it); reconciling "
                        "every table", last, saved.seq, capture.path)
            resumes = False
        elif resumes and saved is not None and saved.entry is not None and \
                self._entry_at(saved.seq) not in (None, saved.entry):
            # The same seq names another change: the log went back (a copy over the
            # file) and the scripts wrote past the position before this start. (A
            # put-back log is contiguous up to its last entry, so one missing here was
            # pruned by another consumer: the first read finds the gap, if any.)
            log.warning("the change log's entry %d is not the one applied there: %s went "
                        "back (a backup copied over it) and was written since; "
                        "reconciling every table", saved.seq, capture.path)
            resumes = False
        if resumes:
            self.resync.add([t for t in newly if t in pairs], "capture triggers were missing")
        elif not migrating and (known is None or known != self.install_id):
            log.info("no checkpoint for this change log yet: reconciling every table")
        self.consumer = consumer_id(self.store)
        self._start = last
        self._resume = saved if resumes else None
        if migrating:
            self._migration_start(saved)
        return Opening(resumes)

    def _migration_start(self, saved: CapturePosition | None) -> None:
        """Where the log stood when this migration began, saved before the copy: the
        tables it copied before a stop, a kill or a MongoDB outage part way may have
        changed since, and the migration resumed (by this process or the next) copies
        only what it had not, so everything logged since is applied after it."""
        if saved is not None and saved.migrating and saved.install_id == self.install_id:
            self._start = min(self._start, saved.seq)
        self.seq = self.saved_seq = self._start
        CapturePosition(self.install_id, self._start, migrating=True).save(self.store)

    def _entry_at(self, seq: int) -> dict[str, Any] | None:
        """The mark of the log's entry at `seq` (None: none there, or seq 0)."""
        if seq <= 0:
            return None
        found = [c for c in self.logs.reader.read(seq - 1, 1) if c.seq == seq]
        return entry_mark(found[-1]) if found else None

    def settle(self) -> None:
        resume = self._resume
        self.seq = resume.seq if resume is not None else self._start
        self._mark = resume.entry if resume is not None and resume.entry is not None \
            else self._entry_at(self.seq)  # read once, at the start
        self._resume = None
        self._write()
        self.record_consumer(force=True)

    # -- rounds ------------------------------------------------------------------------------

    def read(self, limit: int) -> FeedRound | None:
        """Logged changes after the position with their rows' current state."""
        applier, pairs = self.synced.applier, self.synced.pairs
        assert applier is not None
        changes = self.logs.reader.read(self.seq, limit)
        if not changes:
            return None
        if changes[0].seq != self.seq + 1:
            # Seqs are contiguous: entries after the checkpoint were pruned by
            # another consumer (or while this one was away past the retention).
            self.resync.add(list(pairs), f"the change log has a gap after entry "
                            f"{self.seq} (the next kept is {changes[0].seq})")
        tables = {name: info for name, (info, _) in pairs.items()}
        grouped = group_keys(((c.table, c.op, c.rowid, c.key) for c in changes), tables)
        items = []
        for table, ops in grouped.items():
            info = tables[table]
            keys = set(ops)
            inserted = {k for k, op in ops.items() if op == "i"}
            items.append(FeedItem(info, applier.fetch(info, keys), keys, inserted))
        return FeedRound(items, changes[-1].seq,
                         Then.NOW if len(changes) >= limit else Then.DONE, changes)

    def advance(self, round_: FeedRound) -> None:
        self.seq = round_.position
        last = round_.changes[-1] if round_.changes else None
        self._mark = entry_mark(last) if last is not None and last.seq == self.seq else None
        self.save()

    def save(self, force: bool = False) -> None:
        """Save the applied seq if it moved (at most every `checkpoint_seconds` unless
        forced)."""
        if self.seq == self.saved_seq:
            return
        if force or time.monotonic() - self._saved_at >= self.options.checkpoint_seconds:
            self._write()

    def _write(self) -> None:
        """Save the position as it is. Only the loop's thread saves, so `saved_seq` is
        exactly what MongoDB holds."""
        seq, mark = self.seq, self._mark
        entry = mark if mark is not None and mark["seq"] == seq else None
        CapturePosition(self.install_id, seq, entry=entry).save(self.store)
        self.saved_seq, self._saved_at = seq, time.monotonic()

    # -- schema changes ------------------------------------------------------------------------

    def schema_changed(self, tables: list[TableInfo], added: list[str]) -> None:
        """Tables whose triggers went missing reconcile; a log made anew (`capture
        uninstall`, then a new install) starts its seqs again, and what changed
        meanwhile was never logged: every table reconciles."""
        capture = self.logs.reader
        names = [i.name for i in tables]
        recreated = capture.install_id() != self.install_id
        if recreated:
            self.resync.add(names, "the change log was recreated")
        else:
            self.resync.add([i.name for i in capture.missing(tables)],
                            "the legacy schema changed")
        # A table re-created since `missing` was read gets its triggers here: it
        # needs the reconcile too (the next step sees the newer schema version).
        newly = capture.install(tables)
        self.resync.add([t for t in newly if t in names], "capture triggers were missing")
        if recreated:
            self.install_id, self.seq = capture.install_id(), 0
            self._write()

    # -- the consumer registry, pruning, the lag (scheduler threads) ------------------------

    def _label(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()} -> database {self.store.db.name}"

    def record_consumer(self, force: bool = False) -> None:
        """Tell other consumers of the log how far this one has saved (they never prune
        past it); at most every CONSUMER_REFRESH_SECONDS when nothing moved."""
        capture = self.logs.reader if force else self.logs.pruner  # the caller's thread's
        if self.consumer is None:
            return
        now = time.monotonic()
        seq = self.saved_seq
        if not force and seq == self._recorded[0] and \
                now - self._recorded[1] < CONSUMER_REFRESH_SECONDS:
            return
        if capture.record_consumer(self.consumer, self._label(), seq):
            self._recorded = (seq, now)

    def prune(self) -> None:
        """Remove applied entries no consumer still needs."""
        if self.install_id is None:  # not opened yet (the start-up may wait on a writer)
            return
        pruner = self.logs.pruner
        try:
            self.record_consumer()
            bound = pruner.prune_bound(self.saved_seq, self.options.log_retention_seconds)
            removed = pruner.prune(bound)
            if removed:
                log.debug("pruned %d applied changes from the log", removed)
        except Exception as exc:  # pruning is housekeeping: never fatal
            log.warning("could not prune the change log: %s", exc)

    def status(self) -> FeedStatus:
        seq = self.seq
        lag: dict[str, tuple[int, float | None]] = {}
        with self._lag_lock, contextlib.suppress(Exception):
            lag = self.logs.lag.pending(seq)
        return FeedStatus(seq=seq, lag=lag)

    def close(self) -> None:
        """Save what was applied, say this consumer stopped (others keep its entries for
        a while), release the connections."""
        try:
            with contextlib.suppress(Exception):
                self.save(force=True)
            if self.consumer is not None:
                with contextlib.suppress(Exception):
                    self.logs.pruner.record_consumer(self.consumer, self._label(),
                                                     self.saved_seq, running=False)
        finally:
            self.logs.close()
