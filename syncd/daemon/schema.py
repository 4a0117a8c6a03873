"""Schema drift while `syncd run` follows: new tables sync, changed ones reconcile.

The legacy scripts may add, alter, drop or re-create tables at any moment; a
`capture uninstall` may even remove the change log, which then starts anew.
"""

from __future__ import annotations

import logging

from legacy_adapters.base import Source
from syncd.checkpoint.resync import Resync
from syncd.daemon.follow import Follower, Synced
from syncd.daemon.health import Health
from syncd.daemon.reconcile import Reconciler

log = logging.getLogger(__name__)


class SchemaWatch:
    """Knows the schema version the synced tables were resolved at (`version`)."""

    def __init__(self, source: Source, synced: Synced, follower: Follower,
                 resync: Resync, health: Health, reconciler: Reconciler) -> None:
        self.source, self.synced, self.follower = source, synced, follower
        self.resync, self.health, self.reconciler = resync, health, reconciler
        self.version: int | None = None

    def forget(self) -> None:
        """Re-read the schema at the next step (drift is a common cause of failures)."""
        self.version = None

    def check(self) -> None:
        """Follow a schema change: new tables sync, changed or re-created ones reconcile.

        The version is read first and recorded only once the tables to reconcile are
        saved (Resync): a change committed while this runs is seen by the next step,
        and a reconcile that fails is retried, also after a restart.
        """
        version = self.source.schema_version()
        if version == self.version:
            return
        model, old = self.synced.model, self.synced.pairs
        assert model is not None
        capture = self.follower.capture
        schema = self.source.schema()
        database = self.follower.store.db.name
        pairs = model.resolve(schema, database)
        self.health.skipped(model.not_mirrored(schema, database))
        new = {i.name: (i, m) for i, m in pairs}
        added = [t for t in new if t not in old]
        dropped = [t for t in old if t not in new]
        changed = [t for t in new if t in old and new[t] != old[t]]
        todo = set(added) | set(changed)
        recreated = False
        if capture is not None:
            todo |= {i.name for i in capture.missing([i for i, _ in pairs])}
            if capture.install_id() != self.follower.install_id:
                # The log itself was removed (capture uninstall) and made anew: its seqs
                # start again, and what changed meanwhile was never logged.
                recreated, todo = True, set(new)
        self.resync.add(sorted(todo), "the legacy schema changed" if not recreated
                        else "the change log was recreated")
        self.resync.forget(dropped)
        for table in dropped:
            log.warning("legacy table %s was dropped; its collection %s keeps its documents "
                        "(syncd migrate reconciles it)", table, old[table][1].collection)
            self.health.dropped(table)
        if capture is not None:
            # A table re-created since `missing` was read gets its triggers here: it
            # needs the reconcile too (the next step sees the newer schema version).
            newly = capture.install([i for i, _ in pairs])
            self.resync.add([t for t in newly if t in new], "capture triggers were missing")
            if recreated:
                self.follower.install_id, self.follower.seq = capture.install_id(), 0
                self.follower.save_position()
        self.synced.set_pairs(pairs)
        self.health.added(added)
        if capture is None:
            for table in added:
                self.follower.hwm.setdefault(table, None)
        self.version = version
        self.reconciler.pending()
