"""Queries of the synced experiment model (migration 0002), as the legacy tracker made them.

Every source of the database by default; `source` narrows to one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from syncd.config import Settings
from syncd.connect.mongo import open_target


@dataclass
class Experiments:
    """Experiment documents; when there are none, `why_none` says what the database holds."""

    docs: list[dict[str, Any]]
    why_none: str | None = None


def experiments_best(settings: Settings, challenge: int, n: int = 10,
                     status: str | None = "completed", source: str | None = None) -> Experiments:
    """The `n` best experiments of `challenge` by best_val_loss (`status` None: any)."""
    from syncd.client.tracker import Tracker

    with open_target(settings) as target:
        tracker = Tracker(target.db, source)
        docs = list(tracker.best_experiments(challenge, n, status))
        return Experiments(docs, None if docs else tracker.why_no_best(challenge, status))


def experiments_compare(settings: Settings, refs: Sequence[str],
                        source: str | None = None) -> list[dict[str, Any]]:
    """Several experiments (run_ids or _ids) side by side."""
    from syncd.client.tracker import Tracker

    with open_target(settings) as target:
        return list(Tracker(target.db, source).compare(list(refs)))


def experiments_search(settings: Settings, query: Mapping[str, Any],
                       limit: int = 0, source: str | None = None) -> Experiments:
    """Experiments matching a MongoDB filter."""
    from syncd.client.tracker import Tracker

    with open_target(settings) as target:
        tracker = Tracker(target.db, source)
        docs = list(tracker.search(dict(query), limit=limit))
        return Experiments(docs, None if docs else tracker.why_no_match(dict(query)))


def experiments_history(settings: Settings, ref: str, source: str | None = None) -> dict[str, Any]:
    """One experiment with its epochs and checkpoints."""
    from syncd.client.tracker import Tracker

    with open_target(settings) as target:
        return dict(Tracker(target.db, source).history(ref))
