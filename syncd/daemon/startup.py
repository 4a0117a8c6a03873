"""The start-up sync of `syncd run`: bring the target up to date before following.

A fresh or outdated target is migrated (a rebuild, or a resumed one); otherwise
the follower resumes from its saved position, or, without one for this change log,
every table is reconciled. In triggers mode the capture triggers are installed
here; tables whose triggers were missing may have changed unlogged and are marked
for a reconcile first (Resync).
"""

from __future__ import annotations

import logging
from typing import Any

from legacy_adapters.base import Source
from legacy_adapters.errors import SourceReadOnly
from legacy_adapters.sqlite_capture import capturable
from syncd.checkpoint.lease import Lease
from syncd.checkpoint.positions import CapturePosition
from syncd.checkpoint.resync import Resync
from syncd.checkpoint.store import StateStore
from syncd.config import Settings
from syncd.daemon.follow import Follower, Synced
from syncd.daemon.reconcile import Reconciler
from syncd.daemon.schema import SchemaWatch
from syncd.engine.apply import Applier
from syncd.engine.migration_files import Migration
from syncd.engine.migrator import Migrator
from syncd.errors import ConfigError
from syncd.progress import Progress
from syncd.sinks.base import Sink
from syncd.sinks.events import EventPublisher

log = logging.getLogger(__name__)


class StartUp:
    """Runs once, on the loop's thread, before the daemon reports ready."""

    def __init__(self, settings: Settings, source: Source, store: StateStore,
                 migrations: list[Migration], sink: Sink, publisher: EventPublisher,
                 lease: Lease, synced: Synced, follower: Follower, resync: Resync,
                 reconciler: Reconciler, schema: SchemaWatch, progress: Progress) -> None:
        self.settings, self.source, self.store = settings, source, store
        self.migrations, self.sink, self.publisher, self.lease = migrations, sink, publisher, lease
        self.synced, self.follower, self.resync = synced, follower, resync
        self.reconciler, self.schema, self.progress = reconciler, schema, progress

    def run(self) -> None:
        # The schema version is read before anything is reflected: a change committed
        # while the start-up work runs shows as a new version at the first step.
        version = self.source.schema_version()
        migrator = Migrator(self.settings, self.source, self.store.db, self.migrations,
                            self.progress)
        plan = migrator.plan(None)
        for note in plan.notes:
            log.info("%s", note)
        self.synced.model = plan.model
        self.synced.applier = Applier(self.source, self.sink, self.store, plan.params)
        self.publisher.version = plan.target
        self.synced.set_pairs(plan.pairs)
        self.synced.health.skipped(plan.not_mirrored)
        left = self.resync.load()
        if left:
            log.info("a reconcile of %s was left unfinished: doing it", ", ".join(sorted(left)))
        migrating = plan.kind in ("rebuild", "resume")
        if self.follower.capture is not None:
            self._start_triggers(migrator, plan, migrating)
        else:
            self._start_scan(migrator, plan, migrating)
        self.reconciler.pending()
        self.schema.version = version

    def _start_triggers(self, migrator: Migrator, plan: Any, migrating: bool) -> None:
        follower, pairs = self.follower, self.synced.pairs
        capture = follower.capture
        assert capture is not None
        infos = [info for info, _ in plan.pairs]
        wide = [i.name for i in infos if not capturable(i)]
        if wide:
            log.warning("tables with more than 8 key columns are followed by the "
                        "periodic reconcile only: %s", ", ".join(wide))
        saved = CapturePosition.load(self.store)
        known = saved.install_id if saved is not None else None
        if not migrating and known is not None and known == capture.install_id():
            # Changes to these tables before their triggers exist were never logged.
            self.resync.add([i.name for i in capture.missing(infos) if i.name in pairs],
                            "capture triggers were missing")
        try:
            newly = capture.install(infos)
        except SourceReadOnly as exc:
            raise ConfigError(f"{exc}; triggers capture (the default) writes its triggers and "
                              "change log into the database: follow it with --capture scan "
                              '(or [daemon] capture = "scan"), which writes nothing to '
                              "it") from None
        if newly:
            log.info("capture triggers installed on %s", ", ".join(newly))
        follower.install_id = capture.install_id()
        if not migrating and known is not None and known == follower.install_id:
            self.resync.add([t for t in newly if t in pairs], "capture triggers were missing")
        follower.register()
        start = capture.last_seq()
        if migrating:
            self._migrate(migrator, plan)
            follower.seq = start
        elif known != follower.install_id:
            log.info("no checkpoint for this change log yet: reconciling every table")
            self.reconciler.reconcile(list(pairs))
            follower.seq = start
        else:
            assert saved is not None
            follower.seq = saved.seq
        follower.save_position()
        follower.record_consumer(force=True)
        follower.follow()

    def _start_scan(self, migrator: Migrator, plan: Any, migrating: bool) -> None:
        marks = {name: self.source.high_water(info) for name, (info, _) in
                 self.synced.pairs.items()}
        if migrating:
            self._migrate(migrator, plan)
        else:
            self.reconciler.reconcile(list(self.synced.pairs))
        self.follower.hwm = marks
        self.follower.save_marks()
        self.follower.data_version = self.source.data_version()

    def _migrate(self, migrator: Migrator, plan: Any) -> None:
        log.info("migrating to version %d (%s) before following changes", plan.target,
                 plan.kind)
        self.resync.touched |= set(self.synced.pairs)
        report = migrator.run(plan, self.sink, self.lease)
        log.info("migration done: %d rows, %d documents written in %.1f s",
                 report.total("rows"), report.total("written"), report.seconds)
        self.publisher.announce_migrated(plan.target)
