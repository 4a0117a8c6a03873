"""Rows that did not become documents, sent to the quarantine (one place for both paths).

The backfill (rebuild, reconcile) and the change applier both meet two kinds of
bad row: one its builder could not project, and one whose document the target
refused. Both are logged and stored in `_syncd_quarantine` (written by
`syncd/checkpoint/store.py`), so the rest of the chunk still syncs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from syncd.checkpoint.store import StateStore
from syncd.projection.project import Projector
from syncd.sinks.base import Rejected

log = logging.getLogger(__name__)


def quarantine(store: StateStore, projector: Projector, rows: Sequence[Sequence[Any]],
               failed: list[dict[str, Any]], rejected: list[Rejected]) -> int:
    """Store the rows that failed to project (`failed`, as `Projected.quarantined` gives
    them) and those whose documents the sink refused; returns how many."""
    entries = list(failed)
    if rejected:
        by_id = {projector.make_id(projector.key(r)): r for r in rows}
        for rej in rejected:
            row = by_id.get(rej.id)
            entries.append({
                "_id": rej.id, "table": projector.table.name,
                "collection": projector.collection, "error": rej.error,
                "key": projector.key_document(row) if row is not None else None,
            })
    for entry in entries:
        log.warning("quarantined a row of %s %s: %s", entry["table"], entry.get("key"),
                    entry["error"])
    store.quarantine_rows(entries)
    return len(entries)
