"""Taking one source out of a shared database (`syncd source remove`).

A retired host or file leaves its documents, its state and its history behind. This
removes the documents and the state, each stored thing through the module that owns
it (docs/architecture.md), and by default keeps the history, the copy of record:
`syncd restore --source ID` still rebuilds the file. Every delete is by the source's
own key (`_source`, `source_id`, `"<kind>:<source id>"`, the staging collections
named for it), so another source's documents are never touched.

While it deletes, the removal holds the source's lease (refused, naming the holder,
while a `syncd run` or `syncd migrate` holds it), so no syncd writes the source
back half way; the source's `source` and `meta` documents go last, so a removal cut
off part way still finds the source and is simply run again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pymongo.database import Database

from syncd.checkpoint.daemon_doc import forget_daemon_doc
from syncd.checkpoint.hdf5 import forget_hdf5_status
from syncd.checkpoint.lease import Lease, current_lease, forget_lease, held_message
from syncd.checkpoint.positions import forget_positions
from syncd.checkpoint.resync import forget_reconciles
from syncd.checkpoint.store import StateStore
from syncd.errors import MigrationError
from syncd.sinks.collections import MongoCollections
from syncd.sinks.history import HistoryStore


@dataclass
class Removal:
    """What a removal deletes (or, `dry_run`, would delete) and what it keeps, with
    counts: documents per collection, staging collections dropped, state documents
    per collection and kind, history per collection."""

    source_id: str
    dry_run: bool
    drop_history: bool
    documents: dict[str, int] = field(default_factory=dict)
    staging: dict[str, int] = field(default_factory=dict)
    state: dict[str, int] = field(default_factory=dict)
    history: dict[str, int] = field(default_factory=dict)
    state_left: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "history_kept": not self.drop_history}


def _state(store: StateStore, dry_run: bool) -> dict[str, int]:
    """Every owner's part of the source's state (store.py's own last: `source`)."""
    found: dict[str, int] = {}
    for forget in (forget_positions, forget_reconciles, forget_daemon_doc,
                   forget_hdf5_status):
        found.update(forget(store, dry_run))
    found.update(store.forget(dry_run))
    return found


def remove_source(db: Database, source_id: str, drop_history: bool = False,
                  dry_run: bool = True) -> Removal:
    """Remove `source_id`'s documents and state from `db` (its history too if
    `drop_history`); with `dry_run`, only count them. Refused (MigrationError) while
    another syncd holds the source's lease."""
    store = StateStore(db, source_id)
    held = current_lease(store)
    if held is not None and dry_run:
        raise MigrationError(f"not removed: {held_message(held, source_id)}")
    report = Removal(source_id, dry_run, drop_history)
    report.state.update(forget_lease(store, True))
    lease = Lease(store, what="source remove")
    if not dry_run:
        try:
            lease.acquire()
        except MigrationError as exc:
            raise MigrationError(f"not removed: {exc}") from None
    try:
        collections = MongoCollections(db, source_id)
        for name in collections.mirrored():
            if not dry_run:
                lease.renew()
            n = collections.count_own(name) if dry_run else collections.delete_own(name)
            if n:
                report.documents[name] = n
        for name in collections.own_staging():
            report.staging[name] = db[name].estimated_document_count()
        if not dry_run:  # renewed before each phase: a lost lease stops the removal
            lease.renew()
            collections.drop_staging(report.staging)
            lease.renew()
        report.state.update(_state(store, dry_run))
        if not dry_run:
            lease.renew()
        report.history = HistoryStore(db, source_id).forget(dry_run or not drop_history)
    finally:
        if not dry_run:
            lease.release()
    report.state_left = store.state_left()
    return report

