"""Queries of the synced experiment model (migration 0002), as the legacy tracker made them.

Every source of the database by default; `source` narrows to one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from syncd.api.options import endpoints
from syncd.client.compare import Comparison, compare
from syncd.client.tracker import Tracker
from syncd.config import Settings
from syncd.connect.mongo import open_target


@dataclass
class Experiments:
    """Experiment documents; when there are none, `why_none` says what the database holds.
    `total`: how many match in all (`docs` are those after the first `offset`)."""

    docs: list[dict[str, Any]]
    why_none: str | None = None
    total: int | None = None
    offset: int = 0


def experiments_best(settings: Settings, challenge: int, n: int = 10,
                     status: str | None = "completed", source: str | None = None,
                     offset: int = 0) -> Experiments:
    """The `n` best experiments of `challenge` by best_val_loss (`status` None: any),
    after the first `offset`."""
    with open_target(endpoints(settings)) as target:
        tracker = Tracker(target.db, source)
        docs = list(tracker.best_experiments(challenge, n, status, offset))
        total = tracker.count(tracker.best_match(challenge, status))
        why = None if total else tracker.why_no_best(challenge, status)
        return Experiments(docs, why, total, offset)


def experiments_compare(settings: Settings, refs: Sequence[str],
                        source: str | None = None) -> Comparison:
    """Several experiments (run_ids or _ids) side by side: what differs between them."""
    with open_target(endpoints(settings)) as target:
        return compare(Tracker(target.db, source).compare(list(refs)))


def experiments_search(settings: Settings, query: Mapping[str, Any], limit: int = 0,
                       source: str | None = None, offset: int = 0) -> Experiments:
    """Experiments matching a MongoDB filter (at most `limit`, after the first `offset`)."""
    with open_target(endpoints(settings)) as target:
        tracker = Tracker(target.db, source)
        docs = list(tracker.search(dict(query), limit=limit, offset=offset))
        total = len(docs) + offset if not limit and (docs or not offset) \
            else tracker.count(dict(query))
        return Experiments(docs, None if total else tracker.why_no_match(dict(query)),
                           total, offset)


def experiments_history(settings: Settings, ref: str, source: str | None = None) -> dict[str, Any]:
    """One experiment with its epochs and checkpoints."""
    with open_target(endpoints(settings)) as target:
        return dict(Tracker(target.db, source).history(ref))
