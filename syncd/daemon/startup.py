"""The start-up sync of `syncd run`: bring the target up to date before following.

The feed opens first (`ChangeFeed.open`: triggers installed, where the source
stands noted). A fresh or outdated target is then migrated (a rebuild, or a resumed
one); a feed that cannot resume from its saved position has every table reconciled;
then the feed settles on its position and the follower applies what came meanwhile.
Tables whose changes may have gone unrecorded are marked for a reconcile first
(PendingReconciles).

A MongoDB outage or a legacy writer's lock met on the way (`start_up_outage`) is
waited out by the daemon, which then runs the start-up again from the top: each step
is safe to repeat. The migration resumes from its job (the chunk it was writing
undone, nothing copied twice), a feed opened again keeps the position it first noted
(what was logged since is replayed, never skipped), and a migration finished before
the outage leaves a reconcile (or a resumed feed) behind it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from legacy_adapters.base import SourceBusy
from legacy_adapters.feed import ChangeFeed
from syncd.daemon.follow import FeedParts, Follower
from syncd.daemon.reconcile import Reconciler, Writing
from syncd.daemon.schema import SchemaWatch
from syncd.engine.apply import Applier
from syncd.engine.migrator import Migrator
from syncd.retry import mongo_unavailable
from syncd.sinks.events import EventPublisher

log = logging.getLogger(__name__)


def start_up_outage(exc: BaseException) -> str | None:
    """Which store the start-up waits for after `exc` (None: a failure, not an outage).

    As the loop: MongoDB unreachable or between primaries (a restart, an election,
    `NotPrimaryError`), a legacy writer holding metadata.db locked. Refusals (bad
    credentials, a lease held elsewhere, a changed migration file) are no outage.
    """
    if isinstance(exc, SourceBusy):
        return "the legacy database"
    if mongo_unavailable(exc):
        return "MongoDB"
    return None


@dataclass(frozen=True)
class Migrating:
    """What the start-up migrates with: the planner (built by syncd.api), the events
    publisher told of a new version, and what long work writes through."""

    migrator: Migrator
    publisher: EventPublisher
    writing: Writing


class StartUp:
    """Runs once, on the loop's thread, before the daemon reports ready."""

    def __init__(self, parts: FeedParts, feed: ChangeFeed, follower: Follower,
                 reconciler: Reconciler, schema: SchemaWatch, migrating: Migrating) -> None:
        self.source, self.store, self.synced = parts.source, parts.store, parts.synced
        self.resync, self.feed, self.follower = parts.resync, feed, follower
        self.history = parts.history
        self.reconciler, self.schema, self.migrating = reconciler, schema, migrating

    def run(self) -> None:
        # The schema version is read before anything is reflected: a change committed
        # while the start-up work runs shows as a new version at the first step.
        version = self.source.schema_version()
        migrator, publisher = self.migrating.migrator, self.migrating.publisher
        plan = migrator.plan(None)
        for note in plan.notes:
            log.info("%s", note)
        self.synced.model = plan.model
        self.synced.applier = Applier(self.source, self.migrating.writing.sink, self.store,
                                      plan.params)
        publisher.version = plan.target
        self.synced.set_pairs(plan.pairs)
        self.synced.health.skipped(plan.not_mirrored)
        left = self.resync.load()
        if left:
            log.info("a reconcile of %s was left unfinished: doing it", ", ".join(sorted(left)))
        migrating = plan.kind in ("rebuild", "resume")
        opening = self.feed.open([info for info, _ in plan.pairs], migrating)
        # A VACUUM before this moment is covered below (a migration, or a reconcile of
        # every table or of those keyed by rowid); one later moves the version again.
        seen = self.source.schema_version()
        if migrating:
            self._migrate(plan)
        elif not opening.resumes:
            self.reconciler.reconcile(list(self.synced.pairs))
        else:  # before the log is applied: its rowids may be the ones a VACUUM changed
            self.schema.renumbered(list(self.synced.pairs), "syncd was stopped")
            self.reconciler.rebaseline()
            self.reconciler.pending()
        self.feed.settle()
        if self.history is not None:  # a schema changed while syncd was stopped, or new
            self.history.record_schemas(self.source, list(self.synced.pairs))
            # (a table taken back into history got its new baseline above: rebaseline)
            self.history.record_left_out(self.source, self.synced.pairs)
        self.follower.follow()
        self.reconciler.pending()
        self.schema.version, self.schema.seen = version, seen

    def _migrate(self, plan: Any) -> None:
        log.info("migrating to version %d (%s) before following changes", plan.target,
                 plan.kind)
        self.resync.touched |= set(self.synced.pairs)
        writing = self.migrating.writing
        report = self.migrating.migrator.run(plan, writing.sink, writing.lease)
        log.info("migration done: %d rows, %d documents written in %.1f s",
                 report.total("rows"), report.total("written"), report.seconds)
        self.migrating.publisher.announce_migrated(plan.target)
