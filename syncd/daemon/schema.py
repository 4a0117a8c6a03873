"""Schema drift while `syncd run` follows: new tables sync, changed ones reconcile.

The legacy scripts may add, alter, drop or re-create tables at any moment; the feed
reacts on its own (`ChangeFeed.schema_changed`: triggers for new tables, a change
log made anew).
"""

from __future__ import annotations

import logging

from legacy_adapters.feed import ChangeFeed
from syncd.daemon.follow import FeedParts
from syncd.daemon.health import Health
from syncd.daemon.reconcile import Reconciler

log = logging.getLogger(__name__)


class SchemaWatch:
    """Knows the schema version the synced tables were resolved at (`version`)."""

    def __init__(self, parts: FeedParts, feed: ChangeFeed, health: Health,
                 reconciler: Reconciler) -> None:
        self.source, self.synced, self.resync = parts.source, parts.synced, parts.resync
        self.history = parts.history
        self.database = parts.store.db.name
        self.feed, self.health, self.reconciler = feed, health, reconciler
        self.version: int | None = None
        # The last version checked, kept through forget(): a VACUUM moves it too.
        self.seen: int | None = None

    def forget(self) -> None:
        """Re-read the schema at the next step (drift is a common cause of failures)."""
        self.version = None

    def renumbered(self, tables: list[str], why: str) -> None:
        """Mark the tables keyed by rowid among `tables` for a reconcile: a VACUUM
        renumbers the rowids of tables without a primary key (their documents' ids)
        and fires no trigger; all it moves is the schema version."""
        pairs = self.synced.pairs
        self.resync.add(sorted(t for t in tables if t in pairs and pairs[t][0].rowid
                               and not pairs[t][0].primary_key),
                        f"{why} (a VACUUM renumbers the rowids of tables without a primary key)")

    def check(self) -> None:
        """Follow a schema change: new tables sync, changed or re-created ones reconcile.

        The version is read first and recorded only once the tables to reconcile are
        saved (PendingReconciles): a change committed while this runs is seen by the next step,
        and a reconcile that fails is retried, also after a restart.
        """
        version = self.source.schema_version()
        if version == self.version:
            return
        model, old = self.synced.model, self.synced.pairs
        assert model is not None
        schema = self.source.schema()
        pairs = model.resolve(schema, self.database)
        self.health.skipped(model.not_mirrored(schema, self.database))
        new = {i.name: (i, m) for i, m in pairs}
        added = [t for t in new if t not in old]
        dropped = [t for t in old if t not in new]
        changed = [t for t in new if t in old and new[t] != old[t]]
        self.resync.add(sorted(set(added) | set(changed)), "the legacy schema changed")
        moved = self.seen is not None and version != self.seen
        if moved:
            self.renumbered([t for t in new if t in old], "the schema version moved")
        self.resync.forget(dropped)
        for table in dropped:
            log.warning("legacy table %s was dropped; its collection %s keeps its documents "
                        "(syncd migrate reconciles it)", table, old[table][1].collection)
            self.health.dropped(table)
        self.feed.schema_changed([i for i, _ in pairs], added)
        if self.history is not None:  # the tables' SQL as it is now, beside their versions
            self.history.record_schemas(self.source, [*new, *dropped])
        self.synced.set_pairs(pairs)
        self.health.added(added)
        # The feed's own trigger installs moved the version again: not a VACUUM. One
        # until now is covered by the reconcile marked above (it runs below, after it).
        seen = self.source.schema_version() if moved else version
        self.version, self.seen = version, seen
        self.reconciler.pending()
