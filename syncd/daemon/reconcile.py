"""The daemon's reconciles: periodic, on request, and whatever PendingReconciles holds.

A reconcile compares a table with its documents chunk by chunk and fixes every
difference; it catches what the change log cannot replay. New changes are still
applied in between: the reconcile is a generator of steps (Backfill.reconcile_steps)
that this module drives, following the feed at each pause (Follower.follow_between),
so a long reconcile does not hold up the sync. A table leaves PendingReconciles's
pending set only once its reconcile is done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from syncd.checkpoint.lease import Lease
from syncd.daemon.follow import FeedParts, Follower
from syncd.daemon.health import Health
from syncd.engine.backfill import Backfill
from syncd.engine.baseline import Baseline
from syncd.engine.report import TableReport
from syncd.progress import Progress
from syncd.sinks.base import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Writing:
    """What long work (a migration, a reconcile) writes through and is held by: the
    sink, the lease (renewed at every chunk; it ends the work when a stop is asked),
    and the progress display."""

    sink: Sink
    lease: Lease
    progress: Progress


class Reconciler:
    """Runs reconciles for the loop's thread; others only ask (`request`)."""

    def __init__(self, parts: FeedParts, writing: Writing, follower: Follower,
                 health: Health) -> None:
        self.source, self.store, self.resync = parts.source, parts.store, parts.resync
        self.synced, self.db = parts.synced, parts.store.db
        self.sink, self.lease, self.progress = writing.sink, writing.lease, writing.progress
        self.follower, self.health = follower, health
        self.chunk_size = parts.options.chunk_size
        self.every = parts.options.reconcile_seconds
        self.last = time.monotonic()  # when every table was last reconciled
        self.requested = False  # SIGUSR1 or the periodic job: every table, at the next step
        self._open_request: dict[str, Any] | None = None
        # A table with no history baseline yet (new since the migrate, or taken back
        # into history) gets one in its reconcile's read pass.
        recorder = parts.history
        self.baseline = None if recorder is None else Baseline(
            recorder.store, parts.source, parts.options.history.exclude)

    def rebaseline(self) -> None:
        """Mark the tables that need a new history baseline for a reconcile (whose read
        pass records it): at a start, a table whose columns changed (or that was taken
        back into history) while syncd was stopped still has its old capture triggers'
        versions, which lack the new columns or name the old ones."""
        if self.baseline is None:
            return
        self.resync.add(sorted(t for t, (info, _) in self.synced.pairs.items()
                               if self.baseline.needed(info)),
                        "history needs a new baseline (the table's columns changed, or it "
                        "was taken back into history, while syncd was stopped)")

    def request(self) -> None:
        """Reconcile every table at the next step (any thread, a signal handler too)."""
        self.requested = True

    def reconcile(self, tables: list[str]) -> dict[str, dict[str, int]]:
        """Reconcile `tables` one by one; each leaves PendingReconciles's pending set when done."""
        pairs, applier = self.synced.pairs, self.synced.applier
        assert self.synced.model is not None and applier is not None
        reports: dict[str, dict[str, int]] = {}
        engine = Backfill(self.source, self.db, self.sink, self.store, applier.params,
                          self.chunk_size, self.progress, self.lease, history=self.baseline)
        for table in tables:
            if table not in self.synced.pairs:
                continue
            info, mapping = self.synced.pairs[table]
            report = self._drive(engine.reconcile_steps(info, mapping, self.synced.model))
            self.health.reconciled(table, report)
            if report.written or report.deleted:
                log.info("reconciled %s: %d written, %d deleted, %d unchanged", table,
                         report.written, report.deleted, report.unchanged,
                         extra={"table": table, "written": report.written,
                                "deleted": report.deleted, "unchanged": report.unchanged})
            self.resync.done(table, wrote=bool(report.written or report.deleted))
            reports[table] = {"written": report.written, "deleted": report.deleted,
                              "unchanged": report.unchanged, "rows": report.rows}
        if set(tables) >= set(pairs):
            self.last = time.monotonic()
        return reports

    def _drive(self, steps: Generator[None, None, TableReport]) -> TableReport:
        """Run a reconcile's steps, applying new changes at each pause; its report."""
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            self.follower.follow_between()

    def when_due(self) -> None:
        """The periodic (or requested) reconcile of every table, if it is time."""
        due = time.monotonic() - self.last >= self.every
        if due or self.requested:
            self.requested = False
            self.reconcile(list(self.synced.pairs))

    def pending(self) -> None:
        """Reconcile what PendingReconciles holds (left by a failure, a gap, a reset, a restart)."""
        self.resync.forget([t for t in self.resync.pending if t not in self.synced.pairs])
        if self.resync.pending:
            self.reconcile(sorted(self.resync.pending))

    def serve_request(self) -> None:
        """A `syncd reconcile` handed over through MongoDB: do it, then answer."""
        request = self._open_request or self.resync.take_request()
        if request is None:
            return
        self._open_request = request  # kept until answered: a failure retries it
        pairs = self.synced.pairs
        wanted = list(request.get("tables") or pairs)
        reports = self.reconcile([t for t in wanted if t in pairs])
        reports.update({t: {"error": "not a synced table"} for t in wanted
                        if t not in self.synced.pairs})
        self.resync.finish_request(request, reports)
        self._open_request = None
