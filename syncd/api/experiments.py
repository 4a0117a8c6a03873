"""Queries of the synced experiment model (migration 0002), as the legacy tracker made them.

Every source of the database by default; `source` narrows to one. `as_of` (a time,
syncd.client.asof): the experiments as they were then, rebuilt from history with the
configured migrations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syncd.api.options import endpoints
from syncd.client.compare import Comparison, compare
from syncd.client.tracker import Tracker
from syncd.config import Settings
from syncd.connect.mongo import open_target

if TYPE_CHECKING:
    from syncd.client.tracker import Tracker


@dataclass
class Experiments:
    """Experiment documents; when there are none, `why_none` says what the database holds.
    `total`: how many match in all (`docs` are those after the first `offset`)."""

    docs: list[dict[str, Any]]
    why_none: str | None = None
    total: int | None = None
    offset: int = 0


def _tracker(settings: Settings, db: Any, source: str | None, as_of: str | None) -> Tracker:
    """The live Tracker, or (`as_of`) the one of that moment, with the configured
    migrations (the model the documents of then are projected with)."""
    from syncd.api.shared import migration_files
    from syncd.client.tracker import Tracker

    if as_of is None:
        return Tracker(db, source)
    return Tracker(db, source, as_of=as_of, migrations=migration_files(settings))


def experiments_as_of(settings: Settings, as_of: str, source: str | None = None
                      ) -> dict[str, Any]:
    """Which moment `as_of` is, the sources whose history reaches it, and what the
    answers as of it cannot show (raises for a moment before history starts)."""
    from syncd.client.asof import scope

    with open_target(endpoints(settings)) as target:
        return scope(target.db, as_of, source).to_dict()


def experiments_best(settings: Settings, challenge: int, n: int = 10,
                     status: str | None = "completed", source: str | None = None,
                     offset: int = 0, as_of: str | None = None) -> Experiments:
    """The `n` best experiments of `challenge` by best_val_loss (`status` None: any),
    after the first `offset`."""
    with open_target(endpoints(settings)) as target:
        tracker = _tracker(settings, target.db, source, as_of)
        docs, total = tracker.best_page(challenge, n, status, offset)
        why = None if total else tracker.why_no_best(challenge, status)
        return Experiments(docs, why, total, offset)


def experiments_compare(settings: Settings, refs: Sequence[str], source: str | None = None,
                        as_of: str | None = None) -> Comparison:
    """Several experiments (run_ids or _ids) side by side: what differs between them."""

    with open_target(endpoints(settings)) as target:
        return compare(_tracker(settings, target.db, source, as_of).compare(list(refs)))


def experiments_search(settings: Settings, query: Mapping[str, Any], limit: int = 0,
                       source: str | None = None, offset: int = 0,
                       as_of: str | None = None) -> Experiments:
    """Experiments matching a MongoDB filter (at most `limit`, after the first `offset`)."""
    with open_target(endpoints(settings)) as target:
        tracker = _tracker(settings, target.db, source, as_of)
        docs = list(tracker.search(dict(query), limit=limit, offset=offset))
        total = len(docs) + offset if not limit and (docs or not offset) \
            else tracker.count(dict(query))
        return Experiments(docs, None if total else tracker.why_no_match(dict(query)),
                           total, offset)


def experiments_history(settings: Settings, ref: str, source: str | None = None,
                        as_of: str | None = None) -> dict[str, Any]:
    """One experiment with its epochs and checkpoints."""
    with open_target(endpoints(settings)) as target:
        return dict(_tracker(settings, target.db, source, as_of).history(ref))


def experiments_versions(settings: Settings, ref: str, source: str | None = None,
                         as_of: str | None = None) -> Any:
    """One run's versions (syncd.client.versions.RunVersions): what changed, when (up to
    `as_of`, if given)."""
    from syncd.api.shared import migration_files
    from syncd.client.asof import parse_time
    from syncd.client.versions import run_versions
    from syncd.sinks.history import julian_day

    until = None if as_of is None else julian_day(parse_time(as_of))
    with open_target(endpoints(settings)) as target:
        return run_versions(target.db, ref, source, until, migration_files(settings))
